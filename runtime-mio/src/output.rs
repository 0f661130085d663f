//! Workers' stdout and stderr, passed on to the kingpin's line by line with
//! a `[role#slot pid] ` prefix.
//!
//! Each worker writes to two pipes; their read ends sit in the event loop.
//! Lines are cut and bounded by [`mob_proto::lines::LineMux`] (one per
//! destination) and written to the kingpin's stdout or stderr through a
//! [`Sink`], which never blocks the loop. A pipe whose worker writes faster
//! than the destination takes is simply not read until there is room: the
//! worker then blocks in its own `write`, and the kingpin's memory stays
//! bounded.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use mob_proto::lines::{LineLimits, LineMux, worker_prefix};
use mob_sys::stdio::{Sink, output_pipe, read_pipe};
use slab::Slab;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;

/// The tokens of this module: the two sinks just below, the pipes from here
/// up (a range no link or listener token reaches in practice).
const BASE: usize = usize::MAX - (1 << 24);
/// How many pipes can be registered at once.
const MAX_PIPES: usize = 1 << 22;
const READ_CHUNK: usize = 16 * 1024;

/// Which of the kingpin's streams.
const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// Whether `token` belongs to worker output.
pub(crate) fn owns(token: Token) -> bool {
    (BASE - STREAMS.len()..BASE + MAX_PIPES).contains(&token.0)
}

/// One destination: the kingpin's stdout or stderr.
struct Stream {
    mux: LineMux,
    sink: Sink,
    /// The destination failed for good (closed pipe): output is discarded.
    broken: bool,
}

/// One worker pipe.
struct Pipe {
    fd: OwnedFd,
    stream: usize,
    /// Readable, but its source had no room: read again after a write.
    stalled: bool,
}

/// The read ends of a worker's pipes, kept until its pid is known.
pub(crate) struct Pending {
    pipes: Vec<(usize, OwnedFd)>,
}

/// Worker output for one kingpin.
pub(crate) struct Output {
    streams: [Option<Stream>; 2],
    pipes: Slab<Pipe>,
    buf: Vec<u8>,
}

impl Output {
    /// Output through the kingpin, for each of its streams that can be
    /// written without blocking (the others stay inherited as they are).
    pub(crate) fn open(registry: &Registry) -> Output {
        let mut streams = [None, None];
        for (i, fd) in [std::io::stdout().as_fd(), std::io::stderr().as_fd()].into_iter().enumerate() {
            match Sink::open(fd) {
                Ok(sink) => {
                    let token = Token(BASE - 1 - i);
                    if sink.pollable()
                        && let Err(e) = registry.register(&mut SourceFd(&sink.as_raw_fd()), token, Interest::WRITABLE)
                    {
                        log::warn!("worker {} passes through unprefixed: {e}", STREAMS[i]);
                        continue;
                    }
                    let mux = LineMux::new(LineLimits::default());
                    streams[i] = Some(Stream { mux, sink, broken: false });
                }
                Err(e) => log::warn!("worker {} passes through unprefixed: {e}", STREAMS[i]),
            }
        }
        Output { streams, pipes: Slab::new(), buf: vec![0; READ_CHUNK] }
    }

    /// The stdout and stderr for a worker about to be spawned, and the read
    /// ends to [`Output::attach`] once its pid is known.
    pub(crate) fn stdio(&self) -> std::io::Result<(Stdio, Stdio, Pending)> {
        let mut pending = Pending { pipes: Vec::new() };
        let mut child = [Stdio::inherit(), Stdio::inherit()];
        for (i, stream) in self.streams.iter().enumerate() {
            if stream.is_some() {
                let (read, write) = output_pipe()?;
                pending.pipes.push((i, read));
                child[i] = Stdio::from(write);
            }
        }
        let [out, err] = child;
        Ok((out, err, pending))
    }

    /// Starts reading the pipes of the worker `role#slot` with `pid`.
    pub(crate) fn attach(&mut self, registry: &Registry, pending: Pending, role: &str, slot: u32, pid: u32) {
        let prefix = worker_prefix(role, slot, pid);
        for (stream, fd) in pending.pipes {
            if self.pipes.len() >= MAX_PIPES {
                log::warn!("too many worker pipes: {role}#{slot} output is discarded");
                continue;
            }
            let entry = self.pipes.vacant_entry();
            let key = entry.key();
            if let Err(e) = registry.register(&mut SourceFd(&fd.as_raw_fd()), Token(BASE + key), Interest::READABLE) {
                log::warn!("cannot watch {role}#{slot}'s {}: {e}", STREAMS[stream]);
                continue;
            }
            if let Some(s) = &mut self.streams[stream] {
                s.mux.add(key as u64, &prefix);
            }
            entry.insert(Pipe { fd, stream, stalled: false });
            // It may have written already, before registration.
            self.read(registry, key);
        }
    }

    /// Handles a readiness event for one of this module's tokens.
    pub(crate) fn ready(&mut self, registry: &Registry, token: Token) {
        if token.0 < BASE {
            self.service(registry, BASE - 1 - token.0);
        } else {
            self.read(registry, token.0 - BASE);
        }
    }

    /// Reads pipe `key` until it is empty or its source is full, then
    /// writes out what it gave.
    fn read(&mut self, registry: &Registry, key: usize) {
        let Some(stream) = self.pipes.get(key).map(|p| p.stream) else { return };
        self.drain_pipe(registry, key);
        self.service(registry, stream);
    }

    fn drain_pipe(&mut self, registry: &Registry, key: usize) -> bool {
        let Some(pipe) = self.pipes.get_mut(key) else { return false };
        let Some(s) = &mut self.streams[pipe.stream] else { return false };
        let id = key as u64;
        let mut got = false;
        loop {
            let room = s.mux.space(id).min(self.buf.len());
            if room == 0 {
                pipe.stalled = true;
                return got;
            }
            match read_pipe(&pipe.fd, &mut self.buf[..room]) {
                Ok(0) => break,
                Ok(n) => {
                    got = true;
                    s.mux.handle_read(id, &self.buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    pipe.stalled = false;
                    return got;
                }
                Err(e) => {
                    log::warn!("reading a worker's {}: {e}", STREAMS[pipe.stream]);
                    break;
                }
            }
        }
        // End of stream: flush the last partial line, forget the pipe.
        s.mux.handle_eof(id);
        let pipe = self.pipes.remove(key);
        let _ = registry.deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
        true
    }

    /// Writes `stream` until it would block, reading stalled pipes again as
    /// room frees up.
    fn service(&mut self, registry: &Registry, stream: usize) {
        loop {
            let Some(s) = &mut self.streams[stream] else { return };
            let mut progress = false;
            while let Some(chunk) = s.mux.peek() {
                if s.broken {
                    let n = chunk.len();
                    s.mux.advance(n);
                    continue;
                }
                match s.sink.write(chunk) {
                    Ok(n) => {
                        progress = true;
                        s.mux.advance(n);
                    }
                    // The sink's writability wakes the loop.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("the kingpin's {} failed ({e}): worker output to it is discarded", STREAMS[stream]);
                        s.broken = true;
                    }
                }
            }
            let stalled: Vec<usize> =
                self.pipes.iter().filter(|(_, p)| p.stream == stream && p.stalled).map(|(k, _)| k).collect();
            for key in stalled {
                progress |= self.drain_pipe(registry, key);
            }
            if !progress {
                return;
            }
        }
    }

    /// The last flush when the kingpin exits: everything the pipes still
    /// hold (its workers are gone) goes out, waiting for the destination if
    /// need be. Pipes some grandchild still holds open are left as they are.
    pub(crate) fn finish(&mut self, registry: &Registry) {
        loop {
            let keys: Vec<usize> = self.pipes.iter().map(|(k, _)| k).collect();
            let mut progress = false;
            for key in keys {
                progress |= self.drain_pipe(registry, key);
            }
            for s in self.streams.iter_mut().flatten() {
                while let Some(chunk) = s.mux.peek() {
                    let n = chunk.len();
                    if !s.broken && s.sink.write_all_blocking(chunk).is_err() {
                        s.broken = true;
                    }
                    s.mux.advance(n);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for (key, pipe) in self.pipes.iter() {
            if let Some(s) = &mut self.streams[pipe.stream] {
                s.mux.handle_eof(key as u64);
                while let Some(chunk) = s.mux.peek() {
                    let n = chunk.len();
                    if !s.broken && s.sink.write_all_blocking(chunk).is_err() {
                        s.broken = true;
                    }
                    s.mux.advance(n);
                }
            }
        }
    }
}
