//! The application the integration tests drive.
//!
//! Usage: `mob-test-app ROLE:COUNT[,ROLE:COUNT...]`. Every role runs the same
//! worker (below) except `garbage`, which writes bytes that are not a mob
//! frame. The kingpin prints one line per event on stdout,
//! `WHAT ROLE SLOT PID [REST]`, and takes commands on stdin, one per line:
//!
//! - `send TARGET NAME TEXT`: a one-way message from the kingpin;
//! - `request TARGET NAME TEXT TIMEOUT_MS`: a request from the kingpin; its
//!   end is printed as `reply _ 0 0 TAG RESULT`, where TAG is the request's
//!   text;
//! - `tell PID COMMAND`: asks worker PID to run COMMAND, which is `send ...`
//!   or `request ...` as above, from the worker; the worker reports results
//!   as messages named `report`.
//!
//! TARGET is `all`, `all+self`, `role:NAME`, `any:NAME`, `pid:N` or
//! `kingpin`; a worker's request may also go to `proxy:ROLE`, a call of the
//! role's exported function NAME through a `require` proxy. When a worker is spawned the kingpin queues `seq 0..4` for it
//! (before its handshake); when it is up, the kingpin sends it `ping`.
//!
//! Worker handlers: messages `ping` (answers `pong PID`), `seq` and `hello`
//! (reported), `boom` (panics), `busy`/`ready`, `alloc MB` (holds MB of
//! memory), `orphans N` (double-forks N processes that become orphans and
//! exit, and reports `orphans PID...`); requests `echo` (answers `TEXT from PID`), `exit` (the process
//! exits without answering), `never` (kept unanswered), `drop` (dropped
//! unanswered); export `whoami` (answers the pid); jobs `sleep MS` (answers
//! `PID` after MS ms), `exit` (exits), anything else (answers `PID`).
//!
//! Roles whose name contains `crash` exit with code 3 at once, `clean` exit
//! with 0 at once; a name starting `transient` or `temporary` gets that
//! restart type; `explicit` roles are ready only when they say so;
//! `conc1` roles take one job at a time; roles starting with `foreign` run
//! the binary `MOB_TEST_FOREIGN` names (`mob-std-test-app`, the same app on
//! the other runtime). `MOB_TEST_CONTINUE=1` keeps the app
//! running when a role fails; `MOB_TEST_GRACE_MS` sets the soft-kill grace;
//! `MOB_TEST_SUBREAPER=1` makes the kingpin a subreaper, and it prints
//! `orphan _ 0 PID STATUS` for each orphan it reaps; `MOB_TEST_LISTEN=ROLE=NAME`
//! has ROLE listen on the socket systemd passed as NAME, and workers of
//! roles starting `listen` answer each connection with `hello from PID`.
//!
//! More kingpin commands: `enqueue ROLE TAG TEXT TIMEOUT_MS RETRIES` (prints
//! `job _ 0 PID TAG ok|err ...`), `resize ROLE N`, `reload ROLE`, `health`
//! (prints `health ROLE SLOT PID STATE RSS INFLIGHT RESTARTS`), `stop`,
//! `kill`.

use mob_mio::{App, Error, Event, Handle, Mobster, Outcome, Request, Source, Target};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

fn target(spec: &str) -> Target {
    match spec.split_once(':') {
        Some(("role", r)) => Target::Role(r.into()),
        Some(("any", r)) => Target::Any(r.into()),
        Some(("pid", p)) => Target::Pid(p.parse().unwrap_or(0)),
        _ if spec == "all" => Target::All { include_sender: false },
        _ if spec == "all+self" => Target::All { include_sender: true },
        _ => Target::Kingpin,
    }
}

fn source(s: &Source) -> String {
    match s {
        Source::Kingpin => "kingpin".into(),
        Source::Worker { pid, .. } => format!("pid:{pid}"),
    }
}

fn outcome(o: Outcome) -> String {
    match o {
        Ok(reply) => format!("ok {}", reply.decode::<String>().unwrap_or_default()),
        Err(e) => format!("err {e:?}"),
    }
}

fn report(mob: &mut Mobster, text: String) {
    mob.send(Target::Kingpin, "report", &text).ok();
}

/// Runs a `send` or `request` command line from `mob`.
fn run_command(mob: &mut Mobster, line: &str) {
    let words: Vec<&str> = line.splitn(5, ' ').collect();
    match words.as_slice() {
        ["send", to, name, text] => {
            if let Err(e) = mob.send(target(to), name, &text.to_string()) {
                report(mob, format!("send-error {e}"));
            }
        }
        ["request", to, name, text, timeout] => {
            let tag = text.to_string();
            let ms = timeout.parse().unwrap_or(1000);
            let result = match to.strip_prefix("proxy:") {
                Some(role) => mob.require(role).call(mob, name, &()),
                None => mob.request(target(to), name, &tag),
            };
            let started = result.and_then(|r| {
                r.timeout(Duration::from_millis(ms))
                    .then(move |mob, o| report(mob, format!("reply {tag} {}", outcome(o))))
            });
            if let Err(e) = started {
                report(mob, format!("request-error {e}"));
            }
        }
        _ => report(mob, format!("bad-command {line}")),
    }
}

fn worker(mut mob: Mobster) -> Result<(), Error> {
    if mob.role().contains("crash") {
        std::process::exit(3);
    }
    if mob.role().contains("clean") {
        std::process::exit(0);
    }
    mob.on("boom", |_mob, _msg| panic!("boom in the handler"));
    mob.on("holdfd", |mob, msg| {
        // Reports which file the fd it got refers to.
        let ino = msg.fds.first().and_then(|fd| nix::sys::stat::fstat(fd).ok()).map_or(0, |st| st.st_ino);
        report(mob, format!("holdfd {ino}"));
    });
    mob.on("hostile", |_mob, msg| hostile(&msg.decode::<String>().unwrap_or_default()));
    mob.on("stall", |_mob, _msg| {
        loop {
            // Stop reading for good: the kingpin's queue for us fills up.
            std::thread::park();
        }
    });
    mob.on("orphans", |mob, msg| {
        let n = msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let pids: Vec<String> = mob_tests::orphans::make_orphans(n).iter().map(u32::to_string).collect();
        report(mob, format!("orphans {}", pids.join(" ")));
    });
    mob.on("emit", |mob, _msg| {
        mob_tests::emit_output();
        report(mob, "emitted".into());
    });
    mob.on("spew", |_mob, msg| {
        mob_tests::spew_stderr(msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(1));
    });
    mob.on("busy", |mob, _msg| {
        mob.busy().ok();
    });
    mob.on("ready", |mob, _msg| {
        mob.ready().ok();
    });
    let hoard: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    mob.on("alloc", move |_mob, msg| {
        let mb: usize = msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        hoard.borrow_mut().push(vec![1u8; mb << 20]);
    });
    mob.on_job(|_mob, mut job| {
        let text: String = job.decode().unwrap_or_default();
        let pid = std::process::id().to_string();
        match text.split_once(' ') {
            Some(("sleep", ms)) => {
                let ms = ms.parse().unwrap_or(0);
                let responder = job.into_responder();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    responder.respond(&pid).ok();
                });
            }
            _ if text == "exit" => std::process::exit(4),
            // The job carries a connection: answer on it, and hand back a
            // pipe for a stream.
            _ if text == "sock" => {
                let mut fds = job.fds.drain(..).collect::<Vec<_>>();
                if let Some(conn) = fds.pop() {
                    let mut conn = std::os::unix::net::UnixStream::from(conn);
                    writeln!(conn, "answered on the socket by {pid}").ok();
                }
                let (r, w) = nix::unistd::pipe().expect("pipe");
                std::fs::File::from(w).write_all(format!("streamed by {pid}\n").as_bytes()).ok();
                job.respond_raw(postcard::to_allocvec(&pid).unwrap_or_default(), vec![r]).ok();
            }
            _ => {
                job.respond(&pid).ok();
            }
        }
    });

    mob.export("whoami", |_mob, req| {
        req.respond(&std::process::id().to_string()).ok();
    })?;
    // After the exports: this runs the loop until the listener arrives.
    if mob.role().starts_with("listen") {
        mob_tests::answer_connections(mob.listener()?);
    }
    mob.on("ping", |mob, msg| {
        let text: String = msg.decode().unwrap_or_default();
        mob.send(Target::Kingpin, "pong", &text).ok();
    });
    for name in ["seq", "hello"] {
        mob.on(name, move |mob, msg| {
            let text: String = msg.decode().unwrap_or_default();
            report(mob, format!("{name} {text} from {}", source(&msg.from)));
        });
    }
    mob.on("do", |mob, msg| {
        let line: String = msg.decode().unwrap_or_default();
        run_command(mob, &line);
    });
    mob.on_request("echo", |_mob, req| {
        let text: String = req.decode().unwrap_or_default();
        req.respond(&format!("{text} from {}", std::process::id())).ok();
    });
    mob.on_request("exit", |_mob, _req| std::process::exit(3));
    let kept: Rc<RefCell<Vec<Request<Source>>>> = Rc::default();
    mob.on_request("never", move |_mob, req| kept.borrow_mut().push(req));
    mob.on_request("drop", |_mob, req| drop(req));
    mob.run()
}

/// Writes bytes that break the protocol straight onto our channel (the
/// worker's own queue is empty while a handler runs).
fn hostile(kind: &str) {
    use mob_proto::frame::{Header, encode_frame};
    use mob_proto::wire::{Kind, Send, Target as T};
    // SAFETY: our channel stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(mob_sys::CHANNEL_FD) };
    let send = Send { to: T::Kingpin, ns: "_", name: "x" };
    let frame = encode_frame(Kind::Send as u8, &send, b"payload", 0, 1 << 20).expect("a frame");
    let (r, _w) = nix::unistd::pipe().expect("pipe");
    use std::os::fd::AsRawFd;
    let result = match kind {
        // A header whose reserved bytes are not zero.
        "garbage" => mob_sys::channel::send_with_fds(&fd, &[3, 0, 0, 0, 16, 0, 0xde, 0xad, 1, 2, 3], &[]),
        // A frame that claims an fd it does not carry.
        "claims-fd" => {
            let mut f = frame.clone();
            let header = Header { len: (f.len() - 8) as u32, kind: Kind::Send as u8, fds: 1 }.encode();
            f[..8].copy_from_slice(&header);
            mob_sys::channel::send_with_fds(&fd, &f, &[])
        }
        // An fd in the middle of a frame, claimed by nothing.
        "stray-fd" => mob_sys::channel::send_with_fds(&fd, &frame[..10], &[])
            .and_then(|_| mob_sys::channel::send_with_fds(&fd, &frame[10..], &[r.as_raw_fd()])),
        // A flood: many valid frames as fast as we can write them.
        "flood" => {
            let send = Send { to: T::Role("b".into()), ns: "_", name: "flooded" };
            let one = encode_frame(Kind::Send as u8, &send, &[0u8; 64], 0, 1 << 20).expect("a frame");
            let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
            mob_sys::channel::set_nonblocking(&fd, false).ok();
            let mut sent = Ok(0);
            for _ in 0..200 {
                sent = mob_sys::channel::send_with_fds(&fd, &batch, &[]).map(|_| 0);
            }
            mob_sys::channel::set_nonblocking(&fd, true).ok();
            sent
        }
        // An unknown frame kind.
        "unknown-kind" => mob_sys::channel::send_with_fds(&fd, &Header { len: 0, kind: 200, fds: 0 }.encode(), &[]),
        _ => Ok(0),
    };
    result.ok();
}

/// A worker that speaks protocol 99: it says hello by hand and reports the
/// kingpin's answer.
fn bad_version(_mob: Mobster) -> Result<(), Error> {
    use mob_proto::frame::{Decoder, encode_frame};
    use mob_proto::wire::{Hello, Kind, MAGIC, Message};
    // SAFETY: our channel stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(mob_sys::CHANNEL_FD) };
    mob_sys::channel::set_nonblocking(&fd, false)?;
    let hello = Hello {
        magic: MAGIC,
        version: 99,
        pid: std::process::id(),
        role: "badversion".into(),
        slot: 0,
        exports: vec![],
    };
    let frame = encode_frame(Kind::Hello as u8, &hello, &[], 0, 1 << 20).expect("a hello");
    mob_sys::channel::send_with_fds(&fd, &frame, &[])?;
    let mut dec = Decoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = Vec::new();
        let n = mob_sys::channel::recv_with_fds(&fd, &mut buf, &mut fds).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        dec.handle_read(&buf[..n], Vec::new());
        if let Ok(Some(f)) = dec.decode() {
            if let Ok(Message::Reject(r)) = Message::parse_owned(f) {
                println!("rejected badversion 0 {} kingpin {}: {}", std::process::id(), r.version, r.reason);
            }
            return Ok(());
        }
    }
}

fn garbage(_mob: Mobster) -> Result<(), Error> {
    // Write straight onto the channel, bypassing the protocol: a header that
    // claims a 4 GiB body.
    // SAFETY: a second handle to our channel, used for one write and never
    // closed, so the real one stays valid.
    let mut raw =
        std::mem::ManuallyDrop::new(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(mob_sys::CHANNEL_FD) }));
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0]).ok();
    loop {
        std::thread::park();
    }
}

fn say(what: &str, role: &str, slot: u32, pid: u32, rest: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} {role} {slot} {pid} {rest}").ok();
    out.flush().ok();
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
                let started = handle.request(target(to), name, &tag).map(|r| r.timeout(Duration::from_millis(ms)));
                match started.and_then(|r| {
                    let tag = tag.clone();
                    r.then(move |result| {
                        let text = match result {
                            Ok(reply) => format!("ok {}", reply.decode::<String>().unwrap_or_default()),
                            Err(e) => format!("err {e}"),
                        };
                        say("reply", "_", 0, 0, &format!("{tag} {text}"));
                    })
                }) {
                    Ok(()) => {}
                    Err(e) => say("reply", "_", 0, 0, &format!("{tag} err {e}")),
                }
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
                handle
                    .with_kingpin(|k| {
                        for h in k.health() {
                            let rest = format!("{:?} {} {} {}", h.state, h.rss_kib, h.in_flight, h.restarts);
                            say("health", &h.role, h.slot, h.pid, &rest);
                        }
                        say("health-end", "_", 0, 0, "");
                    })
                    .ok();
            }
            ["fds", to, n] => {
                // n one-way messages, each carrying a fresh pipe end.
                for _ in 0..n.parse().unwrap_or(0) {
                    let (r, _w) = nix::unistd::pipe().expect("pipe");
                    handle.send_raw(target(to), "_", "fd", Vec::new(), vec![r]).ok();
                }
                say("fds-sent", "_", 0, 0, n);
            }
            ["fdreq", to, n, timeout] => {
                // n requests, each carrying a pipe end, to a handler that
                // never answers: each ends at its timeout.
                let n: usize = n.parse().unwrap_or(0);
                let ms = timeout.parse().unwrap_or(100);
                let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
                let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                for _ in 0..n {
                    let (r, _w) = nix::unistd::pipe().expect("pipe");
                    let (left, timed_out) = (left.clone(), timed_out.clone());
                    let built = handle.request(target(to), "never", &String::new());
                    let started = built.and_then(|q| {
                        q.fd(r).timeout(Duration::from_millis(ms)).then(move |result| {
                            if matches!(result, Err(Error::Request(mob_mio::RequestError::TimedOut))) {
                                timed_out.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            if left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                                let t = timed_out.load(std::sync::atomic::Ordering::SeqCst);
                                say("fdreq-done", "_", 0, 0, &t.to_string());
                            }
                        })
                    });
                    if started.is_err() {
                        say("fdreq-error", "_", 0, 0, "");
                    }
                }
            }
            ["jobs", role, n, timeout, retries_and_text] => {
                // n jobs; prints `jobs-done OK FAILED` once every one ended.
                let n: usize = n.parse().unwrap_or(0);
                let (retries, text) = retries_and_text.split_once(' ').unwrap_or((retries_and_text, "hi"));
                let (timeout, retries) = (timeout.parse().unwrap_or(5000), retries.parse().unwrap_or(0));
                let (role, text) = (role.to_string(), text.to_string());
                handle
                    .with_kingpin(move |k| {
                        let tally = Rc::new(RefCell::new((0usize, 0usize)));
                        for _ in 0..n {
                            let tally = tally.clone();
                            let job = k.enqueue(&role, &text);
                            let job = job.map(|j| j.timeout(Duration::from_millis(timeout)).retries(retries));
                            let queued = job.and_then(|j| {
                                j.then(move |_k, outcome| {
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
                    })
                    .ok();
            }
            ["flood", to, n, size] => {
                // n one-way messages of `size` bytes from the kingpin.
                let (n, size): (usize, usize) = (n.parse().unwrap_or(0), size.parse().unwrap_or(0));
                let to = target(to);
                handle
                    .with_kingpin(move |k| {
                        let payload = vec![7u8; size];
                        let (mut ok, mut refused) = (0, 0);
                        for _ in 0..n {
                            match k.send_raw(to.clone(), "_", "flood", &payload, Vec::new()) {
                                Ok(()) => ok += 1,
                                Err(_) => refused += 1,
                            }
                        }
                        say("flood-done", "_", 0, 0, &format!("{ok} {refused}"));
                    })
                    .ok();
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
                    let text = match result {
                        Ok(reply) => format!("ok {}", reply.decode::<String>().unwrap_or_default()),
                        Err(e) => format!("err {e}"),
                    };
                    say("wreply", "_", 0, 0, &format!("{tag} {text}"));
                });
            }
            ["sockjob", role] => {
                // A job that carries one end of a socketpair; the worker
                // answers on it and returns a pipe with a stream.
                let role = role.to_string();
                handle
                    .with_kingpin(move |k| {
                        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
                        let queued = k.enqueue(&role, &"sock".to_string()).and_then(|j| {
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
                    })
                    .ok();
            }
            ["broadcastfd", role] => {
                // One pipe end, broadcast to every worker of `role`.
                let role = role.to_string();
                handle
                    .with_kingpin(move |k| {
                        let (r, _w) = nix::unistd::pipe().expect("pipe");
                        let ino = nix::sys::stat::fstat(&r).map_or(0, |st| st.st_ino);
                        let n = k.broadcast(Some(&role), "_", "holdfd", &[], vec![r]);
                        say("broadcast", &role, 0, 0, &format!("{n} {ino}"));
                    })
                    .ok();
            }
            ["fdcount"] => {
                handle
                    .with_kingpin(|_k| {
                        say("fdcount", "_", 0, 0, &mob_sys::process::open_fd_count().unwrap_or(0).to_string())
                    })
                    .ok();
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

/// Queues a job and prints its end.
fn enqueue(k: &mut mob_mio::Kingpin, role: &str, tag: String, text: String, timeout_ms: u64, retries: u32) {
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

fn main() -> ExitCode {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "echo:2".into());
    let mut app = App::new("testapp").configure(|c| {
        if std::env::var("MOB_TEST_CONTINUE").is_ok() {
            c.on_role_failure = mob_mio::OnRoleFailure::Continue;
        }
        if std::env::var("MOB_TEST_NO_BACKOFF").is_ok() {
            c.backoff.initial = Duration::ZERO;
        }
        if let Some(ms) = std::env::var("MOB_TEST_GRACE_MS").ok().and_then(|v| v.parse().ok()) {
            c.shutdown_grace = Duration::from_millis(ms);
        }
        if let Some((every, timeout)) = std::env::var("MOB_TEST_HEARTBEAT_MS").ok().and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            c.heartbeat = Some((Duration::from_millis(every), Duration::from_millis(timeout)));
        }
    });
    // Roles starting `foreign` run the other runtime's test app (the same
    // command protocol) with the same arguments.
    let foreign = std::env::var_os("MOB_TEST_FOREIGN").filter(|_| !App::is_worker());
    for part in spec.split(',') {
        let (role, count) = part.split_once(':').unwrap_or((part, "1"));
        if let Some(exe) = foreign.as_ref().filter(|_| role.starts_with("foreign")) {
            app = app.role_exe(role, count.parse().unwrap_or(1), exe, vec![spec.clone().into()]);
            continue;
        }
        let entry: mob_mio::Entry = match role {
            "garbage" => garbage,
            "badversion" => bad_version,
            _ => worker,
        };
        let mut spec = mob_mio::RoleSpec::new(role, count.parse().unwrap_or(1));
        if role.starts_with("transient") {
            spec.restart = mob_mio::Restart::Transient;
        } else if role.starts_with("temporary") {
            spec.restart = mob_mio::Restart::Temporary;
        }
        spec.ready_on_connect = !role.contains("explicit");
        if let Some(n) = std::env::var("MOB_TEST_MAX_RESTARTS").ok().and_then(|v| v.parse().ok()) {
            spec.intensity.max_restarts = n;
        }
        if role.contains("conc1") {
            spec.concurrency = Some(1);
        }
        app = app.role_spec(spec, entry);
    }
    // MOB_TEST_LISTEN=ROLE=NAME: ROLE listens on the socket systemd passed
    // as NAME.
    if let Some((role, name)) = std::env::var("MOB_TEST_LISTEN").ok().as_deref().and_then(|v| v.split_once('=')) {
        app = app.listen(role, mob_sys::listen::ListenAddr::Systemd(name.into()), mob_sys::listen::ListenMode::Shared);
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
            Event::RoleFailed { role, last_error } => {
                say("role-failed", &role, 0, 0, last_error.as_deref().unwrap_or("-"))
            }
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
            Event::Undeliverable { from, to } => {
                say("undeliverable", &from.role, from.slot, from.pid, &format!("{to:?}"))
            }
            Event::OrphanReaped { pid, status } => say("orphan", "_", 0, pid, &format!("{status:?}")),
        }
    })
    .run()
}
