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

/// What the application answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// The request's response: `Ok` with the payload, or a failure.
    Respond(Result<(), Failure>),
    /// An invocation of the request's callback with this id.
    Invoke(u64),
}

/// An answer on its way from the application to the loop that received the
/// request.
#[derive(Debug)]
pub struct Answered {
    /// Which request.
    pub to: Answer,
    /// A response or a callback invocation.
    pub kind: AnswerKind,
    /// Its payload.
    pub payload: Vec<u8>,
    /// fds that go with it.
    pub fds: Vec<OwnedFd>,
}

/// The way back into the loop that received a request, for its
/// [`crate::Responder`] and [`crate::Callback`]s. Every
/// [`crate::LoopSender`] is one.
pub trait Answers: Send + Sync {
    /// Queues `answered` for the loop.
    fn answer(&self, answered: Answered) -> Result<(), Error>;
}
