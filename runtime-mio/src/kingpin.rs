//! The kingpin side: the supervisor's event loop.

use crate::link::{Outgoing, READ_BUF, ReadEnd, WriteEnd, read_link, write_link};
use crate::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
use crate::loop_tx::{Command, LoopTx};
use crate::wait::Waiter;
use crate::{Error, Event, Handle, Launch, RequestBuilder};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use mob_app::RequestSpec as Spec;
use mob_app::kingpin::Systemd;
use mob_app::kingpin::{RoleListener, Translated};
use mob_app::{BuildNameHasher, CallbackFn, Clock, Completions, Done, HeldFd, JobDone, JobQueue, JobSpec, RequestLoop};
use mob_proto::frame::Transmit;
use mob_proto::wire::DEFAULT_NAMESPACE;
use mob_proto::{FdHandle, FdTable, KingpinConfig, LinkId, Output, Phase, Spawn, Target, WorkerHealth, WorkerInfo};
use mob_sys::signals::SignalPipe;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LINK: usize = 2;

type EventHandler = Box<dyn FnMut(&mut Kingpin, Event)>;
type SignalHandler = Box<dyn FnMut(&mut Kingpin, i32)>;

/// The supervisor: starts every worker, revives those that die and routes
/// their messages, on one mio event loop.
///
/// Usually built and run through [`crate::App`].
pub struct Kingpin {
    proto: mob_proto::Kingpin,
    poll: Poll,
    /// How long the loop polls before it sleeps (`KingpinConfig::spin`).
    waiter: Waiter,
    links: HashMap<LinkId, LinkSock, BuildNameHasher>,
    children: HashMap<u32, Child>,
    fds: FdTable<HeldFd>,
    signals: SignalPipe,
    clock: Clock,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_signal: Option<SignalHandler>,
    completions: Completions<Kingpin>,
    jobs: HashMap<u64, JobDone<Kingpin>, BuildNameHasher>,
    listeners: Vec<RoleListener>,
    fatal: HashMap<LinkId, String>,
    exit: Option<bool>,
    rx: Receiver<Command>,
    tx: Arc<LoopTx>,
    /// The waker fired: other threads may have sent commands.
    woken: bool,
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
        let tx = LoopTx::new(tx, waker);
        mob_sys::process::set_name(&config.app);
        let output = Some(crate::output::Output::open(poll.registry()));
        Ok(Kingpin {
            waiter: Waiter::new(config.spin),
            proto: mob_proto::Kingpin::new(config),
            poll,
            links: HashMap::default(),
            children: HashMap::new(),
            fds: FdTable::new(),
            signals,
            clock,
            launch,
            on_event: None,
            on_signal: None,
            completions: Completions::new(),
            jobs: HashMap::default(),
            listeners: Vec::new(),
            fatal: HashMap::new(),
            exit: None,
            rx,
            tx,
            woken: true,
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
    /// frame holds a reference, not a copy, so sending one fd (a file, a
    /// socket) in many messages costs no `dup` and no `close` per message.
    /// The fd closes when its last holder (the application, or a frame not
    /// yet written) lets go.
    ///
    /// ```no_run
    /// # fn f(kingpin: &mut mob_mio::Kingpin) -> Result<(), mob_mio::Error> {
    /// use std::os::fd::OwnedFd;
    /// use std::sync::Arc;
    ///
    /// let log = Arc::new(OwnedFd::from(std::fs::File::create("/tmp/app.log")?));
    /// for pid in [101, 102, 103] {
    ///     kingpin.send_shared(mob_mio::Target::Pid(pid), "_", "log-to", &[], std::slice::from_ref(&log))?;
    /// }
    /// # Ok(()) }
    /// ```
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
        mob_app::kingpin::local_addr(&self.listeners, role)
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
        for fd in mob_app::kingpin::shared_with(&self.listeners, &worker.role) {
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
            let timeout = next.map(|t| Clock::wait(now, t));
            if let Err(e) = self.waiter.wait(&mut self.poll, &self.clock, &mut events, timeout)
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
                    self.woken = true;
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
            if let Some(t) = due {
                let now = self.clock.now();
                if t <= now {
                    self.proto.handle_timeout(now);
                }
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
        let reaped = mob_app::kingpin::reap(&mut self.children, self.orphans);
        for (pid, status) in reaped.workers {
            if let Some(link) = self.link_of(pid) {
                self.read(link);
            }
            self.proto.handle_exited(pid, status, self.clock.now());
        }
        for event in reaped.orphans {
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
            // The peer is gone (EPIPE): what it wrote before it went is still
            // in the socket, and its last messages must not be lost to the
            // write that found it gone.
            self.read(link);
            self.proto.handle_link_error(link, "write error", self.clock.now());
        }
    }

    /// Writes the links whose queue reached [`mob_proto::FLUSH_AT`] while
    /// the application queued (unless the socket is known to be full): the
    /// worker starts on a burst while the rest of it is queued.
    fn flush_due(&mut self) {
        while let Some(link) = self.proto.poll_flush() {
            if self.links.get(&link).is_some_and(|l| !l.write_interest) {
                self.write(link);
            }
        }
    }

    /// Carries out everything proto and other threads ask for, until both
    /// are quiet.
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
                let _ = r.start(self);
            }
            Command::Answer(answered) => mob_app::kingpin::hand_answer(&mut self.proto, &mut self.fds, answered),
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
    /// (replies, callbacks and jobs go to their closures).
    fn convert(&mut self, event: mob_proto::Event) -> Option<Event> {
        match mob_app::kingpin::translate(event, &mut self.fds, &self.clock, &mut self.fatal, &self.tx) {
            Translated::App(event) => {
                if let Event::WorkerSpawned(w) = &event {
                    self.hand_listener(w);
                }
                return Some(event);
            }
            Translated::JobDone { id, outcome } => {
                if let Some(done) = self.jobs.remove(&id) {
                    done.finish(self, outcome);
                }
            }
            Translated::Reply { id, outcome } => {
                if let Some(done) = self.completions.done.remove(&id) {
                    done.finish(self, outcome);
                }
            }
            Translated::Callback { id, reply } => {
                if let Some(f) = self.completions.callbacks.remove(&id) {
                    f.call(self, reply);
                }
            }
            Translated::CallbackReleased { id } => {
                self.completions.callbacks.remove(&id);
            }
            Translated::Kept => {}
        }
        None
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
        let output = self.output.as_ref().map(|o| o.stdio());
        let (child, ours, pending) = mob_app::kingpin::start_worker(&self.launch, self.proto.config(), spawn, output)?;
        mob_sys::channel::set_nonblocking(&ours, true)?;
        let sock = UnixStream::from_std(std::os::unix::net::UnixStream::from(ours));
        Ok((child, sock, pending))
    }

    /// Kills every worker still running and waits for each.
    fn kill_remaining(&mut self) {
        mob_app::kingpin::kill_all(&mut self.children);
        self.links.clear();
    }
}

/// A job being built; finish it with [`JobBuilder::then`] (see
/// [`mob_app::JobBuilder`]).
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
pub type JobBuilder<'a> = mob_app::JobBuilder<'a, Kingpin>;

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

impl RequestLoop for Kingpin {
    fn begin(&mut self, spec: Spec, callbacks: Vec<CallbackFn<Self>>, done: Done<Self>) -> Result<u64, Error> {
        let Spec { to, ns, name, payload, fds, timeout } = spec;
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
