//! File descriptors with real processes, on each runtime: no fd leaked by
//! the kingpin however messages end, a job that carries a connection and
//! answers with a stream, a broadcast that gives every worker its own
//! copy of an fd, and one fd shared by many messages without copies.

use mob_tests::{TestApp, alive, eventually};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::Duration;

fn fd_count(app: &mut TestApp) -> usize {
    app.command("fdcount");
    app.wait_for(|l| l.what == "fdcount").rest.trim().parse().unwrap()
}

/// Waits until every earlier frame on each of `a`'s links has been
/// written: a request answered by each worker comes after them.
fn sync(app: &mut TestApp, pids: &[u32]) {
    for pid in pids {
        app.command(&format!("request pid:{pid} echo sync{pid} 20000"));
        app.wait_for(|l| l.what == "reply" && l.rest.starts_with(&format!("sync{pid} ok")));
    }
}

fn the_kingpin_leaks_no_fd_however_messages_end(exe: &str) {
    let env = [("MOB_TEST_MAX_RESTARTS", "1000"), ("MOB_TEST_NO_BACKOFF", "1")];
    let mut app = TestApp::start(exe, "a:2", &env);
    let mut pids = Vec::new();
    while pids.len() < 2 {
        pids.push(app.wait_for(|l| l.what == "ready").pid);
    }
    sync(&mut app, &pids);
    let before = fd_count(&mut app);

    // 10,000 fd-carrying messages, delivered.
    app.command("fds any:a 10000");
    app.wait_for(|l| l.what == "fds-sent");
    sync(&mut app, &pids);

    // 100 worker deaths, each with fd-carrying messages queued for it.
    for _ in 0..100 {
        let victim = pids.remove(0);
        app.command(&format!("fds pid:{victim} 5"));
        app.wait_for(|l| l.what == "fds-sent");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        let revived = app.wait_for(|l| l.what == "ready");
        pids.push(revived.pid);
    }
    sync(&mut app, &pids);

    // 1,000 fd-carrying requests that time out.
    app.command("fdreq any:a 1000 200");
    let done = app.wait_for(|l| l.what == "fdreq-done");
    assert_eq!(done.rest.trim(), "1000", "every request timed out");
    sync(&mut app, &pids);

    let kingpin = app.pid();
    let after = fd_count(&mut app);
    assert_eq!(after, before, "the kingpin's open fds (/proc/{kingpin}/fd) changed");
    assert!(eventually(Duration::from_secs(1), || pids.iter().all(|p| alive(*p))));
}

fn a_job_carries_a_connection_and_its_answer_carries_a_stream(exe: &str) {
    let mut app = TestApp::start(exe, "w:2", &[]);
    app.wait_for(|l| l.what == "app-online");
    app.command("sockjob w");
    let l = app.wait_for(|l| l.what == "sockjob");
    assert_eq!(l.rest, format!("answered on the socket by {0} | streamed by {0}", l.pid));
}

fn a_broadcast_gives_every_worker_its_own_copy_of_an_fd(exe: &str) {
    let mut app = TestApp::start(exe, "w:3,x:1", &[]);
    app.wait_for(|l| l.what == "app-online");
    let before = fd_count(&mut app);
    app.command("broadcastfd w");
    let b = app.wait_for(|l| l.what == "broadcast");
    let (n, ino) = b.rest.trim().split_once(' ').unwrap();
    assert_eq!(n, "3");
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        let l = app.wait_for(|l| l.what == "message" && l.rest.starts_with("report holdfd "));
        assert_eq!(l.role, "w");
        assert_eq!(l.rest, format!("report holdfd {ino}"), "every worker holds the same pipe");
        got.insert(l.pid);
    }
    assert_eq!(fd_count(&mut app), before, "the kingpin keeps no copy");
}

fn a_shared_fd_goes_in_many_messages_and_closes_after_the_last(exe: &str) {
    let mut app = TestApp::start(exe, "w:2", &[]);
    app.wait_for(|l| l.what == "app-online");
    let before = fd_count(&mut app);
    // Every message's fd works (a byte each), and the pipe ends: no copy is
    // left open anywhere, the kingpin's held frames included.
    app.command("sharedfd any:w 2000");
    let l = app.wait_for(|l| l.what == "sharedfd-read");
    assert_eq!(l.rest.trim(), "2000 2000");
    assert_eq!(fd_count(&mut app), before, "the kingpin keeps no copy");
}

/// A worker sends a burst of messages whose fds differ in number (none to
/// the most one frame may carry, so that one write carries the fds of
/// several frames, and a frame's fds sometimes do not fit in the write
/// before); the kingpin forwards them to a worker of another role, which
/// finds in each message exactly the pipes that message was sent with.
fn fds_stay_with_their_own_messages_when_several_share_a_write(exe: &str) {
    let mut app = TestApp::start(exe, "a:1,b:1", &[]);
    let a = app.wait_for(|l| l.what == "ready" && l.role == "a").pid;
    app.wait_for(|l| l.what == "app-online");
    let before = fd_count(&mut app);
    app.command(&format!("tell {a} fdmix any:b 120"));
    let l = app.wait_for(|l| l.what == "message" && l.rest.starts_with("report fdmix-"));
    assert_eq!(l.rest, "report fdmix-got 120");
    assert_eq!(fd_count(&mut app), before, "the kingpin keeps no fd it forwarded");
}

mob_tests::on_both_runtimes!(
    fds_stay_with_their_own_messages_when_several_share_a_write,
    a_shared_fd_goes_in_many_messages_and_closes_after_the_last,
    the_kingpin_leaks_no_fd_however_messages_end,
    a_job_carries_a_connection_and_its_answer_carries_a_stream,
    a_broadcast_gives_every_worker_its_own_copy_of_an_fd,
);
