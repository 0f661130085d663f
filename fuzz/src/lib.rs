//! Fuzz harnesses for `mob-proto`.
//!
//! Each target in `fuzz_targets/` is one line that calls a `run` function
//! here, so the same harnesses also run without libFuzzer: the seed
//! generator (`examples/make_seeds.rs`) checks its seeds with them and
//! `tests/corpus.rs` replays `corpus/` and `artifacts/` under `cargo test`.
//!
//! - [`decoder::run`]: `frame::Decoder` and `Message::parse`.
//! - [`worker::run`]: a `Worker` fed what its link might deliver.
//! - [`kingpin::run`]: a `Kingpin` driven by its runtime's every input.
//!
//! The input format is described in [`input`]; each module documents its
//! operations.

pub mod decoder;
pub mod input;
pub mod kingpin;
pub mod worker;

use mob_proto::FdHandle;
use mob_proto::frame::{Decoder, OutBuf};
use mob_proto::wire::{self, Failure, Kind, Message, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

/// Built with feature `lenient`: the checks that fail on the open findings of
/// README.md are skipped (see the `kingpin` module).
pub const LENIENT: bool = cfg!(feature = "lenient");

/// When set (by `examples/replay.rs --trace`), the harnesses print every
/// operation and output to stderr.
pub static TRACE: AtomicBool = AtomicBool::new(false);

/// Whether [`TRACE`] is set.
pub fn tracing() -> bool {
    TRACE.load(Ordering::Relaxed)
}

/// Every fd handle given to proto, until it comes back.
///
/// Handles get distinct raw values; each remembers the operation that minted
/// it, for the failure message.
pub struct Ledger {
    next: u64,
    out: BTreeMap<u64, usize>,
    /// Index of the operation being run (for messages).
    pub op: usize,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// No handles yet.
    pub fn new() -> Self {
        Ledger { next: 0xfd00_0000, out: BTreeMap::new(), op: 0 }
    }

    /// `n` fresh handles, now outstanding.
    pub fn mint(&mut self, n: usize) -> Vec<FdHandle> {
        (0..n)
            .map(|_| {
                let raw = self.next;
                self.next += 1;
                self.out.insert(raw, self.op);
                FdHandle::from_raw(raw)
            })
            .collect()
    }

    /// A handle came back through `via`; it must be outstanding.
    pub fn back(&mut self, h: FdHandle, via: &str) {
        let raw = h.into_raw();
        assert!(
            self.out.remove(&raw).is_some(),
            "fd handle {raw:#x} came back via {via} at op {} but is not outstanding \
             (returned twice, or never given to proto)",
            self.op
        );
    }

    /// Whether `raw` is outstanding.
    pub fn holds(&self, raw: u64) -> bool {
        self.out.contains_key(&raw)
    }

    /// How many handles are outstanding.
    pub fn outstanding(&self) -> usize {
        self.out.len()
    }

    /// Asserts that every handle came back.
    pub fn assert_all_back(&self, what: &str) {
        assert!(
            self.out.is_empty(),
            "{what}: {} fd handle(s) never came back: {}",
            self.out.len(),
            self.out.iter().map(|(raw, op)| format!("{raw:#x} (given at op {op})")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Role names of the kingpin target (and the worker target's role).
pub const ROLES: [(&str, u32); 2] = [("back", 2), ("front", 1)];

/// Number of target selectors understood by [`target`].
pub const TARGETS: u8 = 12;

/// A message target from a selector byte: `sel % 12` picks Kingpin, All
/// (without / with sender), Role / Any of back, front or an unknown role, the
/// pid of a live worker (`live[sel / 12 % len]`), or an unknown pid.
pub fn target(sel: u8, live: &[u32]) -> Target {
    let role = |i: u8| match i {
        0 => "back".to_string(),
        1 => "front".to_string(),
        _ => "nope".to_string(),
    };
    match sel % TARGETS {
        0 => Target::Kingpin,
        1 => Target::All { include_sender: false },
        2 => Target::All { include_sender: true },
        s @ 3..=5 => Target::Role(role(s - 3)),
        s @ 6..=8 => Target::Any(role(s - 6)),
        9 | 10 => match live {
            [] => Target::Pid(4242),
            _ => Target::Pid(live[usize::from(sel / TARGETS) % live.len()]),
        },
        _ => Target::Pid(u32::from(sel) * 7 + 1),
    }
}

/// One frame as a peer's `OutBuf` writes it: its bytes, and the handles that
/// ride with them (those given, at most 32).
pub fn peer_frame(kind: Kind, meta: &impl PushFrame, payload: &[u8], fds: Vec<FdHandle>) -> (Vec<u8>, Vec<FdHandle>) {
    let mut out = OutBuf::new(u32::MAX);
    assert!(meta.push_to(&mut out, kind, payload, fds), "peer frame does not encode");
    let t = out.peek().expect("peer frame is empty");
    let bytes = t.bytes.to_vec();
    let fds = out.advance(bytes.len());
    assert!(out.peek().is_none());
    (bytes, fds)
}

/// The wire messages a peer frame can carry (`OutBuf::push` is generic over
/// serde's `Serialize`; this keeps serde out of this crate's dependencies).
pub trait PushFrame {
    /// `OutBuf::push` of this message; false if it does not encode.
    fn push_to(&self, out: &mut OutBuf, kind: Kind, payload: &[u8], fds: Vec<FdHandle>) -> bool;
}

macro_rules! push_frame {
    ($($t:ty),*) => {$(
        impl PushFrame for $t {
            fn push_to(
                &self,
                out: &mut OutBuf,
                kind: Kind,
                payload: &[u8],
                fds: Vec<FdHandle>,
            ) -> bool {
                out.push(kind as u8, self, payload, fds).is_ok()
            }
        }
    )*};
}

push_frame!(
    wire::Hello,
    wire::Welcome,
    wire::Reject,
    wire::Send,
    wire::Deliver,
    wire::Request,
    wire::Call,
    wire::Reply,
    wire::Cancel,
    wire::Invoke,
    wire::Release,
    wire::Status,
    wire::Ping,
    wire::Stop,
    wire::Fatal,
    wire::Scale
);

/// Who wrote a stream that a [`StreamCheck`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A kingpin: Welcome or Reject, then Deliver, Call, Reply, Cancel,
    /// Invoke, Release, Ping, Stop.
    Kingpin,
    /// A worker: Hello, then Send, Request, Reply, Invoke, Status, Pong,
    /// Fatal, Scale.
    Worker,
}

/// Decodes what proto wrote on a link, as the peer would, and checks that it
/// is a valid sequence of frames for that direction.
///
/// It gets copies of the handles that left with the bytes (raw values only:
/// the real handles go back to the [`Ledger`]).
pub struct StreamCheck {
    side: Side,
    dec: Decoder,
    frames: usize,
    ended: bool,
}

impl StreamCheck {
    /// A check for a stream written by `side`.
    pub fn new(side: Side) -> Self {
        StreamCheck { side, dec: Decoder::new(u32::MAX), frames: 0, ended: false }
    }

    /// Bytes written, with (copies of) the handles that left with them.
    pub fn feed(&mut self, bytes: &[u8], fds: &[FdHandle]) {
        let copies = fds.iter().map(|h| FdHandle::from_raw(h.raw())).collect();
        self.dec.handle_read(bytes, copies);
        loop {
            let frame = match self.dec.decode() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => panic!("{:?} wrote a stream that does not decode: {e}", self.side),
            };
            let (kind, nfds) = (frame.kind, frame.fds.len());
            let msg = match Message::parse_owned(frame) {
                Ok(m) => m,
                Err((e, _)) => {
                    panic!("{:?} wrote a frame of kind {kind} that does not parse: {e}", self.side)
                }
            };
            assert!(!self.ended, "{:?} wrote a frame after its last one", self.side);
            let first = self.frames == 0;
            self.frames += 1;
            let ok = match (self.side, first, &msg) {
                (Side::Worker, true, Message::Hello(h)) => {
                    h.magic == wire::MAGIC && h.version == wire::PROTOCOL_VERSION
                }
                (Side::Worker, false, m) => matches!(
                    m,
                    Message::Send(..)
                        | Message::Request(..)
                        | Message::Reply(..)
                        | Message::Invoke(..)
                        | Message::Status(_)
                        | Message::Pong(_)
                        | Message::Fatal(_)
                        | Message::Scale(_)
                ),
                (Side::Kingpin, true, Message::Welcome(_)) => true,
                (Side::Kingpin, true, Message::Reject(_)) => {
                    self.ended = true;
                    true
                }
                (Side::Kingpin, false, m) => matches!(
                    m,
                    Message::Deliver(..)
                        | Message::Call(..)
                        | Message::Reply(..)
                        | Message::Cancel(_)
                        | Message::Invoke(..)
                        | Message::Release(_)
                        | Message::Ping(_)
                        | Message::Stop(_)
                ),
                _ => false,
            };
            assert!(ok, "{:?} wrote {:?} as frame #{} ({nfds} fds)", self.side, Kind::from_u8(kind), self.frames);
        }
    }
}

/// The Welcome a real kingpin (app `fuzz`, default settings) sends, taken
/// from a handshake once, so that the harnesses name no `Settings` field.
pub fn real_welcome() -> &'static wire::Welcome {
    static WELCOME: std::sync::OnceLock<wire::Welcome> = std::sync::OnceLock::new();
    WELCOME.get_or_init(|| {
        use mob_proto::{Instant, Kingpin, KingpinConfig, Output};
        let mut k = Kingpin::new(KingpinConfig::new("fuzz").role("back", 1));
        let link = std::iter::from_fn(|| k.poll_output())
            .find_map(|o| match o {
                Output::Spawn(s) => Some(s.link),
                _ => None,
            })
            .expect("no Spawn");
        k.handle_spawned(link, 1, Instant::ZERO);
        let hello = wire::Hello {
            magic: wire::MAGIC,
            version: wire::PROTOCOL_VERSION,
            pid: 1,
            role: "back".into(),
            slot: 0,
            exports: Vec::new(),
        };
        k.handle_read(link, &peer_frame(Kind::Hello, &hello, &[], Vec::new()).0, Vec::new(), Instant::ZERO);
        let bytes = k.poll_transmit(link).expect("no Welcome").bytes.to_vec();
        let mut dec = Decoder::new(u32::MAX);
        dec.handle_read(&bytes, Vec::new());
        match dec.decode().ok().flatten().map(Message::parse_owned) {
            Some(Ok(Message::Welcome(w))) => w,
            other => panic!("the kingpin's first frame is not a Welcome: {other:?}"),
        }
    })
}

/// Raw values of handles (for comparisons).
pub fn raws<'a>(fds: impl IntoIterator<Item = &'a FdHandle>) -> Vec<u64> {
    fds.into_iter().map(FdHandle::raw).collect()
}

/// A timeout in milliseconds from a selector: 0, `sel` × 100, or (0xff) the
/// largest there is (not when [`LENIENT`]: it would keep callbacks alive
/// forever, see README.md).
pub fn timeout_ms(sel: u8) -> u64 {
    match sel {
        0xff if !LENIENT => u64::MAX,
        s => u64::from(s) * 100,
    }
}

/// A reply's result from a selector (`% 9`): success or one of the failures.
pub fn result(sel: u8) -> Result<(), Failure> {
    Err(match sel % 9 {
        0 => return Ok(()),
        1 => Failure::UnknownNamespace,
        2 => Failure::Unhandled,
        3 => Failure::Failed("boom".into()),
        4 => Failure::Dropped,
        5 => Failure::NoRoute,
        6 => Failure::PeerGone,
        7 => Failure::Backpressure,
        _ => Failure::NotExported,
    })
}

/// A request's namespace and name from a selector (`% 4`): `_`/`m`, an
/// exported RPC function `f`, one not exported `g`, a reserved namespace.
pub fn ns_name(sel: u8) -> (&'static str, &'static str) {
    match sel % 4 {
        0 => (wire::DEFAULT_NAMESPACE, "m"),
        1 => (wire::RPC_NAMESPACE, "f"),
        2 => (wire::RPC_NAMESPACE, "g"),
        _ => ("mob.x", "m"),
    }
}

/// Requests and callbacks a requester opened, until they end: each must end
/// exactly once.
#[derive(Default)]
pub struct Requests {
    open: BTreeSet<u64>,
    callbacks: BTreeSet<u64>,
}

impl Requests {
    /// A request (and its callbacks) was opened.
    pub fn opened(&mut self, id: u64, callbacks: &[u64]) {
        assert!(self.open.insert(id), "request id {id} handed out twice");
        for cb in callbacks {
            assert!(self.callbacks.insert(*cb), "callback id {cb} handed out twice");
        }
    }

    /// A request ended (a Reply event).
    pub fn ended(&mut self, id: u64) {
        assert!(self.open.remove(&id), "Reply event for request {id}, which is not open (ended twice?)");
    }

    /// A callback ended (invoked or released).
    pub fn callback_ended(&mut self, cb: u64) {
        assert!(self.callbacks.remove(&cb), "callback {cb} invoked or released but not live (ended twice?)");
    }

    /// Whether request `id` is open.
    pub fn is_open(&self, id: u64) -> bool {
        self.open.contains(&id)
    }

    /// Asserts that everything ended.
    pub fn assert_all_ended(&self, what: &str) {
        assert!(
            self.open.is_empty() && self.callbacks.is_empty(),
            "{what}: requests {:?} and callbacks {:?} never ended",
            self.open,
            self.callbacks
        );
    }
}
