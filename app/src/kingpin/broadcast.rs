//! A broadcast: one message to many workers, each with its own copies of
//! the fds it carries.

use mob_proto::Phase;
use std::os::fd::OwnedFd;

/// The pid of every live worker of `role` (of every role if `None`): those
/// a broadcast reaches.
pub fn live_pids(proto: &mob_proto::Kingpin, role: Option<&str>) -> Vec<u32> {
    proto
        .workers()
        .filter(|(w, phase)| *phase != Phase::Closing && w.pid != 0 && role.is_none_or(|r| *w.role == *r))
        .map(|(w, _)| w.pid)
        .collect()
}

/// Gives each of `pids` its own duplicate of every fd in `fds` through
/// `send` (one fd can travel to one recipient only); the originals close
/// when the caller drops them. Returns how many `send` took.
pub fn fan_out(pids: Vec<u32>, fds: &[OwnedFd], mut send: impl FnMut(u32, Vec<OwnedFd>) -> bool) -> usize {
    let mut sent = 0;
    for pid in pids {
        let Ok(copies) = fds.iter().map(|fd| fd.try_clone()).collect::<std::io::Result<Vec<_>>>() else { continue };
        if send(pid, copies) {
            sent += 1;
        }
    }
    sent
}
