//! Supervision with real processes: restart policy, role failure, resizing,
//! rolling reloads, the work queue, health, heartbeats and shutdown.

use mob_tests::{Line, TestApp, alive};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};

fn start(exe: &str, roles: &str) -> TestApp {
    TestApp::start(exe, roles, &[])
}

fn start_env(exe: &str, roles: &str, env: &[(&str, &str)]) -> TestApp {
    TestApp::start(exe, roles, env)
}

/// Waits for the app to be online; returns pids by role.
fn online(app: &TestApp) -> BTreeMap<String, Vec<u32>> {
    let mut ready: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    loop {
        let l = app.next();
        match l.what.as_str() {
            "ready" => ready.entry(l.role).or_default().push(l.pid),
            "app-online" => return ready,
            _ => {}
        }
    }
}

/// Asks for health reports until one line matches `pred` (for state that no
/// event announces, such as a worker's own busy or in-flight figures).
fn health_until(app: &mut TestApp, mut pred: impl FnMut(&Line) -> bool) -> Line {
    loop {
        app.command("health");
        let mut found = None;
        loop {
            let l = app.wait_for(|l| l.what == "health" || l.what == "health-end");
            if l.what == "health-end" {
                break;
            }
            if found.is_none() && pred(&l) {
                found = Some(l);
            }
        }
        if let Some(l) = found {
            return l;
        }
    }
}

/// The next job line with tag `tag`.
fn job(app: &TestApp, tag: &str) -> Line {
    app.wait_for(|l| l.what == "job" && l.rest.split(' ').next() == Some(tag))
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

fn a_crash_loop_is_restarted_as_the_intensity_allows_then_the_app_fails(exe: &str) {
    let mut app = start(exe, "a:1,crash:1");
    let lines = app.rest();
    let spawned = lines.iter().filter(|l| l.what == "spawned" && l.role == "crash").count();
    // The first start, then five restarts (the default intensity: 5 in 120 s).
    assert_eq!(spawned, 6, "{lines:?}");
    let failed: Vec<&Line> = lines.iter().filter(|l| l.what == "role-failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].role.as_str(), failed[0].rest.as_str()), ("crash", "exited with code 3"));
    // OTP's default: the whole application stops, and says it failed.
    assert_eq!(app.wait_exit(), Some(1));
}

fn with_continue_a_failed_role_stops_and_the_others_carry_on(exe: &str) {
    let mut app = start_env(exe, "a:1,crash:1", &[("MOB_TEST_CONTINUE", "1")]);
    let failed = app.wait_for(|l| l.what == "role-failed");
    assert_eq!(failed.role, "crash");
    app.command("request any:a echo still 5000");
    let reply = app.wait_for(|l| l.what == "reply");
    assert!(reply.rest.starts_with("still ok still from "), "{}", reply.rest);
    app.command("request any:crash echo gone 5000");
    let reply = app.wait_for(|l| l.what == "reply");
    assert_eq!(reply.rest, "gone err send: no worker matches the target");
}

fn restart_types_decide_which_exits_are_revived(exe: &str) {
    let app = start(exe, "a:1,transient-clean:1,temporary-crash:1,transient-crash:1");
    // transient-crash exits abnormally every time: revived until it fails.
    let failed = app.wait_for(|l| l.what == "role-failed");
    assert_eq!(failed.role, "transient-crash");
    let mut app = app;
    let lines = app.rest();
    let _ = app.wait_exit();
    let count = |role: &str| lines.iter().filter(|l| l.what == "spawned" && l.role == role).count();
    // A clean exit of a transient worker and any exit of a temporary one are
    // not revived (their only spawn came before the failure, so none is in
    // the rest of the output).
    assert_eq!(count("transient-clean"), 0);
    assert_eq!(count("temporary-crash"), 0);
}

fn a_panic_is_reported_as_the_workers_last_error(exe: &str) {
    let mut app = start(exe, "a:2");
    let up = online(&app);
    let victim = up["a"][0];
    app.command(&format!("send pid:{victim} boom x"));
    let err = app.wait_for(|l| l.what == "error" && l.pid == victim);
    assert_eq!(err.rest, "panicked: boom in the handler");
    let revived = app.wait_for(|l| l.what == "ready" && l.role == "a");
    assert_ne!(revived.pid, victim);
}

fn jobs_spread_by_load_and_wait_for_readiness(exe: &str) {
    let mut app = start(exe, "a:1,explicit:2");
    // Explicit workers start busy: a job waits at the kingpin.
    let mut up = Vec::new();
    while up.len() < 2 {
        let l = app.wait_for(|l| l.what == "up");
        if l.role == "explicit" {
            up.push(l.pid);
        }
    }
    app.command("enqueue explicit w1 hi 0 0");
    app.command(&format!("send pid:{} ready x", up[1]));
    let done = job(&app, "w1");
    assert_eq!(done.pid, up[1], "only the ready worker may take the job");
    app.command(&format!("send pid:{} ready x", up[0]));
    app.wait_for(|l| l.what == "ready" && l.pid == up[0]);
    // Four slow jobs: two each (fewest in flight).
    for i in 0..4 {
        app.command(&format!("enqueue explicit s{i} sleep 300 0 0"));
    }
    let mut by: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..4 {
        let l = app.wait_for(|l| l.what == "job" && l.rest.starts_with('s'));
        *by.entry(l.pid).or_default() += 1;
    }
    assert_eq!(by.values().copied().collect::<Vec<_>>(), [2, 2], "{by:?}");
    // A busy worker gets nothing new.
    app.command(&format!("send pid:{} busy x", up[0]));
    health_until(&mut app, |l| l.pid == up[0] && l.rest.starts_with("Busy"));
    for i in 0..3 {
        app.command(&format!("enqueue explicit b{i} hi 0 0"));
        assert_eq!(job(&app, &format!("b{i}")).pid, up[1]);
    }
}

fn job_retries_timeouts_and_unknown_roles(exe: &str) {
    let mut app = start(exe, "a:1,b:2");
    let up = online(&app);
    // retries 1: the first worker is killed mid-job, the job runs again.
    app.command("enqueue b r1 sleep 1500 0 1");
    let busy = health_until(&mut app, |l| l.role == "b" && l.rest.split(' ').nth(2) == Some("1"));
    kill9(busy.pid);
    let done = job(&app, "r1");
    assert!(done.rest.starts_with("r1 ok "), "{}", done.rest);
    assert_ne!(done.pid, busy.pid);
    // retries 0: the same ends as peer gone.
    app.command("enqueue b r0 sleep 1500 0 0");
    let busy = health_until(&mut app, |l| l.role == "b" && l.rest.split(' ').nth(2) == Some("1"));
    kill9(busy.pid);
    assert_eq!(job(&app, "r0").rest, "r0 err PeerGone");
    // A timeout ends the job as timed out.
    app.command("enqueue b t1 sleep 5000 200 0");
    assert_eq!(job(&app, "t1").rest, "t1 err TimedOut");
    app.command("enqueue nope u1 hi 0 0");
    assert_eq!(job(&app, "u1").rest, "u1 err send: no worker matches the target");
    let _ = up;
}

fn resize_up_and_down_under_load_loses_nothing(exe: &str) {
    let mut app = start(exe, "a:1,b:2");
    online(&app);
    app.command("resize b 4");
    let mut fresh = BTreeSet::new();
    while fresh.len() < 2 {
        let l = app.wait_for(|l| l.what == "ready" && l.role == "b");
        assert!(l.slot >= 2);
        fresh.insert(l.pid);
    }
    for i in 0..8 {
        app.command(&format!("enqueue b d{i} sleep 300 0 0"));
    }
    app.command("resize b 1");
    let mut ok = 0;
    let mut exits = Vec::new();
    while ok < 8 || exits.len() < 3 {
        let l = app.next();
        if l.what == "job" {
            assert!(l.rest.contains(" ok "), "a job failed during the resize: {}", l.rest);
            ok += 1;
        }
        if l.what == "exited" && l.role == "b" {
            // Drained workers stop cleanly: nothing in flight is lost.
            assert_eq!(l.rest, "Code(0)");
            exits.push(l.slot);
        }
    }
    exits.sort();
    assert_eq!(exits, [1, 2, 3]);
}

fn a_rolling_reload_under_load_fails_no_job(exe: &str) {
    let mut app = start(exe, "a:1,b:2");
    let up = online(&app);
    let old: BTreeSet<u32> = up["b"].iter().copied().collect();
    for i in 0..20 {
        app.command(&format!("enqueue b p{i} sleep 50 0 0"));
    }
    app.command("reload b");
    for i in 20..40 {
        app.command(&format!("enqueue b p{i} sleep 50 0 0"));
    }
    let (mut ok, mut reloaded) = (0, false);
    let mut new = BTreeSet::new();
    while ok < 40 || !reloaded {
        let l = app.next();
        match l.what.as_str() {
            "job" => {
                assert!(l.rest.contains(" ok "), "a job failed during the reload: {}", l.rest);
                ok += 1;
            }
            "reloaded" => reloaded = true,
            "ready" if l.role == "b" => {
                new.insert(l.pid);
            }
            _ => {}
        }
    }
    assert_eq!(new.len(), 2);
    assert!(new.is_disjoint(&old));
    for pid in &old {
        assert!(mob_tests::eventually(std::time::Duration::from_secs(5), || !alive(*pid)));
    }
}

fn health_reports_real_memory(exe: &str) {
    let mut app = start(exe, "a:2");
    let up = online(&app);
    let pid = up["a"][0];
    let rss = |l: &Line| -> u64 { l.rest.split(' ').nth(1).unwrap().parse().unwrap() };
    // Wait for a first report, then allocate 64 MiB and wait for it to show.
    let before = rss(&health_until(&mut app, |l| l.pid == pid && rss(l) > 0));
    app.command(&format!("send pid:{pid} alloc 64"));
    let after = rss(&health_until(&mut app, |l| l.pid == pid && rss(l) >= before + 60 * 1024));
    assert!(after >= before + 60 * 1024, "{before} -> {after}");
}

fn a_hung_worker_is_killed_and_replaced(exe: &str) {
    let app = start_env(exe, "a:2", &[("MOB_TEST_HEARTBEAT_MS", "50,400")]);
    let up = online(&app);
    let victim = up["a"][1];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGSTOP).unwrap();
    let closed = app.wait_for(|l| l.what == "closed" && l.pid == victim);
    assert_eq!(closed.rest, "worker stopped answering heartbeats (hung)");
    app.wait_for(|l| l.what == "exited" && l.pid == victim);
    let revived = app.wait_for(|l| l.what == "ready");
    assert_ne!(revived.pid, victim);
}

fn sigint_soft_kills_after_in_flight_work_finishes(exe: &str) {
    let mut app = start(exe, "a:2");
    online(&app);
    app.command("enqueue a s1 sleep 400 0 0");
    health_until(&mut app, |l| l.rest.split(' ').nth(2) == Some("1"));
    app.signal(Signal::SIGINT);
    let lines = app.rest();
    assert!(lines.iter().any(|l| l.what == "job" && l.rest.starts_with("s1 ok ")), "{lines:?}");
    assert_eq!(app.wait_exit(), Some(0));
}

fn a_second_sigint_forces_a_hard_kill(exe: &str) {
    let mut app = start_env(exe, "a:2", &[("MOB_TEST_GRACE_MS", "60000")]);
    let up = online(&app);
    app.command("enqueue a s1 sleep 60000 0 0");
    health_until(&mut app, |l| l.rest.split(' ').nth(2) == Some("1"));
    app.signal(Signal::SIGINT);
    // The soft kill is under way once the idle worker has stopped; a second
    // signal then forces the busy one down at once.
    app.wait_for(|l| l.what == "exited");
    app.signal(Signal::SIGINT);
    assert_eq!(app.wait_exit(), Some(1));
    let pids: Vec<u32> = up["a"].clone();
    assert!(mob_tests::eventually(std::time::Duration::from_secs(2), || pids.iter().all(|p| !alive(*p))));
}

fn workers_are_not_in_the_terminals_process_group(exe: &str) {
    let app = start(exe, "a:2");
    let up = online(&app);
    let pgrp = |pid: u32| -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat.rsplit(')').next().unwrap().split_whitespace().nth(2).unwrap().to_string()
    };
    let kingpin = pgrp(app.pid());
    for pid in &up["a"] {
        assert_ne!(pgrp(*pid), kingpin, "a terminal's Ctrl-C would reach worker {pid}");
    }
}

mob_tests::on_both_runtimes!(
    a_crash_loop_is_restarted_as_the_intensity_allows_then_the_app_fails,
    with_continue_a_failed_role_stops_and_the_others_carry_on,
    restart_types_decide_which_exits_are_revived,
    a_panic_is_reported_as_the_workers_last_error,
    jobs_spread_by_load_and_wait_for_readiness,
    job_retries_timeouts_and_unknown_roles,
    resize_up_and_down_under_load_loses_nothing,
    a_rolling_reload_under_load_fails_no_job,
    health_reports_real_memory,
    a_hung_worker_is_killed_and_replaced,
    sigint_soft_kills_after_in_flight_work_finishes,
    a_second_sigint_forces_a_hard_kill,
    workers_are_not_in_the_terminals_process_group,
);
