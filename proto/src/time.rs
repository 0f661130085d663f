//! Time as the caller tells it.
//!
//! `mob-proto` never reads a clock. Every call that depends on time takes an
//! [`Instant`]: nanoseconds since an epoch the caller chooses (process start,
//! boot, or zero in a simulation). Only differences between instants matter.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, in nanoseconds since an epoch chosen by the caller.
///
/// Unlike `std::time::Instant`, any value can be built, which makes
/// simulations and tests deterministic.
///
/// ```
/// use core::time::Duration;
/// use mob_proto::Instant;
///
/// let start = Instant::from_nanos(0);
/// let later = start + Duration::from_millis(5);
/// assert_eq!(later.saturating_duration_since(start), Duration::from_millis(5));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);
    /// The last representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this instant is, or zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::MAX`] instead of overflowing.
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(nanos_of(rhs)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::ZERO`] instead of underflowing.
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(nanos_of(rhs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::ZERO.saturating_duration_since(Instant::from_nanos(9)), Duration::ZERO);
    }
}
