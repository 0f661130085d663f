//! The control socket and the `mob` command against a running app
//! (on both runtimes): status lists every worker, resize, reload, stop and
//! kill do what they say, and another user is refused.

use mob_tests::{TestApp, alive, eventually};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_mob-cli");

/// A directory for one test's socket, that any user may search.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mob-control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod the scratch dir");
    dir
}

/// The app `exe` with a control socket; its socket path.
fn start(exe: &str, name: &str, roles: &str) -> (TestApp, PathBuf) {
    let runtime = Path::new(exe).file_name().and_then(|n| n.to_str()).unwrap_or("app");
    let socket = scratch(&format!("{name}-{runtime}")).join("ctl.sock");
    let app = TestApp::start(exe, roles, &[("MOB_TEST_CONTROL", socket.to_str().unwrap()), ("MOB_TEST_LOG", "1")]);
    (app, socket)
}

/// Waits for the app to be online; the ready pids by role.
fn online(app: &TestApp) -> BTreeMap<String, BTreeSet<u32>> {
    let mut ready: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    loop {
        let l = app.next();
        match l.what.as_str() {
            "ready" => {
                ready.entry(l.role).or_default().insert(l.pid);
            }
            "app-online" => return ready,
            _ => {}
        }
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn mob_as(cli: &str, uid: Option<u32>, socket: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(cli);
    cmd.arg("-s").arg(socket).args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    // A copy of the command just written may be busy for a moment: a child
    // another test's thread forked meanwhile holds the copy's write fd
    // until it execs (ETXTBSY). Trying again is the known cure.
    let mut tries = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => break result.expect("run the mob command"),
        }
    };
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mob(socket: &Path, args: &[&str]) -> Run {
    mob_as(CLI, None, socket, args)
}

/// `(role, slot, pid, state)` of each row of `mob status`.
fn status(socket: &Path) -> Vec<(String, u32, u32, String)> {
    let run = mob(socket, &["status"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut lines = run.stdout.lines();
    lines.next().expect("a header line");
    let columns = lines.next().expect("column names");
    assert!(columns.starts_with("ROLE"), "{columns}");
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 8)
        .map(|w| (w[0].to_string(), w[1].parse().unwrap(), w[2].parse().unwrap_or(0), w[3].to_string()))
        .collect()
}

fn ready_pids(socket: &Path, role: &str) -> BTreeSet<u32> {
    status(socket).into_iter().filter(|r| r.0 == role && r.3 == "ready").map(|r| r.2).collect()
}

fn status_lists_every_worker_with_its_pid(exe: &str) {
    let (app, socket) = start(exe, "status", "web:2,jobs:1");
    let pids = online(&app);
    let run = mob(&socket, &["status"]);
    assert!(run.stdout.starts_with(&format!("testapp  kingpin {}  up ", app.pid())), "{}", run.stdout);
    let rows = status(&socket);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (role, slot, pid, state) in &rows {
        assert!(pids[role].contains(pid), "{role}#{slot} {pid} not among {pids:?}");
        assert_eq!(state, "ready");
    }
    let slots: BTreeSet<(String, u32)> = rows.iter().map(|r| (r.0.clone(), r.1)).collect();
    assert_eq!(slots, [("jobs".into(), 0), ("web".into(), 0), ("web".into(), 1)].into());
    // The kingpin logged who asked what.
    app.wait_for(|l| l.what == "log" && l.rest.contains("asks Status"));
}

fn resize_changes_the_worker_count(exe: &str) {
    let (app, socket) = start(exe, "resize", "web:1");
    online(&app);
    let run = mob(&socket, &["resize", "web", "3"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "testapp: resized to 3 workers\n"), "{}", run.stderr);
    let mut ready = 0;
    while ready < 2 {
        ready += usize::from(app.next().what == "ready");
    }
    assert_eq!(ready_pids(&socket, "web").len(), 3);
    mob(&socket, &["resize", "web", "1"]);
    let mut exited = 0;
    while exited < 2 {
        exited += usize::from(app.next().what == "exited");
    }
    assert!(eventually(mob_tests::DEADLINE, || status(&socket).len() == 1), "{:?}", status(&socket));
    let run = mob(&socket, &["resize", "nope", "2"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("unknown role \"nope\""), "{}", run.stderr);
}

fn reload_replaces_every_worker(exe: &str) {
    let (app, socket) = start(exe, "reload", "web:2");
    let before = online(&app).remove("web").unwrap();
    let run = mob(&socket, &["reload", "web"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "testapp: reloading\n"), "{}", run.stderr);
    app.wait_for(|l| l.what == "reloaded" && l.role == "web");
    let after = ready_pids(&socket, "web");
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    assert!(eventually(mob_tests::DEADLINE, || before.iter().all(|p| !alive(*p))), "the old workers exit");
}

fn stop_waits_for_a_clean_exit_and_the_socket_goes(exe: &str) {
    let (mut app, socket) = start(exe, "stop", "web:2");
    let pids = online(&app).remove("web").unwrap();
    let run = mob(&socket, &["stop"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, format!("testapp: stopping (kingpin {})\ntestapp: stopped\n", app.pid()));
    // The command returned once the kingpin closed the connection: at exit.
    assert_eq!(app.wait_exit(), Some(0));
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(!socket.exists(), "the kingpin removes its socket");
}

fn kill_kills_every_worker_and_the_kingpin_exits(exe: &str) {
    let (mut app, socket) = start(exe, "kill", "web:2");
    let pids = online(&app).remove("web").unwrap();
    let run = mob(&socket, &["kill"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.ends_with("testapp: stopped\n"), "{}", run.stdout);
    app.wait_exit();
    assert!(pids.iter().all(|p| !alive(*p)));
}

fn another_user_is_refused(exe: &str) {
    const NOBODY: u32 = 65534;
    let (app, socket) = start(exe, "refused", "web:1");
    online(&app);
    // The command, where user nobody may run it.
    let cli = socket.with_file_name("mob");
    std::fs::copy(CLI, &cli).expect("copy the mob command");
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = cli.to_str().unwrap();
    // The socket is 0600, the kingpin's: nobody cannot even connect.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let run = mob_as(cli, Some(NOBODY), &socket, &["status"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    // Loosen the file (as a careless admin might): the kingpin still checks
    // who connects, closes the connection, and logs it.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = mob_as(cli, Some(NOBODY), &socket, &["status"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("closed the connection"), "{}", run.stderr);
    let logged = app.wait_for(|l| l.what == "log" && l.rest.contains("refused"));
    assert!(logged.rest.starts_with("WARN "), "{}", logged.rest);
    assert!(logged.rest.contains(&format!("uid {NOBODY}")), "{}", logged.rest);
    // The kingpin's own user still gets in.
    assert_eq!(status(&socket).len(), 1);
}

fn a_client_that_does_not_read_holds_up_no_one(exe: &str) {
    use mob_proto::control::{ControlClient, ControlCommand};
    use std::io::Write;
    let (app, socket) = start(exe, "unread", "web:1");
    online(&app);
    // Asks for far more than the socket buffers hold, and reads nothing.
    let mut greedy = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let mut client = ControlClient::new("greedy");
    for _ in 0..20_000 {
        client.request(&ControlCommand::Status).expect("a request");
    }
    greedy.write_all(&client.take_transmit()).expect("the requests go out");
    // Everyone else is still answered.
    let mut other = Command::new(CLI).arg("-s").arg(&socket).arg("status").spawn().expect("run the mob command");
    let answered = eventually(mob_tests::DEADLINE, || other.try_wait().ok().flatten().is_some());
    let _ = other.kill();
    assert!(answered, "the kingpin answers another client");
    assert_eq!(other.wait().ok().and_then(|s| s.code()), Some(0));
    // Past 8 MiB of unread replies, the kingpin closes the connection.
    let closed = (0..200).any(|_| {
        for _ in 0..5_000 {
            client.request(&ControlCommand::Status).expect("a request");
        }
        greedy.write_all(&client.take_transmit()).is_err()
    });
    assert!(closed, "the kingpin closes a connection that does not read");
    assert_eq!(status(&socket).len(), 1);
}

#[test]
fn without_a_socket_the_command_says_how_to_give_one() {
    let out = Command::new(CLI).arg("status").env_remove("MOB_CONTROL_SOCKET").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOB_CONTROL_SOCKET"));
    let out = Command::new(CLI).arg("status").env("MOB_CONTROL_SOCKET", "/nonexistent/ctl.sock").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ctl.sock"));
}

mob_tests::on_both_runtimes!(
    status_lists_every_worker_with_its_pid,
    resize_changes_the_worker_count,
    reload_replaces_every_worker,
    stop_waits_for_a_clean_exit_and_the_socket_goes,
    kill_kills_every_worker_and_the_kingpin_exits,
    another_user_is_refused,
    a_client_that_does_not_read_holds_up_no_one,
);
