//! The workloads on `mob-mio`, mob's production runtime: its workers are
//! event-loop handlers.

use crate::{Blob, FLAT_HOLD, NS, PAYLOAD, fail, micros};
use mob_mio::{Error, Mobster, Request, Source, Target};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use kingpin_side::check_echo;
pub(crate) use mob_mio as rt;

/// What the result lines say.
pub(crate) const PEER: &str = "mob-mio";

// The same kingpin code, with this runtime's types and workers.
#[allow(clippy::duplicate_mod)]
#[path = "kingpin_side.rs"]
mod kingpin_side;

/// Runs workload `name` (its kingpin, or one of its workers).
pub(crate) fn run(name: &str, sizes: crate::Sizes) -> Option<ExitCode> {
    kingpin_side::workload(name, sizes).map(rt::App::run)
}

/// The worker most workloads use: echoes `echo` requests, counts one-way
/// messages and the fds they carry, and holds `hang` requests unanswered.
pub(crate) fn worker(mut mob: Mobster) -> Result<(), Error> {
    mob.on_request("echo", |_mob, req| {
        let payload = req.payload.to_vec();
        req.respond_raw(payload, Vec::new()).ok();
    });
    let counts = Rc::new(RefCell::new((0u64, 0u64))); // (messages, fds)
    let c = counts.clone();
    mob.on_ns(NS, "m", move |_mob, _msg| c.borrow_mut().0 += 1);
    let c = counts.clone();
    mob.on_ns(NS, "fd", move |_mob, msg| {
        let mut c = c.borrow_mut();
        c.0 += 1;
        c.1 += msg.fds.len() as u64;
        drop(msg); // closes the fd
    });
    mob.on_request("count", move |_mob, req| {
        req.respond(&*counts.borrow()).ok();
    });
    // Never answered: the requester's timeout ends it. Dropping a request
    // answers it at once, so each is held a while, long after it timed out
    // at the kingpin (which then cancels it here; the late drop is ignored).
    let held: RefCell<VecDeque<(Instant, Request<Source>)>> = RefCell::default();
    mob.on_request("hang", move |_mob, req| {
        let now = Instant::now();
        let mut held = held.borrow_mut();
        while held.front().is_some_and(|(t, _)| now.duration_since(*t) > FLAT_HOLD) {
            held.pop_front();
        }
        held.push_back((now, req));
    });
    mob.run()
}

/// Does nothing but stay connected.
pub(crate) fn idle(mob: Mobster) -> Result<(), Error> {
    mob.run()
}

/// `routed_rtt`'s worker A: on `go`, sends `n` requests one at a time to any
/// worker of role `b` (through the kingpin) and answers with their times.
pub(crate) fn requester(mut mob: Mobster) -> Result<(), Error> {
    mob.on_request("go", |mob, req| {
        let n: u64 = req.decode().unwrap_or_else(|e| fail(e));
        let run = Routed { n: n as usize, lat: Vec::with_capacity(n as usize), done: Some(req) };
        routed_next(mob, run);
    });
    mob.run()
}

struct Routed {
    n: usize,
    lat: Vec<f64>,
    done: Option<Request<Source>>,
}

fn routed_next(mob: &mut Mobster, mut run: Routed) {
    if run.lat.len() == run.n {
        if let Some(req) = run.done.take() {
            req.respond(&run.lat).ok();
        }
        return;
    }
    let start = Instant::now();
    let sent = mob.request(Target::Any("b".into()), "echo", &Blob(&PAYLOAD)).and_then(|r| {
        r.then(move |mob, outcome| {
            check_echo(outcome);
            run.lat.push(micros(start));
            routed_next(mob, run);
        })
    });
    if let Err(e) = sent {
        fail(format!("routed request not sent: {e}"));
    }
}
