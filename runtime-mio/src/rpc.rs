//! Requests as the application sees them: replies, incoming requests with
//! their responders, callbacks, and the commands that carry answers from any
//! thread back to the event loop.

use crate::Error;
use bytes::Bytes;
use mob_proto::Text;
use mob_proto::{Failure, LinkId, RequestError, Target};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::Duration;

/// A successful reply (or a callback's invocation): payload and fds.
#[derive(Debug, Default)]
pub struct Reply {
    /// The raw payload.
    pub payload: Bytes,
    /// fds that came with it (owned: dropping the reply closes them).
    pub fds: Vec<OwnedFd>,
}

impl Reply {
    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }
}

/// Whom an answer or invocation goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    /// A worker answering the kingpin's call `id`.
    Call(u64),
    /// The kingpin answering request `id` of the worker on `link`.
    Worker(LinkId, u64),
}

/// The loop's wake-up: its waker, and its id on its own thread.
pub(crate) struct Shared {
    pub waker: mio::Waker,
    id: u64,
}

static NEXT_LOOP: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The loop that runs on this thread, if any.
    static LOOP_HERE: Cell<u64> = const { Cell::new(0) };
    /// Commands that code on the loop's own thread gave it: no channel, no
    /// wake-up needed (the loop drains them after every handler).
    static LOCAL: RefCell<VecDeque<Command>> = const { RefCell::new(VecDeque::new()) };
}

impl Shared {
    /// The wake-up of a loop that runs on this thread.
    pub(crate) fn new(waker: mio::Waker) -> Shared {
        let id = NEXT_LOOP.fetch_add(1, Ordering::Relaxed);
        LOOP_HERE.with(|l| l.set(id));
        Shared { waker, id }
    }

    fn is_here(&self) -> bool {
        LOOP_HERE.with(|l| l.get()) == self.id
    }

    /// Wakes the loop unless we are on it.
    pub(crate) fn wake(&self) {
        if !self.is_here() {
            let _ = self.waker.wake();
        }
    }
}

/// A request built by another thread, for the loop to send.
pub(crate) struct RemoteRequest {
    pub to: Target,
    pub ns: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub timeout: Option<Duration>,
    pub done: RemoteDone,
}

/// How a request from another thread learns its end.
pub(crate) enum RemoteDone {
    Wait(SyncSender<Result<Reply, Error>>),
    Then(Box<dyn FnOnce(Result<Reply, Error>) + Send>),
}

impl RemoteDone {
    pub(crate) fn finish(self, result: Result<Reply, Error>) {
        match self {
            RemoteDone::Wait(tx) => {
                let _ = tx.send(result);
            }
            RemoteDone::Then(f) => f(result),
        }
    }
}

/// What other threads (handles, responders, callbacks) ask of the loop.
pub(crate) enum Command {
    Send {
        to: Target,
        ns: String,
        name: String,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    Request(RemoteRequest),
    Respond {
        to: Answer,
        result: Result<(), Failure>,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    Invoke {
        to: Answer,
        callback: u64,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    /// Run on the kingpin's loop (ignored by a mobster's).
    Kingpin(Box<dyn FnOnce(&mut crate::Kingpin) + Send>),
    Stop,
}

/// The channel to a loop, shared by handles and responders.
#[derive(Clone)]
pub(crate) struct LoopTx {
    pub tx: Sender<Command>,
    pub shared: Arc<Shared>,
}

impl LoopTx {
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        if self.shared.is_here() {
            LOCAL.with(|q| q.borrow_mut().push_back(cmd));
            return Ok(());
        }
        self.tx.send(cmd).map_err(|_| Error::Stopped)?;
        let _ = self.shared.waker.wake();
        Ok(())
    }

    /// The next command for the loop, from its own thread first.
    pub(crate) fn next(&self, rx: &Receiver<Command>) -> Option<Command> {
        if self.shared.is_here()
            && let Some(cmd) = LOCAL.with(|q| q.borrow_mut().pop_front())
        {
            return Some(cmd);
        }
        rx.try_recv().ok()
    }
}

/// A request received by a handler, with the one right to answer it.
///
/// Answer with [`Request::respond`], [`Request::respond_raw`] or
/// [`Request::fail`]; each consumes the request, so it cannot be answered
/// twice. The request may be moved to another thread and answered later.
/// Dropping it unanswered sends "dropped without reply" to the requester at
/// once, so nobody waits for a timeout.
pub struct Request<From> {
    /// Who asked.
    pub from: From,
    /// Its namespace.
    pub ns: Text,
    /// Its name.
    pub name: Text,
    /// The raw payload.
    pub payload: Bytes,
    /// fds that came with it.
    pub fds: Vec<OwnedFd>,
    /// Callbacks passed with it, each invocable once.
    pub callbacks: Vec<Callback>,
    responder: Responder,
}

impl<From: std::fmt::Debug> std::fmt::Debug for Request<From> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("from", &self.from)
            .field("ns", &self.ns)
            .field("name", &self.name)
            .field("payload", &self.payload)
            .field("fds", &self.fds.len())
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}

impl<From> Request<From> {
    pub(crate) fn new(
        from: From,
        ns: Text,
        name: Text,
        payload: Bytes,
        fds: Vec<OwnedFd>,
        callbacks: Vec<Callback>,
        responder: Responder,
    ) -> Self {
        Request { from, ns, name, payload, fds, callbacks, responder }
    }

    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }

    /// Takes the responder out, to answer elsewhere.
    pub fn into_responder(self) -> Responder {
        self.responder
    }

    /// Answers with `value` (postcard-encoded).
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.responder.respond(value)
    }

    /// Answers with raw bytes and fds.
    pub fn respond_raw(self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.responder.respond_raw(payload, fds)
    }

    /// Answers with a failure carrying `message`.
    pub fn fail(self, message: impl Into<String>) -> Result<(), Error> {
        self.responder.fail(message)
    }

    /// Answers with no data: a bare acknowledgement.
    pub fn ack(self) -> Result<(), Error> {
        self.responder.respond_raw(Vec::new(), Vec::new())
    }
}

/// The right to answer one request, exactly once.
pub struct Responder {
    to: Answer,
    tx: LoopTx,
    answered: bool,
}

impl Responder {
    pub(crate) fn new(to: Answer, tx: LoopTx) -> Responder {
        Responder { to, tx, answered: false }
    }

    /// Answers with `value` (postcard-encoded).
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.respond_raw(payload, Vec::new())
    }

    /// Answers with raw bytes and fds.
    pub fn respond_raw(mut self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.answered = true;
        self.tx.send(Command::Respond { to: self.to, result: Ok(()), payload, fds })
    }

    /// Answers with a failure carrying `message`.
    pub fn fail(mut self, message: impl Into<String>) -> Result<(), Error> {
        self.answered = true;
        let result = Err(Failure::Failed(message.into()));
        self.tx.send(Command::Respond { to: self.to, result, payload: Vec::new(), fds: Vec::new() })
    }

    pub(crate) fn refuse(mut self, failure: Failure) {
        self.answered = true;
        let _ =
            self.tx.send(Command::Respond { to: self.to, result: Err(failure), payload: Vec::new(), fds: Vec::new() });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let cmd =
                Command::Respond { to: self.to, result: Err(Failure::Dropped), payload: Vec::new(), fds: Vec::new() };
            let _ = self.tx.send(cmd);
        }
    }
}

/// A callback passed with a request: invoke it once, now or later, from
/// any thread. Invoking it after its request's timeout does nothing.
pub struct Callback {
    to: Answer,
    id: u64,
    tx: LoopTx,
}

impl Callback {
    pub(crate) fn new(to: Answer, id: u64, tx: LoopTx) -> Callback {
        Callback { to, id, tx }
    }

    /// Invokes the callback with `value` (postcard-encoded).
    pub fn invoke<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.invoke_raw(payload, Vec::new())
    }

    /// Invokes the callback with raw bytes and fds.
    pub fn invoke_raw(self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.tx.send(Command::Invoke { to: self.to, callback: self.id, payload, fds })
    }
}

/// How a request ended, as the requester sees it.
pub type Outcome = Result<Reply, RequestError>;
