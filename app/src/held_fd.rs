//! [`HeldFd`]: an fd a kingpin holds for a frame until it is sent.

use mob_proto::{FdHandle, FdTable};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

/// An fd the kingpin holds for a frame: its own (received from a worker, or
/// given up by the application), or one the application shares with any
/// number of frames (the runtimes' `Kingpin::send_shared` and `broadcast`).
///
/// Sending a shared fd costs no `dup` and no `close` per frame: the kernel
/// takes its own reference when the frame is written, and the frame lets go
/// of its `Arc` then. The fd closes when the last holder drops it.
///
/// ```
/// use mob_app::HeldFd;
/// use std::os::fd::{AsRawFd, OwnedFd};
/// use std::sync::Arc;
///
/// let file = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null")?));
/// let held = HeldFd::Shared(file.clone());
/// assert_eq!(held.as_raw_fd(), file.as_raw_fd());
/// drop(held); // the application's reference keeps it open
/// assert!(std::fs::File::from(Arc::try_unwrap(file).unwrap()).metadata().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum HeldFd {
    /// Closed when the frame has left (or is dropped).
    Own(OwnedFd),
    /// Shared with the application: only this frame's reference goes.
    Shared(Arc<OwnedFd>),
}

impl HeldFd {
    /// Registers `fds` in `table`, each held by its frame alone (closed once
    /// it has left): their handles, in order.
    #[inline]
    pub fn hold(table: &mut FdTable<HeldFd>, fds: Vec<OwnedFd>) -> Vec<FdHandle> {
        // Most messages carry none: no iterator to set up and collect.
        if fds.is_empty() {
            return Vec::new();
        }
        fds.into_iter().map(|fd| table.insert(HeldFd::Own(fd))).collect()
    }

    /// Registers a reference to each of `fds` in `table` (the application
    /// keeps them): their handles, in order.
    pub fn share(table: &mut FdTable<HeldFd>, fds: &[Arc<OwnedFd>]) -> Vec<FdHandle> {
        fds.iter().map(|fd| table.insert(HeldFd::Shared(fd.clone()))).collect()
    }

    /// An fd of its own, for an application that is handed it: the fd
    /// itself, or a duplicate of a shared one (still held elsewhere).
    pub fn into_owned(self) -> io::Result<OwnedFd> {
        match self {
            HeldFd::Own(fd) => Ok(fd),
            HeldFd::Shared(fd) => Arc::try_unwrap(fd).or_else(|fd| fd.try_clone()),
        }
    }
}

impl From<OwnedFd> for HeldFd {
    fn from(fd: OwnedFd) -> HeldFd {
        HeldFd::Own(fd)
    }
}

impl AsFd for HeldFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            HeldFd::Own(fd) => fd.as_fd(),
            HeldFd::Shared(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for HeldFd {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
    }

    #[test]
    fn a_shared_fd_outlives_its_frames_and_an_owned_one_is_handed_over_as_is() {
        let own = open();
        let raw = own.as_raw_fd();
        assert_eq!(HeldFd::from(own).into_owned().unwrap().as_raw_fd(), raw);
        let shared = Arc::new(open());
        let frames: Vec<HeldFd> = (0..3).map(|_| HeldFd::Shared(shared.clone())).collect();
        assert!(frames.iter().all(|f| f.as_raw_fd() == shared.as_raw_fd()));
        // Handed to an application while still shared: a duplicate.
        let mut frames = frames.into_iter();
        let copy = frames.next().unwrap().into_owned().unwrap();
        assert_ne!(copy.as_raw_fd(), shared.as_raw_fd());
        drop(frames);
        assert_eq!(Arc::strong_count(&shared), 1);
        // The last holder gets the fd itself.
        let raw = shared.as_raw_fd();
        assert_eq!(HeldFd::Shared(shared).into_owned().unwrap().as_raw_fd(), raw);
    }
}
