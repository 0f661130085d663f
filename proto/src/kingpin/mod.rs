//! The kingpin's state machine: supervision of every worker slot, the
//! handshake on every link, and routing of messages, requests, replies and
//! callbacks between links.
//!
//! Split by job: this file holds the types, the inputs and the outputs;
//! `link.rs` one link's queues; `route.rs` how a target picks links;
//! `calls.rs` requests in flight and what ends them; `jobs.rs` the work
//! queue; `supervise.rs` restarts and shutdown; `control.rs` the operator's
//! control connections; `summary.rs` the one-line status.

mod call_table;
mod calls;
mod control;
mod jobs;
mod link;
mod route;
mod summary;
mod supervise;

pub use control::{
    ControlId, ControlOutput, ControlServer, MAX_CONTROL_CONNECTIONS, MAX_CONTROL_QUEUED, TooManyConnections,
};
pub use jobs::{JOB_NAME, JOB_NAMESPACE, JobOptions};
pub use link::FLUSH_AT;
pub use summary::Summary;
pub use supervise::{WorkerHealth, WorkerState};

use crate::config::KingpinConfig;
use crate::error::{CloseReason, RespondError, SendError};
use crate::fd::FdHandle;
use crate::frame::Transmit;
use crate::requester::{LateCounts, RequestError, Requester};
use crate::text::{Interner, Text};
use crate::time::Instant;
use crate::wire::{self, Failure, Hello, Kind, Message, Reject, Send, Settings, Source, Target, Welcome};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use bytes::Bytes;
use call_table::CallTable;
use calls::CallEntry;
use core::time::Duration;
use link::Link;
use slab::Slab;
use supervise::{Role, Shutdown};

/// How long a worker whose link reached end of stream has to exit on its
/// own before it is killed.
pub const EOF_GRACE: Duration = Duration::from_secs(1);

/// Identifies one link (one worker process's socket) for its whole life.
///
/// Ids are generation-tagged: an id whose link is gone never finds a newer
/// link, so a late event for a dead worker is ignored rather than misrouted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(u64);

impl LinkId {
    /// The id as a number (for the runtime's own tables, e.g. a mio `Token`).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`LinkId::as_u64`].
    pub const fn from_u64(raw: u64) -> LinkId {
        LinkId(raw)
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

fn make_id(key: usize, generation: u32) -> LinkId {
    LinkId((u64::from(generation) << 32) | key as u64)
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// A worker as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique for the kingpin's lifetime; a revived slot gets a new id.
    pub id: u64,
    /// The link to it.
    pub link: LinkId,
    /// Its role.
    pub role: Arc<str>,
    /// Its slot within the role.
    pub slot: u32,
    /// Its process id, once spawned (0 before).
    pub pid: u32,
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Spawn requested; no pid yet.
    Spawning,
    /// Process started; waiting for its [`Hello`].
    Handshaking,
    /// Handshake done; messages flow.
    Up,
    /// Link closed; waiting for the process to be reaped.
    Closing,
}

/// A request to start one worker process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawn {
    /// The link to create (one end for us, one for the child).
    pub link: LinkId,
    /// The worker's id.
    pub worker: u64,
    /// The role to start.
    pub role: Arc<str>,
    /// The slot within the role.
    pub slot: u32,
}

/// Something the kingpin's application should know.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A worker process was started.
    WorkerSpawned(WorkerInfo),
    /// A worker completed its handshake.
    WorkerUp(WorkerInfo),
    /// A worker is ready for work (after its handshake, or when it says so).
    WorkerReady(WorkerInfo),
    /// Every worker of a role is ready.
    RoleOnline(Arc<str>),
    /// Every role is online (once per kingpin).
    AppOnline,
    /// A role restarted more often than its intensity allows and was
    /// stopped.
    RoleFailed {
        /// The role.
        role: Arc<str>,
        /// Why its last worker died, if known.
        last_error: Option<String>,
    },
    /// A rolling reload of a role finished.
    RoleReloaded(Arc<str>),
    /// A worker reported, just before dying, why (its panic message).
    WorkerFatal(WorkerInfo, String),
    /// A job ended: its response, or why there is none.
    JobDone {
        /// The job's id, as [`Kingpin::enqueue`] returned it.
        id: u64,
        /// When it was enqueued.
        created_at: Instant,
        /// The worker that answered, and its response; or why not.
        result: Result<(WorkerInfo, Bytes, Vec<FdHandle>), RequestError>,
    },
    /// A worker's link closed for a reason other than a clean exit.
    LinkClosed(WorkerInfo, CloseReason),
    /// A worker process ended; its slot is being revived.
    WorkerExited(WorkerInfo, ExitStatus),
    /// A worker sent a message to the kingpin.
    Message {
        /// The sender.
        from: WorkerInfo,
        /// Namespace.
        ns: Text,
        /// Name.
        name: Text,
        /// Application payload.
        payload: Bytes,
        /// fds that came with it; the application owns them now.
        fds: Vec<FdHandle>,
    },
    /// A worker sent a request to the kingpin: answer it with
    /// [`Kingpin::respond`], exactly once.
    Request {
        /// The requester.
        from: WorkerInfo,
        /// The requester's id for it.
        id: u64,
        /// Namespace.
        ns: Text,
        /// Name.
        name: Text,
        /// Application payload.
        payload: Bytes,
        /// fds that came with it.
        fds: Vec<FdHandle>,
        /// Callbacks the kingpin may invoke with [`Kingpin::invoke`].
        callbacks: Vec<u64>,
    },
    /// One of the kingpin's own requests ended.
    Reply {
        /// Its id, as [`Kingpin::request`] returned it.
        id: u64,
        /// The reply's payload and fds, or why there is none.
        result: Result<(Bytes, Vec<FdHandle>), RequestError>,
    },
    /// A callback the kingpin passed was invoked (it is released now).
    Callback {
        /// The callback's id.
        callback: u64,
        /// Payload.
        payload: Bytes,
        /// fds that came with it.
        fds: Vec<FdHandle>,
    },
    /// A callback the kingpin passed will never be invoked.
    CallbackReleased {
        /// The callback's id.
        callback: u64,
    },
    /// A worker's one-way message could not be routed and was dropped.
    Undeliverable {
        /// The sender.
        from: WorkerInfo,
        /// Where it wanted to go.
        to: Target,
        /// Why it could not.
        error: SendError,
    },
}

/// What the kingpin asks of its runtime.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Create a socketpair and start a worker process on it, then report with
    /// [`Kingpin::handle_spawned`] or [`Kingpin::handle_spawn_failed`].
    Spawn(Spawn),
    /// Kill this process (SIGKILL); its exit comes back through
    /// [`Kingpin::handle_exited`].
    Kill {
        /// The process.
        pid: u32,
        /// Its link.
        link: LinkId,
    },
    /// The link has bytes to write: drain [`Kingpin::poll_transmit`].
    Transmit(LinkId),
    /// Close the link's socket. Before closing, the runtime may write what
    /// [`Kingpin::poll_transmit`] still offers, without blocking (a farewell
    /// such as a [`Reject`]).
    CloseLink(LinkId),
    /// Close the runtime's copy of this fd: the message it rode with is gone.
    ReleaseFd(FdHandle),
    /// Tell the application.
    Event(Event),
    /// The shutdown is complete: the kingpin should exit, with success if
    /// `clean` (every worker finished and exited in time).
    Exit {
        /// Whether the shutdown was clean.
        clean: bool,
    },
}

/// Sizes of the kingpin's tables, for tests and health reports: all zero
/// when nothing is in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// The kingpin's own open requests.
    pub requests: usize,
    /// Live callbacks the kingpin passed.
    pub callbacks: usize,
    /// Requests in flight to workers (the kingpin's own and forwarded).
    pub calls: usize,
    /// Workers' requests to the kingpin not yet answered.
    pub incoming: usize,
    /// Frames waiting for workers that are still starting.
    pub early: usize,
    /// Jobs not yet ended (waiting or running).
    pub jobs: usize,
}

/// The kingpin-side protocol state machine (one per kingpin process).
///
/// Methods come in four kinds, as in quinn-proto:
/// - getters ([`Kingpin::workers`], [`Kingpin::pending`],
///   [`Kingpin::poll_timeout`]);
/// - `handle_*`: inputs from the runtime (bytes read, a link down, a child
///   spawned or exited, a timer);
/// - mutators from the application ([`Kingpin::send`],
///   [`Kingpin::request`], [`Kingpin::respond`], [`Kingpin::invoke`],
///   [`Kingpin::cancel`]);
/// - `poll_*`: outputs ([`Kingpin::poll_output`], [`Kingpin::poll_transmit`],
///   [`Kingpin::poll_flush`]).
///
/// After any `handle_*` or mutator call the runtime drains `poll_output`
/// until it returns `None`, writes each link named by [`Output::Transmit`]
/// until `poll_transmit` is empty or the socket would block, and sleeps until
/// a link is readable or writable, a child exits, or `poll_timeout` passes.
/// Any interleaving of calls is valid; a timeout handled early does nothing.
///
/// ```
/// use mob_proto::{Kingpin, KingpinConfig, Output, Instant};
///
/// let mut k = Kingpin::new(KingpinConfig::new("app").role("back", 2));
/// let mut spawns = Vec::new();
/// while let Some(out) = k.poll_output() {
///     if let Output::Spawn(s) = out { spawns.push(s) }
/// }
/// assert_eq!(spawns.len(), 2);
/// k.handle_spawned(spawns[0].link, 4242, Instant::ZERO);
/// ```
pub struct Kingpin {
    config: KingpinConfig,
    roles: Vec<Role>,
    links: Slab<Link>,
    next_generation: u32,
    next_worker: u64,
    pids: BTreeMap<u32, LinkId>,
    outputs: VecDeque<Output>,
    /// Links whose queue reached [`FLUSH_AT`] (see [`Kingpin::poll_flush`]).
    flush: Vec<LinkId>,
    /// Links whose queue passed the hard limit: closed (`NotReading`) at
    /// the next [`Kingpin::poll_output`], outside whatever was queuing.
    overflowed: Vec<LinkId>,
    requests: Requester,
    calls: CallTable,
    jobs: jobs::JobQueue,
    shutdown: Option<Shutdown>,
    app_online: bool,
    exited: bool,
    /// The latest instant the runtime told us.
    now: Instant,
    /// Names of messages and requests addressed to the kingpin, shared.
    names: Interner,
    /// No link's or slot's timer (handshake, stop, ping, silence, respawn)
    /// is earlier: setting one lowers it, `handle_timeout` recomputes it.
    /// Otherwise those timers only move later (`last_seen` only grows), so
    /// it stays a lower bound and `poll_timeout` scans no links.
    timers_floor: Option<Instant>,
}

impl Kingpin {
    /// A kingpin that will ask for every slot of every role to be spawned.
    pub fn new(config: KingpinConfig) -> Kingpin {
        let roles = config.roles.iter().map(Role::new).collect();
        let mut k = Kingpin {
            requests: Requester::new(config.request_timeout),
            config,
            roles,
            links: Slab::new(),
            next_generation: 0,
            next_worker: 1,
            pids: BTreeMap::new(),
            outputs: VecDeque::new(),
            flush: Vec::new(),
            overflowed: Vec::new(),
            calls: CallTable::new(),
            jobs: jobs::JobQueue::default(),
            shutdown: None,
            app_online: false,
            exited: false,
            now: Instant::ZERO,
            names: Interner::new(),
            timers_floor: None,
        };
        for role in 0..k.roles.len() {
            for slot in 0..k.roles[role].slots.len() {
                k.spawn(role, slot as u32);
            }
        }
        k.empty_roles_online();
        k
    }

    /// The configuration.
    pub fn config(&self) -> &KingpinConfig {
        &self.config
    }

    /// Every worker that has a link, with its phase.
    pub fn workers(&self) -> impl Iterator<Item = (&WorkerInfo, Phase)> + '_ {
        self.links.iter().map(|(_, l)| (&l.info, l.phase))
    }

    /// The worker on `link`, if the link is known.
    pub fn worker(&self, link: LinkId) -> Option<(&WorkerInfo, Phase)> {
        self.link(link).map(|l| (&l.info, l.phase))
    }

    /// Requests in flight to `link` (the load "any one of a role" balances).
    pub fn in_flight(&self, link: LinkId) -> Option<u32> {
        self.link(link).map(|l| l.inflight)
    }

    /// Sizes of the request, callback and queue tables.
    pub fn pending(&self) -> Pending {
        let (requests, callbacks) = self.requests.counts();
        let (incoming, early) =
            self.links.iter().fold((0, 0), |(i, e), (_, l)| (i + l.incoming.len(), e + l.early.len()));
        Pending { requests, callbacks, calls: self.calls.len(), incoming, early, jobs: self.jobs.len() }
    }

    /// Late replies and invocations dropped so far.
    pub fn late_counts(&self) -> LateCounts {
        self.requests.late
    }

    /// The earliest instant at which [`Kingpin::handle_timeout`] has work.
    ///
    /// Found without scanning the links: a worker heard from since the
    /// last timeout has its silence deadline moved later, which this may
    /// not see yet. The wake-up it causes finds nothing to do, and the next
    /// answer is exact again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        debug_assert!(
            self.scan_timers().is_none_or(|t| self.timers_floor.is_some_and(|f| f <= t)),
            "a link or slot timer was set without lowering the floor"
        );
        let shutdown = self.shutdown.filter(|sd| !sd.hard).map(|sd| sd.deadline);
        let tables = [self.requests.next_deadline(), self.calls.next_deadline(), self.jobs.next_deadline(), shutdown];
        tables.into_iter().chain([self.timers_floor]).flatten().min()
    }

    /// The earliest timer of any link or slot (a scan of all of them).
    fn scan_timers(&self) -> Option<Instant> {
        let heartbeat = self.config.heartbeat;
        let links = self.links.iter().flat_map(|(_, l)| {
            let hb = match (heartbeat, l.phase) {
                (Some((_, timeout)), Phase::Up) => [l.next_ping, Some(l.last_seen + timeout)],
                _ => [None, None],
            };
            [l.deadline, l.stop_deadline].into_iter().chain(hb).flatten()
        });
        let slots = self.roles.iter().flat_map(|r| r.slots.iter().filter_map(|s| s.respawn_at));
        links.chain(slots).min()
    }

    /// A link's or slot's timer was set or cleared: the floor is the
    /// earliest again. (Lifecycle events only, never per message.)
    pub(super) fn timers_changed(&mut self) {
        self.timers_floor = self.scan_timers();
    }

    /// Per-worker figures: pid, role, slot, state, memory, load, restarts,
    /// uptime (load-process-manager's `health()`).
    pub fn health(&self, now: Instant) -> Vec<WorkerHealth> {
        self.health_report(now)
    }

    /// Why the last worker of `role` died (mob's `lastErr`): its panic
    /// message if it sent one, else its exit status.
    pub fn last_error(&self, role: &str) -> Option<&str> {
        self.roles.iter().find(|r| &*r.name == role)?.last_error.as_deref()
    }

    /// Whether the kingpin is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Starts a shutdown. Soft (`hard == false`): no new work, every worker
    /// is asked to finish what it has and stop, and those still running after
    /// [`KingpinConfig::shutdown_grace`] are killed. Hard: every worker is
    /// killed now. Either way [`Output::Exit`] follows; a second, hard call
    /// turns a soft shutdown hard.
    pub fn shutdown(&mut self, hard: bool, now: Instant) {
        self.now = now;
        self.begin_shutdown(hard, true, now);
    }

    /// Changes how many workers `role` has, within its min and max: growing
    /// spawns new slots, shrinking drains the highest slots (no new work,
    /// in-flight work finishes) and then stops them. Returns the count in
    /// force, or `None` for an unknown role.
    pub fn resize(&mut self, role: &str, workers: u32, now: Instant) -> Option<u32> {
        self.now = now;
        let role = self.role_index(role)?;
        Some(self.resize_role(role, workers))
    }

    /// Starts a rolling restart of `role`: one slot at a time, a new worker
    /// starts, and once it is ready the old one drains and stops, so no
    /// request is dropped. False if the role is unknown, failed, or already
    /// reloading. [`Event::RoleReloaded`] follows.
    pub fn reload(&mut self, role: &str, now: Instant) -> bool {
        self.now = now;
        self.role_index(role).is_some_and(|r| self.reload_role(r))
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if !self.overflowed.is_empty() {
            for link in core::mem::take(&mut self.overflowed) {
                self.close(link, CloseReason::NotReading, None);
            }
        }
        self.outputs.pop_front()
    }

    /// A link whose queue reached [`FLUSH_AT`] bytes since the last call:
    /// the runtime writes it now, in the middle of the application's code,
    /// rather than once control comes back to its loop. Its
    /// [`Output::Transmit`] still comes, and then finds less (or nothing).
    ///
    /// Ask after each mutator ([`Kingpin::send`], [`Kingpin::request`],
    /// ...) that the application calls; a link that cannot take bytes now
    /// is left to its writability, as any other.
    pub fn poll_flush(&mut self) -> Option<LinkId> {
        self.flush.pop()
    }

    /// What to write next on `link`.
    pub fn poll_transmit(&self, link: LinkId) -> Option<Transmit<'_>> {
        self.link(link)?.out.peek()
    }

    /// `n` bytes of the last [`Kingpin::poll_transmit`] on `link` were
    /// written; returns the fds that left with them, for the runtime to close.
    pub fn handle_transmitted(&mut self, link: LinkId, n: usize) -> Vec<FdHandle> {
        match self.link_mut(link) {
            Some(l) => l.out.advance(n),
            None => Vec::new(),
        }
    }

    /// The runtime started the process for `link`.
    pub fn handle_spawned(&mut self, link: LinkId, pid: u32, now: Instant) {
        self.now = now;
        let deadline = now + self.config.handshake_timeout;
        let pid_taken = self.pids.contains_key(&pid);
        let Some(l) = self.link_mut(link) else { return };
        match l.phase {
            Phase::Spawning => {}
            // Closed before its process existed (its role failed): the
            // process is not wanted. It is killed, and reaped as usual.
            Phase::Closing if l.info.pid == 0 && !pid_taken => {
                l.info.pid = pid;
                self.pids.insert(pid, link);
                self.push_kill(link);
                return;
            }
            // The runtime read the worker's Hello before it reported the
            // spawn: the link is already up; it only lacks its pid.
            Phase::Handshaking | Phase::Up if l.info.pid == 0 && !pid_taken => {}
            _ => return,
        }
        let handshake = l.phase == Phase::Spawning;
        if handshake {
            l.phase = Phase::Handshaking;
            l.deadline = Some(deadline);
        }
        l.info.pid = pid;
        l.spawned_at = now;
        let (info, unwanted) = (l.info.clone(), l.stopping);
        if handshake {
            self.timers_changed();
        }
        self.pids.insert(pid, link);
        self.event(Event::WorkerSpawned(info));
        if unwanted {
            // Drained (resize, shutdown) before its process existed.
            self.push_kill(link);
        }
    }

    /// The runtime could not start the process for `link`; the slot is
    /// retried after [`KingpinConfig::spawn_retry`].
    pub fn handle_spawn_failed(&mut self, link: LinkId, now: Instant) {
        let Some(l) = self.link(link) else { return };
        let (role, slot) = (l.role, l.info.slot as usize);
        match l.phase {
            Phase::Spawning => {}
            // Closed before its process existed (its role failed).
            Phase::Closing if l.info.pid == 0 => {
                self.remove_link(link);
                return self.check_exit();
            }
            // Bytes arrived on the link before the runtime reported that the
            // spawn failed: whatever wrote them is not our worker. The link
            // goes, as for any failed spawn.
            Phase::Handshaking | Phase::Up if l.info.pid == 0 => {}
            _ => return,
        }
        let unwanted = l.stopping;
        self.now = now;
        self.close(link, CloseReason::Transport("spawn failed"), None);
        self.remove_link(link);
        let retry = now + self.config.spawn_retry;
        let shutting_down = self.shutdown.is_some();
        if let Some(s) = self.roles[role].slots.get_mut(slot) {
            let mine = s.link == Some(link) || s.replacement == Some(link);
            if s.replacement == Some(link) {
                s.replacement = None;
            }
            if s.link == Some(link) {
                s.link = None;
            }
            // Retried later: the slot's worker, or its reload's replacement.
            // Not a restart.
            if mine && !shutting_down && !s.retiring && !unwanted {
                s.respawn_at = Some(retry);
                s.restart_due = false;
            }
            if s.retiring {
                self.retire_slots(role);
            }
        }
        self.timers_changed();
        self.update_online(role);
        self.check_exit();
    }

    /// Bytes (and the fds that came with them) read from `link`.
    pub fn handle_read(&mut self, link: LinkId, bytes: &[u8], fds: Vec<FdHandle>, now: Instant) {
        self.now = now;
        let Some(l) = self.link_mut(link) else {
            self.release(fds);
            return;
        };
        if l.phase == Phase::Closing {
            self.release(fds);
            return;
        }
        l.last_seen = now;
        l.dec.handle_read(bytes, fds);
        self.process(link, now);
    }

    /// The link reached end of stream, or failed to read or write.
    pub fn handle_eof(&mut self, link: LinkId, now: Instant) {
        self.now = now;
        let Some(l) = self.link_mut(link) else { return };
        if l.phase == Phase::Closing {
            return;
        }
        l.dec.handle_eof();
        self.process(link, now);
        self.close(link, CloseReason::Eof, None);
    }

    /// The runtime could not read or write `link` (`what` says why, e.g.
    /// "control data truncated"). The link is closed and its process killed.
    pub fn handle_link_error(&mut self, link: LinkId, what: &'static str, now: Instant) {
        self.now = now;
        self.close(link, CloseReason::Transport(what), None);
    }

    /// A child process was reaped. Read whatever its link still holds before
    /// calling this, so that its last messages are not lost.
    pub fn handle_exited(&mut self, pid: u32, status: ExitStatus, now: Instant) {
        self.now = now;
        let Some(link) = self.pids.remove(&pid) else { return };
        let Some(l) = self.link(link) else { return };
        let (role, slot, expected, fatal) = (l.role, l.info.slot as usize, l.stopping, l.fatal);
        let up_for = l.up_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.close(link, CloseReason::Exited, None);
        if let Some(l) = self.link(link) {
            let info = l.info.clone();
            self.event(Event::WorkerExited(info, status));
        }
        self.remove_link(link);
        self.after_exit(role, slot, link, status, expected, fatal, up_for, now);
        self.check_exit();
    }

    /// Timers: request and call deadlines, handshake deadlines and delayed
    /// respawns that are due. An early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.expire_calls(now);
        self.expire_jobs(now);
        self.heartbeat(now);
        self.shutdown_deadlines(now);
        let overdue: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(key, l)| make_id(key, l.generation))
            .collect();
        for link in overdue {
            self.close(link, CloseReason::HandshakeTimeout, None);
        }
        for role in 0..self.roles.len() {
            for slot in 0..self.roles[role].slots.len() {
                let s = &mut self.roles[role].slots[slot];
                if s.respawn_at.is_some_and(|t| t <= now) {
                    s.respawn_at = None;
                    let counted = core::mem::take(&mut s.restart_due);
                    self.respawn(role, slot, counted, now);
                }
            }
        }
        self.timers_changed();
    }

    /// Sends a one-way message from the kingpin.
    ///
    /// All, role and pid targets include workers that are still starting: their
    /// messages wait, in order, until the handshake ends. fds can go to one
    /// recipient only. On error the fds are released.
    pub fn send(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        if self.exited {
            self.release(fds);
            return Err(SendError::ShuttingDown);
        }
        self.route_send(None, to, ns, name, payload, fds)
    }

    /// Sends a request from the kingpin to one worker ([`Target::Any`] or
    /// [`Target::Pid`]). Its end comes back as exactly one [`Event::Reply`]
    /// with the returned id; `timeout` (default
    /// [`KingpinConfig::request_timeout`]) runs from now. `callbacks` callback
    /// ids are allocated and returned. A target with no route is an error
    /// here, at once.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
        timeout: Option<Duration>,
        callbacks: usize,
        now: Instant,
    ) -> Result<(u64, Vec<u64>), SendError> {
        self.now = now;
        if self.shutdown.is_some() {
            self.release(fds);
            return Err(SendError::ShuttingDown);
        }
        if callbacks > wire::MAX_CALLBACKS {
            self.release(fds);
            return Err(SendError::Encode(crate::frame::EncodeError::TooManyCallbacks { count: callbacks }));
        }
        let (id, deadline, cbs) = self.requests.open(now, timeout, callbacks);
        let timeout_ms = crate::requester::millis(deadline.saturating_duration_since(now));
        let call = calls::NewCall { id, from: Source::Kingpin, ns, name, timeout_ms, callbacks: &cbs };
        match self.dispatch_call(None, &to, &call, payload, fds) {
            Ok(target) => {
                self.calls.insert(id, deadline, CallEntry::Own { target, replied: false });
                Ok((id, cbs))
            }
            Err(failure) => {
                self.requests.close(id, false);
                self.requests.release_callbacks(id);
                Err(match failure {
                    Failure::Backpressure => SendError::Backpressure,
                    Failure::NotExported => SendError::NotExported,
                    _ => SendError::NoRoute,
                })
            }
        }
    }

    /// Ends the kingpin's request `id` now as [`RequestError::Cancelled`],
    /// releases its callbacks ([`Event::CallbackReleased`]) and tells its
    /// worker to stop (a Call still waiting for a starting worker is taken
    /// back instead). False if it had already ended.
    pub fn cancel(&mut self, id: u64) -> bool {
        if !self.requests.close(id, false) {
            return false;
        }
        self.end_own_call(id);
        self.event(Event::Reply { id, result: Err(RequestError::Cancelled) });
        for callback in self.requests.release_callbacks(id) {
            self.event(Event::CallbackReleased { callback });
        }
        true
    }

    /// Answers request `id` from the worker on `link`. A second answer is
    /// [`RespondError::NotPending`]; so is an answer to a worker that is gone.
    pub fn respond(
        &mut self,
        link: LinkId,
        id: u64,
        result: Result<(), Failure>,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), RespondError> {
        if !self.link_mut(link).is_some_and(|l| l.incoming.remove(&id)) {
            self.release(fds);
            return Err(RespondError::NotPending);
        }
        let reply = wire::Reply { id, result };
        self.push(link, Kind::Reply, &reply, payload, fds).map_err(RespondError::Send)
    }

    /// Invokes callback `callback` of request `id` from the worker on `link`.
    pub fn invoke(
        &mut self,
        link: LinkId,
        id: u64,
        callback: u64,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        self.push(link, Kind::Invoke, &wire::Invoke { call: id, callback }, payload, fds)
    }

    fn process(&mut self, link: LinkId, now: Instant) {
        loop {
            let Some(l) = self.link_mut(link) else { return };
            if l.phase == Phase::Closing {
                return;
            }
            let frame = match l.dec.decode() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => return self.close(link, CloseReason::Decode(e), None),
            };
            match Message::parse(frame.kind, &frame.body, frame.fds) {
                Ok(msg) => self.on_message(link, msg, now),
                Err((e, fds)) => {
                    self.release(fds);
                    return self.close(link, CloseReason::Decode(e), None);
                }
            }
        }
    }

    fn on_message(&mut self, link: LinkId, msg: Message<&str>, now: Instant) {
        let Some(l) = self.link(link) else { return };
        match (l.phase, msg) {
            (Phase::Handshaking | Phase::Spawning, Message::Hello(hello)) => self.on_hello(link, hello),
            (Phase::Up, Message::Send(Send { to, ns, name }, payload, fds)) => {
                let from = l.info.clone();
                if to == Target::Kingpin {
                    let (ns, name) = (self.names.intern(ns), self.names.intern(name));
                    self.event(Event::Message { from, ns, name, payload, fds });
                } else if let Err(error) = self.route_send(Some(link), to.clone(), ns, name, &payload, fds) {
                    self.event(Event::Undeliverable { from, to, error });
                }
            }
            (Phase::Up, Message::Request(req, payload, fds)) => self.on_request(link, req, payload, fds, now),
            (Phase::Up, Message::Reply(reply, payload, fds)) => self.on_reply(link, reply, payload, fds),
            (Phase::Up, Message::Invoke(invoke, payload, fds)) => self.on_invoke(link, invoke, payload, fds),
            (Phase::Up, Message::Status(status)) => self.on_status(link, status),
            (Phase::Up, Message::Pong(_)) => {}
            (Phase::Up, Message::Fatal(fatal)) => {
                let info = l.info.clone();
                let role = l.role;
                self.roles[role].last_error = Some(fatal.message.clone());
                if let Some(l) = self.link_mut(link) {
                    l.fatal = true;
                }
                self.event(Event::WorkerFatal(info, fatal.message));
            }
            (Phase::Up, Message::Scale(scale)) => {
                let role = l.role;
                self.resize_role(role, scale.workers);
            }
            (Phase::Handshaking | Phase::Spawning, msg) => {
                self.release(msg.into_fds());
                self.close(link, CloseReason::Protocol("first frame must be Hello"), None);
            }
            (_, msg) => {
                self.release(msg.into_fds());
                self.close(link, CloseReason::Protocol("frame kind not accepted from a worker"), None);
            }
        }
    }

    fn on_hello(&mut self, link: LinkId, hello: Hello) {
        let ours = wire::PROTOCOL_VERSION;
        if hello.magic != wire::MAGIC {
            return self.close(link, CloseReason::BadMagic, None);
        }
        if hello.version != ours {
            let reason = format!("worker speaks protocol {}, kingpin speaks {ours}", hello.version);
            let reject = Reject { version: ours, reason };
            return self.close(link, CloseReason::VersionMismatch { ours, theirs: hello.version }, Some(reject));
        }
        let now = self.now;
        let first_ping = self.config.heartbeat.map(|_| now);
        let starts_ready = self.link(link).is_some_and(|l| self.roles[l.role].spec.ready_on_connect);
        let settings = Settings {
            app: self.config.app.clone(),
            max_body: self.config.max_body,
            request_timeout_ms: crate::requester::millis(self.config.request_timeout),
            starts_ready,
        };
        let Some(l) = self.link_mut(link) else { return };
        if l.stopping {
            // Drained or stopped while it was starting: it is being killed.
            // It is not welcomed (no work is flushed into it); its exit ends
            // the link and reroutes what waited for it.
            return;
        }
        if *l.info.role != *hello.role || l.info.slot != hello.slot {
            let reason =
                format!("started as {}#{}, hello says {}#{}", l.info.role, l.info.slot, hello.role, hello.slot);
            let reject = Reject { version: ours, reason };
            return self.close(link, CloseReason::Protocol("hello names another role or slot"), Some(reject));
        }
        let welcome = Welcome { version: ours, worker: l.info.id, settings };
        if l.out.push(Kind::Welcome as u8, &welcome, &[], Vec::new()).is_err() {
            return self.close(link, CloseReason::Protocol("welcome does not fit the frame size limit"), None);
        }
        l.phase = Phase::Up;
        l.deadline = None;
        l.up_at = Some(now);
        l.last_seen = now;
        // The first Ping is due at once: `poll_timeout` wakes the runtime
        // for it, so a worker that is idle but alive is pinged (and answers)
        // long before it could be taken for hung.
        l.next_ping = first_ping;
        l.exports = hello.exports;
        for early in core::mem::take(&mut l.early) {
            l.out.push_encoded(&early.frame, early.fds);
        }
        l.early_bytes = 0;
        l.early_fds = 0;
        let info = l.info.clone();
        let role = l.role;
        self.timers_changed();
        self.outputs.push_back(Output::Transmit(link));
        self.event(Event::WorkerUp(info));
        if self.roles[role].spec.ready_on_connect {
            if let Some(l) = self.link_mut(link) {
                l.ready = true;
                l.was_ready = true;
            }
            self.became_ready(link);
        }
    }

    /// Closes a link: releases every fd it holds, ends or reroutes whatever
    /// was in flight through it, optionally queues a farewell frame, asks the
    /// runtime to close the socket and, if the process may still run, to kill
    /// it.
    fn close(&mut self, link: LinkId, reason: CloseReason, farewell: Option<Reject>) {
        let eof_deadline = self.now + EOF_GRACE;
        let Some(l) = self.link_mut(link) else { return };
        if l.phase == Phase::Closing {
            return;
        }
        let had_process = l.phase != Phase::Spawning;
        let role = l.role;
        let expected = l.stopping;
        if reason == CloseReason::Eof && l.stop_deadline.is_none() {
            // A worker that closes its channel is almost always exiting:
            // give it a moment to do so before it is killed.
            l.stop_deadline = Some(eof_deadline);
        }
        l.phase = Phase::Closing;
        l.ready = false;
        l.deadline = None;
        l.incoming.clear();
        let leftover: Vec<FdHandle> = l.dec.drain_fds().chain(l.out.clear()).collect();
        let early = core::mem::take(&mut l.early);
        l.early_bytes = 0;
        l.early_fds = 0;
        let farewell_sent = farewell.is_some();
        if let Some(reject) = farewell {
            l.out.push(Kind::Reject as u8, &reject, &[], Vec::new()).ok();
            // Give the worker a moment to read why before it is killed.
            if l.stop_deadline.is_none() {
                l.stop_deadline = Some(eof_deadline);
            }
        }
        let info = l.info.clone();
        self.timers_changed();
        self.release(leftover);
        self.outputs.push_back(Output::CloseLink(link));
        self.reroute_early(early);
        self.fail_calls_through(link);
        self.update_online(role);
        match reason {
            CloseReason::Exited => {}
            CloseReason::Eof if expected => {}
            CloseReason::Eof => self.event(Event::LinkClosed(info, reason)),
            _ if farewell_sent => self.event(Event::LinkClosed(info, reason)),
            _ => {
                if had_process {
                    self.push_kill(link);
                }
                self.event(Event::LinkClosed(info, reason));
            }
        }
    }

    fn spawn(&mut self, role: usize, slot: u32) {
        let link = self.new_link(role, slot);
        self.roles[role].slots[slot as usize].link = Some(link);
    }

    /// Creates a link for a new worker process of `role`'s `slot` and asks
    /// the runtime to spawn it.
    fn new_link(&mut self, role: usize, slot: u32) -> LinkId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let worker = self.next_worker;
        self.next_worker += 1;
        let entry = self.links.vacant_entry();
        let link = make_id(entry.key(), generation);
        let info = WorkerInfo { id: worker, link, role: self.roles[role].name.clone(), slot, pid: 0 };
        entry.insert(Link::new(generation, info.clone(), role, self.config.max_body, self.now));
        self.outputs.push_back(Output::Spawn(Spawn { link, worker, role: info.role, slot }));
        link
    }

    fn remove_link(&mut self, link: LinkId) {
        if self.link(link).is_some() {
            let l = self.links.remove(link.index());
            if self.pids.get(&l.info.pid) == Some(&link) {
                self.pids.remove(&l.info.pid);
            }
            self.timers_changed();
        }
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn release(&mut self, fds: impl IntoIterator<Item = FdHandle>) {
        self.outputs.extend(fds.into_iter().map(Output::ReleaseFd));
    }

    fn link(&self, id: LinkId) -> Option<&Link> {
        self.links.get(id.index()).filter(|l| l.generation == id.generation())
    }

    fn link_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.links.get_mut(id.index()).filter(|l| l.generation == id.generation())
    }

    fn role_index(&self, name: &str) -> Option<usize> {
        self.roles.iter().position(|r| &*r.name == name)
    }
}
