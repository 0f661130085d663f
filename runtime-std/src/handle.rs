//! [`Handle`], the clonable, `Send` way into a loop (a mobster's or the
//! kingpin's) from any thread, and [`HandleRequest`], a request built on
//! one.

use crate::Error;
use crate::rpc::{Command, LoopTx, RemoteCallback, RemoteDone, RemoteRequest, Reply};
use mob_proto::Target;
use mob_proto::wire::{DEFAULT_NAMESPACE, RPC_NAMESPACE};
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

/// A clonable, `Send` handle to a loop (a mobster's or the kingpin's), for
/// any thread: a pool's, a server's.
///
/// [`Handle::send`] does not wait: routing errors for it are not reported.
/// Requests can be waited for (at most their timeout) or given a closure
/// that runs on the loop's thread with their end.
#[derive(Clone)]
pub struct Handle {
    tx: LoopTx,
}

impl Handle {
    pub(crate) fn new(tx: LoopTx) -> Handle {
        Handle { tx }
    }

    /// Sends `value` (postcard-encoded) as message `name`.
    pub fn send<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, payload, Vec::new())
    }

    /// Sends raw bytes with fds.
    pub fn send_raw(&self, to: Target, ns: &str, name: &str, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.tx.send(Command::Send { to, ns: ns.to_string(), name: name.to_string(), payload, fds, ack: None })
    }

    /// Starts building a request carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<HandleRequest, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        Ok(HandleRequest::new(self.tx.clone(), to, name, payload))
    }

    /// Starts a call of function `name` exported by `role`, carrying `args`
    /// (a `require` proxy's call, from any thread).
    pub fn call<T: Serialize + ?Sized>(&self, role: &str, name: &str, args: &T) -> Result<HandleRequest, Error> {
        Ok(self.request(Target::Any(role.to_string()), name, args)?.ns(RPC_NAMESPACE))
    }

    /// Asks the loop to stop. On a kingpin: a soft kill. On a mobster: what
    /// is queued is written and the link closes; `recv` then returns
    /// [`Error::Stopped`].
    pub fn stop(&self) -> Result<(), Error> {
        self.tx.send(Command::Stop)
    }

    /// Runs `f` on the kingpin's loop: resize, reload, health, enqueue,
    /// stop, from any thread. On a mobster's handle, `f` is dropped unrun.
    pub fn with_kingpin(&self, f: impl FnOnce(&mut crate::Kingpin) + Send + 'static) -> Result<(), Error> {
        self.tx.send(Command::Kingpin(Box::new(f)))
    }
}

/// A request being built on any thread; finish it with
/// [`HandleRequest::wait`], [`HandleRequest::then`] or
/// [`HandleRequest::send`].
///
/// ```no_run
/// # fn f(mob: &mob_std::Mobster) -> Result<(), mob_std::Error> {
/// use mob_std::Target;
/// use std::time::Duration;
///
/// let reply = mob.request(Target::Any("back".into()), "sum", &(2u32, 3u32))?
///     .timeout(Duration::from_secs(1))
///     .wait()?;
/// println!("sum = {}", reply.decode::<u32>()?);
/// # Ok(()) }
/// ```
pub struct HandleRequest {
    tx: LoopTx,
    request: RemoteRequest,
}

impl HandleRequest {
    pub(crate) fn new(tx: LoopTx, to: Target, name: &str, payload: Vec<u8>) -> HandleRequest {
        let request = RemoteRequest {
            to,
            ns: DEFAULT_NAMESPACE.to_string(),
            name: name.to_string(),
            payload,
            fds: Vec::new(),
            timeout: None,
            callbacks: Vec::new(),
            done: RemoteDone::Ignore,
        };
        HandleRequest { tx, request }
    }

    /// Uses namespace `ns` instead of the default `"_"`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.request.ns = ns.to_string();
        self
    }

    /// Gives up after `timeout` (from when the loop sends it, queueing
    /// included) instead of the kingpin's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(timeout);
        self
    }

    /// Sends `fd` with the request (ownership passes to the handler).
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.request.fds.push(fd.into());
        self
    }

    /// Passes a callback the handler may invoke once; `f` runs on the loop's
    /// thread. It is released, uncalled, when the request's timeout passes
    /// or its handler dies.
    pub fn callback(mut self, f: impl FnOnce(Reply) + Send + 'static) -> Self {
        self.request.callbacks.push(Box::new(f) as RemoteCallback);
        self
    }

    /// Sends the request and blocks until it ends (at the latest at its
    /// timeout). A target with no route is [`Error::Send`]; a request that
    /// ends without a reply is [`Error::Request`]. Called on the loop's own
    /// thread (in a closure the loop runs) it is [`Error::Deadlock`].
    pub fn wait(self) -> Result<Reply, Error> {
        if self.tx.shared.on_loop_thread() {
            return Err(Error::Deadlock);
        }
        let (tx, rx) = sync_channel(1);
        self.start(RemoteDone::Wait(tx))?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Sends the request; `done` runs on the loop's thread, exactly once,
    /// with its end (keep it short: the loop waits for it).
    pub fn then(self, done: impl FnOnce(Result<Reply, Error>) + Send + 'static) -> Result<(), Error> {
        self.start(RemoteDone::Then(Box::new(done)))
    }

    /// Sends the request and ignores how it ends.
    pub fn send(self) -> Result<(), Error> {
        self.start(RemoteDone::Ignore)
    }

    fn start(self, done: RemoteDone) -> Result<(), Error> {
        let HandleRequest { tx, mut request } = self;
        request.done = done;
        tx.send(Command::Request(request))
    }
}
