//! Where a request's answers go: back to the loop that received it, from
//! whichever thread answers.

use crate::Error;
use mob_proto::{Failure, LinkId};
use std::os::fd::OwnedFd;

/// Which request an answer or a callback invocation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// On a worker: the kingpin's call `id` (proto's call id).
    Call(u64),
    /// On the kingpin: request `id` of the worker on `link`.
    Worker(LinkId, u64),
}

/// The way back into the loop that received a request, for its
/// [`crate::Responder`] and [`crate::Callback`]s. Runtimes implement it on
/// their channel to the loop (every [`crate::LoopSender`] is one); the loop
/// then hands the answer to proto.
pub trait Answers: Send + Sync {
    /// Queues the answer to request `to`: `Ok` with a payload and fds, or a
    /// failure.
    fn respond(
        &self,
        to: Answer,
        result: Result<(), Failure>,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error>;

    /// Queues an invocation of callback `callback` of request `to`.
    fn invoke(&self, to: Answer, callback: u64, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error>;
}
