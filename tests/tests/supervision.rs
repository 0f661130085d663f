//! The foundation, with real processes: a kingpin brings every worker up,
//! revives the ones that die, and takes them all with it when it dies.

use mob_tests::{TestApp, alive, cmdline, eventually};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn start(exe: &str, roles: &str) -> TestApp {
    TestApp::start(exe, roles, &[])
}

/// Waits until every slot of `roles` has reported `up`; returns pid by
/// (role, slot).
fn all_up(app: &TestApp, roles: &[(&str, u32)]) -> BTreeMap<(String, u32), u32> {
    let want: usize = roles.iter().map(|(_, n)| *n as usize).sum();
    let mut up = BTreeMap::new();
    while up.len() < want {
        let line = app.wait_for(|l| l.what == "up");
        up.insert((line.role, line.slot), line.pid);
    }
    up
}

fn every_worker_of_two_roles_comes_up_and_answers(exe: &str) {
    let app = start(exe, "echo:4,idle:2");
    // Each worker comes up, then answers the kingpin's ping with its pid; the
    // lines of different workers interleave.
    let mut up = BTreeMap::new();
    let mut ponged = BTreeSet::new();
    while up.len() < 6 || ponged.len() < 6 {
        let line = app.next();
        if line.what == "up" {
            up.insert((line.role, line.slot), line.pid);
        } else if line.what == "message" && line.rest.starts_with("pong") {
            assert_eq!(line.rest, format!("pong {}", line.pid));
            ponged.insert(line.pid);
        }
    }
    let expected: BTreeSet<(String, u32)> =
        (0..4).map(|s| ("echo".to_string(), s)).chain((0..2).map(|s| ("idle".to_string(), s))).collect();
    assert_eq!(up.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let pids: BTreeSet<u32> = up.values().copied().collect();
    assert_eq!(pids.len(), 6, "six distinct processes");
    assert_eq!(ponged, pids, "every worker answered");
    for ((role, slot), pid) in &up {
        assert!(alive(*pid));
        // The process title names the app, the role and the slot.
        assert!(cmdline(*pid).starts_with(&format!("testapp: {role}#{slot}")), "{}", cmdline(*pid));
    }
}

fn a_killed_worker_is_replaced_by_a_new_process(exe: &str) {
    let app = start(exe, "echo:2,idle:1");
    let up = all_up(&app, &[("echo", 2), ("idle", 1)]);
    let victim = up[&("echo".to_string(), 1)];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exited = app.wait_for(|l| l.what == "exited");
    assert_eq!((exited.role.as_str(), exited.slot, exited.pid), ("echo", 1, victim));
    assert_eq!(exited.rest, "Signal(9)");
    let revived = app.wait_for(|l| l.what == "up");
    assert_eq!((revived.role.as_str(), revived.slot), ("echo", 1));
    assert_ne!(revived.pid, victim);
    assert!(alive(revived.pid));
    // The new worker handshook and speaks: it answers the kingpin's ping.
    let pong = app.wait_for(|l| l.what == "message" && l.pid == revived.pid && l.rest.starts_with("pong"));
    assert_eq!(pong.rest, format!("pong {}", revived.pid));
}

fn killing_the_kingpin_takes_every_worker_with_it(exe: &str) {
    let mut app = start(exe, "echo:4,idle:2");
    let up = all_up(&app, &[("echo", 4), ("idle", 2)]);
    app.kill_kingpin();
    let pids: Vec<u32> = up.values().copied().collect();
    assert!(
        eventually(Duration::from_secs(1), || pids.iter().all(|p| !alive(*p))),
        "workers still alive a second after the kingpin died: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

fn a_worker_that_sends_garbage_loses_its_link_and_others_carry_on(exe: &str) {
    let app = start(exe, "garbage:1,echo:2");
    let (mut closed, mut exited) = (None, None);
    let mut ponged = BTreeSet::new();
    while closed.is_none() || exited.is_none() || ponged.len() < 2 {
        let l = app.next();
        match l.what.as_str() {
            // The garbage worker's link is closed with a typed error...
            "closed" if l.role == "garbage" && closed.is_none() => {
                assert!(l.rest.contains("exceeds the limit"), "{}", l.rest);
                closed = Some(l.pid);
            }
            // ...its process is killed (and revived)...
            "exited" if l.role == "garbage" && exited.is_none() => exited = Some(l.pid),
            // ...and the echo workers are up and answering.
            "message" if l.role == "echo" && l.rest.starts_with("pong") => {
                ponged.insert(l.pid);
            }
            _ => {}
        }
    }
    assert_eq!(closed, exited);
}

mob_tests::on_both_runtimes!(
    every_worker_of_two_roles_comes_up_and_answers,
    a_killed_worker_is_replaced_by_a_new_process,
    killing_the_kingpin_takes_every_worker_with_it,
    a_worker_that_sends_garbage_loses_its_link_and_others_carry_on,
);
