//! Chaos, on each runtime: continuous work through the kingpin while a
//! random worker is SIGKILLed every 50 ms. Every job ends exactly once (most
//! succeed through retries), workers are always revived, the kingpin's fd
//! count returns to where it was, and no zombie is left.

use mob_tests::{TestApp, alive, eventually, zombies_of};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::Duration;

fn jobs_survive_a_worker_killed_every_50ms(exe: &str) {
    let env = [("MOB_TEST_MAX_RESTARTS", "100000"), ("MOB_TEST_NO_BACKOFF", "1")];
    let mut app = TestApp::start(exe, "bconc1:4", &env);
    let mut live = BTreeSet::new();
    while live.len() < 4 {
        live.insert(app.wait_for(|l| l.what == "ready").pid);
    }
    app.command("fdcount");
    let before: usize = app.wait_for(|l| l.what == "fdcount").rest.trim().parse().unwrap();

    const JOBS: usize = 600;
    app.command(&format!("jobs bconc1 {JOBS} 20000 10 sleep 20"));
    let mut kills = 0;
    let done = loop {
        // Every 50 ms (or sooner when lines arrive): the chaos interval.
        match app.try_next(Duration::from_millis(50)) {
            Some(l) if l.what == "jobs-done" => break l,
            Some(l) if l.what == "ready" => {
                live.insert(l.pid);
            }
            Some(l) if l.what == "exited" => {
                live.remove(&l.pid);
            }
            Some(_) => {}
            None => {
                if let Some(&victim) = live.iter().nth(kills % live.len().max(1)) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL);
                    live.remove(&victim);
                    kills += 1;
                }
            }
        }
    };
    let mut counts = done.rest.split(' ').map(|n| n.trim().parse::<usize>().unwrap());
    let (ok, failed) = (counts.next().unwrap(), counts.next().unwrap());
    assert_eq!(ok + failed, JOBS, "every job ends exactly once");
    assert!(kills >= 10, "only {kills} kills: the chaos did not happen");
    assert!(ok * 10 >= JOBS * 9, "{ok} of {JOBS} succeeded with {kills} kills");

    // Four workers again, no zombie, and the kingpin's fds as before.
    while live.len() < 4 {
        let l = app.wait_for(|l| l.what == "ready" || l.what == "exited");
        if l.what == "ready" {
            live.insert(l.pid);
        } else {
            live.remove(&l.pid);
        }
    }
    assert!(live.iter().all(|p| alive(*p)));
    let kingpin = app.pid();
    assert!(eventually(Duration::from_secs(2), || zombies_of(kingpin).is_empty()), "{:?}", zombies_of(kingpin));
    app.command("fdcount");
    let after: usize = app.wait_for(|l| l.what == "fdcount").rest.trim().parse().unwrap();
    assert_eq!(after, before);
}

mob_tests::on_both_runtimes!(jobs_survive_a_worker_killed_every_50ms);
