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
//! Polling only pays while a CPU is free. When other tasks want the CPU, a
//! loop that polls (and yields between polls, as the runtime does) may give
//! its CPU away for a whole time slice, a millisecond or more; and one that
//! has used more than its share of the CPU polling is woken later than a
//! sleeper would be (the scheduler lets the task on the CPU finish its
//! slice first). So polling stops altogether for a while when either shows:
//! a round of polling took longer than [`Spin::PREEMPTED`], or, in the
//! kernel's figures for the loop's thread that the runtime passes on every
//! [`Spin::SAMPLE_EVERY`] (Linux's `/proc/thread-self/schedstat`), the
//! thread spent more than a twentieth of a period in which it polled
//! waiting for a CPU, on average longer than [`Spin::CPU_WAIT`] each time
//! it was given one. It stops for [`Spin::COOLDOWN`] at first, doubling
//! while each new try meets the same, up to [`Spin::MAX_COOLDOWN`]; a
//! sampling period in which the loop polled and met neither sets the
//! cooldown back. Periods in which it did not poll are not judged: a loop
//! that only sleeps costs nobody. On a machine kept busy by others a loop
//! therefore sleeps at once, as if it never polled, but for up to
//! [`Spin::SAMPLE_EVERY`] of polling every couple of seconds. Short
//! waits for a CPU, as when this loop yields to a peer process that
//! answers in a few microseconds, do not stop it. (Measured on a 2-CPU
//! virtual machine: a request routed through the kingpin, three processes
//! polling on two CPUs, waits 4–6 µs a run; a loop sharing its CPU with a
//! busy task waits 18–35 µs a run even when it never polls, milliseconds
//! when it does.)
//!
//! A loop that sees steady quick traffic keeps polling; an idle one, or one
//! whose traffic comes further apart than the limit, stops after a few
//! waits. `Spin` only decides; the runtime polls (without blocking, yielding
//! the CPU between polls to any other task that wants it) and tells it how
//! long each wait lasted and when it lost the CPU.
//!
//! ```
//! use core::time::Duration;
//! use mob_proto::{Instant, Spin};
//!
//! let t0 = Instant::ZERO;
//! let us = Duration::from_micros;
//! let mut spin = Spin::new(us(50));
//! assert_eq!(spin.poll_window(t0), Duration::ZERO); // no reason to poll yet
//! spin.handle_wait(t0, t0 + us(8)); // an answer came soon after sleeping
//! assert_eq!(spin.poll_window(t0), Spin::START);
//! spin.handle_wait(t0, t0 + us(15));
//! assert_eq!(spin.poll_window(t0), us(20));
//! spin.handle_wait(t0, t0 + Duration::from_secs(1)); // then a long quiet
//! assert_eq!(spin.poll_window(t0), Spin::START);
//! spin.handle_wait(t0, t0 + Duration::from_secs(1));
//! assert_eq!(spin.poll_window(t0), Duration::ZERO);
//!
//! // Traffic again, on a machine others keep busy:
//! spin.handle_wait(t0, t0 + us(8));
//! spin.handle_preempted(t0); // a round of polling lost the CPU (or the thread waited for one)
//! assert_eq!(spin.poll_window(t0 + Spin::COOLDOWN / 2), Duration::ZERO);
//! let later = t0 + Spin::COOLDOWN;
//! spin.handle_wait(later, later + us(8)); // after the cooldown it may try again
//! assert_eq!(spin.poll_window(later), Spin::START);
//! ```

use crate::Instant;
use core::time::Duration;

/// An adaptive polling window (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spin {
    /// The longest the window may grow to; zero turns polling off.
    limit: Duration,
    /// How long the next wait polls before it sleeps.
    window: Duration,
    /// No polling before this: the last try lost the CPU.
    hold_until: Instant,
    /// How long the next loss of the CPU stops polling for.
    cooldown: Duration,
    /// The last figures of the thread's waits for a CPU: when, how long in
    /// all, how many runs.
    sampled: Option<(Instant, Duration, u64)>,
    /// Whether the loop polled since then.
    polled: bool,
}

impl Spin {
    /// The window's first step up from zero.
    pub const START: Duration = Duration::from_micros(10);

    /// The default limit: a little more than a round trip through the
    /// kingpin takes on a busy machine when neither side sleeps.
    pub const DEFAULT_LIMIT: Duration = Duration::from_micros(50);

    /// One round of polling (a poll that does not block, then a yield)
    /// that takes longer than this lost the CPU to another task: a round
    /// takes a microsecond or two, a peer handling a message a few more,
    /// another task's time slice a millisecond or more.
    pub const PREEMPTED: Duration = Duration::from_micros(100);

    /// How long polling stops after the CPU was lost the first time.
    pub const COOLDOWN: Duration = Duration::from_millis(50);

    /// The longest polling stops for.
    pub const MAX_COOLDOWN: Duration = Duration::from_secs(2);

    /// A thread that waits longer than this on average for a CPU each time
    /// it is given one shares its CPUs with busy tasks.
    pub const CPU_WAIT: Duration = Duration::from_micros(12);

    /// How often the runtime passes on its thread's figures
    /// ([`Spin::handle_cpu_waits`]).
    pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

    /// A window that starts at zero and grows up to `limit`
    /// (`Duration::ZERO`: never poll).
    pub const fn new(limit: Duration) -> Spin {
        Spin {
            limit,
            window: Duration::ZERO,
            hold_until: Instant::ZERO,
            cooldown: Spin::COOLDOWN,
            sampled: None,
            polled: false,
        }
    }

    /// The limit the window grows to.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// How long a wait that starts at `now` should poll before it sleeps
    /// (zero: sleep at once).
    pub fn poll_window(&self, now: Instant) -> Duration {
        if now < self.hold_until { Duration::ZERO } else { self.window }
    }

    /// The last wait began at `start` and ended at `end`, when IO or a
    /// timer ended it. Waits that begin during a cooldown do not count.
    pub fn handle_wait(&mut self, start: Instant, end: Instant) {
        if start < self.hold_until {
            return;
        }
        self.polled |= !self.window.is_zero();
        let waited = end.saturating_duration_since(start);
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

    /// Whether the runtime should pass on its thread's figures now: the
    /// first time, then every [`Spin::SAMPLE_EVERY`]. Never if polling is
    /// off.
    pub fn wants_cpu_waits(&self, now: Instant) -> bool {
        !self.limit.is_zero()
            && self.sampled.is_none_or(|(at, ..)| now.saturating_duration_since(at) >= Spin::SAMPLE_EVERY)
    }

    /// The kernel's figures for the loop's thread at `now`: how long it has
    /// waited, runnable, for a CPU, and how many times it was given one,
    /// both since it started. If the loop polled since the last figures,
    /// waits that add up to more than a twentieth of that time and average
    /// more than [`Spin::CPU_WAIT`] a run stop polling, as
    /// [`Spin::handle_preempted`] does, and shorter ones set the cooldown
    /// back. A runtime that could not read the figures this time passes
    /// nothing (a gap only makes the next period longer).
    pub fn handle_cpu_waits(&mut self, now: Instant, waited: Duration, runs: u64) {
        if let Some((at, waited_before, runs_before)) = self.sampled
            && self.polled
        {
            let runs_since = runs.saturating_sub(runs_before);
            let waited_since = waited.saturating_sub(waited_before);
            let long = waited_since > now.saturating_duration_since(at) / 20;
            let per_run = waited_since / u32::try_from(runs_since.max(1)).unwrap_or(u32::MAX);
            if long && per_run > Spin::CPU_WAIT {
                self.handle_preempted(now);
            } else {
                self.cooldown = Spin::COOLDOWN;
            }
        }
        self.sampled = Some((now, waited, runs));
        self.polled = false;
    }

    /// A round of polling that ended at `now` took longer than
    /// [`Spin::PREEMPTED`]: other tasks want the CPU. No polling for the
    /// cooldown, which doubles for the next time.
    pub fn handle_preempted(&mut self, now: Instant) {
        // This period's polling lost the CPU: it does not set the cooldown back.
        self.polled = false;
        self.window = Duration::ZERO;
        self.hold_until = now + self.cooldown;
        self.cooldown = self.cooldown.saturating_mul(2).min(Spin::MAX_COOLDOWN);
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

    const T0: Instant = Instant::ZERO;

    /// A wait of `waited` µs starting at `T0`.
    fn wait(spin: &mut Spin, waited: u64) {
        spin.handle_wait(T0, T0 + us(waited));
    }

    #[test]
    fn quick_waits_grow_the_window_to_the_limit_and_keep_it() {
        let mut spin = Spin::new(us(50));
        for (waited, window) in [(30, 10), (30, 20), (30, 40), (45, 50), (45, 50), (3, 50)] {
            wait(&mut spin, waited);
            assert_eq!(spin.poll_window(T0), us(window), "after a wait of {waited} µs");
        }
    }

    #[test]
    fn long_waits_shrink_the_window_to_zero() {
        let mut spin = Spin::new(us(50));
        (0..4).for_each(|_| wait(&mut spin, 45));
        assert_eq!(spin.poll_window(T0), us(50));
        for window in [25_000, 12_500, 0, 0] {
            wait(&mut spin, 5_000);
            assert_eq!(spin.poll_window(T0), Duration::from_nanos(window));
        }
    }

    #[test]
    fn a_zero_limit_never_polls() {
        let mut spin = Spin::new(Duration::ZERO);
        for waited in [0, 1, 10, 1_000_000] {
            wait(&mut spin, waited);
            assert_eq!(spin.poll_window(T0), Duration::ZERO);
        }
    }

    #[test]
    fn a_limit_below_the_first_step_is_the_window() {
        let mut spin = Spin::new(us(4));
        wait(&mut spin, 3);
        assert_eq!(spin.poll_window(T0), us(4));
        wait(&mut spin, 5);
        assert_eq!(spin.poll_window(T0), Duration::ZERO);
    }

    #[test]
    fn losing_the_cpu_stops_polling_for_a_cooldown_that_doubles_until_a_try_keeps_it() {
        let mut spin = Spin::new(us(50));
        wait(&mut spin, 30);
        let mut now = T0;
        for cooldown in [50, 100, 200, 400, 800, 1600, 2000, 2000] {
            spin.handle_preempted(now);
            // Traffic goes on, sleeping at once; its waits do not count.
            spin.handle_wait(now, now + us(5));
            let cooldown = Duration::from_millis(cooldown);
            assert_eq!(spin.poll_window(now + cooldown - us(1)), Duration::ZERO);
            now = now + cooldown;
            assert_eq!(spin.poll_window(now), Duration::ZERO);
            spin.handle_wait(now, now + us(30));
            assert_eq!(spin.poll_window(now), Spin::START, "tried again after {cooldown:?}");
        }
        // A period of polling without long waits for a CPU: the next loss
        // holds for the first cooldown again.
        spin.handle_cpu_waits(now, us(0), 0);
        spin.handle_wait(now, now + us(5));
        let later = now + Spin::SAMPLE_EVERY;
        spin.handle_cpu_waits(later, us(300), 100);
        spin.handle_preempted(later);
        assert_eq!(spin.poll_window(later + Spin::COOLDOWN - us(1)), Duration::ZERO);
        spin.handle_wait(later + Spin::COOLDOWN, later + Spin::COOLDOWN + us(30));
        assert_eq!(spin.poll_window(later + Spin::COOLDOWN), Spin::START);
    }

    #[test]
    fn long_waits_for_a_cpu_stop_polling_and_short_ones_do_not() {
        let mut spin = Spin::new(us(50));
        let mut now = T0;
        assert!(spin.wants_cpu_waits(now));
        spin.handle_cpu_waits(now, us(1_000), 10);
        assert!(!spin.wants_cpu_waits(now + Spin::SAMPLE_EVERY - us(1)));
        wait(&mut spin, 30);
        // Polling, yielding to peers that answer in microseconds: 6 µs a run.
        spin.handle_wait(now, now + us(5));
        now = now + Spin::SAMPLE_EVERY;
        assert!(spin.wants_cpu_waits(now));
        spin.handle_cpu_waits(now, us(1_000 + 6 * 300), 310);
        assert_eq!(spin.poll_window(now), Spin::START);
        // Polling on, sharing a CPU with busy tasks: 30 µs a run on average.
        spin.handle_wait(now, now + us(5));
        now = now + Spin::SAMPLE_EVERY;
        spin.handle_cpu_waits(now, us(2_800 + 30 * 100), 410);
        assert_eq!(spin.poll_window(now), Duration::ZERO);
        assert_eq!(spin.poll_window(now + Spin::COOLDOWN - us(1)), Duration::ZERO);
    }

    #[test]
    fn a_few_long_waits_in_a_long_while_do_not_stop_polling() {
        let mut spin = Spin::new(us(50));
        spin.handle_cpu_waits(T0, us(0), 0);
        wait(&mut spin, 30);
        // 80 µs in 10 ms, over 5 runs (an interrupt, a kernel thread): 16 µs a run.
        spin.handle_cpu_waits(T0 + Spin::SAMPLE_EVERY, us(80), 5);
        assert_eq!(spin.poll_window(T0 + Spin::SAMPLE_EVERY), Spin::START);
    }

    #[test]
    fn figures_from_periods_without_polling_do_not_count() {
        let mut spin = Spin::new(us(50));
        spin.handle_cpu_waits(T0, us(0), 0);
        // Stopped after a lost round; the thread then waits long for a
        // CPU while it only sleeps: the stop is not stretched.
        wait(&mut spin, 30);
        spin.handle_preempted(T0);
        let mut now = T0;
        for i in 1..=4u64 {
            now = now + Spin::SAMPLE_EVERY;
            spin.handle_cpu_waits(now, us(3_000 * i), 100 * i);
        }
        let after = T0 + Spin::COOLDOWN;
        spin.handle_wait(after, after + us(30));
        assert_eq!(spin.poll_window(after), Spin::START);
    }

    #[test]
    fn a_lost_round_is_not_undone_by_the_figures_of_its_own_period() {
        let mut spin = Spin::new(us(50));
        spin.handle_cpu_waits(T0, us(0), 0);
        // Polls, then a round loses the CPU (the hypervisor took it: the
        // thread's own figures show nothing).
        wait(&mut spin, 30);
        spin.handle_wait(T0, T0 + us(5));
        spin.handle_preempted(T0 + us(500));
        spin.handle_cpu_waits(T0 + Spin::SAMPLE_EVERY, us(10), 10);
        // The cooldown doubled all the same: the next loss holds for twice as long.
        let later = T0 + Spin::COOLDOWN;
        spin.handle_wait(later, later + us(30));
        spin.handle_preempted(later);
        assert_eq!(spin.poll_window(later + Spin::COOLDOWN), Duration::ZERO);
        assert_eq!(spin.poll_window(later + 2 * Spin::COOLDOWN - us(1)), Duration::ZERO);
    }

    #[test]
    fn with_polling_off_no_figures_are_asked_for() {
        let spin = Spin::new(Duration::ZERO);
        assert!(!spin.wants_cpu_waits(T0));
    }

    proptest! {
        /// Whatever the waits and losses, the window stays within the
        /// limit, a wait past the limit never grows it, and no polling is
        /// offered during a cooldown.
        #[test]
        fn the_window_stays_within_its_limit(
            limit in prop_oneof![0u64..200, Just(u64::MAX)],
            steps in proptest::collection::vec((0u64..400, any::<bool>()), 0..64),
        ) {
            let mut spin = Spin::new(us(limit));
            let mut now = T0;
            for (waited, preempted) in steps {
                if preempted {
                    spin.handle_preempted(now);
                    prop_assert_eq!(spin.poll_window(now), Duration::ZERO);
                    prop_assert_eq!(spin.poll_window(now + Spin::COOLDOWN - us(1)), Duration::ZERO);
                }
                let before = spin.poll_window(now);
                let end = now + us(waited);
                spin.handle_wait(now, end);
                prop_assert!(spin.poll_window(now) <= us(limit));
                if waited > limit {
                    prop_assert!(spin.poll_window(now) <= before);
                }
                now = end;
            }
        }
    }
}
