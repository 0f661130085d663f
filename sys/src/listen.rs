//! Listening sockets shared with a role (mob's shared server handle).
//!
//! The kingpin binds once and hands the socket to every worker of the role,
//! revived and resized ones included, as a message in namespace
//! [`LISTEN_NAMESPACE`] named [`LISTEN_LISTENER`] carrying the fd; it is
//! queued when the worker is spawned, so it is the first thing the worker
//! receives after its welcome. In [`ListenMode::Distributed`] the kingpin
//! accepts instead and passes each connection to one ready worker of the
//! role (the least loaded, round-robin among equals) as a message named
//! [`LISTEN_CONNECTION`].

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// The namespace of listener hand-overs.
pub const LISTEN_NAMESPACE: &str = "mob.listen";
/// Message name: the shared listening socket.
pub const LISTEN_LISTENER: &str = "listener";
/// Message name: one accepted connection.
pub const LISTEN_CONNECTION: &str = "connection";

/// Where a role listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, such as `127.0.0.1:1337`.
    Tcp(SocketAddr),
    /// A Unix socket path (an existing file there is replaced).
    Unix(PathBuf),
    /// A listening socket systemd passed at start (socket activation), by
    /// its name (`FileDescriptorName=` in the `.socket` unit,
    /// `systemd-socket-activate --fdname=`; `"unknown"` if it has none).
    /// Nothing is bound: the kingpin takes the socket and shares it like
    /// one it bound. See [`crate::activation`].
    Systemd(String),
}

impl ListenAddr {
    /// The socket systemd passed under `name` if there is one (the process
    /// was socket-activated), else `fallback`: the same binary runs under a
    /// `.socket` unit or from a shell.
    ///
    /// ```
    /// use mob_sys::listen::ListenAddr;
    ///
    /// let fallback = ListenAddr::Tcp("127.0.0.1:1337".parse().unwrap());
    /// // Not socket-activated here: the fallback.
    /// assert_eq!(ListenAddr::systemd_or("web", fallback.clone()), fallback);
    /// ```
    pub fn systemd_or(name: &str, fallback: ListenAddr) -> ListenAddr {
        if crate::activation::has(name) { ListenAddr::Systemd(name.to_string()) } else { fallback }
    }
}

/// How connections reach the workers of a role (as Node's cluster has it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenMode {
    /// Every worker accepts on the same socket; the kernel decides who gets
    /// each connection.
    #[default]
    Shared,
    /// The kingpin accepts and passes each connection to the least loaded
    /// ready worker, round-robin among equals.
    Distributed,
}

/// A listening socket, as a worker receives it.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr` (or, for [`ListenAddr::Systemd`], takes the passed
    /// socket).
    pub fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a).map(Listener::Tcp),
            ListenAddr::Unix(path) => {
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path).map(Listener::Unix)
            }
            ListenAddr::Systemd(name) => Listener::from_fd(crate::activation::take_listener(name)?),
        }
    }

    /// Wraps a received listening fd, by its address family.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
        use std::os::fd::AsRawFd;
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
        match addr.family() {
            Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd))),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(Listener::Tcp(TcpListener::from(fd))),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a TCP or Unix listening socket")),
        }
    }

    /// The TCP address, for a TCP listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(t) => t.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// A new handle to the same socket.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_passed_fd_comes_back_as_the_same_kind_of_listener() {
        let dir = std::env::temp_dir().join(format!("mob-listen-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let unix = Listener::bind(&ListenAddr::Unix(path.clone())).unwrap();
        let Listener::Unix(again) = Listener::from_fd(unix.try_clone_fd().unwrap()).unwrap() else {
            panic!("a Unix listener came back as TCP")
        };
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut conn, _) = again.accept().unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        let tcp = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = tcp.local_addr().unwrap();
        let back = Listener::from_fd(tcp.try_clone_fd().unwrap()).unwrap();
        assert_eq!(back.local_addr(), Some(addr));
        let _ = std::fs::remove_dir_all(dir);
    }
}
