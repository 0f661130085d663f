//! How long an event loop polls for IO before it goes to sleep.
//!
//! Waking a sleeping process costs far more than a system call: on a
//! virtual machine an idle CPU halts and the hypervisor must wake it, several
//! microseconds each time, twice per round trip. A loop that polls for a
//! few microseconds before it sleeps takes a reply that comes quickly
//! without either cost. Polling when nothing is about to come only burns
//! CPU, so the window adapts to the waits the loop actually sees, as Linux
//! KVM's halt polling does:
//!
//! - a wait that ended within the window leaves it as it is;
//! - a wait longer than the window but within the limit grows it (to
//!   [`Spin::START`] from zero, then doubling, up to the limit): polling a
//!   little longer would have caught it;
//! - a wait longer than the limit halves it (to zero below
//!   [`Spin::START`]): nothing comes that soon, so the loop sleeps at once.
//!
//! A loop that sees steady quick traffic keeps polling; an idle one, or one
//! whose traffic comes further apart than the limit, stops after a few
//! waits. `Spin` only decides; the runtime polls (without blocking, yielding
//! the CPU between polls to any other task that wants it) and tells it how
//! long each wait lasted.
//!
//! ```
//! use core::time::Duration;
//! use mob_proto::Spin;
//!
//! let mut spin = Spin::new(Duration::from_micros(50));
//! assert_eq!(spin.poll_window(), Duration::ZERO); // no reason to poll yet
//! spin.handle_wait(Duration::from_micros(8)); // an answer came soon after sleeping
//! assert_eq!(spin.poll_window(), Spin::START);
//! spin.handle_wait(Duration::from_micros(15));
//! assert_eq!(spin.poll_window(), Duration::from_micros(20));
//! spin.handle_wait(Duration::from_secs(1)); // then a long quiet
//! assert_eq!(spin.poll_window(), Spin::START);
//! spin.handle_wait(Duration::from_secs(1));
//! assert_eq!(spin.poll_window(), Duration::ZERO);
//! ```

use core::time::Duration;

/// An adaptive polling window (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spin {
    /// The longest the window may grow to; zero turns polling off.
    limit: Duration,
    /// How long the next wait polls before it sleeps.
    window: Duration,
}

impl Spin {
    /// The window's first step up from zero.
    pub const START: Duration = Duration::from_micros(10);

    /// The default limit: a little more than a round trip through the
    /// kingpin takes on a busy machine when neither side sleeps.
    pub const DEFAULT_LIMIT: Duration = Duration::from_micros(50);

    /// A window that starts at zero and grows up to `limit`
    /// (`Duration::ZERO`: never poll).
    pub const fn new(limit: Duration) -> Spin {
        Spin { limit, window: Duration::ZERO }
    }

    /// The limit the window grows to.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// How long the next wait should poll before it sleeps (zero: sleep at
    /// once).
    pub const fn poll_window(&self) -> Duration {
        self.window
    }

    /// The last wait lasted `waited`, polling included, until IO or a
    /// timer ended it.
    pub fn handle_wait(&mut self, waited: Duration) {
        if waited <= self.window {
            return;
        }
        if waited > self.limit {
            let half = self.window / 2;
            self.window = if half < Spin::START { Duration::ZERO } else { half };
        } else {
            self.window = self.window.saturating_mul(2).max(Spin::START).min(self.limit);
        }
    }
}

impl Default for Spin {
    /// A window up to [`Spin::DEFAULT_LIMIT`].
    fn default() -> Spin {
        Spin::new(Spin::DEFAULT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn quick_waits_grow_the_window_to_the_limit_and_keep_it() {
        let mut spin = Spin::new(us(50));
        for (waited, window) in [(30, 10), (30, 20), (30, 40), (45, 50), (45, 50), (3, 50)] {
            spin.handle_wait(us(waited));
            assert_eq!(spin.poll_window(), us(window), "after a wait of {waited} µs");
        }
    }

    #[test]
    fn long_waits_shrink_the_window_to_zero() {
        let mut spin = Spin::new(us(50));
        (0..4).for_each(|_| spin.handle_wait(us(45)));
        assert_eq!(spin.poll_window(), us(50));
        for window in [25_000, 12_500, 0, 0] {
            spin.handle_wait(Duration::from_millis(5));
            assert_eq!(spin.poll_window(), Duration::from_nanos(window));
        }
    }

    #[test]
    fn a_zero_limit_never_polls() {
        let mut spin = Spin::new(Duration::ZERO);
        for waited in [0, 1, 10, 1_000_000] {
            spin.handle_wait(us(waited));
            assert_eq!(spin.poll_window(), Duration::ZERO);
        }
    }

    #[test]
    fn a_limit_below_the_first_step_is_the_window() {
        let mut spin = Spin::new(us(4));
        spin.handle_wait(us(3));
        assert_eq!(spin.poll_window(), us(4));
        spin.handle_wait(us(5));
        assert_eq!(spin.poll_window(), Duration::ZERO);
    }

    proptest! {
        /// Whatever the waits, the window stays within the limit, and a
        /// wait past the limit never grows it.
        #[test]
        fn the_window_stays_within_its_limit(limit in prop_oneof![0u64..200, Just(u64::MAX)], waits in proptest::collection::vec(0u64..400, 0..64)) {
            let mut spin = Spin::new(us(limit));
            for waited in waits {
                let before = spin.poll_window();
                spin.handle_wait(us(waited));
                prop_assert!(spin.poll_window() <= us(limit));
                if waited > limit {
                    prop_assert!(spin.poll_window() <= before);
                }
            }
        }
    }
}
