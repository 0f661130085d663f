//! The kingpin side: the supervisor's loop, on the thread that runs it.
//!
//! The loop owns the proto state machine and waits on one channel for
//! everything: bytes from each link's reader thread, writes finished by each
//! link's writer thread, signals (SIGCHLD, SIGINT, SIGTERM) from a signal
//! thread, and commands from the application's other threads; timers are the
//! channel's receive timeout. Workers are spawned from this thread, which
//! must therefore live as long as the kingpin (their parent-death signal is
//! tied to it). What does not depend on that (turning proto's events into
//! the application's, starting and reaping workers, requests and jobs) is
//! `mob-app`'s.

use crate::link::{Credit, LinkIo, Msg, ReadEnd, Writes};
use crate::loop_tx::{Command, LoopTx};
use crate::{Error, Event, Handle, JobOutcome, Launch, Outcome};
use mob_app::kingpin::Systemd;
use mob_app::kingpin::{RoleListener, Translated};
use mob_app::{CallbackFn, Clock, Completions, Done, HeldFd, JobDone, JobQueue, JobSpec, RequestLoop, RequestSpec};
use mob_app::{WaitJobs, WaitLoop};
use mob_proto::wire::DEFAULT_NAMESPACE;
use mob_proto::{
    ExitStatus, FdHandle, FdTable, KingpinConfig, LinkId, Output, Phase, Spawn, Target, WorkerHealth, WorkerInfo,
};
use mob_sys::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
use mob_sys::signals::SignalPipe;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// How long the link of a reaped worker may take to yield its last bytes
/// before the exit is handled anyway (its socket may live on in a
/// grandchild that inherited it).
const EXIT_READ_GRACE: Duration = Duration::from_millis(500);

/// Messages handled in one go before timers get their turn.
const BATCH: usize = 64;

/// One of the kingpin's requests being built; finish it with
/// [`RequestBuilder::then`], [`RequestBuilder::send`] or
/// [`RequestBuilder::wait`] (see [`mob_app::RequestBuilder`]).
///
/// ```no_run
/// # fn f(kingpin: &mut mob_std::Kingpin) -> Result<(), mob_std::Error> {
/// use mob_std::Target;
/// use std::time::Duration;
///
/// let reply = kingpin.request(Target::Any("back".into()), "sum", &(2u32, 3u32))?
///     .timeout(Duration::from_secs(1))
///     .wait()?; // the loop runs meanwhile; events wait for the handler
/// println!("sum = {}", reply.decode::<u32>()?);
/// # Ok(()) }
/// ```
pub type RequestBuilder<'a> = mob_app::RequestBuilder<'a, Kingpin>;

/// A job being built; finish it with [`JobBuilder::then`] or
/// [`JobBuilder::wait`] (see [`mob_app::JobBuilder`]).
///
/// ```no_run
/// # fn f(kingpin: &mut mob_std::Kingpin) -> Result<(), mob_std::Error> {
/// use std::time::Duration;
///
/// let response = kingpin
///     .enqueue("workers", &"resize /tmp/a.png")?
///     .timeout(Duration::from_secs(5))
///     .retries(1) // one more try if the first worker dies
///     .wait()?;
/// println!("done by {}", response.worker.pid);
/// # Ok(()) }
/// ```
pub type JobBuilder<'a> = mob_app::JobBuilder<'a, Kingpin>;

type EventHandler = mob_app::EventHandler<Kingpin>;
type SignalHandler = Box<dyn FnMut(&mut Kingpin, i32)>;
type LocalFn = Box<dyn FnOnce(&mut Kingpin)>;

/// Application code waiting to run on the loop, in order: events for the
/// handler, completion closures, signals for the signal handler. It runs
/// only when the loop is not inside a `wait`, so application code is never
/// re-entered.
enum Deferred {
    Event(Box<Event>),
    Call(LocalFn),
    Signal(Signal),
}

/// A reaped worker whose link has not yet yielded its last bytes.
struct PendingExit {
    link: LinkId,
    status: ExitStatus,
    deadline: std::time::Instant,
}

/// The supervisor: starts every worker, revives those that die and routes
/// their messages, with blocking IO on threads.
///
/// Usually built and run through [`crate::App`]. Its methods are those of
/// `mob-mio`'s kingpin; in addition, requests and jobs can be waited for
/// on the kingpin's own thread ([`RequestBuilder::wait`],
/// [`JobBuilder::wait`]): the loop keeps running meanwhile, and events that
/// arrive are handed to the event handler once the wait is over.
pub struct Kingpin {
    proto: mob_proto::Kingpin,
    links: HashMap<LinkId, LinkIo>,
    /// What the links' writer threads have written.
    writes: Arc<Writes>,
    children: HashMap<u32, Child>,
    exits: HashMap<u32, PendingExit>,
    fds: FdTable<HeldFd>,
    clock: Clock,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_signal: Option<SignalHandler>,
    completions: Completions<Kingpin>,
    waited: HashMap<u64, Outcome>,
    jobs: HashMap<u64, JobDone<Kingpin>>,
    jobs_waited: HashMap<u64, JobOutcome>,
    fatal: HashMap<LinkId, String>,
    deferred: VecDeque<Deferred>,
    /// How many `wait`s are under way (application code waits meanwhile).
    waiting: u32,
    exit: Option<bool>,
    /// Listening sockets, by role (see [`Kingpin::listen`]).
    listeners: Vec<RoleListener>,
    rx: Receiver<Msg>,
    tx: Arc<LoopTx>,
    /// `sd_notify`, when a service manager listens.
    systemd: Option<Systemd>,
    /// Whether every child is reaped here, orphans included.
    orphans: bool,
    /// Workers' stdout and stderr, prefixed; `None`: inherited as they are.
    output: Option<crate::output::Output>,
    /// The control socket, if one was opened.
    control: Option<crate::control::Control>,
}

impl Kingpin {
    /// A kingpin for `config`, starting each role as `launch` says (roles
    /// missing from it are re-executions of this program). Installs the
    /// handlers of SIGCHLD, SIGINT and SIGTERM (one kingpin per process).
    pub fn new(config: KingpinConfig, launch: HashMap<String, Launch>) -> Result<Kingpin, Error> {
        // What systemd passed (sockets, the notification socket) is taken
        // first, and its variables unset, so that no worker inherits it.
        mob_sys::activation::init().map_err(std::io::Error::from)?;
        let clock = Clock::new();
        let systemd = Systemd::from_env(clock.now())?;
        let signals = SignalPipe::install(&[Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM])?;
        let (tx, rx) = channel();
        let signal_tx = tx.clone();
        std::thread::Builder::new().name("mob-signals".into()).spawn(move || {
            loop {
                match signals.wait(None) {
                    Ok(sigs) if sigs.is_empty() => {}
                    Ok(sigs) => {
                        if signal_tx.send(Msg::Signals(sigs)).is_err() {
                            // The kingpin is gone; its handlers stay
                            // installed, so the pipe must stay open.
                            std::mem::forget(signals);
                            return;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
        let loop_tx = LoopTx::new(tx);
        loop_tx.set_thread();
        mob_sys::process::set_name(&config.app);
        Ok(Kingpin {
            proto: mob_proto::Kingpin::new(config),
            links: HashMap::new(),
            writes: Writes::new(),
            children: HashMap::new(),
            exits: HashMap::new(),
            fds: FdTable::new(),
            clock,
            launch,
            on_event: None,
            on_signal: None,
            completions: Completions::new(),
            waited: HashMap::new(),
            jobs: HashMap::new(),
            jobs_waited: HashMap::new(),
            fatal: HashMap::new(),
            deferred: VecDeque::new(),
            waiting: 0,
            exit: None,
            listeners: Vec::new(),
            rx,
            tx: loop_tx,
            systemd,
            orphans: mob_sys::reap::receives_orphans(),
            output: Some(crate::output::Output::default()),
            control: None,
        })
    }

    /// Calls `handler` for every [`Event`]. The handler may use the kingpin
    /// (send, request, stop, even wait for a request).
    pub fn on_event(&mut self, handler: impl FnMut(&mut Kingpin, Event) + 'static) {
        self.on_event = Some(Box::new(handler));
    }

    /// Handles SIGINT and SIGTERM instead of the default (a soft kill, and
    /// a hard kill on the second signal), as load-process-manager's
    /// `on('SIGINT')` does.
    pub fn on_signal(&mut self, handler: impl FnMut(&mut Kingpin, i32) + 'static) {
        self.on_signal = Some(Box::new(handler));
    }

    /// Whether workers' stdout and stderr reach the kingpin's line by line,
    /// each line prefixed with `[role#slot pid] ` (the default), or are the
    /// kingpin's own, inherited as they are. Applies to workers spawned
    /// from now on. See `mob_proto::lines` for what happens to partial
    /// lines, binary output and fast writers.
    pub fn prefix_output(&mut self, on: bool) {
        if on != self.output.is_some() {
            self.output = on.then(crate::output::Output::default);
        }
    }

    /// Opens the control socket at `path`: a Unix socket only this user can
    /// use (mode 0600, and every connection's user checked with
    /// `SO_PEERCRED`; others are refused and logged), which the `mob`
    /// command uses for `status`, `resize`, `reload`, `stop` and `kill`
    /// (`SPEC.md` section 16). A stale socket left at `path` is replaced; the
    /// socket is removed when the kingpin exits.
    ///
    /// A thread of the kingpin's accepts (blocking); each connection has a
    /// reader and a writer thread, so a client never blocks the loop.
    pub fn control_socket(&mut self, path: impl AsRef<std::path::Path>) -> Result<(), Error> {
        let control = crate::control::Control::bind(path.as_ref(), self.tx.sender(), self.clock.now())?;
        self.control = Some(control);
        Ok(())
    }

    /// Every worker that has a link, with its phase.
    pub fn workers(&self) -> impl Iterator<Item = (&WorkerInfo, Phase)> + '_ {
        self.proto.workers()
    }

    /// Sends `value` (postcard-encoded) as message `name` in the default
    /// namespace.
    pub fn send<T: Serialize + ?Sized>(&mut self, to: Target, name: &str, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, &payload, Vec::new())
    }

    /// Sends message `name` to every live worker of `role` (or every worker,
    /// if `None`), each with every fd in `fds` (a listening socket, say):
    /// the frames share the fds, as [`Kingpin::send_shared`] does (each
    /// worker gets its own descriptor from the kernel), and the kingpin's
    /// copies close once the last frame carrying them is written. Returns
    /// how many workers it was queued for.
    pub fn broadcast(&mut self, role: Option<&str>, ns: &str, name: &str, payload: &[u8], fds: Vec<OwnedFd>) -> usize {
        let shared: Vec<Arc<OwnedFd>> = fds.into_iter().map(Arc::new).collect();
        let pids = mob_app::kingpin::live_pids(&self.proto, role);
        pids.into_iter().filter(|pid| self.send_shared(Target::Pid(*pid), ns, name, payload, &shared).is_ok()).count()
    }

    /// Binds `addr` and shares it with every worker of `role` (see
    /// [`ListenMode`]). Usually called through [`crate::App::listen`].
    ///
    /// In [`ListenMode::Distributed`] a thread of the kingpin's accepts
    /// (blocking) and passes each connection to the loop, which hands it to
    /// one ready worker of the role; workers receive it as
    /// [`crate::Incoming::Connection`].
    pub fn listen(&mut self, role: &str, addr: &ListenAddr, mode: ListenMode) -> Result<(), Error> {
        let listener = Listener::bind(addr)?;
        if mode == ListenMode::Distributed {
            let accepting = Listener::from_fd(listener.try_clone_fd()?)?;
            let tx = self.tx.sender();
            let role = role.to_string();
            std::thread::Builder::new()
                .name(format!("mob-accept-{role}"))
                .spawn(move || accept(accepting, role, tx))?;
        }
        self.listeners.push((role.to_string(), listener, mode));
        Ok(())
    }

    /// The address `role` listens on, if it was given one.
    pub fn local_addr(&self, role: &str) -> Option<std::net::SocketAddr> {
        mob_app::kingpin::local_addr(&self.listeners, role)
    }

    /// Queues the shared listener for a worker of a listening role that was
    /// just spawned: it arrives right after the worker's welcome.
    fn hand_listener(&mut self, worker: &WorkerInfo) {
        for fd in mob_app::kingpin::shared_with(&self.listeners, &worker.role) {
            let _ = self.send_raw(Target::Pid(worker.pid), LISTEN_NAMESPACE, LISTEN_LISTENER, &[], vec![fd]);
        }
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
        let handles = HeldFd::hold(&mut self.fds, fds);
        self.send_held(to, ns, name, payload, handles)
    }

    /// Sends raw bytes with fds the application keeps and shares: each
    /// frame holds a reference, not a copy, so sending one fd in many
    /// messages costs no `dup` and no `close` per message. The fd closes
    /// when its last holder (the application, or a frame not yet written)
    /// lets go.
    pub fn send_shared(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: &[Arc<OwnedFd>],
    ) -> Result<(), Error> {
        let handles = HeldFd::share(&mut self.fds, fds);
        self.send_held(to, ns, name, payload, handles)
    }

    fn send_held(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        handles: Vec<FdHandle>,
    ) -> Result<(), Error> {
        let sent = self.proto.send(to, ns, name, payload, handles);
        self.flush_due();
        Ok(sent?)
    }

    /// Starts a request to one worker ([`Target::Any`] or [`Target::Pid`])
    /// carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(
        &mut self,
        to: Target,
        name: &str,
        value: &T,
    ) -> Result<RequestBuilder<'_>, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        Ok(RequestBuilder::new(self, to, name, payload))
    }

    /// A clonable, `Send` handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle::new(self.tx.clone())
    }

    /// Sizes of proto's request tables (all zero when nothing is in flight).
    pub fn pending(&self) -> mob_proto::Pending {
        self.proto.pending()
    }

    /// Soft kill: no new work, every worker finishes what it has and stops;
    /// those still running after the grace period are killed. [`Kingpin::run`]
    /// then returns, with success if everything stopped cleanly.
    pub fn stop(&mut self) {
        self.proto.shutdown(false, self.clock.now());
    }

    /// Hard kill: every worker is killed now and [`Kingpin::run`] returns.
    pub fn kill(&mut self) {
        self.proto.shutdown(true, self.clock.now());
    }

    /// Resizes `role` (within its min and max); returns the count in force.
    pub fn resize(&mut self, role: &str, workers: u32) -> Option<u32> {
        self.proto.resize(role, workers, self.clock.now())
    }

    /// Starts a rolling restart of `role`.
    pub fn reload(&mut self, role: &str) -> bool {
        self.proto.reload(role, self.clock.now())
    }

    /// Per-worker figures (pid, role, slot, state, RSS, in-flight, restarts,
    /// uptime).
    pub fn health(&self) -> Vec<WorkerHealth> {
        self.proto.health(self.clock.now())
    }

    /// Why the last worker of `role` died (mob's `lastErr`).
    pub fn last_error(&self, role: &str) -> Option<&str> {
        self.proto.last_error(role)
    }

    /// Starts building a job for `role` (load-process-manager's `enqueue`):
    /// it waits until a worker of the role is ready, then goes to the ready
    /// worker with the fewest jobs in flight.
    pub fn enqueue<T: Serialize + ?Sized>(&mut self, role: &str, value: &T) -> Result<JobBuilder<'_>, Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        Ok(JobBuilder::new(self, role, payload))
    }

    /// Makes the kingpin a child subreaper and reaps every process it
    /// inherits, as it does anyway when it is PID 1: a worker's orphaned
    /// children (daemons it started, double forks) become the kingpin's and
    /// are reaped as they end ([`Event::OrphanReaped`]) instead of lingering
    /// as zombies. Children the application starts in the kingpin process
    /// by other means are reaped here too, so their own `wait` fails.
    pub fn reap_orphans(&mut self) -> Result<(), Error> {
        mob_sys::reap::become_subreaper()?;
        self.orphans = true;
        Ok(())
    }

    /// Runs until the shutdown ends ([`Kingpin::stop`], [`Kingpin::kill`],
    /// SIGINT or SIGTERM, a failed role); success if it was clean.
    pub fn run(mut self) -> Result<ExitCode, Error> {
        self.tx.set_thread();
        loop {
            self.pump(true);
            if self.exit.is_some() {
                self.notify_systemd();
                break;
            }
            self.step();
        }
        self.kill_remaining();
        if let Some(output) = &self.output {
            output.finish();
        }
        if let Some(control) = self.control.take() {
            control.close_all();
        }
        Ok(if self.exit == Some(true) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }

    /// Runs the loop, without handing anything to the application, until
    /// `ready` finds what it waits for.
    fn wait_until<T>(&mut self, mut ready: impl FnMut(&mut Kingpin) -> Option<T>) -> T {
        self.waiting += 1;
        let found = loop {
            self.pump(false);
            if let Some(v) = ready(self) {
                break v;
            }
            self.step();
        };
        self.waiting -= 1;
        found
    }

    /// Waits for one message (or the next timer), then handles it and
    /// whatever else is already there, then the timers.
    fn step(&mut self) {
        let next = self.proto.poll_timeout().into_iter().chain(self.notify_systemd()).min();
        let mut wake = next.map(|t| self.clock.until(t));
        let now = std::time::Instant::now();
        for e in self.exits.values() {
            let left = e.deadline.saturating_duration_since(now);
            wake = Some(wake.map_or(left, |w| w.min(left)));
        }
        let first = match wake {
            Some(timeout) => self.rx.recv_timeout(timeout),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        if let Ok(msg) = first {
            self.message(msg);
            for _ in 0..BATCH {
                let Ok(msg) = self.rx.try_recv() else { break };
                self.message(msg);
            }
        }
        self.expire_exits();
        self.proto.handle_timeout(self.clock.now());
    }

    /// Tells the service manager what changed, if one listens; returns when
    /// its watchdog wants the next ping.
    fn notify_systemd(&mut self) -> Option<mob_proto::Instant> {
        let now = self.clock.now();
        self.systemd.as_mut()?.tick(&self.proto, now)
    }

    /// Carries out what proto asks, and (if `dispatch`) runs deferred
    /// application code, until both are quiet.
    fn pump(&mut self, dispatch: bool) {
        loop {
            self.drain_outputs();
            if !dispatch {
                return;
            }
            let Some(next) = self.deferred.pop_front() else { return };
            match next {
                Deferred::Event(event) => {
                    if let Some(mut handler) = self.on_event.take() {
                        handler(self, *event);
                        self.on_event.get_or_insert(handler);
                    }
                }
                Deferred::Call(f) => f(self),
                Deferred::Signal(sig) => {
                    if let Some(mut handler) = self.on_signal.take() {
                        handler(self, sig as i32);
                        self.on_signal.get_or_insert(handler);
                    } else {
                        self.default_signal();
                    }
                }
            }
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(out) = self.proto.poll_output() {
            self.output(out);
        }
    }

    /// First signal: soft kill; a second one: hard kill.
    fn default_signal(&mut self) {
        let hard = self.proto.is_shutting_down();
        self.proto.shutdown(hard, self.clock.now());
    }

    fn message(&mut self, msg: Msg) {
        // Whatever proto asked before is carried out first (a link it closed
        // is gone before anything more is read from or written to it), and
        // so is the application code the last message called for (unless a
        // wait is under way): everything happens in order.
        self.pump(self.waiting == 0);
        self.finish_writes();
        let now = self.clock.now();
        match msg {
            Msg::Read { link, bytes, fds } => {
                let Some(io) = self.links.get(&link) else { return };
                let credit = io.credit().clone();
                let handles = HeldFd::hold(&mut self.fds, fds);
                self.proto.handle_read(link, &bytes, handles, now);
                credit.give(bytes.len());
            }
            Msg::ReadEnd { link, end } => {
                if !self.links.contains_key(&link) {
                    return;
                }
                match end {
                    ReadEnd::Eof => self.proto.handle_eof(link, now),
                    ReadEnd::Failed(what) => self.proto.handle_link_error(link, what, now),
                }
                // The link has yielded everything: its process's exit may be
                // handled now.
                self.exited_link(link);
            }
            Msg::WritesDone => {}
            Msg::Signals(sigs) => {
                for sig in sigs {
                    match sig {
                        Signal::SIGCHLD => self.reap(),
                        sig if self.on_signal.is_some() => self.deferred.push_back(Deferred::Signal(sig)),
                        _ => self.default_signal(),
                    }
                }
            }
            Msg::App(cmd) => self.command(cmd),
            Msg::Control(msg) => {
                if let Some(control) = &mut self.control {
                    control.handle(msg, &mut self.proto, now);
                }
            }
            Msg::Worker(_) => {}
        }
    }

    /// Hands proto what the writers have written, and each of them its next
    /// chunk.
    fn finish_writes(&mut self) {
        for (link, written) in self.writes.take() {
            let Some(io) = self.links.get_mut(&link) else { continue };
            match written {
                Some(n) => {
                    io.written();
                    for h in self.proto.handle_transmitted(link, n) {
                        drop(self.fds.take(h));
                    }
                    self.flush(link);
                }
                None => self.proto.handle_link_error(link, "write error", self.clock.now()),
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
            Command::Answer(answered) => mob_app::kingpin::hand_answer(&mut self.proto, &mut self.fds, answered),
            Command::Kingpin(f) => self.deferred.push_back(Deferred::Call(f)),
            Command::Stop => self.stop(),
        }
    }

    fn output(&mut self, out: Output) {
        match out {
            Output::Spawn(spawn) => self.spawn(spawn),
            Output::Kill { pid, .. } => {
                // Only a child not yet reaped: its pid cannot have been reused.
                if self.children.contains_key(&pid) {
                    let _ = mob_sys::process::kill(pid);
                }
            }
            Output::Transmit(link) => self.flush(link),
            Output::CloseLink(link) => {
                if let Some(io) = self.links.remove(&link) {
                    io.close(self.proto.poll_transmit(link));
                }
                self.exited_link(link);
            }
            Output::ReleaseFd(h) => drop(self.fds.take(h)),
            Output::Exit { clean } => self.exit = Some(clean),
            Output::Event(event) => self.convert(event),
        }
    }

    /// Writes the links whose queue reached [`mob_proto::FLUSH_AT`] while
    /// the application queued: the worker starts on a burst while the rest
    /// of it is queued.
    fn flush_due(&mut self) {
        while let Some(link) = self.proto.poll_flush() {
            self.flush(link);
        }
    }

    /// Writes what proto queued for `link`: at once while the socket takes
    /// it, then through the link's writer thread.
    fn flush(&mut self, link: LinkId) {
        let Kingpin { links, proto, fds, .. } = self;
        let Some(io) = links.get_mut(&link) else { return };
        while let Some(n) = io.flush(proto.poll_transmit(link), fds) {
            for h in proto.handle_transmitted(link, n) {
                drop(fds.take(h));
            }
        }
    }

    /// Hands proto's event to the application (deferred), or finishes a
    /// request, callback or job.
    fn convert(&mut self, event: mob_proto::Event) {
        let translated = mob_app::kingpin::translate(event, &mut self.fds, &self.clock, &mut self.fatal, &self.tx);
        match translated {
            Translated::App(event) => {
                if let Event::WorkerSpawned(w) = &event {
                    self.hand_listener(w);
                }
                self.deferred.push_back(Deferred::Event(Box::new(event)));
            }
            Translated::JobDone { id, outcome } => match self.jobs.remove(&id) {
                Some(JobDone::Then(f)) => self.defer(move |k| f(k, outcome)),
                Some(JobDone::Wait) => {
                    self.jobs_waited.insert(id, outcome);
                }
                None => {}
            },
            Translated::Reply { id, outcome } => match self.completions.done.remove(&id) {
                Some(Done::Local(f)) => self.defer(move |k| f(k, outcome)),
                Some(Done::Wait) => {
                    self.waited.insert(id, outcome);
                }
                Some(done) => {
                    done.finish(self, outcome);
                }
                None => {}
            },
            Translated::Callback { id, reply } => match self.completions.callbacks.remove(&id) {
                Some(CallbackFn::Local(f)) => self.defer(move |k| f(k, reply)),
                Some(remote) => remote.call(self, reply),
                None => {}
            },
            Translated::CallbackReleased { id } => {
                self.completions.callbacks.remove(&id);
            }
            Translated::Kept => {}
        }
    }

    /// Runs `f` on the loop once no `wait` is under way, after what is
    /// already deferred.
    fn defer(&mut self, f: impl FnOnce(&mut Kingpin) + 'static) {
        self.deferred.push_back(Deferred::Call(Box::new(f)));
    }

    /// Reaps every child that has ended. Its exit is handled once its link
    /// has yielded its last bytes (so that they are not lost), at most
    /// [`EXIT_READ_GRACE`] later.
    ///
    /// When orphans come to us too, one `waitpid(-1)` loop reaps everything
    /// and sorts workers from orphans, so no worker's status is lost to a
    /// second waiter.
    fn reap(&mut self) {
        let reaped = mob_app::kingpin::reap(&mut self.children, self.orphans);
        for event in reaped.orphans {
            self.deferred.push_back(Deferred::Event(Box::new(event)));
        }
        let now = self.clock.now();
        for (pid, status) in reaped.workers {
            let link = self.proto.workers().find(|(w, _)| w.pid == pid).map(|(w, _)| w.link);
            match link {
                Some(link) if self.links.contains_key(&link) => {
                    let deadline = std::time::Instant::now() + EXIT_READ_GRACE;
                    self.exits.insert(pid, PendingExit { link, status, deadline });
                }
                _ => self.proto.handle_exited(pid, status, now),
            }
        }
    }

    /// `link` has nothing more to read: handle its process's exit, if it
    /// was waiting for that.
    fn exited_link(&mut self, link: LinkId) {
        let pids: Vec<u32> = self.exits.iter().filter(|(_, e)| e.link == link).map(|(pid, _)| *pid).collect();
        for pid in pids {
            if let Some(e) = self.exits.remove(&pid) {
                self.proto.handle_exited(pid, e.status, self.clock.now());
            }
        }
    }

    /// Exits whose link did not end in time.
    fn expire_exits(&mut self) {
        let now = std::time::Instant::now();
        let late: Vec<u32> = self.exits.iter().filter(|(_, e)| e.deadline <= now).map(|(pid, _)| *pid).collect();
        for pid in late {
            if let Some(e) = self.exits.remove(&pid) {
                self.proto.handle_exited(pid, e.status, self.clock.now());
            }
        }
    }

    fn spawn(&mut self, spawn: Spawn) {
        let now = self.clock.now();
        match self.start_process(&spawn) {
            Ok((child, ours, pending)) => {
                let pid = child.id();
                if let (Some(output), Some(pending)) = (&self.output, pending) {
                    output.attach(pending, &spawn.role, spawn.slot, pid);
                }
                let name = format!("mob-{}#{}", spawn.role, spawn.slot);
                match LinkIo::start(spawn.link, ours, self.tx.sender(), self.writes.clone(), Credit::new(), &name) {
                    Ok(io) => {
                        self.links.insert(spawn.link, io);
                    }
                    // No link: the worker's handshake times out, and it is
                    // killed and revived.
                    Err(_) => {
                        let _ = mob_sys::process::kill(pid);
                    }
                }
                self.children.insert(pid, child);
                self.proto.handle_spawned(spawn.link, pid, now);
            }
            Err(e) => {
                log::warn!("cannot start a worker for {}#{}: {e}", spawn.role, spawn.slot);
                self.proto.handle_spawn_failed(spawn.link, now)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_process(&self, spawn: &Spawn) -> Result<(Child, OwnedFd, Option<crate::output::Pending>), Error> {
        let output = self.output.as_ref().map(|o| o.stdio());
        let (child, ours, pending) = mob_app::kingpin::start_worker(&self.launch, self.proto.config(), spawn, output)?;
        Ok((child, ours, pending))
    }

    /// Kills every worker still running, waits for each, and closes every
    /// link.
    fn kill_remaining(&mut self) {
        mob_app::kingpin::kill_all(&mut self.children);
        for (_, io) in self.links.drain() {
            io.close(None);
        }
    }
}

impl Drop for Kingpin {
    fn drop(&mut self) {
        self.kill_remaining();
        // Wakes the accept threads (a listening socket shut down fails
        // `accept`), which then end.
        for (_, listener, mode) in &self.listeners {
            if *mode == ListenMode::Distributed {
                let fd = match listener {
                    Listener::Tcp(l) => l.as_fd(),
                    Listener::Unix(l) => l.as_fd(),
                };
                let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
    }
}

/// The accept thread of a [`ListenMode::Distributed`] listener: passes each
/// connection to the kingpin's loop, which hands it to one ready worker of
/// `role` (with no worker to take it, the connection is closed). Ends when
/// the kingpin is gone or the listener fails.
fn accept(listener: Listener, role: String, tx: std::sync::mpsc::Sender<Msg>) {
    let mut failures = 0u32;
    loop {
        let accepted: std::io::Result<OwnedFd> = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| s.into()),
            Listener::Unix(l) => l.accept().map(|(s, _)| s.into()),
        };
        let conn = match accepted {
            Ok(conn) => {
                failures = 0;
                conn
            }
            // Out of fds, a connection reset before it was accepted: try
            // again, unless it keeps failing (the listener was shut down).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                failures += 1;
                if failures > 100 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let cmd = Command::Send {
            to: Target::Any(role.clone()),
            ns: LISTEN_NAMESPACE.to_string(),
            name: LISTEN_CONNECTION.to_string(),
            payload: Vec::new(),
            fds: vec![conn],
        };
        if tx.send(Msg::App(cmd)).is_err() {
            return;
        }
    }
}

impl RequestLoop for Kingpin {
    fn begin(&mut self, spec: RequestSpec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error> {
        let RequestSpec { to, ns, name, payload, fds, timeout } = spec;
        let handles = HeldFd::hold(&mut self.fds, fds);
        let now = self.clock.now();
        let proto = &mut self.proto;
        let id = self
            .completions
            .begin(callbacks, done, |n| proto.request(to, &ns, &name, &payload, handles, timeout, n, now));
        self.flush_due();
        id
    }
}

impl WaitLoop for Kingpin {
    fn wait_for(&mut self, id: u64) -> Outcome {
        self.wait_until(|k| k.waited.remove(&id))
    }
}

impl JobQueue for Kingpin {
    fn queue_job(&mut self, job: JobSpec, done: JobDone<Self>) -> Result<u64, Error> {
        let JobSpec { role, payload, fds, options } = job;
        let handles = HeldFd::hold(&mut self.fds, fds);
        let id = self.proto.enqueue(&role, &payload, handles, options, self.clock.now());
        self.flush_due();
        let id = id?;
        self.jobs.insert(id, done);
        Ok(id)
    }
}

impl WaitJobs for Kingpin {
    fn wait_job(&mut self, id: u64) -> JobOutcome {
        self.wait_until(|k| k.jobs_waited.remove(&id))
    }
}
