//! The outgoing side of a link: frames appended to one buffer, written out in
//! as few writes as the fd rule allows.

use super::{HEADER_LEN, Header, MAX_FDS_PER_FRAME, MAX_FDS_PER_WRITE};
use crate::fd::FdHandle;
use alloc::collections::{VecDeque, vec_deque};
use alloc::vec::Vec;
use core::cell::Cell;
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
    /// A request with more callbacks than
    /// [`MAX_CALLBACKS`](crate::wire::MAX_CALLBACKS).
    TooManyCallbacks {
        /// How many were asked for.
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
            EncodeError::TooManyCallbacks { count } => {
                write!(f, "{count} callbacks in one request, more than {}", crate::wire::MAX_CALLBACKS)
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
    /// fds to send with `bytes[0]` (SCM_RIGHTS), in order: those of every
    /// frame in `bytes` that carries fds, at most [`MAX_FDS_PER_WRITE`].
    pub fds: TransmitFds<'a>,
}

/// The fds of a [`Transmit`]: those of one or more frames, in order.
#[derive(Clone, Debug)]
pub struct TransmitFds<'a> {
    marks: vec_deque::Iter<'a, (u64, Vec<FdHandle>)>,
    len: usize,
}

impl<'a> TransmitFds<'a> {
    /// How many fds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The handles, in the order they must be sent.
    pub fn iter(&self) -> impl Iterator<Item = &'a FdHandle> + 'a {
        self.marks.clone().flat_map(|(_, fds)| fds.iter())
    }
}

/// A link's outgoing queue: encoded frames waiting to be written.
///
/// Frames are encoded straight into one buffer, so many small frames leave in
/// one write. fds travel with the first byte of a write, so a write that
/// carries fds starts at a frame that carries fds; it takes along the fds of
/// the frames after it too, up to [`MAX_FDS_PER_WRITE`] in all, and the
/// first frame whose fds do not fit starts the next write.
///
/// ```
/// use mob_proto::frame::{OutBuf, DEFAULT_MAX_BODY};
/// use mob_proto::FdHandle;
///
/// let mut out = OutBuf::new(DEFAULT_MAX_BODY);
/// out.push(16, &("ns", "a"), b"one", Vec::new()).unwrap();
/// out.push(16, &("ns", "b"), b"two", vec![FdHandle::from_raw(1)]).unwrap();
/// out.push(16, &("ns", "c"), b"three", vec![FdHandle::from_raw(2)]).unwrap();
/// // The first frame leaves alone: the second's fd must ride with its
/// // first byte.
/// let first = out.peek().unwrap();
/// assert!(first.fds.is_empty());
/// let n = first.bytes.len();
/// assert!(out.advance(n).is_empty());
/// // The other two leave together, with both fds.
/// let rest = out.peek().unwrap();
/// assert_eq!(rest.fds.len(), 2);
/// let n = rest.bytes.len();
/// // The fds left with the first byte: the runtime may now close its copies.
/// assert_eq!(out.advance(n), vec![FdHandle::from_raw(1), FdHandle::from_raw(2)]);
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
    /// How many fds `marks` hold in all.
    fds: usize,
    /// How many of `marks` the next write carries, fixed by the first
    /// [`OutBuf::peek`] after a write, so that frames pushed while a write
    /// is under way (a writer thread) do not join it after the fact.
    batch: Cell<Option<usize>>,
    max_body: u32,
}

impl OutBuf {
    /// An empty queue for frames of at most `max_body` body bytes.
    pub fn new(max_body: u32) -> OutBuf {
        OutBuf { buf: Vec::new(), head: 0, base: 0, marks: VecDeque::new(), fds: 0, batch: Cell::new(None), max_body }
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

    /// fds queued with frames not yet written.
    pub fn fds(&self) -> usize {
        self.fds
    }

    /// Appends one frame: header, `meta` in postcard, then `payload` as is.
    ///
    /// On error nothing is queued and `fds` are handed back in the error's
    /// companion so the caller can release them.
    #[inline]
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
            self.fds += fds.len();
            self.marks.push_back((self.base + start as u64, fds));
        }
        Ok(())
    }

    /// How many marks the next write carries: those from the head on, if
    /// the head is a frame with fds, while their fds fit in one write.
    fn batch(&self) -> usize {
        if let Some(k) = self.batch.get() {
            return k;
        }
        let head_offset = self.base + self.head as u64;
        let mut k = 0;
        if self.marks.front().is_some_and(|(at, _)| *at == head_offset) {
            let mut count = 0;
            for (_, fds) in &self.marks {
                if count + fds.len() > MAX_FDS_PER_WRITE {
                    break;
                }
                count += fds.len();
                k += 1;
            }
        }
        self.batch.set(Some(k));
        k
    }

    /// What to write next, or `None` if the queue is empty. Until
    /// [`OutBuf::advance`], it names the same fds each time.
    pub fn peek(&self) -> Option<Transmit<'_>> {
        if self.is_empty() {
            return None;
        }
        let k = self.batch();
        let end = match self.marks.get(k) {
            Some((at, _)) => (at - self.base) as usize,
            None => self.buf.len(),
        };
        let marks = self.marks.range(..k);
        let len = marks.clone().map(|(_, fds)| fds.len()).sum();
        Some(Transmit { bytes: &self.buf[self.head..end], fds: TransmitFds { marks, len } })
    }

    /// Records that `n` bytes of the last [`OutBuf::peek`] were written, and
    /// returns the fds that left with them (the runtime closes its copies).
    pub fn advance(&mut self, n: usize) -> Vec<FdHandle> {
        if n == 0 {
            return Vec::new();
        }
        let k = self.batch();
        self.batch.set(None);
        let mut sent = Vec::new();
        for (_, fds) in self.marks.drain(..k) {
            if sent.is_empty() {
                sent = fds;
            } else {
                sent.extend(fds);
            }
        }
        self.head = (self.head + n).min(self.buf.len());
        self.fds -= sent.len();
        sent
    }

    /// Drops everything queued and returns the fds that never left.
    pub fn clear(&mut self) -> impl Iterator<Item = FdHandle> + '_ {
        self.base += self.buf.len() as u64;
        self.buf.clear();
        self.head = 0;
        self.batch.set(None);
        self.fds = 0;
        self.marks.drain(..).flat_map(|(_, f)| f)
    }

    /// Appends one frame already encoded by [`encode_frame`], with its fds.
    pub fn push_encoded(&mut self, frame: &[u8], fds: Vec<FdHandle>) {
        self.compact();
        if !fds.is_empty() {
            self.fds += fds.len();
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
        self.fds += core::mem::take(&mut other.fds);
        other.base += other.buf.len() as u64;
        other.buf.clear();
        other.head = 0;
        other.batch.set(None);
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
#[inline(always)]
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
    fn the_queue_counts_the_fds_it_holds_until_they_leave() {
        let h = |ids: core::ops::Range<u64>| ids.map(FdHandle::from_raw).collect::<Vec<_>>();
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &(), b"a", h(0..2)).unwrap();
        out.push(16, &(), b"b", Vec::new()).unwrap();
        out.push_encoded(&encode_frame(16, &(), b"c", 3, DEFAULT_MAX_BODY).unwrap(), h(2..5));
        assert_eq!(out.fds(), 5);
        let mut other = OutBuf::new(DEFAULT_MAX_BODY);
        other.push(16, &(), b"d", h(5..6)).unwrap();
        out.append(&mut other);
        assert_eq!((out.fds(), other.fds()), (6, 0));
        let n = out.peek().unwrap().bytes.len();
        assert_eq!(out.advance(n).len(), 6, "every frame with fds fits one write");
        assert_eq!(out.fds(), 0);
        out.push(16, &(), b"e", h(6..9)).unwrap();
        assert_eq!(out.clear().count(), 3);
        assert_eq!(out.fds(), 0);
    }

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

    fn fds(from: u64, n: u64) -> Vec<FdHandle> {
        (from..from + n).map(FdHandle::from_raw).collect()
    }

    fn raws(t: &Transmit<'_>) -> Vec<u64> {
        t.fds.iter().map(FdHandle::raw).collect()
    }

    #[test]
    fn one_write_carries_the_fds_of_frames_up_to_the_cap() {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        // 20 + 0 + 12 fds fit in one write; the next frame's 1 does not.
        out.push(16, &1u8, b"a", fds(0, 20)).unwrap();
        out.push(16, &2u8, b"b", vec![]).unwrap();
        out.push(16, &3u8, b"c", fds(20, 12)).unwrap();
        let first_three = out.len();
        out.push(16, &4u8, b"d", fds(32, 1)).unwrap();
        out.push(16, &5u8, b"e", vec![]).unwrap();
        let t = out.peek().unwrap();
        assert_eq!((t.bytes.len(), raws(&t)), (first_three, (0..32).collect()));
        assert_eq!(out.advance(first_three), fds(0, 32));
        let t = out.peek().unwrap();
        assert_eq!((t.bytes.len(), raws(&t)), (out.len(), vec![32]));
        assert_eq!(out.advance(out.len()), fds(32, 1));
        assert!(out.peek().is_none());
    }

    #[test]
    fn a_partial_write_sends_every_fd_of_its_frames() {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &1u8, b"a", fds(1, 1)).unwrap();
        out.push(16, &2u8, b"b", fds(2, 2)).unwrap();
        out.push(16, &3u8, b"c", fds(9, 32)).unwrap();
        let t = out.peek().unwrap();
        let two = t.bytes.len();
        assert_eq!(raws(&t), vec![1, 2, 3]);
        // One byte written: all three fds left with it.
        assert_eq!(out.advance(1), fds(1, 3));
        // The rest of those two frames goes without fds, and the third frame
        // starts a write of its own.
        let t = out.peek().unwrap();
        assert_eq!((t.bytes.len(), t.fds.len()), (two - 1, 0));
        assert!(out.advance(two - 1).is_empty());
        assert_eq!(out.peek().unwrap().fds.len(), 32);
    }

    #[test]
    fn a_frame_queued_while_a_write_is_under_way_does_not_join_it() {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &1u8, b"a", fds(1, 1)).unwrap();
        let handed = out.peek().unwrap().bytes.len();
        // A writer thread has the bytes and the fd; the application queues
        // another frame with an fd before the write is reported.
        out.push(16, &2u8, b"b", fds(2, 1)).unwrap();
        assert_eq!(raws(&out.peek().unwrap()), vec![1]);
        assert_eq!(out.advance(handed), fds(1, 1));
        assert_eq!(raws(&out.peek().unwrap()), vec![2]);
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
