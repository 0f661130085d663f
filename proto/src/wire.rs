//! The messages of protocol version 1, one per frame kind.
//!
//! A frame's body is the message's fields in postcard, followed (for kinds
//! that have one) by the application payload as raw bytes up to the end of the
//! body. Keeping the payload outside postcard lets it pass through without a
//! copy. `SPEC.md` lists every field in order.

use crate::fd::FdHandle;
use crate::frame::{DecodeError, RawFrame};
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// First four bytes of every [`Hello`]: `b"mob!"`.
pub const MAGIC: [u8; 4] = *b"mob!";

/// The protocol version this crate speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The namespace for messages that set none (as in clusterphone).
pub const DEFAULT_NAMESPACE: &str = "_";

/// Namespaces that start with this belong to mob itself; applications may
/// not register handlers or send messages in them.
pub const RESERVED_PREFIX: &str = "mob.";

/// The namespace of calls made through `require` proxies; the names are the
/// exported functions.
pub const RPC_NAMESPACE: &str = "mob.rpc";

/// The most callbacks one request may pass (SPEC.md, section 9.5). A
/// Request or Call that lists more is [`DecodeError::Malformed`]: each
/// costs the kingpin a little state until the request's deadline.
pub const MAX_CALLBACKS: usize = 64;

/// Frame kinds (the header's `kind` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Worker → kingpin, first frame: [`Hello`].
    Hello = 1,
    /// Kingpin → worker, first frame on success: [`Welcome`].
    Welcome = 2,
    /// Kingpin → worker, first and last frame on failure: [`Reject`].
    Reject = 3,
    /// Worker → kingpin: a one-way message to route: [`Send`] + payload.
    Send = 16,
    /// Kingpin → worker: a one-way message to handle: [`Deliver`] + payload.
    Deliver = 17,
    /// Worker → kingpin: a request to route: [`Request`] + payload.
    Request = 18,
    /// Kingpin → worker: a request to handle: [`Call`] + payload.
    Call = 19,
    /// Either way: the end of a request: [`Reply`] + payload.
    Reply = 20,
    /// Kingpin → worker: stop working on a call: [`Cancel`].
    Cancel = 21,
    /// Either way: a callback invoked: [`Invoke`] + payload.
    Invoke = 22,
    /// Kingpin → worker: a request's callbacks will never be invoked:
    /// [`Release`].
    Release = 23,
    /// Worker → kingpin: readiness and health: [`Status`].
    Status = 24,
    /// Kingpin → worker: heartbeat: [`Ping`].
    Ping = 25,
    /// Worker → kingpin: heartbeat answer: [`Ping`] echoed.
    Pong = 26,
    /// Kingpin → worker: finish up and exit: [`Stop`].
    Stop = 27,
    /// Worker → kingpin: why this process is about to die: [`Fatal`].
    Fatal = 28,
    /// Worker → kingpin: resize my role: [`Scale`].
    Scale = 29,
}

impl Kind {
    /// The kind for a header byte, if this version defines it.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Reject,
            16 => Kind::Send,
            17 => Kind::Deliver,
            18 => Kind::Request,
            19 => Kind::Call,
            20 => Kind::Reply,
            21 => Kind::Cancel,
            22 => Kind::Invoke,
            23 => Kind::Release,
            24 => Kind::Status,
            25 => Kind::Ping,
            26 => Kind::Pong,
            27 => Kind::Stop,
            28 => Kind::Fatal,
            29 => Kind::Scale,
            _ => return None,
        })
    }

    /// Whether frames of this kind may carry fds (exactly those that carry
    /// a payload).
    pub fn may_carry_fds(self) -> bool {
        self.has_payload()
    }

    /// Whether frames of this kind end with a raw payload.
    pub fn has_payload(self) -> bool {
        matches!(self, Kind::Send | Kind::Deliver | Kind::Request | Kind::Call | Kind::Reply | Kind::Invoke)
    }
}

/// The worker's introduction: who it is and what it speaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The worker's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The worker's process id.
    pub pid: u32,
    /// The role it was started for.
    pub role: String,
    /// Its slot within the role (0-based).
    pub slot: u32,
    /// Names of the functions it exports to `require` proxies (namespace
    /// [`RPC_NAMESPACE`]).
    pub exports: Vec<String>,
}

/// What the kingpin tells an accepted worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The kingpin's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The worker's id, unique for the kingpin's lifetime.
    pub worker: u64,
    /// Settings the worker must follow.
    pub settings: Settings,
}

/// Settings the kingpin hands every worker in its [`Welcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The application's name (process titles, logs).
    pub app: String,
    /// Largest frame body either side may send, in bytes.
    pub max_body: u32,
    /// Default request timeout, in milliseconds, for requests that set none.
    pub request_timeout_ms: u64,
    /// Whether the worker is ready for work as soon as it is welcomed; if
    /// not, it says so with a [`Status`] when it is.
    pub starts_ready: bool,
}

/// Why the kingpin refused a worker. The link closes after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The kingpin's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// A human-readable reason.
    pub reason: String,
}

/// Where a message should go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The kingpin itself.
    Kingpin,
    /// Every worker of every role.
    All {
        /// Whether a worker sending to all receives its own message.
        include_sender: bool,
    },
    /// Every worker of one role.
    Role(String),
    /// One worker of a role, chosen by the kingpin.
    Any(String),
    /// The worker with this process id.
    Pid(u32),
}

/// Who sent a delivered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// The kingpin.
    Kingpin,
    /// A worker.
    Worker {
        /// Its id.
        id: u64,
        /// Its process id.
        pid: u32,
    },
}

/// A one-way message from a worker, for the kingpin to route.
///
/// The four message kinds that name a handler ([`Send`], [`Deliver`],
/// [`Request`], [`Call`]) are generic over their strings: a parsed frame
/// borrows them from its body (`&str`), and encoding takes borrowed ones, so
/// neither side allocates a name per message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send<S = String> {
    /// Destination.
    pub to: Target,
    /// Namespace (see [`DEFAULT_NAMESPACE`]).
    pub ns: S,
    /// Message name within the namespace.
    pub name: S,
}

/// A one-way message handed to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver<S = String> {
    /// Who sent it.
    pub from: Source,
    /// Namespace.
    pub ns: S,
    /// Message name within the namespace.
    pub name: S,
}

/// A request from a worker, for the kingpin to handle or route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<S = String, C = Vec<u64>> {
    /// The requester's id for it (unique among its open requests).
    pub id: u64,
    /// Destination: [`Target::Kingpin`], [`Target::Any`] or [`Target::Pid`].
    pub to: Target,
    /// Namespace.
    pub ns: S,
    /// Name within the namespace.
    pub name: S,
    /// Milliseconds from the send until the requester gives up.
    pub timeout_ms: u64,
    /// The requester's ids of callbacks passed with the request.
    pub callbacks: C,
}

/// A request handed to a worker to handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call<S = String, C = Vec<u64>> {
    /// The kingpin's id for this call: the worker's [`Reply`], [`Invoke`]s
    /// use it.
    pub id: u64,
    /// Who asked.
    pub from: Source,
    /// Namespace.
    pub ns: S,
    /// Name within the namespace.
    pub name: S,
    /// Milliseconds the requester still waits (informational).
    pub timeout_ms: u64,
    /// Callbacks the handler may invoke, once each.
    pub callbacks: C,
}

/// Why a request failed, as carried in a [`Reply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The handler's side has no handler in that namespace.
    UnknownNamespace,
    /// The handler's side has no handler of that name.
    Unhandled,
    /// The handler failed, with its message.
    Failed(String),
    /// The handler dropped the request without answering.
    Dropped,
    /// No worker matches the target.
    NoRoute,
    /// The worker handling it died or its link closed before it answered.
    PeerGone,
    /// The target's queue is full, or the requester has too many requests
    /// open (SPEC.md, section 10).
    Backpressure,
    /// The role does not export that function.
    NotExported,
}

/// The answer to a request or call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The id the receiver of this reply gave the request.
    pub id: u64,
    /// Success (the payload follows) or why not.
    pub result: Result<(), Failure>,
}

/// Stop working on a call (its requester gave up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The call's id.
    pub id: u64,
}

/// A callback invoked by the handler of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoke {
    /// Worker → kingpin: the [`Call`] id; kingpin → worker: the requester's
    /// [`Request`] id.
    pub call: u64,
    /// The callback's id, as listed in the request.
    pub callback: u64,
}

/// The callbacks of a request will never be invoked (its handler is gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The requester's [`Request`] id.
    pub call: u64,
}

/// A worker's readiness and health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Whether it takes new work (load-process-manager's `ready()` /
    /// `busy()`).
    pub ready: bool,
    /// Calls it is handling.
    pub in_flight: u32,
    /// Its resident memory, in KiB (0 if unknown).
    pub rss_kib: u64,
}

/// A heartbeat, and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the answer.
    pub seq: u64,
}

/// Finish what is in flight, clean up, and exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Milliseconds before the kingpin kills the process.
    pub grace_ms: u64,
}

/// Why a worker is about to die (its panic message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fatal {
    /// The message.
    pub message: String,
}

/// A worker asks for its role to have this many workers (within the
/// role's min and max).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// The wanted count.
    pub workers: u32,
}

/// A parsed frame. [`Message::parse`] gives one whose names and namespaces
/// are borrowed from the frame's body (`Message<&str>`); payloads are shared
/// slices of it. [`Message::parse_owned`] gives one that owns its names.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<S = String> {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Reject`].
    Reject(Reject),
    /// See [`Send`].
    Send(Send<S>, Bytes, Vec<FdHandle>),
    /// See [`Deliver`].
    Deliver(Deliver<S>, Bytes, Vec<FdHandle>),
    /// See [`Request`].
    Request(Request<S>, Bytes, Vec<FdHandle>),
    /// See [`Call`].
    Call(Call<S>, Bytes, Vec<FdHandle>),
    /// See [`Reply`].
    Reply(Reply, Bytes, Vec<FdHandle>),
    /// See [`Cancel`].
    Cancel(Cancel),
    /// See [`Invoke`].
    Invoke(Invoke, Bytes, Vec<FdHandle>),
    /// See [`Release`].
    Release(Release),
    /// See [`Status`].
    Status(Status),
    /// See [`Ping`].
    Ping(Ping),
    /// A [`Ping`] answered.
    Pong(Ping),
    /// See [`Stop`].
    Stop(Stop),
    /// See [`Fatal`].
    Fatal(Fatal),
    /// See [`Scale`].
    Scale(Scale),
}

impl<S> Message<S> {
    /// Takes the fds out of a message that is being dropped.
    pub fn into_fds(self) -> Vec<FdHandle> {
        match self {
            Message::Send(_, _, f)
            | Message::Deliver(_, _, f)
            | Message::Request(_, _, f)
            | Message::Call(_, _, f)
            | Message::Reply(_, _, f)
            | Message::Invoke(_, _, f) => f,
            _ => Vec::new(),
        }
    }
}

impl Message {
    /// Parses a frame into a message that owns its strings (an allocation
    /// per name: for tests and tools; the runtimes use [`Message::parse`]).
    pub fn parse_owned(frame: RawFrame) -> Result<Message, (DecodeError, Vec<FdHandle>)> {
        Message::parse(frame.kind, &frame.body, frame.fds).map(Message::into_owned)
    }
}

impl Message<&str> {
    /// The same message with its names copied out of the frame.
    pub fn into_owned(self) -> Message {
        use alloc::string::ToString;
        match self {
            Message::Hello(m) => Message::Hello(m),
            Message::Welcome(m) => Message::Welcome(m),
            Message::Reject(m) => Message::Reject(m),
            Message::Send(Send { to, ns, name }, p, f) => {
                Message::Send(Send { to, ns: ns.to_string(), name: name.to_string() }, p, f)
            }
            Message::Deliver(Deliver { from, ns, name }, p, f) => {
                Message::Deliver(Deliver { from, ns: ns.to_string(), name: name.to_string() }, p, f)
            }
            Message::Request(Request { id, to, ns, name, timeout_ms, callbacks }, p, f) => {
                let (ns, name) = (ns.to_string(), name.to_string());
                Message::Request(Request { id, to, ns, name, timeout_ms, callbacks }, p, f)
            }
            Message::Call(Call { id, from, ns, name, timeout_ms, callbacks }, p, f) => {
                let (ns, name) = (ns.to_string(), name.to_string());
                Message::Call(Call { id, from, ns, name, timeout_ms, callbacks }, p, f)
            }
            Message::Reply(m, p, f) => Message::Reply(m, p, f),
            Message::Cancel(m) => Message::Cancel(m),
            Message::Invoke(m, p, f) => Message::Invoke(m, p, f),
            Message::Release(m) => Message::Release(m),
            Message::Status(m) => Message::Status(m),
            Message::Ping(m) => Message::Ping(m),
            Message::Pong(m) => Message::Pong(m),
            Message::Stop(m) => Message::Stop(m),
            Message::Fatal(m) => Message::Fatal(m),
            Message::Scale(m) => Message::Scale(m),
        }
    }
}

impl<'a> Message<&'a str> {
    /// Parses a frame of kind `kind` whose body is `body` and that came
    /// with `fds`. The message borrows its names from `body`. On error the
    /// fds are returned beside the error, for release.
    ///
    /// ```
    /// use mob_proto::frame::{Decoder, encode_frame, DEFAULT_MAX_BODY};
    /// use mob_proto::wire::{Deliver, Kind, Message};
    /// use mob_proto::Source;
    ///
    /// let meta = Deliver { from: Source::Kingpin, ns: "_", name: "hi" };
    /// let bytes = encode_frame(Kind::Deliver as u8, &meta, b"payload", 0, DEFAULT_MAX_BODY).unwrap();
    /// let mut dec = Decoder::new(DEFAULT_MAX_BODY);
    /// dec.handle_read(&bytes, Vec::new());
    /// let frame = dec.decode().unwrap().unwrap();
    /// match Message::parse(frame.kind, &frame.body, frame.fds).unwrap() {
    ///     Message::Deliver(d, payload, _) => assert_eq!((d.name, &payload[..]), ("hi", &b"payload"[..])),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn parse(
        byte: u8,
        body: &'a Bytes,
        fds: Vec<FdHandle>,
    ) -> Result<Message<&'a str>, (DecodeError, Vec<FdHandle>)> {
        let Some(kind) = Kind::from_u8(byte) else {
            return Err((DecodeError::UnknownKind(byte), fds));
        };
        if !fds.is_empty() && !kind.may_carry_fds() {
            return Err((DecodeError::Malformed { kind: byte, reason: "this kind carries no fds" }, fds));
        }
        let bad = |fds| (DecodeError::Malformed { kind: byte, reason: "body does not parse" }, fds);
        match kind {
            Kind::Hello => whole(body).map(Message::Hello).map_err(|_| bad(fds)),
            Kind::Welcome => whole(body).map(Message::Welcome).map_err(|_| bad(fds)),
            Kind::Reject => whole(body).map(Message::Reject).map_err(|_| bad(fds)),
            Kind::Cancel => whole(body).map(Message::Cancel).map_err(|_| bad(fds)),
            Kind::Release => whole(body).map(Message::Release).map_err(|_| bad(fds)),
            Kind::Status => whole(body).map(Message::Status).map_err(|_| bad(fds)),
            Kind::Ping => whole(body).map(Message::Ping).map_err(|_| bad(fds)),
            Kind::Pong => whole(body).map(Message::Pong).map_err(|_| bad(fds)),
            Kind::Stop => whole(body).map(Message::Stop).map_err(|_| bad(fds)),
            Kind::Fatal => whole(body).map(Message::Fatal).map_err(|_| bad(fds)),
            Kind::Scale => whole(body).map(Message::Scale).map_err(|_| bad(fds)),
            // The frames a busy kingpin gets most, decoded by hand first
            // (`hot.rs`: the same result, or postcard decides).
            Kind::Send => match crate::hot::send(body) {
                Some((m, at)) => Ok(Message::Send(m, body.slice(at..), fds)),
                None => payload_msg(body, fds, Message::Send).map_err(bad),
            },
            Kind::Deliver => payload_msg(body, fds, Message::Deliver).map_err(bad),
            Kind::Request => match crate::hot::request(body) {
                Some((m, at)) => Ok(Message::Request(m, body.slice(at..), fds)),
                None => payload_msg(body, fds, Message::Request).map_err(bad).and_then(callbacks_within_limit),
            },
            Kind::Call => payload_msg(body, fds, Message::Call).map_err(bad).and_then(callbacks_within_limit),
            Kind::Reply => match crate::hot::reply(body) {
                Some((m, at)) => Ok(Message::Reply(m, body.slice(at..), fds)),
                None => payload_msg(body, fds, Message::Reply).map_err(bad),
            },
            Kind::Invoke => payload_msg(body, fds, Message::Invoke).map_err(bad),
        }
    }
}

/// A Request or Call that lists more than [`MAX_CALLBACKS`] callbacks is
/// malformed (the fast decoders give up on those, so only here).
fn callbacks_within_limit(msg: Message<&str>) -> Result<Message<&str>, (DecodeError, Vec<FdHandle>)> {
    let (kind, listed) = match &msg {
        Message::Request(r, ..) => (Kind::Request, r.callbacks.len()),
        Message::Call(c, ..) => (Kind::Call, c.callbacks.len()),
        _ => return Ok(msg),
    };
    if listed <= MAX_CALLBACKS {
        return Ok(msg);
    }
    let reason = "more callbacks than MAX_CALLBACKS";
    Err((DecodeError::Malformed { kind: kind as u8, reason }, msg.into_fds()))
}

/// Parses a payload-carrying body into a message, or hands the fds back.
fn payload_msg<'a, T: Deserialize<'a>>(
    body: &'a Bytes,
    fds: Vec<FdHandle>,
    make: fn(T, Bytes, Vec<FdHandle>) -> Message<&'a str>,
) -> Result<Message<&'a str>, Vec<FdHandle>> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((m, rest)) => Ok(make(m, body.slice(body.len() - rest.len()..), fds)),
        Err(_) => Err(fds),
    }
}

/// A body that is exactly one postcard value.
fn whole<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ()> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        _ => Err(()),
    }
}

/// Serializes an application value as a payload (postcard), into a vector
/// sized for a typical small message so that it does not grow field by
/// field.
///
/// ```
/// let bytes = mob_proto::wire::encode_payload(&(1u8, "two")).unwrap();
/// assert_eq!(postcard::from_bytes::<(u8, &str)>(&bytes).unwrap(), (1, "two"));
/// ```
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, Vec::with_capacity(128))
}
