//! Frames: the unit that travels on a link.
//!
//! A link is a byte stream (a Unix stream socket). On it, every frame is an
//! 8-byte [`Header`] followed by `len` bytes of body. File descriptors ride
//! out of band (SCM_RIGHTS) with the first byte of the write that carries
//! the frame's first byte; the header says how many belong to the frame. See
//! `SPEC.md`, "Framing".

mod decode;
mod encode;

pub use decode::{DecodeError, Decoder};
pub use encode::{EncodeError, OutBuf, Transmit, TransmitFds, WriteMeta, encode_frame};

use crate::fd::FdHandle;
use alloc::vec::Vec;
use bytes::Bytes;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The most file descriptors one frame may carry.
///
/// The kernel allows 253 per message (SCM_MAX_FD); mob caps a frame at this
/// many so that the receive control buffer stays small and fixed.
pub const MAX_FDS_PER_FRAME: usize = 32;

/// The most file descriptors one write (`sendmsg`) may carry, and so the
/// most one read can bring: the fds of several frames may share a write
/// ([`OutBuf`]), up to this many in all.
pub const MAX_FDS_PER_WRITE: usize = MAX_FDS_PER_FRAME;

/// Default largest frame body, in bytes (4 MiB). A longer length in a header
/// is a [`DecodeError::TooLarge`].
pub const DEFAULT_MAX_BODY: u32 = 4 << 20;

/// A decoded frame header.
///
/// Layout (all little-endian):
///
/// | bytes | field |
/// |---|---|
/// | 0..4 | body length, `u32` |
/// | 4 | frame kind, `u8` |
/// | 5 | number of fds carried, `u8`, at most [`MAX_FDS_PER_FRAME`] |
/// | 6..8 | reserved, must be zero |
///
/// ```
/// use mob_proto::frame::Header;
///
/// let h = Header { len: 300, kind: 16, fds: 1 };
/// let bytes = h.encode();
/// assert_eq!(bytes, [44, 1, 0, 0, 16, 1, 0, 0]);
/// assert_eq!(Header::decode(&bytes), Ok(h));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the body that follows the header.
    pub len: u32,
    /// Frame kind: which message the body holds.
    pub kind: u8,
    /// How many fds ride with this frame.
    pub fds: u8,
}

impl Header {
    /// The header's 8 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let l = self.len.to_le_bytes();
        [l[0], l[1], l[2], l[3], self.kind, self.fds, 0, 0]
    }

    /// Parses 8 bytes, checking the reserved bytes and the fd count (not the
    /// length, which depends on the receiver's limit).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        if bytes[6] != 0 || bytes[7] != 0 {
            return Err(DecodeError::Malformed { kind: bytes[4], reason: "reserved header bytes are not zero" });
        }
        if usize::from(bytes[5]) > MAX_FDS_PER_FRAME {
            return Err(DecodeError::TooManyFds { claimed: bytes[5] });
        }
        Ok(Header { len: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]), kind: bytes[4], fds: bytes[5] })
    }
}

/// A frame as it came off the wire: its kind, its body, and the fd handles
/// that rode with it, not yet parsed into a message.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// Frame kind from the header.
    pub kind: u8,
    /// The body (shares the decoder's buffer, no copy).
    pub body: Bytes,
    /// The fds the header claimed, in the order they were received.
    pub fds: Vec<FdHandle>,
}
