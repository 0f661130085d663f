//! The monotonic clock, read directly.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC` (the clock `std::time::Instant` reads
/// on Linux), or `None` if it cannot be read.
///
/// One `vDSO` call and two multiplications: cheaper than
/// `Instant::elapsed`, whose checked subtraction and `Duration` arithmetic
/// cost as much again, for a loop that reads the clock several times per
/// message.
///
/// ```
/// let a = mob_sys::clock::monotonic_nanos().unwrap();
/// let b = mob_sys::clock::monotonic_nanos().unwrap();
/// assert!(b >= a);
/// ```
pub fn monotonic_nanos() -> Option<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}
