//! [`IdMap`]: values by the ids this side hands out (request, call and
//! callback ids: counters), with no allocation per insert or remove.
//!
//! A `BTreeMap` that goes from one entry to none frees its node, and
//! allocates one again for the next: with one request in flight at a time,
//! that is an allocation and a free per request in every table it passes
//! through. This is an open-addressing hash table (linear probing, removal
//! by backward shift, so no tombstones) that keeps its slots: it grows at
//! half full and shrinks below an eighth, so a burst does not hold memory
//! for good.
//!
//! The hash is Fibonacci hashing (a multiplication), which spreads counters
//! evenly. Keys chosen to collide would make it slow, so this map is for
//! counters this side assigns, and, in a worker, for the call ids the
//! kingpin assigns; never for ids a worker chooses (the kingpin keeps a
//! worker's own request ids in a `BTreeSet`).

use alloc::vec::Vec;
use core::mem;

/// Fewest slots once any are allocated (a power of two).
const MIN_SLOTS: usize = 8;

/// Values of type `V` by `u64` id.
pub(crate) struct IdMap<V> {
    /// Empty, or a power of two of slots.
    slots: Vec<Option<(u64, V)>>,
    len: usize,
}

impl<V> IdMap<V> {
    pub(crate) const fn new() -> Self {
        IdMap { slots: Vec::new(), len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot where `id`'s probe starts.
    fn home(&self, id: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The slot that holds `id`.
    fn find(&self, id: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((k, _)) if *k == id => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<&V> {
        self.find(id).and_then(|i| self.slots[i].as_ref()).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        let i = self.find(id)?;
        self.slots[i].as_mut().map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, id: u64) -> bool {
        self.find(id).is_some()
    }

    /// Sets `id` to `value`; returns the value it replaces.
    pub(crate) fn insert(&mut self, id: u64, value: V) -> Option<V> {
        if let Some(i) = self.find(id) {
            return self.slots[i].replace((id, value)).map(|(_, v)| v);
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        self.place(id, value);
        self.len += 1;
        None
    }

    /// Puts an id that is not in the table in its first free slot.
    fn place(&mut self, id: u64, value: V) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((id, value));
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<V> {
        let mut hole = self.find(id)?;
        let (_, value) = self.slots[hole].take()?;
        self.len -= 1;
        // Backward shift: each entry after the hole that may live at or
        // before it (its probe started there or earlier) moves into it.
        let mask = self.slots.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some((k, _)) = &self.slots[j] else { break };
            let home = self.home(*k);
            // Whether `home` lies outside the cyclic range (hole, j].
            let outside = if hole < j { home <= hole || home > j } else { home <= hole && home > j };
            if outside {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
        Some(value)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.slots.iter().flatten().map(|(k, v)| (*k, v))
    }

    /// Takes every entry out, in no particular order.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = (u64, V)> {
        self.len = 0;
        mem::take(&mut self.slots).into_iter().flatten()
    }

    fn resize(&mut self, slots: usize) {
        let old = mem::replace(&mut self.slots, (0..slots).map(|_| None).collect());
        for (k, v) in old.into_iter().flatten() {
            self.place(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        TakeAll,
    }

    fn key() -> impl Strategy<Value = u64> {
        // Counters (dense), and ids far apart that share their low bits.
        prop_oneof![0..40u64, (0..8u64).prop_map(|i| i << 58 | 5), any::<u64>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            6 => key().prop_map(Op::Remove),
            1 => Just(Op::TakeAll),
        ]
    }

    proptest! {
        /// Against a `BTreeMap`: the same answers to every call, the same
        /// entries after each step, and slots within the load bounds.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut m = IdMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(m.remove(k), model.remove(&k)),
                    Op::TakeAll => {
                        let mut all: Vec<(u64, u32)> = m.take_all().collect();
                        all.sort();
                        prop_assert_eq!(all, core::mem::take(&mut model).into_iter().collect::<Vec<_>>());
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                let mut entries: Vec<(u64, u32)> = m.iter().map(|(k, v)| (k, *v)).collect();
                entries.sort();
                prop_assert_eq!(entries, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
                for (k, v) in &model {
                    prop_assert_eq!(m.get(*k), Some(v));
                    prop_assert!(m.contains_key(*k));
                }
                prop_assert!(m.slots.is_empty() || m.slots.len().is_power_of_two());
                prop_assert!(m.len() * 2 <= m.slots.len() || m.slots.is_empty() && m.len() == 0);
            }
        }
    }

    #[test]
    fn a_request_at_a_time_keeps_its_slots_and_a_burst_gives_them_back() {
        let mut m = IdMap::new();
        for id in 0..1000u64 {
            m.insert(id, id);
            let slots = m.slots.as_ptr();
            assert_eq!(m.remove(id), Some(id));
            m.insert(id + 1_000_000, id);
            assert_eq!(m.slots.as_ptr(), slots, "no new allocation");
            m.remove(id + 1_000_000);
        }
        for id in 0..100_000u64 {
            m.insert(id, id);
        }
        assert!(m.slots.len() >= 200_000);
        for id in 0..100_000u64 {
            assert_eq!(m.get_mut(id).map(|v| *v), Some(id));
            m.remove(id);
        }
        assert!(m.slots.len() <= 16, "{} slots left", m.slots.len());
    }
}
