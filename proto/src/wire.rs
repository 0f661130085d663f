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
            _ => return None,
        })
    }

    /// Whether frames of this kind may carry fds.
    pub fn may_carry_fds(self) -> bool {
        matches!(self, Kind::Send | Kind::Deliver)
    }

    /// Whether frames of this kind end with a raw payload.
    pub fn has_payload(self) -> bool {
        matches!(self, Kind::Send | Kind::Deliver)
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// Destination.
    pub to: Target,
    /// Namespace (see [`DEFAULT_NAMESPACE`]).
    pub ns: String,
    /// Message name within the namespace.
    pub name: String,
}

/// A one-way message handed to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Who sent it.
    pub from: Source,
    /// Namespace.
    pub ns: String,
    /// Message name within the namespace.
    pub name: String,
}

/// A parsed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Reject`].
    Reject(Reject),
    /// See [`Send`].
    Send(Send, Bytes, Vec<FdHandle>),
    /// See [`Deliver`].
    Deliver(Deliver, Bytes, Vec<FdHandle>),
}

impl Message {
    /// Parses a raw frame. On error the frame's fds are returned beside the
    /// error, for release.
    pub fn parse(frame: RawFrame) -> Result<Message, (DecodeError, Vec<FdHandle>)> {
        let RawFrame {
            kind: byte,
            body,
            fds,
        } = frame;
        let Some(kind) = Kind::from_u8(byte) else {
            return Err((DecodeError::UnknownKind(byte), fds));
        };
        if !fds.is_empty() && !kind.may_carry_fds() {
            return Err((
                DecodeError::Malformed {
                    kind: byte,
                    reason: "this kind carries no fds",
                },
                fds,
            ));
        }
        let bad = |fds| {
            (
                DecodeError::Malformed {
                    kind: byte,
                    reason: "body does not parse",
                },
                fds,
            )
        };
        match kind {
            Kind::Hello => whole(&body).map(Message::Hello).map_err(|_| bad(fds)),
            Kind::Welcome => whole(&body).map(Message::Welcome).map_err(|_| bad(fds)),
            Kind::Reject => whole(&body).map(Message::Reject).map_err(|_| bad(fds)),
            Kind::Send => match with_payload(&body) {
                Ok((m, p)) => Ok(Message::Send(m, p, fds)),
                Err(()) => Err(bad(fds)),
            },
            Kind::Deliver => match with_payload(&body) {
                Ok((m, p)) => Ok(Message::Deliver(m, p, fds)),
                Err(()) => Err(bad(fds)),
            },
        }
    }
}

/// A body that is exactly one postcard value.
fn whole<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ()> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        _ => Err(()),
    }
}

/// A body that is a postcard value followed by the payload.
fn with_payload<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<(T, Bytes), ()> {
    let (v, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| ())?;
    let payload = body.slice(body.len() - rest.len()..);
    Ok((v, payload))
}
