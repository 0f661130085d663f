//! Moving bytes and fds between a socket and a proto state machine: the two
//! loops every link needs (read until it would block, write until it would
//! block).

use mob_proto::frame::Transmit;
use mob_proto::{FdHandle, FdTable};
use mob_sys::channel::{RecvError, recv_with_fds, send_with_fds};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Size of the read buffer shared by all links of a loop.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// How a read pass ended.
pub(crate) enum ReadEnd {
    /// The socket has nothing more for now.
    Drained,
    /// The peer closed the stream.
    Eof,
    /// The link cannot be used any more.
    Failed(&'static str),
}

/// What one read brought.
pub(crate) enum ReadStep {
    /// `n` bytes (at the start of the buffer) and these fds. `more`: the
    /// socket may hold more (the read filled the buffer, or stopped at fds).
    Data { n: usize, fds: Vec<FdHandle>, more: bool },
    /// Nothing more for now, the stream ended, or the link failed.
    End(ReadEnd),
}

/// One read: bytes into `buf`, fds registered in `fds`.
pub(crate) fn read_once<T: From<OwnedFd>>(sock: &impl AsRawFd, buf: &mut [u8], fds: &mut FdTable<T>) -> ReadStep {
    let mut received = Vec::new();
    match recv_with_fds(sock, buf, &mut received) {
        Ok(0) => ReadStep::End(ReadEnd::Eof),
        Ok(n) => {
            // A short read that brought no fds emptied the socket: save the
            // read that would only say "would block". (A read stops early at
            // fds, so after one we must read on.)
            let more = n == buf.len() || !received.is_empty();
            let fds = received.into_iter().map(|fd| fds.insert(fd.into())).collect();
            ReadStep::Data { n, fds, more }
        }
        Err(RecvError::Io(e)) if e.kind() == ErrorKind::WouldBlock => ReadStep::End(ReadEnd::Drained),
        Err(RecvError::Io(_)) => ReadStep::End(ReadEnd::Failed("read error")),
        Err(RecvError::ControlTruncated) => ReadStep::End(ReadEnd::Failed("control data truncated (fds lost)")),
    }
}

/// Reads until the socket would block, handing each read's bytes and fds
/// (registered in `fds`) to `feed`. `feed` returns false to stop early (the
/// link was closed by proto).
pub(crate) fn read_link<T: From<OwnedFd>>(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut FdTable<T>,
    mut feed: impl FnMut(&[u8], Vec<FdHandle>) -> bool,
) -> ReadEnd {
    loop {
        match read_once(sock, buf, fds) {
            ReadStep::Data { n, fds, more } => {
                if !feed(&buf[..n], fds) || !more {
                    return ReadEnd::Drained;
                }
            }
            ReadStep::End(end) => return end,
        }
    }
}

/// A proto object's outgoing queue for one link.
pub(crate) trait Outgoing {
    fn peek(&self) -> Option<Transmit<'_>>;
    fn advance(&mut self, n: usize) -> Vec<FdHandle>;
}

/// How a write pass ended.
pub(crate) enum WriteEnd {
    /// Everything queued was written.
    Empty,
    /// The socket is full; wait for it to be writable.
    Blocked,
    /// The link cannot be used any more.
    Failed,
}

/// Writes until the queue is empty or the socket would block. fds that left
/// are dropped here (the kernel holds its own references now).
pub(crate) fn write_link<T: AsRawFd>(sock: &impl AsRawFd, out: &mut impl Outgoing, fds: &mut FdTable<T>) -> WriteEnd {
    let mut raw: Vec<RawFd> = Vec::new();
    loop {
        let Some(t) = out.peek() else {
            return WriteEnd::Empty;
        };
        raw.clear();
        raw.extend(t.fds.iter().filter_map(|h| fds.get(h).map(|fd| fd.as_raw_fd())));
        match send_with_fds(sock, t.bytes, &raw) {
            Ok(n) => {
                for h in out.advance(n) {
                    drop(fds.take(h));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return WriteEnd::Blocked,
            Err(_) => return WriteEnd::Failed,
        }
    }
}
