//! Waiting for IO: poll without sleeping for as long as [`Spin`] says, then
//! sleep in `epoll_wait`.

use mio::{Events, Poll};
use mob_app::Clock;
use mob_proto::{Instant, Spin};
use mob_sys::process::SchedStat;
use std::time::Duration;

/// How an event loop waits: its [`Spin`] and the kernel's figures for its
/// thread that keep `Spin` from polling when CPUs are busy.
pub(crate) struct Waiter {
    spin: Spin,
    /// Opened on the first wait, on the loop's own thread; `None` where
    /// the kernel has no such figures.
    stats: Option<Option<SchedStat>>,
}

impl Waiter {
    /// A waiter that polls for at most `limit` (zero: never).
    pub(crate) fn new(limit: Duration) -> Waiter {
        Waiter { spin: Spin::new(limit), stats: None }
    }

    /// Fills `events` with what is ready, waiting at most `timeout` (`None`:
    /// until something is). For the first part of the wait, as long as
    /// `Spin`'s window, it polls without sleeping and yields the CPU between
    /// polls to any other task that wants it; then it sleeps. `Spin` is
    /// told how long the wait lasted, whether a round of polling lost the
    /// CPU and, now and then, how long the thread has waited for one. An
    /// interrupted wait is `ErrorKind::Interrupted`, as from [`Poll::poll`].
    pub(crate) fn wait(
        &mut self,
        poll: &mut Poll,
        clock: &Clock,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        let start = clock.now();
        if self.spin.wants_cpu_waits(start) {
            let stats = self.stats.get_or_insert_with(|| SchedStat::open().ok());
            match stats.as_ref().map(SchedStat::read) {
                Some(Ok((waited, runs))) => self.spin.handle_cpu_waits(start, waited, runs),
                Some(Err(_)) | None => self.spin.handle_cpu_waits(start, Duration::ZERO, 0),
            }
        }
        let window = timeout.map_or(self.spin.poll_window(start), |t| t.min(self.spin.poll_window(start)));
        let result = poll_then_sleep(poll, &mut self.spin, clock, start, window, events, timeout);
        self.spin.handle_wait(start, clock.now());
        result
    }
}

/// Polls until something is ready or `window` has passed since `start`;
/// then, if nothing was, sleeps for the rest of `timeout`. A round of
/// polling that took longer than [`Spin::PREEMPTED`] lost the CPU: `spin`
/// is told, and the wait sleeps at once.
fn poll_then_sleep(
    poll: &mut Poll,
    spin: &mut Spin,
    clock: &Clock,
    start: Instant,
    window: Duration,
    events: &mut Events,
    timeout: Option<Duration>,
) -> std::io::Result<()> {
    if window.is_zero() {
        return poll.poll(events, timeout);
    }
    let mut last = start;
    loop {
        poll.poll(events, Some(Duration::ZERO))?;
        let now = clock.now();
        if !events.is_empty() {
            return Ok(());
        }
        let lost_cpu = now.saturating_duration_since(last) > Spin::PREEMPTED;
        if lost_cpu {
            spin.handle_preempted(now);
        }
        let spent = now.saturating_duration_since(start);
        if lost_cpu || spent >= window {
            return poll.poll(events, timeout.map(|t| t.saturating_sub(spent)));
        }
        last = now;
        // Polite polling: another task runnable on this CPU (a worker this
        // one waits for, on a machine with fewer CPUs than processes) runs
        // first.
        let _ = nix::sched::sched_yield();
    }
}
