//! The worker channel: a Unix stream socketpair, with fds passed as
//! SCM_RIGHTS ancillary data.

use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most fds one receive accepts: the protocol's cap on the fds one write
/// may carry (`mob_proto::frame::MAX_FDS_PER_WRITE`).
pub const MAX_FDS_PER_READ: usize = 32;

/// The send buffer asked for on each end of a [`socketpair`] (the kernel
/// doubles it, and caps it at `net.core.wmem_max`). Linux's default (208
/// KiB) holds about 2,700 small frames: a burst larger than that leaves
/// the sender waiting for the reader to drain half of it, a sleep and a
/// wake-up each time, where a larger buffer lets it write on. The kernel
/// takes the memory only while bytes are waiting.
pub const SEND_BUFFER: usize = 1 << 20;

/// A connected pair of Unix stream sockets, both close-on-exec, each asking
/// for a [`SEND_BUFFER`] send buffer (best effort: the system may give
/// less).
///
/// ```
/// let (a, b) = mob_sys::channel::socketpair().unwrap();
/// let n = mob_sys::channel::send_with_fds(&a, b"hi", &[]).unwrap();
/// assert_eq!(n, 2);
/// let mut buf = [0u8; 8];
/// let mut fds = Vec::new();
/// assert_eq!(mob_sys::channel::recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 2);
/// ```
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket::socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(io::Error::from)?;
    for end in [&a, &b] {
        let _ = socket::setsockopt(end, socket::sockopt::SndBuf, &SEND_BUFFER);
    }
    Ok((a, b))
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on { flags | OFlag::O_NONBLOCK } else { flags & !OFlag::O_NONBLOCK };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Sets close-on-exec.
pub fn set_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Writes `bytes`, with `fds` attached to the first byte, in one `sendmsg`.
///
/// Returns how many bytes were written. If any were, every fd went with them
/// (the caller may close its copies); on an error (including `WouldBlock`)
/// nothing was sent. Never raises SIGPIPE (`MSG_NOSIGNAL`).
pub fn send_with_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// [`send_with_fds`] that never waits: `WouldBlock` if the socket is full
/// (for a blocking socket that a thread may also write to).
pub fn try_send_with_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Why a receive failed.
#[derive(Debug)]
pub enum RecvError {
    /// The system call failed (`WouldBlock` included).
    Io(io::Error),
    /// The control data was truncated (MSG_CTRUNC): fds were lost, so the
    /// stream can no longer be trusted. Any fds that did arrive were closed.
    ControlTruncated,
}

impl From<io::Error> for RecvError {
    fn from(e: io::Error) -> Self {
        RecvError::Io(e)
    }
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Io(e) => e.fmt(f),
            RecvError::ControlTruncated => f.write_str("control data truncated (MSG_CTRUNC): fds lost"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Reads into `buf`, appending any fds that came with the bytes to `fds`
/// (owned, close-on-exec). Returns the byte count; 0 means end of stream.
///
/// Written against libc directly: on MSG_CTRUNC the fds that the kernel did
/// install must still be found and closed, which nix's parser refuses to do.
pub fn recv_with_fds(sock: &impl AsRawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, RecvError> {
    use nix::libc;
    const SPACE: usize = unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * size_of::<RawFd>()) as u32) } as usize;
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(RecvError::Io(e));
        }
    };
    let start = fds.len();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen; SCM_RIGHTS payloads are arrays of fds the
    // kernel installed for us, which we take ownership of exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        fds.truncate(start);
        return Err(RecvError::ControlTruncated);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_travel_with_the_first_byte() {
        let (a, b) = socketpair().unwrap();
        let (p, q) = socketpair().unwrap();
        assert_eq!(send_with_fds(&a, b"xyz", &[p.as_raw_fd(), q.as_fd().as_raw_fd()]).unwrap(), 3);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 3);
        assert_eq!(fds.len(), 2);
        assert_eq!(&buf[..3], b"xyz");
    }

    #[test]
    fn both_ends_ask_for_a_larger_send_buffer() {
        let (a, b) = socketpair().unwrap();
        // The kernel doubles what is asked and caps it at wmem_max.
        let max = std::fs::read_to_string("/proc/sys/net/core/wmem_max").ok().and_then(|s| s.trim().parse().ok());
        let want = 2 * SEND_BUFFER.min(max.unwrap_or(SEND_BUFFER));
        for end in [&a, &b] {
            assert!(socket::getsockopt(end, socket::sockopt::SndBuf).unwrap() >= want);
        }
    }

    #[test]
    fn nonblocking_empty_read_is_would_block() {
        let (_a, b) = socketpair().unwrap();
        set_nonblocking(&b, true).unwrap();
        let mut buf = [0u8; 4];
        match recv_with_fds(&b, &mut buf, &mut Vec::new()) {
            Err(RecvError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
    }
}
