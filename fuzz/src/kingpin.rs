//! Target `kingpin`: a `Kingpin` driven by everything its runtime and its
//! application may do.
//!
//! Roles: `back` ×2, `front` ×1. Input: one config byte (bit 0: body limit of
//! 256 bytes instead of the default; bit 1: early queue limit of 64 bytes;
//! bit 2: at most 512 bytes queued per worker; bit 3: the runtime may read,
//! see end of stream or fail on a link before it answers its Spawn, which
//! `mob-mio` never does, so without this bit such operations are skipped;
//! bit 4: no heartbeats; bit 5: a failed role does not stop the app; bit 6:
//! `back` is transient and `front` temporary, and `back` takes 1 job at a
//! time),
//! then operations, each followed by draining `poll_output`. "Link" fields
//! pick among every link ever announced by a Spawn output (`% count`; 0xff: a
//! link id that never existed). "Frame" operations read one well-formed
//! frame as a worker would write it, with its handles on its first byte.
//!
//! | tag % 20 | operation | fields |
//! |---|---|---|
//! | 0 | `handle_spawned(link, fresh pid)` for an unanswered Spawn | index |
//! | 1 | `handle_spawn_failed(link)` for an unanswered Spawn | index |
//! | 2 | `handle_read(link, [Hello] + bytes, n fresh handles)` | link, hello flags, fd count ([`fd_count`]), bytes |
//! | 3 | Send frame, n handles (≤ 32) | link, target ([`crate::target`]), fd count, payload |
//! | 4 | `handle_eof(link)` | link |
//! | 5 | `handle_exited(pid)` of a running process | index, status |
//! | 6 | `handle_timeout(now)`, the clock moved on | step: 0 = to `poll_timeout()`, else step × 100 ms |
//! | 7 | `send(target, n fresh handles)` | target, fd count, payload |
//! | 8 | `handle_transmitted(link, n)`, n ≤ what `poll_transmit` offers | link, `u16`: `n % (offered + 1)`, 0xffff: all |
//! | 9 | `handle_link_error(link)` | link |
//! | 10 | Request frame | link, target, fd count, id, callbacks (`% 4`), timeout ([`crate::timeout_ms`]), ns/name ([`crate::ns_name`]), payload |
//! | 11 | Reply frame | link, fd count, call id, result ([`crate::result`]), payload |
//! | 12 | Invoke frame | link, fd count, call id, callback id, payload |
//! | 13 | `request(target, n fresh handles, timeout, callbacks)` | target, fd count, timeout (0: default), callbacks, ns/name, payload |
//! | 14 | `respond(link, id, result, n fresh handles)` | request (< 0x80: one received, else the byte on link 0), result, fd count, payload |
//! | 15 | `invoke(link, id, callback, n fresh handles)` | link, id, callback, fd count, payload |
//! | 16 | `cancel(id)` | request id |
//! | 17 | Status / Pong / Fatal / Scale frame (`sel % 4`) | link, sel, value |
//! | 18 | `enqueue(role, n fresh handles, timeout, retries)` | role (`% 3`: back, front, unknown), fd count, timeout (0: none), retries (`% 3`), payload |
//! | 19 | `shutdown(soft)`, `shutdown(hard)`, `resize`, `reload` (`sel % 4`) | sel, value (bit 0: role; resize: `value >> 1 % 5` workers) |
//!
//! Hello flags: bit 0 prepends a Hello for the link's role and slot (bit 1:
//! wrong slot, bit 2: wrong version, bit 3: bad magic, bit 4: exports `f`).
//!
//! At the end, every unanswered Spawn is answered as started, every process
//! exits, every Spawn after that fails (now no link is left: every request
//! of the kingpin must have ended and every callback must have been released,
//! "its handler is gone"), the kingpin shuts down (jobs still waiting for a
//! worker end) and must say Exit, and the clock jumps a day ahead.
//!
//! With feature `lenient`, config bit 3 is ignored, callbacks need only be
//! released once the clock has jumped, a link closed while its Spawn was
//! unanswered may remain, and `poll_timeout()` is not checked (see README.md).
//!
//! Checked: no panic; every handle comes back exactly once (in an event,
//! as ReleaseFd, or from `handle_transmitted`, which returns exactly the
//! handles `poll_transmit` showed); every request of the kingpin ends in
//! exactly one Reply event, every callback in exactly one Callback or
//! CallbackReleased, every job in exactly one JobDone; Exit at most once;
//! Kill names a running process and its link; CloseLink at
//! most once per link; after `handle_timeout(now)`, `poll_timeout()` is later
//! than `now`; what it writes on each link decodes as Welcome or Reject, then
//! Deliver/Call/Reply/Cancel/Invoke/Release/Ping/Stop; at the end no handle is
//! outstanding, nothing is pending, and only links waiting for a spawn remain.

use crate::input::{Input, Writer, fd_byte, fd_count};
use crate::{Ledger, PushFrame, Requests, Side, StreamCheck, peer_frame};
use core::time::Duration;
use mob_proto::config::{OnRoleFailure, Restart, RoleSpec};
use mob_proto::wire::{self, Fatal, Hello, Invoke, Kind, Ping, Reply, Request, Scale, Send, Status};
use mob_proto::{Event, ExitStatus, Instant, JobOptions, Kingpin, KingpinConfig, LinkId, Output, Pending, Phase};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Operations of this target (for seeds).
pub enum Op<'a> {
    /// Answer the `idx`-th unanswered Spawn: started.
    Spawned { idx: u8 },
    /// Answer the `idx`-th unanswered Spawn: failed.
    SpawnFailed { idx: u8 },
    /// Bytes read on a link.
    Read { link: u8, hello: u8, fds: usize, bytes: &'a [u8] },
    /// A Send frame read on a link.
    ReadSend { link: u8, target: u8, fds: usize, payload: &'a [u8] },
    /// End of stream on a link.
    Eof { link: u8 },
    /// The `idx`-th running process exited.
    Exited { idx: u8, status: u8 },
    /// Time passes.
    Timeout { step: u8 },
    /// The application sends.
    Send { target: u8, fds: usize, payload: &'a [u8] },
    /// `n` bytes written on a link (0xffff: all offered).
    Transmit { link: u8, n: u16 },
    /// Transport error on a link.
    LinkError { link: u8 },
    /// A Request frame read on a link.
    ReadRequest { link: u8, target: u8, fds: usize, id: u8, callbacks: u8, timeout: u8, ns: u8, payload: &'a [u8] },
    /// A Reply frame read on a link.
    ReadReply { link: u8, fds: usize, id: u8, result: u8, payload: &'a [u8] },
    /// An Invoke frame read on a link.
    ReadInvoke { link: u8, fds: usize, call: u8, callback: u8, payload: &'a [u8] },
    /// The application requests.
    Request { target: u8, fds: usize, timeout: u8, callbacks: u8, ns: u8, payload: &'a [u8] },
    /// The application answers a worker's request.
    Respond { sel: u8, result: u8, fds: usize, payload: &'a [u8] },
    /// The application invokes a worker's callback.
    Invoke { link: u8, id: u8, callback: u8, fds: usize, payload: &'a [u8] },
    /// The application cancels its request.
    Cancel { id: u8 },
    /// A Status / Pong / Fatal / Scale frame read on a link.
    ReadControl { link: u8, sel: u8, value: u8 },
    /// The application enqueues a job.
    Enqueue { role: u8, fds: usize, timeout: u8, retries: u8, payload: &'a [u8] },
    /// The application shuts down, resizes or reloads.
    Supervise { sel: u8, value: u8 },
}

/// Hello flag: prepend a Hello for the link.
pub const HELLO: u8 = 1;
/// Hello flag: the Hello exports `f`.
pub const EXPORTS: u8 = 16;

impl Op<'_> {
    /// Appends this operation to a seed.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::Spawned { idx } => w.u8(0).u8(idx),
            Op::SpawnFailed { idx } => w.u8(1).u8(idx),
            Op::Read { link, hello, fds, bytes } => w.u8(2).u8(link).u8(hello).u8(fd_byte(fds)).bytes(bytes),
            Op::ReadSend { link, target, fds, payload } => w.u8(3).u8(link).u8(target).u8(fd_byte(fds)).bytes(payload),
            Op::Eof { link } => w.u8(4).u8(link),
            Op::Exited { idx, status } => w.u8(5).u8(idx).u8(status),
            Op::Timeout { step } => w.u8(6).u8(step),
            Op::Send { target, fds, payload } => w.u8(7).u8(target).u8(fd_byte(fds)).bytes(payload),
            Op::Transmit { link, n } => w.u8(8).u8(link).u16(n),
            Op::LinkError { link } => w.u8(9).u8(link),
            Op::ReadRequest { link, target, fds, id, callbacks, timeout, ns, payload } => {
                w.u8(10).u8(link).u8(target).u8(fd_byte(fds)).u8(id).u8(callbacks).u8(timeout).u8(ns).bytes(payload)
            }
            Op::ReadReply { link, fds, id, result, payload } => {
                w.u8(11).u8(link).u8(fd_byte(fds)).u8(id).u8(result).bytes(payload)
            }
            Op::ReadInvoke { link, fds, call, callback, payload } => {
                w.u8(12).u8(link).u8(fd_byte(fds)).u8(call).u8(callback).bytes(payload)
            }
            Op::Request { target, fds, timeout, callbacks, ns, payload } => {
                w.u8(13).u8(target).u8(fd_byte(fds)).u8(timeout).u8(callbacks).u8(ns).bytes(payload)
            }
            Op::Respond { sel, result, fds, payload } => w.u8(14).u8(sel).u8(result).u8(fd_byte(fds)).bytes(payload),
            Op::Invoke { link, id, callback, fds, payload } => {
                w.u8(15).u8(link).u8(id).u8(callback).u8(fd_byte(fds)).bytes(payload)
            }
            Op::Cancel { id } => w.u8(16).u8(id),
            Op::ReadControl { link, sel, value } => w.u8(17).u8(link).u8(sel).u8(value),
            Op::Enqueue { role, fds, timeout, retries, payload } => {
                w.u8(18).u8(role).u8(fd_byte(fds)).u8(timeout).u8(retries).bytes(payload)
            }
            Op::Supervise { sel, value } => w.u8(19).u8(sel).u8(value),
        };
    }
}

struct LinkRec {
    id: LinkId,
    role: Arc<str>,
    slot: u32,
    pid: Option<u32>,
    closed: bool,
    check: StreamCheck,
}

struct State {
    k: Kingpin,
    ledger: Ledger,
    now: Instant,
    next_pid: u32,
    links: Vec<LinkRec>,
    /// Indexes in `links` of Spawns not yet answered.
    pending: Vec<usize>,
    /// Processes running: (pid, index in `links`).
    running: Vec<(u32, usize)>,
    /// The kingpin's own requests and callbacks.
    requests: Requests,
    /// Workers' requests to the kingpin, as received: (link, id).
    incoming: Vec<(LinkId, u64)>,
    /// Config bit 3: reads before a Spawn is answered.
    early_reads: bool,
    /// Jobs enqueued and not yet done.
    jobs: BTreeSet<u64>,
    /// Whether Exit was output.
    exited: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let mut config = KingpinConfig::new("fuzz");
    for (name, n) in crate::ROLES {
        let mut spec = RoleSpec::new(name, n);
        if cfg & 64 != 0 {
            spec.restart = if name == "back" { Restart::Transient } else { Restart::Temporary };
            spec.concurrency = (name == "back").then_some(1);
        }
        config = config.role_spec(spec);
    }
    if cfg & 16 != 0 {
        config.heartbeat = None;
    }
    if cfg & 32 != 0 {
        config.on_role_failure = OnRoleFailure::Continue;
    }
    if cfg & 1 != 0 {
        config.max_body = 256;
    }
    if cfg & 2 != 0 {
        config.early_queue_limit = 64;
    }
    if cfg & 4 != 0 {
        config.max_queued_bytes = 512;
        config.max_queued_fds = 3;
    }
    let mut s = State {
        k: Kingpin::new(config),
        ledger: Ledger::new(),
        now: Instant::ZERO,
        next_pid: 1000,
        links: Vec::new(),
        pending: Vec::new(),
        running: Vec::new(),
        requests: Requests::default(),
        incoming: Vec::new(),
        early_reads: cfg & 8 != 0 && !crate::LENIENT,
        jobs: BTreeSet::new(),
        exited: false,
    };
    s.drain();
    while let Some(tag) = input.tag() {
        s.ledger.op += 1;
        if crate::tracing() {
            eprintln!("op {}: tag {} ({})", s.ledger.op, tag, tag % 20);
        }
        match tag % 20 {
            0 => {
                let idx = input.u8();
                if !s.pending.is_empty() {
                    let i = s.pending.remove(usize::from(idx) % s.pending.len());
                    s.start(i);
                }
            }
            1 => {
                let idx = input.u8();
                if !s.pending.is_empty() {
                    let i = s.pending.remove(usize::from(idx) % s.pending.len());
                    s.k.handle_spawn_failed(s.links[i].id, s.now);
                }
            }
            2 => {
                let link = s.pick(input.u8());
                let flags = input.u8();
                let n = fd_count(input.u8());
                let raw = input.bytes();
                let mut bytes = Vec::new();
                if flags & HELLO != 0 {
                    let (role, slot, pid) = match link.map(|i| &s.links[i]) {
                        Some(l) => (l.role.to_string(), l.slot, l.pid.unwrap_or(0)),
                        None => ("back".into(), 0, 0),
                    };
                    let hello = Hello {
                        magic: if flags & 8 != 0 { *b"mob?" } else { wire::MAGIC },
                        version: wire::PROTOCOL_VERSION + u16::from(flags >> 2 & 1),
                        pid,
                        role,
                        slot: slot + u32::from(flags >> 1 & 1),
                        exports: if flags & EXPORTS != 0 { vec!["f".into()] } else { vec![] },
                    };
                    bytes = peer_frame(Kind::Hello, &hello, &[], vec![]).0;
                }
                bytes.extend_from_slice(raw);
                if s.readable(link) {
                    let fds = s.ledger.mint(n);
                    s.k.handle_read(s.id(link), &bytes, fds, s.now);
                }
            }
            3 => {
                let link = s.pick(input.u8());
                let to = crate::target(input.u8(), &s.pids());
                let n = fd_count(input.u8());
                let payload = input.bytes();
                let meta = Send { to, ns: wire::DEFAULT_NAMESPACE.into(), name: "m".into() };
                s.frame(link, Kind::Send, &meta, payload, n);
            }
            4 => {
                let link = s.pick(input.u8());
                if s.readable(link) {
                    s.k.handle_eof(s.id(link), s.now);
                }
            }
            5 => {
                let idx = input.u8();
                let status = input.u8();
                let status = if status & 1 == 1 {
                    ExitStatus::Signal(i32::from(status >> 1))
                } else {
                    ExitStatus::Code(i32::from(status >> 1))
                };
                if s.running.is_empty() {
                    s.k.handle_exited(999_999, status, s.now);
                } else {
                    let (pid, _) = s.running.remove(usize::from(idx) % s.running.len());
                    s.k.handle_exited(pid, status, s.now);
                }
            }
            6 => {
                let step = input.u8();
                if step == 0 {
                    if let Some(t) = s.k.poll_timeout() {
                        s.now = s.now.max(t);
                    }
                } else {
                    s.now = s.now + Duration::from_millis(100 * u64::from(step));
                }
                s.timeout();
            }
            7 => {
                let to = crate::target(input.u8(), &s.pids());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let _ = s.k.send(to, "_", "m", payload, fds);
            }
            8 => {
                let link = s.pick(input.u8());
                let n = input.u16();
                s.transmit(link, n);
            }
            9 => {
                let link = s.pick(input.u8());
                if s.readable(link) {
                    s.k.handle_link_error(s.id(link), "fuzz", s.now);
                }
            }
            10 => {
                let link = s.pick(input.u8());
                let to = crate::target(input.u8(), &s.pids());
                let n = fd_count(input.u8());
                let id = u64::from(input.u8());
                let callbacks = (1..=u64::from(input.u8() % 4)).collect();
                let timeout_ms = crate::timeout_ms(input.u8());
                let (ns, name) = crate::ns_name(input.u8());
                let payload = input.bytes();
                let meta = Request { id, to, ns: ns.into(), name: name.into(), timeout_ms, callbacks };
                s.frame(link, Kind::Request, &meta, payload, n);
            }
            11 => {
                let link = s.pick(input.u8());
                let n = fd_count(input.u8());
                let id = u64::from(input.u8());
                let result = crate::result(input.u8());
                let payload = input.bytes();
                s.frame(link, Kind::Reply, &Reply { id, result }, payload, n);
            }
            12 => {
                let link = s.pick(input.u8());
                let n = fd_count(input.u8());
                let call = u64::from(input.u8());
                let callback = u64::from(input.u8());
                let payload = input.bytes();
                s.frame(link, Kind::Invoke, &Invoke { call, callback }, payload, n);
            }
            13 => {
                let to = crate::target(input.u8(), &s.pids());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let timeout = match input.u8() {
                    0 => None,
                    t => Some(Duration::from_millis(crate::timeout_ms(t))),
                };
                let callbacks = usize::from(input.u8() % 4);
                let (ns, name) = crate::ns_name(input.u8());
                let payload = input.bytes();
                if let Ok((id, cbs)) = s.k.request(to, ns, name, payload, fds, timeout, callbacks, s.now) {
                    assert_eq!(cbs.len(), callbacks);
                    s.requests.opened(id, &cbs);
                }
            }
            14 => {
                let sel = input.u8();
                let result = crate::result(input.u8());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let (link, id) = if sel < 0x80 && !s.incoming.is_empty() {
                    s.incoming[usize::from(sel) % s.incoming.len()]
                } else {
                    (s.id(s.pick(0)), u64::from(sel))
                };
                let _ = s.k.respond(link, id, result, payload, fds);
            }
            15 => {
                let link = s.id(s.pick(input.u8()));
                let id = u64::from(input.u8());
                let callback = u64::from(input.u8());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let _ = s.k.invoke(link, id, callback, payload, fds);
            }
            17 => {
                let link = s.pick(input.u8());
                let sel = input.u8();
                let value = input.u8();
                match sel % 4 {
                    0 => {
                        let status = Status { ready: value & 1 == 1, in_flight: 0, rss_kib: u64::from(value) };
                        s.frame(link, Kind::Status, &status, &[], 0);
                    }
                    1 => s.frame(link, Kind::Pong, &Ping { seq: u64::from(value) }, &[], 0),
                    2 => s.frame(link, Kind::Fatal, &Fatal { message: "boom".into() }, &[], 0),
                    _ => s.frame(link, Kind::Scale, &Scale { workers: u32::from(value % 5) }, &[], 0),
                }
            }
            18 => {
                let role = ["back", "front", "nope"][usize::from(input.u8() % 3)];
                let fds = s.ledger.mint(fd_count(input.u8()));
                let timeout = match input.u8() {
                    0 => None,
                    t => Some(Duration::from_millis(crate::timeout_ms(t))),
                };
                let retries = u32::from(input.u8() % 3);
                let payload = input.bytes();
                let options = JobOptions { timeout, retries };
                if let Ok(id) = s.k.enqueue(role, payload, fds, options, s.now) {
                    assert!(s.jobs.insert(id), "job id {id} handed out twice");
                }
            }
            19 => {
                let sel = input.u8();
                let value = input.u8();
                let role = if value & 1 == 0 { "back" } else { "front" };
                match sel % 4 {
                    0 => s.k.shutdown(false, s.now),
                    1 => s.k.shutdown(true, s.now),
                    2 => {
                        s.k.resize(role, u32::from(value >> 1) % 5, s.now);
                    }
                    _ => {
                        s.k.reload(role, s.now);
                    }
                }
            }
            _ => {
                let id = u64::from(input.u8());
                let was_open = s.requests.is_open(id);
                assert_eq!(s.k.cancel(id), was_open, "cancel({id}) disagrees with what is open");
            }
        }
        s.drain();
    }
    s.finish();
}

impl State {
    /// A link index from a selector (`None`: a link that never existed).
    fn pick(&self, sel: u8) -> Option<usize> {
        if sel == 0xff || self.links.is_empty() { None } else { Some(usize::from(sel) % self.links.len()) }
    }

    fn id(&self, link: Option<usize>) -> LinkId {
        match link {
            Some(i) => self.links[i].id,
            None => LinkId::from_u64(0xdead_beef_0000_0007),
        }
    }

    /// Whether the runtime could read from the link: not while its Spawn is
    /// unanswered (there is no process yet).
    fn readable(&self, link: Option<usize>) -> bool {
        self.early_reads || link.is_none_or(|i| !self.pending.contains(&i))
    }

    fn pids(&self) -> Vec<u32> {
        self.running.iter().map(|(pid, _)| *pid).collect()
    }

    /// Reads one frame as a worker writes it, with `n` fresh handles (≤ 32).
    fn frame(&mut self, link: Option<usize>, kind: Kind, meta: &impl PushFrame, payload: &[u8], n: usize) {
        if !self.readable(link) {
            return;
        }
        let fds = self.ledger.mint(n.min(32));
        let (bytes, fds) = peer_frame(kind, meta, payload, fds);
        self.k.handle_read(self.id(link), &bytes, fds, self.now);
    }

    /// Answers a Spawn: the process started with a fresh pid.
    fn start(&mut self, i: usize) {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.links[i].pid = Some(pid);
        self.running.push((pid, i));
        self.k.handle_spawned(self.links[i].id, pid, self.now);
    }

    fn timeout(&mut self) {
        self.k.handle_timeout(self.now);
        self.drain();
        // (Lenient: a respawn timer can be left behind, see README.md.)
        if let Some(t) = self.k.poll_timeout().filter(|_| !crate::LENIENT) {
            assert!(t > self.now, "poll_timeout() is {t:?} right after handle_timeout({:?})", self.now);
        }
    }

    fn transmit(&mut self, link: Option<usize>, n: u16) {
        let id = self.id(link);
        let Some(t) = self.k.poll_transmit(id) else { return };
        let i = link.expect("poll_transmit offers bytes on a link that never existed");
        assert!(!t.bytes.is_empty(), "poll_transmit offers no bytes");
        let offered = t.bytes.len();
        let n = if n == u16::MAX { offered } else { usize::from(n) % (offered + 1) };
        let bytes = t.bytes[..n].to_vec();
        let shown = crate::raws(t.fds.iter());
        for raw in &shown {
            assert!(self.ledger.holds(*raw), "poll_transmit shows fd {raw:#x}, not outstanding");
        }
        let sent = self.k.handle_transmitted(id, n);
        if n == 0 {
            assert!(sent.is_empty(), "handle_transmitted(0) returned fds");
        } else {
            assert_eq!(crate::raws(&sent), shown, "handle_transmitted returned other fds than poll_transmit showed");
        }
        self.links[i].check.feed(&bytes, &sent);
        self.back(sent, "handle_transmitted");
    }

    fn rec(&mut self, id: LinkId) -> &mut LinkRec {
        self.links.iter_mut().find(|l| l.id == id).unwrap_or_else(|| panic!("output names unknown link {id:?}"))
    }

    fn back(&mut self, fds: Vec<mob_proto::FdHandle>, via: &str) {
        for h in fds {
            self.ledger.back(h, via);
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.k.poll_output() {
            if crate::tracing() {
                eprintln!("  <- {out:?}");
            }
            match out {
                Output::Spawn(sp) => {
                    assert!(self.links.iter().all(|l| l.id != sp.link), "Spawn reuses link id {:?}", sp.link);
                    self.links.push(LinkRec {
                        id: sp.link,
                        role: sp.role,
                        slot: sp.slot,
                        pid: None,
                        closed: false,
                        check: StreamCheck::new(Side::Kingpin),
                    });
                    self.pending.push(self.links.len() - 1);
                }
                Output::Kill { pid, link } => {
                    let running = self.running.iter().find(|(p, _)| *p == pid);
                    let (_, i) = running.unwrap_or_else(|| panic!("Kill of pid {pid}, which is not running"));
                    assert_eq!(self.links[*i].id, link, "Kill of pid {pid} names another link");
                }
                Output::Transmit(link) => {
                    self.rec(link);
                }
                Output::CloseLink(link) => {
                    let rec = self.rec(link);
                    assert!(!rec.closed, "CloseLink twice for {link:?}");
                    rec.closed = true;
                }
                Output::ReleaseFd(h) => self.ledger.back(h, "ReleaseFd"),
                Output::Exit { .. } => {
                    assert!(!self.exited, "Exit twice");
                    self.exited = true;
                }
                Output::Event(e) => match e {
                    Event::Message { fds, .. } => self.back(fds, "Event::Message"),
                    Event::Request { from, id, fds, .. } => {
                        self.incoming.push((from.link, id));
                        self.back(fds, "Event::Request");
                    }
                    Event::Reply { id, result } => {
                        self.requests.ended(id);
                        if let Ok((_, fds)) = result {
                            self.back(fds, "Event::Reply");
                        }
                    }
                    Event::Callback { callback, fds, .. } => {
                        self.requests.callback_ended(callback);
                        self.back(fds, "Event::Callback");
                    }
                    Event::CallbackReleased { callback } => self.requests.callback_ended(callback),
                    Event::JobDone { id, result, .. } => {
                        assert!(self.jobs.remove(&id), "JobDone for job {id}, which is not open (done twice?)");
                        if let Ok((_, _, fds)) = result {
                            self.back(fds, "Event::JobDone");
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    /// Every process ends and every timer fires: nothing may be left.
    ///
    /// Unanswered Spawns are answered as started; every process exits; then
    /// every Spawn that follows fails (frames waiting for an "any of a role"
    /// worker move to another starting worker of the role, so only when no
    /// worker is left are they dropped); then the kingpin shuts down, and the
    /// clock jumps a day ahead.
    fn finish(&mut self) {
        self.ledger.op += 1;
        for i in std::mem::take(&mut self.pending) {
            self.start(i);
        }
        self.drain();
        // One at a time: the others still run (and may be killed) meanwhile.
        while let Some((pid, _)) = self.running.pop() {
            self.k.handle_exited(pid, ExitStatus::Code(0), self.now);
            self.drain();
        }
        while !self.pending.is_empty() {
            for i in std::mem::take(&mut self.pending) {
                self.k.handle_spawn_failed(self.links[i].id, self.now);
                self.drain();
            }
        }
        // Lenient: a link closed while its Spawn was unanswered stays for
        // good (see README.md).
        let stuck =
            |info: &mob_proto::WorkerInfo, phase: Phase| crate::LENIENT && phase == Phase::Closing && info.pid == 0;
        if let Some((info, phase)) = self.k.workers().find(|(i, p)| !stuck(i, *p)) {
            panic!(
                "link {:?} ({}#{}, {phase:?}, pid {}) remains after every process exited and every spawn failed",
                info.link, info.role, info.slot, info.pid
            );
        }
        if !crate::LENIENT {
            self.requests.assert_all_ended("kingpin, once no worker is left (before the clock jumps)");
        }
        // Jobs wait at the kingpin (with their fds) for a worker: a shutdown
        // ends them.
        self.k.shutdown(false, self.now);
        self.drain();
        // (Lenient: a stuck link holds a soft shutdown until its grace ends.)
        assert!(self.exited || crate::LENIENT, "no Exit after a shutdown with no worker left");
        assert!(self.pending.is_empty() && self.running.is_empty(), "a shutdown with no worker left started some");
        self.now = self.now + Duration::from_secs(24 * 3600);
        self.timeout();
        assert!(self.exited, "no Exit a day after a shutdown");
        self.ledger.assert_all_back("kingpin, after every process exited and every timer fired");
        self.requests.assert_all_ended("kingpin, after every process exited and every timer fired");
        assert!(self.jobs.is_empty(), "jobs {:?} never ended", self.jobs);
        assert_eq!(self.k.workers().filter(|(i, p)| !stuck(i, *p)).count(), 0, "links after the shutdown");
        assert_eq!(self.k.pending(), Pending::default(), "kingpin.pending() at the end");
    }
}
