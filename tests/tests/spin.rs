//! Polling before sleeping (`KingpinConfig::spin`) with real processes: the
//! kingpin tells its workers the limit, and once traffic stops every
//! process of the family goes to sleep, whatever the limit.

use mob_tests::{DEADLINE, TestApp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Starts the app with `MOB_TEST_SPIN_US` set to `spin` (unset: `None`)
/// and waits until it is online; returns it and its workers' pids.
fn online(exe: &str, roles: &str, spin: Option<&str>) -> (TestApp, Vec<u32>) {
    let env: Vec<(&str, &str)> = spin.map(|s| ("MOB_TEST_SPIN_US", s)).into_iter().collect();
    let app = TestApp::start(exe, roles, &env);
    let mut pids = Vec::new();
    loop {
        let l = app.next();
        match l.what.as_str() {
            "ready" => pids.push(l.pid),
            "app-online" => return (app, pids),
            _ => {}
        }
    }
}

/// The value of `name` in the environment `pid` started with.
fn environ_var(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("a process environment");
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
}

/// The scheduler state (`R`, `S`, ...) of every thread of `pid`.
fn thread_states(pid: u32) -> BTreeMap<u32, char> {
    let mut states = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if let Some(state) = stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next()) {
            states.insert(tid, state);
        }
    }
    states
}

/// Waits until every thread of `pid` is asleep at once; fails the test if
/// that has not happened within [`DEADLINE`] (a loop that keeps polling
/// stays runnable, `R`).
fn falls_asleep(pid: u32, who: &str) {
    let start = Instant::now();
    loop {
        let states = thread_states(pid);
        if !states.is_empty() && states.values().all(|s| *s == 'S') {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{who} (pid {pid}) is still running after {DEADLINE:?}: {states:?}");
        // Nothing announces that a process went to sleep: /proc is looked
        // at again after a pause, until the deadline.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn workers_are_told_the_kingpins_spin_limit(exe: &str) {
    for (spin, told) in [(None, "50"), (Some("7"), "7"), (Some("0"), "0")] {
        let (_app, pids) = online(exe, "a:2", spin);
        for pid in pids {
            assert_eq!(environ_var(pid, "MOB_SPIN_US").as_deref(), Some(told), "worker {pid} with {spin:?}");
        }
    }
}

fn after_a_burst_of_requests_every_process_falls_asleep(exe: &str) {
    for spin in [None, Some("0"), Some("1000")] {
        let (mut app, pids) = online(exe, "a:2", spin);
        const N: usize = 300;
        for i in 0..N {
            app.command(&format!("request any:a echo r{i} 5000"));
        }
        for _ in 0..N {
            let reply = app.wait_for(|l| l.what == "reply");
            assert!(reply.rest.contains(" ok "), "{}", reply.rest);
        }
        falls_asleep(app.pid(), &format!("the kingpin (spin {spin:?})"));
        for pid in pids {
            falls_asleep(pid, &format!("worker (spin {spin:?})"));
        }
    }
}

mob_tests::on_both_runtimes!(
    workers_are_told_the_kingpins_spin_limit,
    after_a_burst_of_requests_every_process_falls_asleep
);
