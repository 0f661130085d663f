//! [`Handle`], the clonable, `Send` way into a loop (a mobster's or the
//! kingpin's) from any thread, and [`HandleRequest`], a request built on
//! one.

use crate::command::{Command, LoopSender, RemoteCallback, RemoteDone, RemoteRequest};
use crate::request_spec::RequestSpec;
use crate::{Error, Reply};
use mob_proto::Target;
use mob_proto::wire::{DEFAULT_NAMESPACE, RPC_NAMESPACE};
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

/// A clonable, `Send` handle to a loop (a mobster's or the kingpin's), for
/// any thread: a pool's, a server's. `K` is the runtime's kingpin (each
/// runtime names this type `Handle`).
///
/// Each call wakes the loop. [`Handle::send`] does not wait: routing errors
/// for it are not reported. Requests can be waited for (at most their
/// timeout), or given a closure that runs on the loop's thread with their
/// end.
pub struct Handle<K> {
    tx: Arc<dyn LoopSender<Kingpin = K>>,
}

impl<K> Clone for Handle<K> {
    fn clone(&self) -> Self {
        Handle { tx: self.tx.clone() }
    }
}

impl<K> Handle<K> {
    /// A handle to the loop `tx` feeds (for runtimes).
    pub fn new(tx: Arc<dyn LoopSender<Kingpin = K>>) -> Handle<K> {
        Handle { tx }
    }

    /// Sends `value` (postcard-encoded) as message `name`.
    pub fn send<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, payload, Vec::new())
    }

    /// Sends raw bytes with fds.
    pub fn send_raw(&self, to: Target, ns: &str, name: &str, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.tx.send(Command::Send { to, ns: ns.to_string(), name: name.to_string(), payload, fds })
    }

    /// Starts building a request carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<HandleRequest<K>, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        Ok(HandleRequest::new(self.tx.clone(), RequestSpec::new(to, name, payload)))
    }

    /// Starts a call of function `name` exported by `role`, carrying `args`
    /// (a `require` proxy's call, from any thread).
    pub fn call<T: Serialize + ?Sized>(&self, role: &str, name: &str, args: &T) -> Result<HandleRequest<K>, Error> {
        Ok(self.request(Target::Any(role.to_string()), name, args)?.ns(RPC_NAMESPACE))
    }

    /// Asks the loop to stop. On a kingpin: a soft kill. On a mobster: its
    /// loop ends once what is queued is written (a `mob-std` mobster's
    /// `recv` then returns [`Error::Stopped`]).
    pub fn stop(&self) -> Result<(), Error> {
        self.tx.send(Command::Stop)
    }

    /// Runs `f` on the kingpin's loop: resize, reload, health, enqueue,
    /// stop, from any thread. On a mobster's handle, `f` is dropped unrun.
    pub fn with_kingpin(&self, f: impl FnOnce(&mut K) + Send + 'static) -> Result<(), Error> {
        self.tx.send(Command::Kingpin(Box::new(f)))
    }
}

/// A request being built on any thread; finish it with
/// [`HandleRequest::wait`], [`HandleRequest::then`] or
/// [`HandleRequest::send`].
pub struct HandleRequest<K> {
    tx: Arc<dyn LoopSender<Kingpin = K>>,
    spec: RequestSpec,
    callbacks: Vec<RemoteCallback>,
}

impl<K> HandleRequest<K> {
    fn new(tx: Arc<dyn LoopSender<Kingpin = K>>, spec: RequestSpec) -> Self {
        HandleRequest { tx, spec, callbacks: Vec::new() }
    }

    /// Uses namespace `ns` instead of the default `"_"`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.spec.ns = ns.to_string();
        self
    }

    /// Gives up after `timeout` (from when the loop sends it, queueing
    /// included) instead of the kingpin's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// Sends `fd` with the request (ownership passes to the handler).
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.spec.fds.push(fd.into());
        self
    }

    /// Passes a callback the handler may invoke once; `f` runs on the loop's
    /// thread. It is released, uncalled, when the request's timeout passes
    /// or its handler dies.
    pub fn callback(mut self, f: impl FnOnce(Reply) + Send + 'static) -> Self {
        self.callbacks.push(Box::new(f));
        self
    }

    /// Sends the request and blocks until it ends (at the latest at its
    /// timeout). A target with no route is [`Error::Send`]; a request that
    /// ends without a reply is [`Error::Request`]. Called on the loop's own
    /// thread (in a closure the loop runs) it is [`Error::Deadlock`].
    pub fn wait(self) -> Result<Reply, Error> {
        if self.tx.on_loop_thread() {
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
        let HandleRequest { tx, spec, callbacks } = self;
        tx.send(Command::Request(RemoteRequest { spec, callbacks, done }))
    }
}
