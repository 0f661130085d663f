//! Socket activation: listening sockets that systemd (or
//! `systemd-socket-activate`, or any manager following the same convention)
//! bound for us and passed at start.
//!
//! The convention (`sd_listen_fds(3)`): the sockets are fds 3, 4, ... up to
//! `3 + LISTEN_FDS - 1`; `LISTEN_PID` says which process they are for (ours,
//! or the variables were inherited by mistake and mean nothing);
//! `LISTEN_FDNAMES` names them, colon-separated (a `.socket` unit's
//! `FileDescriptorName=`, `systemd-socket-activate --fdname=`), in order.
//!
//! [`init`] takes them once per process: it checks each fd is open, marks it
//! close-on-exec (so workers and anything else we start do not inherit it)
//! and unsets the three variables (so nothing we start mistakes them for
//! its own). [`take`] then hands out a socket by name: the kingpin does this
//! for a role whose address is [`crate::listen::ListenAddr::Systemd`], and
//! shares the socket with the role's workers like one it bound itself.
//!
//! The kingpin is not a worker, so fd 3 is free in it; in a worker fd 3 is
//! the channel to the kingpin ([`crate::CHANNEL_FD`]), and [`init`] refuses
//! passed fds that would be it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The first passed fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Environment variable: which process the passed fds are for.
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// Environment variable: how many fds were passed.
pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
/// Environment variable: their names, colon-separated.
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// The name systemd gives a passed fd that has none.
pub const UNNAMED: &str = "unknown";

/// Why the passed sockets cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActivationError {
    /// `LISTEN_FDS` or `LISTEN_PID` is not a number.
    BadVariable(&'static str),
    /// `LISTEN_FDNAMES` does not name exactly `LISTEN_FDS` fds.
    NameCount {
        /// `LISTEN_FDS`.
        fds: usize,
        /// How many names `LISTEN_FDNAMES` has.
        names: usize,
    },
    /// A passed fd is not open.
    NotOpen(RawFd),
    /// A passed fd would be this worker's channel to its kingpin.
    Clash(RawFd),
    /// No (unused) passed socket has this name.
    NoSuchName {
        /// The name asked for.
        name: String,
        /// The names of the sockets still unused.
        unused: Vec<String>,
    },
    /// The socket is not a listening stream socket (a `.socket` unit with
    /// `Accept=yes`, or a datagram socket, say).
    NotListening(String),
}

impl std::fmt::Display for ActivationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivationError::BadVariable(var) => write!(f, "{var} is not a number"),
            ActivationError::NameCount { fds, names } => {
                write!(f, "{ENV_LISTEN_FDNAMES} names {names} fds but {ENV_LISTEN_FDS} is {fds}")
            }
            ActivationError::NotOpen(fd) => write!(f, "passed fd {fd} is not open"),
            ActivationError::Clash(fd) => write!(f, "passed fd {fd} is this worker's channel to its kingpin"),
            ActivationError::NoSuchName { name, unused } => {
                write!(f, "no unused systemd socket named {name:?} (unused: {unused:?})")
            }
            ActivationError::NotListening(name) => {
                write!(f, "systemd socket {name:?} is not a listening stream socket (Accept=no, ListenStream=)")
            }
        }
    }
}

impl std::error::Error for ActivationError {}

impl From<ActivationError> for io::Error {
    fn from(e: ActivationError) -> io::Error {
        let kind = match e {
            ActivationError::NoSuchName { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Which fds were passed to `our_pid`, with their names, from the values of
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. Empty when nothing was
/// passed, or it was passed to another process (the variables were
/// inherited). The IO-free half of [`init`].
///
/// ```
/// use mob_sys::activation::passed;
///
/// let fds = passed(Some("42"), Some("2"), Some("web:admin"), 42).unwrap();
/// assert_eq!(fds, vec![(3, "web".to_string()), (4, "admin".to_string())]);
/// assert!(passed(Some("41"), Some("2"), None, 42).unwrap().is_empty());
/// ```
pub fn passed(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> Result<Vec<(RawFd, String)>, ActivationError> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else { return Ok(Vec::new()) };
    let pid: u32 = pid.trim().parse().map_err(|_| ActivationError::BadVariable(ENV_LISTEN_PID))?;
    if pid != our_pid {
        return Ok(Vec::new());
    }
    let count: usize = count.trim().parse().map_err(|_| ActivationError::BadVariable(ENV_LISTEN_FDS))?;
    if count > (RawFd::MAX - LISTEN_FDS_START) as usize {
        return Err(ActivationError::BadVariable(ENV_LISTEN_FDS));
    }
    let names: Vec<String> = match listen_fdnames {
        Some(names) if count > 0 => names.split(':').map(String::from).collect(),
        _ => vec![UNNAMED.to_string(); count],
    };
    if names.len() != count {
        return Err(ActivationError::NameCount { fds: count, names: names.len() });
    }
    Ok(names.into_iter().enumerate().map(|(i, name)| (LISTEN_FDS_START + i as RawFd, name)).collect())
}

/// A passed socket, until it is taken.
struct Passed {
    name: String,
    fd: Option<OwnedFd>,
}

/// `None` until [`init`] has looked at the environment.
static PASSED: Mutex<Option<Vec<Passed>>> = Mutex::new(None);

/// Takes the sockets passed to this process, once: checks each, marks it
/// close-on-exec and unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
/// Later calls do nothing. Returns how many sockets are still unused.
///
/// Call it early, before the process starts threads of its own (the mob
/// kingpins call it first thing): unsetting a variable races with other
/// threads reading the environment, as `sd_listen_fds(1)` does in C.
pub fn init() -> Result<usize, ActivationError> {
    let mut passed_fds = PASSED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(all) = passed_fds.as_ref() {
        return Ok(all.iter().filter(|p| p.fd.is_some()).count());
    }
    let var = |name| std::env::var(name).ok();
    let fds = passed(
        var(ENV_LISTEN_PID).as_deref(),
        var(ENV_LISTEN_FDS).as_deref(),
        var(ENV_LISTEN_FDNAMES).as_deref(),
        std::process::id(),
    )?;
    let channel = std::env::var(crate::ENV_FD).ok().and_then(|fd| fd.parse::<RawFd>().ok());
    for (fd, _) in &fds {
        if Some(*fd) == channel {
            return Err(ActivationError::Clash(*fd));
        }
        set_cloexec(*fd)?;
    }
    if !fds.is_empty() {
        // SAFETY: see the function's docs; the variables are only unset if
        // they were meant for us.
        unsafe {
            std::env::remove_var(ENV_LISTEN_PID);
            std::env::remove_var(ENV_LISTEN_FDS);
            std::env::remove_var(ENV_LISTEN_FDNAMES);
        }
    }
    let all: Vec<Passed> = fds
        .into_iter()
        // SAFETY: the manager that started us passed these fds to this very
        // process (LISTEN_PID), each is open (checked above), none is our
        // channel, and the `None` -> `Some` transition of PASSED under its
        // lock makes this the only place that ever owns them.
        .map(|(fd, name)| Passed { name, fd: Some(unsafe { OwnedFd::from_raw_fd(fd) }) })
        .collect();
    let count = all.len();
    *passed_fds = Some(all);
    Ok(count)
}

fn set_cloexec(fd: RawFd) -> Result<(), ActivationError> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: only for these two fcntl calls; a closed fd fails with EBADF.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|_| ActivationError::NotOpen(fd))?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|_| ActivationError::NotOpen(fd))?;
    Ok(())
}

/// Takes the first unused passed socket named `name` ([`init`] first, if it
/// has not run). Several sockets may share a name (a `.socket` unit with two
/// `ListenStream=` lines): each call takes the next.
pub fn take(name: &str) -> Result<OwnedFd, ActivationError> {
    init()?;
    let mut passed_fds = PASSED.lock().unwrap_or_else(|e| e.into_inner());
    let all = passed_fds.get_or_insert_with(Vec::new);
    if let Some(fd) = all.iter_mut().find(|p| p.name == name && p.fd.is_some()).and_then(|p| p.fd.take()) {
        return Ok(fd);
    }
    let unused = all.iter().filter(|p| p.fd.is_some()).map(|p| p.name.clone()).collect();
    Err(ActivationError::NoSuchName { name: name.to_string(), unused })
}

/// Takes the socket named `name` and checks that it is a listening stream
/// socket, as a role's listen address must be.
pub fn take_listener(name: &str) -> Result<OwnedFd, ActivationError> {
    use nix::sys::socket::{SockType, getsockopt, sockopt};
    let fd = take(name)?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let stream = getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    if !listening || !stream {
        return Err(ActivationError::NotListening(name.to_string()));
    }
    Ok(fd)
}

/// Whether an unused socket named `name` was passed to this process (runs
/// [`init`] first; false if that fails). For "take the systemd socket if
/// there is one, else bind":
///
/// ```no_run
/// use mob_sys::activation;
/// use mob_sys::listen::ListenAddr;
///
/// let addr = if activation::has("web") {
///     ListenAddr::Systemd("web".into())
/// } else {
///     ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap())
/// };
/// ```
pub fn has(name: &str) -> bool {
    if init().is_err() {
        return false;
    }
    let passed_fds = PASSED.lock().unwrap_or_else(|e| e.into_inner());
    passed_fds.iter().flatten().any(|p| p.name == name && p.fd.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_start_at_3_and_take_their_names_in_order() {
        let fds = passed(Some("7"), Some("3"), Some("web:admin:web"), 7).unwrap();
        assert_eq!(fds, vec![(3, "web".into()), (4, "admin".into()), (5, "web".into())]);
    }

    #[test]
    fn unnamed_fds_are_called_unknown() {
        let fds = passed(Some("7"), Some("2"), None, 7).unwrap();
        assert_eq!(fds, vec![(3, UNNAMED.into()), (4, UNNAMED.into())]);
    }

    #[test]
    fn fds_for_another_process_or_no_variables_mean_nothing_was_passed() {
        assert!(passed(Some("8"), Some("2"), Some("a:b"), 7).unwrap().is_empty());
        assert!(passed(None, Some("2"), None, 7).unwrap().is_empty());
        assert!(passed(Some("7"), None, None, 7).unwrap().is_empty());
        assert!(passed(Some("7"), Some("0"), Some(""), 7).unwrap().is_empty());
    }

    #[test]
    fn malformed_variables_are_typed_errors() {
        assert_eq!(passed(Some("x"), Some("1"), None, 7), Err(ActivationError::BadVariable(ENV_LISTEN_PID)));
        assert_eq!(passed(Some("7"), Some("-1"), None, 7), Err(ActivationError::BadVariable(ENV_LISTEN_FDS)));
        assert_eq!(passed(Some("7"), Some("2"), Some("web"), 7), Err(ActivationError::NameCount { fds: 2, names: 1 }));
        assert_eq!(passed(Some("7"), Some("99999999999"), None, 7), Err(ActivationError::BadVariable(ENV_LISTEN_FDS)));
    }
}
