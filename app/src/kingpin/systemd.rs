//! The kingpin and its service manager: `sd_notify` notifications (ready,
//! stopping, a status line, watchdog pings) when `NOTIFY_SOCKET` is set,
//! and nothing at all when it is not. What to say comes from
//! `mob_proto::notify`; the datagrams go out through `mob_sys::notify`.

use crate::Error;
use mob_proto::Instant;
use mob_proto::notify::{Notifier, watchdog_interval};
use mob_sys::notify::NotifySocket;

/// Notifications for the service manager that started us.
pub struct Systemd {
    sock: NotifySocket,
    notifier: Notifier,
}

impl Systemd {
    /// Takes `NOTIFY_SOCKET` (and the watchdog's variables) from the
    /// environment, which no worker then inherits; `None` if it is not set.
    pub fn from_env(now: Instant) -> Result<Option<Systemd>, Error> {
        let Some(env) = NotifySocket::take_env()? else { return Ok(None) };
        let every = watchdog_interval(env.watchdog_usec.as_deref(), env.watchdog_pid.as_deref(), std::process::id());
        Ok(Some(Systemd { sock: env.socket, notifier: Notifier::new(every, now) }))
    }

    /// Tells the manager what changed since the last call and pings its
    /// watchdog when due; returns when to call again for the next ping.
    /// A notification the manager does not take is dropped.
    pub fn tick(&mut self, proto: &mob_proto::Kingpin, now: Instant) -> Option<Instant> {
        self.notifier.update(&proto.summary());
        self.notifier.handle_timeout(now);
        while let Some(message) = self.notifier.poll_message() {
            let _ = self.sock.send(&message);
        }
        self.notifier.poll_timeout()
    }
}
