//! Requests as the application sees them: replies, incoming requests with
//! their responders, callbacks, and the commands that carry answers from any
//! thread back to a loop.

use crate::Error;
use crate::link::Msg;
use bytes::Bytes;
use mob_proto::Text;
use mob_proto::{Failure, LinkId, RequestError, Target};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
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

/// How a request ended, as the requester sees it.
pub type Outcome = Result<Reply, RequestError>;

/// Whom an answer or invocation goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    /// A worker answering the kingpin's call `id`.
    Call(u64),
    /// The kingpin answering request `id` of the worker on `link`.
    Worker(LinkId, u64),
}

/// A closure run (on the loop's thread) when a callback passed from another
/// thread is invoked.
pub(crate) type RemoteCallback = Box<dyn FnOnce(Reply) + Send>;

/// A request built on some thread, for the loop to send.
pub(crate) struct RemoteRequest {
    pub to: Target,
    pub ns: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub timeout: Option<Duration>,
    pub callbacks: Vec<RemoteCallback>,
    pub done: RemoteDone,
}

/// How a request from another thread learns its end.
pub(crate) enum RemoteDone {
    Wait(SyncSender<Result<Reply, Error>>),
    Then(Box<dyn FnOnce(Result<Reply, Error>) + Send>),
    Ignore,
}

impl RemoteDone {
    pub(crate) fn finish(self, result: Result<Reply, Error>) {
        match self {
            RemoteDone::Wait(tx) => {
                let _ = tx.send(result);
            }
            RemoteDone::Then(f) => f(result),
            RemoteDone::Ignore => {}
        }
    }
}

/// What only a mobster's loop does.
pub(crate) enum WorkerCommand {
    SetReady(bool, SyncSender<Result<(), Error>>),
    Scale(u32, SyncSender<Result<(), Error>>),
    Fatal(String),
    Pending(SyncSender<(usize, usize, usize)>),
    OpenCalls(SyncSender<Vec<u64>>),
    /// Write what is queued, close the link, end the loop.
    Shutdown,
}

/// What the application's threads (handles, responders, callbacks) ask of
/// a loop.
pub(crate) enum Command {
    Send {
        to: Target,
        ns: String,
        name: String,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
        /// Where to report the send's result, if anyone waits for it.
        ack: Option<SyncSender<Result<(), Error>>>,
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
    /// Run on the kingpin's loop (dropped by a mobster's).
    Kingpin(Box<dyn FnOnce(&mut crate::Kingpin) + Send>),
    Worker(WorkerCommand),
    Stop,
}

/// A mobster's deferred start: its exports (declared until then), and what
/// starts its threads.
pub(crate) struct Starter {
    pub exports: Vec<String>,
    pub run: Box<dyn FnOnce(Vec<String>) + Send>,
}

/// What every sender to one loop shares.
pub(crate) struct LoopShared {
    /// The thread that runs the loop, once known.
    thread: Mutex<Option<ThreadId>>,
    /// A mobster not yet started (its Hello not yet sent).
    pub start: Mutex<Option<Starter>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LoopShared {
    pub(crate) fn new(start: Option<Starter>) -> Arc<LoopShared> {
        Arc::new(LoopShared { thread: Mutex::new(None), start: Mutex::new(start) })
    }

    /// Records the current thread as the loop's.
    pub(crate) fn set_thread(&self) {
        *lock(&self.thread) = Some(std::thread::current().id());
    }

    /// Whether the caller runs on the loop's thread.
    pub(crate) fn on_loop_thread(&self) -> bool {
        *lock(&self.thread) == Some(std::thread::current().id())
    }

    /// Starts a mobster's threads if they are not running yet.
    pub(crate) fn ensure_started(&self) {
        let starter = lock(&self.start).take();
        if let Some(s) = starter {
            (s.run)(s.exports);
        }
    }

    /// Whether the loop was started.
    pub(crate) fn is_started(&self) -> bool {
        lock(&self.start).is_none()
    }

    /// Adds an export to a mobster not yet started.
    pub(crate) fn export(&self, name: &str) -> Result<(), Error> {
        match lock(&self.start).as_mut() {
            Some(s) => {
                s.exports.push(name.to_string());
                Ok(())
            }
            None => Err(Error::TooLate),
        }
    }
}

/// The channel to a loop, shared by handles, responders and callbacks.
#[derive(Clone)]
pub(crate) struct LoopTx {
    pub tx: Sender<Msg>,
    pub shared: Arc<LoopShared>,
}

impl LoopTx {
    /// Sends `cmd` to the loop, starting a mobster's loop first if need be.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.shared.ensure_started();
        self.tx.send(Msg::App(cmd)).map_err(|_| Error::Stopped)
    }
}

/// A request received by the application, with the one right to answer it.
///
/// Answer with [`Request::respond`], [`Request::respond_raw`],
/// [`Request::fail`] or [`Request::ack`]; each consumes the request, so it
/// cannot be answered twice. The request may be moved to another thread and
/// answered later. Dropping it unanswered sends "dropped without reply" to
/// the requester at once, so nobody waits for a timeout.
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

    /// Whether this is a job from the kingpin's work queue (namespace
    /// [`mob_proto::kingpin::JOB_NAMESPACE`]).
    pub fn is_job(&self) -> bool {
        self.ns == mob_proto::kingpin::JOB_NAMESPACE && self.name == mob_proto::kingpin::JOB_NAME
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

    /// Answers that nothing here handles this request's name (the
    /// requester sees [`RequestError::Unhandled`]), as a `mob-mio` worker
    /// with no handler for it does.
    pub fn unhandled(self) -> Result<(), Error> {
        self.responder.refuse(Failure::Unhandled)
    }
}

/// The right to answer one request, exactly once (dropping it answers
/// "dropped without reply").
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
    pub fn fail(self, message: impl Into<String>) -> Result<(), Error> {
        self.refuse(Failure::Failed(message.into()))
    }

    fn refuse(mut self, failure: Failure) -> Result<(), Error> {
        self.answered = true;
        self.tx.send(Command::Respond { to: self.to, result: Err(failure), payload: Vec::new(), fds: Vec::new() })
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
