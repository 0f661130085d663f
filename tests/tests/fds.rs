//! File descriptors with real processes: the seed's HTTP app on a shared
//! listener, and no fd leaked by the kingpin however messages end.

use mob_tests::{TestApp, alive, eventually};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn get(addr: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

/// Starts the HTTP app on a free port; returns it and its address.
fn http_app() -> (TestApp, String) {
    let (app, addr, _) = http_app_in("shared");
    (app, addr)
}

fn http_app_in(mode: &str) -> (TestApp, String, BTreeSet<u32>) {
    let app = TestApp::start(env!("CARGO_BIN_EXE_mob-http-app"), "", &[("MYAPP_PORT", "0"), ("MYAPP_MODE", mode)]);
    let line = app.wait_raw("listening on http://");
    let addr = line.split("http://").nth(1).unwrap().trim_end_matches('/').to_string();
    // Every worker ready, and both front workers serving.
    let (mut ready, mut fronts) = (false, BTreeSet::new());
    while !ready || fronts.len() < 2 {
        let line = app.next_raw();
        ready |= line.contains("all workers ready");
        if line.contains(" running at http://") {
            fronts.insert(pid_after(&line, "Server ").unwrap());
        }
    }
    (app, addr, fronts)
}

/// The pid after `prefix` in a line a worker printed. The kingpin passed
/// the line on with the worker's `[role#slot pid] ` before it, whose pid
/// must be the same.
fn pid_after(line: &str, prefix: &str) -> Option<u32> {
    let (tag, line) = line.strip_prefix('[')?.split_once("] ")?;
    let tagged: u32 = tag.split(' ').nth(1)?.parse().ok()?;
    let pid = line.strip_prefix(prefix)?.split(' ').next()?.trim_end_matches('.').parse().ok()?;
    assert_eq!(pid, tagged, "the prefix names the worker that printed the line");
    Some(pid)
}

#[test]
fn the_seed_app_answers_every_request_from_both_fronts_reaching_every_back() {
    let (app, addr) = http_app();
    for _ in 0..200 {
        let response = get(&addr).expect("an HTTP answer");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("\r\n\r\nHello World\n"), "{response}");
    }
    let (mut fronts, mut backs) = (BTreeSet::new(), BTreeSet::new());
    let (mut served, mut called) = (0, 0);
    while served < 200 || called < 200 {
        let line = app.next_raw();
        if let Some(pid) = pid_after(&line, "Server ").filter(|_| line.ends_with("served an http request.")) {
            fronts.insert(pid);
            served += 1;
        }
        if let Some(pid) = pid_after(&line, "Bar! My pid is ") {
            backs.insert(pid);
            called += 1;
        }
    }
    assert_eq!(fronts.len(), 2, "both front workers serve: {fronts:?}");
    assert_eq!(backs.len(), 4, "every back worker is called: {backs:?}");
}

#[test]
fn kingpin_distributed_connections_reach_both_fronts_evenly() {
    let (app, addr, _) = http_app_in("distributed");
    for _ in 0..100 {
        assert!(get(&addr).expect("an HTTP answer").ends_with("Hello World\n"));
    }
    let mut by = std::collections::BTreeMap::<u32, usize>::new();
    let mut served = 0;
    while served < 100 {
        let line = app.next_raw();
        if let Some(pid) = pid_after(&line, "Server ").filter(|_| line.ends_with("served an http request.")) {
            *by.entry(pid).or_default() += 1;
            served += 1;
        }
    }
    // One connection at a time, none in flight: strict round-robin.
    assert_eq!(by.values().copied().collect::<Vec<_>>(), [50, 50], "{by:?}");
}

#[test]
fn the_port_keeps_answering_while_a_front_worker_dies_and_is_revived() {
    let (app, addr, fronts) = http_app_in("shared");
    let victim = *fronts.iter().next().unwrap();
    let mut failures = 0;
    for i in 0..100 {
        if i == 30 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        }
        match get(&addr) {
            Ok(r) if r.ends_with("Hello World\n") => {}
            // A connection the victim had accepted when it died is lost.
            _ => failures += 1,
        }
    }
    assert!(failures <= 1, "{failures} requests failed");
    // A new front worker took the dead one's place and serves too.
    let line = app.wait_raw(" running at http://");
    let revived = pid_after(&line, "Server ").unwrap();
    assert!(!fronts.contains(&revived));
    assert!(!alive(victim));
}

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

#[test]
fn the_kingpin_leaks_no_fd_however_messages_end() {
    let env = [("MOB_TEST_MAX_RESTARTS", "1000"), ("MOB_TEST_NO_BACKOFF", "1")];
    let mut app = TestApp::start(env!("CARGO_BIN_EXE_mob-test-app"), "a:2", &env);
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

#[test]
fn a_job_carries_a_connection_and_its_answer_carries_a_stream() {
    let mut app = TestApp::start(env!("CARGO_BIN_EXE_mob-test-app"), "w:2", &[]);
    app.wait_for(|l| l.what == "app-online");
    app.command("sockjob w");
    let l = app.wait_for(|l| l.what == "sockjob");
    assert_eq!(l.rest, format!("answered on the socket by {0} | streamed by {0}", l.pid));
}

#[test]
fn a_broadcast_gives_every_worker_its_own_copy_of_an_fd() {
    let mut app = TestApp::start(env!("CARGO_BIN_EXE_mob-test-app"), "w:3,x:1", &[]);
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
