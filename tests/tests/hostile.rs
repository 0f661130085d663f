//! Hostile and broken peers with real processes, under each runtime's
//! kingpin: a worker that breaks the protocol loses its link with a typed
//! error and is replaced; everyone else carries on; nothing leaks; a peer
//! that stops reading cannot grow the kingpin's memory without bound. The
//! hostile worker (role `raw`) speaks the protocol by hand, so that it alone
//! writes on its channel (`mob_tests::test_app::raw`).

use mob_tests::{DEADLINE, TestApp, rss_kib};

fn start(exe: &str, roles: &str) -> TestApp {
    TestApp::start(exe, roles, &[])
}

/// The `raw` worker and the two `b` workers, once all are ready.
fn online(app: &TestApp) -> (u32, Vec<u32>) {
    let (mut a, mut b) = (None, Vec::new());
    while a.is_none() || b.len() < 2 {
        let l = app.wait_for(|l| l.what == "ready");
        if l.role == "raw" {
            a = Some(l.pid);
        } else {
            b.push(l.pid);
        }
    }
    (a.unwrap(), b)
}

fn fd_count(app: &mut TestApp) -> usize {
    app.command("fdcount");
    app.wait_for(|l| l.what == "fdcount").rest.trim().parse().unwrap()
}

/// Asks a `b` worker for an echo until one answers. New work for a worker
/// whose queue is full is refused with backpressure (SPEC 10.3): while a
/// flood fills a `b`'s queue, a request may be refused, and is asked again;
/// any other end fails the test, as does no answer within the deadline. (So
/// during a flood this shows that `b` is answered once there is room, not
/// that it is answered while the flood lasts: the kingpin keeps no share
/// of a worker's queue per sender.)
fn b_still_answers(app: &mut TestApp, tag: &str) {
    let start = std::time::Instant::now();
    loop {
        app.command(&format!("request any:b echo {tag} 5000"));
        let reply = app.wait_for(|l| l.what == "reply" && l.rest.starts_with(tag));
        if reply.rest == format!("{tag} err send: recipient's queue is full") {
            assert!(start.elapsed() < DEADLINE, "b's queue still full after {DEADLINE:?}");
            continue;
        }
        assert!(reply.rest.starts_with(&format!("{tag} ok {tag} from ")), "{}", reply.rest);
        return;
    }
}

fn each_kind_of_bad_input_closes_only_that_link_with_a_typed_error(exe: &str) {
    let cases = [
        ("garbage", "bad input from peer: malformed frame of kind 16: reserved header bytes are not zero"),
        ("claims-fd", "bad input from peer: frame claims 1 fds but 0 arrived with it"),
        ("stray-fd", "bad input from peer: 1 fds arrived that no frame claims"),
        ("unknown-kind", "bad input from peer: unknown frame kind 200"),
    ];
    // (A flood of valid frames is not bad input: see the test below.)
    let mut app = start(exe, "raw:1,b:2");
    let (mut a, b) = online(&app);
    b_still_answers(&mut app, "warmup");
    let before = fd_count(&mut app);
    for (kind, reason) in cases {
        app.command(&format!("send pid:{a} hostile {kind}"));
        let closed = app.wait_for(|l| l.what == "closed" && l.pid == a);
        assert_eq!(closed.rest, reason, "{kind}");
        app.wait_for(|l| l.what == "exited" && l.pid == a);
        let revived = app.wait_for(|l| l.what == "ready" && l.role == "raw");
        assert_ne!(revived.pid, a);
        a = revived.pid;
        b_still_answers(&mut app, kind);
    }
    // The stray fd and every other fd of the closed links were closed.
    assert_eq!(fd_count(&mut app), before);
    let _ = b;
}

fn a_wrong_protocol_version_is_rejected_naming_both_versions(exe: &str) {
    let mut app = TestApp::start(exe, "badversion:1,b:1", &[("MOB_TEST_CONTINUE", "1")]);
    // The kingpin's error names both versions; so does the Reject the worker
    // reads before the kingpin kills it.
    let mut seen = (false, false);
    while !(seen.0 && seen.1) {
        let raw = app.next_raw();
        if raw.starts_with("closed badversion") {
            assert!(raw.ends_with("protocol version mismatch: we speak 1, peer speaks 99"), "{raw}");
            seen.0 = true;
        }
        // The worker printed it: its line carries its prefix.
        if let Some((_, raw)) = raw.split_once("] ").filter(|(p, _)| p.starts_with("[badversion#0 "))
            && raw.starts_with("rejected badversion")
        {
            assert!(raw.ends_with("kingpin 1: worker speaks protocol 99, kingpin speaks 1"), "{raw}");
            seen.1 = true;
        }
    }
    b_still_answers(&mut app, "after");
}

fn a_peer_that_stops_reading_meets_backpressure_not_unbounded_memory(exe: &str) {
    let mut app = start(exe, "raw:1,b:2");
    let (a, _) = online(&app);
    let kingpin = app.pid();
    app.command(&format!("send pid:{a} stall x"));
    // 256 MiB for a worker that reads nothing.
    app.command(&format!("flood pid:{a} 16384 16384"));
    let done = app.wait_for(|l| l.what == "flood-done");
    let refused: usize = done.rest.split(' ').nth(1).unwrap().trim().parse().unwrap();
    assert!(refused > 0, "sends to a peer that reads nothing must meet backpressure: {}", done.rest);
    // The kingpin holds at most about its 8 MiB queue (plus what the kernel
    // buffers), not the 256 MiB it was asked to send.
    let rss = rss_kib(kingpin);
    assert!(rss < 64 * 1024, "kingpin RSS {rss} KiB");
    b_still_answers(&mut app, "meanwhile");
}

fn fds_for_a_peer_that_stops_reading_meet_backpressure_not_an_exhausted_fd_table(exe: &str) {
    let mut app = start(exe, "raw:1,b:2");
    let (a, _) = online(&app);
    let before = fd_count(&mut app);
    app.command(&format!("send pid:{a} stall x"));
    // 6,000 small messages, each with an fd, for a worker that reads nothing.
    app.command(&format!("fdflood pid:{a} 6000"));
    let done = app.wait_for(|l| l.what == "fdflood-done");
    let refused: usize = done.rest.split(' ').nth(1).unwrap().trim().parse().unwrap();
    assert!(refused > 0, "fds for a peer that reads nothing must meet backpressure: {}", done.rest);
    // The kingpin holds at most its queue's 2,048 (the kernel holds those
    // already written), not the 6,000 it was asked to send.
    let held = fd_count(&mut app) - before;
    assert!(held <= 2048, "the kingpin holds {held} more fds than before ({})", done.rest);
    b_still_answers(&mut app, "meanwhile");
}

fn a_worker_flooding_the_kingpin_does_not_starve_the_others(exe: &str) {
    let mut app = start(exe, "raw:1,b:2");
    let (a, _) = online(&app);
    let kingpin = app.pid();
    // 200,000 frames as fast as one worker can write them, routed to b.
    app.command(&format!("send pid:{a} hostile flood"));
    b_still_answers(&mut app, "during");
    b_still_answers(&mut app, "after");
    // The flooder is not punished for sending valid frames...
    app.command(&format!("request pid:{a} echo alive 20000"));
    let reply = app.wait_for(|l| l.what == "reply" && l.rest.starts_with("alive"));
    assert!(reply.rest.starts_with("alive ok alive from "), "{}", reply.rest);
    // ...and the kingpin's memory stays bounded by its queues.
    let rss = rss_kib(kingpin);
    assert!(rss < 64 * 1024, "kingpin RSS {rss} KiB");
}

mob_tests::on_both_runtimes!(
    each_kind_of_bad_input_closes_only_that_link_with_a_typed_error,
    a_wrong_protocol_version_is_rejected_naming_both_versions,
    a_peer_that_stops_reading_meets_backpressure_not_unbounded_memory,
    fds_for_a_peer_that_stops_reading_meet_backpressure_not_an_exhausted_fd_table,
    a_worker_flooding_the_kingpin_does_not_starve_the_others,
);
