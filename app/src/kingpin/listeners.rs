//! The kingpin's listening sockets, by role, and what it hands out of them.

use mob_sys::listen::{ListenMode, Listener};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// One role's listening socket, and how its connections are spread.
pub type RoleListener = (String, Listener, ListenMode);

/// The TCP address `role` listens on, if it was given one.
pub fn local_addr(listeners: &[RoleListener], role: &str) -> Option<SocketAddr> {
    listeners.iter().find_map(|(r, l, _)| (r == role).then(|| l.local_addr()).flatten())
}

/// A new handle to each socket `role` shares in [`ListenMode::Shared`]: what
/// a newly spawned worker of the role is given.
pub fn shared_with(listeners: &[RoleListener], role: &str) -> Vec<OwnedFd> {
    listeners
        .iter()
        .filter(|(r, _, mode)| r == role && *mode == ListenMode::Shared)
        .filter_map(|(_, l, _)| l.try_clone_fd().ok())
        .collect()
}
