//! Signals as readable events: a self-pipe that a signal handler writes to.

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the
        // byte, which is fine because one pending byte is enough to wake us.
        unsafe {
            let errno = *nix::libc::__errno_location();
            nix::libc::write(fd, (&byte as *const u8).cast(), 1);
            *nix::libc::__errno_location() = errno;
        }
    }
}

/// The read end of the signal self-pipe. Register it with an event loop (or
/// block on it) and call [`SignalPipe::drain`] when it is readable.
///
/// Only one may exist per process: installing twice is an error.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    /// Installs handlers for `signals` (with `SA_RESTART`, and
    /// `SA_NOCLDSTOP` for SIGCHLD) that write the signal number to a pipe.
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        if WRITE_FD.compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a SignalPipe is already installed"));
        }
        for &sig in signals {
            let flags =
                SaFlags::SA_RESTART | if sig == Signal::SIGCHLD { SaFlags::SA_NOCLDSTOP } else { SaFlags::empty() };
            let action = SigAction::new(SigHandler::Handler(on_signal), flags, SigSet::empty());
            // SAFETY: the handler only calls write(2) and saves errno.
            unsafe { signal::sigaction(sig, &action) }?;
        }
        Ok(SignalPipe { read, _write: write })
    }

    /// Signals received since the last drain, in order. SIGCHLD appears at
    /// most once (one is enough to go and reap); others as often as they
    /// came, so that a second Ctrl-C is seen as a second one.
    pub fn drain(&self) -> Vec<Signal> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if let Ok(sig) = Signal::try_from(i32::from(b))
                            && (sig != Signal::SIGCHLD || !seen.contains(&sig))
                        {
                            seen.push(sig);
                        }
                    }
                }
            }
        }
        seen
    }

    /// Blocks until a signal has arrived or `timeout` (if any) passes, then
    /// drains as [`SignalPipe::drain`] does (empty on a timeout). For
    /// runtimes without an event loop: a thread can wait here for signals.
    pub fn wait(&self, timeout: Option<std::time::Duration>) -> io::Result<Vec<Signal>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(self.drain()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsRawFd for SignalPipe {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_returns_the_signals_that_came_or_nothing_at_its_timeout() {
        let pipe = SignalPipe::install(&[Signal::SIGUSR1]).unwrap();
        assert!(pipe.wait(Some(Duration::from_millis(10))).unwrap().is_empty());
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        assert_eq!(pipe.wait(Some(Duration::from_secs(5))).unwrap(), vec![Signal::SIGUSR1]);
        // One per process.
        assert!(SignalPipe::install(&[Signal::SIGUSR2]).is_err());
    }
}
