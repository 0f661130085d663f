//! Reaping every child, orphans included: what PID 1 of a container (or a
//! child subreaper) must do so that no zombie piles up.
//!
//! When a process dies, the kernel hands its children to the nearest
//! ancestor that is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), or to
//! PID 1 of its PID namespace. That process must `wait` for them too, or
//! they stay zombies. A supervisor that is one of those reaps with
//! `waitpid(-1)` and sorts what it gets: its own workers' exits go to their
//! slots, anything else is an orphan it merely acknowledges. One loop does
//! both, so no exit status of a worker is lost to a second waiter.
//!
//! A catch: while reaping this way, children the application starts by
//! other means (`std::process::Command`) are reaped here too, and their own
//! `wait` finds nothing (`ECHILD`). That is the price of being init; tini
//! pays it too.

use crate::process::Exit;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use std::io;

/// Whether this process inherits orphans: it is PID 1 (of its PID
/// namespace: a container's init) or a child subreaper.
pub fn receives_orphans() -> bool {
    std::process::id() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Makes this process a child subreaper: orphaned descendants become its
/// children instead of PID 1's, and must be reaped by it.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(())
}

/// Reaps one child that has ended, whichever it is: its pid and how it
/// ended, or `None` if no child has ended (or there are no children). Call
/// it until `None` after each SIGCHLD.
pub fn reap_any() -> io::Result<Option<(u32, Exit)>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Ok(Some((pid.as_raw() as u32, Exit::Code(code)))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => return Ok(Some((pid.as_raw() as u32, Exit::Signal(sig as i32)))),
            // Stops and continues are not reported (no WUNTRACED/WCONTINUED).
            Ok(_) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reap_any_returns_each_ended_child_once_then_none() {
        // This test binary's other tests start no children, so what ends is
        // ours; reap_any is what waits for them.
        #[allow(clippy::zombie_processes)]
        let a = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        #[allow(clippy::zombie_processes)]
        let b = Command::new("sh").args(["-c", "kill -9 $$"]).spawn().unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(ended) = reap_any().unwrap() {
                seen.push(ended);
            } else {
                std::thread::yield_now();
            }
        }
        seen.sort_by_key(|(pid, _)| *pid);
        let mut want = vec![(a.id(), Exit::Code(7)), (b.id(), Exit::Signal(9))];
        want.sort_by_key(|(pid, _)| *pid);
        assert_eq!(seen, want);
        assert_eq!(reap_any().unwrap(), None);
    }
}
