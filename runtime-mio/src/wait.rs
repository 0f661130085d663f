//! Waiting for IO: poll without sleeping for as long as [`Spin`] says, then
//! sleep in `epoll_wait`.

use mio::{Events, Poll};
use mob_app::Clock;
use mob_proto::Spin;
use std::time::Duration;

/// Fills `events` with what is ready, waiting at most `timeout` (`None`:
/// until something is). For the first part of the wait, as long as `spin`'s
/// window, it polls without sleeping and yields the CPU between polls to
/// any other task that wants it; then it sleeps. `spin` is told how long
/// the wait lasted. An interrupted wait is `ErrorKind::Interrupted`, as
/// from [`Poll::poll`].
pub(crate) fn wait(
    poll: &mut Poll,
    spin: &mut Spin,
    clock: &Clock,
    events: &mut Events,
    timeout: Option<Duration>,
) -> std::io::Result<()> {
    let window = timeout.map_or(spin.poll_window(), |t| t.min(spin.poll_window()));
    let start = clock.now();
    let result = poll_then_sleep(poll, start, window, clock, events, timeout);
    spin.handle_wait(clock.now().saturating_duration_since(start));
    result
}

/// Polls until something is ready or `window` has passed since `start`;
/// then, if nothing was, sleeps for the rest of `timeout`.
fn poll_then_sleep(
    poll: &mut Poll,
    start: mob_proto::Instant,
    window: Duration,
    clock: &Clock,
    events: &mut Events,
    timeout: Option<Duration>,
) -> std::io::Result<()> {
    if window.is_zero() {
        return poll.poll(events, timeout);
    }
    loop {
        poll.poll(events, Some(Duration::ZERO))?;
        let spent = clock.now().saturating_duration_since(start);
        if !events.is_empty() {
            return Ok(());
        }
        if spent >= window {
            return poll.poll(events, timeout.map(|t| t.saturating_sub(spent)));
        }
        // Polite polling: another task runnable on this CPU (a worker this
        // one waits for, on a machine with fewer CPUs than processes) runs
        // first.
        let _ = nix::sched::sched_yield();
    }
}
