//! Workers' stdout and stderr through the kingpin, with real processes:
//! prefixed line by line, bytes unchanged (a partial last line and binary
//! bytes included), passed through as is when the prefix is off, and a
//! worker that floods a stalled stderr is held back instead of growing the
//! kingpin's memory.

use mob_tests::{EMITTED_STDERR, SPEW_LINE, TestApp, eventually, rss_kib};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

/// Waits for the app to be online; the pid of the first worker of `role`.
fn online(app: &TestApp, role: &str) -> u32 {
    let mut pid = 0;
    loop {
        let l = app.next();
        match l.what.as_str() {
            "ready" if l.role == role && pid == 0 => pid = l.pid,
            "app-online" => return pid,
            _ => {}
        }
    }
}

/// Reads the kingpin's stderr to its end on a thread; the bytes.
fn collect(stderr: std::process::ChildStderr) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        BufReader::new(stderr).read_to_end(&mut all).ok();
        all
    })
}

fn output_is_prefixed_line_by_line_and_bytes_survive(exe: &str) {
    let (mut app, stderr) = TestApp::start_with_stderr(exe, "out:1", &[], Stdio::piped());
    let stderr = collect(stderr.expect("piped stderr"));
    let pid = online(&app, "out");
    app.command(&format!("send pid:{pid} emit x"));
    // The partial last line is flushed, with its prefix, when the pipe
    // closes: when the worker exits at the soft kill (which reaches it
    // after the `emit`, on the same link).
    app.command("stop");
    let lines = app.rest_bytes();
    assert_eq!(app.wait_exit(), Some(0));
    assert!(lines.iter().any(|l| l.ends_with(b"report emitted")), "{lines:?}");
    let prefix = format!("[out#0 {pid}] ").into_bytes();
    let with_prefix = |body: &[u8]| [prefix.as_slice(), body].concat();
    for expected in [&b"plain line"[..], b"bin \x00\x01\xff\xfe\r", b"partial tail"] {
        let want = with_prefix(expected);
        assert_eq!(
            lines.iter().filter(|l| **l == want).count(),
            1,
            "{:?} in {lines:?}",
            String::from_utf8_lossy(&want)
        );
    }
    // Nothing else from the worker; the kingpin's own lines are untouched.
    let from_worker = lines.iter().filter(|l| l.starts_with(b"[")).count();
    assert_eq!(from_worker, 3, "{lines:?}");
    let err = stderr.join().expect("stderr reader");
    let want = [prefix.as_slice(), EMITTED_STDERR].concat();
    assert!(err.windows(want.len()).any(|w| w == want), "{:?}", String::from_utf8_lossy(&err));
}

fn with_the_prefix_off_workers_write_to_the_kingpins_stdout_as_is(exe: &str) {
    let mut app = TestApp::start(exe, "out:1", &[("MOB_TEST_NO_PREFIX", "1")]);
    let pid = online(&app, "out");
    app.command(&format!("send pid:{pid} emit x"));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &Vec<u8>| l.as_slice() == b"bin \x00\x01\xff\xfe\r") {
        seen.push(app.next_bytes());
    }
    assert!(seen.iter().any(|l| l.as_slice() == b"plain line"), "{seen:?}");
    app.command("stop");
    let rest = app.rest_bytes();
    assert_eq!(app.wait_exit(), Some(0));
    // The partial line is the worker's, as written: no prefix, no newline
    // added (whatever the kingpin prints next may follow it on its line).
    assert!(rest.iter().any(|l| l.starts_with(b"partial tail")), "{rest:?}");
    assert!(!seen.iter().chain(&rest).any(|l| l.starts_with(b"[out#")), "no prefix anywhere");
}

/// Whether `pid` is blocked writing to a pipe.
fn blocked_in_pipe_write(pid: u32) -> bool {
    let task_dir = format!("/proc/{pid}/task");
    std::fs::read_dir(task_dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("pipe_write")))
}

fn a_worker_flooding_a_stalled_stderr_is_held_back_and_nothing_is_lost(exe: &str) {
    const MIB: usize = 64;
    let (mut app, stderr) = TestApp::start_with_stderr(exe, "out:1", &[], Stdio::piped());
    let stderr = stderr.expect("piped stderr");
    let pid = online(&app, "out");
    let kingpin = app.pid();
    let before = rss_kib(kingpin);
    // Nobody reads the kingpin's stderr: its pipe fills, then the
    // kingpin's buffers, then the worker blocks in write.
    app.command(&format!("send pid:{pid} spew {MIB}"));
    assert!(eventually(mob_tests::DEADLINE, || blocked_in_pipe_write(pid)), "the worker is never held back");
    // The kingpin itself is not blocked: it still answers.
    app.command("health");
    app.wait_for(|l| l.what == "health-end");
    let stalled = rss_kib(kingpin);
    assert!(stalled < before + 16 * 1024, "kingpin RSS grew from {before} KiB to {stalled} KiB");
    // Now read: all 64 MiB arrive, line by line, each prefixed, in order,
    // while the kingpin's memory stays flat.
    let prefix = format!("[out#0 {pid}] ").into_bytes();
    let reader = std::thread::spawn(move || {
        let mut lines = 0usize;
        let mut peak = 0u64;
        for line in BufReader::new(stderr).split(b'\n') {
            let line = line.expect("read stderr");
            if line == [prefix.as_slice(), b"spew-end"].concat() {
                return (lines, peak);
            }
            assert!(line.starts_with(&prefix), "{:?}", String::from_utf8_lossy(&line));
            assert_eq!(&line[prefix.len()..], &SPEW_LINE[..63]);
            lines += 1;
            if lines.is_multiple_of(65536) {
                peak = peak.max(rss_kib(kingpin));
            }
        }
        panic!("stderr ended before spew-end");
    });
    let (lines, peak) = reader.join().expect("the reader");
    assert_eq!(lines, MIB * (1 << 20) / SPEW_LINE.len());
    assert!(peak < before + 16 * 1024, "kingpin RSS grew from {before} KiB to {peak} KiB while draining");
    app.command("stop");
    assert_eq!(app.wait_exit(), Some(0));
}

mob_tests::on_both_runtimes!(
    output_is_prefixed_line_by_line_and_bytes_survive,
    with_the_prefix_off_workers_write_to_the_kingpins_stdout_as_is,
    a_worker_flooding_a_stalled_stderr_is_held_back_and_nothing_is_lost,
);
