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

/// Reads until the socket would block, handing each read's bytes and fds
/// (registered in `fds`) to `feed`. `feed` returns false to stop early (the
/// link was closed by proto).
pub(crate) fn read_link(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut FdTable<OwnedFd>,
    mut feed: impl FnMut(&[u8], Vec<FdHandle>) -> bool,
) -> ReadEnd {
    let mut received = Vec::new();
    loop {
        match recv_with_fds(sock, buf, &mut received) {
            Ok(0) => {
                drop(received.drain(..));
                return ReadEnd::Eof;
            }
            Ok(n) => {
                let had_fds = !received.is_empty();
                let handles = received.drain(..).map(|fd| fds.insert(fd)).collect();
                if !feed(&buf[..n], handles) {
                    return ReadEnd::Drained;
                }
                // A short read that brought no fds emptied the socket: save
                // the read that would only say "would block". (A read stops
                // early at fds, so after one we must read on.)
                if n < buf.len() && !had_fds {
                    return ReadEnd::Drained;
                }
            }
            Err(RecvError::Io(e)) if e.kind() == ErrorKind::WouldBlock => return ReadEnd::Drained,
            Err(RecvError::Io(_)) => return ReadEnd::Failed("read error"),
            Err(RecvError::ControlTruncated) => {
                return ReadEnd::Failed("control data truncated (fds lost)");
            }
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
/// are closed here (the kernel holds its own references now).
pub(crate) fn write_link(sock: &impl AsRawFd, out: &mut impl Outgoing, fds: &mut FdTable<OwnedFd>) -> WriteEnd {
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
