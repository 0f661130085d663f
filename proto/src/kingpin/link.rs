//! One link as the kingpin keeps it: its decoder, its outgoing queue, the
//! frames waiting for its handshake, and what is in flight through it.

use super::{Kingpin, LinkId, Output, Phase, WorkerInfo};
use crate::error::SendError;
use crate::fd::FdHandle;
use crate::frame::{Decoder, OutBuf, WriteMeta, encode_frame};
use crate::time::Instant;
use crate::wire::{Kind, Target};
use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

/// Bytes queued on one link past which [`Kingpin::poll_flush`] asks the
/// runtime to write them at once rather than when the turn ends: a burst
/// the application queues in one go then reaches the worker while the rest
/// is still being queued, instead of leaving it idle until the burst ends.
/// A worker runtime uses the same bound for its handlers' answers.
pub const FLUSH_AT: usize = 64 * 1024;

/// A frame that waits for its link's handshake.
pub(super) struct Early {
    pub frame: Vec<u8>,
    pub fds: Vec<FdHandle>,
    /// For "any one of a role": where to send it instead if this worker dies
    /// first.
    pub reroute: Option<Target>,
    /// The call it carries, if it is a request.
    pub call: Option<u64>,
}

pub(super) struct Link {
    pub generation: u32,
    pub info: WorkerInfo,
    pub role: usize,
    pub phase: Phase,
    pub dec: Decoder,
    pub out: OutBuf,
    pub early: VecDeque<Early>,
    pub early_bytes: usize,
    /// fds the frames of `early` hold.
    pub early_fds: usize,
    /// Handshake deadline.
    pub deadline: Option<Instant>,
    /// Calls sent to this worker and not yet answered.
    pub inflight: u32,
    /// This worker's requests to the kingpin not yet answered.
    pub incoming: BTreeSet<u64>,
    /// Functions this worker exports.
    pub exports: Vec<String>,
    /// Takes new work.
    pub ready: bool,
    /// Has been ready at least once (so not ready now means busy).
    pub was_ready: bool,
    /// Gets no new work: finishing before it stops.
    pub draining: bool,
    /// Asked to stop, or killed: its exit is expected.
    pub stopping: bool,
    /// When it must be gone after being asked to stop.
    pub stop_deadline: Option<Instant>,
    /// The runtime was asked to kill its process.
    pub killed: bool,
    /// It reported why it is dying.
    pub fatal: bool,
    /// Resident memory it last reported, in KiB.
    pub rss_kib: u64,
    pub spawned_at: Instant,
    pub up_at: Option<Instant>,
    /// When it was last heard from (any bytes).
    pub last_seen: Instant,
    pub next_ping: Option<Instant>,
    pub ping_seq: u64,
}

impl Link {
    pub(super) fn new(generation: u32, info: WorkerInfo, role: usize, max_body: u32, now: Instant) -> Link {
        Link {
            generation,
            info,
            role,
            phase: Phase::Spawning,
            dec: Decoder::new(max_body),
            out: OutBuf::new(max_body),
            early: VecDeque::new(),
            early_bytes: 0,
            early_fds: 0,
            deadline: None,
            inflight: 0,
            incoming: BTreeSet::new(),
            exports: Vec::new(),
            ready: false,
            was_ready: false,
            draining: false,
            stopping: false,
            stop_deadline: None,
            killed: false,
            fatal: false,
            rss_kib: 0,
            spawned_at: now,
            up_at: None,
            last_seen: now,
            next_ping: None,
            ping_seq: 0,
        }
    }

    /// Whether it should be given new work.
    pub(super) fn takes_work(&self) -> bool {
        self.phase == Phase::Up && self.ready && !self.draining && !self.stopping
    }

    pub(super) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Spawning | Phase::Handshaking | Phase::Up)
    }
}

/// Where a frame goes once encoded.
pub(super) struct Queued {
    pub reroute: Option<Target>,
    pub call: Option<u64>,
}

/// Whether a frame of `kind` brings a worker new work, which a full queue
/// refuses ([`KingpinConfig::max_queued_bytes`](crate::KingpinConfig)).
/// The others end or steer work it has already been given.
fn is_new_work(kind: Kind) -> bool {
    matches!(kind, Kind::Deliver | Kind::Call)
}

impl Kingpin {
    /// Queues a frame for `link`. On error the fds are released.
    pub(super) fn push<M: WriteMeta + ?Sized>(
        &mut self,
        link: LinkId,
        kind: Kind,
        meta: &M,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        self.push_with(link, kind, meta, payload, fds, Queued { reroute: None, call: None })
    }

    /// Bytes were queued on `link`, which went from `before` to `after`
    /// bytes: its first bytes ask for a transmit; reaching [`FLUSH_AT`]
    /// asks for one at once.
    fn queued(&mut self, link: LinkId, before: usize, after: usize) {
        if before == 0 {
            self.outputs.push_back(Output::Transmit(link));
        }
        if before < FLUSH_AT && after >= FLUSH_AT && !self.flush.contains(&link) {
            self.flush.push(link);
        }
    }

    /// Queues a frame for `link`: on the wire if the worker is up, else in
    /// its early queue (bounded). On error the fds are released.
    pub(super) fn push_with<M: WriteMeta + ?Sized>(
        &mut self,
        link: LinkId,
        kind: Kind,
        meta: &M,
        payload: &[u8],
        fds: Vec<FdHandle>,
        queued: Queued,
    ) -> Result<(), SendError> {
        let (early_limit, out_limit) = (self.config.early_queue_limit, self.config.max_queued_bytes);
        let fd_limit = self.config.max_queued_fds;
        let Some(l) = self.link_mut(link) else {
            self.release(fds);
            return Err(SendError::Closed);
        };
        // fds count only against frames that carry some.
        let fds_past = |queued: usize, limit: usize| !fds.is_empty() && queued + fds.len() > limit;
        let result = match l.phase {
            Phase::Up if is_new_work(kind) && (l.out.len() >= out_limit || fds_past(l.out.fds(), fd_limit)) => {
                Err((SendError::Backpressure, fds))
            }
            // What ends its own work is owed to it, but not without bound:
            // a worker that lets this much wait does not read its link.
            Phase::Up if l.out.len() >= 2 * out_limit || fds_past(l.out.fds(), 2 * fd_limit) => {
                if !self.overflowed.contains(&link) {
                    self.overflowed.push(link);
                }
                Err((SendError::Backpressure, fds))
            }
            Phase::Up => {
                let before = l.out.len();
                match l.out.push(kind as u8, meta, payload, fds) {
                    Ok(()) => {
                        let after = l.out.len();
                        self.queued(link, before, after);
                        Ok(())
                    }
                    Err((e, fds)) => Err((SendError::Encode(e), fds)),
                }
            }
            // The whole encoded frame counts against the limit, as in
            // `push_early`.
            Phase::Spawning | Phase::Handshaking => {
                match encode_frame(kind as u8, meta, payload, fds.len(), l.out_max()) {
                    Ok(frame) if l.early_bytes + frame.len() > early_limit || fds_past(l.early_fds, fd_limit) => {
                        Err((SendError::Backpressure, fds))
                    }
                    Ok(frame) => {
                        l.early_bytes += frame.len();
                        l.early_fds += fds.len();
                        l.early.push_back(Early { frame, fds, reroute: queued.reroute, call: queued.call });
                        Ok(())
                    }
                    Err(e) => Err((SendError::Encode(e), fds)),
                }
            }
            Phase::Closing => Err((SendError::Closed, fds)),
        };
        result.map_err(|(e, fds)| {
            self.release(fds);
            e
        })
    }

    /// Moves an already-encoded frame to `link` (a reroute).
    pub(super) fn push_early(&mut self, link: LinkId, early: Early) -> Result<(), Early> {
        let (early_limit, out_limit) = (self.config.early_queue_limit, self.config.max_queued_bytes);
        let fd_limit = self.config.max_queued_fds;
        let Some(l) = self.link_mut(link) else { return Err(early) };
        let n = early.fds.len();
        match l.phase {
            Phase::Up if l.out.len() < out_limit && (n == 0 || l.out.fds() + n <= fd_limit) => {
                let before = l.out.len();
                l.out.push_encoded(&early.frame, early.fds);
                let after = l.out.len();
                self.queued(link, before, after);
                Ok(())
            }
            Phase::Spawning | Phase::Handshaking
                if l.early_bytes + early.frame.len() <= early_limit && (n == 0 || l.early_fds + n <= fd_limit) =>
            {
                l.early_bytes += early.frame.len();
                l.early_fds += n;
                l.early.push_back(early);
                Ok(())
            }
            _ => Err(early),
        }
    }
}

impl Link {
    fn out_max(&self) -> u32 {
        self.dec.max_body()
    }
}
