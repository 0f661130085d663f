//! What a kingpin tells its service manager, and when: systemd's
//! `sd_notify` protocol, decided without IO.
//!
//! A [`Notifier`] watches the kingpin's [`Summary`] and the clock, and
//! queues the notifications a unit of `Type=notify` expects:
//!
//! - `READY=1` once, when every role is online ([`crate::Event::AppOnline`]);
//! - `STOPPING=1` once, when a shutdown begins;
//! - `STATUS=...`, the one-line summary, whenever it changes;
//! - `WATCHDOG=1` every half of the unit's `WatchdogSec=` (the environment's
//!   `WATCHDOG_USEC`), if it asks for pings; a kingpin whose loop hangs
//!   stops pinging and systemd restarts it.
//!
//! The runtime sends each queued message as one datagram to the socket
//! `NOTIFY_SOCKET` names (`mob_sys::notify`), and only when it is set.
//!
//! ```
//! use core::time::Duration;
//! use mob_proto::notify::{Notifier, watchdog_interval};
//! use mob_proto::{Instant, Summary};
//!
//! let every = watchdog_interval(Some("2000000"), None, 42);
//! assert_eq!(every, Some(Duration::from_secs(1)));
//! let mut n = Notifier::new(every, Instant::ZERO);
//! n.update(&Summary { up: 2, slots: 2, online: true, ..Summary::default() });
//! assert_eq!(n.poll_message().as_deref(), Some("READY=1\nSTATUS=2/2 workers up, 0 restarts"));
//! assert_eq!(n.poll_timeout(), Some(Instant::ZERO));
//! n.handle_timeout(Instant::ZERO);
//! assert_eq!(n.poll_message().as_deref(), Some("WATCHDOG=1"));
//! assert_eq!(n.poll_timeout(), Some(Instant::ZERO + Duration::from_secs(1)));
//! ```

use crate::kingpin::Summary;
use crate::time::Instant;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use core::time::Duration;

/// How often to ping the watchdog, from `WATCHDOG_USEC` and `WATCHDOG_PID`:
/// half the timeout, as `sd_watchdog_enabled(3)` advises. `None` when no
/// pings are wanted: no timeout, a zero or malformed one, or one meant for
/// another process (`WATCHDOG_PID` is set and is not `our_pid`).
///
/// ```
/// use core::time::Duration;
/// use mob_proto::notify::watchdog_interval;
///
/// assert_eq!(watchdog_interval(Some("10000000"), Some("7"), 7), Some(Duration::from_secs(5)));
/// assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
/// assert_eq!(watchdog_interval(None, None, 7), None);
/// ```
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_micros(1)))
}

/// The `sd_notify` state machine of one kingpin (see the module docs).
///
/// Feed it the kingpin's [`Summary`] after anything happened
/// ([`Notifier::update`]) and the clock when [`Notifier::poll_timeout`]
/// passes ([`Notifier::handle_timeout`]); send what
/// [`Notifier::poll_message`] gives, each as one datagram.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    ready: bool,
    stopping: bool,
    status: String,
    out: VecDeque<String>,
}

impl Notifier {
    /// A notifier that pings the watchdog every `watchdog` (see
    /// [`watchdog_interval`]), the first time at `now`.
    pub fn new(watchdog: Option<Duration>, now: Instant) -> Notifier {
        Notifier {
            watchdog,
            next_ping: watchdog.map(|_| now),
            ready: false,
            stopping: false,
            status: String::new(),
            out: VecDeque::new(),
        }
    }

    /// Takes the application's state: queues `READY=1` the first time it
    /// is online, `STOPPING=1` the first time it is shutting down, and the
    /// status line whenever it changed, together in one message.
    pub fn update(&mut self, summary: &Summary) {
        let mut message = String::new();
        if summary.online && !self.ready {
            self.ready = true;
            message.push_str("READY=1\n");
        }
        if summary.shutting_down && !self.stopping {
            self.stopping = true;
            message.push_str("STOPPING=1\n");
        }
        let status = summary.to_string();
        if status != self.status {
            message.push_str("STATUS=");
            message.push_str(&status);
            self.status = status;
        }
        let message = message.trim_end_matches('\n');
        if !message.is_empty() {
            self.out.push_back(message.to_string());
        }
    }

    /// Queues `WATCHDOG=1` if a ping is due at `now`, and schedules the next.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(every), Some(due)) = (self.watchdog, self.next_ping)
            && due <= now
        {
            self.out.push_back("WATCHDOG=1".to_string());
            self.next_ping = Some(now + every);
        }
    }

    /// When the next watchdog ping is due, if pings are wanted.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ping
    }

    /// The next message to send (`KEY=VALUE` lines), if any.
    pub fn poll_message(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    /// Whether `READY=1` has been queued.
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain(n: &mut Notifier) -> Vec<String> {
        core::iter::from_fn(|| n.poll_message()).collect()
    }

    fn summary(up: u32, slots: u32, restarts: u32) -> Summary {
        Summary { up, slots, restarts, ..Summary::default() }
    }

    #[test]
    fn ready_once_when_online_then_status_changes_then_stopping_once() {
        let mut n = Notifier::new(None, Instant::ZERO);
        n.update(&summary(1, 2, 0));
        assert_eq!(drain(&mut n), ["STATUS=1/2 workers up, 0 restarts"]);
        // Nothing changed: nothing to say.
        n.update(&summary(1, 2, 0));
        assert!(drain(&mut n).is_empty());
        let online = Summary { online: true, ..summary(2, 2, 0) };
        n.update(&online);
        assert_eq!(drain(&mut n), ["READY=1\nSTATUS=2/2 workers up, 0 restarts"]);
        // A worker dies and is revived: status only, never READY again.
        n.update(&Summary { online: true, ..summary(1, 2, 1) });
        n.update(&Summary { online: true, ..summary(2, 2, 1) });
        assert_eq!(drain(&mut n), ["STATUS=1/2 workers up, 1 restart", "STATUS=2/2 workers up, 1 restart"]);
        let stopping = Summary { online: true, shutting_down: true, ..summary(2, 2, 1) };
        n.update(&stopping);
        assert_eq!(drain(&mut n), ["STOPPING=1\nSTATUS=stopping: 2/2 workers up, 1 restart"]);
        n.update(&Summary { up: 0, ..stopping });
        assert_eq!(drain(&mut n), ["STATUS=stopping: 0/2 workers up, 1 restart"]);
        assert!(n.is_ready());
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn an_app_that_never_came_online_says_stopping_but_never_ready() {
        let mut n = Notifier::new(None, Instant::ZERO);
        n.update(&Summary { shutting_down: true, failed_roles: 1, ..summary(0, 3, 5) });
        assert_eq!(drain(&mut n), ["STOPPING=1\nSTATUS=stopping: 0/3 workers up, 5 restarts, 1 role failed"]);
        assert!(!n.is_ready());
    }

    #[test]
    fn watchdog_pings_at_the_interval_from_the_first_at_start() {
        let every = Duration::from_millis(500);
        let t0 = Instant::from_nanos(1_000);
        let mut n = Notifier::new(Some(every), t0);
        assert_eq!(n.poll_timeout(), Some(t0));
        n.handle_timeout(t0);
        assert_eq!(drain(&mut n), ["WATCHDOG=1"]);
        // Too early: nothing.
        n.handle_timeout(t0 + Duration::from_millis(499));
        assert!(drain(&mut n).is_empty());
        // Late: one ping, and the next counts from now.
        let late = t0 + Duration::from_millis(800);
        n.handle_timeout(late);
        assert_eq!(drain(&mut n), ["WATCHDOG=1"]);
        assert_eq!(n.poll_timeout(), Some(late + every));
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_us_only() {
        assert_eq!(watchdog_interval(Some("3000000"), None, 1), Some(Duration::from_millis(1500)));
        assert_eq!(watchdog_interval(Some("3000000"), Some("1"), 1), Some(Duration::from_millis(1500)));
        assert_eq!(watchdog_interval(Some("3000000"), Some("2"), 1), None);
        assert_eq!(watchdog_interval(Some("3000000"), Some("x"), 1), None);
        assert_eq!(watchdog_interval(Some("0"), None, 1), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 1), None);
        assert_eq!(watchdog_interval(Some("1"), None, 1), Some(Duration::from_micros(1)));
    }
}
