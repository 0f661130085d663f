//! The kingpin under systemd: socket activation through systemd's own
//! `systemd-socket-activate` (which passes sockets exactly as a `.socket`
//! unit does: fds from 3, `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`),
//! and `sd_notify` to a datagram socket the test binds and reads as systemd
//! would (`READY=1`, `STATUS=`, `STOPPING=1`, `WATCHDOG=1`).
//!
//! `.ci/run` installs Debian's `systemd` package when
//! `systemd-socket-activate` is missing: these tests do not skip.

use mob_tests::{DEADLINE, TestApp, eventually};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A fresh directory for this test's sockets.
fn scratch(test: &str, exe: &str) -> PathBuf {
    let runtime = Path::new(exe).file_name().and_then(|n| n.to_str()).unwrap_or("app");
    let dir = std::env::temp_dir().join(format!("mob-systemd-{test}-{runtime}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// `systemd-socket-activate` listening on `sockets` (`-l` addresses) named
/// `names`, which runs `program` with `env` once a connection comes.
fn socket_activate(sockets: &[&str], names: &str, env: &[(&str, &str)], program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("systemd-socket-activate");
    for socket in sockets {
        cmd.args(["-l", socket]);
    }
    cmd.arg(format!("--fdname={names}"));
    for (k, v) in env {
        cmd.arg(format!("--setenv={k}={v}"));
    }
    cmd.arg(program).args(args);
    cmd
}

/// Connects to `path` once something listens there (systemd-socket-activate
/// binds it just after it starts) and reads one line.
fn hello(path: &Path) -> String {
    let mut conn = None;
    assert!(eventually(DEADLINE, || {
        conn = UnixStream::connect(path).ok();
        conn.is_some()
    }));
    let conn = conn.expect("a connection");
    conn.set_read_timeout(Some(DEADLINE)).expect("a read timeout");
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).expect("an answer");
    line.trim().to_string()
}

/// The inodes of the sockets `pid` has open.
fn sockets_of(pid: u32) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.to_string_lossy().into_owned();
            if target.starts_with("socket:") {
                out.insert(target);
            }
        }
    }
    out
}

fn socket_at(pid: u32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("an open fd").to_string_lossy().into_owned()
}

/// The names of `pid`'s environment variables, as it was started with
/// (`/proc/PID/environ` does not show later `unsetenv`s).
fn env_names(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("a process environment");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn a_socket_passed_by_name_is_shared_with_its_role(exe: &str) {
    let dir = scratch("activation", exe);
    let (other, web) = (dir.join("other.sock"), dir.join("web.sock"));
    let cmd = socket_activate(
        &[other.to_str().unwrap(), web.to_str().unwrap()],
        "other:web",
        &[("MOB_TEST_LISTEN", "listen=web")],
        exe,
        &["listen:2,idle:1"],
    );
    let mut app = TestApp::start_command(cmd);
    // The first connection starts the app (which is the same process as
    // systemd-socket-activate: it execs); a worker of the role answers it
    // on the socket passed as "web" (fd 4), not "other" (fd 3).
    let first = hello(&web);
    let mut listening = BTreeSet::new();
    let mut idle = None;
    while listening.len() < 2 || idle.is_none() {
        let line = app.wait_for(|l| l.what == "up");
        match line.role.as_str() {
            "listen" => listening.insert(line.pid),
            _ => idle.replace(line.pid).is_none(),
        };
    }
    let pid_of = |line: &str| line.strip_prefix("hello from ").and_then(|p| p.parse::<u32>().ok());
    assert!(pid_of(&first).is_some_and(|p| listening.contains(&p)), "{first:?} not from {listening:?}");
    for _ in 0..10 {
        let answer = hello(&web);
        assert!(pid_of(&answer).is_some_and(|p| listening.contains(&p)), "{answer:?} not from {listening:?}");
    }

    // The passed sockets are close-on-exec and their variables unset: no
    // worker inherits them; the role's workers got "web" by message only.
    let kingpin = app.pid();
    let (other_sock, web_sock) = (socket_at(kingpin, 3), socket_at(kingpin, 4));
    let idle = idle.expect("the idle worker");
    assert!(!sockets_of(idle).contains(&other_sock) && !sockets_of(idle).contains(&web_sock));
    for &pid in listening.iter().chain([idle].iter()) {
        assert!(!sockets_of(pid).contains(&other_sock), "worker {pid} inherited a passed socket");
        let names = env_names(pid);
        assert!(!names.iter().any(|n| n.starts_with("LISTEN_")), "worker {pid} inherited {names:?}");
    }
    // A worker is up before the listener message reaches it, and the
    // connections above may all have gone to the other one.
    for &pid in &listening {
        let got = eventually(DEADLINE, || sockets_of(pid).contains(&web_sock));
        assert!(got, "worker {pid} did not get the web socket");
    }

    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// Every `KEY=VALUE` the manager got, datagram by datagram.
struct Manager {
    sock: UnixDatagram,
    got: Vec<Vec<String>>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let sock = UnixDatagram::bind(path).expect("bind the notification socket");
        sock.set_read_timeout(Some(DEADLINE)).expect("a read timeout");
        Manager { sock, got: Vec::new() }
    }

    /// Receives until a datagram has an assignment that `pred` accepts;
    /// returns that datagram.
    fn until(&mut self, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.sock.recv(&mut buf).expect("a notification within the deadline");
            let text = std::str::from_utf8(&buf[..n]).expect("UTF-8 notifications");
            let datagram: Vec<String> = text.lines().map(String::from).collect();
            self.got.push(datagram.clone());
            if datagram.iter().any(|kv| pred(kv)) {
                return datagram;
            }
        }
    }

    /// How many times `kv` was said.
    fn count(&self, kv: &str) -> usize {
        self.got.iter().flatten().filter(|k| *k == kv).count()
    }
}

fn notify_says_ready_status_stopping_and_pings_the_watchdog(exe: &str) {
    let dir = scratch("notify", exe);
    let path = dir.join("notify");
    let mut manager = Manager::bind(&path);
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")];
    let mut app = TestApp::start(exe, "a:2", &env);
    let workers: Vec<u32> = (0..2).map(|_| app.wait_for(|l| l.what == "up").pid).collect();

    // READY=1 when every role is online, with the status line.
    let ready = manager.until(|kv| kv == "READY=1");
    assert!(ready.contains(&"STATUS=2/2 workers up, 0 restarts".to_string()), "{ready:?}");
    assert_eq!(manager.count("STOPPING=1"), 0);
    // Watchdog pings (every 100 ms, half of WATCHDOG_USEC).
    manager.until(|kv| kv == "WATCHDOG=1");
    manager.until(|kv| kv == "WATCHDOG=1");

    // A worker dies and is revived: the status line follows.
    app.command(&format!("send pid:{} boom x", workers[0]));
    manager.until(|kv| kv == "STATUS=1/2 workers up, 1 restart");
    manager.until(|kv| kv == "STATUS=2/2 workers up, 1 restart");
    // No worker inherits the manager's socket or the watchdog's variables.
    let revived = app.wait_for(|l| l.what == "up").pid;
    for pid in [workers[1], revived] {
        let names = env_names(pid);
        assert!(!names.iter().any(|n| n == "NOTIFY_SOCKET" || n.starts_with("WATCHDOG_")), "{pid}: {names:?}");
    }

    // A soft kill: STOPPING=1, and the status says so.
    app.command("stop");
    let stopping = manager.until(|kv| kv == "STOPPING=1");
    assert!(stopping.iter().any(|kv| kv.starts_with("STATUS=stopping: ")), "{stopping:?}");
    assert_eq!(app.wait_exit(), Some(0));
    manager.sock.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.sock.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        manager.got.push(text.lines().map(String::from).collect());
    }
    assert_eq!(manager.count("READY=1"), 1, "{:?}", manager.got);
    assert_eq!(manager.count("STOPPING=1"), 1, "{:?}", manager.got);
    let _ = std::fs::remove_dir_all(dir);
}

mob_tests::on_both_runtimes!(
    a_socket_passed_by_name_is_shared_with_its_role,
    notify_says_ready_status_stopping_and_pings_the_watchdog,
);

#[test]
fn notify_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mob-notify-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
    sock.set_read_timeout(Some(DEADLINE)).expect("a read timeout");
    let mut manager = Manager { sock, got: Vec::new() };
    let mut app = TestApp::start(env!("CARGO_BIN_EXE_mob-test-app"), "a:1", &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    manager.until(|kv| kv == "READY=1");
    app.signal(Signal::SIGTERM);
    manager.until(|kv| kv == "STOPPING=1");
    assert_eq!(app.wait_exit(), Some(0));
    // No WATCHDOG_USEC: no pings.
    assert_eq!(manager.count("WATCHDOG=1"), 0);
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("its address").port()
}

#[test]
fn the_http_app_socket_activated_answers_from_a_front_worker() {
    for mode in ["shared", "distributed"] {
        http_app_socket_activated(mode);
    }
}

/// The HTTP app, socket-activated, in `mode` (`MYAPP_MODE`): every front
/// worker accepts on the passed socket, or the kingpin accepts on it and
/// hands out connections.
fn http_app_socket_activated(mode: &str) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // MYAPP_PORT is the same port: binding it again would fail, so the
    // answer shows the kingpin took the socket it was passed.
    let env = [("MYAPP_PORT", port.to_string()), ("MYAPP_MODE", mode.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cmd = socket_activate(&[&addr], "web", &env, env!("CARGO_BIN_EXE_mob-http-app"), &[]);
    let mut app = TestApp::start_command(cmd);
    let mut conn = None;
    assert!(eventually(DEADLINE, || {
        conn = std::net::TcpStream::connect(&addr).ok();
        conn.is_some()
    }));
    let mut conn = conn.expect("a connection");
    conn.set_read_timeout(Some(Duration::from_secs(20))).expect("a read timeout");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("a request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 200 OK") && response.ends_with("Hello World\n"), "{response}");
    let listening = app.wait_raw("listening on http://");
    assert!(listening.contains(&format!("http://{addr}/")), "{listening}");
    let served = app.wait_raw("served an http request.");
    // `[front#N PID] Server PID served an http request.` (worker output is
    // prefixed by the kingpin).
    let said = served.split_once("] ").map_or(served.as_str(), |(_, s)| s);
    let pid: u32 = said.split(' ').nth(1).and_then(|p| p.parse().ok()).expect("a server pid");
    assert_ne!(pid, app.pid(), "a front worker answered, not the kingpin");
    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(), Some(0));
}
