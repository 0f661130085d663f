//! Starting a worker process with its channel on [`CHANNEL_FD`].

use crate::CHANNEL_FD;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Starts `cmd` as a worker whose end of the channel is `channel`.
///
/// In the child, before `exec`:
/// - `channel` is moved to fd [`CHANNEL_FD`] (3) without close-on-exec;
/// - the child asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`),
///   and exits at once if the parent is already gone, so no worker outlives
///   the kingpin even if the kingpin is SIGKILLed;
/// - it moves to its own process group, so a terminal's Ctrl-C reaches only
///   the kingpin, which decides what the workers do.
///
/// The parent-death signal fires when the *thread* that spawned the child
/// exits: spawn from a thread that lives as long as the kingpin (its event
/// loop).
///
/// `channel` is closed in the parent when this returns.
pub fn spawn_worker(cmd: &mut Command, channel: OwnedFd) -> io::Result<Child> {
    let fd = channel.as_raw_fd();
    let parent = std::process::id() as i32;
    // SAFETY: the closure only makes async-signal-safe system calls (dup2,
    // fcntl, prctl, getppid, setpgid, _exit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if fd == CHANNEL_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHANNEL_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if libc::setpgid(0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(channel);
    child
}
