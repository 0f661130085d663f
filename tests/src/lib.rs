//! Helpers for tests that run real mob processes: start the test application,
//! read its event lines with deadlines, and look at processes in `/proc`; and
//! the test application itself ([`test_app`]), which each runtime's test
//! binary is built from.

pub mod test_app;

pub mod orphans;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One event line printed by `mob-test-app`'s kingpin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The event: `spawned`, `up`, `exited`, `closed`, `message`.
    pub what: String,
    /// Role of the worker concerned.
    pub role: String,
    /// Its slot.
    pub slot: u32,
    /// Its pid.
    pub pid: u32,
    /// The rest of the line.
    pub rest: String,
}

/// A running `mob-test-app` kingpin, killed (with its workers) on drop.
pub struct TestApp {
    child: Child,
    lines: Receiver<Vec<u8>>,
    stdin: Option<ChildStdin>,
}

impl TestApp {
    /// Starts the test app binary `exe` (pass
    /// `env!("CARGO_BIN_EXE_mob-test-app")`) with `roles` (e.g.
    /// `"echo:4,idle:2"`) and extra environment.
    pub fn start(exe: &str, roles: &str, env: &[(&str, &str)]) -> TestApp {
        TestApp::start_with_stderr(exe, roles, env, Stdio::inherit()).0
    }

    /// [`TestApp::start`], with the kingpin's stderr going to `stderr`; if
    /// that is [`Stdio::piped`], its read end is returned for the test to
    /// read (or, to stall the kingpin's stderr, not to read).
    pub fn start_with_stderr(
        exe: &str,
        roles: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> (TestApp, Option<ChildStderr>) {
        let mut cmd = Command::new(exe);
        cmd.arg(roles).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        TestApp::spawn(cmd)
    }

    /// Starts `cmd`, which runs the test app (under `unshare`, say), with
    /// its stdin and stdout piped to the test.
    pub fn start_command(cmd: Command) -> TestApp {
        TestApp::spawn(cmd).0
    }

    /// Starts `cmd` with stdin and stdout piped to the test; its stderr
    /// read end too, if `cmd` pipes it.
    fn spawn(mut cmd: Command) -> (TestApp, Option<ChildStderr>) {
        cmd.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("start mob-test-app");
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Lines as bytes: workers' output may be any bytes.
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (TestApp { child, lines, stdin }, stderr)
    }

    /// Sends the kingpin one command line (see `mob-test-app`'s docs).
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("kingpin stdin");
        writeln!(stdin, "{line}").expect("write a command to the kingpin");
        stdin.flush().expect("flush the kingpin's stdin");
    }

    /// The kingpin's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next raw output line, failing the test after [`DEADLINE`].
    pub fn next_raw(&self) -> String {
        String::from_utf8_lossy(&self.next_bytes()).into_owned()
    }

    /// The next output line as bytes (without its newline), failing the
    /// test after [`DEADLINE`].
    pub fn next_bytes(&self) -> Vec<u8> {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(raw) => raw,
            Err(RecvTimeoutError::Timeout) => panic!("no output from the kingpin within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the kingpin's output ended"),
        }
    }

    /// Reads raw lines until one contains `needle`; returns it.
    pub fn wait_raw(&self, needle: &str) -> String {
        loop {
            let raw = self.next_raw();
            if raw.contains(needle) {
                return raw;
            }
        }
    }

    /// The next event line, failing the test after [`DEADLINE`].
    pub fn next(&self) -> Line {
        let started = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(raw) => {
                    let raw = String::from_utf8_lossy(&raw);
                    if std::env::var("MOB_TEST_TRACE").is_ok() {
                        eprintln!("< {raw}");
                    }
                    if let Some(line) = parse(&raw) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no event from the kingpin within {DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the kingpin's output ended"),
            }
        }
    }

    /// The next event line if one comes within `within`.
    pub fn try_next(&self, within: Duration) -> Option<Line> {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(raw) => {
                    if let Some(line) = parse(&String::from_utf8_lossy(&raw)) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("the kingpin's output ended"),
            }
        }
    }

    /// Reads lines until `pred` matches one, and returns it.
    pub fn wait_for(&self, mut pred: impl FnMut(&Line) -> bool) -> Line {
        loop {
            let line = self.next();
            if pred(&line) {
                return line;
            }
        }
    }

    /// Sends `sig` to the kingpin.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).expect("signal the kingpin");
    }

    /// Waits (at most [`DEADLINE`]) for the kingpin to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut status = None;
        let exited = eventually(DEADLINE, || {
            status = self.child.try_wait().expect("try_wait on the kingpin");
            status.is_some()
        });
        assert!(exited, "the kingpin did not exit within {DEADLINE:?}");
        status.and_then(|s| s.code())
    }

    /// Every remaining line, until the kingpin's output ends.
    pub fn rest(&self) -> Vec<Line> {
        self.rest_bytes().iter().filter_map(|raw| parse(&String::from_utf8_lossy(raw))).collect()
    }

    /// Every remaining output line as bytes (without newlines), until the
    /// kingpin's output ends.
    pub fn rest_bytes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(raw) = self.lines.recv_timeout(DEADLINE) {
            out.push(raw);
        }
        out
    }

    /// Sends SIGKILL to the kingpin and reaps it.
    pub fn kill_kingpin(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill_kingpin();
    }
}

fn parse(raw: &str) -> Option<Line> {
    let mut it = raw.splitn(5, ' ');
    let what = it.next()?.to_string();
    let role = it.next()?.to_string();
    let slot = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let rest = it.next().unwrap_or("").to_string();
    Some(Line { what, role, slot, pid, rest })
}

/// Children of `parent` that are zombies (exited, not reaped).
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") && ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// A process's resident memory in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs each named test once per runtime, as `on_mio::NAME` against
/// `mob-test-app` (mob-mio) and `on_std::NAME` against `mob-std-test-app`
/// (mob-std): the same application and command protocol on each. Each test
/// is a function taking the test app's path:
///
/// ```ignore
/// fn comes_up(exe: &str) {
///     let app = mob_tests::TestApp::start(exe, "a:2", &[]);
///     app.wait_for(|l| l.what == "up");
/// }
///
/// mob_tests::on_both_runtimes!(comes_up);
/// ```
///
/// `on_both_runtimes!(http_app: NAME, ...)` does the same with the seed's
/// HTTP app (the `myapp` / `myapp_std` example of each runtime: `mob-http-app`,
/// `mob-std-http-app`).
#[macro_export]
macro_rules! on_both_runtimes {
    (http_app: $($test:ident),* $(,)?) => {
        $crate::on_both_runtimes!(@apps "mob-http-app", "mob-std-http-app"; $($test),*);
    };
    (@apps $mio:literal, $std:literal; $($test:ident),*) => {
        mod on_mio {
            $(
                #[test]
                fn $test() {
                    super::$test(env!(concat!("CARGO_BIN_EXE_", $mio)))
                }
            )*
        }
        mod on_std {
            $(
                #[test]
                fn $test() {
                    super::$test(env!(concat!("CARGO_BIN_EXE_", $std)))
                }
            )*
        }
    };
    ($($test:ident),* $(,)?) => {
        $crate::on_both_runtimes!(@apps "mob-test-app", "mob-std-test-app"; $($test),*);
    };
}

/// Answers every connection `listener` accepts, on a thread of its own,
/// with one line: `hello from PID`.
pub fn answer_connections(listener: mob_sys::listen::Listener) {
    use mob_sys::listen::Listener;
    std::thread::spawn(move || {
        let line = format!("hello from {}\n", std::process::id());
        loop {
            let written = match &listener {
                Listener::Tcp(l) => l.accept().and_then(|(mut c, _)| c.write_all(line.as_bytes())),
                Listener::Unix(l) => l.accept().and_then(|(mut c, _)| c.write_all(line.as_bytes())),
            };
            if written.is_err() {
                std::thread::yield_now();
            }
        }
    });
}

/// The children of `pid` (from `/proc/PID/task/*/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    out
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next());
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

/// A process's command line as `ps` shows it (arguments joined by spaces).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls until `cond` holds or `within` passes; returns whether it held.
/// For conditions no event announces, such as a process disappearing.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// What the test apps' workers write when told `emit`: on stdout, a line,
/// a line of binary bytes, and a last line without a newline (flushed);
/// on stderr, one line.
pub const EMITTED_STDOUT: &[u8] = b"plain line\nbin \x00\x01\xff\xfe\r\npartial tail";
/// What the test apps' workers write on stderr when told `emit`.
pub const EMITTED_STDERR: &[u8] = b"on stderr\n";

/// A worker's side of `emit`: writes [`EMITTED_STDOUT`] and
/// [`EMITTED_STDERR`], and flushes both.
pub fn emit_output() {
    let mut out = std::io::stdout().lock();
    out.write_all(EMITTED_STDOUT).ok();
    out.flush().ok();
    let mut err = std::io::stderr().lock();
    err.write_all(EMITTED_STDERR).ok();
    err.flush().ok();
}

/// A line of [`spew_stderr`]'s: 63 bytes and a newline.
pub const SPEW_LINE: &[u8; 64] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";

/// A worker's side of `spew MIB`: writes MIB MiB of [`SPEW_LINE`]s to
/// stderr as fast as stderr takes them, then `spew-end`, on a thread of its
/// own (the worker keeps answering heartbeats while its writes block).
pub fn spew_stderr(mib: usize) {
    std::thread::spawn(move || {
        let mut err = std::io::stderr().lock();
        for _ in 0..mib * (1 << 20) / SPEW_LINE.len() {
            if err.write_all(SPEW_LINE).is_err() {
                return;
            }
        }
        err.write_all(b"spew-end\n").ok();
    });
}

/// A logger for the test apps (`MOB_TEST_LOG=1`): every record becomes an
/// event line `log _ 0 0 LEVEL MESSAGE` on stdout.
pub fn log_to_stdout() {
    struct Lines;
    impl log::Log for Lines {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let mut out = std::io::stdout().lock();
            writeln!(out, "log _ 0 0 {} {}", record.level(), record.args()).ok();
            out.flush().ok();
        }
        fn flush(&self) {}
    }
    static LINES: Lines = Lines;
    if log::set_logger(&LINES).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
