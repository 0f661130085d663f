//! The kingpin's table of open calls, which also counts, per requesting
//! worker, the requests of that worker it holds, so that one worker cannot
//! grow it without bound
//! ([`KingpinConfig::max_open_requests`](crate::KingpinConfig)).

use super::calls::CallEntry;
use crate::deadlines::Deadlines;
use crate::kingpin::LinkId;
use crate::time::Instant;
use alloc::vec::Vec;

/// Open calls by id, with their deadlines, and the number of forwarded
/// requests each origin has among them. Every change goes through here, so
/// the counts are exact.
pub(super) struct CallTable {
    calls: Deadlines<CallEntry>,
    /// Forwarded requests per origin link, by the link's slot: the slot's
    /// generation and the count (a slot of another generation counts 0).
    open: Vec<(u32, u32)>,
}

impl CallTable {
    pub(super) const fn new() -> CallTable {
        CallTable { calls: Deadlines::new(), open: Vec::new() }
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// How many of `origin`'s requests the table holds.
    pub(super) fn open_from(&self, origin: LinkId) -> u32 {
        match self.open.get(origin.index()) {
            Some(&(generation, n)) if generation == origin.generation() => n,
            _ => 0,
        }
    }

    pub(super) fn insert(&mut self, id: u64, deadline: Instant, entry: CallEntry) {
        self.count(&entry, true);
        if let Some(old) = self.calls.insert(id, deadline, entry) {
            self.count(&old, false);
        }
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.calls.contains(id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut CallEntry> {
        self.calls.get_mut(id)
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<CallEntry> {
        let entry = self.calls.remove(id)?;
        self.count(&entry, false);
        Some(entry)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.calls.next_deadline()
    }

    /// Removes and returns every call whose deadline is at or before `now`.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<(u64, CallEntry)> {
        let expired = self.calls.expire(now);
        for (_, entry) in &expired {
            self.count(entry, false);
        }
        expired
    }

    /// Removes and returns every call for which `pred` holds.
    pub(super) fn extract_if(&mut self, pred: impl FnMut(&CallEntry) -> bool) -> Vec<(u64, CallEntry)> {
        let taken = self.calls.extract_if(pred);
        for (_, entry) in &taken {
            self.count(entry, false);
        }
        taken
    }

    fn count(&mut self, entry: &CallEntry, added: bool) {
        let CallEntry::Forward { origin, .. } = entry else { return };
        let i = origin.index();
        if i >= self.open.len() {
            self.open.resize(i + 1, (0, 0));
        }
        let slot = &mut self.open[i];
        if slot.0 != origin.generation() {
            *slot = (origin.generation(), 0);
        }
        slot.1 = if added { slot.1 + 1 } else { slot.1.saturating_sub(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    fn forward(origin: u64) -> CallEntry {
        let (origin, target) = (LinkId::from_u64(origin), LinkId::from_u64(99));
        CallEntry::Forward { origin, origin_id: 1, target, replied: false, callbacks: BTreeSet::new() }
    }

    #[test]
    fn counts_follow_every_way_out() {
        let mut t = CallTable::new();
        let (a, b) = (LinkId::from_u64(1), LinkId::from_u64(2));
        let at = |s| Instant::from_nanos(s);
        t.insert(1, at(10), forward(1));
        t.insert(2, at(20), forward(1));
        t.insert(3, at(30), forward(1));
        t.insert(4, at(10), forward(2));
        t.insert(5, at(10), CallEntry::Own { target: b, replied: false });
        assert_eq!((t.open_from(a), t.open_from(b)), (3, 1));
        assert!(t.remove(2).is_some());
        assert!(t.remove(2).is_none());
        assert_eq!(t.open_from(a), 2);
        assert_eq!(t.expire(at(10)).len(), 3);
        assert_eq!((t.open_from(a), t.open_from(b)), (1, 0));
        // Replacing an entry counts the old one out.
        t.insert(3, at(30), forward(2));
        assert_eq!((t.open_from(a), t.open_from(b)), (0, 1));
        assert_eq!(t.extract_if(|_| true).len(), 1);
        assert_eq!((t.open_from(b), t.len()), (0, 0));
        // Another link in the same slot (a later generation) starts from
        // nothing.
        t.insert(7, at(50), forward(1));
        assert_eq!((t.open_from(a), t.open_from(LinkId::from_u64(1 << 32 | 1))), (1, 0));
    }
}
