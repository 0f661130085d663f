//! A one-line account of the whole application, for a service manager's
//! status line (`systemctl status`) or a log.

use super::{Kingpin, Phase};
use core::fmt;

/// The application at a glance: how many workers are up out of how many
/// slots, how often slots were restarted, and where the application stands.
///
/// Its `Display` is the one-line summary, such as `4/4 workers up, 0
/// restarts`.
///
/// ```
/// use mob_proto::{Kingpin, KingpinConfig};
///
/// let kingpin = Kingpin::new(KingpinConfig::new("app").role("back", 4));
/// let summary = kingpin.summary();
/// assert_eq!((summary.up, summary.slots), (0, 4));
/// assert_eq!(summary.to_string(), "0/4 workers up, 0 restarts");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Slots whose worker has completed its handshake (a slot counts once
    /// while a reload replaces its worker).
    pub up: u32,
    /// Slots of all roles, not counting those a resize is removing.
    pub slots: u32,
    /// Restarts of all slots so far.
    pub restarts: u32,
    /// Roles that failed (restarted more often than their intensity allows).
    pub failed_roles: u32,
    /// Whether every role has been online ([`super::Event::AppOnline`] was
    /// given).
    pub online: bool,
    /// Whether a shutdown has begun.
    pub shutting_down: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shutting_down {
            f.write_str("stopping: ")?;
        }
        let s = if self.restarts == 1 { "" } else { "s" };
        write!(f, "{}/{} workers up, {} restart{s}", self.up, self.slots, self.restarts)?;
        match self.failed_roles {
            0 => Ok(()),
            1 => f.write_str(", 1 role failed"),
            n => write!(f, ", {n} roles failed"),
        }
    }
}

impl Kingpin {
    /// The application at a glance (see [`Summary`]).
    pub fn summary(&self) -> Summary {
        let mut summary =
            Summary { online: self.app_online, shutting_down: self.shutdown.is_some(), ..Summary::default() };
        for role in &self.roles {
            summary.failed_roles += u32::from(role.failed);
            for slot in role.slots.iter().filter(|s| !s.retiring) {
                summary.slots += 1;
                summary.restarts += slot.restarts;
                let up = slot
                    .link
                    .iter()
                    .chain(slot.replacement.iter())
                    .any(|l| self.link(*l).is_some_and(|l| l.phase == Phase::Up));
                summary.up += u32::from(up);
            }
        }
        summary
    }
}
