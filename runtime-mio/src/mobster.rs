//! The worker side: a *mobster* connected to its kingpin.

use crate::handlers::Handlers;
use crate::link::{Outgoing, READ_BUF, ReadEnd, ReadStep, WriteEnd, read_once, write_link};
use crate::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, Listener};
use crate::loop_tx::{Command, LoopTx};
use crate::wait::Waiter;
use crate::{Error, Handle, Message, RequestBuilder, WorkerEnv};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token, Waker};
use mob_app::RequestSpec as Spec;
use mob_app::{Answer, Callback, CallbackFn, Clock, Completions, Done, Reply, Request, RequestLoop, Responder};
use mob_proto::frame::Transmit;
use mob_proto::wire::{DEFAULT_NAMESPACE, RPC_NAMESPACE};
use mob_proto::{
    CloseReason, FLUSH_AT, Failure, FdHandle, FdTable, Source, Spin, Target, Worker, WorkerConfig, WorkerEvent,
    WorkerOutput,
};
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

const LINK: Token = Token(0);
const WAKER: Token = Token(1);

type MessageHandler = Box<dyn FnMut(&mut Mobster, Message<Source>)>;
type RequestHandler = Box<dyn FnMut(&mut Mobster, Request<Source>)>;
type StopHandler = Box<dyn FnOnce(&mut Mobster, StopDone)>;

/// A `require(role)` proxy: calls to the functions a role exports, each
/// going to any one worker of the role (the least loaded).
///
/// ```no_run
/// # fn f(mob: &mut mob_mio::Mobster) -> Result<(), mob_mio::Error> {
/// let back = mob.require("back");
/// back.call(mob, "foo", &())?.send()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Proxy {
    role: String,
}

impl Proxy {
    /// Starts a call of exported function `name` with `args`. Calling a name
    /// the role does not export ends in [`RequestError::NotExported`](crate::RequestError::NotExported).
    pub fn call<'a, T: Serialize + ?Sized>(
        &self,
        mob: &'a mut Mobster,
        name: &str,
        args: &T,
    ) -> Result<RequestBuilder<'a, Mobster>, Error> {
        let payload = mob_proto::wire::encode_payload(args)?;
        Ok(RequestBuilder::new(mob, Target::Any(self.role.clone()), name, payload).ns(RPC_NAMESPACE))
    }

    /// The role it calls.
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// A worker process's connection to its kingpin, and its event loop.
///
/// Register handlers with [`Mobster::on`] (one-way messages),
/// [`Mobster::on_request`] (requests) and [`Mobster::export`] (functions for
/// `require` proxies), then call [`Mobster::run`]. The loop ends when the
/// kingpin goes away (the worker should then exit) or the link fails.
///
/// ```no_run
/// use mob_mio::{Mobster, Target};
///
/// fn back(mut mob: Mobster) -> Result<(), mob_mio::Error> {
///     mob.export("add", |_mob, req| {
///         let (a, b): (u32, u32) = req.decode().unwrap_or_default();
///         req.respond(&(a + b)).ok();
///     })?;
///     mob.on("ping", |mob, msg| {
///         let n: u32 = msg.decode().unwrap_or(0);
///         mob.send(Target::Kingpin, "pong", &(n + 1)).ok();
///     });
///     mob.run()
/// }
/// ```
pub struct Mobster {
    env: WorkerEnv,
    config: WorkerConfig,
    proto: Worker,
    started: bool,
    sock: UnixStream,
    poll: Poll,
    /// How long the loop polls before it sleeps (`MOB_SPIN_US`, or
    /// [`Mobster::set_spin`]).
    waiter: Waiter,
    fds: FdTable<OwnedFd>,
    messages: Handlers<MessageHandler>,
    requests: Handlers<RequestHandler>,
    fallback: Option<MessageHandler>,
    completions: Completions<Mobster>,
    rx: Receiver<Command>,
    tx: Arc<LoopTx>,
    clock: Clock,
    closed: Option<CloseReason>,
    stop: bool,
    buf: Vec<u8>,
    /// The kingpin asked us to stop; we exit once nothing is in flight and
    /// the application confirmed.
    stop_requested: bool,
    stop_confirmed: Arc<AtomicBool>,
    on_stop: Option<StopHandler>,
    next_health: mob_proto::Instant,
    listener: Option<OwnedFd>,
    events: Events,
    /// Whether the link is registered for writability (a write is blocked).
    write_interest: bool,
    /// The waker fired: other threads may have sent commands.
    woken: bool,
}

/// How often a worker reports its memory and load to the kingpin.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The application's confirmation that it has cleaned up after a stop
/// request: call [`StopDone::confirm`], or drop it.
pub struct StopDone {
    confirmed: Arc<AtomicBool>,
    tx: Arc<LoopTx>,
    /// How long the kingpin waits before killing this worker.
    pub grace: Duration,
}

impl StopDone {
    /// Confirms now (dropping does the same).
    pub fn confirm(self) {}
}

impl Drop for StopDone {
    fn drop(&mut self) {
        self.confirmed.store(true, Ordering::SeqCst);
        self.tx.shared.wake();
    }
}

impl Mobster {
    /// Connects to the kingpin described by the environment.
    pub fn from_env() -> Result<Mobster, Error> {
        let (env, channel) = WorkerEnv::take_channel()?;
        Mobster::new(env, channel)
    }

    /// Connects over `channel` (a Unix stream socket) as the worker `env`
    /// describes. The handshake leaves when the worker first sends or runs.
    pub fn new(env: WorkerEnv, channel: OwnedFd) -> Result<Mobster, Error> {
        mob_sys::channel::set_nonblocking(&channel, true)?;
        // Our own children must not inherit the channel, or the kingpin would
        // not see end of stream when we die.
        mob_sys::channel::set_cloexec(&channel)?;
        let std_sock = std::os::unix::net::UnixStream::from(channel);
        let mut sock = UnixStream::from_std(std_sock);
        let poll = Poll::new()?;
        poll.registry().register(&mut sock, LINK, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = LoopTx::new(tx, waker);
        mob_sys::process::set_name(&format!("{}#{}", env.role, env.slot));
        let config =
            WorkerConfig { pid: std::process::id(), role: env.role.clone(), slot: env.slot, exports: Vec::new() };
        Ok(Mobster {
            proto: Worker::new(config.clone()),
            config,
            started: false,
            waiter: Waiter::new(env.spin.unwrap_or(Spin::DEFAULT_LIMIT)),
            env,
            sock,
            poll,
            fds: FdTable::new(),
            messages: Handlers::new(),
            requests: Handlers::new(),
            fallback: None,
            completions: Completions::new(),
            rx,
            tx,
            clock: Clock::new(),
            closed: None,
            stop: false,
            buf: vec![0; READ_BUF],
            stop_requested: false,
            stop_confirmed: Arc::new(AtomicBool::new(false)),
            on_stop: None,
            next_health: mob_proto::Instant::ZERO,
            listener: None,
            events: Events::with_capacity(64),
            write_interest: false,
            woken: true,
        })
    }

    /// Sets the longest this worker's loop polls for IO before it sleeps
    /// (see [`Spin`]; zero: it sleeps at once). The default is what the
    /// kingpin's `KingpinConfig::spin` says (passed in `MOB_SPIN_US`), or
    /// [`Spin::DEFAULT_LIMIT`]. Polling answers a quick message without
    /// the cost of waking a sleeping process, for some CPU time; the window
    /// shrinks by itself when messages come further apart than the limit,
    /// and polling stops while other tasks keep the CPUs busy.
    ///
    /// ```no_run
    /// # fn entry(mut mob: mob_mio::Mobster) -> Result<(), mob_mio::Error> {
    /// mob.set_spin(std::time::Duration::ZERO); // a background worker: never poll
    /// mob.run()
    /// # }
    /// ```
    pub fn set_spin(&mut self, limit: Duration) {
        self.waiter = Waiter::new(limit);
    }

    /// This worker's role.
    pub fn role(&self) -> &str {
        &self.env.role
    }

    /// This worker's slot within its role.
    pub fn slot(&self) -> u32 {
        self.env.slot
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.env.app
    }

    /// This worker's id, once the kingpin has welcomed it.
    pub fn id(&self) -> Option<u64> {
        self.proto.welcome().map(|w| w.worker)
    }

    /// A clonable, `Send` handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle::new(self.tx.clone())
    }

    /// Open requests, live callbacks, and unanswered calls (all zero when
    /// nothing is in flight).
    pub fn pending(&self) -> (usize, usize, usize) {
        self.proto.pending()
    }

    /// Handles one-way messages named `name` in the default namespace.
    pub fn on(&mut self, name: &str, handler: impl FnMut(&mut Mobster, Message<Source>) + 'static) {
        self.on_ns(DEFAULT_NAMESPACE, name, handler);
    }

    /// Handles one-way messages named `name` in namespace `ns`.
    pub fn on_ns(&mut self, ns: &str, name: &str, handler: impl FnMut(&mut Mobster, Message<Source>) + 'static) {
        self.messages.insert(ns, name, Box::new(handler));
    }

    /// Handles every one-way message no other handler takes.
    pub fn on_any(&mut self, handler: impl FnMut(&mut Mobster, Message<Source>) + 'static) {
        self.fallback = Some(Box::new(handler));
    }

    /// Handles requests named `name` in the default namespace. The handler
    /// answers through the [`Request`] (now or later, from any thread).
    pub fn on_request(&mut self, name: &str, handler: impl FnMut(&mut Mobster, Request<Source>) + 'static) {
        self.on_request_ns(DEFAULT_NAMESPACE, name, handler);
    }

    /// Handles requests named `name` in namespace `ns`.
    pub fn on_request_ns(
        &mut self,
        ns: &str,
        name: &str,
        handler: impl FnMut(&mut Mobster, Request<Source>) + 'static,
    ) {
        self.requests.insert(ns, name, Box::new(handler));
    }

    /// Exports function `name` to `require` proxies. Exports are announced
    /// in the handshake, so they must be declared before the worker first
    /// sends or runs ([`Error::TooLate`] otherwise).
    pub fn export(
        &mut self,
        name: &str,
        handler: impl FnMut(&mut Mobster, Request<Source>) + 'static,
    ) -> Result<(), Error> {
        if self.started {
            return Err(Error::TooLate);
        }
        self.config.exports.push(name.to_string());
        self.proto = Worker::new(self.config.clone());
        self.on_request_ns(RPC_NAMESPACE, name, handler);
        Ok(())
    }

    /// Handles jobs the kingpin's work queue sends this worker
    /// (load-process-manager's workers). Answer each through its
    /// [`Request`]: `respond` with data, or `ack` for a bare acknowledgement.
    pub fn on_job(&mut self, handler: impl FnMut(&mut Mobster, Request<Source>) + 'static) {
        self.on_request_ns(mob_proto::kingpin::JOB_NAMESPACE, mob_proto::kingpin::JOB_NAME, handler);
    }

    /// Calls and jobs received and not yet answered (load-process-manager's
    /// `requests()`).
    pub fn open_calls(&self) -> Vec<u64> {
        self.proto.open_calls().collect()
    }

    /// Takes new work again (load-process-manager's `ready()`).
    pub fn ready(&mut self) -> Result<(), Error> {
        self.set_ready(true)
    }

    /// Takes no new work until [`Mobster::ready`] (load-process-manager's
    /// `busy()`).
    pub fn busy(&mut self) -> Result<(), Error> {
        self.set_ready(false)
    }

    fn set_ready(&mut self, ready: bool) -> Result<(), Error> {
        self.started = true;
        let rss = mob_sys::process::rss_kib().unwrap_or(0);
        self.proto.set_ready(ready, rss)?;
        self.write();
        Ok(())
    }

    /// Asks the kingpin to resize this worker's role to `workers`, within
    /// the role's min and max (mob's `scale`).
    pub fn scale(&mut self, workers: u32) -> Result<(), Error> {
        self.started = true;
        self.proto.scale(workers)?;
        self.write();
        Ok(())
    }

    /// Runs `handler` when the kingpin asks this worker to stop (a soft
    /// kill, a resize, a reload). The worker exits once every call it is
    /// handling has been answered and the handler's [`StopDone`] is dropped
    /// or confirmed; without a handler, as soon as its calls are answered.
    pub fn on_stop(&mut self, handler: impl FnOnce(&mut Mobster, StopDone) + 'static) {
        self.on_stop = Some(Box::new(handler));
    }

    /// A proxy for the functions `role` exports.
    pub fn require(&self, role: &str) -> Proxy {
        Proxy { role: role.to_string() }
    }

    /// Sends `value` (postcard-encoded) as message `name` in the default
    /// namespace.
    pub fn send<T: Serialize + ?Sized>(&mut self, to: Target, name: &str, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, &payload, Vec::new())
    }

    /// Sends raw bytes with fds (given up by the caller).
    pub fn send_raw(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        self.started = true;
        let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
        let result = self.proto.send(to, ns, name, payload, handles);
        // Write now (a long handler's sends do not wait for its end); other
        // outputs (events, releases) wait for the loop, so a handler that
        // sends is never re-entered.
        self.write();
        Ok(result?)
    }

    /// Starts a request carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(
        &mut self,
        to: Target,
        name: &str,
        value: &T,
    ) -> Result<RequestBuilder<'_, Mobster>, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        Ok(RequestBuilder::new(self, to, name, payload))
    }

    /// Asks the loop to stop after the current event.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Runs the event loop until the link closes or [`Mobster::stop`].
    /// Returns `Ok` when the kingpin closed the link cleanly.
    pub fn run(mut self) -> Result<(), Error> {
        self.started = true;
        while self.turn()? {}
        match self.closed.take() {
            Some(CloseReason::Eof) | None => Ok(()),
            Some(reason) => Err(Error::Closed(reason)),
        }
    }

    /// The listening socket the kingpin shares with this role (see
    /// [`crate::App::listen`]), once it has arrived: runs the loop (handlers
    /// included) until it does. Each call returns a new handle to the same
    /// socket.
    pub fn listener(&mut self) -> Result<Listener, Error> {
        self.started = true;
        loop {
            if let Some(fd) = &self.listener {
                return Ok(Listener::from_fd(fd.try_clone()?)?);
            }
            if !self.turn()? {
                return Err(Error::Closed(self.closed.clone().unwrap_or(CloseReason::Stopped)));
            }
        }
    }

    /// Handles connections the kingpin accepts for this role and hands to
    /// the least loaded worker (see [`crate::ListenMode::Distributed`]).
    pub fn on_connection(&mut self, mut handler: impl FnMut(&mut Mobster, OwnedFd) + 'static) {
        self.on_ns(LISTEN_NAMESPACE, LISTEN_CONNECTION, move |mob, mut msg| {
            if let Some(fd) = msg.fds.pop() {
                handler(mob, fd);
            }
        });
    }

    /// One turn of the event loop: carry out pending work, wait for IO or a
    /// timer, handle it. False once the loop should end.
    fn turn(&mut self) -> Result<bool, Error> {
        {
            self.pump();
            if self.closed.is_some() || self.stop {
                return Ok(false);
            }
            if self.stop_requested && self.stop_confirmed.load(Ordering::SeqCst) && self.proto.pending().2 == 0 {
                self.flush_blocking();
                return Ok(false);
            }
            let now = self.clock.now();
            if now >= self.next_health {
                self.next_health = now + HEALTH_INTERVAL;
                if self.proto.is_running() {
                    let _ = self.proto.report_health(mob_sys::process::rss_kib().unwrap_or(0));
                    self.write();
                }
            }
            let due = self.proto.poll_timeout();
            let next = due.map_or(self.next_health, |t| t.min(self.next_health));
            let timeout = Some(Clock::wait(now, next));
            let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            if let Err(e) = self.waiter.wait(&mut self.poll, &self.clock, &mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(e.into());
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    self.woken = true;
                }
                if event.token() == LINK {
                    if event.is_readable() || event.is_read_closed() {
                        self.read();
                    }
                    if event.is_writable() {
                        self.write();
                    }
                }
            }
            self.events = events;
            // Only when something was due: a deadline set during this turn
            // is seen by the next `poll_timeout`.
            if let Some(t) = due {
                let now = self.clock.now();
                if t <= now {
                    self.proto.handle_timeout(now);
                }
            }
        }
        Ok(true)
    }

    /// Reads until the socket would block, running the handlers of each
    /// read's frames before the next read (so that the read buffer and the
    /// frames' shared bytes are free again, and memory stays flat).
    fn read(&mut self) {
        loop {
            let end = match read_once(&self.sock, &mut self.buf, &mut self.fds) {
                ReadStep::Data { n, fds, more } => {
                    self.proto.handle_read(&self.buf[..n], fds);
                    self.pump();
                    if more && !self.proto.is_closed() && !self.stop {
                        continue;
                    }
                    return;
                }
                ReadStep::End(end) => end,
            };
            match end {
                ReadEnd::Drained => {}
                ReadEnd::Eof => self.proto.handle_eof(),
                ReadEnd::Failed(what) => self.proto.handle_link_error(what),
            }
            return;
        }
    }

    fn write(&mut self) {
        let end = write_link(&self.sock, &mut WorkerOut(&mut self.proto), &mut self.fds);
        // Ask for writability only while a write is blocked: otherwise every
        // send would come back as a wake-up that says "writable".
        let want = matches!(end, WriteEnd::Blocked);
        if want != self.write_interest {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if self.poll.registry().reregister(&mut self.sock, LINK, interest).is_ok() {
                self.write_interest = want;
            }
        }
        if let WriteEnd::Failed = end {
            self.proto.handle_link_error("write error");
        }
    }

    /// Carries out everything proto and other threads ask for, until both
    /// are quiet.
    ///
    /// The handlers' answers leave here, in one write for all of them
    /// (unless [`FLUSH_AT`] bytes piled up: then before the next handler
    /// runs).
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(cmd) = self.tx.next(&self.rx, &mut self.woken) {
                busy = true;
                self.command(cmd);
            }
            while let Some(out) = self.proto.poll_output() {
                busy = true;
                self.output(out);
            }
            if !busy {
                break;
            }
        }
        if self.proto.queued_bytes() > 0 && !self.write_interest {
            self.write();
        }
    }

    fn output(&mut self, out: WorkerOutput) {
        match out {
            // Written at the end of the pump.
            WorkerOutput::Transmit => {}
            WorkerOutput::ReleaseFd(h) => drop(self.fds.take(h)),
            WorkerOutput::Closed(reason) => self.closed = Some(reason),
            WorkerOutput::Event(event) => self.event(event),
        }
    }

    fn event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Welcome(_) | WorkerEvent::Cancelled { .. } => {}
            WorkerEvent::Stop { grace } => {
                self.stop_requested = true;
                let done = StopDone { confirmed: self.stop_confirmed.clone(), tx: self.tx.clone(), grace };
                match self.on_stop.take() {
                    Some(handler) => self.guard(|mob| handler(mob, done)),
                    None => drop(done),
                }
            }
            WorkerEvent::Message { from, ns, name, payload, fds } => {
                let fds = self.take_fds(fds);
                self.dispatch_message(Message { from, ns, name, payload, fds });
            }
            WorkerEvent::Request { call, from, ns, name, payload, fds, callbacks } => {
                let fds = self.take_fds(fds);
                let to = Answer::Call(call);
                let callbacks = callbacks.into_iter().map(|id| Callback::new(to, id, self.tx.clone())).collect();
                let responder = Responder::new(to, self.tx.clone());
                self.dispatch_request(Request::new(from, ns, name, payload, fds, callbacks, responder));
            }
            WorkerEvent::Reply { id, result } => {
                let outcome = result.map(|(payload, fds)| Reply { payload, fds: self.take_fds(fds) });
                if let Some(done) = self.completions.done.remove(&id) {
                    self.guard(|mob| {
                        done.finish(mob, outcome);
                    });
                }
            }
            WorkerEvent::Callback { callback, payload, fds } => {
                let reply = Reply { payload, fds: self.take_fds(fds) };
                if let Some(f) = self.completions.callbacks.remove(&callback) {
                    self.guard(|mob| f.call(mob, reply));
                }
            }
            WorkerEvent::CallbackReleased { callback } => {
                self.completions.callbacks.remove(&callback);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { to, ns, name, payload, fds } => {
                let _ = self.send_raw(to, &ns, &name, &payload, fds);
            }
            Command::Request(r) => {
                let _ = r.start(self);
            }
            Command::Answer(answered) => mob_app::worker::hand_answer(&mut self.proto, &mut self.fds, answered),
            Command::Kingpin(_) => {}
            Command::Stop => self.stop = true,
        }
    }

    fn take_fds(&mut self, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
        if handles.is_empty() {
            return Vec::new();
        }
        handles.into_iter().filter_map(|h| self.fds.take(h)).collect()
    }

    fn dispatch_message(&mut self, mut msg: Message<Source>) {
        if msg.ns == LISTEN_NAMESPACE && msg.name == LISTEN_LISTENER {
            self.listener = msg.fds.pop();
            return;
        }
        if let Some(h) = self.messages.get_text(&msg.ns, &msg.name) {
            self.guard(|mob| (h.borrow_mut())(mob, msg));
        } else if let Some(mut h) = self.fallback.take() {
            self.guard(|mob| h(mob, msg));
            self.fallback.get_or_insert(h);
        }
    }

    /// Runs application code. If it panics, the kingpin is told why (so it
    /// can report the role's last error) before this process exits.
    fn guard(&mut self, f: impl FnOnce(&mut Mobster)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_ok() {
            // Answers the handler gave are queued before the next frame is
            // handled; the pump writes them, those of every frame of a read
            // in one write, unless many are waiting.
            while let Some(cmd) = self.tx.next_local() {
                self.command(cmd);
            }
            if self.proto.queued_bytes() >= FLUSH_AT {
                self.write();
            }
        }
        if let Err(panic) = result {
            let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
                (Some(s), _) => (*s).to_string(),
                (_, Some(s)) => s.clone(),
                _ => "panicked".to_string(),
            };
            let _ = self.proto.fatal(&format!("panicked: {message}"));
            self.flush_blocking();
            std::process::exit(101);
        }
    }

    /// Writes everything queued, waiting for the socket if need be.
    fn flush_blocking(&mut self) {
        if mob_sys::channel::set_nonblocking(&self.sock, false).is_ok() {
            self.write();
            let _ = mob_sys::channel::set_nonblocking(&self.sock, true);
        }
    }

    fn dispatch_request(&mut self, req: Request<Source>) {
        if let Some(h) = self.requests.get_text(&req.ns, &req.name) {
            self.guard(|mob| (h.borrow_mut())(mob, req));
        } else {
            let known_ns = self.requests.has_ns(&req.ns);
            let failure =
                if known_ns || req.ns == DEFAULT_NAMESPACE { Failure::Unhandled } else { Failure::UnknownNamespace };
            let _ = req.into_responder().refuse(failure);
        }
    }
}

impl RequestLoop for Mobster {
    fn begin(&mut self, spec: Spec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error> {
        self.started = true;
        let Spec { to, ns, name, payload, fds, timeout } = spec;
        let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
        let now = self.clock.now();
        match self.proto.request(to, &ns, &name, &payload, handles, timeout, callbacks.len(), now) {
            Ok((id, ids)) => {
                self.completions.insert(id, done, ids, callbacks);
                self.write();
                Ok(id)
            }
            Err(e) => {
                if let Done::Remote(r) = done {
                    r.finish(Err(Error::Send(e.clone())));
                }
                Err(Error::Send(e))
            }
        }
    }
}

struct WorkerOut<'a>(&'a mut Worker);

impl Outgoing for WorkerOut<'_> {
    fn peek(&self) -> Option<Transmit<'_>> {
        self.0.poll_transmit()
    }

    fn advance(&mut self, n: usize) -> Vec<FdHandle> {
        self.0.handle_transmitted(n)
    }
}
