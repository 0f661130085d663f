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
/// bytes each, whatever a peer sends.
pub(crate) struct Interner {
    slots: [Option<Text>; INTERN_SLOTS],
}

impl Interner {
    pub(crate) fn new() -> Interner {
        Interner { slots: [const { None }; INTERN_SLOTS] }
    }

    /// The shared [`Text`] for `s`.
    pub(crate) fn intern(&mut self, s: &str) -> Text {
        if s.len() > INTERN_MAX_LEN {
            return Text::from(s);
        }
        let slot = &mut self.slots[fnv1a(s.as_bytes()) as usize % INTERN_SLOTS];
        match slot {
            Some(t) if t.as_str() == s => t.clone(),
            _ => slot.insert(Text::from(s)).clone(),
        }
    }
}

impl Interner {
    /// The shared [`Text`] for `bytes`, or `None` if they are not UTF-8. A
    /// name found in the table was checked when it went in, so a repeated
    /// name costs no UTF-8 check.
    pub(crate) fn intern_bytes(&mut self, bytes: &[u8]) -> Option<Text> {
        if bytes.len() > INTERN_MAX_LEN {
            return core::str::from_utf8(bytes).ok().map(Text::from);
        }
        let slot = &mut self.slots[fnv1a(bytes) as usize % INTERN_SLOTS];
        match slot {
            Some(t) if t.as_bytes() == bytes => Some(t.clone()),
            _ => {
                let s = core::str::from_utf8(bytes).ok()?;
                Some(slot.insert(Text::from(s)).clone())
            }
        }
    }
}

/// FNV-1a, 32 bits: enough to spread a handful of short names.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
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
    fn long_and_colliding_names_stay_correct() {
        let mut i = Interner::new();
        let long = "x".repeat(INTERN_MAX_LEN + 1);
        assert_eq!(i.intern(&long), long.as_str());
        for n in 0..1000 {
            let s = n.to_string();
            assert_eq!(i.intern(&s), s);
        }
        assert!(i.slots.iter().flatten().all(|t| t.len() <= INTERN_MAX_LEN));
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
