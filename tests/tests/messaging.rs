//! Messaging, routing and requests with real processes: every target reaches
//! exactly the right workers, requests end exactly once in the right way.

use mob_tests::{Line, TestApp};
use std::collections::{BTreeMap, BTreeSet};

fn start(exe: &str, roles: &str) -> TestApp {
    TestApp::start(exe, roles, &[])
}

/// Waits for every worker to be up; returns pids by role.
fn all_up(app: &TestApp, want: usize) -> BTreeMap<String, Vec<u32>> {
    let mut by_role: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..want {
        let line = app.wait_for(|l| l.what == "up");
        by_role.entry(line.role).or_default().push(line.pid);
    }
    by_role
}

/// A report line from a worker: `message ROLE SLOT PID report TEXT`.
fn report(l: &Line, prefix: &str) -> bool {
    l.what == "message" && l.rest.starts_with(&format!("report {prefix}"))
}

/// Collects the pids that report `hello TAG`, until every pid in `all` has
/// reported `hello END`, sent to all by the same sender as `TAG` (`from`, or
/// the kingpin). Messages from one sender arrive in order, and so do each
/// worker's reports, so by then every `TAG` report has arrived too.
fn hellos_from(app: &mut TestApp, from: Option<u32>, all: &[u32], tag: &str, end: &str) -> Vec<u32> {
    match from {
        Some(pid) => app.command(&format!("tell {pid} send all+self hello {end}")),
        None => app.command(&format!("send all+self hello {end}")),
    }
    let mut got = Vec::new();
    let mut ended = BTreeSet::new();
    while ended.len() < all.len() {
        let l = app.wait_for(|l| report(l, "hello "));
        if l.rest.starts_with(&format!("report hello {tag} ")) {
            got.push(l.pid);
        } else if l.rest.starts_with(&format!("report hello {end} ")) {
            ended.insert(l.pid);
        }
    }
    got.sort();
    got
}

fn hellos(app: &mut TestApp, all: &[u32], tag: &str, end: &str) -> Vec<u32> {
    hellos_from(app, None, all, tag, end)
}

fn every_target_reaches_exactly_the_right_workers(exe: &str) {
    let mut app = start(exe, "a:2,b:2");
    let up = all_up(&app, 4);
    let (a, b) = (up["a"].clone(), up["b"].clone());
    let mut everyone: Vec<u32> = a.iter().chain(&b).copied().collect();
    everyone.sort();

    app.command("send all hello t1");
    assert_eq!(hellos(&mut app, &everyone, "t1", "e1"), everyone);

    app.command("send role:a hello t2");
    let mut want = a.clone();
    want.sort();
    assert_eq!(hellos(&mut app, &everyone, "t2", "e2"), want);

    app.command("send any:b hello t3");
    let got = hellos(&mut app, &everyone, "t3", "e3");
    assert_eq!(got.len(), 1);
    assert!(b.contains(&got[0]));

    app.command(&format!("send pid:{} hello t4", b[1]));
    assert_eq!(hellos(&mut app, &everyone, "t4", "e4"), vec![b[1]]);

    // From a worker: to the kingpin, to all but itself, to all with itself.
    let me = a[0];
    app.command(&format!("tell {me} send kingpin hello t5"));
    let l = app.wait_for(|l| l.what == "message" && l.rest == "hello t5");
    assert_eq!(l.pid, me);

    app.command(&format!("tell {me} send all hello t6"));
    let others: Vec<u32> = everyone.iter().copied().filter(|p| *p != me).collect();
    assert_eq!(hellos_from(&mut app, Some(me), &everyone, "t6", "e6"), others);

    app.command(&format!("tell {me} send all+self hello t7"));
    assert_eq!(hellos_from(&mut app, Some(me), &everyone, "t7", "e7"), everyone);

    // The receiver sees who sent it.
    app.command(&format!("tell {me} send pid:{} hello t8", b[0]));
    let l = app.wait_for(|l| report(l, "hello t8"));
    assert_eq!((l.pid, l.rest.clone()), (b[0], format!("report hello t8 from pid:{me}")));
}

fn any_of_a_role_spreads_over_every_worker_of_the_role(exe: &str) {
    let mut app = start(exe, "a:1,b:3");
    let up = all_up(&app, 4);
    let b: BTreeSet<u32> = up["b"].iter().copied().collect();
    // One-way: round-robin, so nine messages give three to each.
    for i in 0..9 {
        app.command(&format!("send any:b hello s{i}"));
    }
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..9 {
        let l = app.wait_for(|l| report(l, "hello s"));
        *count.entry(l.pid).or_default() += 1;
    }
    assert_eq!(count.keys().copied().collect::<BTreeSet<_>>(), b);
    assert!(count.values().all(|n| *n == 3), "{count:?}");
    // Requests from a worker, through the kingpin, also reach every one.
    let me = up["a"][0];
    let mut answered_by = BTreeSet::new();
    for i in 0..9 {
        app.command(&format!("tell {me} request any:b echo q{i} 2000"));
    }
    for _ in 0..9 {
        let l = app.wait_for(|l| report(l, "reply q"));
        let pid: u32 = l.rest.rsplit(' ').next().unwrap().parse().unwrap();
        answered_by.insert(pid);
    }
    assert_eq!(answered_by, b);
}

fn a_worker_request_to_another_worker_gets_its_reply(exe: &str) {
    let mut app = start(exe, "a:1,b:1");
    let up = all_up(&app, 2);
    let (me, other) = (up["a"][0], up["b"][0]);
    app.command(&format!("tell {me} request any:b echo w2w 2000"));
    let l = app.wait_for(|l| report(l, "reply w2w"));
    assert_eq!(l.pid, me);
    assert_eq!(l.rest, format!("report reply w2w ok w2w from {other}"));
    // And to the kingpin, which answers itself.
    app.command(&format!("tell {me} request kingpin ask k1 2000"));
    let req = app.wait_for(|l| l.what == "request");
    assert_eq!((req.pid, req.rest.as_str()), (me, "ask k1"));
    let l = app.wait_for(|l| report(l, "reply k1"));
    assert_eq!(l.rest, "report reply k1 ok kingpin got k1");
}

fn a_handler_that_exits_ends_the_request_as_peer_gone(exe: &str) {
    let mut app = start(exe, "a:1,b:1");
    let up = all_up(&app, 2);
    let me = up["a"][0];
    // A 60 s timeout: the request must end long before it, as peer gone.
    app.command(&format!("tell {me} request any:b exit e1 60000"));
    // The reply and the replacement's coming up may be printed in any order.
    let (mut replied, mut revived) = (false, false);
    while !(replied && revived) {
        let l = app.next();
        if report(&l, "reply e1") {
            assert_eq!(l.rest, "report reply e1 err PeerGone");
            replied = true;
        }
        revived |= l.what == "up" && l.role == "b";
    }
    // From the kingpin too (the replacement worker handles this one).
    app.command("request any:b exit e2 60000");
    let l = app.wait_for(|l| l.what == "reply");
    assert_eq!(l.rest, "e2 err request failed: the handling peer went away before answering");
}

fn a_handler_that_never_answers_ends_as_timed_out(exe: &str) {
    let mut app = start(exe, "a:1,b:1");
    let up = all_up(&app, 2);
    app.command("request any:b never n1 200");
    let l = app.wait_for(|l| l.what == "reply");
    assert_eq!(l.rest, "n1 err request failed: timed out");
    let me = up["a"][0];
    app.command(&format!("tell {me} request any:b never n2 200"));
    let l = app.wait_for(|l| report(l, "reply n2"));
    assert_eq!(l.rest, "report reply n2 err TimedOut");
    // A dropped request ends at once, not at its timeout.
    app.command(&format!("tell {me} request any:b drop d1 60000"));
    let l = app.wait_for(|l| report(l, "reply d1"));
    assert_eq!(l.rest, "report reply d1 err Dropped");
}

fn application_threads_can_wait_on_requests(exe: &str) {
    let mut app = start(exe, "b:2");
    let up = all_up(&app, 2);
    // Ten threads at once, each blocked on its own request.
    for i in 0..10 {
        app.command(&format!("wrequest any:b echo t{i} 5000"));
    }
    let mut answered = BTreeSet::new();
    for _ in 0..10 {
        let l = app.wait_for(|l| l.what == "wreply");
        let (tag, rest) = l.rest.split_once(' ').unwrap();
        let pid: u32 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(rest.starts_with(&format!("ok {tag} from ")) && up["b"].contains(&pid), "{}", l.rest);
        answered.insert(tag.to_string());
    }
    assert_eq!(answered.len(), 10);
    // A blocked wait ends at its timeout.
    app.command("wrequest any:b never w1 200");
    assert_eq!(app.wait_for(|l| l.what == "wreply").rest, "w1 err request failed: timed out");
}

fn a_handle_request_passes_callbacks_and_cannot_wait_on_its_own_loop(exe: &str) {
    let mut app = start(exe, "b:1");
    all_up(&app, 1);
    // The callback's closure runs (on the kingpin's thread) before the
    // reply's: the worker invokes it, then answers.
    app.command("hcallback any:b");
    assert_eq!(app.wait_for(|l| l.what == "callback" || l.what == "reply").rest, "called back");
    let reply = app.wait_for(|l| l.what == "reply");
    assert!(reply.rest.starts_with("hcallback ok"), "{}", reply.rest);
    // Waiting on the thread of the loop that would answer is refused, not
    // hung.
    app.command("hwait any:b");
    assert_eq!(app.wait_for(|l| l.what == "hwait").rest, "err waiting on the loop's own thread would never end");
}

fn no_route_is_an_immediate_error(exe: &str) {
    let mut app = start(exe, "a:1");
    let up = all_up(&app, 1);
    app.command("request any:nobody echo x1 60000");
    let l = app.wait_for(|l| l.what == "reply");
    assert_eq!(l.rest, "x1 err send: no worker matches the target");
    let me = up["a"][0];
    app.command(&format!("tell {me} request any:nobody echo x2 60000"));
    let l = app.wait_for(|l| report(l, "reply x2"));
    assert_eq!(l.rest, "report reply x2 err NoRoute");
    app.command(&format!("tell {me} request pid:1 echo x3 60000"));
    let l = app.wait_for(|l| report(l, "reply x3"));
    assert_eq!(l.rest, "report reply x3 err NoRoute");
}

fn require_proxies_call_exported_functions_only(exe: &str) {
    let mut app = start(exe, "a:1,b:2");
    let up = all_up(&app, 3);
    let me = up["a"][0];
    app.command(&format!("tell {me} request proxy:b whoami r1 2000"));
    let l = app.wait_for(|l| report(l, "reply r1"));
    let pid: u32 = l.rest.strip_prefix("report reply r1 ok ").unwrap().parse().unwrap();
    assert!(up["b"].contains(&pid));
    app.command(&format!("tell {me} request proxy:b secret r2 2000"));
    let l = app.wait_for(|l| report(l, "reply r2"));
    assert_eq!(l.rest, "report reply r2 err NotExported");
}

fn messages_queued_before_the_handshake_arrive_in_order(exe: &str) {
    let app = start(exe, "a:3");
    // The kingpin queues seq 0..4 for each worker as soon as it is spawned,
    // before its handshake.
    let mut seen: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    while seen.len() < 3 || seen.values().any(|v| v.len() < 5) {
        let l = app.wait_for(|l| report(l, "seq "));
        let n = l.rest.split(' ').nth(2).unwrap().to_string();
        seen.entry(l.pid).or_default().push(n);
    }
    for (pid, order) in seen {
        assert_eq!(order, ["0", "1", "2", "3", "4"], "worker {pid}");
    }
}

mob_tests::on_both_runtimes!(
    every_target_reaches_exactly_the_right_workers,
    any_of_a_role_spreads_over_every_worker_of_the_role,
    a_worker_request_to_another_worker_gets_its_reply,
    a_handler_that_exits_ends_the_request_as_peer_gone,
    a_handler_that_never_answers_ends_as_timed_out,
    application_threads_can_wait_on_requests,
    a_handle_request_passes_callbacks_and_cannot_wait_on_its_own_loop,
    no_route_is_an_immediate_error,
    require_proxies_call_exported_functions_only,
    messages_queued_before_the_handshake_arrive_in_order,
);
