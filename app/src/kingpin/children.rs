//! The kingpin's worker processes: reaping them and killing the rest.

use super::Event;
use mob_proto::ExitStatus;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;

/// How a child ended, in proto's terms.
pub fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// What one round of reaping found.
#[derive(Debug, Default)]
pub struct Reaped {
    /// Workers (by pid) that ended, and how.
    pub workers: Vec<(u32, ExitStatus)>,
    /// Processes that were not our workers (orphans handed to a kingpin
    /// that is PID 1 or a subreaper), as [`Event::OrphanReaped`].
    pub orphans: Vec<Event>,
}

/// Reaps every child (by pid) that has ended, and forgets it. When
/// `orphans` come to the kingpin too (it is PID 1 or a subreaper), one
/// `waitpid(-1)` loop reaps everything and sorts workers from orphans, so
/// no worker's status is lost to a second waiter.
pub fn reap(children: &mut HashMap<u32, Child>, orphans: bool) -> Reaped {
    let mut reaped = Reaped::default();
    while let Some((pid, exit)) = orphans.then(mob_sys::reap::reap_any).and_then(Result::ok).flatten() {
        let status = match exit {
            mob_sys::process::Exit::Code(c) => ExitStatus::Code(c),
            mob_sys::process::Exit::Signal(s) => ExitStatus::Signal(s),
        };
        // A worker's `Child` is dropped unwaited: its pid is reaped.
        match children.remove(&pid) {
            Some(_) => reaped.workers.push((pid, status)),
            None => reaped.orphans.push(Event::OrphanReaped { pid, status }),
        }
    }
    let ended: Vec<(u32, ExitStatus)> =
        children.iter_mut().filter_map(|(&pid, child)| Some((pid, exit_status(child.try_wait().ok()??)))).collect();
    for (pid, _) in &ended {
        children.remove(pid);
    }
    reaped.workers.extend(ended);
    reaped
}

/// Kills every child still running and waits for each.
pub fn kill_all(children: &mut HashMap<u32, Child>) {
    for &pid in children.keys() {
        let _ = mob_sys::process::kill(pid);
    }
    for (_, mut child) in children.drain() {
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn ended_children_are_reaped_with_their_status_and_the_rest_killed() {
        let mut children = HashMap::new();
        for code in [0, 3] {
            let child = Command::new("sh").args(["-c", &format!("exit {code}")]).spawn().unwrap();
            children.insert(child.id(), child);
        }
        let sleeper = Command::new("sleep").arg("60").spawn().unwrap();
        let sleeper_pid = sleeper.id();
        children.insert(sleeper_pid, sleeper);
        let mut ended = Vec::new();
        while ended.len() < 2 {
            ended.extend(reap(&mut children, false).workers.into_iter().map(|(_, status)| status));
            std::thread::yield_now();
        }
        ended.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(ended, [ExitStatus::Code(0), ExitStatus::Code(3)]);
        assert_eq!(children.keys().copied().collect::<Vec<_>>(), [sleeper_pid]);
        kill_all(&mut children);
        assert!(children.is_empty());
        assert!(!std::path::Path::new(&format!("/proc/{sleeper_pid}")).exists());
    }
}
