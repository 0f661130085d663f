//! Making orphans on purpose: what a worker does when it daemonizes a
//! helper, for the tests of a kingpin that reaps them (PID 1 of a PID
//! namespace, or a subreaper).

use nix::unistd::{ForkResult, fork, pipe, read, write};
use std::os::fd::{AsRawFd, OwnedFd};

/// Double-forks `n` grandchildren and returns their pids (as this process
/// sees them). Each grandchild's parent exits at once (and is reaped here),
/// so the kernel hands the grandchild to the nearest subreaper or to PID 1;
/// the grandchild waits until it is an orphan and this function has
/// returned, then exits with code 0. Whoever inherited it must reap it, or
/// it stays a zombie.
pub fn make_orphans(n: usize) -> Vec<u32> {
    let (report_r, report_w) = pipe().expect("pipe");
    // Grandchildren wait for end of file on this pipe: every write end
    // closed, so their parent has exited and we have returned.
    let (hold_r, hold_w) = pipe().expect("pipe");
    for _ in 0..n {
        // SAFETY: between fork and _exit the children only make
        // async-signal-safe system calls (fork, close, read, write, _exit)
        // and allocate nothing.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => unsafe { middle(&report_w, &hold_r, &hold_w) },
            ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("reap the middle process");
            }
        }
    }
    drop((report_w, hold_w, hold_r));
    let mut pids = Vec::new();
    let mut buf = [0u8; 4];
    while pids.len() < n && read(&report_r, &mut buf).ok() == Some(4) {
        pids.push(u32::from_ne_bytes(buf));
    }
    pids
}

/// The middle process: forks the grandchild, reports its pid, exits.
unsafe fn middle(report_w: &OwnedFd, hold_r: &OwnedFd, hold_w: &OwnedFd) -> ! {
    use nix::libc;
    // SAFETY: see `make_orphans`.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            unsafe { libc::close(hold_w.as_raw_fd()) };
            let mut byte = [0u8; 1];
            while matches!(read(hold_r, &mut byte), Ok(n) if n > 0) {}
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = write(report_w, &(child.as_raw() as u32).to_ne_bytes());
            unsafe { libc::_exit(0) }
        }
        Err(_) => unsafe { libc::_exit(1) },
    }
}
