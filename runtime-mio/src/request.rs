//! Making requests: the builder used on the loop's thread, and [`Handle`],
//! the clonable, `Send` way in from any other thread.

use crate::Error;
use crate::handlers::NameHasher;
use crate::rpc::{Command, LoopTx, Outcome, RemoteDone, RemoteRequest, Reply};
use mob_proto::Target;
use mob_proto::wire::DEFAULT_NAMESPACE;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::os::fd::OwnedFd;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

/// What a request is: where, what, and how long to wait.
pub(crate) struct Spec {
    pub to: Target,
    pub ns: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub timeout: Option<Duration>,
}

/// A closure run when a callback is invoked.
pub(crate) type CallbackFn<C> = Box<dyn FnOnce(&mut C, Reply)>;

/// A closure run on the loop when a request ends.
pub(crate) type LocalDone<C> = Box<dyn FnOnce(&mut C, Outcome)>;

/// How a request's requester learns its end.
pub(crate) enum Done<C> {
    Local(LocalDone<C>),
    Remote(RemoteDone),
    Ignore,
}

impl<C> Done<C> {
    pub(crate) fn finish(self, ctx: &mut C, outcome: Outcome) {
        match self {
            Done::Local(f) => f(ctx, outcome),
            Done::Remote(r) => r.finish(outcome.map_err(Error::Request)),
            Done::Ignore => {}
        }
    }
}

/// The requester's table of completions and callbacks, by proto's ids.
pub(crate) struct Completions<C> {
    pub done: HashMap<u64, Done<C>, BuildHasherDefault<NameHasher>>,
    pub callbacks: HashMap<u64, CallbackFn<C>, BuildHasherDefault<NameHasher>>,
}

impl<C> Completions<C> {
    pub(crate) fn new() -> Self {
        Completions { done: HashMap::default(), callbacks: HashMap::default() }
    }

    pub(crate) fn insert(&mut self, id: u64, done: Done<C>, ids: Vec<u64>, fns: Vec<CallbackFn<C>>) {
        self.done.insert(id, done);
        self.callbacks.extend(ids.into_iter().zip(fns));
    }
}

/// An event loop that can start requests (the mobster's or the kingpin's).
pub(crate) trait RequestLoop: Sized {
    fn begin(&mut self, spec: Spec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error>;
}

/// A request being built on the loop's thread; finish it with
/// [`RequestBuilder::then`] or [`RequestBuilder::send`].
///
/// ```no_run
/// # fn f(mob: &mut mob_mio::Mobster) -> Result<(), mob_mio::Error> {
/// use mob_mio::Target;
/// use std::time::Duration;
///
/// mob.request(Target::Any("back".into()), "sum", &(2u32, 3u32))?
///     .timeout(Duration::from_secs(1))
///     .then(|_mob, outcome| match outcome {
///         Ok(reply) => println!("sum = {}", reply.decode::<u32>().unwrap()),
///         Err(e) => eprintln!("no sum: {e}"),
///     })?;
/// # Ok(()) }
/// ```
#[allow(private_bounds)] // sealed: only the mobster and the kingpin make requests
pub struct RequestBuilder<'a, C: RequestLoop> {
    ctx: &'a mut C,
    spec: Spec,
    callbacks: Vec<CallbackFn<C>>,
}

#[allow(private_bounds)]
impl<'a, C: RequestLoop> RequestBuilder<'a, C> {
    pub(crate) fn new(ctx: &'a mut C, to: Target, name: &str, payload: Vec<u8>) -> Self {
        let spec = Spec {
            to,
            ns: DEFAULT_NAMESPACE.to_string(),
            name: name.to_string(),
            payload,
            fds: Vec::new(),
            timeout: None,
        };
        RequestBuilder { ctx, spec, callbacks: Vec::new() }
    }

    pub(crate) fn in_ns(mut self, ns: &str) -> Self {
        self.spec.ns = ns.to_string();
        self
    }

    /// Uses namespace `ns` instead of the default `"_"`.
    pub fn ns(self, ns: &str) -> Self {
        self.in_ns(ns)
    }

    /// Gives up after `timeout` (from now, queueing included) instead of the
    /// kingpin's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// Sends `fd` with the request (ownership passes to the handler).
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.spec.fds.push(fd.into());
        self
    }

    /// Passes a callback the handler may invoke once. It is released,
    /// uncalled, when the request's timeout passes or its handler dies.
    pub fn callback(mut self, f: impl FnOnce(&mut C, Reply) + 'static) -> Self {
        self.callbacks.push(Box::new(f));
        self
    }

    /// Sends the request; `done` runs on this loop exactly once with its end.
    /// Returns the request's id. A target with no route is an error here.
    pub fn then(self, done: impl FnOnce(&mut C, Outcome) + 'static) -> Result<u64, Error> {
        self.ctx.begin(self.spec, self.callbacks, Done::Local(Box::new(done)))
    }

    /// Sends the request and ignores how it ends.
    pub fn send(self) -> Result<u64, Error> {
        self.ctx.begin(self.spec, self.callbacks, Done::Ignore)
    }
}

/// A clonable, `Send` handle to an event loop (a mobster's or the
/// kingpin's), for application threads: an HTTP server's, a pool's.
///
/// Each call wakes the loop. [`Handle::send`] does not wait: routing errors
/// for it are not reported. Requests can be waited on, with their timeout,
/// or given a completion closure that runs on the loop's thread.
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
        self.tx.send(Command::Send { to, ns: ns.to_string(), name: name.to_string(), payload, fds })
    }

    /// Starts building a request carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<HandleRequest, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        let spec = Spec {
            to,
            ns: DEFAULT_NAMESPACE.to_string(),
            name: name.to_string(),
            payload,
            fds: Vec::new(),
            timeout: None,
        };
        Ok(HandleRequest { tx: self.tx.clone(), spec })
    }

    /// Starts a call of function `name` exported by `role`, carrying `args`
    /// (a `require` proxy's call, from any thread).
    pub fn call<T: Serialize + ?Sized>(&self, role: &str, name: &str, args: &T) -> Result<HandleRequest, Error> {
        Ok(self.request(Target::Any(role.to_string()), name, args)?.ns(mob_proto::wire::RPC_NAMESPACE))
    }

    /// Asks the loop to stop (on a kingpin: a soft kill).
    pub fn stop(&self) -> Result<(), Error> {
        self.tx.send(Command::Stop)
    }

    /// Runs `f` on the kingpin's loop: resize, reload, health, enqueue,
    /// stop, from any thread. On a mobster's handle, `f` is dropped unrun.
    pub fn with_kingpin(&self, f: impl FnOnce(&mut crate::Kingpin) + Send + 'static) -> Result<(), Error> {
        self.tx.send(Command::Kingpin(Box::new(f)))
    }
}

/// A request being built from another thread.
pub struct HandleRequest {
    tx: LoopTx,
    spec: Spec,
}

impl HandleRequest {
    /// Uses namespace `ns`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.spec.ns = ns.to_string();
        self
    }

    /// Gives up after `timeout` instead of the default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// Sends `fd` with the request.
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.spec.fds.push(fd.into());
        self
    }

    /// Sends the request and blocks until it ends (at the latest at its
    /// timeout).
    pub fn wait(self) -> Result<Reply, Error> {
        let (tx, rx) = sync_channel(1);
        self.start(RemoteDone::Wait(tx))?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Sends the request; `done` runs on the loop's thread with its end.
    pub fn then(self, done: impl FnOnce(Result<Reply, Error>) + Send + 'static) -> Result<(), Error> {
        self.start(RemoteDone::Then(Box::new(done)))
    }

    fn start(self, done: RemoteDone) -> Result<(), Error> {
        let Spec { to, ns, name, payload, fds, timeout } = self.spec;
        self.tx.send(Command::Request(RemoteRequest { to, ns, name, payload, fds, timeout, done }))
    }
}
