//! A broadcast: one message to many workers.

use mob_proto::Phase;

/// The pid of every live worker of `role` (of every role if `None`): those
/// a broadcast reaches.
pub fn live_pids(proto: &mob_proto::Kingpin, role: Option<&str>) -> Vec<u32> {
    proto
        .workers()
        .filter(|(w, phase)| *phase != Phase::Closing && w.pid != 0 && role.is_none_or(|r| *w.role == *r))
        .map(|(w, _)| w.pid)
        .collect()
}
