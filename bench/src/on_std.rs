//! The workloads on `mob-std`, mob on blocking std IO and threads: its
//! workers are plain loops over [`Mobster::recv`]. The kingpin's side is
//! the same as on `mob-mio`.

use crate::{Blob, FLAT_HOLD, NS, PAYLOAD, fail, micros};
use mob_std::{Error, Incoming, Mobster, Request, Source, Target};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Instant;

pub(crate) use mob_std as rt;

/// What the result lines say.
pub(crate) const PEER: &str = "mob-std";

// The same kingpin code, with this runtime's types and workers.
#[allow(clippy::duplicate_mod)]
#[path = "kingpin_side.rs"]
mod kingpin_side;

/// Runs workload `name` (its kingpin, or one of its workers).
pub(crate) fn run(name: &str, sizes: crate::Sizes) -> Option<ExitCode> {
    kingpin_side::workload(name, sizes).map(rt::App::run)
}

/// The worker most workloads use: echoes `echo` requests, counts one-way
/// messages and the fds they carry (dropping a message closes them), and
/// holds `hang` requests unanswered (see `on_mio::worker`).
pub(crate) fn worker(mob: Mobster) -> Result<(), Error> {
    let (mut messages, mut fds) = (0u64, 0u64);
    let mut held: VecDeque<(Instant, Request<Source>)> = VecDeque::new();
    loop {
        match mob.recv()? {
            Incoming::Message(msg) if msg.ns == NS => {
                messages += 1;
                fds += msg.fds.len() as u64;
            }
            Incoming::Request(req) => match req.name.as_str() {
                "echo" => {
                    let payload = req.payload.to_vec();
                    req.respond_raw(payload, Vec::new()).ok();
                }
                "count" => {
                    req.respond(&(messages, fds)).ok();
                }
                "hang" => {
                    let now = Instant::now();
                    while held.front().is_some_and(|(t, _)| now.duration_since(*t) > FLAT_HOLD) {
                        held.pop_front();
                    }
                    held.push_back((now, req));
                }
                _ => {} // dropped: answered "dropped without reply"
            },
            Incoming::Stop(_) => return Ok(()),
            Incoming::Message(_) | Incoming::Connection(_) => {}
        }
    }
}

/// Does nothing but stay connected.
pub(crate) fn idle(mob: Mobster) -> Result<(), Error> {
    loop {
        if let Incoming::Stop(_) = mob.recv()? {
            return Ok(());
        }
    }
}

/// `routed_rtt`'s worker A: on `go`, sends `n` requests one at a time to any
/// worker of role `b` (through the kingpin), waiting for each, and answers
/// with their times.
pub(crate) fn requester(mob: Mobster) -> Result<(), Error> {
    loop {
        match mob.recv()? {
            Incoming::Request(req) if req.name == "go" => {
                let n: u64 = req.decode().unwrap_or_else(|e| fail(e));
                let mut lat = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let start = Instant::now();
                    match mob.request(Target::Any("b".into()), "echo", &Blob(&PAYLOAD))?.wait() {
                        Ok(reply) if reply.payload.len() == PAYLOAD.len() + 1 => {}
                        Ok(reply) => fail(format!("echo of {} bytes", reply.payload.len())),
                        Err(e) => fail(format!("echo failed: {e}")),
                    }
                    lat.push(micros(start));
                }
                req.respond(&lat).ok();
            }
            Incoming::Stop(_) => return Ok(()),
            _ => {}
        }
    }
}
