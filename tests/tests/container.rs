//! The kingpin as a container's init: PID 1 of a PID namespace
//! (`unshare --pid --fork`), or a subreaper. It reaps every orphan the
//! kernel hands it, keeps its own workers' exits straight, and a SIGTERM
//! makes a clean soft exit: no tini or dumb-init needed in front of it.

use mob_tests::{DEADLINE, Line, TestApp, children_of, eventually, zombies_of};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::process::Command;

/// Has worker `pid` make `n` orphans, and reads lines until the kingpin
/// has reported each of them reaped, with exit code 0 (the report and the
/// reaping may come in either order). Fails on a worker exit meanwhile: the
/// orphans' deaths must not be taken for a worker's.
fn orphans_reaped(app: &mut TestApp, pid: u32, n: usize) {
    app.command(&format!("send pid:{pid} orphans {n}"));
    let (mut made, mut reaped) = (None::<BTreeSet<u32>>, BTreeSet::new());
    while made.as_ref().is_none_or(|made| !made.is_subset(&reaped)) {
        let line: Line = app.next();
        assert_ne!(line.what, "exited", "a worker exited while orphans were reaped: {line:?}");
        if line.what == "orphan" {
            assert_eq!(line.rest, "Code(0)", "{line:?}");
            reaped.insert(line.pid);
        }
        if line.what == "message" && line.pid == pid && line.rest.starts_with("report orphans") {
            let pids: BTreeSet<u32> = line.rest.split(' ').skip(2).filter_map(|p| p.parse().ok()).collect();
            assert_eq!(pids.len(), n, "{line:?}");
            made = Some(pids);
        }
    }
    assert_eq!(made, Some(reaped), "an orphan we did not make was reaped");
}

/// Waits for `n` workers up; their pids.
fn workers_up(app: &TestApp, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    while pids.len() < n {
        let line = app.wait_for(|l| l.what == "up");
        pids.push(line.pid);
    }
    pids
}

/// Soft-kills the kingpin with SIGTERM (sent to `kingpin`, its pid as this
/// process sees it) and checks the clean exit: every worker stops with
/// code 0, and the exit code is 0.
fn sigterm_exits_cleanly(app: &mut TestApp, kingpin: u32, workers: usize) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(kingpin as i32), Signal::SIGTERM).expect("SIGTERM");
    let mut exited = 0;
    for line in app.rest() {
        if line.what == "exited" {
            assert_eq!(line.rest, "Code(0)", "a worker did not stop cleanly: {line:?}");
            exited += 1;
        }
    }
    assert_eq!(exited, workers);
    assert_eq!(app.wait_exit(), Some(0));
}

fn a_subreaper_kingpin_reaps_its_workers_orphans(exe: &str) {
    let mut app = TestApp::start(exe, "o:2", &[("MOB_TEST_SUBREAPER", "1")]);
    let workers = workers_up(&app, 2);
    orphans_reaped(&mut app, workers[0], 3);
    orphans_reaped(&mut app, workers[1], 2);
    assert!(eventually(DEADLINE, || zombies_of(app.pid()).is_empty()), "zombies: {:?}", zombies_of(app.pid()));
    // The workers are untouched, and still the kingpin's only children.
    let children: BTreeSet<u32> = children_of(app.pid()).into_iter().collect();
    assert_eq!(children, workers.iter().copied().collect());
    let kingpin = app.pid();
    sigterm_exits_cleanly(&mut app, kingpin, 2);
}

fn as_pid_1_of_a_pid_namespace_it_reaps_every_orphan_and_stops_on_sigterm(exe: &str) {
    // --kill-child: if the test fails and kills unshare, the namespace
    // goes with it.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", exe, "o:2"]);
    let mut app = TestApp::start_command(cmd);
    // unshare forks the namespace's init, our kingpin, and waits for it.
    let unshare = app.pid();
    let mut init = None;
    assert!(eventually(DEADLINE, || {
        init = children_of(unshare).first().copied();
        init.is_some()
    }));
    let init = init.expect("the namespace's init");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("init's status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("an NSpid line");
    assert!(nspid.ends_with("\t1"), "the kingpin is not PID 1 in its namespace: {nspid}");

    let workers = workers_up(&app, 2);
    for &worker in &workers {
        orphans_reaped(&mut app, worker, 3);
    }
    // Nothing in the namespace is left a zombie: every orphan was the init's.
    assert!(eventually(DEADLINE, || zombies_of(init).is_empty()), "zombies: {:?}", zombies_of(init));
    assert_eq!(children_of(init).len(), 2, "the init's children are its two workers");
    sigterm_exits_cleanly(&mut app, init, 2);
}

mob_tests::on_both_runtimes!(
    a_subreaper_kingpin_reaps_its_workers_orphans,
    as_pid_1_of_a_pid_namespace_it_reaps_every_orphan_and_stops_on_sigterm,
);
