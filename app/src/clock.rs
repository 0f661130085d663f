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
    /// The same instant on `CLOCK_MONOTONIC`, in nanoseconds (`None`: that
    /// clock could not be read, `std` is used).
    epoch_ns: Option<u64>,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock { epoch: std::time::Instant::now(), epoch_ns: mob_sys::clock::monotonic_nanos() }
    }

    /// Now, as proto counts time.
    pub fn now(&self) -> Instant {
        match self.epoch_ns.zip(mob_sys::clock::monotonic_nanos()) {
            Some((epoch, now)) => Instant::from_nanos(now.saturating_sub(epoch)),
            None => Instant::from_nanos(self.epoch.elapsed().as_nanos().try_into().unwrap_or(u64::MAX)),
        }
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

    #[test]
    fn the_direct_clock_reads_what_std_reads() {
        let clock = Clock::new();
        let before = clock.epoch.elapsed();
        let ours = Duration::from_nanos(clock.now().as_nanos());
        let after = clock.epoch.elapsed();
        // Both count from the same moment on the same clock (up to the
        // instant between the two reads in `new`).
        let slack = Duration::from_millis(1);
        assert!(ours + slack >= before && ours <= after + slack, "{before:?} <= {ours:?} <= {after:?}");
    }
}
