//! The kingpin side: the supervisor's loop, on the thread that runs it.
//!
//! The loop owns the proto state machine and waits on one channel for
//! everything: bytes from each link's reader thread, writes finished by each
//! link's writer thread, signals (SIGCHLD, SIGINT, SIGTERM) from a signal
//! thread, and commands from the application's other threads; timers are the
//! channel's receive timeout. Workers are spawned from this thread, which
//! must therefore live as long as the kingpin (their parent-death signal is
//! tied to it).

use crate::clock::Clock;
use crate::handle::Handle;
use crate::link::{Credit, LinkIo, Msg, ReadEnd};
use crate::rpc::{
    Answer, Callback, Command, LoopShared, LoopTx, Outcome, RemoteCallback, RemoteDone, Reply, Request, Responder,
};
use crate::systemd::Systemd;
use crate::{Error, Message};
use mob_proto::wire::DEFAULT_NAMESPACE;
use mob_proto::{
    CloseReason, ExitStatus, FdHandle, FdTable, JobOptions, KingpinConfig, LinkId, Output, Phase, Spawn, Target,
    WorkerHealth, WorkerInfo,
};
use mob_sys::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
use mob_sys::signals::SignalPipe;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// How long the link of a reaped worker may take to yield its last bytes
/// before the exit is handled anyway (its socket may live on in a
/// grandchild that inherited it).
const EXIT_READ_GRACE: Duration = Duration::from_millis(500);

/// Messages handled in one go before timers get their turn.
const BATCH: usize = 64;

/// How the processes of a role are started.
#[derive(Clone, Debug)]
pub enum Launch {
    /// Re-execute this program (with the same arguments, as Node's cluster
    /// does); its `main` sees `MOB_ROLE` and runs the role's entry.
    SelfExec,
    /// Run another executable, which must speak the protocol on fd 3 (for
    /// example one built with [`crate::Mobster::from_env`], or with
    /// `mob-mio`).
    Exe {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
    },
}

/// What the kingpin tells its application.
#[derive(Debug)]
pub enum Event {
    /// A worker process was started.
    WorkerSpawned(WorkerInfo),
    /// A worker completed its handshake.
    WorkerUp(WorkerInfo),
    /// A worker's link closed for a reason other than its exit (bad input,
    /// handshake timeout, ...). Its process is killed and revived.
    LinkClosed(WorkerInfo, CloseReason),
    /// A worker is ready for work.
    WorkerReady(WorkerInfo),
    /// A worker process ended (its slot is revived as its role's policy
    /// says).
    WorkerExited {
        /// The worker.
        worker: WorkerInfo,
        /// How it ended.
        status: ExitStatus,
        /// Why, if it died abnormally: its panic message if it sent one,
        /// else its exit status in words.
        error: Option<String>,
    },
    /// Every worker of a role is ready.
    RoleOnline(String),
    /// Every role is online (once).
    AppOnline,
    /// A role restarted more often than its intensity allows and was stopped.
    RoleFailed {
        /// The role.
        role: String,
        /// Why its last worker died.
        last_error: Option<String>,
    },
    /// A rolling reload finished.
    RoleReloaded(String),
    /// A worker sent a message to the kingpin.
    Message(Message<WorkerInfo>),
    /// A worker sent a request to the kingpin: answer it through the
    /// [`Request`] (dropping it answers "dropped without reply").
    Request(Request<WorkerInfo>),
    /// A worker's message had no route and was dropped.
    Undeliverable {
        /// Who sent it.
        from: WorkerInfo,
        /// Where it was going.
        to: Target,
    },
    /// A process that was not one of our workers was reaped: an orphan the
    /// kernel handed us, because the kingpin is PID 1 (a container's init)
    /// or a subreaper ([`Kingpin::reap_orphans`]).
    OrphanReaped {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
}

type EventHandler = Box<dyn FnMut(&mut Kingpin, Event)>;
type SignalHandler = Box<dyn FnMut(&mut Kingpin, i32)>;
type LocalFn = Box<dyn FnOnce(&mut Kingpin)>;
type LocalDone = Box<dyn FnOnce(&mut Kingpin, Outcome)>;
type LocalCallback = Box<dyn FnOnce(&mut Kingpin, Reply)>;
type LocalJobDone = Box<dyn FnOnce(&mut Kingpin, JobOutcome)>;

/// Application code waiting to run on the loop, in order: events for the
/// handler, completion closures, signals for the signal handler. It runs
/// only when the loop is not inside a `wait`, so application code is never
/// re-entered.
enum Deferred {
    Event(Box<Event>),
    Call(LocalFn),
    Signal(Signal),
}

/// How one of the kingpin's requests reports its end.
enum Done {
    Local(LocalDone),
    Remote(RemoteDone),
    /// A `wait` on the loop's thread collects it.
    Wait,
    Ignore,
}

/// A callback passed with one of the kingpin's requests.
enum CallbackFn {
    Local(LocalCallback),
    Remote(RemoteCallback),
}

/// How a job reports its end.
enum JobDone {
    Then(LocalJobDone),
    Wait,
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
    children: HashMap<u32, Child>,
    exits: HashMap<u32, PendingExit>,
    fds: FdTable<OwnedFd>,
    clock: Clock,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_signal: Option<SignalHandler>,
    done: HashMap<u64, Done>,
    callbacks: HashMap<u64, CallbackFn>,
    waited: HashMap<u64, Outcome>,
    jobs: HashMap<u64, JobDone>,
    jobs_waited: HashMap<u64, JobOutcome>,
    fatal: HashMap<LinkId, String>,
    deferred: VecDeque<Deferred>,
    /// How many `wait`s are under way (application code waits meanwhile).
    waiting: u32,
    exit: Option<bool>,
    /// Listening sockets, by role (see [`Kingpin::listen`]).
    listeners: Vec<(String, Listener, ListenMode)>,
    rx: Receiver<Msg>,
    tx: LoopTx,
    /// `sd_notify`, when a service manager listens.
    systemd: Option<Systemd>,
    /// Whether every child is reaped here, orphans included.
    orphans: bool,
    /// Workers' stdout and stderr, prefixed; `None`: inherited as they are.
    output: Option<crate::output::Output>,
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
        let shared = LoopShared::new(None);
        shared.set_thread();
        mob_sys::process::set_name(&config.app);
        Ok(Kingpin {
            proto: mob_proto::Kingpin::new(config),
            links: HashMap::new(),
            children: HashMap::new(),
            exits: HashMap::new(),
            fds: FdTable::new(),
            clock,
            launch,
            on_event: None,
            on_signal: None,
            done: HashMap::new(),
            callbacks: HashMap::new(),
            waited: HashMap::new(),
            jobs: HashMap::new(),
            jobs_waited: HashMap::new(),
            fatal: HashMap::new(),
            deferred: VecDeque::new(),
            waiting: 0,
            exit: None,
            listeners: Vec::new(),
            rx,
            tx: LoopTx { tx, shared },
            systemd,
            orphans: mob_sys::reap::receives_orphans(),
            output: Some(crate::output::Output::default()),
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
    /// if `None`), each with its own duplicate of every fd in `fds` (a
    /// listening socket, say): one fd can only travel to one recipient, so
    /// the kingpin dups it per worker and closes its own copies. Returns how
    /// many workers it was queued for.
    pub fn broadcast(&mut self, role: Option<&str>, ns: &str, name: &str, payload: &[u8], fds: Vec<OwnedFd>) -> usize {
        let pids: Vec<u32> = self
            .proto
            .workers()
            .filter(|(w, phase)| *phase != Phase::Closing && w.pid != 0 && role.is_none_or(|r| *w.role == *r))
            .map(|(w, _)| w.pid)
            .collect();
        let mut sent = 0;
        for pid in pids {
            let Ok(copies) = fds.iter().map(|fd| fd.try_clone()).collect::<std::io::Result<Vec<_>>>() else { continue };
            if self.send_raw(Target::Pid(pid), ns, name, payload, copies).is_ok() {
                sent += 1;
            }
        }
        sent
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
            let tx = self.tx.tx.clone();
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
        self.listeners.iter().find_map(|(r, l, _)| match l {
            Listener::Tcp(t) if r == role => t.local_addr().ok(),
            _ => None,
        })
    }

    /// Queues the shared listener for a worker of a listening role that was
    /// just spawned: it arrives right after the worker's welcome.
    fn hand_listener(&mut self, worker: &WorkerInfo) {
        let fds: Vec<OwnedFd> = self
            .listeners
            .iter()
            .filter(|(r, _, mode)| *r == *worker.role && *mode == ListenMode::Shared)
            .filter_map(|(_, l, _)| l.try_clone_fd().ok())
            .collect();
        for fd in fds {
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
        let handles = self.insert_fds(fds);
        Ok(self.proto.send(to, ns, name, payload, handles)?)
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
        Ok(RequestBuilder {
            kingpin: self,
            to,
            ns: DEFAULT_NAMESPACE.to_string(),
            name: name.to_string(),
            payload,
            fds: Vec::new(),
            timeout: None,
            callbacks: Vec::new(),
        })
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
        Ok(JobBuilder {
            kingpin: self,
            role: role.to_string(),
            payload,
            fds: Vec::new(),
            options: JobOptions::default(),
        })
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
        self.tx.shared.set_thread();
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
        let now = self.clock.now();
        match msg {
            Msg::Read { link, bytes, fds } => {
                let Some(io) = self.links.get(&link) else { return };
                let credit = io.credit().clone();
                let handles = self.insert_fds(fds);
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
            Msg::Written { link, n } => {
                let Some(io) = self.links.get_mut(&link) else { return };
                io.written();
                for h in self.proto.handle_transmitted(link, n) {
                    drop(self.fds.take(h));
                }
                self.flush(link);
            }
            Msg::WriteFailed { link } => {
                if self.links.contains_key(&link) {
                    self.proto.handle_link_error(link, "write error", now);
                }
            }
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
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { to, ns, name, payload, fds, ack } => {
                let result = self.send_raw(to, &ns, &name, &payload, fds);
                if let Some(ack) = ack {
                    let _ = ack.send(result);
                }
            }
            Command::Request(r) => {
                let callbacks = r.callbacks.into_iter().map(CallbackFn::Remote).collect();
                let spec =
                    Spec { to: r.to, ns: r.ns, name: r.name, payload: r.payload, fds: r.fds, timeout: r.timeout };
                let _ = self.begin(spec, callbacks, Done::Remote(r.done));
            }
            Command::Respond { to: Answer::Worker(link, id), result, payload, fds } => {
                let handles = self.insert_fds(fds);
                let _ = self.proto.respond(link, id, result, &payload, handles);
            }
            Command::Invoke { to: Answer::Worker(link, id), callback, payload, fds } => {
                let handles = self.insert_fds(fds);
                let _ = self.proto.invoke(link, id, callback, &payload, handles);
            }
            Command::Respond { .. } | Command::Invoke { .. } | Command::Worker(_) => {}
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

    fn flush(&mut self, link: LinkId) {
        if let Some(io) = self.links.get_mut(&link) {
            io.flush(self.proto.poll_transmit(link), &mut self.fds);
        }
    }

    /// Turns proto's event into the application's (deferred), or finishes
    /// a request, callback or job.
    fn convert(&mut self, event: mob_proto::Event) {
        use mob_proto::Event as E;
        let event = match event {
            E::WorkerSpawned(w) => {
                self.hand_listener(&w);
                Event::WorkerSpawned(w)
            }
            E::WorkerUp(w) => Event::WorkerUp(w),
            E::LinkClosed(w, r) => Event::LinkClosed(w, r),
            E::WorkerExited(worker, status) => {
                let error = self.fatal.remove(&worker.link).or_else(|| match status {
                    ExitStatus::Code(0) => None,
                    ExitStatus::Code(c) => Some(format!("exited with code {c}")),
                    ExitStatus::Signal(s) => Some(format!("killed by signal {s}")),
                });
                Event::WorkerExited { worker, status, error }
            }
            E::WorkerReady(w) => Event::WorkerReady(w),
            E::RoleOnline(r) => Event::RoleOnline(r.to_string()),
            E::AppOnline => Event::AppOnline,
            E::RoleFailed { role, last_error } => Event::RoleFailed { role: role.to_string(), last_error },
            E::RoleReloaded(r) => Event::RoleReloaded(r.to_string()),
            E::WorkerFatal(w, message) => {
                self.fatal.insert(w.link, message);
                return;
            }
            E::JobDone { id, created_at, result } => {
                let result = result.map(|(worker, payload, fds)| JobResponse {
                    id,
                    worker,
                    created_at: self.clock.to_std(created_at),
                    payload,
                    fds: self.take_fds(fds),
                });
                match self.jobs.remove(&id) {
                    Some(JobDone::Then(f)) => self.deferred.push_back(Deferred::Call(Box::new(move |k| f(k, result)))),
                    Some(JobDone::Wait) => {
                        self.jobs_waited.insert(id, result);
                    }
                    None => {}
                }
                return;
            }
            E::Message { from, ns, name, payload, fds } => {
                let fds = self.take_fds(fds);
                Event::Message(Message { from, ns, name, payload, fds })
            }
            E::Request { from, id, ns, name, payload, fds, callbacks } => {
                let fds = self.take_fds(fds);
                let to = Answer::Worker(from.link, id);
                let callbacks = callbacks.into_iter().map(|cb| Callback::new(to, cb, self.tx.clone())).collect();
                let responder = Responder::new(to, self.tx.clone());
                Event::Request(Request::new(from, ns, name, payload, fds, callbacks, responder))
            }
            E::Reply { id, result } => {
                let outcome = result.map(|(payload, fds)| Reply { payload, fds: self.take_fds(fds) });
                match self.done.remove(&id) {
                    Some(Done::Local(f)) => self.deferred.push_back(Deferred::Call(Box::new(move |k| f(k, outcome)))),
                    Some(Done::Remote(r)) => r.finish(outcome.map_err(Error::Request)),
                    Some(Done::Wait) => {
                        self.waited.insert(id, outcome);
                    }
                    Some(Done::Ignore) | None => {}
                }
                return;
            }
            E::Callback { callback, payload, fds } => {
                let reply = Reply { payload, fds: self.take_fds(fds) };
                match self.callbacks.remove(&callback) {
                    Some(CallbackFn::Local(f)) => {
                        self.deferred.push_back(Deferred::Call(Box::new(move |k| f(k, reply))))
                    }
                    Some(CallbackFn::Remote(f)) => f(reply),
                    None => {}
                }
                return;
            }
            E::CallbackReleased { callback } => {
                self.callbacks.remove(&callback);
                return;
            }
            E::Undeliverable { from, to, .. } => Event::Undeliverable { from, to },
        };
        self.deferred.push_back(Deferred::Event(Box::new(event)));
    }

    fn take_fds(&mut self, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
        handles.into_iter().filter_map(|h| self.fds.take(h)).collect()
    }

    fn insert_fds(&mut self, fds: Vec<OwnedFd>) -> Vec<FdHandle> {
        fds.into_iter().map(|fd| self.fds.insert(fd)).collect()
    }

    /// Starts one of the kingpin's requests.
    fn begin(&mut self, spec: Spec, callbacks: Vec<CallbackFn>, done: Done) -> Result<u64, Error> {
        let Spec { to, ns, name, payload, fds, timeout } = spec;
        let handles = self.insert_fds(fds);
        let now = self.clock.now();
        match self.proto.request(to, &ns, &name, &payload, handles, timeout, callbacks.len(), now) {
            Ok((id, ids)) => {
                self.done.insert(id, done);
                self.callbacks.extend(ids.into_iter().zip(callbacks));
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

    /// Reaps every child that has ended. Its exit is handled once its link
    /// has yielded its last bytes (so that they are not lost), at most
    /// [`EXIT_READ_GRACE`] later.
    ///
    /// When orphans come to us too, one `waitpid(-1)` loop reaps everything
    /// and sorts workers from orphans, so no worker's status is lost to a
    /// second waiter.
    fn reap(&mut self) {
        let mut ended = Vec::new();
        while self.orphans {
            let Ok(Some((pid, exit))) = mob_sys::reap::reap_any() else { break };
            let status = match exit {
                mob_sys::process::Exit::Code(c) => ExitStatus::Code(c),
                mob_sys::process::Exit::Signal(s) => ExitStatus::Signal(s),
            };
            // A worker's `Child` is dropped unwaited: its pid is reaped.
            match self.children.remove(&pid) {
                Some(_) => ended.push((pid, status)),
                None => self.deferred.push_back(Deferred::Event(Box::new(Event::OrphanReaped { pid, status }))),
            }
        }
        for (&pid, child) in self.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let status = match (status.code(), status.signal()) {
                    (Some(code), _) => ExitStatus::Code(code),
                    (None, Some(sig)) => ExitStatus::Signal(sig),
                    (None, None) => ExitStatus::Code(-1),
                };
                ended.push((pid, status));
            }
        }
        let now = self.clock.now();
        for (pid, status) in ended {
            self.children.remove(&pid);
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
                match LinkIo::start(spawn.link, ours, self.tx.tx.clone(), Credit::new(), &name) {
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
        let app = &self.proto.config().app;
        let mut cmd = match self.launch.get(&*spawn.role).cloned().unwrap_or(Launch::SelfExec) {
            Launch::SelfExec => {
                let mut cmd = std::process::Command::new(std::env::current_exe()?);
                cmd.args(std::env::args_os().skip(1));
                cmd
            }
            Launch::Exe { program, args } => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args);
                cmd
            }
        };
        cmd.arg0(format!("{app}: {}#{}", spawn.role, spawn.slot))
            .env(mob_sys::ENV_ROLE, &*spawn.role)
            .env(mob_sys::ENV_SLOT, spawn.slot.to_string())
            .env(mob_sys::ENV_APP, app)
            .env(mob_sys::ENV_FD, mob_sys::CHANNEL_FD.to_string())
            .stdin(Stdio::null());
        let pending = match &self.output {
            Some(output) => {
                let (out, err, pending) = output.stdio()?;
                cmd.stdout(out).stderr(err);
                Some(pending)
            }
            None => None,
        };
        let (ours, theirs) = mob_sys::channel::socketpair()?;
        let child = mob_sys::spawn::spawn_worker(&mut cmd, theirs)?;
        Ok((child, ours, pending))
    }

    /// Kills every worker still running, waits for each, and closes every
    /// link.
    fn kill_remaining(&mut self) {
        for &pid in self.children.keys() {
            let _ = mob_sys::process::kill(pid);
        }
        for (_, mut child) in self.children.drain() {
            let _ = child.wait();
        }
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
            ack: None,
        };
        if tx.send(Msg::App(cmd)).is_err() {
            return;
        }
    }
}

/// What a request is: where, what, and how long to wait.
struct Spec {
    to: Target,
    ns: String,
    name: String,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
    timeout: Option<Duration>,
}

/// One of the kingpin's requests being built; finish it with
/// [`RequestBuilder::then`], [`RequestBuilder::send`] or
/// [`RequestBuilder::wait`].
///
/// ```no_run
/// # fn f(kingpin: &mut mob_std::Kingpin) -> Result<(), mob_std::Error> {
/// use mob_std::Target;
/// use std::time::Duration;
///
/// kingpin
///     .request(Target::Any("back".into()), "sum", &(2u32, 3u32))?
///     .timeout(Duration::from_secs(1))
///     .then(|_kingpin, outcome| match outcome {
///         Ok(reply) => println!("sum = {}", reply.decode::<u32>().unwrap()),
///         Err(e) => eprintln!("no sum: {e}"),
///     })?;
/// # Ok(()) }
/// ```
pub struct RequestBuilder<'a> {
    kingpin: &'a mut Kingpin,
    to: Target,
    ns: String,
    name: String,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
    timeout: Option<Duration>,
    callbacks: Vec<CallbackFn>,
}

impl RequestBuilder<'_> {
    /// Uses namespace `ns` instead of the default `"_"`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.ns = ns.to_string();
        self
    }

    /// Gives up after `timeout` (from now, queueing included) instead of the
    /// kingpin's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends `fd` with the request (ownership passes to the handler).
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.fds.push(fd.into());
        self
    }

    /// Passes a callback the handler may invoke once; `f` runs on the
    /// kingpin's loop. It is released, uncalled, when the request's timeout
    /// passes or its handler dies.
    pub fn callback(mut self, f: impl FnOnce(&mut Kingpin, Reply) + 'static) -> Self {
        self.callbacks.push(CallbackFn::Local(Box::new(f)));
        self
    }

    /// Sends the request; `done` runs on the kingpin's loop exactly once
    /// with its end. Returns the request's id. A target with no route is an
    /// error here.
    pub fn then(self, done: impl FnOnce(&mut Kingpin, Outcome) + 'static) -> Result<u64, Error> {
        self.start(Done::Local(Box::new(done)))
    }

    /// Sends the request and ignores how it ends.
    pub fn send(self) -> Result<u64, Error> {
        self.start(Done::Ignore)
    }

    /// Sends the request and runs the kingpin's loop until it ends (at the
    /// latest at its timeout). Events that arrive meanwhile reach the event
    /// handler after the wait. A request that ends without a reply is
    /// [`Error::Request`].
    pub fn wait(self) -> Result<Reply, Error> {
        let RequestBuilder { kingpin, to, ns, name, payload, fds, timeout, callbacks } = self;
        let id = kingpin.begin(Spec { to, ns, name, payload, fds, timeout }, callbacks, Done::Wait)?;
        kingpin.wait_until(|k| k.waited.remove(&id)).map_err(Error::Request)
    }

    fn start(self, done: Done) -> Result<u64, Error> {
        let RequestBuilder { kingpin, to, ns, name, payload, fds, timeout, callbacks } = self;
        kingpin.begin(Spec { to, ns, name, payload, fds, timeout }, callbacks, done)
    }
}

/// A job's response (load-process-manager's `enqueue` result).
#[derive(Debug)]
pub struct JobResponse {
    /// The job's id.
    pub id: u64,
    /// The worker that answered.
    pub worker: WorkerInfo,
    /// When the job was enqueued.
    pub created_at: std::time::Instant,
    /// The response payload.
    pub payload: bytes::Bytes,
    /// fds the worker sent back (a pipe or socket for a stream, say).
    pub fds: Vec<OwnedFd>,
}

impl JobResponse {
    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }
}

/// How a job ended: its response, or why there is none.
pub type JobOutcome = Result<JobResponse, mob_proto::RequestError>;

/// A job being built; finish it with [`JobBuilder::then`] or
/// [`JobBuilder::wait`].
///
/// ```no_run
/// # fn f(kingpin: &mut mob_std::Kingpin) -> Result<(), mob_std::Error> {
/// use std::time::Duration;
///
/// kingpin
///     .enqueue("workers", &"resize /tmp/a.png")?
///     .timeout(Duration::from_secs(5))
///     .retries(1) // one more try if the first worker dies
///     .then(|_kingpin, outcome| match outcome {
///         Ok(response) => println!("done by {}", response.worker.pid),
///         Err(e) => eprintln!("job failed: {e}"),
///     })?;
/// # Ok(()) }
/// ```
pub struct JobBuilder<'a> {
    kingpin: &'a mut Kingpin,
    role: String,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
    options: JobOptions,
}

impl<'a> JobBuilder<'a> {
    /// Gives up after `timeout` from now (default: never).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Up to `n` more tries if the worker handling the job dies (default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// Sends `fd` with the job (a connection to answer on, say). A job whose
    /// fds have left cannot be retried.
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.fds.push(fd.into());
        self
    }

    /// Queues the job; `done` runs on the kingpin's loop with its end.
    pub fn then(self, done: impl FnOnce(&mut Kingpin, JobOutcome) + 'static) -> Result<u64, Error> {
        self.start(JobDone::Then(Box::new(done))).map(|(id, _)| id)
    }

    /// Queues the job and runs the kingpin's loop until it ends. A job that
    /// ends without a response is [`Error::Request`].
    pub fn wait(self) -> Result<JobResponse, Error> {
        let (id, kingpin) = self.start(JobDone::Wait)?;
        kingpin.wait_until(|k| k.jobs_waited.remove(&id)).map_err(Error::Request)
    }

    fn start(self, done: JobDone) -> Result<(u64, &'a mut Kingpin), Error> {
        let JobBuilder { kingpin, role, payload, fds, options } = self;
        let handles = kingpin.insert_fds(fds);
        let now = kingpin.clock.now();
        let id = kingpin.proto.enqueue(&role, &payload, handles, options, now)?;
        kingpin.jobs.insert(id, done);
        Ok((id, kingpin))
    }
}
