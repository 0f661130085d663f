//! The outgoing side of a link: frames appended to one buffer, written out in
//! as few writes as the fd rule allows.

use super::{HEADER_LEN, Header, MAX_FDS_PER_FRAME};
use crate::fd::FdHandle;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use serde::Serialize;

/// Why a frame could not be encoded. Nothing was queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The body would exceed the link's frame size limit.
    TooLarge {
        /// The body length the frame would have had.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// More fds than [`MAX_FDS_PER_FRAME`].
    TooManyFds {
        /// How many were given.
        count: usize,
    },
    /// The message could not be serialized.
    Serialize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the limit of {max}")
            }
            EncodeError::TooManyFds { count } => {
                write!(f, "{count} fds in one frame, more than {MAX_FDS_PER_FRAME}")
            }
            EncodeError::Serialize => f.write_str("message could not be serialized"),
        }
    }
}

/// What to write next on a link: bytes, and the fds that must ride with the
/// first of them (empty most of the time).
#[derive(Debug)]
pub struct Transmit<'a> {
    /// Bytes to write, as many frames as can leave in one write.
    pub bytes: &'a [u8],
    /// fds to send with `bytes[0]` (SCM_RIGHTS), in order.
    pub fds: &'a [FdHandle],
}

/// A link's outgoing queue: encoded frames waiting to be written.
///
/// Frames are encoded straight into one buffer, so many small frames leave in
/// one write. A frame that carries fds starts a new write, because its fds
/// must travel with its first byte; the frames after it may join that write.
///
/// ```
/// use mob_proto::frame::{OutBuf, DEFAULT_MAX_BODY};
/// use mob_proto::FdHandle;
///
/// let mut out = OutBuf::new(DEFAULT_MAX_BODY);
/// out.push(16, &("ns", "a"), b"one", Vec::new()).unwrap();
/// out.push(16, &("ns", "b"), b"two", Vec::new()).unwrap();
/// out.push(16, &("ns", "c"), b"three", vec![FdHandle::from_raw(1)]).unwrap();
/// // The first two frames leave together; the third waits for its own write.
/// let first = out.peek().unwrap();
/// assert!(first.fds.is_empty());
/// let n = first.bytes.len();
/// assert!(out.advance(n).is_empty());
/// let third = out.peek().unwrap();
/// assert_eq!(third.fds.len(), 1);
/// let n = third.bytes.len();
/// // The fd left with the first byte: the runtime may now close its copy.
/// assert_eq!(out.advance(n), vec![FdHandle::from_raw(1)]);
/// assert!(out.peek().is_none());
/// ```
pub struct OutBuf {
    buf: Vec<u8>,
    /// Index in `buf` of the next byte to write.
    head: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Stream offsets of frames that carry fds, with their fds.
    marks: VecDeque<(u64, Vec<FdHandle>)>,
    max_body: u32,
}

impl OutBuf {
    /// An empty queue for frames of at most `max_body` body bytes.
    pub fn new(max_body: u32) -> OutBuf {
        OutBuf { buf: Vec::new(), head: 0, base: 0, marks: VecDeque::new(), max_body }
    }

    /// Changes the body limit (for example after a handshake).
    pub fn set_max_body(&mut self, max_body: u32) {
        self.max_body = max_body;
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one frame: header, `meta` in postcard, then `payload` as is.
    ///
    /// On error nothing is queued and `fds` are handed back in the error's
    /// companion so the caller can release them.
    pub fn push<M: WriteMeta + ?Sized>(
        &mut self,
        kind: u8,
        meta: &M,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), (EncodeError, Vec<FdHandle>)> {
        if fds.len() > MAX_FDS_PER_FRAME {
            return Err((EncodeError::TooManyFds { count: fds.len() }, fds));
        }
        self.compact();
        let start = self.buf.len();
        if let Err(e) = write_frame(&mut self.buf, kind, meta, payload, fds.len(), self.max_body) {
            return Err((e, fds));
        }
        if !fds.is_empty() {
            self.marks.push_back((self.base + start as u64, fds));
        }
        Ok(())
    }

    /// What to write next, or `None` if the queue is empty.
    pub fn peek(&self) -> Option<Transmit<'_>> {
        if self.is_empty() {
            return None;
        }
        let head_offset = self.base + self.head as u64;
        let mut fds: &[FdHandle] = &[];
        let mut end = self.buf.len();
        let mut marks = self.marks.iter();
        if let Some((at, mark_fds)) = self.marks.front()
            && *at == head_offset
        {
            fds = mark_fds;
            marks.next();
        }
        if let Some((at, _)) = marks.next() {
            end = (at - self.base) as usize;
        }
        Some(Transmit { bytes: &self.buf[self.head..end], fds })
    }

    /// Records that `n` bytes of the last [`OutBuf::peek`] were written, and
    /// returns the fds that left with them (the runtime closes its copies).
    pub fn advance(&mut self, n: usize) -> Vec<FdHandle> {
        if n == 0 {
            return Vec::new();
        }
        let head_offset = self.base + self.head as u64;
        let sent = match self.marks.front() {
            Some((at, _)) if *at == head_offset => self.marks.pop_front().map(|(_, f)| f).unwrap_or_default(),
            _ => Vec::new(),
        };
        self.head = (self.head + n).min(self.buf.len());
        sent
    }

    /// Drops everything queued and returns the fds that never left.
    pub fn clear(&mut self) -> impl Iterator<Item = FdHandle> + '_ {
        self.base += self.buf.len() as u64;
        self.buf.clear();
        self.head = 0;
        self.marks.drain(..).flat_map(|(_, f)| f)
    }

    /// Appends one frame already encoded by [`encode_frame`], with its fds.
    pub fn push_encoded(&mut self, frame: &[u8], fds: Vec<FdHandle>) {
        self.compact();
        if !fds.is_empty() {
            self.marks.push_back((self.base + self.buf.len() as u64, fds));
        }
        self.buf.extend_from_slice(frame);
    }

    /// Moves every frame queued in `other` to the end of this queue.
    pub fn append(&mut self, other: &mut OutBuf) {
        self.compact();
        let other_head = other.base + other.head as u64;
        let here = self.base + self.buf.len() as u64;
        self.buf.extend_from_slice(&other.buf[other.head..]);
        for (at, fds) in other.marks.drain(..) {
            self.marks.push_back((here + (at - other_head), fds));
        }
        other.base += other.buf.len() as u64;
        other.buf.clear();
        other.head = 0;
    }

    /// Reclaims written bytes before appending, keeping copies small and
    /// rare.
    fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        if self.head == self.buf.len() {
            self.base += self.head as u64;
            self.buf.clear();
            self.head = 0;
        } else if self.head >= SMALL_REST && self.buf.len() - self.head <= SMALL_REST
            || self.head >= 1024 * 1024 && self.head * 2 >= self.buf.len()
        {
            // Moves few bytes (what is left is small), or, while a slow
            // peer keeps the queue from emptying, reclaims a large written
            // part at a cost of at most as many bytes as it frees.
            self.base += self.head as u64;
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }
}

/// Encodes one frame (header, `meta` in postcard, `payload`) into a new
/// buffer, for frames that wait before they join a link's queue.
pub fn encode_frame<M: WriteMeta + ?Sized>(
    kind: u8,
    meta: &M,
    payload: &[u8],
    fds: usize,
    max_body: u32,
) -> Result<Vec<u8>, EncodeError> {
    if fds > MAX_FDS_PER_FRAME {
        return Err(EncodeError::TooManyFds { count: fds });
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + 32 + payload.len());
    write_frame(&mut buf, kind, meta, payload, fds, max_body)?;
    Ok(buf)
}

/// Appends a frame to `buf`; on error `buf` is as it was.
fn write_frame<M: WriteMeta + ?Sized>(
    buf: &mut Vec<u8>,
    kind: u8,
    meta: &M,
    payload: &[u8],
    fds: usize,
    max_body: u32,
) -> Result<(), EncodeError> {
    let start = buf.len();
    // Room for the header, typical metadata and the payload: one growth at
    // most, not one per serialized field.
    buf.reserve(HEADER_LEN + 64 + payload.len());
    buf.extend_from_slice(&[0; HEADER_LEN]);
    if meta.write_meta(buf).is_err() {
        buf.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let len = buf.len() - start - HEADER_LEN + payload.len();
    if len > max_body as usize {
        buf.truncate(start);
        return Err(EncodeError::TooLarge { len, max: max_body });
    }
    buf.extend_from_slice(payload);
    let header = Header { len: len as u32, kind, fds: fds as u8 };
    buf[start..start + HEADER_LEN].copy_from_slice(&header.encode());
    Ok(())
}

/// What is left to write below which the written part is reclaimed.
const SMALL_REST: usize = 16 * 1024;

/// A frame's metadata, as it goes on the wire: anything serde serializes
/// (in postcard), or a hand-written encoder of the same bytes for the
/// frames sent most (see `hot.rs`).
pub trait WriteMeta {
    /// Appends the encoded metadata to `buf`. On error `buf` may hold part
    /// of it (the caller truncates).
    fn write_meta(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError>;
}

impl<T: Serialize + ?Sized> WriteMeta for T {
    fn write_meta(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        postcard::serialize_with_flavor(self, VecFlavor(buf)).map_err(|_| EncodeError::Serialize)
    }
}

/// postcard output straight into the link's buffer.
struct VecFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_BODY, Decoder};
    use alloc::vec;

    #[test]
    fn errors_return_the_fds_and_queue_nothing() {
        let mut out = OutBuf::new(8);
        let (e, fds) = out.push(16, &(), &[0; 9], vec![FdHandle::from_raw(1)]).unwrap_err();
        assert_eq!(e, EncodeError::TooLarge { len: 9, max: 8 });
        assert_eq!(fds.len(), 1);
        let many = (0..33).map(FdHandle::from_raw).collect();
        let (e, fds) = out.push(16, &(), &[], many).unwrap_err();
        assert_eq!(e, EncodeError::TooManyFds { count: 33 });
        assert_eq!(fds.len(), 33);
        assert!(out.is_empty());
    }

    #[test]
    fn append_moves_frames_and_fds() {
        let mut a = OutBuf::new(DEFAULT_MAX_BODY);
        let mut b = OutBuf::new(DEFAULT_MAX_BODY);
        a.push(16, &1u8, b"a", vec![]).unwrap();
        b.push(16, &2u8, b"b", vec![]).unwrap();
        b.push(16, &3u8, b"c", vec![FdHandle::from_raw(9)]).unwrap();
        a.append(&mut b);
        assert!(b.is_empty());
        let mut dec = Decoder::new(DEFAULT_MAX_BODY);
        while let Some(t) = a.peek() {
            let bytes = t.bytes.to_vec();
            let fds = a.advance(bytes.len());
            dec.handle_read(&bytes, fds);
        }
        let frames: Vec<_> = core::iter::from_fn(|| dec.decode().unwrap()).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].fds, vec![FdHandle::from_raw(9)]);
    }

    #[test]
    fn partial_writes_keep_fds_with_the_first_byte() {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &7u32, b"abc", vec![FdHandle::from_raw(5)]).unwrap();
        // Nothing written (EAGAIN): the fds stay queued.
        assert!(out.advance(0).is_empty());
        assert_eq!(out.peek().unwrap().fds.len(), 1);
        // Two bytes written: the fds left with them.
        assert_eq!(out.advance(2), vec![FdHandle::from_raw(5)]);
        let rest = out.peek().unwrap();
        assert!(rest.fds.is_empty());
        assert_eq!(rest.bytes.len(), HEADER_LEN + 1 + 3 - 2);
    }

    #[test]
    fn compaction_keeps_marks_aligned() {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        let mut dec = Decoder::new(DEFAULT_MAX_BODY);
        let big = vec![1u8; 40_000];
        for i in 0..20u64 {
            let fds = if i % 3 == 0 { vec![FdHandle::from_raw(i)] } else { vec![] };
            out.push(16, &i, &big, fds).unwrap();
            // Write a little less than everything, carrying fds as a socket would.
            while out.len() > 1000 {
                let t = out.peek().unwrap();
                let n = t.bytes.len().min(30_000);
                let bytes = t.bytes[..n].to_vec();
                let sent = out.advance(n);
                dec.handle_read(&bytes, sent);
            }
        }
        while let Some(t) = out.peek() {
            let bytes = t.bytes.to_vec();
            let sent = out.advance(bytes.len());
            dec.handle_read(&bytes, sent);
        }
        let mut seen = 0;
        while let Some(f) = dec.decode().unwrap() {
            let (i, rest): (u64, &[u8]) = postcard::take_from_bytes(&f.body).unwrap();
            assert_eq!(rest.len(), big.len());
            assert_eq!(f.fds.len(), usize::from(i % 3 == 0));
            seen += 1;
        }
        assert_eq!(seen, 20);
    }
}
