//! The worker side: a *mobster* connected to its kingpin, with a plain
//! blocking API.
//!
//! Three threads serve the link: a driver that owns the proto state machine
//! (it answers heartbeats, fires timeouts and reports health whatever the
//! application is doing), a reader and a writer. The application talks to
//! the driver through a channel, so any number of its threads may send,
//! request and answer at once, and both sides sending at the same time never
//! deadlocks.

use crate::link::{Credit, LinkIo, Msg, ReadEnd, Writes};
use crate::loop_tx::{Command, LoopTx, Starter, WorkerCommand};
use crate::{Error, Handle, HandleRequest, Message, Reply, Request, WorkerEnv};
use mob_app::{Answer, Callback, Clock, RemoteCallback, RemoteDone, RemoteRequest, RequestSpec, Responder};
use mob_proto::wire::{DEFAULT_NAMESPACE, RPC_NAMESPACE};
use mob_proto::{CloseReason, Failure, FdHandle, FdTable, LinkId, SendError, Source, Target, Worker, WorkerConfig};
use mob_proto::{WorkerEvent, WorkerOutput};
use mob_sys::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, Listener};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a worker reports its memory and load to the kingpin.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The one link of a worker.
const LINK: LinkId = LinkId::from_u64(0);

/// What a worker receives: the next thing its application must handle.
#[derive(Debug)]
pub enum Incoming {
    /// A one-way message.
    Message(Message<Source>),
    /// A request (a job from the work queue too, see [`Request::is_job`]):
    /// answer it exactly once, now or later, from any thread; dropping it
    /// answers "dropped without reply".
    Request(Request<Source>),
    /// The kingpin asks this worker to stop (a soft kill, a resize, a
    /// reload): nothing is in flight to it any more. Clean up and return
    /// from the worker's entry within the grace period given here, after
    /// which the process is killed.
    Stop(Duration),
    /// A connection the kingpin accepted on this role's
    /// [`crate::ListenMode::Distributed`] listener and handed to this
    /// worker (the least loaded ready one): serve it, here or on another
    /// thread. It is mob-mio's `on_connection`, as the next thing received.
    Connection(OwnedFd),
}

/// A `require(role)` proxy: calls to the functions a role exports, each
/// going to any one worker of the role (the least loaded).
///
/// ```no_run
/// # fn f(mob: &mob_std::Mobster) -> Result<(), mob_std::Error> {
/// let back = mob.require("back");
/// let sum: u32 = back.call(mob, "add", &(2u32, 3u32))?.wait()?.decode()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Proxy {
    role: String,
}

impl Proxy {
    /// Starts a call of exported function `name` with `args`. Calling a name
    /// the role does not export ends in [`mob_proto::RequestError::NotExported`].
    pub fn call<T: Serialize + ?Sized>(&self, mob: &Mobster, name: &str, args: &T) -> Result<HandleRequest, Error> {
        mob.handle().call(&self.role, name, args)
    }

    /// The role it calls.
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// What the application's side and the driver share.
struct WorkerState {
    /// This worker's id, from the kingpin's welcome.
    id: OnceLock<u64>,
    /// Why the link closed, once it has (`None` after a local stop).
    closed: Mutex<Option<CloseReason>>,
    /// Read-ahead: bytes read and not yet received by the application.
    credit: Arc<Credit>,
    /// The driver thread, once started.
    driver: Mutex<Option<JoinHandle<()>>>,
    /// The listener shared with this worker's role, once it has arrived.
    listening: Mutex<Listening>,
    /// Signalled when the listener arrives or the driver ends.
    listening_cv: Condvar,
}

/// The driver's side of [`Mobster::listener`].
#[derive(Default)]
struct Listening {
    fd: Option<OwnedFd>,
    /// The driver has ended (or never started): no listener will come.
    ended: bool,
}

/// Marks the driver ended when dropped (as it ends, or if it could not
/// start), waking [`Mobster::listener`].
struct DriverEnd(Arc<WorkerState>);

impl Drop for DriverEnd {
    fn drop(&mut self) {
        lock(&self.0.listening).ended = true;
        self.0.listening_cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker process's connection to its kingpin.
///
/// The handshake leaves when the worker first sends, requests, receives or
/// reports (so that [`Mobster::export`] can come first); from then on the
/// connection runs on its own threads, answering heartbeats and reporting
/// health whatever the application does. The application receives with
/// [`Mobster::recv`] and answers each [`Request`] exactly once, from any
/// thread; [`Mobster::handle`] gives other threads a way in.
///
/// Dropping the mobster writes what is queued and closes the link; during
/// a panic it first tells the kingpin the panic's message (its
/// [`crate::Event::WorkerExited`] error).
///
/// A worker must keep receiving. What waits for the application counts
/// against the link's read-ahead (8 MiB): past it the mobster stops reading,
/// as a `mob-mio` worker whose handler does not return does, so the kingpin
/// meets backpressure, and a worker that stays that way stops answering
/// heartbeats and is treated as hung.
///
/// ```no_run
/// use mob_std::{Incoming, Mobster, Target};
///
/// fn back(mut mob: Mobster) -> Result<(), mob_std::Error> {
///     mob.export("add")?;
///     loop {
///         match mob.recv() {
///             Ok(Incoming::Request(req)) if req.name == "add" => {
///                 let (a, b): (u32, u32) = req.decode()?;
///                 req.respond(&(a + b))?;
///             }
///             Ok(Incoming::Message(msg)) if msg.name == "ping" => {
///                 let n: u32 = msg.decode().unwrap_or(0);
///                 mob.send(Target::Kingpin, "pong", &(n + 1))?;
///             }
///             Ok(Incoming::Stop(_)) => return Ok(()),
///             Ok(_) => {} // a request dropped here answers "dropped"
///             Err(mob_std::Error::Closed(_)) => return Ok(()),
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// ```
pub struct Mobster {
    env: WorkerEnv,
    tx: Arc<LoopTx>,
    state: Arc<WorkerState>,
    incoming: Receiver<(Incoming, usize)>,
}

impl Mobster {
    /// Connects to the kingpin described by the environment.
    pub fn from_env() -> Result<Mobster, Error> {
        let (env, channel) = WorkerEnv::take_channel()?;
        Mobster::new(env, channel)
    }

    /// Connects over `sock` (a Unix stream socket) as the worker `env`
    /// describes. The handshake leaves when the worker first sends,
    /// requests, receives or reports.
    pub fn new(env: WorkerEnv, sock: OwnedFd) -> Result<Mobster, Error> {
        // Our own children must not inherit the channel, or the kingpin would
        // not see end of stream when we die.
        mob_sys::channel::set_cloexec(&sock)?;
        mob_sys::process::set_name(&format!("{}#{}", env.role, env.slot));
        install_panic_hook();
        let (tx, rx) = channel::<Msg>();
        let (app_tx, app_rx) = channel();
        let state = Arc::new(WorkerState {
            id: OnceLock::new(),
            closed: Mutex::new(None),
            credit: Credit::new(),
            driver: Mutex::new(None),
            listening: Mutex::new(Listening::default()),
            listening_cv: Condvar::new(),
        });
        let config =
            WorkerConfig { pid: std::process::id(), role: env.role.clone(), slot: env.slot, exports: Vec::new() };
        let loop_tx = LoopTx::new(tx);
        let run = {
            let (state, weak) = (state.clone(), Arc::downgrade(&loop_tx));
            move |exports: Vec<String>| {
                let Some(loop_tx) = weak.upgrade() else { return };
                let driver_state = state.clone();
                let end = DriverEnd(state.clone());
                let config = WorkerConfig { exports, ..config };
                let spawned = std::thread::Builder::new().name("mob-driver".into()).spawn(move || {
                    Driver::start(config, sock, loop_tx, rx, app_tx, driver_state);
                    drop(end);
                });
                if let Ok(handle) = spawned {
                    *lock(&state.driver) = Some(handle);
                }
            }
        };
        loop_tx.set_starter(Starter { exports: Vec::new(), run: Box::new(run) });
        Ok(Mobster { env, tx: loop_tx, state, incoming: app_rx })
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
        self.state.id.get().copied()
    }

    /// A clonable, `Send` handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle::new(self.tx.clone())
    }

    /// Exports function `name` to `require` proxies: its calls arrive as
    /// requests in namespace [`mob_proto::wire::RPC_NAMESPACE`] (calls of
    /// names not exported are refused without reaching the application).
    /// Exports are announced in the handshake, so they must be declared
    /// before the worker first sends, requests, receives or reports
    /// ([`Error::TooLate`] otherwise).
    pub fn export(&mut self, name: &str) -> Result<(), Error> {
        self.tx.export(name)
    }

    /// A proxy for the functions `role` exports.
    pub fn require(&self, role: &str) -> Proxy {
        Proxy { role: role.to_string() }
    }

    /// Sends `value` (postcard-encoded) as message `name` in the default
    /// namespace. Returns once the message is queued for the kingpin (local
    /// errors, such as a message too large, are reported; routing happens
    /// at the kingpin).
    pub fn send<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, &payload, Vec::new())
    }

    /// Sends raw bytes with fds (given up by the caller).
    pub fn send_raw(&self, to: Target, ns: &str, name: &str, payload: &[u8], fds: Vec<OwnedFd>) -> Result<(), Error> {
        let (ns, name, payload) = (ns.to_string(), name.to_string(), payload.to_vec());
        self.ask(|ack| WorkerCommand::Send { to, ns, name, payload, fds, ack })
            .unwrap_or(Err(Error::Send(SendError::Closed)))
    }

    /// Starts a request carrying `value` (postcard-encoded); finish it with
    /// [`HandleRequest::wait`], [`HandleRequest::then`] or
    /// [`HandleRequest::send`].
    pub fn request<T: Serialize + ?Sized>(&self, to: Target, name: &str, value: &T) -> Result<HandleRequest, Error> {
        self.handle().request(to, name, value)
    }

    /// The next message, request or stop request, waiting as long as it
    /// takes. Once the link has closed: [`Error::Closed`] with the reason
    /// (`Closed(CloseReason::Eof)` when the kingpin went away), or
    /// [`Error::Stopped`] after [`Handle::stop`].
    pub fn recv(&self) -> Result<Incoming, Error> {
        self.tx.ensure_started();
        match self.incoming.recv() {
            Ok((incoming, cost)) => {
                self.state.credit.give(cost);
                Ok(incoming)
            }
            Err(_) => Err(self.ended()),
        }
    }

    /// As [`Mobster::recv`], waiting at most `timeout`: `Ok(None)` if nothing
    /// came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Incoming>, Error> {
        self.tx.ensure_started();
        match self.incoming.recv_timeout(timeout) {
            Ok((incoming, cost)) => {
                self.state.credit.give(cost);
                Ok(Some(incoming))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// The listening socket the kingpin shares with this role (see
    /// [`crate::App::listen`] and [`crate::ListenMode::Shared`]), waiting
    /// until it has arrived (it is queued before the kingpin's welcome, so
    /// it comes at once). Messages and requests that arrive meanwhile stay
    /// queued for [`Mobster::recv`]. Each call returns a new handle to the
    /// same socket. Once the link has closed without one: the error
    /// [`Mobster::recv`] would give.
    pub fn listener(&self) -> Result<Listener, Error> {
        self.tx.ensure_started();
        let mut listening = lock(&self.state.listening);
        loop {
            if let Some(fd) = &listening.fd {
                return Ok(Listener::from_fd(fd.try_clone()?)?);
            }
            if listening.ended {
                drop(listening);
                return Err(self.ended());
            }
            listening = self.state.listening_cv.wait(listening).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Why nothing more will be received.
    fn ended(&self) -> Error {
        match lock(&self.state.closed).clone() {
            Some(reason) => Error::Closed(reason),
            None => Error::Stopped,
        }
    }

    /// Takes new work again (load-process-manager's `ready()`).
    pub fn ready(&self) -> Result<(), Error> {
        self.ask(|ack| WorkerCommand::SetReady(true, ack)).unwrap_or(Err(Error::Send(SendError::Closed)))
    }

    /// Takes no new work until [`Mobster::ready`] (load-process-manager's
    /// `busy()`).
    pub fn busy(&self) -> Result<(), Error> {
        self.ask(|ack| WorkerCommand::SetReady(false, ack)).unwrap_or(Err(Error::Send(SendError::Closed)))
    }

    /// Asks the kingpin to resize this worker's role to `workers`, within
    /// the role's min and max (mob's `scale`).
    pub fn scale(&self, workers: u32) -> Result<(), Error> {
        self.ask(|ack| WorkerCommand::Scale(workers, ack)).unwrap_or(Err(Error::Send(SendError::Closed)))
    }

    /// Open requests, live callbacks, and unanswered calls (all zero when
    /// nothing is in flight, and once the link is closed).
    pub fn pending(&self) -> (usize, usize, usize) {
        self.ask(WorkerCommand::Pending).unwrap_or_default()
    }

    /// Calls and jobs received and not yet answered (load-process-manager's
    /// `requests()`).
    pub fn open_calls(&self) -> Vec<u64> {
        self.ask(WorkerCommand::OpenCalls).unwrap_or_default()
    }

    /// Sends `make(ack)` to the driver and waits for its answer on `ack`.
    fn ask<T>(&self, make: impl FnOnce(std::sync::mpsc::SyncSender<T>) -> WorkerCommand) -> Option<T> {
        let (ack, answer) = sync_channel(1);
        self.tx.send_worker(make(ack)).ok()?;
        answer.recv().ok()
    }
}

impl Drop for Mobster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let message = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".to_string());
            let _ = self.tx.send_worker(WorkerCommand::Fatal(format!("panicked: {message}")));
        }
        if !self.tx.is_started() {
            return;
        }
        let _ = self.tx.sender().send(Msg::Worker(WorkerCommand::Shutdown));
        let driver = lock(&self.state.driver).take();
        if let Some(driver) = driver {
            let _ = driver.join();
        }
    }
}

thread_local! {
    /// The message of the last panic on this thread, for the kingpin.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records each panic's message (then runs the previous hook), so that a
/// mobster dropped while unwinding can tell the kingpin why it dies.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload_as_str().unwrap_or("panicked").to_string();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
            previous(info);
        }));
    });
}

/// The driver thread: the one owner of the worker state machine.
struct Driver {
    proto: Worker,
    io: LinkIo,
    /// What the link's writer thread has written.
    writes: Arc<Writes>,
    fds: FdTable<OwnedFd>,
    rx: Receiver<Msg>,
    tx: Arc<LoopTx>,
    app: Sender<(Incoming, usize)>,
    state: Arc<WorkerState>,
    exports: Vec<String>,
    completions: HashMap<u64, RemoteDone>,
    callbacks: HashMap<u64, RemoteCallback>,
    clock: Clock,
    next_health: mob_proto::Instant,
    /// Write what is queued, then end.
    closing: bool,
    closed: Option<CloseReason>,
}

impl Driver {
    fn start(
        config: WorkerConfig,
        channel: OwnedFd,
        tx: Arc<LoopTx>,
        rx: Receiver<Msg>,
        app: Sender<(Incoming, usize)>,
        state: Arc<WorkerState>,
    ) {
        tx.set_thread();
        let writes = Writes::new();
        let io = match LinkIo::start(LINK, channel, tx.sender(), writes.clone(), state.credit.clone(), "mob-link") {
            Ok(io) => io,
            Err(_) => {
                *lock(&state.closed) = Some(CloseReason::Transport("could not start the link's threads"));
                return;
            }
        };
        let clock = Clock::new();
        let driver = Driver {
            exports: config.exports.clone(),
            proto: Worker::new(config),
            io,
            writes,
            fds: FdTable::new(),
            rx,
            tx,
            app,
            state,
            completions: HashMap::new(),
            callbacks: HashMap::new(),
            next_health: clock.now(),
            clock,
            closing: false,
            closed: None,
        };
        driver.run();
    }

    fn run(mut self) {
        loop {
            self.pump();
            if self.closed.is_some() {
                break;
            }
            if self.closing && !self.io.is_writing() && self.proto.poll_transmit().is_none() {
                break;
            }
            let now = self.clock.now();
            if now >= self.next_health {
                self.next_health = now + HEALTH_INTERVAL;
                if self.proto.is_running() {
                    let _ = self.proto.report_health(mob_sys::process::rss_kib().unwrap_or(0));
                }
                continue;
            }
            let next = self.proto.poll_timeout().map_or(self.next_health, |t| t.min(self.next_health));
            match self.rx.recv_timeout(self.clock.until(next)) {
                Ok(msg) => self.message(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.proto.handle_timeout(self.clock.now());
        }
        self.finish();
    }

    /// The loop is over: close the link, end what is still open.
    fn finish(mut self) {
        *lock(&self.state.closed) = self.closed.take();
        let Driver { io, completions, callbacks, .. } = self;
        io.close(None);
        for (_, done) in completions {
            done.finish(Err(Error::Stopped));
        }
        drop(callbacks);
    }

    /// Carries out what proto asks until it is quiet.
    fn pump(&mut self) {
        while let Some(out) = self.proto.poll_output() {
            match out {
                WorkerOutput::Transmit => self.flush(),
                WorkerOutput::ReleaseFd(h) => drop(self.fds.take(h)),
                WorkerOutput::Closed(reason) => self.closed = Some(reason),
                WorkerOutput::Event(event) => self.event(event),
            }
        }
    }

    fn message(&mut self, msg: Msg) {
        self.finish_writes();
        match msg {
            Msg::Read { bytes, fds, .. } => {
                let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
                self.proto.handle_read(&bytes, handles);
                self.state.credit.give(bytes.len());
            }
            Msg::ReadEnd { end: ReadEnd::Eof, .. } => self.proto.handle_eof(),
            Msg::ReadEnd { end: ReadEnd::Failed(what), .. } => self.proto.handle_link_error(what),
            Msg::WritesDone => {}
            Msg::Signals(_) | Msg::Control(_) => {}
            Msg::App(cmd) => self.command(cmd),
            Msg::Worker(cmd) => self.worker_command(cmd),
        }
    }

    /// Hands proto what the writer has written, and the writer its next
    /// chunk.
    fn finish_writes(&mut self) {
        for (_, written) in self.writes.take() {
            match written {
                Some(n) => {
                    self.io.written();
                    for h in self.proto.handle_transmitted(n) {
                        drop(self.fds.take(h));
                    }
                    self.flush();
                }
                None => self.proto.handle_link_error("write error"),
            }
        }
    }

    /// Writes what proto queued: at once while the socket takes it, then
    /// through the writer thread.
    fn flush(&mut self) {
        while let Some(n) = self.io.flush(self.proto.poll_transmit(), &mut self.fds) {
            for h in self.proto.handle_transmitted(n) {
                drop(self.fds.take(h));
            }
        }
    }

    fn take_fds(&mut self, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
        handles.into_iter().filter_map(|h| self.fds.take(h)).collect()
    }

    fn insert_fds(&mut self, fds: Vec<OwnedFd>) -> Vec<FdHandle> {
        fds.into_iter().map(|fd| self.fds.insert(fd)).collect()
    }

    /// Hands `incoming` to the application, counting it against the link's
    /// read-ahead until it is received.
    fn deliver(&mut self, incoming: Incoming, cost: usize) {
        self.state.credit.add(cost);
        if self.app.send((incoming, cost)).is_err() {
            // Nobody receives any more: a request dropped here answers
            // "dropped".
            self.state.credit.give(cost);
        }
    }

    fn event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Welcome(w) => {
                let _ = self.state.id.set(w.worker);
            }
            WorkerEvent::Cancelled { .. } => {}
            WorkerEvent::Stop { grace } => self.deliver(Incoming::Stop(grace), 0),
            WorkerEvent::Message { from, ns, name, payload, fds } => {
                let mut fds = self.take_fds(fds);
                if ns == LISTEN_NAMESPACE && name == LISTEN_LISTENER {
                    // Kept for `Mobster::listener`, not queued for `recv`.
                    if let Some(fd) = fds.pop() {
                        lock(&self.state.listening).fd = Some(fd);
                        self.state.listening_cv.notify_all();
                    }
                    return;
                }
                if ns == LISTEN_NAMESPACE && name == LISTEN_CONNECTION {
                    if let Some(fd) = fds.pop() {
                        self.deliver(Incoming::Connection(fd), cost(&ns, &name, payload.len()));
                    }
                    return;
                }
                let cost = cost(&ns, &name, payload.len());
                self.deliver(Incoming::Message(Message { from, ns, name, payload, fds }), cost);
            }
            WorkerEvent::Request { call, from, ns, name, payload, fds, callbacks } => {
                let fds = self.take_fds(fds);
                if ns == RPC_NAMESPACE && !self.exports.iter().any(|e| *e == name) {
                    // As a worker with a handler per export would answer.
                    let failure = if self.exports.is_empty() { Failure::UnknownNamespace } else { Failure::Unhandled };
                    drop(fds);
                    let _ = self.proto.respond(call, Err(failure), &[], Vec::new());
                    return;
                }
                let to = Answer::Call(call);
                let callbacks = callbacks.into_iter().map(|id| Callback::new(to, id, self.tx.clone())).collect();
                let responder = Responder::new(to, self.tx.clone());
                let cost = cost(&ns, &name, payload.len());
                self.deliver(Incoming::Request(Request::new(from, ns, name, payload, fds, callbacks, responder)), cost);
            }
            WorkerEvent::Reply { id, result } => {
                let outcome = match result {
                    Ok((payload, fds)) => Ok(Reply { payload, fds: self.take_fds(fds) }),
                    Err(e) => Err(Error::Request(e)),
                };
                if let Some(done) = self.completions.remove(&id) {
                    done.finish(outcome);
                }
            }
            WorkerEvent::Callback { callback, payload, fds } => {
                let reply = Reply { payload, fds: self.take_fds(fds) };
                if let Some(f) = self.callbacks.remove(&callback) {
                    f(reply);
                }
            }
            WorkerEvent::CallbackReleased { callback } => {
                self.callbacks.remove(&callback);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { to, ns, name, payload, fds } => {
                let handles = self.insert_fds(fds);
                let _ = self.proto.send(to, &ns, &name, &payload, handles);
            }
            Command::Request(r) => self.begin(r),
            Command::Answer(answered) => mob_app::worker::hand_answer(&mut self.proto, &mut self.fds, answered),
            Command::Kingpin(_) => {}
            Command::Stop => self.closing = true,
        }
    }

    fn worker_command(&mut self, cmd: WorkerCommand) {
        match cmd {
            WorkerCommand::Send { to, ns, name, payload, fds, ack } => {
                let handles = self.insert_fds(fds);
                let _ = ack.send(self.proto.send(to, &ns, &name, &payload, handles).map_err(Error::Send));
            }
            WorkerCommand::Shutdown => self.closing = true,
            WorkerCommand::SetReady(ready, ack) => {
                let rss = mob_sys::process::rss_kib().unwrap_or(0);
                let _ = ack.send(self.proto.set_ready(ready, rss).map_err(Error::Send));
            }
            WorkerCommand::Scale(workers, ack) => {
                let _ = ack.send(self.proto.scale(workers).map_err(Error::Send));
            }
            WorkerCommand::Fatal(message) => {
                let _ = self.proto.fatal(&message);
            }
            WorkerCommand::Pending(ack) => {
                let _ = ack.send(self.proto.pending());
            }
            WorkerCommand::OpenCalls(ack) => {
                let _ = ack.send(self.proto.open_calls().collect());
            }
        }
    }

    fn begin(&mut self, r: RemoteRequest) {
        let RemoteRequest { spec: RequestSpec { to, ns, name, payload, fds, timeout }, callbacks, done } = r;
        if self.closing {
            return done.finish(Err(Error::Stopped));
        }
        let handles = self.insert_fds(fds);
        let now = self.clock.now();
        match self.proto.request(to, &ns, &name, &payload, handles, timeout, callbacks.len(), now) {
            Ok((id, ids)) => {
                self.completions.insert(id, done);
                self.callbacks.extend(ids.into_iter().zip(callbacks));
            }
            Err(e) => done.finish(Err(Error::Send(e))),
        }
    }
}

/// What a message queued for the application counts against the link's
/// read-ahead: about its frame's size.
fn cost(ns: &str, name: &str, payload: usize) -> usize {
    payload + ns.len() + name.len() + 64
}
