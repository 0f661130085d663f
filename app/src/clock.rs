//! A runtime's clock: proto's [`Instant`] counted from when the loop
//! started.

use mob_proto::Instant;
use std::time::Duration;

/// The longest a loop sleeps in one go: "never" stays representable, and a
/// loop that waits for nothing still wakes now and then.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Converts between `std::time::Instant` and proto's [`Instant`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock { epoch: std::time::Instant::now() }
    }

    /// Now, as proto counts time.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos().try_into().unwrap_or(u64::MAX))
    }

    /// The `std` instant for one of ours.
    pub fn to_std(self, instant: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(instant.as_nanos())
    }

    /// How long from now until `deadline` (zero if it has passed), capped at
    /// an hour.
    pub fn until(&self, deadline: Instant) -> Duration {
        Clock::wait(self.now(), deadline)
    }

    /// How long to wait at `now` for `deadline` (capped as
    /// [`Clock::until`] caps it), for a loop that has read the clock
    /// already.
    pub fn wait(now: Instant, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(now).min(LONGEST_WAIT)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_convert_both_ways_and_waits_are_capped() {
        let clock = Clock::new();
        let now = clock.now();
        let later = now + Duration::from_secs(5);
        assert_eq!(clock.to_std(later) - clock.to_std(now), Duration::from_secs(5));
        assert!(clock.until(later) <= Duration::from_secs(5));
        assert_eq!(clock.until(now), Duration::ZERO);
        assert_eq!(clock.until(Instant::from_nanos(u64::MAX)), LONGEST_WAIT);
    }
}
