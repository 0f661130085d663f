//! Errors, kept apart by who caused them (as h11 does): [`CloseReason`] is
//! what the peer (or the process's fate) did to a link; [`SendError`] is what
//! went wrong with the local caller's request.

use crate::frame::{DecodeError, EncodeError};
use alloc::string::String;
use core::fmt;

/// Why a link was closed. The runtime drops the link's socket; nothing else
/// is affected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the stream at a frame boundary.
    Eof,
    /// The peer's bytes do not decode (garbage, truncation, size, fds).
    Decode(DecodeError),
    /// A well-formed frame where the protocol does not allow it.
    Protocol(&'static str),
    /// The first bytes were not a mob handshake.
    BadMagic,
    /// The two sides speak different protocol versions.
    VersionMismatch {
        /// This side's version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The kingpin refused this worker (worker side).
    Rejected {
        /// The kingpin's protocol version.
        kingpin_version: u16,
        /// The kingpin's reason.
        reason: String,
    },
    /// The worker did not complete its handshake in time.
    HandshakeTimeout,
    /// The worker process exited.
    Exited,
    /// The application asked for it (shutdown, resize).
    Stopped,
    /// The worker stopped answering heartbeats: it is treated as hung.
    Hung,
    /// The worker does not read its link: what the kingpin owes it (replies
    /// to its requests, and the like, which a full queue still takes) grew
    /// to twice [`KingpinConfig::max_queued_bytes`](crate::KingpinConfig).
    NotReading,
    /// The runtime could not read or write the link (an IO error, or fds
    /// lost to a truncated control message).
    Transport(&'static str),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("peer closed the link"),
            CloseReason::Decode(e) => write!(f, "bad input from peer: {e}"),
            CloseReason::Protocol(what) => write!(f, "protocol violation: {what}"),
            CloseReason::BadMagic => f.write_str("peer is not a mob worker (bad magic)"),
            CloseReason::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: we speak {ours}, peer speaks {theirs}")
            }
            CloseReason::Rejected { kingpin_version, reason } => {
                write!(f, "kingpin (protocol {kingpin_version}) rejected us: {reason}")
            }
            CloseReason::HandshakeTimeout => f.write_str("worker did not complete its handshake in time"),
            CloseReason::Exited => f.write_str("worker process exited"),
            CloseReason::Stopped => f.write_str("stopped by the application"),
            CloseReason::Transport(what) => write!(f, "link failed: {what}"),
            CloseReason::Hung => f.write_str("worker stopped answering heartbeats (hung)"),
            CloseReason::NotReading => f.write_str("worker does not read its link (its queue passed twice the limit)"),
        }
    }
}

/// Why a send by the local application failed. Any fds it carried come back
/// as `ReleaseFd` outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No worker matches the target (unknown role or pid, or none alive).
    NoRoute,
    /// The message cannot be encoded (too large, too many fds).
    Encode(EncodeError),
    /// The link is closed or not yet usable.
    Closed,
    /// Too much is already queued for the recipient; try again later.
    Backpressure,
    /// fds can travel to one recipient only, and the target names several.
    FdsToMany,
    /// The target role does not export that function.
    NotExported,
    /// The kingpin is shutting down and takes no new work.
    ShuttingDown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoRoute => f.write_str("no worker matches the target"),
            SendError::Encode(e) => write!(f, "cannot encode message: {e}"),
            SendError::Closed => f.write_str("link is closed"),
            SendError::Backpressure => f.write_str("recipient's queue is full"),
            SendError::FdsToMany => f.write_str("fds can go to one recipient only"),
            SendError::NotExported => f.write_str("the role does not export that function"),
            SendError::ShuttingDown => f.write_str("shutting down: no new work is taken"),
        }
    }
}

/// Why an answer to a request could not be given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespondError {
    /// That request is not waiting for an answer: it was answered already,
    /// cancelled, or never received. Any fds given are released.
    NotPending,
    /// The answer could not be sent (too large, link closed).
    Send(SendError),
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespondError::NotPending => f.write_str("that request is not waiting for an answer"),
            RespondError::Send(e) => write!(f, "answer not sent: {e}"),
        }
    }
}

impl From<EncodeError> for SendError {
    fn from(e: EncodeError) -> Self {
        SendError::Encode(e)
    }
}
