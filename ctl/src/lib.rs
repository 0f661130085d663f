//! `mob-ctl`: the `mob` command, which talks to a running mob application
//! through its kingpin's control socket (`App::control_socket`), and the
//! small blocking [`Client`] it is built on.
//!
//! ```text
//! mob [-s PATH] status           every worker: role, slot, pid, state, uptime,
//!                                restarts, memory, requests in flight
//! mob [-s PATH] resize ROLE N    run N workers of ROLE
//! mob [-s PATH] reload ROLE      replace ROLE's workers one by one
//! mob [-s PATH] stop             soft kill; returns once the kingpin exited
//! mob [-s PATH] kill             hard kill; returns once the kingpin exited
//! ```
//!
//! The socket is `-s PATH` / `--socket PATH`, or else the environment
//! variable `MOB_CONTROL_SOCKET`. The protocol is `SPEC.md` section 16,
//! driven through `mob_proto::control::ControlClient`.
//!
//! ```no_run
//! use mob_ctl::Client;
//! use mob_proto::control::{ControlAnswer, ControlCommand};
//!
//! let mut client = Client::connect("/run/myapp.sock".as_ref())?;
//! if let Ok(ControlAnswer::Status(report)) = client.ask(ControlCommand::Status)? {
//!     print!("{}", mob_ctl::status_table(&report));
//! }
//! # Ok::<(), mob_ctl::CtlError>(())
//! ```
#![deny(missing_docs)]

use mob_proto::WorkerState;
use mob_proto::control::{
    ClientError, ClientEvent, ControlAnswer, ControlClient, ControlCommand, ControlError, ControlWelcome,
    ENV_CONTROL_SOCKET, StatusReport,
};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: mob [-s PATH | --socket PATH] COMMAND

commands:
  status          every worker: role, slot, pid, state, uptime, restarts, RSS, in-flight
  resize ROLE N   run N workers of ROLE (within its min and max)
  reload ROLE     replace ROLE's workers one by one, dropping no request
  stop            soft kill: workers finish what they have; waits for the kingpin to exit
  kill            hard kill: workers are killed now; waits for the kingpin to exit

The control socket is -s PATH, or $MOB_CONTROL_SOCKET.
";

/// What can go wrong talking to a kingpin.
#[derive(Debug)]
pub enum CtlError {
    /// The socket could not be reached, read or written.
    Io(PathBuf, std::io::Error),
    /// The kingpin closed the connection before answering (it refused this
    /// user, or it exited).
    Closed,
    /// The kingpin refused the handshake (another protocol version).
    Rejected(String),
    /// The kingpin's bytes made no sense.
    Protocol(ClientError),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            CtlError::Closed => f.write_str("the kingpin closed the connection (another user's kingpin, or it exited)"),
            CtlError::Rejected(why) => write!(f, "the kingpin refused us: {why}"),
            CtlError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CtlError {}

/// A blocking connection to a kingpin's control socket.
pub struct Client {
    path: PathBuf,
    sock: UnixStream,
    proto: ControlClient,
    /// The kingpin's welcome: its app name and pid.
    pub welcome: ControlWelcome,
}

impl Client {
    /// Connects and completes the handshake.
    pub fn connect(path: &Path) -> Result<Client, CtlError> {
        let io = |e| CtlError::Io(path.to_path_buf(), e);
        let sock = UnixStream::connect(path).map_err(io)?;
        let proto = ControlClient::new(concat!("mob ", env!("CARGO_PKG_VERSION")));
        let welcome = ControlWelcome { version: 0, app: String::new(), pid: 0 };
        let mut client = Client { path: path.to_path_buf(), sock, proto, welcome };
        client.flush()?;
        match client.next_event()? {
            Some(ClientEvent::Welcome(w)) => client.welcome = w,
            Some(ClientEvent::Rejected(r)) => return Err(CtlError::Rejected(r.reason)),
            Some(ClientEvent::Reply(_)) => return Err(CtlError::Protocol(ClientError::Unexpected(0))),
            None => return Err(CtlError::Closed),
        }
        Ok(client)
    }

    /// Sends `command` and waits for its answer.
    pub fn ask(&mut self, command: ControlCommand) -> Result<Result<ControlAnswer, ControlError>, CtlError> {
        let id = self.proto.request(&command).map_err(CtlError::Protocol)?;
        self.flush()?;
        loop {
            match self.next_event()? {
                Some(ClientEvent::Reply(r)) if r.id == id => return Ok(r.result),
                Some(_) => continue,
                None => return Err(CtlError::Closed),
            }
        }
    }

    /// Waits until the kingpin closes the connection (it exits).
    pub fn wait_closed(&mut self) -> Result<(), CtlError> {
        while self.next_event()?.is_some() {}
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CtlError> {
        let bytes = self.proto.take_transmit();
        self.sock.write_all(&bytes).map_err(|e| match e.kind() {
            // The kingpin closed before reading what we wrote (it refused us,
            // or it is exiting): the same as an end of stream.
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => CtlError::Closed,
            _ => CtlError::Io(self.path.clone(), e),
        })
    }

    /// The next thing the kingpin says; `None` at end of stream.
    fn next_event(&mut self) -> Result<Option<ClientEvent>, CtlError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(event) = self.proto.poll_event() {
                return Ok(Some(event));
            }
            let n = match self.sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A kingpin that exits with our connection open may reset it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(CtlError::Io(self.path.clone(), e)),
            };
            if n == 0 {
                return Ok(None);
            }
            self.proto.handle_read(&buf[..n]).map_err(CtlError::Protocol)?;
        }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The control socket.
    pub socket: Option<PathBuf>,
    /// The command.
    pub command: ControlCommand,
}

/// Parses the arguments (without the program name). `Err` holds the
/// message for the user.
///
/// ```
/// use mob_proto::control::ControlCommand;
///
/// let i = mob_ctl::parse(vec!["-s".into(), "/tmp/a.sock".into(), "resize".into(), "web".into(), "4".into()]).unwrap();
/// assert_eq!(i.command, ControlCommand::Resize { role: "web".into(), workers: 4 });
/// assert!(mob_ctl::parse(vec!["resize".into(), "web".into()]).is_err());
/// ```
pub fn parse(args: Vec<String>) -> Result<Invocation, String> {
    let mut socket = None;
    let mut words = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-s" | "--socket" => socket = Some(PathBuf::from(it.next().ok_or("-s needs a path")?)),
            _ if arg.starts_with("--socket=") => socket = Some(PathBuf::from(&arg["--socket=".len()..])),
            "-h" | "--help" | "help" => return Err(String::new()),
            _ => words.push(arg),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        ["status"] => ControlCommand::Status,
        ["resize", role, n] => {
            let workers = n.parse().map_err(|_| format!("resize: {n:?} is not a number of workers"))?;
            ControlCommand::Resize { role: role.to_string(), workers }
        }
        ["reload", role] => ControlCommand::Reload { role: role.to_string() },
        ["stop"] => ControlCommand::Stop,
        ["kill"] => ControlCommand::Kill,
        [] => return Err("no command".into()),
        [other, ..] => return Err(format!("{other}: unknown command, or wrong number of arguments")),
    };
    Ok(Invocation { socket, command })
}

/// Runs the `mob` command with `args` (without the program name).
pub fn main(args: Vec<String>) -> ExitCode {
    let invocation = match parse(args) {
        Ok(i) => i,
        Err(why) => {
            if why.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprint!("mob: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(socket) = invocation.socket.or_else(|| std::env::var_os(ENV_CONTROL_SOCKET).map(PathBuf::from)) else {
        eprint!("mob: no control socket: give -s PATH or set {ENV_CONTROL_SOCKET}\n\n{USAGE}");
        return ExitCode::from(2);
    };
    match run(&socket, invocation.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mob: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(socket: &Path, command: ControlCommand) -> Result<ExitCode, CtlError> {
    let mut client = Client::connect(socket)?;
    let (app, pid) = (client.welcome.app.clone(), client.welcome.pid);
    let waits = matches!(command, ControlCommand::Stop | ControlCommand::Kill);
    let answer = match client.ask(command)? {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("mob: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match answer {
        ControlAnswer::Status(report) => print!("{}", status_table(&report)),
        ControlAnswer::Resized { workers } => println!("{app}: resized to {workers} workers"),
        ControlAnswer::Reloading => println!("{app}: reloading"),
        ControlAnswer::Stopping => println!("{app}: stopping (kingpin {pid})"),
        ControlAnswer::Killing => println!("{app}: killing (kingpin {pid})"),
    }
    if waits {
        client.wait_closed()?;
        println!("{app}: stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// The status table, like `pm2 list`: a header line, then one row per
/// worker.
///
/// ```
/// use mob_proto::control::{RoleStatus, StatusReport, WorkerStatus};
/// use mob_proto::WorkerState;
///
/// let report = StatusReport {
///     app: "myapp".into(), pid: 100, uptime_ms: 65_000, shutting_down: false,
///     roles: vec![RoleStatus { name: "web".into(), workers: 1, failed: false, reloading: false }],
///     workers: vec![WorkerStatus {
///         role: "web".into(), slot: 0, pid: 101, state: WorkerState::Ready, uptime_ms: 64_000,
///         restarts: 0, rss_kib: 2048, in_flight: 3,
///     }],
/// };
/// let table = mob_ctl::status_table(&report);
/// assert!(table.starts_with("myapp  kingpin 100  up 1m 5s"));
/// assert!(table.contains("web   0     101  ready  1m 4s   0         2.0 MiB  3"));
/// ```
pub fn status_table(report: &StatusReport) -> String {
    let mut out = format!("{}  kingpin {}  up {}", report.app, report.pid, duration(report.uptime_ms));
    if report.shutting_down {
        out.push_str("  shutting down");
    }
    out.push('\n');
    let mut rows = vec![["ROLE", "SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "RSS", "IN-FLIGHT"].map(String::from)];
    for w in &report.workers {
        rows.push([
            w.role.clone(),
            w.slot.to_string(),
            if w.pid == 0 { "-".into() } else { w.pid.to_string() },
            state(w.state).into(),
            duration(w.uptime_ms),
            w.restarts.to_string(),
            memory(w.rss_kib),
            w.in_flight.to_string(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for role in &report.roles {
        let live = report.workers.iter().filter(|w| w.role == role.name && w.state != WorkerState::Exited).count();
        let mut notes = Vec::new();
        if role.failed {
            notes.push("failed");
        }
        if role.reloading {
            notes.push("reloading");
        }
        if live as u32 != role.workers && notes.is_empty() {
            notes.push("changing");
        }
        if !notes.is_empty() {
            out.push_str(&format!("{}: {} of {} workers, {}\n", role.name, live, role.workers, notes.join(", ")));
        }
    }
    out
}

fn state(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Spawning => "spawning",
        WorkerState::Connected => "connected",
        WorkerState::Ready => "ready",
        WorkerState::Busy => "busy",
        WorkerState::Draining => "draining",
        WorkerState::Exited => "exited",
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn memory(kib: u64) -> String {
    match kib {
        0 => "-".into(),
        k if k < 1024 => format!("{k} KiB"),
        k if k < 1024 * 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        k => format!("{:.1} GiB", k as f64 / (1024.0 * 1024.0)),
    }
}
