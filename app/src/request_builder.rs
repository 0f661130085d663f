//! Requests made on a loop's own thread: [`RequestBuilder`], for the loop's
//! owner (a `mob-mio` mobster, either runtime's kingpin).

use crate::command::RemoteRequest;
use crate::completions::{CallbackFn, Done};
use crate::request_spec::RequestSpec;
use crate::{Error, Outcome, Reply};
use mob_proto::Target;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// A loop's owner that can start requests (a kingpin, a `mob-mio` mobster).
pub trait RequestLoop: Sized {
    /// Sends `spec` with `callbacks`; `done` learns its end. Returns the
    /// request's id; a refused request is an error here (and `done` is told
    /// if it is another thread's).
    fn begin(&mut self, spec: RequestSpec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error>;
}

/// A loop's owner that can also wait for its own requests on its thread,
/// running the loop meanwhile (a `mob-std` kingpin).
pub trait WaitLoop: RequestLoop {
    /// Runs the loop until request `id` (begun with [`Done::Wait`]) ends.
    fn wait_for(&mut self, id: u64) -> Outcome;
}

impl RemoteRequest {
    /// Starts this request, made on another thread, on the loop's owner
    /// `ctx`: its callbacks run on the loop's thread, its end (a refusal
    /// too) goes back to the thread that made it.
    pub fn start<C: RequestLoop>(self, ctx: &mut C) -> Result<u64, Error> {
        let callbacks = self.callbacks.into_iter().map(CallbackFn::Remote).collect();
        ctx.begin(self.spec, callbacks, Done::Remote(self.done))
    }
}

/// A request being built on a loop's thread; finish it with
/// [`RequestBuilder::then`], [`RequestBuilder::send`], or (on a `mob-std`
/// kingpin) [`RequestBuilder::wait`]. `C` is the loop's owner, which `then`
/// and callback closures get.
pub struct RequestBuilder<'a, C: RequestLoop> {
    ctx: &'a mut C,
    spec: RequestSpec,
    callbacks: Vec<CallbackFn<C>>,
}

impl<'a, C: RequestLoop> RequestBuilder<'a, C> {
    /// A request from `ctx` (for runtimes: applications start requests with
    /// their mobster's or kingpin's `request`).
    pub fn new(ctx: &'a mut C, to: Target, name: &str, payload: Vec<u8>) -> Self {
        RequestBuilder { ctx, spec: RequestSpec::new(to, name, payload), callbacks: Vec::new() }
    }

    /// Uses namespace `ns` instead of the default `"_"`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.spec.ns = ns.to_string();
        self
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

    /// Passes a callback the handler may invoke once; `f` runs on this
    /// loop. It is released, uncalled, when the request's timeout passes or
    /// its handler dies.
    pub fn callback(mut self, f: impl FnOnce(&mut C, Reply) + 'static) -> Self {
        self.callbacks.push(CallbackFn::Local(Box::new(f)));
        self
    }

    /// Sends the request; `done` runs on this loop exactly once with its
    /// end. Returns the request's id. A target with no route is an error
    /// here.
    pub fn then(self, done: impl FnOnce(&mut C, Outcome) + 'static) -> Result<u64, Error> {
        self.ctx.begin(self.spec, self.callbacks, Done::Local(Box::new(done)))
    }

    /// Sends the request and ignores how it ends.
    pub fn send(self) -> Result<u64, Error> {
        self.ctx.begin(self.spec, self.callbacks, Done::Ignore)
    }
}

impl<C: WaitLoop> RequestBuilder<'_, C> {
    /// Sends the request and runs the loop until it ends (at the latest at
    /// its timeout). Events that arrive meanwhile reach the event handler
    /// after the wait. A request that ends without a reply is
    /// [`Error::Request`].
    pub fn wait(self) -> Result<Reply, Error> {
        let id = self.ctx.begin(self.spec, self.callbacks, Done::Wait)?;
        self.ctx.wait_for(id).map_err(Error::Request)
    }
}
