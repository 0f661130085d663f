//! A table of entries keyed by id, each with an optional deadline, that can
//! hand back everything that has expired.

use crate::id_map::IdMap;
use crate::time::Instant;
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;

/// Entries by id, indexed by deadline. [`Instant::MAX`] means "no deadline".
///
/// The index is a min-heap that forgets lazily: removing an entry leaves its
/// heap item behind, stale, to be dropped when it comes to the top (at once
/// when it is the earliest, as a request answered before the next one's is)
/// or when stale items outnumber live ones (the heap is rebuilt). So the
/// top of the heap is always a live entry's deadline, and the heap never
/// holds more than about twice the entries.
pub(crate) struct Deadlines<T> {
    entries: IdMap<(Instant, T)>,
    by_time: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl<T> Deadlines<T> {
    pub(crate) const fn new() -> Self {
        Deadlines { entries: IdMap::new(), by_time: BinaryHeap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds entry `id`, or replaces it (returning what it held).
    pub(crate) fn insert(&mut self, id: u64, deadline: Instant, value: T) -> Option<T> {
        let replaced = self.entries.insert(id, (deadline, value));
        if deadline != Instant::MAX {
            self.by_time.push(Reverse((deadline, id)));
        }
        if replaced.is_some() {
            self.tidy();
        }
        replaced.map(|(_, value)| value)
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.entries.get_mut(id).map(|(_, v)| v)
    }

    /// Takes entry `id` out.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let (_, value) = self.entries.remove(id)?;
        self.tidy();
        Some(value)
    }

    /// The earliest deadline of an entry, if any has one.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_time.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes out every entry whose deadline is at or before `now`, earliest
    /// first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(&Reverse((t, id))) = self.by_time.peek() {
            if t > now {
                break;
            }
            self.by_time.pop();
            if self.is_live((t, id))
                && let Some((_, v)) = self.entries.remove(id)
            {
                out.push((id, v));
            }
        }
        self.tidy();
        out
    }

    /// Takes out the entries `pred` picks, in id order.
    pub(crate) fn extract_if(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<(u64, T)> {
        let mut ids: Vec<u64> = self.entries.iter().filter(|(_, (_, v))| pred(v)).map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.remove(id).map(|v| (id, v))).collect()
    }

    /// Takes out every entry, in id order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + use<T> {
        self.by_time.clear();
        let mut all: Vec<(u64, T)> = self.entries.take_all().map(|(id, (_, v))| (id, v)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter()
    }

    fn is_live(&self, (t, id): (Instant, u64)) -> bool {
        self.entries.get(id).is_some_and(|(d, _)| *d == t)
    }

    /// Drops stale items from the top of the heap, and rebuilds the heap
    /// when they make up most of it.
    fn tidy(&mut self) {
        while let Some(&Reverse(top)) = self.by_time.peek() {
            if self.is_live(top) {
                break;
            }
            self.by_time.pop();
        }
        if self.by_time.len() > 2 * self.entries.len() + 32 {
            let live =
                self.entries.iter().filter(|(_, (t, _))| *t != Instant::MAX).map(|(id, (t, _))| Reverse((*t, id)));
            self.by_time = live.collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[test]
    fn expires_in_deadline_order_and_ignores_removed() {
        let mut d = Deadlines::new();
        d.insert(1, Instant::from_nanos(30), 'a');
        d.insert(2, Instant::from_nanos(10), 'b');
        d.insert(3, Instant::MAX, 'c');
        d.insert(4, Instant::from_nanos(20), 'd');
        assert_eq!(d.remove(4), Some('d'));
        assert_eq!(d.next_deadline(), Some(Instant::from_nanos(10)));
        assert_eq!(d.expire(Instant::from_nanos(30)), alloc::vec![(2, 'b'), (1, 'a')]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next_deadline(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, Option<u64>),
        Remove(u64),
        Expire(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..12u64, proptest::option::of(0..50u64)).prop_map(|(id, t)| Op::Insert(id, t)),
            (0..12u64).prop_map(Op::Remove),
            (0..60u64).prop_map(Op::Expire),
        ]
    }

    proptest::proptest! {
        /// Against a plain map searched in full: the same entries, the same
        /// earliest deadline, the same expiries in the same order, and a heap
        /// that stays within its bound.
        #[test]
        fn behaves_as_a_map_searched_in_full(ops in proptest::collection::vec(op(), 0..200)) {
            let mut d = Deadlines::new();
            let mut model: BTreeMap<u64, (Instant, u64)> = BTreeMap::new();
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u64;
                match op {
                    Op::Insert(id, t) => {
                        let t = t.map_or(Instant::MAX, Instant::from_nanos);
                        d.insert(id, t, n);
                        model.insert(id, (t, n));
                    }
                    Op::Remove(id) => {
                        proptest::prop_assert_eq!(d.remove(id), model.remove(&id).map(|(_, v)| v));
                    }
                    Op::Expire(now) => {
                        let now = Instant::from_nanos(now);
                        let mut want: Vec<(Instant, u64, u64)> =
                            model.iter().filter(|(_, (t, _))| *t <= now).map(|(id, (t, v))| (*t, *id, *v)).collect();
                        want.sort();
                        for (_, id, _) in &want {
                            model.remove(id);
                        }
                        let want: Vec<(u64, u64)> = want.into_iter().map(|(_, id, v)| (id, v)).collect();
                        proptest::prop_assert_eq!(d.expire(now), want);
                    }
                }
                let earliest = model.values().map(|(t, _)| *t).filter(|t| *t != Instant::MAX).min();
                proptest::prop_assert_eq!(d.next_deadline(), earliest);
                proptest::prop_assert_eq!(d.len(), model.len());
                proptest::prop_assert!(d.by_time.len() <= 2 * d.entries.len() + 33);
            }
        }
    }
}
