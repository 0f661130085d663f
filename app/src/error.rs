//! The runtimes' error type.

use mob_proto::{CloseReason, RequestError, SendError};
use std::fmt;
use std::io;

/// Everything that can go wrong in a mob runtime.
#[derive(Debug)]
pub enum Error {
    /// A system call failed.
    Io(io::Error),
    /// A send was refused (no route, too large, queue full, link closed).
    Send(SendError),
    /// The link to the peer closed.
    Closed(CloseReason),
    /// A payload did not serialize or deserialize.
    Payload(postcard::Error),
    /// This process was not started by a mob kingpin (no `MOB_*` environment),
    /// or its environment is inconsistent.
    NotAWorker(&'static str),
    /// The kingpin was started with a role this binary has no entry for.
    UnknownRole(String),
    /// A request ended without a reply.
    Request(RequestError),
    /// The loop has stopped (the mobster was dropped or stopped, the kingpin
    /// returned from `run`).
    Stopped,
    /// Exports must be declared before the worker first sends, receives or
    /// runs.
    TooLate,
    /// Waiting here would never end: `wait` was called on the thread that
    /// runs the loop it waits for (in a closure that loop runs, or through a
    /// [`crate::Handle`] on the loop's own thread).
    Deadlock,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Send(e) => write!(f, "send: {e}"),
            Error::Closed(r) => write!(f, "link closed: {r}"),
            Error::Payload(e) => write!(f, "payload: {e}"),
            Error::NotAWorker(why) => write!(f, "not started as a mob worker: {why}"),
            Error::UnknownRole(r) => write!(f, "no entry for role {r:?} in this binary"),
            Error::Request(e) => write!(f, "request failed: {e}"),
            Error::Stopped => f.write_str("the event loop has stopped"),
            Error::TooLate => f.write_str("exports must be declared before the worker first sends or runs"),
            Error::Deadlock => f.write_str("waiting on the loop's own thread would never end"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Payload(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Payload(e)
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        Error::Request(e)
    }
}
