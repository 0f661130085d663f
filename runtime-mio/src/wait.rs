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
    stats: Stats,
}

/// The kernel's figures for the loop's thread.
enum Stats {
    /// Not opened yet: they are opened on the first wait, on the loop's
    /// own thread.
    Unopened,
    /// This kernel has none (no `/proc/thread-self/schedstat`).
    Missing,
    Open(SchedStat),
}

impl Waiter {
    /// A waiter that polls for at most `limit` (zero: never).
    pub(crate) fn new(limit: Duration) -> Waiter {
        Waiter { spin: Spin::new(limit), stats: Stats::Unopened }
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
            self.pass_cpu_waits(start);
        }
        let window = timeout.map_or(self.spin.poll_window(start), |t| t.min(self.spin.poll_window(start)));
        let result = poll_then_sleep(poll, &mut self.spin, clock, start, window, events, timeout);
        self.spin.handle_wait(start, clock.now());
        result
    }

    /// Passes the thread's figures to `Spin`, if they can be read.
    fn pass_cpu_waits(&mut self, now: Instant) {
        if let Stats::Unopened = self.stats {
            self.stats = SchedStat::open().map_or(Stats::Missing, Stats::Open);
        }
        if let Stats::Open(stats) = &self.stats
            && let Ok((waited, runs)) = stats.read()
        {
            self.spin.handle_cpu_waits(now, waited, runs);
        }
    }

    /// The window the next wait starting at `now` polls for.
    #[cfg(test)]
    fn window(&self, now: Instant) -> Duration {
        self.spin.poll_window(now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UnixStream;
    use mio::{Interest, Token};
    use std::io::{Read, Write};

    /// A poll watching one end of a socketpair for reading; the other end.
    fn pair() -> (Poll, UnixStream, UnixStream) {
        let poll = Poll::new().expect("a poll");
        let (mut ours, theirs) = UnixStream::pair().expect("a socketpair");
        poll.registry().register(&mut ours, Token(0), Interest::READABLE).expect("registered");
        (poll, ours, theirs)
    }

    #[test]
    fn a_wait_returns_what_is_ready_and_nothing_stale() {
        for limit in [Duration::ZERO, Spin::DEFAULT_LIMIT] {
            let (mut poll, mut ours, mut theirs) = pair();
            let (mut waiter, clock, mut events) = (Waiter::new(limit), Clock::new(), Events::with_capacity(8));
            theirs.write_all(b"x").expect("written");
            waiter.wait(&mut poll, &clock, &mut events, None).expect("a wait");
            assert_eq!(events.iter().count(), 1, "limit {limit:?}");
            ours.read_exact(&mut [0u8; 1]).expect("read");
            // Nothing new: the same events must not come back.
            waiter.wait(&mut poll, &clock, &mut events, Some(Duration::from_millis(1))).expect("a wait");
            assert!(events.is_empty(), "limit {limit:?}: stale events");
        }
    }

    #[test]
    fn quick_answers_open_the_window_and_a_quiet_link_closes_it() {
        let (mut poll, mut ours, mut theirs) = pair();
        let (mut waiter, clock, mut events) =
            (Waiter::new(Spin::DEFAULT_LIMIT), Clock::new(), Events::with_capacity(8));
        assert_eq!(waiter.window(clock.now()), Duration::ZERO);
        // Data that is there at once: each wait is short, the window opens.
        for _ in 0..3 {
            theirs.write_all(b"x").expect("written");
            waiter.wait(&mut poll, &clock, &mut events, None).expect("a wait");
            ours.read_exact(&mut [0u8; 1]).expect("read");
        }
        assert!(waiter.window(clock.now()) >= Spin::START);
        // Waits that time out far past the limit close it again, and a
        // timeout shorter than the window is kept.
        for _ in 0..6 {
            waiter.wait(&mut poll, &clock, &mut events, Some(Duration::from_millis(2))).expect("a wait");
            assert!(events.is_empty());
        }
        assert_eq!(waiter.window(clock.now()), Duration::ZERO);
        let start = std::time::Instant::now();
        waiter.wait(&mut poll, &clock, &mut events, Some(Duration::ZERO)).expect("a wait");
        assert!(events.is_empty() && start.elapsed() < Duration::from_secs(1));
    }
}
