//! Target `decoder`: `frame::Decoder` and `Message::parse`.
//!
//! Input: one config byte (the decoder's body limit: `% 4` picks the default,
//! 0, 16 or 300 bytes), then operations:
//!
//! | tag % 8 | operation | fields |
//! |---|---|---|
//! | 0..=6 | read: `handle_read(bytes, n fresh handles)`, then `decode()` until it needs more or fails | fd count (see [`fd_count`]), bytes |
//! | 7 | end of stream: `handle_eof()`, `decode()`, and stop | |
//!
//! Every frame goes through `Message::parse`. At the end `drain_fds()`.
//!
//! Checked: no panic; every handle comes back exactly once (in a frame, beside
//! a parse error, or from `drain_fds`); a frame's handles are the next ones
//! of the oldest read that still has any, in order; the frames are exactly the bytes fed (header rebuilt
//! from the frame, fd count included); `buffered()` and `queued_fds()` agree
//! with what was fed; after an error `decode` returns that same error for
//! good; a clean end of stream leaves nothing behind.

use crate::Ledger;
use crate::input::{Input, Writer, fd_byte, fd_count};
use mob_proto::frame::{DEFAULT_MAX_BODY, DecodeError, Decoder, HEADER_LEN, Header};
use mob_proto::wire::Message;

/// Operations of this target (for seeds).
pub enum Op<'a> {
    /// Bytes read, with `fds` fresh handles.
    Read { fds: usize, bytes: &'a [u8] },
    /// End of stream (last).
    Eof,
}

impl Op<'_> {
    /// Appends this operation to a seed.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Op::Read { fds, bytes } => w.u8(0).u8(fd_byte(*fds)).bytes(bytes),
            Op::Eof => w.u8(7),
        };
    }
}

/// The config byte for a given body limit (the default is 0).
pub fn config_byte(max_body: u32) -> u8 {
    match max_body {
        0 => 1,
        16 => 2,
        300 => 3,
        _ => 0,
    }
}

struct State {
    dec: Decoder,
    ledger: Ledger,
    /// Every byte fed before the decoder failed.
    stream: Vec<u8>,
    /// How much of `stream` the frames so far account for.
    consumed: usize,
    /// Raw values of the handles of each read that had some, oldest first,
    /// not yet seen in a frame.
    batches: std::collections::VecDeque<Vec<u64>>,
    error: Option<DecodeError>,
    eof: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let max_body = match input.u8() % 4 {
        0 => DEFAULT_MAX_BODY,
        1 => 0,
        2 => 16,
        _ => 300,
    };
    let mut s = State {
        dec: Decoder::new(max_body),
        ledger: Ledger::new(),
        stream: Vec::new(),
        consumed: 0,
        batches: Default::default(),
        error: None,
        eof: false,
    };
    while let Some(tag) = input.tag() {
        s.ledger.op += 1;
        if tag % 8 == 7 {
            s.dec.handle_eof();
            s.eof = true;
            s.decode_all();
            // Once ended, it stays ended (and failed if it failed).
            s.decode_all();
            break;
        }
        let n = fd_count(input.u8());
        let bytes = input.bytes();
        let fds = s.ledger.mint(n);
        if n > 0 {
            s.batches.push_back(crate::raws(&fds));
        }
        if s.error.is_none() && !s.dec.is_failed() {
            s.stream.extend_from_slice(bytes);
        }
        s.dec.handle_read(bytes, fds);
        s.decode_all();
    }
    assert_eq!(s.dec.queued_fds(), s.ledger.outstanding(), "queued_fds() at the end");
    for h in s.dec.drain_fds() {
        s.ledger.back(h, "drain_fds");
    }
    assert_eq!(s.dec.queued_fds(), 0, "queued_fds() after drain_fds");
    assert_eq!(s.dec.drain_fds().count(), 0, "a second drain_fds");
    s.ledger.assert_all_back("decoder");
}

impl State {
    fn decode_all(&mut self) {
        loop {
            let r = self.dec.decode();
            if let Some(prev) = &self.error {
                assert_eq!(r.as_ref().err(), Some(prev), "decode after an error");
                assert!(self.dec.is_failed());
                return;
            }
            match r {
                Ok(Some(frame)) => {
                    // The frame is the next bytes of the stream.
                    let header = Header {
                        len: u32::try_from(frame.body.len()).unwrap(),
                        kind: frame.kind,
                        fds: u8::try_from(frame.fds.len()).unwrap(),
                    };
                    assert!(frame.body.len() <= self.dec.max_body() as usize);
                    let end = self.consumed + HEADER_LEN + frame.body.len();
                    assert!(end <= self.stream.len(), "frame longer than what was fed");
                    assert_eq!(
                        &self.stream[self.consumed..self.consumed + HEADER_LEN],
                        &header.encode()[..],
                        "frame header"
                    );
                    assert_eq!(&self.stream[self.consumed + HEADER_LEN..end], &frame.body[..], "frame body");
                    self.consumed = end;
                    if !frame.fds.is_empty() {
                        // They are the next fds of the oldest read that
                        // still has any, in order: a read's fds go to the
                        // frames in turn, each frame's from one read.
                        let got = crate::raws(&frame.fds);
                        let front = self.batches.front_mut().expect("frame fds without a read that brought fds");
                        assert!(
                            front.len() >= got.len() && front[..got.len()] == got[..],
                            "frame fds {got:x?} are not the next fds of the oldest read's {front:x?}"
                        );
                        front.drain(..got.len());
                        if front.is_empty() {
                            self.batches.pop_front();
                        }
                    }
                    let (fds, via) = match Message::parse_owned(frame) {
                        Ok(msg) => (msg.into_fds(), "a parsed frame"),
                        Err((_, fds)) => (fds, "a frame that does not parse"),
                    };
                    for h in fds {
                        self.ledger.back(h, via);
                    }
                    assert_eq!(self.dec.buffered(), self.stream.len() - self.consumed, "buffered()");
                }
                Ok(None) => {
                    assert!(!self.dec.is_failed());
                    assert_eq!(self.dec.buffered(), self.stream.len() - self.consumed, "buffered()");
                    assert_eq!(self.dec.queued_fds(), self.ledger.outstanding(), "queued_fds()");
                    if self.eof {
                        assert_eq!(self.dec.buffered(), 0, "clean end with bytes left");
                        assert_eq!(self.dec.queued_fds(), 0, "clean end with fds left");
                    }
                    return;
                }
                Err(e) => {
                    assert!(self.dec.is_failed());
                    self.error = Some(e);
                    // The same error again, without more input.
                    assert_eq!(self.dec.decode().err(), self.error, "decode after an error");
                    return;
                }
            }
        }
    }
}
