//! Workers' stdout and stderr, passed on to the kingpin's line by line with
//! a `[role#slot pid] ` prefix: a thread per pipe.
//!
//! Each thread reads its pipe, cuts lines with
//! [`mob_proto::lines::LineMux`] and writes them to the kingpin's stdout or
//! stderr under its lock (so lines never mix with the kingpin's own). The
//! writes block: while the destination does not take lines, the thread
//! does not read, the pipe fills, and the worker blocks in its own `write`.
//! Memory stays bounded by the mux's limits per pipe.

use mob_proto::lines::{LineLimits, LineMux, worker_prefix};
use mob_sys::stdio::{output_pipe, read_pipe};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the kingpin waits, when it exits, for the last lines of its
/// workers (a pipe a grandchild keeps open never ends).
const FINISH_GRACE: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 16 * 1024;
const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// The read ends of a worker's pipes, kept until its pid is known.
pub(crate) struct Pending {
    pipes: Vec<(usize, OwnedFd)>,
}

/// Worker output for one kingpin: counts the pipe threads still running.
#[derive(Default)]
pub(crate) struct Output {
    running: Arc<(Mutex<usize>, Condvar)>,
}

impl Output {
    /// The stdout and stderr for a worker about to be spawned, and the read
    /// ends to [`Output::attach`] once its pid is known.
    pub(crate) fn stdio(&self) -> std::io::Result<(Stdio, Stdio, Pending)> {
        let (out_r, out_w) = output_pipe()?;
        let (err_r, err_w) = output_pipe()?;
        for fd in [&out_r, &err_r] {
            mob_sys::channel::set_nonblocking(fd, false)?;
        }
        Ok((Stdio::from(out_w), Stdio::from(err_w), Pending { pipes: vec![(0, out_r), (1, err_r)] }))
    }

    /// Starts a thread per pipe of the worker `role#slot` with `pid`.
    pub(crate) fn attach(&self, pending: Pending, role: &str, slot: u32, pid: u32) {
        let prefix = worker_prefix(role, slot, pid);
        for (stream, fd) in pending.pipes {
            let running = self.running.clone();
            let prefix = prefix.clone();
            *lock(&running.0) += 1;
            let started = std::thread::Builder::new()
                .name(format!("mob-{}-{role}#{slot}", STREAMS[stream]))
                .stack_size(64 * 1024)
                .spawn(move || {
                    pass_on(fd, stream, &prefix);
                    let (count, ended) = &*running;
                    *lock(count) -= 1;
                    ended.notify_all();
                });
            if let Err(e) = started {
                *lock(&self.running.0) -= 1;
                log::warn!("cannot pass on {role}#{slot}'s {}: {e}", STREAMS[stream]);
            }
        }
    }

    /// Waits (a little) for the pipe threads to pass on the last lines of
    /// workers that have exited.
    pub(crate) fn finish(&self) {
        let deadline = Instant::now() + FINISH_GRACE;
        let (count, ended) = &*self.running;
        let mut left = lock(count);
        while *left > 0 {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else { return };
            left = match ended.wait_timeout(left, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

fn lock(m: &Mutex<usize>) -> std::sync::MutexGuard<'_, usize> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `fd` to its end, writing its lines with `prefix` to the kingpin's
/// stream `stream` (0 stdout, 1 stderr).
fn pass_on(fd: OwnedFd, stream: usize, prefix: &[u8]) {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(0, prefix);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut broken = false;
    loop {
        let room = mux.space(0).min(buf.len());
        let n = match read_pipe(&fd, &mut buf[..room.max(1)]) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) => {
                log::warn!("reading a worker's {}: {e}", STREAMS[stream]);
                0
            }
        };
        if n == 0 {
            mux.handle_eof(0);
        } else {
            mux.handle_read(0, &buf[..n]);
        }
        while let Some(chunk) = mux.peek() {
            let len = chunk.len();
            if !broken && let Err(e) = write_to(stream, chunk) {
                log::warn!("the kingpin's {} failed ({e}): worker output to it is discarded", STREAMS[stream]);
                broken = true;
            }
            mux.advance(len);
        }
        if n == 0 {
            return;
        }
    }
}

fn write_to(stream: usize, bytes: &[u8]) -> std::io::Result<()> {
    if stream == 0 {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    } else {
        std::io::stderr().lock().write_all(bytes)
    }
}
