//! mob's bench: the workloads of the peer baselines (`/work/shared/bench`:
//! raw socketpairs, Node's cluster IPC, ipc-channel) on mob's runtimes,
//! printed as the same JSON lines with `"peer":"mob-mio"` (the production
//! runtime) and `"peer":"mob-std"` (blocking std IO and threads).
//!
//! Usage: `mob-bench [quick] [mio|std] [WORKLOAD...]` (default: every
//! workload on both runtimes).
//!
//! Each workload is its own mob application, run as a child process
//! (`mob-bench --workload NAME --runtime mio|std [quick]`): that child is
//! the kingpin, and its workers are re-executions of it (as `App::run`
//! does), so every workload starts from a fresh kingpin. The parent prints
//! the JSON line each child prints. Times are taken with [`Instant`] in the
//! kingpin, except `routed_rtt`, which worker A times (as every peer does):
//! only it sees when its request leaves and its reply arrives.

mod on_mio;
mod on_std;

use serde::{Serialize, Serializer};
use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The runtimes, as `--runtime` names them.
const RUNTIMES: [&str; 2] = ["mio", "std"];

/// Every workload, in the order they run.
const WORKLOADS: [&str; 7] =
    ["rtt", "routed_rtt", "oneway", "fd_pass", "restart", "kingpin_rss_64", "kingpin_rss_flat"];

/// The application payload of every message and request.
const PAYLOAD: [u8; 64] = [7; 64];

/// A payload as postcard bytes (a length byte, then the bytes in one
/// copy), as `serde_bytes` would have it. (A plain `&[u8]` is a sequence to
/// serde: postcard then pushes byte by byte, growing its vector five times,
/// which costs more than the rest of sending a request.)
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Namespace of the raw one-way messages (`oneway`, `fd_pass`).
const NS: &str = "bench";

/// `oneway`: messages sent between two progress requests, and how many such
/// chunks may be unacknowledged at once. The kingpin's queue toward a worker
/// is bounded (`max_queued_bytes`, sends past it fail with backpressure),
/// so a sender that wants to go as fast as it can keeps a window.
const ONEWAY_CHUNK: usize = 4096;
const ONEWAY_WINDOW: usize = 4;

/// `fd_pass`: the same, smaller, so that few fds are open at once.
const FD_CHUNK: usize = 64;
const FD_WINDOW: usize = 4;

/// `kingpin_rss_flat`: requests in flight at once, the timeout of the tenth
/// that is never answered, and how long the worker holds such a request
/// before dropping it (long after the kingpin gave up on it).
const FLAT_WINDOW: usize = 1024;
const FLAT_TIMEOUT: Duration = Duration::from_millis(20);
const FLAT_HOLD: Duration = Duration::from_secs(1);

/// How many samples each workload takes (those of the limit baseline).
#[derive(Clone, Copy)]
struct Sizes {
    rtt: usize,
    oneway: usize,
    routed: usize,
    fd: usize,
    restart: usize,
    flat: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes { rtt: 5000, oneway: 50_000, routed: 3000, fd: 500, restart: 5, flat: 200_000 }
        } else {
            Sizes { rtt: 20_000, oneway: 200_000, routed: 10_000, fd: 2000, restart: 20, flat: 10_000_000 }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "quick");
    let sizes = Sizes::new(quick);
    // The kingpin of one workload, or one of its workers (which are started
    // with the kingpin's arguments).
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        let name = args.get(i + 1).map(String::as_str).unwrap_or_default();
        let runtime = args.iter().position(|a| a == "--runtime").and_then(|i| args.get(i + 1));
        let code = match runtime.map(String::as_str) {
            Some("mio") => on_mio::run(name, sizes),
            Some("std") => on_std::run(name, sizes),
            _ => {
                eprintln!("mob-bench: --runtime needs one of {}", RUNTIMES.join(", "));
                return ExitCode::FAILURE;
            }
        };
        return code.unwrap_or_else(|| {
            eprintln!("mob-bench: unknown workload {name:?} (known: {})", WORKLOADS.join(", "));
            ExitCode::FAILURE
        });
    }
    let words: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "quick").collect();
    if let Some(bad) = words.iter().find(|w| !WORKLOADS.contains(w) && !RUNTIMES.contains(w)) {
        eprintln!(
            "mob-bench: unknown argument {bad:?} (workloads: {}; runtimes: {})",
            WORKLOADS.join(", "),
            RUNTIMES.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let chosen = |all: &[&'static str]| -> Vec<&'static str> {
        let some: Vec<&'static str> = all.iter().copied().filter(|w| words.contains(w)).collect();
        if some.is_empty() { all.to_vec() } else { some }
    };
    let mut ok = true;
    for runtime in chosen(&RUNTIMES) {
        for name in chosen(&WORKLOADS) {
            ok &= run_child(name, runtime, quick);
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs one workload in a fresh kingpin process and prints its JSON lines.
fn run_child(name: &str, runtime: &str, quick: bool) -> bool {
    let limit = std::env::var("MOB_BENCH_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(if quick { 300 } else { 3600 }));
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("mob-bench: cannot find this executable: {e}");
            return false;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--workload").arg(name).arg("--runtime").arg(runtime).stdin(Stdio::null()).stdout(Stdio::piped());
    if quick {
        cmd.arg("quick");
    }
    let cpu_before = family_cpu();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("mob-bench: {name} on {runtime}: cannot start: {e}");
            return false;
        }
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                eprintln!("mob-bench: {name} on {runtime}: no result after {limit:?}; killed");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("mob-bench: {name} on {runtime}: {e}");
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    let cpu = family_cpu().saturating_sub(cpu_before);
    let mut lines = 0;
    for line in out.lines().filter(|l| l.starts_with('{')) {
        println!("{}", with_cpu(line, cpu));
        lines += 1;
    }
    match status {
        Some(s) if s.success() && lines > 0 => true,
        Some(s) => {
            eprintln!("mob-bench: {name} on {runtime}: exited with {s}, {lines} result line(s)");
            false
        }
        None => false,
    }
}

/// CPU time (user and system) used so far by this process's children that
/// have ended and been waited for, and by their own such children: a
/// workload's kingpin and its workers, once the kingpin has ended.
fn family_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        let us = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
        us(u.user_time()) + us(u.system_time())
    })
}

/// A workload's result line with `cpu_us_per_op` added: the CPU time its
/// whole process family used (kingpin and workers, start to end, user and
/// system), over its `n`. Lines without `n` (the memory figures) are left
/// as they are.
fn with_cpu(line: &str, cpu: Duration) -> String {
    let n = line
        .split("\"n\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse::<u64>().ok()));
    match (n, line.strip_suffix('}')) {
        (Some(n), Some(open)) if n > 0 && !line.contains("kingpin_rss") => {
            format!("{open},\"cpu_us_per_op\":{:.2}}}", cpu.as_secs_f64() * 1e6 / n as f64)
        }
        _ => line.to_string(),
    }
}

/// Prints one result line.
fn report(peer: &str, workload: &str, fields: &str) {
    println!("{{\"peer\":\"{peer}\",\"workload\":\"{workload}\",{fields}}}");
}

/// Ends the workload's kingpin with an error (its workers die with it).
fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("mob-bench: {what}");
    std::process::exit(1);
}

/// The value at quantile `p` of `v` (as the peers compute it).
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn latencies(v: &mut [f64]) -> String {
    format!("\"n\":{},\"p50_us\":{:.2},\"p99_us\":{:.2}", v.len(), pct(v, 0.5), pct(v, 0.99))
}

fn micros(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e6
}
