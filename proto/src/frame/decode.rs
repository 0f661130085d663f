//! The incremental frame decoder.

use super::{HEADER_LEN, Header, MAX_FDS_PER_FRAME, MAX_FDS_PER_WRITE, RawFrame};
use crate::fd::FdHandle;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::{Buf, BytesMut};
use core::fmt;

/// Why a byte stream could not be decoded. Every variant means the stream is
/// corrupt: the link must be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// A header announced a body longer than the receiver accepts.
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// A header claimed more fds than [`MAX_FDS_PER_FRAME`].
    TooManyFds {
        /// The claimed count.
        claimed: u8,
    },
    /// A header claimed more fds than its batch (the fds of the read where
    /// the write that carries them began) holds.
    MissingFds {
        /// How many the header claimed.
        claimed: u8,
        /// How many its batch held.
        arrived: usize,
    },
    /// fds arrived that no frame claims.
    UnexpectedFds {
        /// How many were left over.
        count: usize,
    },
    /// The frame kind is not one this protocol version defines.
    UnknownKind(u8),
    /// A body or header that does not parse.
    Malformed {
        /// Frame kind of the offending frame.
        kind: u8,
        /// What was wrong.
        reason: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { buffered } => {
                write!(f, "stream ended inside a frame ({buffered} bytes buffered)")
            }
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::TooManyFds { claimed } => {
                write!(f, "frame claims {claimed} fds, more than {MAX_FDS_PER_FRAME}")
            }
            DecodeError::MissingFds { claimed, arrived } => {
                write!(f, "frame claims {claimed} fds but {arrived} arrived with it")
            }
            DecodeError::UnexpectedFds { count } => {
                write!(f, "{count} fds arrived that no frame claims")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            DecodeError::Malformed { kind, reason } => {
                write!(f, "malformed frame of kind {kind}: {reason}")
            }
        }
    }
}

/// fds received together with the stream bytes `start..end`, not yet
/// handed to frames.
struct FdBatch {
    start: u64,
    end: u64,
    fds: Vec<FdHandle>,
    /// A frame took some already (the rest go to the frames after it).
    started: bool,
}

/// Turns a byte stream plus out-of-band fds into [`RawFrame`]s.
///
/// Feed it whatever each read returned, in order, with the fds that came with
/// that read ([`Decoder::handle_read`]); then call [`Decoder::decode`] until it
/// returns `Ok(None)` ("need more"). Feeding one byte at a time works.
///
/// **The fd rule.** A sender sends fds with the first byte of a write that
/// begins at a frame that claims fds, and that write carries the fds of the
/// frames that claim fds among those that start in it, in order (at most
/// [`MAX_FDS_PER_WRITE`] in all). The kernel hands them over with the read
/// that returns that first byte. So the fds of a read (a *batch*) go, in
/// order, to the frames that claim fds from the first one that starts inside
/// that read on, each frame taking as many as its header claims, all from one
/// batch. A batch whose read passes without such a frame starting in it, or
/// fds left over when the stream ends, are [`DecodeError::UnexpectedFds`]; a
/// frame that finds fewer fds than it claims is [`DecodeError::MissingFds`].
///
/// After an error the decoder is poisoned: `decode` returns the same error
/// again, and the link must be closed. [`Decoder::drain_fds`] then gives back
/// every handle not yet attached to a frame, so none is lost.
///
/// ```
/// use mob_proto::frame::{Decoder, Header, DEFAULT_MAX_BODY};
///
/// let mut dec = Decoder::new(DEFAULT_MAX_BODY);
/// let mut wire = Header { len: 3, kind: 16, fds: 0 }.encode().to_vec();
/// wire.extend_from_slice(b"abc");
/// for b in &wire[..5] {
///     dec.handle_read(&[*b], Vec::new());
///     assert_eq!(dec.decode(), Ok(None)); // need more
/// }
/// dec.handle_read(&wire[5..], Vec::new());
/// let frame = dec.decode().unwrap().unwrap();
/// assert_eq!((frame.kind, &frame.body[..]), (16, &b"abc"[..]));
/// ```
pub struct Decoder {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// Header of the frame at `buf[0]`, once parsed.
    pending: Option<Header>,
    batches: VecDeque<FdBatch>,
    queued_fds: usize,
    max_body: u32,
    eof: bool,
    error: Option<DecodeError>,
}

impl Decoder {
    /// A decoder that refuses bodies longer than `max_body` bytes.
    pub fn new(max_body: u32) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            offset: 0,
            pending: None,
            batches: VecDeque::new(),
            queued_fds: 0,
            max_body,
            eof: false,
            error: None,
        }
    }

    /// The body limit this decoder enforces.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Changes the body limit (for example after a handshake).
    pub fn set_max_body(&mut self, max_body: u32) {
        self.max_body = max_body;
    }

    /// Bytes received but not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// fd handles received but not yet attached to a frame.
    pub fn queued_fds(&self) -> usize {
        self.queued_fds
    }

    /// Whether the decoder has failed (see [`Decoder::decode`]).
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// Adds what one read returned: `bytes`, and the `fds` that came with them.
    ///
    /// fds that came with an empty read, or with a read that cannot start a
    /// frame, poison the decoder with [`DecodeError::UnexpectedFds`] (the
    /// handles stay queued until [`Decoder::drain_fds`]).
    pub fn handle_read(&mut self, bytes: &[u8], fds: Vec<FdHandle>) {
        let start = self.offset + self.buf.len() as u64;
        let end = start + bytes.len() as u64;
        if self.error.is_none() {
            self.buf.extend_from_slice(bytes);
        }
        if fds.is_empty() {
            return;
        }
        self.queued_fds += fds.len();
        let count = fds.len();
        self.batches.push_back(FdBatch { start, end, fds, started: false });
        if self.error.is_some() {
            return;
        }
        // A read that lies wholly inside a frame already begun cannot carry
        // that frame's fds, nor any later frame's.
        let inside_current = match self.pending {
            Some(h) => start > self.offset && end <= self.offset + (HEADER_LEN as u64) + u64::from(h.len),
            None => false,
        };
        if bytes.is_empty() || inside_current || self.queued_fds > 2 * MAX_FDS_PER_WRITE {
            self.error = Some(DecodeError::UnexpectedFds { count });
        }
    }

    /// Marks the end of the stream: no more reads will come.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed (or the
    /// stream ended cleanly after [`Decoder::handle_eof`]), or an error.
    pub fn decode(&mut self) -> Result<Option<RawFrame>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.decode_inner() {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self) -> Result<Option<RawFrame>, DecodeError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return self.need_more();
                }
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&self.buf[..HEADER_LEN]);
                let h = Header::decode(&raw)?;
                if h.len > self.max_body {
                    return Err(DecodeError::TooLarge { len: h.len, max: self.max_body });
                }
                self.pending = Some(h);
                h
            }
        };
        let total = HEADER_LEN + header.len as usize;
        if self.buf.len() < total {
            return self.need_more();
        }
        let fds = self.claim_fds(header)?;
        self.pending = None;
        // One split per frame; skipping the header of the frozen frame is
        // pointer arithmetic.
        let mut body = self.buf.split_to(total).freeze();
        body.advance(HEADER_LEN);
        self.offset += total as u64;
        Ok(Some(RawFrame { kind: header.kind, body, fds }))
    }

    fn need_more(&self) -> Result<Option<RawFrame>, DecodeError> {
        if !self.eof {
            return Ok(None);
        }
        if !self.buf.is_empty() {
            return Err(DecodeError::Truncated { buffered: self.buf.len() });
        }
        if self.queued_fds > 0 {
            return Err(DecodeError::UnexpectedFds { count: self.queued_fds });
        }
        Ok(None)
    }

    /// Takes the fds of the frame that starts at `self.offset`.
    fn claim_fds(&mut self, header: Header) -> Result<Vec<FdHandle>, DecodeError> {
        let at = self.offset;
        // The oldest batch that no frame has taken from must be taken from
        // by a frame that starts inside its read: once a frame starts past
        // that read, its fds (or those of the batch before it, left over)
        // belong to no frame.
        let unstarted = self.batches.iter().take(2).find(|b| !b.started);
        if unstarted.is_some_and(|b| b.end <= at) {
            let count = self.batches.front().map_or(0, |b| b.fds.len());
            return Err(DecodeError::UnexpectedFds { count });
        }
        let claimed = usize::from(header.fds);
        if claimed == 0 {
            return Ok(Vec::new());
        }
        let arrived = match self.batches.front() {
            Some(b) if b.start <= at => b.fds.len(),
            _ => 0,
        };
        if arrived < claimed {
            return Err(DecodeError::MissingFds { claimed: header.fds, arrived });
        }
        self.queued_fds -= claimed;
        let Some(batch) = self.batches.front_mut() else { return Ok(Vec::new()) };
        if arrived == claimed {
            return Ok(self.batches.pop_front().map(|b| b.fds).unwrap_or_default());
        }
        batch.started = true;
        Ok(batch.fds.drain(..claimed).collect())
    }

    /// Every fd handle received but not attached to a frame, for release when
    /// the link closes.
    pub fn drain_fds(&mut self) -> impl Iterator<Item = FdHandle> + '_ {
        self.queued_fds = 0;
        self.batches.drain(..).flat_map(|b| b.fds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_BODY, Header};
    use alloc::vec;

    fn frame(kind: u8, body: &[u8], fds: u8) -> Vec<u8> {
        let mut v = Header { len: body.len() as u32, kind, fds }.encode().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn h(n: u64) -> FdHandle {
        FdHandle::from_raw(n)
    }

    #[test]
    fn truncated_at_eof() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"hello", 0)[..10], vec![]);
        assert_eq!(d.decode(), Ok(None));
        d.handle_eof();
        assert_eq!(d.decode(), Err(DecodeError::Truncated { buffered: 10 }));
        assert!(d.is_failed());
    }

    #[test]
    fn clean_eof() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 0), vec![]);
        d.handle_eof();
        assert!(d.decode().unwrap().is_some());
        assert_eq!(d.decode(), Ok(None));
    }

    #[test]
    fn too_large() {
        let mut d = Decoder::new(4);
        d.handle_read(&Header { len: 5, kind: 16, fds: 0 }.encode(), vec![]);
        assert_eq!(d.decode(), Err(DecodeError::TooLarge { len: 5, max: 4 }));
    }

    #[test]
    fn too_many_fds_and_reserved_bytes() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&Header { len: 0, kind: 16, fds: 33 }.encode(), vec![]);
        assert_eq!(d.decode(), Err(DecodeError::TooManyFds { claimed: 33 }));
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&[0, 0, 0, 0, 16, 0, 1, 0], vec![]);
        assert!(matches!(d.decode(), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn fds_attach_to_the_frame_that_starts_in_their_read() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let mut wire = frame(16, b"no fds", 0);
        let second = frame(16, b"two fds", 2);
        let split = wire.len() - 2; // read 2 ends inside frame 1's tail
        wire.extend_from_slice(&second);
        d.handle_read(&wire[..split], vec![]);
        d.handle_read(&wire[split..], vec![h(1), h(2)]);
        assert!(d.decode().unwrap().unwrap().fds.is_empty());
        let f = d.decode().unwrap().unwrap();
        assert_eq!(f.fds, vec![h(1), h(2)]);
        assert_eq!(d.queued_fds(), 0);
    }

    #[test]
    fn one_write_carries_the_fds_of_several_frames() {
        // Three frames with fds (2, 0 and 1) written at once: all three fds
        // come with the first read, and the kernel may cut the stream
        // anywhere after that: here inside the second frame.
        let mut wire = frame(16, b"first", 2);
        wire.extend_from_slice(&frame(16, b"plain", 0));
        wire.extend_from_slice(&frame(16, b"third", 1));
        let cut = HEADER_LEN + 5 + 3;
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&wire[..cut], vec![h(1), h(2), h(3)]);
        assert_eq!(d.decode().unwrap().unwrap().fds, vec![h(1), h(2)]);
        assert_eq!(d.decode(), Ok(None));
        assert_eq!(d.queued_fds(), 1);
        d.handle_read(&wire[cut..], vec![]);
        assert!(d.decode().unwrap().unwrap().fds.is_empty());
        assert_eq!(d.decode().unwrap().unwrap().fds, vec![h(3)]);
        assert_eq!(d.queued_fds(), 0);
        d.handle_eof();
        assert_eq!(d.decode(), Ok(None));

        // The next write's fds may come with the same read as the end of
        // this one's frames (the read takes what is there).
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let mut wire = frame(16, b"a", 1);
        wire.extend_from_slice(&frame(16, b"b", 1));
        let cut = HEADER_LEN + 1 + 2;
        d.handle_read(&wire[..cut], vec![h(1), h(2)]);
        let mut rest = wire[cut..].to_vec();
        rest.extend_from_slice(&frame(16, b"c", 1));
        d.handle_read(&rest, vec![h(3)]);
        let got: Vec<_> = core::iter::from_fn(|| d.decode().unwrap()).map(|f| f.fds).collect();
        assert_eq!(got, vec![vec![h(1)], vec![h(2)], vec![h(3)]]);
    }

    #[test]
    fn a_frame_takes_its_fds_from_one_batch() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let mut wire = frame(16, b"a", 1);
        wire.extend_from_slice(&frame(16, b"b", 2));
        d.handle_read(&wire, vec![h(1), h(2)]);
        assert!(d.decode().unwrap().is_some());
        assert_eq!(d.decode(), Err(DecodeError::MissingFds { claimed: 2, arrived: 1 }));
    }

    #[test]
    fn missing_fds() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 1), vec![]);
        assert_eq!(d.decode(), Err(DecodeError::MissingFds { claimed: 1, arrived: 0 }));
    }

    #[test]
    fn fds_that_no_frame_claims() {
        // fds with a frame that claims none, followed by another frame.
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 0), vec![h(7)]);
        assert!(d.decode().unwrap().is_some());
        d.handle_read(&frame(16, b"y", 0), vec![]);
        assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
        assert_eq!(d.drain_fds().collect::<Vec<_>>(), vec![h(7)]);

        // fds in the middle of a frame's body.
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let w = frame(16, b"abcdef", 0);
        d.handle_read(&w[..9], vec![]);
        assert_eq!(d.decode(), Ok(None));
        d.handle_read(&w[9..11], vec![h(3)]);
        assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));

        // More fds than the frames claim: the rest wait for a later frame
        // of the same write, and are found out once a frame starts after
        // the next batch's read (or at the end of the stream).
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 1), vec![h(1), h(2)]);
        assert_eq!(d.decode().unwrap().unwrap().fds, vec![h(1)]);
        d.handle_read(&frame(16, b"y", 1), vec![h(3)]);
        d.handle_read(&frame(16, b"z", 0), vec![]);
        // "y" takes the fd left over, not its own...
        assert_eq!(d.decode().unwrap().unwrap().fds, vec![h(2)]);
        // ...so "z" starts after a read whose fds no frame took.
        assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
        assert_eq!(d.drain_fds().collect::<Vec<_>>(), vec![h(3)]);
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 1), vec![h(1), h(2)]);
        d.handle_eof();
        assert!(d.decode().unwrap().is_some());
        assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
        assert_eq!(d.drain_fds().count(), 1);

        // fds left at the end of the stream.
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.handle_read(&frame(16, b"x", 0), vec![h(9)]);
        d.handle_eof();
        assert!(d.decode().unwrap().is_some());
        assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
    }
}
