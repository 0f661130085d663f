//! The application the real-process tests drive, as far as it does not
//! depend on the runtime: `mob-test-app` (on `mob-mio`) and
//! `mob-std-test-app` (on `mob-std`) are built from it, so every test runs
//! against both the same way.
//!
//! Usage: `mob-test-app ROLE:COUNT[,ROLE:COUNT...]`. Every role runs the
//! runtime's worker (each binary's own) except `garbage`, `badversion` and
//! roles starting with `raw`, whose workers speak the protocol by hand
//! ([`raw`]). The kingpin prints one line per event on stdout,
//! `WHAT ROLE SLOT PID [REST]`, and takes commands on stdin, one per line:
//!
//! - `send TARGET NAME TEXT`: a one-way message from the kingpin;
//! - `request TARGET NAME TEXT TIMEOUT_MS`: a request from the kingpin; its
//!   end is printed as `reply _ 0 0 TAG RESULT`, where TAG is the request's
//!   text; `wrequest` is the same, waited for on a thread of its own;
//! - `tell PID COMMAND`: asks worker PID to run COMMAND, which is `send ...`
//!   or `request ...` as above, from the worker; the worker reports results
//!   as messages named `report`.
//!
//! TARGET is `all`, `all+self`, `role:NAME`, `any:NAME`, `pid:N` or
//! `kingpin`; a worker's request may also go to `proxy:ROLE`, a call of the
//! role's exported function NAME through a `require` proxy. When a worker is
//! spawned the kingpin queues `seq 0..4` for it (before its handshake); when
//! it is up, the kingpin sends it `ping`.
//!
//! Worker messages: `ping` (answers `pong PID`), `seq` and `hello`
//! (reported), `boom` (panics), `busy`/`ready`, `alloc MB` (holds MB of
//! memory), `holdfd` (reports `holdfd INODE` of the fd it carries),
//! `orphans N` (double-forks N processes that become orphans and exit, and
//! reports `orphans PID...`), `emit` (writes test lines to stdout and
//! stderr, then reports `emitted`), `spew MIB` (writes MIB MiB of lines to
//! stderr on a thread of its own);
//! requests `echo` (answers `TEXT from PID`), `callback` (invokes its
//! first callback with `called back`, then acknowledges), `exit` (the process exits
//! without answering), `never` (kept unanswered), `drop` (dropped
//! unanswered); export `whoami` (answers the pid); jobs ([`Job`]) `sleep MS`
//! (answers `PID` after MS ms), `exit` (exits), `sock` (answers on the
//! connection it carries and returns a pipe with a stream), anything else
//! (answers `PID`).
//!
//! Roles whose name contains `crash` exit with code 3 at once, `clean` exit
//! with 0 at once; a name starting `transient` or `temporary` gets that
//! restart type; `explicit` roles are ready only when they say so; `conc1`
//! roles take one job at a time; roles starting with `foreign` run the
//! binary `MOB_TEST_FOREIGN` names (the same app on the other runtime).
//! `MOB_TEST_CONTINUE=1` keeps the app running when a role fails;
//! `MOB_TEST_GRACE_MS` sets the soft-kill grace, `MOB_TEST_MAX_RESTARTS` the
//! restart intensity, `MOB_TEST_NO_BACKOFF` removes the restart backoff,
//! `MOB_TEST_HEARTBEAT_MS=EVERY,TIMEOUT` turns heartbeats on,
//! `MOB_TEST_SPIN_US` sets how long event loops may poll before they sleep.
//! `MOB_TEST_SUBREAPER=1` makes the kingpin a subreaper, and it prints
//! `orphan _ 0 PID STATUS` for each orphan it reaps;
//! `MOB_TEST_LISTEN=ROLE=NAME` has ROLE listen on the socket systemd passed
//! as NAME, and workers of roles starting `listen` answer each connection
//! with `hello from PID`. `MOB_TEST_NO_PREFIX` turns the prefixing of
//! workers' output off; `MOB_TEST_LOG` prints mob's `log` records on
//! stdout; `MOB_TEST_CONTROL=PATH` opens a control socket.
//!
//! More kingpin commands: `enqueue ROLE TAG TEXT TIMEOUT_MS RETRIES` (prints
//! `job _ 0 PID TAG ok|err ...`), `jobs ROLE N TIMEOUT_MS RETRIES [TEXT]`
//! (prints `jobs-done OK FAILED`), `resize ROLE N`, `reload ROLE`, `health`
//! (prints `health ROLE SLOT PID STATE RSS INFLIGHT RESTARTS`), `fds TARGET
//! N` (N messages each with a pipe), `fdreq TARGET N TIMEOUT_MS` (N requests
//! each with a pipe, never answered), `flood TARGET N SIZE`, `fdflood
//! TARGET N` (N messages each with a pipe, sent from the kingpin's loop;
//! prints `fdflood-done OK REFUSED`), `sockjob ROLE`,
//! `broadcastfd ROLE`, `sharedfd TARGET N` (N messages sharing one pipe's
//! write end, into which each worker writes a byte; prints
//! `sharedfd-read SENT BYTES` at the pipe's end of file), `hcallback
//! TARGET` (a handle's request passing a callback), `hwait TARGET` (a
//! handle's wait on the kingpin's own thread), `fdcount`, `stop`, `kill`.
//!
//! The kingpin's side is written once, in `kingpin.rs` beside this file:
//! each binary includes it with its runtime as `rt` (it is not a module of
//! this library).

pub mod raw;

use mob_proto::{KingpinConfig, RequestError, Restart, RoleSpec, Source, Target};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// The target a command names.
pub fn target(spec: &str) -> Target {
    match spec.split_once(':') {
        Some(("role", r)) => Target::Role(r.into()),
        Some(("any", r)) => Target::Any(r.into()),
        Some(("pid", p)) => Target::Pid(p.parse().unwrap_or(0)),
        _ if spec == "all" => Target::All { include_sender: false },
        _ if spec == "all+self" => Target::All { include_sender: true },
        _ => Target::Kingpin,
    }
}

/// A message's sender as reports name it: `kingpin` or `pid:N`.
pub fn source(s: &Source) -> String {
    match s {
        Source::Kingpin => "kingpin".into(),
        Source::Worker { pid, .. } => format!("pid:{pid}"),
    }
}

/// Prints one event line, `WHAT ROLE SLOT PID REST`.
pub fn say(what: &str, role: &str, slot: u32, pid: u32, rest: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} {role} {slot} {pid} {rest}").ok();
    out.flush().ok();
}

/// The kingpin's settings the `MOB_TEST_*` environment asks for.
pub fn configure(c: &mut KingpinConfig) {
    if std::env::var("MOB_TEST_CONTINUE").is_ok() {
        c.on_role_failure = mob_proto::OnRoleFailure::Continue;
    }
    if std::env::var("MOB_TEST_NO_BACKOFF").is_ok() {
        c.backoff.initial = Duration::ZERO;
    }
    if let Some(ms) = std::env::var("MOB_TEST_GRACE_MS").ok().and_then(|v| v.parse().ok()) {
        c.shutdown_grace = Duration::from_millis(ms);
    }
    if let Some(us) = std::env::var("MOB_TEST_SPIN_US").ok().and_then(|v| v.parse().ok()) {
        c.spin = Duration::from_micros(us);
    }
    if let Some((every, timeout)) = std::env::var("MOB_TEST_HEARTBEAT_MS").ok().and_then(|v| {
        let (a, b) = v.split_once(',')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }) {
        c.heartbeat = Some((Duration::from_millis(every), Duration::from_millis(timeout)));
    }
}

/// Role `role` of `count` workers as its name asks (restart type,
/// readiness, concurrency) and the environment says (intensity).
pub fn role_spec(role: &str, count: u32) -> RoleSpec {
    let mut spec = RoleSpec::new(role, count);
    if role.starts_with("transient") {
        spec.restart = Restart::Transient;
    } else if role.starts_with("temporary") {
        spec.restart = Restart::Temporary;
    }
    spec.ready_on_connect = !role.contains("explicit");
    if let Some(n) = std::env::var("MOB_TEST_MAX_RESTARTS").ok().and_then(|v| v.parse().ok()) {
        spec.intensity.max_restarts = n;
    }
    if role.contains("conc1") {
        spec.concurrency = Some(1);
    }
    spec
}

/// What a worker does at its start, as its role's name asks: exit at once
/// (`crash` roles with code 3, `clean` ones with 0), or go on.
pub fn exit_if_asked(role: &str) {
    if role.contains("crash") {
        std::process::exit(3);
    }
    if role.contains("clean") {
        std::process::exit(0);
    }
}

/// A command a worker is told to run (`tell PID COMMAND`).
#[derive(Debug, PartialEq, Eq)]
pub enum Tell {
    /// `send TARGET NAME TEXT`: a one-way message.
    Send {
        /// Where.
        to: Target,
        /// Its name.
        name: String,
        /// Its text.
        text: String,
    },
    /// `request TARGET NAME TEXT TIMEOUT_MS`: a request, reported as `reply
    /// TEXT RESULT`; a TARGET `proxy:ROLE` calls ROLE's exported NAME.
    Request {
        /// Where, or `Err(role)` for a `require` proxy's call.
        to: Result<Target, String>,
        /// Its name.
        name: String,
        /// Its text, which tags the report.
        tag: String,
        /// How long it may take.
        timeout: Duration,
    },
    /// `fdmix TARGET N`: N one-way `fdmix` messages with fds
    /// ([`fdmix_message`]), sent in one go.
    FdMix {
        /// Where.
        to: Target,
        /// How many.
        n: usize,
    },
    /// Anything else.
    Bad(String),
}

impl Tell {
    /// The command `line` describes.
    pub fn parse(line: &str) -> Tell {
        let words: Vec<&str> = line.splitn(5, ' ').collect();
        match words.as_slice() {
            ["send", to, name, text] => Tell::Send { to: target(to), name: name.to_string(), text: text.to_string() },
            ["request", to, name, text, timeout] => Tell::Request {
                to: to.strip_prefix("proxy:").map_or_else(|| Ok(target(to)), |role| Err(role.to_string())),
                name: name.to_string(),
                tag: text.to_string(),
                timeout: Duration::from_millis(timeout.parse().unwrap_or(1000)),
            },
            ["fdmix", to, n] => Tell::FdMix { to: target(to), n: n.parse().unwrap_or(0) },
            _ => Tell::Bad(line.to_string()),
        }
    }
}

/// How a worker reports a request's end: `ok TEXT` with the reply's text,
/// or `err ERROR` (a request error as `Debug`, anything else in words).
pub fn request_end(result: Result<String, Result<RequestError, String>>) -> String {
    match result {
        Ok(text) => format!("ok {text}"),
        Err(Ok(e)) => format!("err {e:?}"),
        Err(Err(e)) => format!("err {e}"),
    }
}

/// What a job's text asks of the worker that takes it.
#[derive(Debug, PartialEq, Eq)]
pub enum Job {
    /// `sleep MS`: answer this worker's pid after MS milliseconds.
    Sleep(Duration),
    /// `exit`: exit without answering.
    Exit,
    /// `sock`: answer on the connection the job carries ([`answer_sock_job`]).
    Sock,
    /// Anything else: answer this worker's pid.
    Pid,
}

impl Job {
    /// The job `text` describes.
    pub fn parse(text: &str) -> Job {
        match text.split_once(' ') {
            Some(("sleep", ms)) => Job::Sleep(Duration::from_millis(ms.parse().unwrap_or(0))),
            _ if text == "exit" => Job::Exit,
            _ if text == "sock" => Job::Sock,
            _ => Job::Pid,
        }
    }
}

/// A `sock` job: writes a line on the connection among `fds` and returns a
/// pipe whose other end holds a line too, for the answer to carry back.
pub fn answer_sock_job(mut fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    let pid = std::process::id();
    if let Some(conn) = fds.pop() {
        let mut conn = std::os::unix::net::UnixStream::from(conn);
        writeln!(conn, "answered on the socket by {pid}").ok();
    }
    let (r, w) = nix::unistd::pipe().expect("pipe");
    std::fs::File::from(w).write_all(format!("streamed by {pid}\n").as_bytes()).ok();
    vec![r]
}

/// The inode of the file `fd` refers to (0 if there is none).
pub fn inode(fd: Option<impl AsFd>) -> u64 {
    fd.and_then(|fd| nix::sys::stat::fstat(fd).ok()).map_or(0, |st| st.st_ino)
}

/// How many fds the `fdmix` messages carry, in turn: none, a few, and the
/// most one frame may carry, so that writes that carry the fds of several
/// frames, and frames whose fds do not fit in the write before, both occur.
const FDMIX_FDS: [usize; 8] = [1, 0, 3, 1, 2, 0, 32, 1];

/// Sends an `fdmix` burst of `n` messages ([`fdmix_message`]) through
/// `send` (payload, fds), stopping at the first error, which it returns.
pub fn fdmix_send<E: std::fmt::Display>(
    n: usize,
    mut send: impl FnMut(&[u8], Vec<OwnedFd>) -> Result<(), E>,
) -> Result<(), String> {
    (0..n).try_for_each(|i| {
        let (payload, fds) = fdmix_message(i, n);
        send(&payload, fds).map_err(|e| e.to_string())
    })
}

/// Message `i` of `n` of an `fdmix` burst: its payload `i/n`, and its fds,
/// each the read end of a pipe that holds `i.j` (the write end closed).
pub fn fdmix_message(i: usize, n: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let fds = (0..FDMIX_FDS[i % FDMIX_FDS.len()])
        .map(|j| {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            nix::unistd::write(&w, format!("{i}.{j}").as_bytes()).expect("write into a new pipe");
            r
        })
        .collect();
    (format!("{i}/{n}").into_bytes(), fds)
}

/// What a worker that gets an `fdmix` burst has seen of it.
#[derive(Default)]
pub struct FdMixTally {
    got: usize,
}

impl FdMixTally {
    /// Checks one `fdmix` message; what to report, if anything: what is
    /// wrong with it, or after the burst's last message how many came right
    /// (`fdmix-bad WHY`, `fdmix-got COUNT`).
    pub fn take(&mut self, payload: &[u8], fds: &[OwnedFd]) -> Option<String> {
        match fdmix_check(payload, fds) {
            Ok((i, n)) => {
                self.got += 1;
                (i + 1 == n).then(|| format!("fdmix-got {}", self.got))
            }
            Err(why) => Some(format!("fdmix-bad {why}")),
        }
    }
}

/// Checks an `fdmix` message: `Ok((i, n))` if it carries exactly the fds
/// that message `i` was sent with, in order, or what is wrong with it.
fn fdmix_check(payload: &[u8], fds: &[OwnedFd]) -> Result<(usize, usize), String> {
    let text = String::from_utf8_lossy(payload);
    let (i, n) = text.split_once('/').ok_or_else(|| format!("payload {text:?}"))?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| text.to_string())?, n.parse().map_err(|_| text.to_string())?);
    let want = FDMIX_FDS[i % FDMIX_FDS.len()];
    if fds.len() != want {
        return Err(format!("message {i} came with {} fds, not {want}", fds.len()));
    }
    for (j, fd) in fds.iter().enumerate() {
        let mut buf = [0u8; 32];
        let got = nix::unistd::read(fd, &mut buf).map_err(|e| format!("message {i} fd {j}: {e}"))?;
        if buf[..got] != *format!("{i}.{j}").as_bytes() {
            return Err(format!("message {i} fd {j} holds {:?}", String::from_utf8_lossy(&buf[..got])));
        }
    }
    Ok((i, n))
}

/// Writes one byte into `fd` (a worker's `writefd` handler).
pub fn write_byte(fd: Option<&OwnedFd>) {
    if let Some(fd) = fd {
        let _ = nix::unistd::write(fd, b"x");
    }
}
