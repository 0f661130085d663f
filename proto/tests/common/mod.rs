//! A deterministic simulation of one kingpin and its workers.
//!
//! [`Sim`] runs a real [`Kingpin`] and one real [`Worker`] per spawned
//! process, joined by in-memory links ([`Pipe`]s) that behave like a Unix
//! stream socket carrying SCM_RIGHTS: a write's fds travel with its first
//! byte, and a read hands over the fds of at most one write. Time is virtual
//! ([`Sim::now`], [`Sim::advance`]); chunking of writes and reads is chosen by a
//! [`Chunker`] (whole, seeded, or explicit sizes).
//!
//! Every fd is a *file* (a `u64` id, like an open file description) behind an
//! [`FdHandle`] minted by the [`Ledger`]'s `FdTable<u64>`. A handle comes back
//! exactly once: delivered to an application, returned by
//! `handle_transmitted` (the file then travels in the pipe and is re-minted
//! as a new handle on the receiving side, like an SCM_RIGHTS dup), released
//! through `ReleaseFd`, or lost with a process that died holding it. The
//! ledger panics on a handle that comes back twice, from the wrong side, or
//! was never minted, and [`Ledger::assert_balanced`] checks at quiescence that
//! nothing is outstanding.
#![allow(dead_code)]

use bytes::Bytes;
use core::time::Duration;
use mob_proto::frame::{Decoder, HEADER_LEN, OutBuf};
use mob_proto::wire::{Hello, Kind, Message, Welcome};
use mob_proto::{
    CloseReason, Event, ExitStatus, FdHandle, FdTable, Instant, Kingpin, KingpinConfig, LinkId, Output, Phase,
    RequestError, SendError, Source, Spawn, Target, Worker, WorkerConfig, WorkerEvent, WorkerInfo, WorkerOutput,
};
use std::collections::{BTreeMap, VecDeque};

// ---------------------------------------------------------------------------
// Randomness and chunking
// ---------------------------------------------------------------------------

/// SplitMix64: small, seedable, good enough to pick chunk sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// How many bytes each write or read moves.
#[derive(Clone, Debug)]
pub enum Chunker {
    /// Everything available.
    Whole,
    /// Sizes from a seeded generator: often one byte, often a few, sometimes all.
    Seeded(Rng),
    /// These sizes in turn, cycling (0 counts as 1).
    Sizes { sizes: Vec<usize>, next: usize },
}

impl Chunker {
    pub fn seeded(seed: u64) -> Chunker {
        Chunker::Seeded(Rng::new(seed))
    }

    pub fn sizes(sizes: Vec<usize>) -> Chunker {
        assert!(!sizes.is_empty());
        Chunker::Sizes { sizes, next: 0 }
    }

    /// A size in `1..=available` (`available` must be at least 1).
    pub fn next(&mut self, available: usize) -> usize {
        assert!(available > 0);
        let want = match self {
            Chunker::Whole => available,
            Chunker::Seeded(rng) => match rng.range(0, 3) {
                0 => 1,
                1 => rng.range(1, 8),
                2 => rng.range(1, 64),
                _ => available,
            },
            Chunker::Sizes { sizes, next } => {
                let s = sizes[*next % sizes.len()];
                *next += 1;
                s
            }
        };
        want.clamp(1, available)
    }
}

// ---------------------------------------------------------------------------
// Pipe: one direction of a stream socket with SCM_RIGHTS
// ---------------------------------------------------------------------------

struct Segment<T> {
    bytes: Vec<u8>,
    pos: usize,
    fds: Vec<T>,
}

/// One direction of a Unix stream socket. Each [`Pipe::write`] is a segment
/// whose fds ride with its first byte. A [`Pipe::read`] may span segments but
/// never hands over the fds of two writes (as the kernel never merges two
/// SCM_RIGHTS messages into one read).
pub struct Pipe<T> {
    segs: VecDeque<Segment<T>>,
}

impl<T> Default for Pipe<T> {
    fn default() -> Self {
        Pipe { segs: VecDeque::new() }
    }
}

impl<T> Pipe<T> {
    pub fn new() -> Pipe<T> {
        Pipe::default()
    }

    /// Queues one write: `bytes` with `fds` on its first byte.
    pub fn write(&mut self, bytes: &[u8], fds: Vec<T>) {
        assert!(!bytes.is_empty() || fds.is_empty(), "fds cannot be sent without a byte");
        if !bytes.is_empty() {
            self.segs.push_back(Segment { bytes: bytes.to_vec(), pos: 0, fds });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.bytes.len() - s.pos).sum()
    }

    /// Reads at most `max` bytes (at least one if any are queued).
    pub fn read(&mut self, max: usize) -> Option<(Vec<u8>, Vec<T>)> {
        if self.segs.is_empty() {
            return None;
        }
        let max = max.max(1);
        let mut bytes = Vec::new();
        let mut fds = Vec::new();
        while bytes.len() < max {
            let Some(seg) = self.segs.front_mut() else {
                break;
            };
            if seg.pos == 0 && !seg.fds.is_empty() {
                if !fds.is_empty() {
                    break;
                }
                fds = std::mem::take(&mut seg.fds);
            }
            let n = (max - bytes.len()).min(seg.bytes.len() - seg.pos);
            bytes.extend_from_slice(&seg.bytes[seg.pos..seg.pos + n]);
            seg.pos += n;
            if seg.pos == seg.bytes.len() {
                self.segs.pop_front();
            }
        }
        Some((bytes, fds))
    }

    /// Drops everything queued (the socket closed) and returns the fds that
    /// were still in it.
    pub fn discard(&mut self) -> Vec<T> {
        self.segs.drain(..).flat_map(|s| s.fds).collect()
    }
}

// ---------------------------------------------------------------------------
// The fd ledger
// ---------------------------------------------------------------------------

/// Which process holds a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Kingpin,
    Worker(u32),
}

/// How a handle came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Handed to the application in an event.
    Delivered,
    /// Returned by `handle_transmitted`: the file left through the socket.
    Transmitted,
    /// Returned through a `ReleaseFd` output.
    Released,
    /// Its process died while proto (or the test) still held it.
    DiedWithProcess,
}

#[derive(Clone, Debug)]
pub struct HandleRecord {
    pub raw: u64,
    pub file: u64,
    pub holder: Side,
    pub fate: Option<Fate>,
}

/// Mints fd handles and checks that each comes back exactly once.
pub struct Ledger {
    table: FdTable<u64>,
    records: Vec<HandleRecord>,
    by_raw: BTreeMap<u64, usize>,
    next_file: u64,
    /// Files that were inside a socket when it closed (the kernel closes them).
    pub lost_in_socket: Vec<u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            table: FdTable::new(),
            records: Vec::new(),
            by_raw: BTreeMap::new(),
            next_file: 1,
            lost_in_socket: Vec::new(),
        }
    }
}

impl Ledger {
    /// A new file, not yet behind any handle.
    pub fn new_file(&mut self) -> u64 {
        let f = self.next_file;
        self.next_file += 1;
        f
    }

    /// A new handle to `file`, held by `holder`.
    pub fn mint(&mut self, file: u64, holder: Side) -> FdHandle {
        let h = self.table.insert(file);
        let idx = self.records.len();
        self.records.push(HandleRecord { raw: h.raw(), file, holder, fate: None });
        assert!(self.by_raw.insert(h.raw(), idx).is_none(), "FdTable reused a raw handle value");
        h
    }

    /// `h` came back from `by` as `fate`; returns its file.
    pub fn settle(&mut self, h: FdHandle, fate: Fate, by: Side) -> u64 {
        let raw = h.raw();
        let Some(&idx) = self.by_raw.get(&raw) else {
            panic!("{by:?} gave back handle {raw:#x} ({fate:?}), which was never minted");
        };
        let rec = &mut self.records[idx];
        assert_eq!(rec.holder, by, "handle {raw:#x} of file {} came back from the wrong side ({fate:?})", rec.file);
        let Some(file) = self.table.take(h) else {
            panic!("handle {raw:#x} of file {} came back twice: first {:?}, now {fate:?}", rec.file, rec.fate);
        };
        assert_eq!(file, rec.file);
        rec.fate = Some(fate);
        file
    }

    /// Settles every handle of `fds`; returns their files, in order.
    pub fn settle_all(&mut self, fds: Vec<FdHandle>, fate: Fate, by: Side) -> Vec<u64> {
        fds.into_iter().map(|h| self.settle(h, fate, by)).collect()
    }

    /// Every handle still held by `side`'s process dies with it.
    pub fn process_died(&mut self, side: Side) {
        for rec in self.records.iter_mut() {
            if rec.holder == side && rec.fate.is_none() {
                self.table.take(FdHandle::from_raw(rec.raw)).expect("an unsettled handle is in the table");
                rec.fate = Some(Fate::DiedWithProcess);
            }
        }
    }

    /// Handles not yet come back.
    pub fn outstanding(&self) -> Vec<&HandleRecord> {
        self.records.iter().filter(|r| r.fate.is_none()).collect()
    }

    /// Every handle minted so far, in minting order.
    pub fn records(&self) -> &[HandleRecord] {
        &self.records
    }

    /// What became of each handle to `file`, in minting order.
    pub fn history(&self, file: u64) -> Vec<(Side, Option<Fate>)> {
        self.records.iter().filter(|r| r.file == file).map(|r| (r.holder, r.fate)).collect()
    }

    /// Every minted handle came back exactly once and none is outstanding.
    pub fn assert_balanced(&self) {
        let out = self.outstanding();
        assert!(out.is_empty(), "handles outstanding: {out:#?}");
        assert!(self.table.is_empty(), "FdTable still holds handles");
    }
}

// ---------------------------------------------------------------------------
// What the sim records
// ---------------------------------------------------------------------------

/// A kingpin [`Event`], with fds turned into the files behind them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KEvent {
    Spawned(WorkerInfo),
    Up(WorkerInfo),
    LinkClosed(WorkerInfo, CloseReason),
    Exited(WorkerInfo, ExitStatus),
    Message {
        from: WorkerInfo,
        ns: String,
        name: String,
        payload: Bytes,
        files: Vec<u64>,
    },
    Undeliverable {
        from: WorkerInfo,
        to: Target,
        error: SendError,
    },
    Request {
        from: WorkerInfo,
        id: u64,
        ns: String,
        name: String,
        payload: Bytes,
        files: Vec<u64>,
        callbacks: Vec<u64>,
    },
    Reply {
        id: u64,
        result: Result<(Bytes, Vec<u64>), RequestError>,
    },
    Callback {
        callback: u64,
        payload: Bytes,
        files: Vec<u64>,
    },
    CallbackReleased {
        callback: u64,
    },
    Ready(WorkerInfo),
    RoleOnline(String),
    AppOnline,
    RoleFailed {
        role: String,
        last_error: Option<String>,
    },
    RoleReloaded(String),
    Fatal(WorkerInfo, String),
    JobDone {
        id: u64,
        result: Result<(WorkerInfo, Bytes, Vec<u64>), RequestError>,
    },
    /// The kingpin asked to exit (shutdown complete).
    Exit {
        clean: bool,
    },
}

/// A message a worker's application received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub from: Source,
    pub ns: String,
    pub name: String,
    pub payload: Bytes,
    pub files: Vec<u64>,
}

/// A worker [`WorkerEvent`], with fds turned into files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WEvent {
    Welcome(Welcome),
    Message(Received),
    Request { call: u64, msg: Received, callbacks: Vec<u64> },
    Cancelled { call: u64 },
    Reply { id: u64, result: Result<(Bytes, Vec<u64>), RequestError> },
    Callback { callback: u64, payload: Bytes, files: Vec<u64> },
    CallbackReleased { callback: u64 },
    Stop { grace: core::time::Duration },
}

/// Which input to the kingpin a Spawn came out of (exact only with
/// [`Sim::eager`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A call the test made itself (resize, reload, …), or unknown.
    Test,
    /// `handle_exited` for a worker of this role and slot.
    Exit { role: String, slot: u32 },
    /// `handle_timeout`.
    Timeout,
    /// `handle_read` or `handle_eof`.
    Read,
    /// `handle_spawn_failed`.
    SpawnFailed,
}

type HelloRewrite = Box<dyn FnMut(&mut Hello)>;

/// One worker process.
pub struct Proc {
    pub pid: u32,
    pub link: LinkId,
    pub role: String,
    pub slot: u32,
    /// `None` once the process is dead.
    pub worker: Option<Worker>,
    /// A frozen process neither runs nor reads (SIGSTOP).
    pub frozen: bool,
    /// Everything its application saw, in order.
    pub events: Vec<WEvent>,
    /// Why its Worker closed, if it did.
    pub closed: Option<CloseReason>,
    /// How it ended, if it did.
    pub exit: Option<ExitStatus>,
    wants_write: bool,
    eof_seen: bool,
    hello_rewrite: Option<HelloRewrite>,
}

impl Proc {
    pub fn alive(&self) -> bool {
        self.worker.is_some()
    }

    pub fn welcome(&self) -> Option<&Welcome> {
        self.events.iter().find_map(|e| match e {
            WEvent::Welcome(w) => Some(w),
            _ => None,
        })
    }

    pub fn inbox(&self) -> Vec<&Received> {
        self.events
            .iter()
            .filter_map(|e| match e {
                WEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Names of the messages received, in order.
    pub fn names(&self) -> Vec<String> {
        self.inbox().iter().map(|m| m.name.clone()).collect()
    }
}

/// The socketpair of one link, as the sim sees it.
struct SimLink {
    pid: Option<u32>,
    to_worker: Pipe<u64>,
    to_kingpin: Pipe<u64>,
    kingpin_open: bool,
    wants_write: bool,
    blocked: bool,
}

// ---------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------

pub const FIRST_PID: u32 = 1000;

pub struct Sim {
    pub kingpin: Kingpin,
    pub now: Instant,
    pub ledger: Ledger,
    pub chunker: Chunker,
    /// When set, `Output::Spawn` waits in `pending_spawns` for
    /// [`Sim::complete_spawn`] or [`Sim::fail_spawn`].
    pub hold_spawns: bool,
    /// When set, a dying process's link reports EOF before `handle_exited`.
    pub eof_on_exit: bool,
    /// What the workers of each role export (their Hello says so).
    pub exports: BTreeMap<String, Vec<String>>,
    pub pending_spawns: Vec<Spawn>,
    /// Every `Output::Spawn`, in order.
    pub spawns: Vec<Spawn>,
    /// Every `Output::Kill`, in order.
    pub kills: Vec<(u32, LinkId)>,
    /// Every `Output::CloseLink`, in order.
    pub closed_links: Vec<LinkId>,
    /// When set, the kingpin's outputs are drained right after each input
    /// the sim feeds it, so that [`Sim::spawn_log`] knows what caused each
    /// Spawn.
    pub eager: bool,
    /// Every `Output::Spawn`, with the virtual time and its cause.
    pub spawn_log: Vec<(Instant, Spawn, Cause)>,
    cause: Cause,
    /// Every kingpin event, in order.
    pub events: Vec<KEvent>,
    pub procs: BTreeMap<u32, Proc>,
    links: BTreeMap<LinkId, SimLink>,
    pending_kills: Vec<u32>,
    pending_exits: Vec<(u32, ExitStatus)>,
    next_pid: u32,
}

impl Sim {
    /// A sim that moves whole writes and whole reads.
    pub fn new(config: KingpinConfig) -> Sim {
        Sim::with_chunker(config, Chunker::Whole)
    }

    /// A sim whose write and read sizes come from `seed`.
    pub fn chunked(config: KingpinConfig, seed: u64) -> Sim {
        Sim::with_chunker(config, Chunker::seeded(seed))
    }

    pub fn with_chunker(config: KingpinConfig, chunker: Chunker) -> Sim {
        Sim {
            kingpin: Kingpin::new(config),
            now: Instant::ZERO,
            ledger: Ledger::default(),
            chunker,
            hold_spawns: false,
            eof_on_exit: false,
            exports: BTreeMap::new(),
            pending_spawns: Vec::new(),
            spawns: Vec::new(),
            kills: Vec::new(),
            closed_links: Vec::new(),
            eager: false,
            spawn_log: Vec::new(),
            cause: Cause::Test,
            events: Vec::new(),
            procs: BTreeMap::new(),
            links: BTreeMap::new(),
            pending_kills: Vec::new(),
            pending_exits: Vec::new(),
            next_pid: FIRST_PID,
        }
    }

    // --- driving ---------------------------------------------------------

    /// One round: kingpin outputs and writes, worker outputs and writes,
    /// deaths, then one read in each direction of each link. Returns whether
    /// anything happened.
    pub fn step(&mut self) -> bool {
        let mut progress = self.drain_kingpin();
        progress |= self.flush_kingpin_writes();
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            progress |= self.drain_worker(pid, true);
        }
        progress |= self.run_deaths();
        progress |= self.deliver();
        progress
    }

    /// Steps until nothing happens, then checks that no bytes were left
    /// queued without a `Transmit` output asking for them to be written.
    pub fn run_until_idle(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                self.check_quiet();
                return;
            }
        }
        panic!("the simulation never went idle");
    }

    /// Moves the virtual clock and fires the timers that are due (the
    /// kingpin's, and those of running workers).
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        if self.kingpin.poll_timeout().is_some_and(|t| t <= self.now) {
            self.before_input();
            self.kingpin.handle_timeout(self.now);
            self.after_input(Cause::Timeout);
        }
        for p in self.procs.values_mut() {
            if p.frozen {
                continue;
            }
            if let Some(w) = p.worker.as_mut()
                && w.poll_timeout().is_some_and(|t| t <= self.now)
            {
                w.handle_timeout(self.now);
            }
        }
    }

    fn check_quiet(&self) {
        for (link, l) in &self.links {
            if l.kingpin_open && !l.blocked {
                assert!(
                    self.kingpin.poll_transmit(*link).is_none(),
                    "kingpin has bytes for {link:?} but never asked for them to be written"
                );
            }
        }
        for p in self.procs.values() {
            if let (Some(w), false) = (&p.worker, p.frozen) {
                assert!(
                    w.poll_transmit().is_none(),
                    "worker {} has bytes but never asked for them to be written",
                    p.pid
                );
            }
        }
    }

    /// With [`Sim::eager`]: what the test's own calls left is drained first,
    /// as theirs.
    fn before_input(&mut self) {
        if self.eager {
            self.drain_kingpin();
        }
    }

    /// With [`Sim::eager`]: drains what the input just fed produced.
    fn after_input(&mut self, cause: Cause) {
        if self.eager {
            self.cause = cause;
            self.drain_kingpin();
            self.cause = Cause::Test;
        }
    }

    /// Handles every output the kingpin has now (what the test's own calls
    /// produced, with [`Sim::eager`]).
    pub fn drain(&mut self) {
        self.drain_kingpin();
    }

    fn drain_kingpin(&mut self) -> bool {
        let mut progress = false;
        while let Some(out) = self.kingpin.poll_output() {
            progress = true;
            match out {
                Output::Spawn(s) => {
                    self.spawns.push(s.clone());
                    self.spawn_log.push((self.now, s.clone(), self.cause.clone()));
                    let fresh = SimLink {
                        pid: None,
                        to_worker: Pipe::new(),
                        to_kingpin: Pipe::new(),
                        kingpin_open: true,
                        wants_write: false,
                        blocked: false,
                    };
                    assert!(self.links.insert(s.link, fresh).is_none(), "Spawn reused a live LinkId");
                    if self.hold_spawns {
                        self.pending_spawns.push(s);
                    } else {
                        self.start(s);
                    }
                }
                Output::Kill { pid, link } => {
                    let p = self.procs.get(&pid).expect("Kill names a pid never spawned");
                    assert_eq!(p.link, link, "Kill names the wrong link for pid {pid}");
                    self.kills.push((pid, link));
                    self.pending_kills.push(pid);
                }
                Output::Transmit(link) => {
                    let l = self.links.get_mut(&link).expect("Transmit for a link never spawned");
                    assert!(l.kingpin_open, "Transmit for a closed link {link:?}");
                    l.wants_write = true;
                }
                Output::CloseLink(link) => {
                    self.closed_links.push(link);
                    self.close_kingpin_end(link);
                }
                Output::ReleaseFd(h) => {
                    self.ledger.settle(h, Fate::Released, Side::Kingpin);
                }
                Output::Event(e) => self.record_event(e),
                Output::Exit { clean } => self.events.push(KEvent::Exit { clean }),
            }
        }
        progress
    }

    fn record_event(&mut self, e: Event) {
        let e = match e {
            Event::WorkerSpawned(i) => KEvent::Spawned(i),
            Event::WorkerUp(i) => KEvent::Up(i),
            Event::LinkClosed(i, r) => KEvent::LinkClosed(i, r),
            Event::WorkerExited(i, s) => KEvent::Exited(i, s),
            Event::Message { from, ns, name, payload, fds } => {
                let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Kingpin);
                KEvent::Message { from, ns: ns.into(), name: name.into(), payload, files }
            }
            Event::Undeliverable { from, to, error } => KEvent::Undeliverable { from, to, error },
            Event::Request { from, id, ns, name, payload, fds, callbacks } => KEvent::Request {
                from,
                id,
                ns: ns.into(),
                name: name.into(),
                payload,
                files: self.ledger.settle_all(fds, Fate::Delivered, Side::Kingpin),
                callbacks,
            },
            Event::Reply { id, result } => KEvent::Reply {
                id,
                result: result.map(|(payload, fds)| {
                    let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Kingpin);
                    (payload, files)
                }),
            },
            Event::Callback { callback, payload, fds } => KEvent::Callback {
                callback,
                payload,
                files: self.ledger.settle_all(fds, Fate::Delivered, Side::Kingpin),
            },
            Event::CallbackReleased { callback } => KEvent::CallbackReleased { callback },
            Event::WorkerReady(i) => KEvent::Ready(i),
            Event::RoleOnline(r) => KEvent::RoleOnline(r.to_string()),
            Event::AppOnline => KEvent::AppOnline,
            Event::RoleFailed { role, last_error } => KEvent::RoleFailed { role: role.to_string(), last_error },
            Event::RoleReloaded(r) => KEvent::RoleReloaded(r.to_string()),
            Event::WorkerFatal(i, m) => KEvent::Fatal(i, m),
            Event::JobDone { id, result, .. } => KEvent::JobDone {
                id,
                result: result.map(|(w, payload, fds)| {
                    let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Kingpin);
                    (w, payload, files)
                }),
            },
        };
        self.events.push(e);
    }

    /// The kingpin writes what it has for each link that asked.
    fn flush_kingpin_writes(&mut self) -> bool {
        let mut progress = false;
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            let l = &self.links[&link];
            if !l.wants_write || l.blocked || !l.kingpin_open {
                continue;
            }
            while self.write_kingpin_once(link, false) {
                progress = true;
            }
            self.links.get_mut(&link).unwrap().wants_write = false;
        }
        progress
    }

    /// One write from the kingpin on `link`; `whole` ignores the chunker.
    fn write_kingpin_once(&mut self, link: LinkId, whole: bool) -> bool {
        let Some(t) = self.kingpin.poll_transmit(link) else {
            return false;
        };
        let n = if whole { t.bytes.len() } else { self.chunker.next(t.bytes.len()) };
        let bytes = t.bytes[..n].to_vec();
        let offered: Vec<u64> = t.fds.iter().map(FdHandle::raw).collect();
        let fds = self.kingpin.handle_transmitted(link, n);
        let sent: Vec<u64> = fds.iter().map(FdHandle::raw).collect();
        assert_eq!(offered, sent, "handle_transmitted returned other fds than poll_transmit offered");
        let files: Vec<u64> =
            fds.into_iter().map(|h| self.ledger.settle(h, Fate::Transmitted, Side::Kingpin)).collect();
        let l = self.links.get_mut(&link).unwrap();
        let worker_alive = l.pid.and_then(|pid| self.procs.get(&pid)).is_some_and(Proc::alive);
        if worker_alive {
            l.to_worker.write(&bytes, files);
        } else {
            // EPIPE: the peer is gone; the kernel closes what was sent.
            self.ledger.lost_in_socket.extend(files);
        }
        true
    }

    fn close_kingpin_end(&mut self, link: LinkId) {
        let l = self.links.get(&link).expect("CloseLink for a link never spawned");
        assert!(l.kingpin_open, "CloseLink twice for {link:?}");
        // A farewell (a Reject) may still be written, without blocking.
        while self.write_kingpin_once(link, true) {}
        let l = self.links.get_mut(&link).unwrap();
        l.kingpin_open = false;
        l.wants_write = false;
        let lost = l.to_kingpin.discard();
        self.ledger.lost_in_socket.extend(lost);
    }

    /// Drains one worker's outputs and writes its bytes.
    fn drain_worker(&mut self, pid: u32, runnable: bool) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else {
            return false;
        };
        if p.frozen && runnable {
            return false;
        }
        let Some(w) = p.worker.as_mut() else {
            return false;
        };
        let mut progress = false;
        while let Some(out) = w.poll_output() {
            progress = true;
            match out {
                WorkerOutput::Transmit => p.wants_write = true,
                WorkerOutput::Event(WorkerEvent::Welcome(welcome)) => {
                    p.events.push(WEvent::Welcome(welcome));
                }
                WorkerOutput::Event(WorkerEvent::Message { from, ns, name, payload, fds }) => {
                    let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Worker(pid));
                    p.events.push(WEvent::Message(Received { from, ns: ns.into(), name: name.into(), payload, files }));
                }
                WorkerOutput::Event(WorkerEvent::Request { call, from, ns, name, payload, fds, callbacks }) => {
                    let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Worker(pid));
                    let msg = Received { from, ns: ns.into(), name: name.into(), payload, files };
                    p.events.push(WEvent::Request { call, msg, callbacks });
                }
                WorkerOutput::Event(WorkerEvent::Cancelled { call }) => {
                    p.events.push(WEvent::Cancelled { call });
                }
                WorkerOutput::Event(WorkerEvent::Stop { grace }) => {
                    p.events.push(WEvent::Stop { grace });
                }
                WorkerOutput::Event(WorkerEvent::Reply { id, result }) => {
                    let result = result.map(|(payload, fds)| {
                        let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Worker(pid));
                        (payload, files)
                    });
                    p.events.push(WEvent::Reply { id, result });
                }
                WorkerOutput::Event(WorkerEvent::Callback { callback, payload, fds }) => {
                    let files = self.ledger.settle_all(fds, Fate::Delivered, Side::Worker(pid));
                    p.events.push(WEvent::Callback { callback, payload, files });
                }
                WorkerOutput::Event(WorkerEvent::CallbackReleased { callback }) => {
                    p.events.push(WEvent::CallbackReleased { callback });
                }
                WorkerOutput::ReleaseFd(h) => {
                    self.ledger.settle(h, Fate::Released, Side::Worker(pid));
                }
                WorkerOutput::Closed(reason) => {
                    assert!(p.closed.is_none(), "worker {pid} closed twice");
                    p.closed = Some(reason);
                    if runnable {
                        // Its application exits.
                        self.pending_exits.push((pid, ExitStatus::Code(1)));
                    }
                }
            }
        }
        if !runnable || !p.wants_write {
            return progress;
        }
        let link = p.link;
        loop {
            let p = self.procs.get_mut(&pid).unwrap();
            let w = p.worker.as_mut().unwrap();
            let Some(t) = w.poll_transmit() else { break };
            progress = true;
            let (n, bytes) = match p.hello_rewrite.take() {
                Some(mut f) => {
                    let n = t.bytes.len();
                    (n, rewrite_hello(t.bytes, &mut f))
                }
                None => {
                    let n = self.chunker.next(t.bytes.len());
                    (n, t.bytes[..n].to_vec())
                }
            };
            let offered: Vec<u64> = t.fds.iter().map(FdHandle::raw).collect();
            let fds = w.handle_transmitted(n);
            let sent: Vec<u64> = fds.iter().map(FdHandle::raw).collect();
            assert_eq!(offered, sent, "worker returned other fds than it offered");
            let files: Vec<u64> =
                fds.into_iter().map(|h| self.ledger.settle(h, Fate::Transmitted, Side::Worker(pid))).collect();
            let l = self.links.get_mut(&link).unwrap();
            if l.kingpin_open {
                l.to_kingpin.write(&bytes, files);
            } else {
                self.ledger.lost_in_socket.extend(files);
            }
        }
        self.procs.get_mut(&pid).unwrap().wants_write = false;
        progress
    }

    /// Processes that exit on their own, then kills whose farewell was read.
    fn run_deaths(&mut self) -> bool {
        let mut progress = false;
        for (pid, status) in std::mem::take(&mut self.pending_exits) {
            if self.procs[&pid].alive() {
                self.exit(pid, status);
                progress = true;
            }
        }
        for pid in std::mem::take(&mut self.pending_kills) {
            let p = &self.procs[&pid];
            if !p.alive() {
                continue;
            }
            let farewell_read = self.links[&p.link].to_worker.is_empty();
            if farewell_read || p.frozen {
                self.exit(pid, ExitStatus::Signal(9));
                progress = true;
            } else {
                self.pending_kills.push(pid);
            }
        }
        progress
    }

    /// One read in each direction of each link.
    fn deliver(&mut self) -> bool {
        let mut progress = false;
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            let l = self.links.get_mut(&link).unwrap();
            if l.kingpin_open && !l.to_kingpin.is_empty() {
                let n = self.chunker.next(l.to_kingpin.len());
                let (bytes, files) = l.to_kingpin.read(n).unwrap();
                let fds = files.into_iter().map(|f| self.ledger.mint(f, Side::Kingpin)).collect();
                self.before_input();
                self.kingpin.handle_read(link, &bytes, fds, self.now);
                self.after_input(Cause::Read);
                progress = true;
            }
            let l = self.links.get_mut(&link).unwrap();
            let Some(pid) = l.pid else { continue };
            let p = self.procs.get_mut(&pid).unwrap();
            if p.frozen {
                continue;
            }
            let Some(w) = p.worker.as_mut() else { continue };
            if !l.to_worker.is_empty() {
                let n = self.chunker.next(l.to_worker.len());
                let (bytes, files) = l.to_worker.read(n).unwrap();
                let fds = files.into_iter().map(|f| self.ledger.mint(f, Side::Worker(pid))).collect();
                w.handle_read(&bytes, fds);
                progress = true;
            } else if !l.kingpin_open && !p.eof_seen {
                p.eof_seen = true;
                w.handle_eof();
                progress = true;
            }
        }
        progress
    }

    // --- processes ---------------------------------------------------------

    fn start(&mut self, s: Spawn) -> u32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.kingpin.handle_spawned(s.link, pid, self.now);
        let l = self.links.get_mut(&s.link).expect("spawned link exists");
        assert!(l.pid.is_none());
        l.pid = Some(pid);
        let config = WorkerConfig {
            pid,
            role: s.role.to_string(),
            slot: s.slot,
            exports: self.exports.get(&*s.role).cloned().unwrap_or_default(),
        };
        self.procs.insert(
            pid,
            Proc {
                pid,
                link: s.link,
                role: s.role.to_string(),
                slot: s.slot,
                worker: Some(Worker::new(config)),
                frozen: false,
                events: Vec::new(),
                closed: None,
                exit: None,
                wants_write: false,
                eof_seen: false,
                hello_rewrite: None,
            },
        );
        pid
    }

    fn take_pending(&mut self, link: LinkId) -> Spawn {
        let i = self.pending_spawns.iter().position(|s| s.link == link).expect("no pending spawn for that link");
        self.pending_spawns.remove(i)
    }

    /// Starts the process of a held spawn; returns its pid.
    pub fn complete_spawn(&mut self, link: LinkId) -> u32 {
        let s = self.take_pending(link);
        self.start(s)
    }

    /// Reports that a held spawn failed.
    /// The socketpair stays until the kingpin asks for it to be closed.
    pub fn fail_spawn(&mut self, link: LinkId) {
        self.take_pending(link);
        self.before_input();
        self.kingpin.handle_spawn_failed(link, self.now);
        self.after_input(Cause::SpawnFailed);
    }

    /// The process `pid` ends with `status`: what it computed is drained, the
    /// fds it held die with it, the kingpin reads what its socket still holds
    /// and is told through `handle_exited`.
    pub fn exit(&mut self, pid: u32, status: ExitStatus) {
        assert!(self.procs[&pid].alive(), "process {pid} is already dead");
        self.drain_worker(pid, false);
        let p = self.procs.get_mut(&pid).unwrap();
        p.worker = None;
        p.exit = Some(status);
        let link = p.link;
        self.ledger.process_died(Side::Worker(pid));
        let l = self.links.get_mut(&link).unwrap();
        let lost = l.to_worker.discard();
        self.ledger.lost_in_socket.extend(lost);
        self.before_input();
        let l = self.links.get_mut(&link).unwrap();
        if l.kingpin_open {
            while !l.to_kingpin.is_empty() {
                let n = self.chunker.next(l.to_kingpin.len());
                let (bytes, files) = l.to_kingpin.read(n).unwrap();
                let fds = files.into_iter().map(|f| self.ledger.mint(f, Side::Kingpin)).collect();
                self.kingpin.handle_read(link, &bytes, fds, self.now);
            }
            if self.eof_on_exit {
                self.kingpin.handle_eof(link, self.now);
            }
        }
        self.after_input(Cause::Read);
        self.kingpin.handle_exited(pid, status, self.now);
        let (role, slot) = (self.procs[&pid].role.clone(), self.procs[&pid].slot);
        self.after_input(Cause::Exit { role, slot });
    }

    /// Lets `pid` run once: its outputs are drained and its bytes written
    /// into its socket, but nothing is read.
    pub fn flush_worker(&mut self, pid: u32) {
        self.drain_worker(pid, true);
    }

    /// Stops (`true`) or resumes (`false`) a process.
    pub fn freeze(&mut self, pid: u32, frozen: bool) {
        self.procs.get_mut(&pid).unwrap().frozen = frozen;
    }

    /// Makes the kingpin's writes on `link` would-block (`true`) or not.
    pub fn block_writes(&mut self, link: LinkId, blocked: bool) {
        self.links.get_mut(&link).unwrap().blocked = blocked;
    }

    /// Rewrites the Hello of `pid` as it leaves (before its first write).
    pub fn rewrite_hello(&mut self, pid: u32, f: impl FnMut(&mut Hello) + 'static) {
        self.procs.get_mut(&pid).unwrap().hello_rewrite = Some(Box::new(f));
    }

    /// Writes `bytes` into `pid`'s socket as if its process had, with
    /// `nfiles` new files riding on the first byte. Returns the files.
    pub fn inject(&mut self, pid: u32, bytes: &[u8], nfiles: usize) -> Vec<u64> {
        let files: Vec<u64> = (0..nfiles).map(|_| self.ledger.new_file()).collect();
        let link = self.procs[&pid].link;
        let l = self.links.get_mut(&link).unwrap();
        assert!(l.kingpin_open);
        l.to_kingpin.write(bytes, files.clone());
        files
    }

    // --- fds ----------------------------------------------------------------

    /// A new file and a handle to it held by `side`.
    pub fn new_fd(&mut self, side: Side) -> (u64, FdHandle) {
        let file = self.ledger.new_file();
        (file, self.ledger.mint(file, side))
    }

    /// `n` new files and handles held by `side`.
    pub fn new_fds(&mut self, side: Side, n: usize) -> (Vec<u64>, Vec<FdHandle>) {
        (0..n).map(|_| self.new_fd(side)).unzip()
    }

    // --- queries ------------------------------------------------------------

    pub fn proc(&self, pid: u32) -> &Proc {
        &self.procs[&pid]
    }

    pub fn worker_mut(&mut self, pid: u32) -> &mut Worker {
        self.procs.get_mut(&pid).and_then(|p| p.worker.as_mut()).expect("process is alive")
    }

    /// The live process of `role`'s `slot`.
    pub fn pid_of(&self, role: &str, slot: u32) -> u32 {
        let mut live = self.procs.values().filter(|p| p.alive() && p.role == role && p.slot == slot);
        let p = live.next().expect("no live process for that slot");
        assert!(live.next().is_none(), "two live processes in one slot");
        p.pid
    }

    /// The live processes of `role`, by slot.
    pub fn pids_of(&self, role: &str) -> Vec<u32> {
        let mut v: Vec<&Proc> = self.procs.values().filter(|p| p.alive() && p.role == role).collect();
        v.sort_by_key(|p| p.slot);
        v.iter().map(|p| p.pid).collect()
    }

    /// The kingpin's view of the worker with process id `pid`.
    pub fn info(&self, pid: u32) -> (WorkerInfo, Phase) {
        let (i, p) =
            self.kingpin.workers().find(|(i, _)| i.pid == pid).expect("the kingpin knows no worker with that pid");
        (i.clone(), p)
    }

    /// How other workers see `pid` as a sender.
    pub fn source_of(&self, pid: u32) -> Source {
        Source::Worker { id: self.info(pid).0.id, pid }
    }

    /// The kingpin events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<KEvent> {
        std::mem::take(&mut self.events)
    }
}

/// Decodes the Hello at the start of `bytes`, rewrites it and re-encodes it,
/// keeping whatever followed it.
fn rewrite_hello(bytes: &[u8], f: &mut dyn FnMut(&mut Hello)) -> Vec<u8> {
    let mut dec = Decoder::new(u32::MAX);
    dec.handle_read(bytes, Vec::new());
    let frame = dec.decode().expect("first write decodes").expect("first write holds the whole Hello");
    let len = HEADER_LEN + frame.body.len();
    let Ok(Message::Hello(mut hello)) = Message::parse_owned(frame) else {
        panic!("first frame is not a Hello");
    };
    f(&mut hello);
    let mut out = OutBuf::new(u32::MAX);
    out.push(Kind::Hello as u8, &hello, &[], Vec::new()).expect("Hello encodes");
    let mut v = out.peek().unwrap().bytes.to_vec();
    v.extend_from_slice(&bytes[len..]);
    v
}

/// One frame as it appears on the wire, its header claiming `fds` fds.
pub fn wire_frame<M: serde::Serialize>(kind: Kind, meta: &M, payload: &[u8], fds: usize) -> Vec<u8> {
    mob_proto::frame::encode_frame(kind as u8, meta, payload, fds, u32::MAX).expect("frame encodes")
}
