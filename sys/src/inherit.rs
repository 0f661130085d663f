//! What a worker process inherits from its kingpin: its channel (a Unix
//! stream socket on the fd `MOB_FD` names, normally 3) and who it is
//! (`MOB_ROLE`, `MOB_SLOT`, `MOB_APP`). SPEC.md section 2.1.
//!
//! [`take`] is for workers written against `mob-proto` directly, on a
//! runtime of their own (see the tokio example): it hands over the channel
//! as an [`OwnedFd`], checked and close-on-exec, without `unsafe` in the
//! caller.

use crate::{CHANNEL_FD, ENV_APP, ENV_FD, ENV_ROLE, ENV_SLOT};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A worker's inheritance.
#[derive(Debug)]
pub struct Inherited {
    /// The application's name (`MOB_APP`; empty if unset).
    pub app: String,
    /// This worker's role (`MOB_ROLE`), to echo in its Hello.
    pub role: String,
    /// Its slot within the role (`MOB_SLOT`), to echo in its Hello.
    pub slot: u32,
    /// The channel to the kingpin, close-on-exec, in blocking mode as it
    /// was inherited.
    pub channel: OwnedFd,
}

/// Why there is no inheritance to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InheritError {
    /// This process was not started by a kingpin: a variable is missing or
    /// malformed.
    NotAWorker(&'static str),
    /// The channel was taken already (by an earlier [`take`]).
    AlreadyTaken,
    /// The fd `MOB_FD` names is not an open Unix stream socket.
    NotAChannel(RawFd),
}

impl std::fmt::Display for InheritError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InheritError::NotAWorker(why) => write!(f, "not started by a mob kingpin: {why}"),
            InheritError::AlreadyTaken => f.write_str("the channel to the kingpin was taken already"),
            InheritError::NotAChannel(fd) => write!(f, "fd {fd} is not an open Unix stream socket"),
        }
    }
}

impl std::error::Error for InheritError {}

impl From<InheritError> for std::io::Error {
    fn from(e: InheritError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes this worker's inheritance, once per process.
///
/// ```no_run
/// let me = mob_sys::inherit::take()?;
/// mob_sys::channel::set_nonblocking(&me.channel, true)?;
/// println!("{} #{} of {}", me.role, me.slot, me.app);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn take() -> Result<Inherited, InheritError> {
    use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt};
    let role = std::env::var(ENV_ROLE).map_err(|_| InheritError::NotAWorker("MOB_ROLE is not set"))?;
    let slot = std::env::var(ENV_SLOT).ok().and_then(|s| s.parse().ok());
    let slot = slot.ok_or(InheritError::NotAWorker("MOB_SLOT is not a number"))?;
    let fd = match std::env::var(ENV_FD) {
        Ok(fd) => fd.parse().map_err(|_| InheritError::NotAWorker("MOB_FD is not a number"))?,
        Err(_) => CHANNEL_FD,
    };
    if fd < 0 {
        return Err(InheritError::NotAChannel(fd));
    }
    // SAFETY: only for the checks below; a closed fd fails them (EBADF).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let unix = getsockname::<SockaddrStorage>(fd).is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
    let stream = getsockopt(&borrowed, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    if !unix || !stream {
        return Err(InheritError::NotAChannel(fd));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(InheritError::AlreadyTaken);
    }
    // SAFETY: the kingpin placed this socket here for this process alone
    // (checked open and a Unix stream socket above), and TAKEN makes this
    // the only place that ever takes ownership of it.
    let channel = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::channel::set_cloexec(&channel).map_err(|_| InheritError::NotAChannel(fd))?;
    let app = std::env::var(ENV_APP).unwrap_or_default();
    Ok(Inherited { app, role, slot, channel })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_not_started_by_a_kingpin_has_nothing_to_take() {
        // The test harness is not a worker: no MOB_ROLE.
        assert_eq!(take().err(), Some(InheritError::NotAWorker("MOB_ROLE is not set")));
    }
}
