//! Hand-written encoding and decoding of the frames sent and received most
//! ([`Deliver`](crate::wire::Deliver) and [`Call`](crate::wire::Call) to
//! workers; [`Send`], [`Request`] and [`Reply`] from them, and replies to
//! them), for speed: no serde visitor, and a worker's names left as bytes
//! so that a name already interned needs no UTF-8 check again.
//!
//! The decoder reads postcard's encoding (SPEC.md §4) and accepts exactly
//! what postcard accepts, or gives up (`None`) so that the caller falls back
//! to the generic [`Message::parse`](crate::wire::Message::parse), which then
//! decides (and reports any error). The encoders write the same bytes as
//! postcard. Tests check both against postcard on every input they are
//! given.

use crate::frame::{EncodeError, WriteMeta};
use crate::text::Text;
use crate::wire::{Call, Deliver, Reply, Request, Send, Source, Target};
use alloc::string::String;
use alloc::vec::Vec;

/// A `Deliver`'s metadata, encoded by hand (the same bytes as postcard).
pub(crate) struct HandDeliver<'a>(pub &'a Deliver<&'a str>);

impl WriteMeta for HandDeliver<'_> {
    fn write_meta(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let d = self.0;
        put_source(buf, &d.from);
        put_str(buf, d.ns);
        put_str(buf, d.name);
        Ok(())
    }
}

/// A `Call`'s metadata, encoded by hand (the same bytes as postcard).
pub(crate) struct HandCall<'a>(pub &'a Call<&'a str, &'a [u64]>);

impl WriteMeta for HandCall<'_> {
    fn write_meta(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let c = self.0;
        put_varint(buf, c.id);
        put_source(buf, &c.from);
        put_str(buf, c.ns);
        put_str(buf, c.name);
        put_varint(buf, c.timeout_ms);
        put_varint(buf, c.callbacks.len() as u64);
        for &id in c.callbacks {
            put_varint(buf, id);
        }
        Ok(())
    }
}

/// postcard's varint (LEB128) of any unsigned integer.
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn put_source(buf: &mut Vec<u8>, from: &Source) {
    match *from {
        Source::Kingpin => buf.push(0),
        Source::Worker { id, pid } => {
            buf.push(1);
            put_varint(buf, id);
            put_varint(buf, u64::from(pid));
        }
    }
}

/// A [`Deliver`](crate::wire::Deliver) body, its names as raw bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HotDeliver<'a> {
    pub from: Source,
    pub ns: &'a [u8],
    pub name: &'a [u8],
    /// Where the payload starts in the body.
    pub payload_at: usize,
}

/// A [`Call`](crate::wire::Call) body, its names as raw bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HotCall<'a> {
    pub id: u64,
    pub from: Source,
    pub ns: &'a [u8],
    pub name: &'a [u8],
    pub callbacks: Vec<u64>,
    /// Where the payload starts in the body.
    pub payload_at: usize,
}

/// The longest metadata [`LastDeliver`] keeps.
const LAST_META_MAX: usize = 48;

/// The metadata of the last `Deliver` a worker decoded, with its interned
/// names. A stream of messages of one name from one sender repeats it byte
/// for byte, and postcard's fields delimit themselves, so a body that
/// starts with exactly those bytes decodes to the same sender and names,
/// its payload starting right after them: no parsing and no interning.
pub(crate) struct LastDeliver {
    meta: [u8; LAST_META_MAX],
    /// The bytes of `meta` in use, and what they decode to.
    decoded: Option<(usize, Source, Text, Text)>,
}

impl LastDeliver {
    pub(crate) fn new() -> LastDeliver {
        LastDeliver { meta: [0; LAST_META_MAX], decoded: None }
    }

    /// The sender, names and payload offset of `body`, if its metadata is
    /// the last one's.
    #[inline]
    pub(crate) fn get(&self, body: &[u8]) -> Option<(Source, Text, Text, usize)> {
        let (len, from, ns, name) = self.decoded.as_ref()?;
        let meta = body.get(..*len)?;
        (meta == &self.meta[..*len]).then(|| (from.clone(), ns.clone(), name.clone(), *len))
    }

    /// Keeps `body`'s metadata (its first `at` bytes), which decoded to
    /// `from`, `ns` and `name`.
    pub(crate) fn set(&mut self, body: &[u8], at: usize, from: Source, ns: &Text, name: &Text) {
        match body.get(..at) {
            Some(meta) if at <= LAST_META_MAX => {
                self.meta[..at].copy_from_slice(meta);
                self.decoded = Some((at, from, ns.clone(), name.clone()));
            }
            _ => self.decoded = None,
        }
    }
}

/// Decodes a `Deliver` body, or `None` to fall back to postcard.
pub(crate) fn deliver(body: &[u8]) -> Option<HotDeliver<'_>> {
    let mut r = Reader { buf: body, at: 0 };
    let from = r.source()?;
    let ns = r.bytes()?;
    let name = r.bytes()?;
    Some(HotDeliver { from, ns, name, payload_at: r.at })
}

/// Decodes a `Call` body, or `None` to fall back to postcard.
pub(crate) fn call(body: &[u8]) -> Option<HotCall<'_>> {
    let mut r = Reader { buf: body, at: 0 };
    let id = r.u64()?;
    let from = r.source()?;
    let ns = r.bytes()?;
    let name = r.bytes()?;
    let _timeout_ms = r.u64()?;
    let callbacks = r.ids()?;
    Some(HotCall { id, from, ns, name, callbacks, payload_at: r.at })
}

/// Decodes a `Send` body (a worker's one-way message): the message and
/// where its payload starts, or `None` to fall back to postcard.
pub(crate) fn send(body: &[u8]) -> Option<(Send<&str>, usize)> {
    let mut r = Reader { buf: body, at: 0 };
    let to = r.target()?;
    let ns = r.str()?;
    let name = r.str()?;
    Some((Send { to, ns, name }, r.at))
}

/// Decodes a `Request` body (a worker's request), or `None` to fall back.
pub(crate) fn request(body: &[u8]) -> Option<(Request<&str>, usize)> {
    let mut r = Reader { buf: body, at: 0 };
    let id = r.u64()?;
    let to = r.target()?;
    let ns = r.str()?;
    let name = r.str()?;
    let timeout_ms = r.u64()?;
    let callbacks = r.ids()?;
    Some((Request { id, to, ns, name, timeout_ms, callbacks }, r.at))
}

/// Decodes a successful `Reply` body, or `None` to fall back (failures
/// carry more, and are rare).
pub(crate) fn reply(body: &[u8]) -> Option<(Reply, usize)> {
    let mut r = Reader { buf: body, at: 0 };
    let id = r.u64()?;
    (r.small()? == 0).then_some((Reply { id, result: Ok(()) }, r.at))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// A varint below 128 (one byte): enum tags, short lengths and counts.
    /// Anything longer falls back.
    fn small(&mut self) -> Option<usize> {
        let b = self.byte()?;
        (b < 0x80).then_some(usize::from(b))
    }

    /// A varint of at most `max` bytes whose last byte is at most `last`
    /// (postcard's rule for an integer of that width).
    fn varint(&mut self, max: usize, last: u8) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..max {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max || b <= last).then_some(out);
            }
        }
        None
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.small()?;
        let s = self.buf.get(self.at..self.at + len)?;
        self.at += len;
        Some(s)
    }

    /// A sequence of ids (callbacks): fewer than 128 (a one-byte count),
    /// and `None` past [`MAX_CALLBACKS`](crate::wire::MAX_CALLBACKS) too,
    /// for postcard's decoder to refuse.
    fn ids(&mut self) -> Option<Vec<u64>> {
        let count = self.small()?;
        if count > crate::wire::MAX_CALLBACKS {
            return None;
        }
        (0..count).map(|_| self.u64()).collect()
    }

    fn str(&mut self) -> Option<&'a str> {
        core::str::from_utf8(self.bytes()?).ok()
    }

    fn target(&mut self) -> Option<Target> {
        match self.small()? {
            0 => Some(Target::Kingpin),
            1 => match self.byte()? {
                b @ (0 | 1) => Some(Target::All { include_sender: b == 1 }),
                _ => None,
            },
            2 => Some(Target::Role(String::from(self.str()?))),
            3 => Some(Target::Any(String::from(self.str()?))),
            4 => Some(Target::Pid(self.u32()?)),
            _ => None,
        }
    }

    fn source(&mut self) -> Option<Source> {
        match self.small()? {
            0 => Some(Source::Kingpin),
            1 => {
                let id = self.u64()?;
                let pid = self.u32()?;
                Some(Source::Worker { id, pid })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Call, Deliver};
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    fn generic_deliver(body: &[u8]) -> Option<(Deliver<&str>, usize)> {
        let (d, rest) = postcard::take_from_bytes::<Deliver<&str>>(body).ok()?;
        Some((d, body.len() - rest.len()))
    }

    fn generic_call(body: &[u8]) -> Option<(Call<&str>, usize)> {
        let (c, rest) = postcard::take_from_bytes::<Call<&str>>(body).ok()?;
        Some((c, body.len() - rest.len()))
    }

    fn utf8(b: &[u8]) -> bool {
        core::str::from_utf8(b).is_ok()
    }

    /// Whenever the fast path decodes (and the names are UTF-8, which the
    /// interner checks), postcard decodes the same.
    fn agree_deliver(body: &[u8]) {
        if let Some(h) = deliver(body).filter(|h| utf8(h.ns) && utf8(h.name)) {
            let (g, at) = generic_deliver(body).expect("postcard accepts what the fast path accepts");
            assert_eq!((h.from, h.ns, h.name, h.payload_at), (g.from, g.ns.as_bytes(), g.name.as_bytes(), at));
        }
    }

    fn agree_call(body: &[u8]) {
        if let Some(h) = call(body).filter(|h| utf8(h.ns) && utf8(h.name)) {
            let (g, at) = generic_call(body).expect("postcard accepts what the fast path accepts");
            assert_eq!(
                (h.id, h.from, h.ns, h.name, h.callbacks, h.payload_at),
                (g.id, g.from, g.ns.as_bytes(), g.name.as_bytes(), g.callbacks, at)
            );
        }
    }

    /// Whenever a fast path decodes, postcard decodes the same value and
    /// finds the payload at the same place.
    fn agree<'a, T>(body: &'a [u8], hot: Option<(T, usize)>)
    where
        T: serde::Deserialize<'a> + PartialEq + core::fmt::Debug,
    {
        if let Some((h, at)) = hot {
            let (g, rest) = postcard::take_from_bytes::<T>(body).expect("postcard accepts what the fast path accepts");
            assert_eq!((h, at), (g, body.len() - rest.len()));
        }
    }

    fn agree_from_workers(body: &[u8]) {
        agree(body, send(body));
        agree(body, request(body));
        agree(body, reply(body));
    }

    fn target() -> impl Strategy<Value = Target> {
        prop_oneof![
            Just(Target::Kingpin),
            any::<bool>().prop_map(|include_sender| Target::All { include_sender }),
            ".{0,12}".prop_map(Target::Role),
            ".{0,12}".prop_map(Target::Any),
            any::<u32>().prop_map(Target::Pid),
        ]
    }

    fn source() -> impl Strategy<Value = Source> {
        prop_oneof![
            Just(Source::Kingpin),
            (any::<u64>(), any::<u32>()).prop_map(|(id, pid)| Source::Worker { id, pid })
        ]
    }

    proptest! {
        #[test]
        fn encoded_deliveries_decode_fast(from in source(), ns in "[a-z_.]{0,20}", name in ".{0,30}", payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut body = postcard::to_allocvec(&Deliver { from, ns: ns.as_str(), name: name.as_str() }).unwrap();
            body.extend_from_slice(&payload);
            agree_deliver(&body);
            let h = deliver(&body).expect("short names take the fast path");
            prop_assert_eq!(&body[h.payload_at..], &payload[..]);
        }

        /// A delivery whose metadata is the last one's byte for byte takes
        /// the last one's sender and names; any other does not.
        #[test]
        fn the_last_delivery_answers_for_the_same_metadata_only(
            a in (source(), "[a-z_]{0,12}", "[a-z]{0,12}"),
            b in (source(), "[a-z_]{0,12}", "[a-z]{0,12}"),
            payload in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let body = |(from, ns, name): &(Source, String, String)| {
                let mut body = postcard::to_allocvec(&Deliver { from: from.clone(), ns: ns.as_str(), name: name.as_str() }).unwrap();
                body.extend_from_slice(&payload);
                body
            };
            let (first, second) = (body(&a), body(&b));
            let mut last = LastDeliver::new();
            prop_assert!(last.get(&first).is_none());
            let h = deliver(&first).unwrap();
            let (ns, name) = (Text::from(a.1.as_str()), Text::from(a.2.as_str()));
            last.set(&first, h.payload_at, h.from.clone(), &ns, &name);
            let hit = last.get(&second);
            if a == b {
                let (from, ns, name, at) = hit.expect("the same metadata");
                prop_assert_eq!((from, ns.as_str(), name.as_str(), at), (a.0.clone(), a.1.as_str(), a.2.as_str(), h.payload_at));
            } else if let Some((from, ns, name, at)) = hit {
                // Another sender or name can only match if it encodes to
                // the same bytes, and then it decodes the same.
                let g = deliver(&second).unwrap();
                prop_assert_eq!((from, ns.as_bytes(), name.as_bytes(), at), (g.from, g.ns, g.name, g.payload_at));
            }
            prop_assert!(last.get(&first[..h.payload_at - 1]).is_none(), "a body shorter than the metadata");
        }

        #[test]
        fn encoded_calls_decode_fast(id in any::<u64>(), from in source(), ns in "[a-z_]{0,10}", name in "[a-z]{0,10}", timeout_ms in any::<u64>(), callbacks in proptest::collection::vec(any::<u64>(), 0..5)) {
            let meta = Call { id, from, ns: ns.as_str(), name: name.as_str(), timeout_ms, callbacks };
            let body = postcard::to_allocvec(&meta).unwrap();
            agree_call(&body);
            prop_assert!(call(&body).is_some());
        }

        #[test]
        fn hand_encoding_is_postcards(from in source(), ns in ".{0,20}", name in ".{0,200}", id in any::<u64>(), timeout_ms in any::<u64>(), callbacks in proptest::collection::vec(any::<u64>(), 0..140)) {
            let d = Deliver { from: from.clone(), ns: ns.as_str(), name: name.as_str() };
            let mut hand = vec![7u8]; // after what is in the buffer already
            HandDeliver(&d).write_meta(&mut hand).unwrap();
            prop_assert_eq!(&hand[1..], &postcard::to_allocvec(&d).unwrap()[..]);
            let c = Call { id, from, ns: ns.as_str(), name: name.as_str(), timeout_ms, callbacks: callbacks.as_slice() };
            let mut hand = Vec::new();
            HandCall(&c).write_meta(&mut hand).unwrap();
            prop_assert_eq!(hand, postcard::to_allocvec(&c).unwrap());
        }

        #[test]
        fn encoded_frames_from_workers_decode_fast(id in any::<u64>(), to in target(), ns in ".{0,10}", name in ".{0,20}", timeout_ms in any::<u64>(), callbacks in proptest::collection::vec(any::<u64>(), 0..5), payload in proptest::collection::vec(any::<u8>(), 0..20)) {
            let (ns, name) = (ns.as_str(), name.as_str());
            let with_payload = |mut body: Vec<u8>| { body.extend_from_slice(&payload); body };
            let body = with_payload(postcard::to_allocvec(&Send { to: to.clone(), ns, name }).unwrap());
            agree(&body, send(&body));
            prop_assert_eq!(&body[send(&body).expect("short names take the fast path").1..], &payload[..]);
            let body = with_payload(postcard::to_allocvec(&Request { id, to, ns, name, timeout_ms, callbacks }).unwrap());
            agree(&body, request(&body));
            prop_assert!(request(&body).is_some());
            let body = with_payload(postcard::to_allocvec(&Reply { id, result: Ok(()) }).unwrap());
            agree(&body, reply(&body));
            prop_assert!(reply(&body).is_some());
            let failed = postcard::to_allocvec(&Reply { id, result: Err(crate::wire::Failure::UnknownNamespace) }).unwrap();
            prop_assert!(reply(&failed).is_none(), "failures take postcard's path");
        }

        #[test]
        fn arbitrary_bodies_never_disagree(body in proptest::collection::vec(any::<u8>(), 0..48)) {
            agree_deliver(&body);
            agree_call(&body);
            agree_from_workers(&body);
        }

        #[test]
        fn mutated_frames_from_workers_never_disagree(id in any::<u64>(), to in target(), name in "[a-z]{0,8}", flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut bodies = [
                postcard::to_allocvec(&Send { to: to.clone(), ns: "_", name: name.as_str() }).unwrap(),
                postcard::to_allocvec(&Request { id, to, ns: "_", name: name.as_str(), timeout_ms: 5, callbacks: vec![id] }).unwrap(),
                postcard::to_allocvec(&Reply { id, result: Ok(()) }).unwrap(),
            ];
            for body in &mut bodies {
                for (i, b) in &flips {
                    let i = i.index(body.len());
                    body[i] = *b;
                }
                agree_from_workers(body);
            }
        }

        #[test]
        fn mutated_bodies_never_disagree(from in source(), name in "[a-z]{0,8}", flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut body = postcard::to_allocvec(&Deliver { from, ns: "_", name: name.as_str() }).unwrap();
            for (i, b) in flips {
                let i = i.index(body.len());
                body[i] = b;
            }
            agree_deliver(&body);
        }
    }

    #[test]
    fn long_names_and_bad_varints_fall_back() {
        let long = String::from_utf8(vec![b'x'; 200]).unwrap();
        let body = postcard::to_allocvec(&Deliver { from: Source::Kingpin, ns: "_", name: long.as_str() }).unwrap();
        assert!(deliver(&body).is_none());
        assert!(generic_deliver(&body).is_some());
        // An 11-byte varint id, and one whose tenth byte overflows.
        let mut bad = vec![1u8];
        bad.extend([0xff; 10]);
        assert!(deliver(&bad).is_none());
        let mut over = vec![1u8];
        over.extend([0xff; 9]);
        over.push(0x02);
        assert!(deliver(&over).is_none());
        assert!(generic_deliver(&over).is_none());
    }
}
