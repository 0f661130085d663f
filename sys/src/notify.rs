//! `sd_notify`, written out: state changes sent to the service manager as
//! datagrams on the Unix socket `NOTIFY_SOCKET` names.
//!
//! No libsystemd: the protocol is one `send` of newline-separated
//! `KEY=VALUE` assignments (`READY=1`, `STOPPING=1`, `STATUS=...`,
//! `WATCHDOG=1`, see `sd_notify(3)`) to a path, or to an abstract-namespace
//! address when the name starts with `@`. What to say and when is decided
//! elsewhere (`mob_proto::notify`); this module only carries it.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Environment variable: the manager's notification socket.
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable: the watchdog timeout, in microseconds.
pub const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Environment variable: which process the watchdog is for.
pub const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A socket to send notifications on.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    addr: SocketAddr,
}

/// What the service manager set for this process.
#[derive(Debug)]
pub struct NotifyEnv {
    /// Where to send notifications.
    pub socket: NotifySocket,
    /// `WATCHDOG_USEC`, as it was.
    pub watchdog_usec: Option<String>,
    /// `WATCHDOG_PID`, as it was.
    pub watchdog_pid: Option<String>,
}

impl NotifySocket {
    /// A socket for the address `NOTIFY_SOCKET` gives: a path, or an
    /// abstract name after a leading `@`. Close-on-exec and non-blocking (a
    /// manager that does not keep up loses a notification, it does not
    /// stall the caller).
    pub fn new(address: &str) -> io::Result<NotifySocket> {
        let addr = if let Some(name) = address.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address)?
        } else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither a path nor @abstract"));
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(NotifySocket { sock, addr })
    }

    /// Sends `message` (`KEY=VALUE` lines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.sock.send_to_addr(message.as_bytes(), &self.addr).map(|_| ())
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then
    /// unsets them so that nothing this process starts (workers included)
    /// takes the manager's socket for its own. `Ok(None)` when
    /// `NOTIFY_SOCKET` is not set: not started by a manager that listens.
    ///
    /// Call it early, before the process starts threads of its own (the mob
    /// kingpins call it first thing): unsetting a variable races with other
    /// threads reading the environment, as `sd_notify(3)`'s
    /// `unset_environment` does in C.
    pub fn take_env() -> io::Result<Option<NotifyEnv>> {
        let Some(address) = std::env::var_os(ENV_NOTIFY_SOCKET) else { return Ok(None) };
        let watchdog_usec = std::env::var(ENV_WATCHDOG_USEC).ok();
        let watchdog_pid = std::env::var(ENV_WATCHDOG_PID).ok();
        // SAFETY: see the function's docs.
        unsafe {
            std::env::remove_var(ENV_NOTIFY_SOCKET);
            std::env::remove_var(ENV_WATCHDOG_USEC);
            std::env::remove_var(ENV_WATCHDOG_PID);
        }
        let address = address
            .into_string()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8"))?;
        Ok(Some(NotifyEnv { socket: NotifySocket::new(&address)?, watchdog_usec, watchdog_pid }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_a_path_socket_as_one_datagram() {
        let dir = std::env::temp_dir().join(format!("mob-notify-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let sock = NotifySocket::new(path.to_str().unwrap()).unwrap();
        sock.send("READY=1\nSTATUS=2/2 workers up").unwrap();
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2/2 workers up");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_at_sign_means_the_abstract_namespace() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mob-notify-test-{}", std::process::id());
        let manager = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        NotifySocket::new(&format!("@{name}")).unwrap().send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn other_addresses_are_refused() {
        assert!(NotifySocket::new("vsock:2:1234").is_err());
        assert!(NotifySocket::new("").is_err());
    }
}
