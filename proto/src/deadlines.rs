//! A table of entries keyed by id, each with an optional deadline, that can
//! hand back everything that has expired.

use crate::time::Instant;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Entries by id, indexed by deadline. [`Instant::MAX`] means "no deadline".
pub(crate) struct Deadlines<T> {
    entries: BTreeMap<u64, (Instant, T)>,
    by_time: BTreeSet<(Instant, u64)>,
}

impl<T> Deadlines<T> {
    pub(crate) const fn new() -> Self {
        Deadlines { entries: BTreeMap::new(), by_time: BTreeSet::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn insert(&mut self, id: u64, deadline: Instant, value: T) {
        if let Some((old, _)) = self.entries.insert(id, (deadline, value)) {
            self.by_time.remove(&(old, id));
        }
        if deadline != Instant::MAX {
            self.by_time.insert((deadline, id));
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let (deadline, value) = self.entries.remove(&id)?;
        self.by_time.remove(&(deadline, id));
        Some(value)
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns every entry whose deadline is at or before `now`,
    /// earliest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.by_time.first() {
            if t > now {
                break;
            }
            self.by_time.pop_first();
            if let Some((_, v)) = self.entries.remove(&id) {
                out.push((id, v));
            }
        }
        out
    }

    /// Removes and returns every entry whose value matches.
    pub(crate) fn extract_if(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<(u64, T)> {
        let ids: Vec<u64> = self.entries.iter().filter(|(_, (_, v))| pred(v)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.remove(id).map(|v| (id, v))).collect()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        self.by_time.clear();
        core::mem::take(&mut self.entries).into_iter().map(|(id, (_, v))| (id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
