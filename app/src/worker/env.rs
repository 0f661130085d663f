//! Who a worker is, as its kingpin's environment says, and the channel the
//! kingpin left it.

use crate::Error;
use mob_sys::{CHANNEL_FD, ENV_APP, ENV_FD, ENV_ROLE, ENV_SLOT, ENV_SPIN_US};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether this process has taken its channel from the environment.
static CHANNEL_TAKEN: AtomicBool = AtomicBool::new(false);

/// Who a worker is, as the kingpin's environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEnv {
    /// The application's name.
    pub app: String,
    /// This worker's role.
    pub role: String,
    /// This worker's slot within the role.
    pub slot: u32,
    /// The fd of the channel to the kingpin.
    pub fd: i32,
    /// The longest this worker's event loop should poll for IO before it
    /// sleeps (`MOB_SPIN_US`; `None`: the runtime's default).
    pub spin: Option<Duration>,
}

impl WorkerEnv {
    /// Reads `MOB_ROLE`, `MOB_SLOT`, `MOB_APP`, `MOB_FD` and `MOB_SPIN_US`;
    /// `None` if this process was not started by a kingpin.
    pub fn from_env() -> Option<WorkerEnv> {
        let role = std::env::var(ENV_ROLE).ok()?;
        let slot = std::env::var(ENV_SLOT).ok()?.parse().ok()?;
        let app = std::env::var(ENV_APP).unwrap_or_default();
        let fd = std::env::var(ENV_FD).ok().and_then(|f| f.parse().ok()).unwrap_or(CHANNEL_FD);
        let spin = std::env::var(ENV_SPIN_US).ok().and_then(|s| s.parse().ok()).map(Duration::from_micros);
        Some(WorkerEnv { app, role, slot, fd, spin })
    }

    /// Reads the environment and takes ownership of the channel the kingpin
    /// left at its fd. Only once per process: a second call is
    /// [`Error::NotAWorker`], as is a process the kingpin did not start.
    pub fn take_channel() -> Result<(WorkerEnv, OwnedFd), Error> {
        let env = WorkerEnv::from_env().ok_or(Error::NotAWorker("MOB_ROLE or MOB_SLOT is not set"))?;
        if CHANNEL_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(Error::NotAWorker("the channel to the kingpin was already taken"));
        }
        if !fd_is_open(env.fd) {
            return Err(Error::NotAWorker("no channel at the fd MOB_FD names"));
        }
        // SAFETY: the kingpin placed our channel at this fd for us alone,
        // the fd is open, and the flag above lets this process take it only
        // once.
        let fd = unsafe { OwnedFd::from_raw_fd(env.fd) };
        Ok((env, fd))
    }
}

/// Whether `fd` is an open file descriptor of this process.
fn fd_is_open(fd: i32) -> bool {
    std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok()
}
