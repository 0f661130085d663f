//! The two runtimes speak one protocol: mob-std workers under a mob-mio
//! kingpin, and mob-mio workers under a mob-std kingpin, exchange messages,
//! requests, `require` calls and jobs with the native workers, and are
//! supervised like them.

use mob_tests::{Line, TestApp, alive};
use std::collections::BTreeMap;

const MIO: &str = env!("CARGO_BIN_EXE_mob-test-app");
const STD: &str = env!("CARGO_BIN_EXE_mob-std-test-app");

fn report(l: &Line, prefix: &str) -> bool {
    l.what == "message" && l.rest.starts_with(&format!("report {prefix}"))
}

/// The pid in a reply text that ends `from PID`.
fn from_pid(text: &str) -> u32 {
    text.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A kingpin on one runtime with a native role `a` (one worker) and a role
/// `foreign` (two workers) running the other runtime's test app.
fn mixed(kingpin: &str, foreign: &str) {
    let mut app = TestApp::start(kingpin, "a:1,foreign:2", &[("MOB_TEST_FOREIGN", foreign)]);
    // Everyone comes up and answers the kingpin's ping.
    let mut up: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut ponged = 0;
    while up.values().map(Vec::len).sum::<usize>() < 3 || ponged < 3 {
        let l = app.next();
        if l.what == "up" {
            up.entry(l.role).or_default().push(l.pid);
        } else if l.what == "message" && l.rest == format!("pong {}", l.pid) {
            ponged += 1;
        }
    }
    let (native, foreigners) = (up["a"][0], up["foreign"].clone());
    for pid in &foreigners {
        assert!(mob_tests::cmdline(*pid).starts_with("testapp: foreign#"), "{}", mob_tests::cmdline(*pid));
    }

    // The kingpin asks a foreign worker.
    app.command("request any:foreign echo k1 5000");
    let l = app.wait_for(|l| l.what == "reply");
    assert!(l.rest.starts_with("k1 ok k1 from "), "{}", l.rest);
    assert!(foreigners.contains(&from_pid(&l.rest)));

    // Native worker -> foreign worker, through the kingpin.
    app.command(&format!("tell {native} request any:foreign echo n2f 5000"));
    let l = app.wait_for(|l| report(l, "reply n2f"));
    assert_eq!(l.pid, native);
    assert!(foreigners.contains(&from_pid(&l.rest)), "{}", l.rest);

    // Foreign worker -> native worker.
    let me = foreigners[0];
    app.command(&format!("tell {me} request any:a echo f2n 5000"));
    let l = app.wait_for(|l| report(l, "reply f2n"));
    assert_eq!((l.pid, l.rest.clone()), (me, format!("report reply f2n ok f2n from {native}")));

    // Foreign worker -> foreign worker, and a one-way message to the native.
    app.command(&format!("tell {me} request pid:{} echo f2f 5000", foreigners[1]));
    let l = app.wait_for(|l| report(l, "reply f2f"));
    assert_eq!(l.rest, format!("report reply f2f ok f2f from {}", foreigners[1]));
    app.command(&format!("tell {me} send pid:{native} hello h1"));
    let l = app.wait_for(|l| report(l, "hello h1"));
    assert_eq!((l.pid, l.rest.clone()), (native, format!("report hello h1 from pid:{me}")));

    // Exports cross over: a `require` proxy call each way.
    app.command(&format!("tell {native} request proxy:foreign whoami r1 5000"));
    let l = app.wait_for(|l| report(l, "reply r1"));
    assert!(foreigners.contains(&from_pid(&l.rest)), "{}", l.rest);
    app.command(&format!("tell {me} request proxy:a whoami r2 5000"));
    let l = app.wait_for(|l| report(l, "reply r2"));
    assert_eq!(l.rest, format!("report reply r2 ok {native}"));

    // A handler that exits is PeerGone, and its worker is revived. (The
    // reply and the revival may be printed in either order.)
    app.command(&format!("tell {native} request any:foreign exit e1 60000"));
    let (mut replied, mut revived) = (false, false);
    while !(replied && revived) {
        let l = app.next();
        if report(&l, "reply e1") {
            assert_eq!(l.rest, "report reply e1 err PeerGone");
            replied = true;
        }
        revived |= l.what == "up" && l.role == "foreign";
    }

    // Jobs go to foreign workers too.
    app.command("enqueue foreign j1 hi 5000 0");
    let l = app.wait_for(|l| l.what == "job");
    assert_eq!(l.role, "foreign");
    assert!(l.rest.starts_with("j1 ok "), "{}", l.rest);

    // A SIGKILLed foreign worker (the one that did the job) is revived as a
    // foreign worker.
    let victim = l.pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    app.wait_for(|l| l.what == "exited" && l.pid == victim);
    let revived = app.wait_for(|l| l.what == "up" && l.role == "foreign");
    assert_ne!(revived.pid, victim);

    // A soft kill drains both kinds and exits cleanly.
    let everyone: Vec<u32> = app_pids(&mut app);
    app.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(app.wait_exit(), Some(0));
    assert!(mob_tests::eventually(std::time::Duration::from_secs(2), || everyone.iter().all(|p| !alive(*p))));
}

/// The pids of every worker, from a health report.
fn app_pids(app: &mut TestApp) -> Vec<u32> {
    app.command("health");
    let mut pids = Vec::new();
    loop {
        let l = app.wait_for(|l| l.what == "health" || l.what == "health-end");
        if l.what == "health-end" {
            return pids;
        }
        pids.push(l.pid);
    }
}

#[test]
fn std_workers_under_a_mio_kingpin() {
    mixed(MIO, STD);
}

#[test]
fn mio_workers_under_a_std_kingpin() {
    mixed(STD, MIO);
}
