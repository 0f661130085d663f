//! Workers' stdout and stderr: the pipes they write to, and a writer for
//! the kingpin's own stdout and stderr that never blocks its event loop.
//!
//! The line logic (prefixes, bounds) is `mob_proto::lines`; this module
//! only makes the system calls.

use nix::fcntl::{OFlag, open};
use nix::sys::socket::{MsgFlags, send};
use nix::sys::stat::{Mode, SFlag, fstat};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A pipe for one of a worker's output streams: `(read end, write end)`.
///
/// Both ends are close-on-exec (the spawn moves the write end onto the
/// worker's fd 1 or 2, which clears the flag there only), and the read end
/// is non-blocking, for an event loop.
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    crate::channel::set_nonblocking(&read, true)?;
    Ok((read, write))
}

/// Reads what a non-blocking pipe holds into `buf`: `Ok(0)` is end of
/// stream, `WouldBlock` means empty for now. Retries on EINTR.
pub fn read_pipe(fd: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// How a [`Sink`] writes without blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// A pipe, FIFO or terminal, reopened through `/proc/self/fd` as an
    /// open file description of our own with `O_NONBLOCK`: the original
    /// descriptor (shared with the shell, the terminal, other processes)
    /// stays as it was.
    Reopened,
    /// A socket (systemd's journal, say): a duplicate written with
    /// `MSG_DONTWAIT`, which leaves the shared description's flags alone.
    Socket,
    /// A regular file or anything else that never makes a writer wait for
    /// a reader: a duplicate, written as is.
    Plain,
}

/// The kingpin's stdout or stderr, for writes that never block: a full
/// pipe or a stalled terminal gives `WouldBlock` instead, without changing
/// the flags of the descriptor the kingpin shares with others (setting
/// `O_NONBLOCK` on a shared terminal or pipe would surprise everyone else
/// who writes to it, the kingpin's own `println!` included).
#[derive(Debug)]
pub struct Sink {
    fd: OwnedFd,
    how: How,
}

impl Sink {
    /// A sink writing where `fd` (1 or 2, usually) writes. Fails when that
    /// cannot be done without blocking (a FIFO with no reader, no `/proc`).
    pub fn open(fd: BorrowedFd<'_>) -> io::Result<Sink> {
        let st = fstat(fd)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFIFO || kind == SFlag::S_IFCHR {
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
            let fd = open(path.as_str(), flags, Mode::empty())?;
            return Ok(Sink { fd, how: How::Reopened });
        }
        let how = if kind == SFlag::S_IFSOCK { How::Socket } else { How::Plain };
        Ok(Sink { fd: fd.try_clone_to_owned()?, how })
    }

    /// Writes some of `bytes`: how many, or `WouldBlock` if none fit now.
    /// Never raises SIGPIPE on a socket; a closed pipe gives `BrokenPipe`
    /// (Rust programs ignore SIGPIPE).
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            let r = match self.how {
                How::Socket => send(self.fd.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL),
                How::Reopened | How::Plain => nix::unistd::write(&self.fd, bytes),
            };
            match r {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// Writes all of `bytes`, waiting as long as it takes (for a last flush
    /// when the kingpin exits).
    pub fn write_all_blocking(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether an event loop can wait for this sink to become writable
    /// (not for a regular file, which is always writable).
    pub fn pollable(&self) -> bool {
        self.how != How::Plain
    }

    fn wait_writable(&self) -> io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map(|_| ()).map_err(io::Error::from),
            }
        }
    }
}

impl AsRawFd for Sink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_reopened_pipe_blocks_without_changing_the_shared_description() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let sink = Sink::open(w.as_fd()).unwrap();
        assert_eq!(sink.how, How::Reopened);
        let chunk = [7u8; 4096];
        let mut total = 0;
        loop {
            match sink.write(&chunk) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert!(total >= 4096, "a pipe holds at least a page");
        let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK), "the original stays blocking");
        let mut buf = vec![0u8; total];
        let mut got = 0;
        while got < total {
            got += nix::unistd::read(&r, &mut buf[got..]).unwrap();
        }
        assert!(buf.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_socket_sink_writes_without_waiting() {
        let (a, b) = crate::channel::socketpair().unwrap();
        let sink = Sink::open(a.as_fd()).unwrap();
        assert_eq!(sink.how, How::Socket);
        assert_eq!(sink.write(b"hi\n").unwrap(), 3);
        let mut buf = [0u8; 3];
        assert_eq!(nix::unistd::read(&b, &mut buf).unwrap(), 3);
        loop {
            match sink.write(&[0u8; 65536]) {
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
    }

    #[test]
    fn an_output_pipe_reads_without_blocking() {
        let (r, w) = output_pipe().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_pipe(&r, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        nix::unistd::write(&w, b"abc").unwrap();
        assert_eq!(read_pipe(&r, &mut buf).unwrap(), 3);
        drop(w);
        assert_eq!(read_pipe(&r, &mut buf).unwrap(), 0, "end of stream");
    }
}
