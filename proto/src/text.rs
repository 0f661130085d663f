//! [`Text`]: the namespace and name strings of messages and requests, shared
//! instead of copied, and the [`Interner`] that makes a stream of the same few
//! names cost no allocation per message.

use alloc::string::String;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::Deref;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable, cheaply clonable string (a shared `Arc<str>`).
///
/// Namespaces and names of incoming messages arrive as `Text`: the few names
/// an application uses are interned per link, so a message costs a reference
/// count, not an allocation. It reads like a `&str`:
///
/// ```
/// use mob_proto::Text;
///
/// let name = Text::from("ping");
/// assert_eq!(name, "ping");
/// assert_eq!(name.len(), 4);
/// assert!(name.starts_with("pi"));
/// let copy = name.clone(); // no allocation
/// assert_eq!(copy.as_str(), "ping");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(Arc<str>);

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are the same shared string (not merely equal): true for
    /// names interned from the same link, which makes a cache keyed by them
    /// a pointer comparison.
    pub fn ptr_eq(a: &Text, b: &Text) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that maps keyed by `Text` take `&str` lookups.
        self.as_str().hash(state)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Arc::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Arc::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text(Arc::from(s.as_str()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        String::from(t.as_str())
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

/// Names longer than this are not interned (each gets its own allocation).
const INTERN_MAX_LEN: usize = 64;

/// Slots of the intern table (a power of two).
const INTERN_SLOTS: usize = 64;

/// A small, bounded cache from strings to shared [`Text`]s: the same name
/// seen again costs a hash and a comparison, not an allocation.
///
/// It is direct-mapped (a name lives in the one slot its hash picks; a
/// colliding name replaces it), so it holds at most 64 names of at most 64
/// bytes each, whatever a peer sends. A name of up to 16 bytes is found by
/// comparing two words and its length, without a byte loop.
pub(crate) struct Interner {
    slots: [Option<(Key, Text)>; INTERN_SLOTS],
}

/// A name's length and two words that, with the length, tell every byte
/// of a name of at most 16 bytes: its first and last eight bytes (they
/// overlap below 16), or for shorter names its first and last four bytes,
/// or its first, middle and last byte.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    len: usize,
    head: u64,
    tail: u64,
}

impl Key {
    fn of(bytes: &[u8]) -> Key {
        // Whole-word loads of fixed size (no copy into a padded buffer,
        // which costs a call and a store-to-load stall per name).
        let u64_at = |i: usize| {
            bytes.get(i..i + 8).map_or(0, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        let u32_at =
            |i: usize| bytes.get(i..i + 4).map_or(0, |b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        let len = bytes.len();
        let (head, tail) = match len {
            0 => (0, 0),
            1..=3 => {
                let (a, b, c) = (bytes[0], bytes[len / 2], bytes[len - 1]);
                (u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16, 0)
            }
            4..=7 => (u32_at(0) | u32_at(len - 4) << 32, 0),
            _ => (u64_at(0), u64_at(len - 8)),
        };
        Key { len, head, tail }
    }

    /// Whether the key alone tells the bytes (no comparison needed).
    fn is_whole(&self) -> bool {
        self.len <= 16
    }

    fn slot(&self) -> usize {
        let mixed = (self.head ^ self.tail.rotate_left(29) ^ self.len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 58) as usize % INTERN_SLOTS
    }
}

impl Interner {
    pub(crate) fn new() -> Interner {
        Interner { slots: [const { None }; INTERN_SLOTS] }
    }

    /// The shared [`Text`] for `s`.
    pub(crate) fn intern(&mut self, s: &str) -> Text {
        match self.find(s.as_bytes()) {
            Ok(t) => t,
            Err(slot) => self.insert(slot, s),
        }
    }

    /// The shared [`Text`] for `bytes`, or `None` if they are not UTF-8. A
    /// name found in the table was checked when it went in, so a repeated
    /// name costs no UTF-8 check.
    pub(crate) fn intern_bytes(&mut self, bytes: &[u8]) -> Option<Text> {
        match self.find(bytes) {
            Ok(t) => Some(t),
            Err(slot) => Some(self.insert(slot, core::str::from_utf8(bytes).ok()?)),
        }
    }

    /// The interned name, or where it would go (`None`: too long to keep).
    fn find(&self, bytes: &[u8]) -> Result<Text, Option<(usize, Key)>> {
        if bytes.len() > INTERN_MAX_LEN {
            return Err(None);
        }
        let key = Key::of(bytes);
        let slot = key.slot();
        match &self.slots[slot] {
            Some((k, t)) if *k == key && (key.is_whole() || t.as_bytes() == bytes) => Ok(t.clone()),
            _ => Err(Some((slot, key))),
        }
    }

    fn insert(&mut self, at: Option<(usize, Key)>, s: &str) -> Text {
        let text = Text::from(s);
        if let Some((slot, key)) = at {
            self.slots[slot] = Some((key, text.clone()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    #[test]
    fn interned_names_share_one_allocation() {
        let mut i = Interner::new();
        let a = i.intern("tick");
        let b = i.intern("tick");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "tick");
    }

    #[test]
    fn byte_interning_checks_utf8_once_and_refuses_bad_bytes() {
        let mut i = Interner::new();
        let a = i.intern_bytes(b"tick").unwrap();
        assert!(Text::ptr_eq(&a, &i.intern("tick")));
        assert!(i.intern_bytes(&[0xff, 0xfe]).is_none());
        assert!(i.intern_bytes(&[b'x'; 100]).is_some());
        assert!(i.intern_bytes(&[0xff; 100]).is_none());
    }

    #[test]
    fn names_that_share_words_or_padding_stay_apart() {
        let mut i = Interner::new();
        // Same head and tail words, other lengths or middles; zero bytes.
        let names: [&[u8]; 8] = [
            b"",
            b"\0",
            b"\0\0",
            b"abcdefgh",
            b"abcdefghabcdefgh",
            b"abcdefgh_abcdefgh",
            b"abcdefgh-abcdefgh",
            b"abcdefgXh",
        ];
        for _ in 0..2 {
            for n in names {
                assert_eq!(i.intern_bytes(n).unwrap().as_bytes(), n);
            }
        }
    }

    #[test]
    fn every_short_name_over_a_small_alphabet_comes_back_as_itself() {
        // All names of up to 7 bytes over three letters (zero included), and
        // some longer ones: each key must tell its bytes exactly.
        let mut names: alloc::vec::Vec<alloc::vec::Vec<u8>> = alloc::vec![alloc::vec![]];
        let mut last = names.clone();
        for _ in 0..7 {
            last = last.iter().flat_map(|n| [b'a', b'b', 0].map(|c| [n.as_slice(), &[c]].concat())).collect();
            names.extend(last.iter().cloned());
        }
        for n in last.iter().take(200) {
            names.push([n.as_slice(), b"0123456789"].concat());
        }
        let mut i = Interner::new();
        for _ in 0..2 {
            for n in &names {
                assert_eq!(i.intern_bytes(n).unwrap().as_bytes(), n.as_slice());
            }
        }
    }

    #[test]
    fn long_and_colliding_names_stay_correct() {
        let mut i = Interner::new();
        let long = "x".repeat(INTERN_MAX_LEN + 1);
        assert_eq!(i.intern(&long), long.as_str());
        for n in 0..1000 {
            let s = n.to_string();
            assert_eq!(i.intern(&s), s);
        }
        assert!(i.slots.iter().flatten().all(|(_, t)| t.len() <= INTERN_MAX_LEN));
    }

    #[test]
    fn text_compares_formats_and_round_trips() {
        let t = Text::from("ns");
        assert_eq!(format!("{t} {t:?}"), "ns \"ns\"");
        let owned = String::from("ns");
        assert_eq!(t, "ns");
        assert_eq!("ns", t);
        assert_eq!(t, owned);
        let bytes = postcard::to_allocvec(&t).unwrap();
        assert_eq!(bytes, postcard::to_allocvec("ns").unwrap());
        assert_eq!(postcard::from_bytes::<Text>(&bytes).unwrap(), t);
    }
}
