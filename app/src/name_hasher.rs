//! A cheap hasher for the small keys a runtime looks up on every frame
//! (handler names, request and callback ids).

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash's mixing step over bytes: a few instructions per byte, where the
/// default SipHash costs a hundred per lookup. Only for keys that the
/// application or proto chooses (names it registered, ids proto hands out):
/// a peer's names are only looked up, so a keyed hash buys nothing.
#[derive(Default)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    // Integer keys (ids) in one step, not eight.
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The [`std::hash::BuildHasher`] of [`NameHasher`], for
/// `HashMap<K, V, BuildNameHasher>`.
pub type BuildNameHasher = BuildHasherDefault<NameHasher>;
