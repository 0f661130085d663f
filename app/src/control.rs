//! What both runtimes' control-socket glue does alike: deciding whether an
//! accepted connection is let in, and logging why not. What the bytes mean
//! is `mob_proto::ControlServer`'s business; moving them is each runtime's.

use mob_proto::{ControlId, ControlServer};
use std::os::fd::AsFd;
use std::path::Path;

/// Whether the peer of `conn`, accepted on the control socket at `path`,
/// runs as user `uid` (checked with `SO_PEERCRED`). A refusal is logged (a
/// warning); the caller closes the connection.
pub fn check(conn: &impl AsFd, uid: u32, path: &Path) -> bool {
    match mob_sys::control::check_peer(conn, uid) {
        Ok(_) => true,
        Err(why) => {
            log::warn!("control: refused a connection on {}: {why}", path.display());
            false
        }
    }
}

/// Opens a connection let in by [`check`] on `server`, if it has room for
/// one more (a refusal is logged; the caller closes the connection).
pub fn open(server: &mut ControlServer) -> Option<ControlId> {
    match server.open() {
        Ok(id) => Some(id),
        Err(_) => {
            log::warn!("control: refused a connection: too many open");
            None
        }
    }
}
