//! The runtime's clock: proto's [`Instant`] counted from when the loop
//! started.

use mob_proto::Instant;
use std::time::Duration;

/// Converts between `std::time::Instant` and proto's [`Instant`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock { epoch: std::time::Instant::now() }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos().try_into().unwrap_or(u64::MAX))
    }

    /// The `std` instant for one of ours.
    pub(crate) fn to_std(self, instant: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(instant.as_nanos())
    }

    /// How long from now until `deadline` (zero if it has passed), capped so
    /// that "never" stays representable.
    pub(crate) fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now()).min(Duration::from_secs(3600))
    }
}
