//! What the application's threads (handles, responders, callbacks) ask of a
//! loop, and the channel that carries it there.

use crate::answer::{Answered, Answers};
use crate::request_spec::RequestSpec;
use crate::{Error, Reply};
use mob_proto::Target;
use std::os::fd::OwnedFd;
use std::sync::mpsc::SyncSender;

/// A closure run on the loop's thread when a callback passed from another
/// thread is invoked.
pub type RemoteCallback = Box<dyn FnOnce(Reply) + Send>;

/// How a request made from another thread learns its end.
pub enum RemoteDone {
    /// Its end goes to a thread blocked in [`crate::HandleRequest::wait`].
    Wait(SyncSender<Result<Reply, Error>>),
    /// A closure runs on the loop's thread with its end.
    Then(Box<dyn FnOnce(Result<Reply, Error>) + Send>),
    /// Nobody asks.
    Ignore,
}

impl RemoteDone {
    /// Hands over the request's end.
    pub fn finish(self, result: Result<Reply, Error>) {
        match self {
            RemoteDone::Wait(tx) => {
                let _ = tx.send(result);
            }
            RemoteDone::Then(f) => f(result),
            RemoteDone::Ignore => {}
        }
    }
}

/// A request built on another thread, for the loop to send.
pub struct RemoteRequest {
    /// What it is.
    pub spec: RequestSpec,
    /// The callbacks it passes, run on the loop's thread.
    pub callbacks: Vec<RemoteCallback>,
    /// Who learns its end.
    pub done: RemoteDone,
}

/// What the application's threads ask of a loop (a mobster's or the
/// kingpin's). `K` is the runtime's kingpin.
pub enum Command<K> {
    /// Send a one-way message.
    Send {
        /// Where.
        to: Target,
        /// Its namespace.
        ns: String,
        /// Its name.
        name: String,
        /// Its payload.
        payload: Vec<u8>,
        /// fds that go with it.
        fds: Vec<OwnedFd>,
    },
    /// Start a request.
    Request(RemoteRequest),
    /// Answer a request this loop received (or invoke one of its
    /// callbacks).
    Answer(Answered),
    /// Run on the kingpin's loop (a mobster's loop drops it unrun).
    Kingpin(Box<dyn FnOnce(&mut K) + Send>),
    /// Stop the loop (on a kingpin: a soft kill).
    Stop,
}

/// A runtime's channel into one of its loops: what [`crate::Handle`]s,
/// [`crate::Responder`]s and [`crate::Callback`]s hold.
pub trait LoopSender: Send + Sync {
    /// The runtime's kingpin, which [`Command::Kingpin`] closures get.
    type Kingpin;

    /// Hands `cmd` to the loop (and wakes it). [`Error::Stopped`] once the
    /// loop is gone.
    fn send(&self, cmd: Command<Self::Kingpin>) -> Result<(), Error>;

    /// Whether the caller runs on the loop's own thread (where waiting for
    /// the loop would never end).
    fn on_loop_thread(&self) -> bool;
}

impl<T: LoopSender> Answers for T {
    fn answer(&self, answered: Answered) -> Result<(), Error> {
        self.send(Command::Answer(answered))
    }
}
