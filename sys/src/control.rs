//! The kingpin's control socket: a Unix socket that only the kingpin's own
//! user can use, and the check of who is on the other end of a connection.
//!
//! Two locks: the socket file is created with mode 0600 (others cannot even
//! connect), and every accepted connection is checked with `SO_PEERCRED`
//! (so a file whose mode was loosened, or a descriptor passed on, still
//! lets in no other user).

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Who is on the other end of a Unix socket, as the kernel recorded it
/// when the connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// The credentials of the peer of `sock` (`SO_PEERCRED`).
pub fn peer(sock: &impl AsFd) -> io::Result<Peer> {
    let cred = getsockopt(sock, PeerCredentials)?;
    Ok(Peer { pid: cred.pid(), uid: cred.uid(), gid: cred.gid() })
}

/// Why a connection was refused.
#[derive(Debug)]
pub enum Refused {
    /// The peer runs as another user.
    OtherUser(Peer),
    /// Its credentials could not be read.
    Unknown(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::OtherUser(p) => write!(f, "uid {} (pid {}) is not the kingpin's user", p.uid, p.pid),
            Refused::Unknown(e) => write!(f, "peer credentials unavailable: {e}"),
        }
    }
}

/// Accepts `sock`'s peer only if it runs as user `uid`.
pub fn check_peer(sock: &impl AsFd, uid: u32) -> Result<Peer, Refused> {
    match peer(sock) {
        Ok(p) if p.uid == uid => Ok(p),
        Ok(p) => Err(Refused::OtherUser(p)),
        Err(e) => Err(Refused::Unknown(e)),
    }
}

/// This process's effective user id.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() }
}

/// The socket file of a bound control socket: removed when dropped, if
/// the path still names the same socket.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == (self.dev, self.ino)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a listening Unix socket at `path` that only this user can use.
///
/// The socket is bound inside a fresh directory of mode 0700 next to
/// `path`, given mode 0600, and only then renamed to `path`: no other user
/// can ever reach it, whatever the umask. A stale socket left at `path` by
/// a kingpin that died (nothing accepts on it) is replaced; a live one, or
/// a file that is not a socket, is an error.
pub fn bind_private(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                let what = format!("{}: a kingpin is already listening there", path.display());
                return Err(io::Error::new(io::ErrorKind::AddrInUse, what));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {} // stale: replaced below
            Err(e) => return Err(e),
        },
        Ok(_) => {
            let what = format!("{} exists and is not a socket", path.display());
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, what));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let private = dir.join(format!(".{}.{}.{stamp}", name.to_string_lossy(), std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| {
        // The directory may have been created with a laxer mode than asked
        // (never laxer than 0700 & !umask): make sure.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let inner = private.join("s");
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(&inner)?;
        std::fs::rename(&inner, path)?;
        Ok((listener, SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() }))
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mob-sys-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_socket_is_private_and_removed_on_drop() {
        let dir = scratch("private");
        let path = dir.join("ctl.sock");
        let (listener, file) = bind_private(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary left behind");
        let client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        let p = check_peer(&server, my_uid()).unwrap();
        assert_eq!(p.pid as u32, std::process::id());
        assert!(matches!(check_peer(&server, my_uid() + 1), Err(Refused::OtherUser(_))));
        drop((client, file));
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_not() {
        let dir = scratch("stale");
        let path = dir.join("ctl.sock");
        let (live, file) = bind_private(&path).unwrap();
        assert_eq!(bind_private(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(live); // nothing accepts any more: stale
        std::mem::forget(file);
        let (_again, _file) = bind_private(&path).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        assert_eq!(bind_private(&plain).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    }
}
