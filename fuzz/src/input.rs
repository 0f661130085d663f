//! The byte format the fuzz targets read, and its writer (for seeds).
//!
//! An input is a sequence of operations. Each starts with a tag byte (taken
//! modulo the number of operations of the target), followed by its fields:
//! `u8`, `u16` (little-endian) or a byte string (`u16` length, then that many
//! bytes, fewer if the input ends first). A field cut off by the end of the
//! input reads as zero, so every input means something.

/// Reads fields off the fuzzer's input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next operation's tag, or `None` at the end of the input.
    pub fn tag(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// A byte (zero past the end).
    pub fn u8(&mut self) -> u8 {
        self.tag().unwrap_or(0)
    }

    /// A little-endian `u16` (zero bytes past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A byte string: a `u16` length, then up to that many bytes.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
}

/// Writes fields in the format [`Input`] reads.
#[derive(Default)]
pub struct Writer {
    /// What was written.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte (a tag or a `u8` field).
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.buf.push(b);
        self
    }

    /// Appends a `u16` field.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a byte-string field.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).expect("seed field longer than 64 KiB");
        self.u16(n);
        self.buf.extend_from_slice(b);
        self
    }
}

/// How many fd handles an fd-count byte asks for: mostly 0..=3, and up to 63
/// for bytes from 0xC0 on.
pub fn fd_count(b: u8) -> usize {
    if b < 0xC0 { usize::from(b % 4) } else { usize::from(b - 0xC0) }
}

/// The fd-count byte that asks for `n` handles (`n` < 64).
pub fn fd_byte(n: usize) -> u8 {
    assert!(n < 64);
    if n < 4 { n as u8 } else { 0xC0 + n as u8 }
}
