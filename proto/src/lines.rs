//! Worker output, line by line: what the kingpin does with the bytes its
//! workers write to stdout and stderr, without doing any IO.
//!
//! The runtime gives each worker a pipe for stdout and one for stderr, and
//! keeps one [`LineMux`] per destination (its own stdout, its own stderr).
//! Every pipe is a *source* of the mux, with a prefix such as
//! `[web#1 1234] ` ([`worker_prefix`]). The mux cuts each source's bytes
//! into lines and queues each line, prefixed, for the destination.
//!
//! - **Bytes pass through unchanged.** Lines end at `\n` (byte 10) and
//!   nothing else; there is no UTF-8 assumption, so binary output, `\r` and
//!   invalid UTF-8 arrive as written.
//! - **Partial lines are not lost or glued together.** A line longer than
//!   [`LineLimits::max_line`] is cut there; the last line of a source that
//!   ended ([`LineMux::handle_eof`]) without a newline is flushed as is.
//!   Each such piece gets its prefix and a `\n`, so the destination stays
//!   line-structured: a cut is the only place the mux adds a byte.
//! - **Memory is bounded, and nothing is dropped.** Each source holds at
//!   most [`LineLimits::per_source`] unprocessed bytes: when it is full,
//!   [`LineMux::space`] is 0 and the runtime stops reading that pipe, so a
//!   worker that writes faster than the destination reads blocks in its
//!   own `write` (back-pressure). Lines move to the destination's queue only
//!   while it holds less than [`LineLimits::queued`] bytes.
//! - **Lines from different sources never mix.** Lines are queued whole,
//!   taking turns between sources, and [`LineMux::peek`] offers the
//!   destination whole lines, at most [`ATOMIC_WRITE`] bytes at a time where
//!   the lines allow, so even other writers to the same pipe (the kingpin's
//!   own `println!`) cannot split a line.
//!
//! The run loop: read at most [`LineMux::space`] bytes from a source's pipe
//! into [`LineMux::handle_read`]; at its end of stream call
//! [`LineMux::handle_eof`]; write [`LineMux::peek`] to the destination and
//! report what was written with [`LineMux::advance`]; after an advance,
//! resume reading the sources that had no space.
//!
//! ```
//! use mob_proto::lines::{LineMux, LineLimits, worker_prefix};
//!
//! let mut mux = LineMux::new(LineLimits::default());
//! mux.add(1, &worker_prefix("web", 1, 1234));
//! mux.handle_read(1, b"hello\nwor");
//! mux.handle_read(1, b"ld\npartial");
//! mux.handle_eof(1);
//! let mut written = Vec::new();
//! while let Some(chunk) = mux.peek() {
//!     written.extend_from_slice(chunk);
//!     let n = chunk.len();
//!     mux.advance(n);
//! }
//! assert_eq!(written, b"[web#1 1234] hello\n[web#1 1234] world\n[web#1 1234] partial\n");
//! assert!(mux.is_empty());
//! ```

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

/// The largest write that a pipe takes whole or not at all (`PIPE_BUF` on
/// Linux): [`LineMux::peek`] offers whole lines up to this size at a time.
pub const ATOMIC_WRITE: usize = 4096;

/// The prefix of a worker's lines: `[ROLE#SLOT PID] `.
///
/// ```
/// assert_eq!(mob_proto::lines::worker_prefix("web", 1, 1234), b"[web#1 1234] ");
/// ```
pub fn worker_prefix(role: &str, slot: u32, pid: u32) -> Vec<u8> {
    format!("[{role}#{slot} {pid}] ").into_bytes()
}

/// The bounds of a [`LineMux`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineLimits {
    /// Longest line passed on whole (default 16 KiB): a longer one is cut
    /// into pieces of this many bytes, each a line of its own.
    pub max_line: usize,
    /// Unprocessed bytes held per source (default 64 KiB, a pipe's worth).
    /// At least `max_line`; a smaller value is raised to it.
    pub per_source: usize,
    /// Bytes queued for the destination beyond which no more lines are
    /// taken from the sources (default 64 KiB).
    pub queued: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        LineLimits { max_line: 16 << 10, per_source: 64 << 10, queued: 64 << 10 }
    }
}

/// One source: its prefix, the bytes not yet cut into lines, and whether
/// its stream has ended.
#[derive(Debug)]
struct Source {
    prefix: Vec<u8>,
    /// Bytes not yet cut into lines: `raw[start..]`.
    raw: Vec<u8>,
    start: usize,
    eof: bool,
}

impl Source {
    fn pending(&self) -> &[u8] {
        &self.raw[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.raw.len() {
            self.raw.clear();
            self.start = 0;
        }
    }

    /// Moves the unconsumed bytes to the front before more are appended.
    fn compact(&mut self) {
        if self.start > 0 {
            self.raw.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Cuts the output of many sources into prefixed lines for one destination,
/// with bounded memory (see the [module docs](self)).
///
/// Sources are identified by the runtime's own `u64` keys (a link id, say).
/// Memory held is at most `queued + max_line + longest prefix + 1` bytes
/// for the destination plus `per_source` bytes per source.
#[derive(Debug)]
pub struct LineMux {
    limits: LineLimits,
    sources: BTreeMap<u64, Source>,
    out: Vec<u8>,
    head: usize,
    /// The source whose turn it is to queue a line.
    turn: u64,
}

impl LineMux {
    /// An empty mux with these limits.
    pub fn new(limits: LineLimits) -> LineMux {
        let limits = LineLimits { per_source: limits.per_source.max(limits.max_line).max(1), ..limits };
        LineMux { limits, sources: BTreeMap::new(), out: Vec::new(), head: 0, turn: 0 }
    }

    /// The limits in force.
    pub fn limits(&self) -> LineLimits {
        self.limits
    }

    /// Adds source `id`, whose lines get `prefix`. Re-adding a live id
    /// changes its prefix for lines not yet queued.
    pub fn add(&mut self, id: u64, prefix: &[u8]) {
        match self.sources.get_mut(&id) {
            Some(s) => s.prefix = prefix.to_vec(),
            None => {
                self.sources.insert(id, Source { prefix: prefix.to_vec(), raw: Vec::new(), start: 0, eof: false });
            }
        }
    }

    /// Whether source `id` is known (added, and not yet ended and flushed).
    pub fn contains(&self, id: u64) -> bool {
        self.sources.contains_key(&id)
    }

    /// How many bytes the runtime may read from source `id` now. 0 means
    /// "stop reading this pipe until an [`LineMux::advance`]" (or that the
    /// source is unknown or ended).
    pub fn space(&self, id: u64) -> usize {
        match self.sources.get(&id) {
            Some(s) if !s.eof => self.limits.per_source.saturating_sub(s.pending().len()),
            _ => 0,
        }
    }

    /// Bytes read from source `id` (at most [`LineMux::space`] of them, or
    /// the bound is exceeded by the excess; nothing is dropped). Bytes for an
    /// unknown or ended source are ignored.
    pub fn handle_read(&mut self, id: u64, bytes: &[u8]) {
        let Some(s) = self.sources.get_mut(&id) else { return };
        if s.eof || bytes.is_empty() {
            return;
        }
        s.compact();
        s.raw.extend_from_slice(bytes);
        self.fill();
    }

    /// Source `id` has ended (its pipe closed, or could not be read): its
    /// last partial line is flushed, and the source is forgotten once all
    /// its bytes are queued.
    pub fn handle_eof(&mut self, id: u64) {
        if let Some(s) = self.sources.get_mut(&id) {
            s.eof = true;
        }
        self.fill();
    }

    /// The next bytes to write to the destination, if any: whole lines, at
    /// most [`ATOMIC_WRITE`] bytes unless the first line alone is longer.
    pub fn peek(&self) -> Option<&[u8]> {
        let pending = &self.out[self.head..];
        if pending.is_empty() {
            return None;
        }
        if pending.len() <= ATOMIC_WRITE {
            return Some(pending);
        }
        let end = match pending[..ATOMIC_WRITE].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // Every queued line ends with a newline.
            None => pending.iter().position(|&b| b == b'\n').map_or(pending.len(), |i| i + 1),
        };
        Some(&pending[..end])
    }

    /// `n` bytes of the last [`LineMux::peek`] were written. Frees room, so
    /// more lines are queued and sources may have [`LineMux::space`] again.
    pub fn advance(&mut self, n: usize) {
        self.head = (self.head + n).min(self.out.len());
        if self.head == self.out.len() {
            self.out.clear();
            self.head = 0;
        } else if self.head >= self.out.len() / 2 {
            self.out.drain(..self.head);
            self.head = 0;
        }
        self.fill();
    }

    /// Bytes queued for the destination and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.head
    }

    /// Bytes held in all, queued and not yet cut into lines.
    pub fn buffered(&self) -> usize {
        self.queued() + self.sources.values().map(|s| s.pending().len()).sum::<usize>()
    }

    /// Number of sources still known.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Whether nothing is buffered and every source has ended.
    pub fn is_empty(&self) -> bool {
        self.queued() == 0 && self.sources.is_empty()
    }

    /// Moves lines from the sources to the destination's queue, one line
    /// per source in turn, while the queue is under its bound; forgets
    /// sources that ended and have nothing left.
    fn fill(&mut self) {
        let max_line = self.limits.max_line.max(1);
        let bound = self.head + self.limits.queued;
        let out = &mut self.out;
        'rounds: loop {
            let mut moved = false;
            let turn = self.turn;
            for pass in 0..2 {
                let sources = if pass == 0 { self.sources.range_mut(turn..) } else { self.sources.range_mut(..turn) };
                for (&id, s) in sources {
                    if out.len() >= bound {
                        self.turn = id;
                        break 'rounds;
                    }
                    moved |= move_line(s, out, max_line);
                }
            }
            if !moved {
                break;
            }
        }
        self.sources.retain(|_, s| !(s.eof && s.pending().is_empty()));
    }
}

/// Queues the next line of `s` in `out`, if it has one; true if it did.
fn move_line(s: &mut Source, out: &mut Vec<u8>, max_line: usize) -> bool {
    let pending = s.pending();
    let window = pending.len().min(max_line);
    let (take, newline) = match pending[..window].iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, false),
        None if pending.len() >= max_line => (max_line, true),
        None if s.eof && !pending.is_empty() => (pending.len(), true),
        None => return false,
    };
    out.extend_from_slice(&s.prefix);
    out.extend_from_slice(&pending[..take]);
    if newline {
        out.push(b'\n');
    }
    s.consume(take);
    true
}
