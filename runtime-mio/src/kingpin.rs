//! The kingpin side: the supervisor's event loop.

use crate::clock::Clock;
use crate::link::{Outgoing, READ_BUF, ReadEnd, WriteEnd, read_link, write_link};
use crate::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
use crate::request::{CallbackFn, Completions, Done, Handle, RequestBuilder, RequestLoop, Spec};
use crate::rpc::{Answer, Callback, Command, LoopTx, Reply, Request, Responder, Shared};
use crate::systemd::Systemd;
use crate::{Error, Message};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use mob_proto::frame::Transmit;
use mob_proto::wire::DEFAULT_NAMESPACE;
use mob_proto::{
    CloseReason, ExitStatus, FdHandle, FdTable, JobOptions, KingpinConfig, LinkId, Output, Phase, Spawn, Target,
    WorkerHealth, WorkerInfo,
};
use mob_sys::signals::SignalPipe;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LINK: usize = 2;

/// How the processes of a role are started.
#[derive(Clone, Debug)]
pub enum Launch {
    /// Re-execute this program (with the same arguments, as Node's cluster
    /// does); its `main` sees `MOB_ROLE` and runs the role's entry.
    SelfExec,
    /// Run another executable, which must speak the protocol on fd 3
    /// (for example one built with [`crate::Mobster::from_env`]).
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

/// The supervisor: starts every worker, revives those that die and routes
/// their messages, on one mio event loop.
///
/// Usually built and run through [`crate::App`].
pub struct Kingpin {
    proto: mob_proto::Kingpin,
    poll: Poll,
    links: HashMap<LinkId, LinkSock>,
    children: HashMap<u32, Child>,
    fds: FdTable<OwnedFd>,
    signals: SignalPipe,
    clock: Clock,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_signal: Option<SignalHandler>,
    completions: Completions<Kingpin>,
    jobs: HashMap<u64, JobDone>,
    listeners: Vec<(String, Listener, ListenMode)>,
    fatal: HashMap<LinkId, String>,
    exit: Option<bool>,
    rx: Receiver<Command>,
    tx: LoopTx,
    buf: Vec<u8>,
    stopping: bool,
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
    /// missing from it are re-executions of this program).
    pub fn new(config: KingpinConfig, launch: HashMap<String, Launch>) -> Result<Kingpin, Error> {
        // What systemd passed (sockets, the notification socket) is taken
        // first, and its variables unset, so that no worker inherits it.
        mob_sys::activation::init().map_err(std::io::Error::from)?;
        let clock = Clock::new();
        let systemd = Systemd::from_env(clock.now())?;
        let signals = SignalPipe::install(&[Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM])?;
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&signals.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = channel();
        let tx = LoopTx { tx, shared: Arc::new(Shared::new(waker)) };
        mob_sys::process::set_name(&config.app);
        let output = Some(crate::output::Output::open(poll.registry()));
        Ok(Kingpin {
            proto: mob_proto::Kingpin::new(config),
            poll,
            links: HashMap::new(),
            children: HashMap::new(),
            fds: FdTable::new(),
            signals,
            clock,
            launch,
            on_event: None,
            on_signal: None,
            completions: Completions::new(),
            jobs: HashMap::new(),
            listeners: Vec::new(),
            fatal: HashMap::new(),
            exit: None,
            rx,
            tx,
            buf: vec![0; READ_BUF],
            stopping: false,
            systemd,
            orphans: mob_sys::reap::receives_orphans(),
            output,
            control: None,
        })
    }

    /// Calls `handler` for every [`Event`]. The handler may use the kingpin
    /// (send, stop).
    pub fn on_event(&mut self, handler: impl FnMut(&mut Kingpin, Event) + 'static) {
        self.on_event = Some(Box::new(handler));
    }

    /// Whether workers' stdout and stderr reach the kingpin's line by line,
    /// each line prefixed with `[role#slot pid] ` (the default), or are the
    /// kingpin's own, inherited as they are. Applies to workers spawned
    /// from now on. See `mob_proto::lines` for what happens to partial
    /// lines, binary output and fast writers.
    pub fn prefix_output(&mut self, on: bool) {
        if on != self.output.is_some() {
            self.output = on.then(|| crate::output::Output::open(self.poll.registry()));
        }
    }

    /// Opens the control socket at `path`: a Unix socket only this user can
    /// use (mode 0600, and every connection's user checked with
    /// `SO_PEERCRED`; others are refused and logged), which the `mob`
    /// command uses for `status`, `resize`, `reload`, `stop` and `kill`
    /// (`SPEC.md` section 16). A stale socket left at `path` is replaced; the
    /// socket is removed when the kingpin exits.
    pub fn control_socket(&mut self, path: impl AsRef<std::path::Path>) -> Result<(), Error> {
        let control = crate::control::Control::bind(path.as_ref(), self.poll.registry(), self.clock.now())?;
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

    /// Sends raw bytes with fds (given up by the caller).
    pub fn send_raw(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        let handles = if fds.is_empty() { Vec::new() } else { fds.into_iter().map(|fd| self.fds.insert(fd)).collect() };
        Ok(self.proto.send(to, ns, name, payload, handles)?)
    }

    /// Starts a request to one worker ([`Target::Any`] or [`Target::Pid`])
    /// carrying `value` (postcard-encoded).
    pub fn request<T: Serialize + ?Sized>(
        &mut self,
        to: Target,
        name: &str,
        value: &T,
    ) -> Result<RequestBuilder<'_, Kingpin>, Error> {
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

    /// Binds `addr` and shares it with every worker of `role` (see
    /// [`ListenMode`]). Usually called through [`crate::App::listen`].
    pub fn listen(&mut self, role: &str, addr: &ListenAddr, mode: ListenMode) -> Result<(), Error> {
        let listener = Listener::bind(addr)?;
        if mode == ListenMode::Distributed {
            let fd = listener.try_clone_fd()?;
            mob_sys::channel::set_nonblocking(&fd, true)?;
            let token = Token(usize::MAX - self.listeners.len());
            self.poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
            // The registered fd is the same socket as `listener` (a dup).
            self.listeners.push((role.to_string(), Listener::from_fd(fd)?, mode));
        } else {
            self.listeners.push((role.to_string(), listener, mode));
        }
        Ok(())
    }

    /// The address `role` listens on, if it was given one.
    pub fn local_addr(&self, role: &str) -> Option<std::net::SocketAddr> {
        self.listeners.iter().find_map(|(r, l, _)| match l {
            Listener::Tcp(t) if r == role => t.local_addr().ok(),
            _ => None,
        })
    }

    /// Accepts every waiting connection on listener `index` and hands each
    /// to one ready worker of its role.
    fn accept(&mut self, index: usize) {
        loop {
            let Some((role, listener, _)) = self.listeners.get(index) else { return };
            let accepted: std::io::Result<OwnedFd> = match listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| s.into()),
                Listener::Unix(l) => l.accept().map(|(s, _)| s.into()),
            };
            let Ok(conn) = accepted else { return };
            let to = Target::Any(role.clone());
            // With no worker to take it, the connection is closed.
            let _ = self.send_raw(to, LISTEN_NAMESPACE, LISTEN_CONNECTION, &[], vec![conn]);
        }
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

    /// Handles SIGINT and SIGTERM instead of the default (a soft kill, and
    /// a hard kill on the second signal), as load-process-manager's
    /// `on('SIGINT')` does.
    pub fn on_signal(&mut self, handler: impl FnMut(&mut Kingpin, i32) + 'static) {
        self.on_signal = Some(Box::new(handler));
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

    /// Runs until [`Kingpin::stop`], SIGINT or SIGTERM.
    pub fn run(mut self) -> Result<ExitCode, Error> {
        let mut events = Events::with_capacity(256);
        loop {
            self.pump();
            let now = self.clock.now();
            let notify_at = self.systemd.as_mut().and_then(|s| s.tick(&self.proto, now));
            if self.stopping {
                self.proto.shutdown(false, self.clock.now());
                self.stopping = false;
                continue;
            }
            if self.exit.is_some() {
                break;
            }
            let due = self.proto.poll_timeout();
            let next = due.into_iter().chain(notify_at).min();
            let timeout = next.map(|t| self.clock.until(t));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(e.into());
            }
            for event in events.iter() {
                if event.token() == SIGNALS {
                    self.on_signals();
                    continue;
                }
                if event.token() == WAKER {
                    continue;
                }
                if crate::control::owns(event.token()) {
                    if let Some(control) = &mut self.control {
                        control.ready(self.poll.registry(), event.token(), &mut self.proto, self.clock.now());
                    }
                    continue;
                }
                if crate::output::owns(event.token()) {
                    if let Some(output) = &mut self.output {
                        output.ready(self.poll.registry(), event.token());
                    }
                    continue;
                }
                if event.token().0 > usize::MAX - 64 {
                    self.accept(usize::MAX - event.token().0);
                    continue;
                }
                let link = LinkId::from_u64((event.token().0 - FIRST_LINK) as u64);
                if event.is_readable() || event.is_read_closed() {
                    self.read(link);
                }
                if event.is_writable() {
                    self.write(link);
                }
            }
            // Only when something was due: a deadline set during this turn
            // is seen by the next `poll_timeout`.
            let now = self.clock.now();
            if due.is_some_and(|t| t <= now) {
                self.proto.handle_timeout(now);
            }
        }
        self.kill_remaining();
        if let Some(output) = &mut self.output {
            output.finish(self.poll.registry());
        }
        if let Some(mut control) = self.control.take() {
            control.close_all(self.poll.registry());
        }
        Ok(if self.exit == Some(true) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }

    fn on_signals(&mut self) {
        for sig in self.signals.drain() {
            match sig {
                Signal::SIGCHLD => self.reap(),
                other => {
                    if let Some(mut handler) = self.on_signal.take() {
                        handler(self, other as i32);
                        self.on_signal.get_or_insert(handler);
                    } else {
                        // First signal: soft kill; a second one: hard kill.
                        let hard = self.proto.is_shutting_down();
                        self.proto.shutdown(hard, self.clock.now());
                    }
                }
            }
        }
    }

    /// Reaps every child that has ended, reading what its link still holds
    /// first so its last messages are not lost. When orphans come to us too,
    /// one `waitpid(-1)` loop reaps everything and sorts workers from
    /// orphans, so no worker's status is lost to a second waiter.
    fn reap(&mut self) {
        let mut ended = Vec::new();
        let mut orphans = Vec::new();
        while self.orphans {
            let Ok(Some((pid, exit))) = mob_sys::reap::reap_any() else { break };
            let status = match exit {
                mob_sys::process::Exit::Code(c) => ExitStatus::Code(c),
                mob_sys::process::Exit::Signal(s) => ExitStatus::Signal(s),
            };
            // A worker's `Child` is dropped unwaited: its pid is reaped.
            match self.children.remove(&pid) {
                Some(_) => ended.push((pid, status)),
                None => orphans.push(Event::OrphanReaped { pid, status }),
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
        for (pid, status) in ended {
            self.children.remove(&pid);
            if let Some(link) = self.link_of(pid) {
                self.read(link);
            }
            self.proto.handle_exited(pid, status, self.clock.now());
        }
        for event in orphans {
            if let Some(mut handler) = self.on_event.take() {
                handler(self, event);
                self.on_event.get_or_insert(handler);
            }
        }
    }

    fn link_of(&self, pid: u32) -> Option<LinkId> {
        self.proto.workers().find(|(w, _)| w.pid == pid).map(|(w, _)| w.link)
    }

    fn read(&mut self, link: LinkId) {
        let now = self.clock.now();
        let Kingpin { links, buf, fds, proto, .. } = self;
        let Some(LinkSock { sock, .. }) = links.get(&link) else { return };
        let end = read_link(sock, buf, fds, |bytes, handles| {
            proto.handle_read(link, bytes, handles, now);
            proto.worker(link).is_some_and(|(_, phase)| phase != Phase::Closing)
        });
        match end {
            ReadEnd::Drained => {}
            ReadEnd::Eof => self.proto.handle_eof(link, now),
            ReadEnd::Failed(what) => self.proto.handle_link_error(link, what, now),
        }
    }

    fn write(&mut self, link: LinkId) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let mut out = LinkOut { proto: &mut self.proto, link };
        let end = write_link(&l.sock, &mut out, &mut self.fds);
        // Ask for writability only while a write is blocked: otherwise every
        // send would come back as a wake-up that says "writable".
        let want = matches!(end, WriteEnd::Blocked);
        if want != l.write_interest {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let token = Token(link.as_u64() as usize + FIRST_LINK);
            if self.poll.registry().reregister(&mut l.sock, token, interest).is_ok() {
                l.write_interest = want;
            }
        }
        if let WriteEnd::Failed = end {
            self.proto.handle_link_error(link, "write error", self.clock.now());
        }
    }

    /// Carries out everything proto and other threads ask for, until both
    /// are quiet.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(cmd) = self.tx.next(&self.rx) {
                busy = true;
                self.command(cmd);
            }
            while let Some(out) = self.proto.poll_output() {
                busy = true;
                self.output(out);
            }
            if !busy {
                return;
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { to, ns, name, payload, fds } => {
                let _ = self.send_raw(to, &ns, &name, &payload, fds);
            }
            Command::Request(r) => {
                let spec =
                    Spec { to: r.to, ns: r.ns, name: r.name, payload: r.payload, fds: r.fds, timeout: r.timeout };
                let _ = self.begin(spec, Vec::new(), Done::Remote(r.done));
            }
            Command::Respond { to: Answer::Worker(link, id), result, payload, fds } => {
                let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
                let _ = self.proto.respond(link, id, result, &payload, handles);
            }
            Command::Invoke { to: Answer::Worker(link, id), callback, payload, fds } => {
                let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
                let _ = self.proto.invoke(link, id, callback, &payload, handles);
            }
            Command::Respond { .. } | Command::Invoke { .. } => {}
            Command::Kingpin(f) => f(self),
            Command::Stop => self.stopping = true,
        }
    }

    fn output(&mut self, out: Output) {
        {
            match out {
                Output::Spawn(spawn) => self.spawn(spawn),
                Output::Kill { pid, .. } => {
                    let _ = mob_sys::process::kill(pid);
                }
                Output::Transmit(link) => self.write(link),
                Output::CloseLink(link) => {
                    self.write(link); // best effort: a farewell frame
                    if let Some(LinkSock { mut sock, .. }) = self.links.remove(&link) {
                        let _ = self.poll.registry().deregister(&mut sock);
                    }
                }
                Output::ReleaseFd(h) => drop(self.fds.take(h)),
                Output::Exit { clean } => self.exit = Some(clean),
                Output::Event(event) => {
                    if let Some(event) = self.convert(event)
                        && let Some(mut handler) = self.on_event.take()
                    {
                        handler(self, event);
                        self.on_event.get_or_insert(handler);
                    }
                }
            }
        }
    }

    /// Turns proto's event into the application's, or handles it here
    /// (replies and callbacks go to their closures).
    fn convert(&mut self, event: mob_proto::Event) -> Option<Event> {
        use mob_proto::Event as E;
        Some(match event {
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
                return None;
            }
            E::JobDone { id, created_at, result } => {
                let result = result.map(|(worker, payload, fds)| JobResponse {
                    id,
                    worker,
                    created_at: self.clock.std_instant(created_at),
                    payload,
                    fds: self.take_fds(fds),
                });
                if let Some(done) = self.jobs.remove(&id) {
                    done.finish(self, result);
                }
                return None;
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
                if let Some(done) = self.completions.done.remove(&id) {
                    done.finish(self, outcome);
                }
                return None;
            }
            E::Callback { callback, payload, fds } => {
                let reply = Reply { payload, fds: self.take_fds(fds) };
                if let Some(f) = self.completions.callbacks.remove(&callback) {
                    f(self, reply);
                }
                return None;
            }
            E::CallbackReleased { callback } => {
                self.completions.callbacks.remove(&callback);
                return None;
            }
            E::Undeliverable { from, to, .. } => Event::Undeliverable { from, to },
        })
    }

    fn take_fds(&mut self, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
        handles.into_iter().filter_map(|h| self.fds.take(h)).collect()
    }

    fn spawn(&mut self, spawn: Spawn) {
        let now = self.clock.now();
        match self.start_process(&spawn) {
            Ok((child, mut sock, pending)) => {
                if let (Some(output), Some(pending)) = (&mut self.output, pending) {
                    output.attach(self.poll.registry(), pending, &spawn.role, spawn.slot, child.id());
                }
                let token = Token(spawn.link.as_u64() as usize + FIRST_LINK);
                if self.poll.registry().register(&mut sock, token, Interest::READABLE).is_err() {
                    let _ = mob_sys::process::kill(child.id());
                }
                let pid = child.id();
                self.children.insert(pid, child);
                self.links.insert(spawn.link, LinkSock { sock, write_interest: false });
                self.proto.handle_spawned(spawn.link, pid, now);
            }
            Err(e) => {
                log::warn!("cannot start a worker for {}#{}: {e}", spawn.role, spawn.slot);
                self.proto.handle_spawn_failed(spawn.link, now)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_process(&self, spawn: &Spawn) -> Result<(Child, UnixStream, Option<crate::output::Pending>), Error> {
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
        mob_sys::channel::set_nonblocking(&ours, true)?;
        let child = mob_sys::spawn::spawn_worker(&mut cmd, theirs)?;
        let sock = UnixStream::from_std(std::os::unix::net::UnixStream::from(ours));
        Ok((child, sock, pending))
    }

    /// Kills every worker still running and waits for each.
    fn kill_remaining(&mut self) {
        for (&pid, _) in self.children.iter() {
            let _ = mob_sys::process::kill(pid);
        }
        for (_, mut child) in self.children.drain() {
            let _ = child.wait();
        }
        self.links.clear();
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

/// A closure run on the kingpin's loop when a job ends.
type JobDoneFn = Box<dyn FnOnce(&mut Kingpin, JobOutcome)>;

enum JobDone {
    Then(JobDoneFn),
}

impl JobDone {
    fn finish(self, kingpin: &mut Kingpin, outcome: JobOutcome) {
        match self {
            JobDone::Then(f) => f(kingpin, outcome),
        }
    }
}

/// A job being built; finish it with [`JobBuilder::then`].
///
/// ```no_run
/// # fn f(kingpin: &mut mob_mio::Kingpin) -> Result<(), mob_mio::Error> {
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

impl JobBuilder<'_> {
    /// Gives up after `timeout` from now (default: never).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
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
        let JobBuilder { kingpin, role, payload, fds, options } = self;
        let handles = fds.into_iter().map(|fd| kingpin.fds.insert(fd)).collect();
        let now = kingpin.clock.now();
        let id = kingpin.proto.enqueue(&role, &payload, handles, options, now)?;
        kingpin.jobs.insert(id, JobDone::Then(Box::new(done)));
        Ok(id)
    }
}

impl RequestLoop for Kingpin {
    fn begin(&mut self, spec: Spec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error> {
        let Spec { to, ns, name, payload, fds, timeout } = spec;
        let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
        let now = self.clock.now();
        match self.proto.request(to, &ns, &name, &payload, handles, timeout, callbacks.len(), now) {
            Ok((id, ids)) => {
                self.completions.insert(id, done, ids, callbacks);
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

/// A worker's socket, and whether it is registered for writability.
struct LinkSock {
    sock: UnixStream,
    write_interest: bool,
}

struct LinkOut<'a> {
    proto: &'a mut mob_proto::Kingpin,
    link: LinkId,
}

impl Outgoing for LinkOut<'_> {
    fn peek(&self) -> Option<Transmit<'_>> {
        self.proto.poll_transmit(self.link)
    }

    fn advance(&mut self, n: usize) -> Vec<FdHandle> {
        self.proto.handle_transmitted(self.link, n)
    }
}
