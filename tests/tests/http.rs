//! The seed's HTTP app (each runtime's `myapp` / `myapp_std` example) with real
//! processes: every request answered by both front workers reaching every
//! back worker on a shared listener, an exact spread when the kingpin
//! distributes connections, and a port that keeps answering while a front
//! worker dies.

use mob_tests::{TestApp, alive};
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

/// Starts the HTTP app `exe` on a free port with its listener in `mode`;
/// returns it, its address and its front workers' pids once every worker
/// is ready and both fronts serve.
fn http_app_in(exe: &str, mode: &str) -> (TestApp, String, BTreeSet<u32>) {
    let app = TestApp::start(exe, "", &[("MYAPP_PORT", "0"), ("MYAPP_MODE", mode)]);
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

fn the_seed_app_answers_every_request_from_both_fronts_reaching_every_back(exe: &str) {
    let (app, addr, _) = http_app_in(exe, "shared");
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

fn kingpin_distributed_connections_reach_both_fronts_evenly(exe: &str) {
    let (app, addr, _) = http_app_in(exe, "distributed");
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

fn the_port_keeps_answering_while_a_front_worker_dies_and_is_revived(exe: &str) {
    let (app, addr, fronts) = http_app_in(exe, "shared");
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

mob_tests::on_both_runtimes!(http_app:
    the_seed_app_answers_every_request_from_both_fronts_reaching_every_back,
    kingpin_distributed_connections_reach_both_fronts_evenly,
    the_port_keeps_answering_while_a_front_worker_dies_and_is_revived,
);
