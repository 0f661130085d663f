//! Opaque handles for file descriptors that the runtime keeps.
//!
//! `mob-proto` never holds a file descriptor. When the runtime receives fds
//! on a link it stores them (for example in an [`FdTable`]) and hands proto an
//! [`FdHandle`] for each. Proto attaches the handles to the frames that claim
//! them and gives every handle back exactly once, in one of three ways:
//!
//! - **delivered**: inside a message handed to the application;
//! - **transmitted**: returned by `handle_transmitted` after the bytes it
//!   rides with were written, so the runtime can close its copy;
//! - **released**: as `Output::ReleaseFd`, when the message that carried it
//!   was dropped (link closed, frame rejected, peer gone).
//!
//! [`FdHandle`] is deliberately neither `Copy` nor `Clone`: the type system
//! helps keep that accounting honest.

use alloc::vec::Vec;

/// An opaque, generation-tagged reference to a file descriptor held by the
/// runtime.
///
/// The runtime decides what the 64 bits mean; [`FdTable`] packs a slot index
/// and a generation so that a stale handle never finds a newer fd.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FdHandle(u64);

impl FdHandle {
    /// Wraps a runtime-chosen value.
    pub const fn from_raw(raw: u64) -> FdHandle {
        FdHandle(raw)
    }

    /// The runtime-chosen value, consuming the handle.
    pub const fn into_raw(self) -> u64 {
        self.0
    }

    /// The runtime-chosen value, without consuming the handle.
    pub const fn raw(&self) -> u64 {
        self.0
    }
}

enum Entry<T> {
    Full { generation: u32, value: T },
    Free { generation: u32, next_free: u32 },
}

const NONE: u32 = u32::MAX;

/// A generational table: the runtime's store for the things behind
/// [`FdHandle`]s (typically `OwnedFd`).
///
/// Taking a handle a second time, or taking a handle whose slot has since been
/// reused, returns `None` instead of another entry's value.
///
/// ```
/// use mob_proto::FdTable;
///
/// let mut table = FdTable::new();
/// let h = table.insert("an fd");
/// let raw = h.raw();
/// assert_eq!(table.take(h), Some("an fd"));
/// // A forged copy of the old handle finds nothing.
/// assert_eq!(table.take(mob_proto::FdHandle::from_raw(raw)), None);
/// assert!(table.is_empty());
/// ```
pub struct FdTable<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
}

impl<T> Default for FdTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> FdTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        FdTable { entries: Vec::new(), free_head: NONE, len: 0 }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns the only handle to it.
    pub fn insert(&mut self, value: T) -> FdHandle {
        self.len += 1;
        if self.free_head != NONE {
            let index = self.free_head;
            let slot = &mut self.entries[index as usize];
            let Entry::Free { generation, next_free } = *slot else { unreachable!("free list points at a full entry") };
            self.free_head = next_free;
            *slot = Entry::Full { generation, value };
            return FdHandle(pack(index, generation));
        }
        let index = self.entries.len() as u32;
        self.entries.push(Entry::Full { generation: 0, value });
        FdHandle(pack(index, 0))
    }

    /// Removes and returns the value behind `handle`, if it is still there.
    pub fn take(&mut self, handle: FdHandle) -> Option<T> {
        let (index, want) = unpack(handle.0);
        let slot = self.entries.get_mut(index as usize)?;
        match slot {
            Entry::Full { generation, .. } if *generation == want => {}
            _ => return None,
        }
        let next = Entry::Free { generation: want.wrapping_add(1), next_free: self.free_head };
        let Entry::Full { value, .. } = core::mem::replace(slot, next) else { unreachable!("checked above") };
        self.free_head = index;
        self.len -= 1;
        Some(value)
    }

    /// Borrows the value behind `handle`, if it is still there.
    pub fn get(&self, handle: &FdHandle) -> Option<&T> {
        let (index, want) = unpack(handle.0);
        match self.entries.get(index as usize)? {
            Entry::Full { generation, value } if *generation == want => Some(value),
            _ => None,
        }
    }
}

fn pack(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn unpack(raw: u64) -> (u32, u32) {
    (raw as u32, (raw >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_rejects_stale_handle() {
        let mut t = FdTable::new();
        let a = t.insert(1);
        let stale = FdHandle::from_raw(a.raw());
        assert_eq!(t.take(a), Some(1));
        let b = t.insert(2);
        assert_ne!(stale.raw(), b.raw());
        assert!(t.get(&stale).is_none());
        assert_eq!(t.take(stale), None);
        assert_eq!(t.take(b), Some(2));
        assert!(t.is_empty());
    }
}
