//! The kingpin's side of every workload, the same for both runtimes: this
//! file is a module of `on_mio` and of `on_std`, whose `rt` is the runtime
//! crate and which provide the worker entries.

use super::rt::{App, Backoff, Event, Intensity, Kingpin, Outcome, RequestError, RoleSpec, Target};
use super::{PEER, idle, requester, worker};
use crate::{
    Blob, FD_CHUNK, FD_WINDOW, FLAT_TIMEOUT, FLAT_WINDOW, NS, ONEWAY_CHUNK, ONEWAY_WINDOW, PAYLOAD, Sizes, fail,
    latencies, micros,
};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The application that runs workload `name` (with `KingpinConfig::spin`
/// from `MOB_BENCH_SPIN_US`, in microseconds, if set).
pub(super) fn workload(name: &str, sizes: Sizes) -> Option<App> {
    let app = match name {
        "rtt" => rtt(sizes.rtt),
        "routed_rtt" => routed_rtt(sizes.routed),
        "oneway" => stream(false, sizes.oneway),
        "fd_pass" => stream(true, sizes.fd),
        "restart" => restart(sizes.restart),
        "kingpin_rss_64" => rss_64(),
        "kingpin_rss_flat" => rss_flat(sizes.flat),
        _ => return None,
    };
    let spin = std::env::var("MOB_BENCH_SPIN_US").ok().and_then(|s| s.parse().ok()).map(Duration::from_micros);
    Some(app.configure(|config| config.spin = spin.unwrap_or(config.spin)))
}

/// Prints one result line.
fn report(workload: &str, fields: &str) {
    crate::report(PEER, workload, fields);
}

/// The pid of the first worker of `role`.
fn worker_pid(kingpin: &Kingpin, role: &str) -> u32 {
    kingpin.workers().find(|(w, _)| &*w.role == role).map(|(w, _)| w.pid).unwrap_or_else(|| fail("no worker"))
}

/// Checks an echo's reply: the payload and postcard's length byte.
pub(super) fn check_echo(outcome: Outcome) {
    match outcome {
        Ok(reply) if reply.payload.len() == PAYLOAD.len() + 1 => {}
        Ok(reply) => fail(format!("echo of {} bytes", reply.payload.len())),
        Err(e) => fail(format!("echo failed: {e}")),
    }
}

/// `rtt`: the kingpin asks one worker to echo 64 bytes, one request at a time.
fn rtt(n: usize) -> App {
    App::new("bench-rtt").role("echo", 1, worker).on_event(move |kingpin, event| {
        if let Event::AppOnline = event {
            let to = Target::Pid(worker_pid(kingpin, "echo"));
            rtt_next(kingpin, to, n, Vec::with_capacity(n));
        }
    })
}

fn rtt_next(kingpin: &mut Kingpin, to: Target, n: usize, mut lat: Vec<f64>) {
    if lat.len() == n {
        report("rtt", &latencies(&mut lat));
        return kingpin.stop();
    }
    let start = Instant::now();
    let sent = kingpin.request(to.clone(), "echo", &Blob(&PAYLOAD)).and_then(|r| {
        r.then(move |kingpin, outcome| {
            check_echo(outcome);
            lat.push(micros(start));
            rtt_next(kingpin, to, n, lat);
        })
    });
    if let Err(e) = sent {
        fail(format!("request not sent: {e}"));
    }
}

/// `routed_rtt`: worker A asks "any worker of role b" through the kingpin,
/// one request at a time; A times each and reports the times.
fn routed_rtt(n: usize) -> App {
    App::new("bench-routed").role("a", 1, requester).role("b", 1, worker).on_event(move |kingpin, event| {
        if let Event::AppOnline = event {
            let sent = kingpin.request(Target::Any("a".into()), "go", &(n as u64)).and_then(|r| {
                r.timeout(Duration::from_secs(600)).then(|kingpin, outcome| {
                    let mut lat: Vec<f64> = match outcome.map(|r| r.decode()) {
                        Ok(Ok(lat)) => lat,
                        Ok(Err(e)) => fail(e),
                        Err(e) => fail(format!("routed run failed: {e}")),
                    };
                    report("routed_rtt", &latencies(&mut lat));
                    kingpin.stop();
                })
            });
            if let Err(e) = sent {
                fail(format!("go not sent: {e}"));
            }
        }
    })
}

/// `oneway` and `fd_pass`: the kingpin streams `n` one-way messages of 64
/// bytes (each with one fd for `fd_pass`: the same open `/dev/null`, shared
/// by every message, as an application sends one file to many) to one
/// worker, which counts them.
/// A `count` request after every chunk keeps the window bounded; the last
/// one's answer is the worker's count.
fn stream(with_fds: bool, n: usize) -> App {
    let name = if with_fds { "bench-fd" } else { "bench-oneway" };
    App::new(name).role("sink", 1, worker).on_event(move |kingpin, event| {
        if let Event::AppOnline = event {
            let devnull =
                with_fds.then(|| Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap_or_else(|e| fail(e)))));
            let (chunk, window) = if with_fds { (FD_CHUNK, FD_WINDOW) } else { (ONEWAY_CHUNK, ONEWAY_WINDOW) };
            let to = Target::Pid(worker_pid(kingpin, "sink"));
            let run = Stream { n, chunk, window, sent: 0, open: 0, to, devnull, start: Instant::now() };
            stream_fill(kingpin, &Rc::new(RefCell::new(run)));
        }
    })
}

struct Stream {
    n: usize,
    chunk: usize,
    window: usize,
    sent: usize,
    /// `count` requests not yet answered.
    open: usize,
    to: Target,
    /// `fd_pass`: each message carries it.
    devnull: Option<Arc<OwnedFd>>,
    start: Instant,
}

fn stream_fill(kingpin: &mut Kingpin, run: &Rc<RefCell<Stream>>) {
    loop {
        let mut s = run.borrow_mut();
        if s.sent == s.n || s.open == s.window {
            return;
        }
        let chunk = s.chunk.min(s.n - s.sent);
        for _ in 0..chunk {
            let sent = match &s.devnull {
                Some(f) => kingpin.send_shared(s.to.clone(), NS, "fd", &PAYLOAD, std::slice::from_ref(f)),
                None => kingpin.send_raw(s.to.clone(), NS, "m", &PAYLOAD, Vec::new()),
            };
            if let Err(e) = sent {
                fail(format!("send failed: {e}"));
            }
        }
        s.sent += chunk;
        s.open += 1;
        let to = s.to.clone();
        drop(s);
        let run2 = run.clone();
        let sent = kingpin
            .request(to, "count", &())
            .and_then(|r| r.then(move |kingpin, outcome| counted(kingpin, run2, outcome)));
        if let Err(e) = sent {
            fail(format!("count request not sent: {e}"));
        }
    }
}

fn counted(kingpin: &mut Kingpin, run: Rc<RefCell<Stream>>, outcome: Outcome) {
    let (messages, fds): (u64, u64) = match outcome.map(|r| r.decode()) {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => fail(e),
        Err(e) => fail(format!("count failed: {e}")),
    };
    let mut s = run.borrow_mut();
    s.open -= 1;
    if s.sent < s.n || s.open > 0 {
        drop(s);
        return stream_fill(kingpin, &run);
    }
    let secs = s.start.elapsed().as_secs_f64();
    let n = s.n as u64;
    if s.devnull.is_some() {
        if messages != n || fds != n {
            fail(format!("fd_pass: worker counted {messages} messages and {fds} fds of {n}"));
        }
        report("fd_pass", &format!("\"n\":{n},\"fds_per_s\":{}", (n as f64 / secs) as u64));
    } else {
        if messages != n {
            fail(format!("oneway: worker counted {messages} of {n}"));
        }
        report("oneway", &format!("\"n\":{n},\"msgs_per_s\":{}", (n as f64 / secs) as u64));
    }
    drop(s);
    kingpin.stop();
}

/// `restart`: SIGKILL the ready worker; time until its replacement is ready.
/// No backoff and no restart limit: this role is killed on purpose, and
/// often.
fn restart(n: usize) -> App {
    let mut spec = RoleSpec::new("victim", 1);
    spec.intensity = Intensity { max_restarts: u32::MAX, within: Duration::from_secs(1) };
    let mut killed: Option<(u32, Instant)> = None;
    let mut lat = Vec::with_capacity(n);
    App::new("bench-restart")
        .role_spec(spec, idle)
        .configure(|c| {
            c.backoff = Backoff { initial: Duration::ZERO, max: Duration::ZERO, reset_after: Duration::ZERO }
        })
        .on_event(move |kingpin, event| {
            let pid = match event {
                Event::AppOnline => worker_pid(kingpin, "victim"),
                Event::WorkerReady(w) => match killed {
                    Some((old, start)) if w.pid != old => {
                        lat.push(micros(start));
                        w.pid
                    }
                    _ => return,
                },
                _ => return,
            };
            if lat.len() == n {
                report("restart", &latencies(&mut lat));
                killed = None;
                return kingpin.stop();
            }
            killed = Some((pid, Instant::now()));
            if let Err(e) = mob_sys::process::kill(pid) {
                fail(format!("kill {pid}: {e}"));
            }
        })
}

/// `kingpin_rss_64`: the kingpin's resident memory with 64 idle workers.
fn rss_64() -> App {
    App::new("bench-rss64").role("idle", 64, idle).on_event(|kingpin, event| {
        if let Event::AppOnline = event {
            let rss = mob_sys::process::rss_kib().unwrap_or_else(|e| fail(e));
            report("kingpin_rss_64", &format!("\"n\":64,\"rss_kib\":{rss}"));
            kingpin.stop();
        }
    })
}

/// `kingpin_rss_flat`: `n` requests, `FLAT_WINDOW` at a time, every tenth
/// to a handler that never answers (so it times out); the kingpin's memory
/// before, after the first tenth, and after all of them.
fn rss_flat(n: usize) -> App {
    App::new("bench-flat").role("sink", 1, worker).on_event(move |kingpin, event| {
        if let Event::AppOnline = event {
            let to = Target::Pid(worker_pid(kingpin, "sink"));
            let rss_before = mob_sys::process::rss_kib().unwrap_or_else(|e| fail(e));
            let run = Flat {
                n,
                to,
                issued: 0,
                open: 0,
                ok: 0,
                timed_out: 0,
                other: 0,
                rss_before,
                rss_warm: 0,
                start: Instant::now(),
            };
            flat_fill(kingpin, &Rc::new(RefCell::new(run)));
        }
    })
}

struct Flat {
    n: usize,
    to: Target,
    issued: usize,
    open: usize,
    ok: usize,
    timed_out: usize,
    other: usize,
    rss_before: u64,
    rss_warm: u64,
    start: Instant,
}

fn flat_fill(kingpin: &mut Kingpin, run: &Rc<RefCell<Flat>>) {
    loop {
        let mut s = run.borrow_mut();
        if s.issued == s.n || s.open == FLAT_WINDOW {
            return;
        }
        let hang = s.issued % 10 == 9;
        s.issued += 1;
        s.open += 1;
        let to = s.to.clone();
        drop(s);
        let run2 = run.clone();
        let sent = if hang {
            kingpin.request(to, "hang", &Blob(&PAYLOAD)).map(|r| r.timeout(FLAT_TIMEOUT))
        } else {
            kingpin.request(to, "echo", &Blob(&PAYLOAD))
        }
        .and_then(|r| r.then(move |kingpin, outcome| flat_done(kingpin, run2, outcome)));
        if let Err(e) = sent {
            fail(format!("request not sent: {e}"));
        }
    }
}

fn flat_done(kingpin: &mut Kingpin, run: Rc<RefCell<Flat>>, outcome: Outcome) {
    let mut s = run.borrow_mut();
    s.open -= 1;
    match outcome {
        Ok(_) => s.ok += 1,
        Err(RequestError::TimedOut) => s.timed_out += 1,
        Err(_) => s.other += 1,
    }
    let ended = s.ok + s.timed_out + s.other;
    if ended == s.n / 10 {
        s.rss_warm = mob_sys::process::rss_kib().unwrap_or(0);
    }
    if ended < s.n {
        drop(s);
        return flat_fill(kingpin, &run);
    }
    let secs = s.start.elapsed().as_secs_f64();
    let rss_after = mob_sys::process::rss_kib().unwrap_or_else(|e| fail(e));
    let p = kingpin.pending();
    let pending = p.requests + p.callbacks + p.calls + p.incoming + p.early + p.jobs;
    report(
        "kingpin_rss_flat",
        &format!(
            "\"n\":{},\"ok\":{},\"timed_out\":{},\"other\":{},\"rss_before_kib\":{},\"rss_warm_kib\":{},\
             \"rss_after_kib\":{rss_after},\"pending_after\":{pending},\"req_per_s\":{}",
            s.n,
            s.ok,
            s.timed_out,
            s.other,
            s.rss_before,
            s.rss_warm,
            (s.n as f64 / secs) as u64
        ),
    );
    drop(s);
    kingpin.stop();
}
