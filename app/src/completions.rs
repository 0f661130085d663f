//! A requester's bookkeeping: how each of its requests reports its end, and
//! what each callback it passed runs, by proto's ids.

use crate::command::{RemoteCallback, RemoteDone};
use crate::{BuildNameHasher, Error, Outcome, Reply};
use mob_proto::SendError;
use std::collections::HashMap;

/// A closure run on the loop (with the loop's owner, `C`) when a request
/// ends.
pub type LocalDone<C> = Box<dyn FnOnce(&mut C, Outcome)>;

/// A closure run on the loop (with the loop's owner, `C`) when a callback
/// is invoked.
pub type LocalCallback<C> = Box<dyn FnOnce(&mut C, Reply)>;

/// How a request's requester learns its end.
pub enum Done<C> {
    /// A closure the loop runs.
    Local(LocalDone<C>),
    /// Another thread's request ([`crate::HandleRequest`]).
    Remote(RemoteDone),
    /// A `wait` on the loop's own thread collects it (runtimes that can wait
    /// there).
    Wait,
    /// Nobody asks.
    Ignore,
}

impl<C> Done<C> {
    /// Hands over the request's end: runs a local closure with `ctx`, or
    /// passes it to the other thread. A [`Done::Wait`] gets it back, for the
    /// waiter.
    pub fn finish(self, ctx: &mut C, outcome: Outcome) -> Option<Outcome> {
        match self {
            Done::Local(f) => f(ctx, outcome),
            Done::Remote(r) => r.finish(outcome.map_err(Error::Request)),
            Done::Wait => return Some(outcome),
            Done::Ignore => {}
        }
        None
    }

    /// The request was refused before it left: another thread's requester
    /// is told; the error is returned for the caller on the loop's thread.
    pub fn refused(self, e: SendError) -> Error {
        if let Done::Remote(r) = self {
            r.finish(Err(Error::Send(e.clone())));
        }
        Error::Send(e)
    }
}

/// What a callback passed with a request runs when it is invoked.
pub enum CallbackFn<C> {
    /// A closure the loop runs with its owner.
    Local(LocalCallback<C>),
    /// Another thread's closure, run on the loop's thread.
    Remote(RemoteCallback),
}

impl<C> CallbackFn<C> {
    /// Runs the callback with its invocation.
    pub fn call(self, ctx: &mut C, reply: Reply) {
        match self {
            CallbackFn::Local(f) => f(ctx, reply),
            CallbackFn::Remote(f) => f(reply),
        }
    }
}

/// A requester's table of completions and callbacks, by proto's ids.
pub struct Completions<C> {
    /// How each open request reports its end.
    pub done: HashMap<u64, Done<C>, BuildNameHasher>,
    /// What each live callback runs.
    pub callbacks: HashMap<u64, CallbackFn<C>, BuildNameHasher>,
}

impl<C> Completions<C> {
    /// An empty table.
    pub fn new() -> Self {
        Completions { done: HashMap::default(), callbacks: HashMap::default() }
    }

    /// Keeps request `id`'s completion, and its callbacks under proto's
    /// callback `ids` (in order).
    pub fn insert(&mut self, id: u64, done: Done<C>, ids: Vec<u64>, callbacks: Vec<CallbackFn<C>>) {
        self.done.insert(id, done);
        self.callbacks.extend(ids.into_iter().zip(callbacks));
    }

    /// Starts a request: `send` gets the number of callbacks and hands the
    /// request to proto, which gives its id and its callbacks' ids. Returns
    /// the request's id; a refusal is [`Done::refused`].
    pub fn begin(
        &mut self,
        callbacks: Vec<CallbackFn<C>>,
        done: Done<C>,
        send: impl FnOnce(usize) -> Result<(u64, Vec<u64>), SendError>,
    ) -> Result<u64, Error> {
        match send(callbacks.len()) {
            Ok((id, ids)) => {
                self.insert(id, done, ids, callbacks);
                Ok(id)
            }
            Err(e) => Err(done.refused(e)),
        }
    }
}

impl<C> Default for Completions<C> {
    fn default() -> Self {
        Completions::new()
    }
}
