//! `mob-proto` embedded in a runtime that is neither of ours: the tokio
//! worker example (`examples/tokio-worker`) under a real kingpin of each
//! runtime, answering a request and passing fds both ways.

use mob_tests::TestApp;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn a_tokio_worker_answers_requests_and_passes_fds_both_ways(exe: &str) {
    let tokio_worker = env!("CARGO_BIN_EXE_mob-tokio-worker");
    let mut app = TestApp::start(exe, "foreign:1", &[("MOB_TEST_FOREIGN", tokio_worker)]);
    let pid = app.wait_for(|l| l.what == "up" && l.role == "foreign").pid;
    assert!(mob_tests::cmdline(pid).contains("foreign#0"), "the kingpin started the tokio worker");
    // The kingpin pings it on handshake: a message back.
    app.wait_for(|l| l.what == "message" && l.pid == pid && l.rest == format!("pong {pid}"));

    // A request, answered.
    app.command("request any:foreign echo hi 5000");
    let reply = app.wait_for(|l| l.what == "reply");
    assert_eq!(reply.rest, format!("hi ok hi from {pid}"));

    // A job carrying a socket: the worker writes on it and answers with a
    // pipe, which the kingpin reads.
    let expect = format!("answered on the socket by {pid} | streamed by {pid}");
    // Its fds before any job (none of a job's is open yet).
    let fds = open_fds(pid);
    app.command("sockjob foreign");
    let line = app.wait_for(|l| l.what == "sockjob");
    assert_eq!((line.pid, line.rest.as_str()), (pid, expect.as_str()));
    // Many more: the worker closes every fd it got or sent.
    for _ in 0..20 {
        app.command("sockjob foreign");
        let line = app.wait_for(|l| l.what == "sockjob");
        assert_eq!(line.rest, expect);
    }
    // The last reply's pipe is closed just after it is sent, which may be
    // a moment after the kingpin reported it.
    let settled = mob_tests::eventually(mob_tests::DEADLINE, || open_fds(pid) == fds);
    assert!(settled, "the tokio worker leaked fds: {} open, {fds} before", open_fds(pid));

    // Unknown requests get a failure, not silence.
    app.command("request any:foreign nosuch x 5000");
    let reply = app.wait_for(|l| l.what == "reply");
    assert!(reply.rest.starts_with("x err"), "{reply:?}");

    // A soft kill: Stop, and the worker exits cleanly.
    app.command("stop");
    let exited = app.wait_for(|l| l.what == "exited");
    assert_eq!((exited.pid, exited.rest.as_str()), (pid, "Code(0)"));
    assert_eq!(app.wait_exit(), Some(0));
}

mob_tests::on_both_runtimes!(a_tokio_worker_answers_requests_and_passes_fds_both_ways);
