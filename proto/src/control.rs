//! The control protocol: how an operator's tool (the `mob` command) asks a
//! running kingpin for its status, resizes or reloads a role, or stops it,
//! over the kingpin's control socket.
//!
//! It uses the framing of the worker protocol (8-byte header, postcard
//! body; `SPEC.md` section 3) with frame kinds of its own, and no fds. The
//! client speaks first with a [`ControlHello`]; the kingpin answers with a
//! [`ControlWelcome`] (or a [`Reject`] and closes). Then each
//! [`ControlRequest`] gets exactly one [`ControlReply`] with the same id.
//! `SPEC.md` section 16 lists every byte.
//!
//! This module holds the messages and [`ControlClient`], the client side as
//! a sans-IO state machine. The kingpin side is
//! [`crate::kingpin::ControlServer`].
//!
//! ```
//! use mob_proto::control::{ControlClient, ControlCommand, ClientEvent};
//!
//! let mut client = ControlClient::new("docs");
//! let hello = client.take_transmit(); // write these bytes to the socket
//! assert!(!hello.is_empty());
//! let id = client.request(&ControlCommand::Status).unwrap();
//! // ... write `client.take_transmit()`, then feed what the socket returns
//! // to `client.handle_read(..)` and take `client.poll_event()`s, until
//! // `ClientEvent::Reply { id, .. }` comes back.
//! # let _ = id;
//! ```

use crate::frame::{DEFAULT_MAX_BODY, DecodeError, Decoder, EncodeError, encode_frame};
use crate::kingpin::WorkerState;
use crate::wire::{MAGIC, PROTOCOL_VERSION, Reject};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Control frame kinds (the header's `kind` byte). Kind 3 is the worker
/// protocol's [`Reject`], reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ControlKind {
    /// Client → kingpin, first frame: [`ControlHello`].
    Hello = 48,
    /// Kingpin → client, first frame on success: [`ControlWelcome`].
    Welcome = 49,
    /// Client → kingpin: [`ControlRequest`].
    Request = 50,
    /// Kingpin → client: [`ControlReply`].
    Reply = 51,
}

/// The frame kind of a [`Reject`] (as in the worker protocol).
pub const REJECT_KIND: u8 = 3;

/// Largest control frame body the kingpin accepts from a client (64 KiB);
/// it sends bodies of up to [`DEFAULT_MAX_BODY`] (a status table).
pub const MAX_REQUEST_BODY: u32 = 64 << 10;

/// The environment variable the `mob` command reads the socket path from.
pub const ENV_CONTROL_SOCKET: &str = "MOB_CONTROL_SOCKET";

/// The client's introduction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlHello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Who is asking, free text for the kingpin's log (`"mob 0.1.0"`).
    pub client: String,
}

/// The kingpin's answer to a [`ControlHello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlWelcome {
    /// The kingpin's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The application's name.
    pub app: String,
    /// The kingpin's process id.
    pub pid: u32,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Every worker's figures: [`ControlAnswer::Status`].
    Status,
    /// Resize a role (within its min and max): [`ControlAnswer::Resized`].
    Resize {
        /// The role.
        role: String,
        /// The wanted number of workers.
        workers: u32,
    },
    /// Start a rolling reload of a role: [`ControlAnswer::Reloading`].
    Reload {
        /// The role.
        role: String,
    },
    /// Soft kill of the whole application: [`ControlAnswer::Stopping`].
    Stop,
    /// Hard kill of the whole application: [`ControlAnswer::Killing`].
    Kill,
}

/// A request: a client-chosen id (echoed in the reply) and a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Echoed in the [`ControlReply`].
    pub id: u64,
    /// What to do.
    pub command: ControlCommand,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlAnswer {
    /// The status table.
    Status(StatusReport),
    /// The role's worker count now in force (clamped to its min and max).
    Resized {
        /// Workers wanted from now on.
        workers: u32,
    },
    /// The rolling reload has started.
    Reloading,
    /// The soft kill has started (or was already under way). The kingpin
    /// closes the connection when it exits.
    Stopping,
    /// Every worker is being killed; the kingpin closes the connection when
    /// it exits.
    Killing,
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlError {
    /// No role of that name.
    UnknownRole(String),
    /// The role failed (it restarted more often than its intensity allows)
    /// and takes no more changes.
    RoleFailed(String),
    /// The role is already being reloaded.
    AlreadyReloading(String),
    /// The application is shutting down: only status, stop and kill work.
    ShuttingDown,
    /// The kingpin does not understand this command (a newer client).
    Unsupported,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::UnknownRole(r) => write!(f, "unknown role {r:?}"),
            ControlError::RoleFailed(r) => write!(f, "role {r:?} has failed"),
            ControlError::AlreadyReloading(r) => write!(f, "role {r:?} is already being reloaded"),
            ControlError::ShuttingDown => f.write_str("the application is shutting down"),
            ControlError::Unsupported => f.write_str("the kingpin does not support this command"),
        }
    }
}

/// The answer to a [`ControlRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The request's id.
    pub id: u64,
    /// The answer, or why not.
    pub result: Result<ControlAnswer, ControlError>,
}

/// The status table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The application's name.
    pub app: String,
    /// The kingpin's process id.
    pub pid: u32,
    /// Milliseconds since the kingpin started.
    pub uptime_ms: u64,
    /// Whether a soft or hard kill is under way.
    pub shutting_down: bool,
    /// Every role, in configuration order.
    pub roles: Vec<RoleStatus>,
    /// Every worker, by role and slot (a slot under reload may have two).
    pub workers: Vec<WorkerStatus>,
}

/// One role's line in a [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStatus {
    /// The role.
    pub name: String,
    /// Workers wanted.
    pub workers: u32,
    /// Whether it failed (and is no longer revived).
    pub failed: bool,
    /// Whether a rolling reload is under way.
    pub reloading: bool,
}

/// One worker's row in a [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its role.
    pub role: String,
    /// Its slot within the role.
    pub slot: u32,
    /// Its process id (0 while it is being spawned).
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// Milliseconds since it was spawned.
    pub uptime_ms: u64,
    /// Restarts of its slot so far.
    pub restarts: u32,
    /// Resident memory in KiB, as the worker last reported it (0 if never).
    pub rss_kib: u64,
    /// Requests and jobs in flight to it.
    pub in_flight: u32,
}

/// What a [`ControlClient`] tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The kingpin accepted the connection.
    Welcome(ControlWelcome),
    /// The kingpin refused the connection.
    Rejected(Reject),
    /// The answer to request `id`.
    Reply(ControlReply),
}

/// Why a [`ControlClient`] failed. The connection is unusable after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The kingpin's bytes do not decode.
    Decode(DecodeError),
    /// A frame the client did not expect (kind byte), or one that does not
    /// parse.
    Unexpected(u8),
    /// A request could not be encoded (too large).
    Encode(EncodeError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Decode(e) => write!(f, "bad frame from the kingpin: {e}"),
            ClientError::Unexpected(kind) => write!(f, "unexpected frame of kind {kind} from the kingpin"),
            ClientError::Encode(e) => write!(f, "cannot encode the request: {e}"),
        }
    }
}

/// The client side of a control connection, sans IO: write what
/// [`ControlClient::take_transmit`] returns, feed what is read to
/// [`ControlClient::handle_read`], and take [`ControlClient::poll_event`]s.
pub struct ControlClient {
    dec: Decoder,
    out: Vec<u8>,
    events: VecDeque<ClientEvent>,
    next_id: u64,
    welcomed: bool,
}

impl ControlClient {
    /// A client introducing itself as `client`; its hello is queued.
    pub fn new(client: &str) -> ControlClient {
        let hello = ControlHello { magic: MAGIC, version: PROTOCOL_VERSION, client: client.into() };
        // A hello with a client name within the limit always encodes.
        let out = encode_frame(ControlKind::Hello as u8, &hello, &[], 0, MAX_REQUEST_BODY).unwrap_or_default();
        ControlClient { dec: Decoder::new(DEFAULT_MAX_BODY), out, events: VecDeque::new(), next_id: 1, welcomed: false }
    }

    /// Queues a request; returns its id.
    pub fn request(&mut self, command: &ControlCommand) -> Result<u64, ClientError> {
        let id = self.next_id;
        let frame = encode_frame(ControlKind::Request as u8, &(id, command), &[], 0, MAX_REQUEST_BODY)
            .map_err(ClientError::Encode)?;
        self.next_id += 1;
        self.out.extend_from_slice(&frame);
        Ok(id)
    }

    /// The bytes to write, taken out of the client.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.out)
    }

    /// Bytes read from the socket.
    pub fn handle_read(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.dec.handle_read(bytes, Vec::new());
        while let Some(frame) = self.dec.decode().map_err(ClientError::Decode)? {
            let event = match frame.kind {
                k if k == ControlKind::Welcome as u8 && !self.welcomed => {
                    self.welcomed = true;
                    whole(&frame.body).map(ClientEvent::Welcome)
                }
                REJECT_KIND if !self.welcomed => whole(&frame.body).map(ClientEvent::Rejected),
                k if k == ControlKind::Reply as u8 && self.welcomed => whole(&frame.body).map(ClientEvent::Reply),
                _ => None,
            };
            self.events.push_back(event.ok_or(ClientError::Unexpected(frame.kind))?);
        }
        Ok(())
    }

    /// The next thing the kingpin said, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// A body that is exactly one postcard value.
pub(crate) fn whole<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Option<T> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}
