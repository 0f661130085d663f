//! The test application's kingpin, written once for both runtimes: each
//! binary includes this file with its runtime as `rt` (`use mob_mio as rt;`
//! or `use mob_std as rt;`) and hands [`main`] its worker. The command
//! protocol is in `mob_tests::test_app`'s docs.

use super::rt::{self, App, Error, Event, Handle, Kingpin, Target};
use mob_tests::test_app::{configure, raw, role_spec, say, target};
use std::cell::RefCell;
use std::io::BufRead;
use std::io::BufReader;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Runs the test app: the kingpin for the roles its first argument names,
/// or, re-executed by it, one of its workers (`worker` for every role
/// without a worker of its own).
pub fn main(worker: rt::Entry) -> ExitCode {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "echo:2".into());
    let mut app = App::new("testapp").configure(configure);
    // Roles starting `foreign` run the other runtime's test app (the same
    // command protocol) with the same arguments.
    let foreign = std::env::var_os("MOB_TEST_FOREIGN").filter(|_| !App::is_worker());
    for part in spec.split(',') {
        let (role, count) = part.split_once(':').unwrap_or((part, "1"));
        let count = count.parse().unwrap_or(1);
        if let Some(exe) = foreign.as_ref().filter(|_| role.starts_with("foreign")) {
            app = app.role_exe(role, count, exe, vec![spec.clone().into()]);
            continue;
        }
        let entry: rt::Entry = match role {
            "garbage" => garbage,
            "badversion" => bad_version,
            _ if role.starts_with("raw") => hostile,
            _ => worker,
        };
        app = app.role_spec(role_spec(role, count), entry);
    }
    // MOB_TEST_LISTEN=ROLE=NAME: ROLE listens on the socket systemd passed
    // as NAME.
    if let Some((role, name)) = std::env::var("MOB_TEST_LISTEN").ok().as_deref().and_then(|v| v.split_once('=')) {
        app = app.listen(role, rt::ListenAddr::Systemd(name.into()), rt::ListenMode::Shared);
    }
    if std::env::var("MOB_TEST_SUBREAPER").is_ok() {
        app = app.on_start(|k| k.reap_orphans().expect("become a subreaper"));
    }
    if std::env::var("MOB_TEST_NO_PREFIX").is_ok() {
        app = app.prefix_output(false);
    }
    if std::env::var("MOB_TEST_LOG").is_ok() {
        mob_tests::log_to_stdout();
    }
    // MOB_TEST_CONTROL=PATH: the kingpin listens for the `mob` command.
    if let Some(path) = std::env::var_os("MOB_TEST_CONTROL") {
        app = app.control_socket(path);
    }
    let mut reader_started = false;
    app.on_event(move |kingpin, event| {
        if !reader_started {
            reader_started = true;
            let handle = kingpin.handle();
            std::thread::spawn(move || read_commands(handle));
        }
        print_event(kingpin, event);
    })
    .run()
}

fn garbage(_mob: rt::Mobster) -> Result<(), Error> {
    raw::garbage()
}

fn bad_version(mob: rt::Mobster) -> Result<(), Error> {
    Ok(raw::bad_version(mob.role())?)
}

fn hostile(mob: rt::Mobster) -> Result<(), Error> {
    Ok(raw::hostile_worker(mob.role(), mob.slot())?)
}

/// Prints `event`; greets spawned workers with `seq` messages and workers
/// that are up with `ping`; answers requests.
fn print_event(kingpin: &mut Kingpin, event: Event) {
    match event {
        Event::WorkerSpawned(w) => {
            say("spawned", &w.role, w.slot, w.pid, "");
            for i in 0..5 {
                kingpin.send(Target::Pid(w.pid), "seq", &i.to_string()).ok();
            }
        }
        Event::WorkerUp(w) => {
            say("up", &w.role, w.slot, w.pid, "");
            kingpin.send(Target::Pid(w.pid), "ping", &w.pid.to_string()).ok();
        }
        Event::WorkerExited { worker: w, status, error } => {
            say("exited", &w.role, w.slot, w.pid, &format!("{status:?}"));
            if let Some(error) = error {
                say("error", &w.role, w.slot, w.pid, &error);
            }
        }
        Event::WorkerReady(w) => say("ready", &w.role, w.slot, w.pid, ""),
        Event::RoleOnline(role) => say("role-online", &role, 0, 0, ""),
        Event::AppOnline => say("app-online", "_", 0, 0, ""),
        Event::RoleFailed { role, last_error } => say("role-failed", &role, 0, 0, last_error.as_deref().unwrap_or("-")),
        Event::RoleReloaded(role) => say("reloaded", &role, 0, 0, ""),
        Event::LinkClosed(w, reason) => say("closed", &w.role, w.slot, w.pid, &reason.to_string()),
        Event::Message(m) => {
            let text: String = m.decode().unwrap_or_default();
            say("message", &m.from.role, m.from.slot, m.from.pid, &format!("{} {text}", m.name));
        }
        Event::Request(req) => {
            let text: String = req.decode().unwrap_or_default();
            let from = req.from.clone();
            say("request", &from.role, from.slot, from.pid, &format!("{} {text}", req.name));
            req.respond(&format!("kingpin got {text}")).ok();
        }
        Event::Undeliverable { from, to } => say("undeliverable", &from.role, from.slot, from.pid, &format!("{to:?}")),
        Event::OrphanReaped { pid, status } => say("orphan", "_", 0, pid, &format!("{status:?}")),
    }
}

/// A request's end as the kingpin prints it.
fn ended(result: Result<rt::Reply, Error>) -> String {
    match result {
        Ok(reply) => format!("ok {}", reply.decode::<String>().unwrap_or_default()),
        Err(e) => format!("err {e}"),
    }
}

/// Reads kingpin commands from stdin and carries them out through `handle`.
fn read_commands(handle: Handle) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("enqueue ") {
            let words: Vec<String> = rest.split(' ').map(String::from).collect();
            if let [role, tag, text @ .., timeout, retries] = words.as_slice() {
                let (role, tag, text) = (role.clone(), tag.clone(), text.join(" "));
                let (timeout, retries) = (timeout.parse().unwrap_or(0), retries.parse().unwrap_or(0));
                handle.with_kingpin(move |k| enqueue(k, &role, tag, text, timeout, retries)).ok();
            }
            continue;
        }
        let words: Vec<&str> = line.splitn(5, ' ').collect();
        match words.as_slice() {
            ["send", to, name, text] => {
                handle.send(target(to), name, &text.to_string()).ok();
            }
            ["request", to, name, text, timeout] => {
                let tag = text.to_string();
                let ms = timeout.parse().unwrap_or(1000);
                let started = handle.request(target(to), name, &tag).and_then(|r| {
                    let tag = tag.clone();
                    r.timeout(Duration::from_millis(ms))
                        .then(move |result| say("reply", "_", 0, 0, &format!("{tag} {}", ended(result))))
                });
                if let Err(e) = started {
                    say("reply", "_", 0, 0, &format!("{tag} err {e}"));
                }
            }
            ["wrequest", to, name, text, timeout] => {
                // The same as `request`, but blocking in a thread of its own:
                // `HandleRequest::wait`.
                let (to, name, tag) = (target(to), name.to_string(), text.to_string());
                let ms = timeout.parse().unwrap_or(1000);
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let result =
                        handle.request(to, &name, &tag).and_then(|r| r.timeout(Duration::from_millis(ms)).wait());
                    say("wreply", "_", 0, 0, &format!("{tag} {}", ended(result)));
                });
            }
            ["hcallback", to] => {
                // A request from a handle passing a callback: prints
                // `callback _ 0 0 TEXT` when it is invoked, then the reply.
                let started = handle.request(target(to), "callback", &()).and_then(|r| {
                    r.callback(|reply| say("callback", "_", 0, 0, &reply.decode::<String>().unwrap_or_default()))
                        .then(|result| say("reply", "_", 0, 0, &format!("hcallback {}", ended(result))))
                });
                if let Err(e) = started {
                    say("reply", "_", 0, 0, &format!("hcallback err {e}"));
                }
            }
            ["hwait", to] => {
                // A handle's blocking wait on the kingpin's own thread, which
                // the wait would block: prints `hwait _ 0 0 RESULT`.
                let (to, inner) = (target(to), handle.clone());
                let waited = move |_k: &mut Kingpin| {
                    let result = inner.request(to, "echo", &"here".to_string()).and_then(|r| r.wait());
                    say("hwait", "_", 0, 0, &ended(result));
                };
                handle.with_kingpin(waited).ok();
            }
            ["resize", role, n] => {
                let (role, n) = (role.to_string(), n.parse().unwrap_or(0));
                handle.with_kingpin(move |k| say("resized", &role, k.resize(&role, n).unwrap_or(0), 0, "")).ok();
            }
            ["reload", role] => {
                let role = role.to_string();
                handle.with_kingpin(move |k| say("reloading", &role, 0, 0, &k.reload(&role).to_string())).ok();
            }
            ["health"] => {
                handle.with_kingpin(print_health).ok();
            }
            ["fds", to, n] => {
                // n one-way messages, each carrying a fresh pipe end.
                for _ in 0..n.parse().unwrap_or(0) {
                    let (r, _w) = nix::unistd::pipe().expect("pipe");
                    handle.send_raw(target(to), "_", "fd", Vec::new(), vec![r]).ok();
                }
                say("fds-sent", "_", 0, 0, n);
            }
            ["fdflood", to, n] => {
                // n one-way messages from the kingpin's loop, each with a
                // fresh pipe end; prints `fdflood-done OK REFUSED`.
                let (to, n): (Target, usize) = (target(to), n.parse().unwrap_or(0));
                handle
                    .with_kingpin(move |k| {
                        let ok = (0..n)
                            .filter(|_| {
                                let (r, _w) = nix::unistd::pipe().expect("pipe");
                                k.send_raw(to.clone(), "_", "fd", &[], vec![r]).is_ok()
                            })
                            .count();
                        say("fdflood-done", "_", 0, 0, &format!("{ok} {}", n - ok));
                    })
                    .ok();
            }
            ["fdreq", to, n, timeout] => {
                fd_requests(&handle, target(to), n.parse().unwrap_or(0), timeout.parse().unwrap_or(100))
            }
            ["jobs", role, n, timeout, retries_and_text] => {
                // n jobs; prints `jobs-done OK FAILED` once every one ended.
                let n: usize = n.parse().unwrap_or(0);
                let (retries, text) = retries_and_text.split_once(' ').unwrap_or((retries_and_text, "hi"));
                let (timeout, retries) = (timeout.parse().unwrap_or(5000), retries.parse().unwrap_or(0));
                let (role, text) = (role.to_string(), text.to_string());
                handle.with_kingpin(move |k| jobs(k, &role, &text, n, Duration::from_millis(timeout), retries)).ok();
            }
            ["flood", to, n, size] => {
                // n one-way messages of `size` bytes from the kingpin.
                let (n, size): (usize, usize) = (n.parse().unwrap_or(0), size.parse().unwrap_or(0));
                let to = target(to);
                handle
                    .with_kingpin(move |k| {
                        let payload = vec![7u8; size];
                        let ok = (0..n)
                            .filter(|_| k.send_raw(to.clone(), "_", "flood", &payload, Vec::new()).is_ok())
                            .count();
                        say("flood-done", "_", 0, 0, &format!("{ok} {}", n - ok));
                    })
                    .ok();
            }
            ["sockjob", role] => {
                let role = role.to_string();
                handle.with_kingpin(move |k| sock_job(k, &role)).ok();
            }
            ["broadcastfd", role] => {
                // One pipe end, broadcast to every worker of `role`.
                let role = role.to_string();
                handle
                    .with_kingpin(move |k| {
                        let (r, _w) = nix::unistd::pipe().expect("pipe");
                        let ino = mob_tests::test_app::inode(Some(&r));
                        let n = k.broadcast(Some(&role), "_", "holdfd", &[], vec![r]);
                        say("broadcast", &role, 0, 0, &format!("{n} {ino}"));
                    })
                    .ok();
            }
            ["sharedfd", to, n] => {
                // n one-way messages sharing one pipe's write end; the
                // workers write a byte each into it. The pipe ends (EOF) once
                // every copy is closed: the workers', and the frames' the
                // kingpin held.
                let (to, n): (Target, usize) = (target(to), n.parse().unwrap_or(0));
                handle
                    .with_kingpin(move |k| {
                        let (r, w) = nix::unistd::pipe().expect("pipe");
                        let w = Arc::new(w);
                        let sent = (0..n).filter(|_| {
                            k.send_shared(to.clone(), "_", "writefd", &[], std::slice::from_ref(&w)).is_ok()
                        });
                        let sent = sent.count();
                        drop(w);
                        std::thread::spawn(move || {
                            let mut bytes = Vec::new();
                            let _ = std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut bytes);
                            say("sharedfd-read", "_", 0, 0, &format!("{sent} {}", bytes.len()));
                        });
                    })
                    .ok();
            }
            ["fdcount"] => {
                let count = || mob_sys::process::open_fd_count().unwrap_or(0).to_string();
                handle.with_kingpin(move |_k| say("fdcount", "_", 0, 0, &count())).ok();
            }
            ["stop"] => {
                handle.with_kingpin(|k| k.stop()).ok();
            }
            ["kill"] => {
                handle.with_kingpin(|k| k.kill()).ok();
            }
            ["tell", pid, rest @ ..] => {
                handle.send(Target::Pid(pid.parse().unwrap_or(0)), "do", &rest.join(" ")).ok();
            }
            _ => say("bad-command", "_", 0, 0, &line),
        }
    }
}

/// Prints every worker's health, then `health-end`.
fn print_health(k: &mut Kingpin) {
    for h in k.health() {
        let rest = format!("{:?} {} {} {}", h.state, h.rss_kib, h.in_flight, h.restarts);
        say("health", &h.role, h.slot, h.pid, &rest);
    }
    say("health-end", "_", 0, 0, "");
}

/// `n` requests, each carrying a pipe end, to a handler that never answers:
/// each ends at its timeout. Prints `fdreq-done TIMED_OUT` once all ended.
fn fd_requests(handle: &Handle, to: Target, n: usize, timeout_ms: u64) {
    let left = Arc::new(AtomicUsize::new(n));
    let timed_out = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let (left, timed_out) = (left.clone(), timed_out.clone());
        let built = handle.request(to.clone(), "never", &String::new());
        let started = built.and_then(|q| {
            q.fd(r).timeout(Duration::from_millis(timeout_ms)).then(move |result| {
                if matches!(result, Err(Error::Request(rt::RequestError::TimedOut))) {
                    timed_out.fetch_add(1, Ordering::SeqCst);
                }
                if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    say("fdreq-done", "_", 0, 0, &timed_out.load(Ordering::SeqCst).to_string());
                }
            })
        });
        if started.is_err() {
            say("fdreq-error", "_", 0, 0, "");
        }
    }
}

/// `n` jobs for `role`; prints `jobs-done OK FAILED` once every one ended.
fn jobs(k: &mut Kingpin, role: &str, text: &str, n: usize, timeout: Duration, retries: u32) {
    let tally = Rc::new(RefCell::new((0usize, 0usize)));
    for _ in 0..n {
        let tally = tally.clone();
        let queued = k.enqueue(role, text).and_then(|j| {
            j.timeout(timeout).retries(retries).then(move |_k, outcome| {
                let mut t = tally.borrow_mut();
                if outcome.is_ok() {
                    t.0 += 1
                } else {
                    t.1 += 1
                }
                if t.0 + t.1 == n {
                    say("jobs-done", "_", 0, 0, &format!("{} {}", t.0, t.1));
                }
            })
        });
        if queued.is_err() {
            say("jobs-error", "_", 0, 0, "");
        }
    }
}

/// Queues a job and prints its end.
fn enqueue(k: &mut Kingpin, role: &str, tag: String, text: String, timeout_ms: u64, retries: u32) {
    let built = k.enqueue(role, &text).map(|b| {
        let b = b.retries(retries);
        if timeout_ms > 0 { b.timeout(Duration::from_millis(timeout_ms)) } else { b }
    });
    let done_tag = tag.clone();
    let started = built.and_then(|b| {
        b.then(move |_k, outcome| match outcome {
            Ok(r) => {
                let text: String = r.decode().unwrap_or_default();
                say("job", &r.worker.role, r.worker.slot, r.worker.pid, &format!("{done_tag} ok {text}"));
            }
            Err(e) => say("job", "_", 0, 0, &format!("{done_tag} err {e:?}")),
        })
    });
    if let Err(e) = started {
        say("job", "_", 0, 0, &format!("{tag} err {e}"));
    }
}

/// A job that carries one end of a socketpair: the worker answers on it and
/// returns a pipe with a stream (a `sock` job). Prints `sockjob ROLE SLOT
/// PID ON_SOCKET | STREAMED`.
fn sock_job(k: &mut Kingpin, role: &str) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let queued = k.enqueue(role, &"sock".to_string()).and_then(|j| {
        j.fd(theirs).then(move |_k, outcome| match outcome {
            Ok(mut r) => {
                let mut on_socket = String::new();
                BufReader::new(&ours).read_line(&mut on_socket).ok();
                let mut streamed = String::new();
                if let Some(fd) = r.fds.pop() {
                    BufReader::new(std::fs::File::from(fd)).read_line(&mut streamed).ok();
                }
                let rest = format!("{} | {}", on_socket.trim(), streamed.trim());
                say("sockjob", &r.worker.role, r.worker.slot, r.worker.pid, &rest);
            }
            Err(e) => say("sockjob", "_", 0, 0, &format!("err {e}")),
        })
    });
    if let Err(e) = queued {
        say("sockjob", "_", 0, 0, &format!("err {e}"));
    }
}
