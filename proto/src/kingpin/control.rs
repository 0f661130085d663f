//! The kingpin's side of the control protocol ([`crate::control`]): one
//! state machine for every control connection, answering each request
//! from the [`Kingpin`]'s own state.
//!
//! The runtime accepts connections on the control socket, checks who is
//! connecting (the kingpin's own user only), and then only moves bytes:
//! [`ControlServer::open`] a connection, feed what it reads to
//! [`ControlServer::handle_read`] (with the kingpin), write what
//! [`ControlServer::poll_transmit`] offers, and carry out
//! [`ControlServer::poll_output`]: [`ControlOutput::Transmit`] (write that
//! connection) and [`ControlOutput::Close`] (write what is left if it can
//! without blocking, close the socket, then [`ControlServer::handle_closed`]).
//! After a request the kingpin may have outputs too (a resize spawns): drain
//! [`Kingpin::poll_output`] as after any call.

use super::Kingpin;
use crate::control::{
    ControlAnswer, ControlCommand, ControlError, ControlHello, ControlKind, ControlReply, ControlWelcome,
    MAX_REQUEST_BODY, REJECT_KIND, RoleStatus, StatusReport, WorkerStatus, whole,
};
use crate::error::CloseReason;
use crate::frame::{DEFAULT_MAX_BODY, Decoder, encode_frame};
use crate::requester::millis;
use crate::time::Instant;
use crate::wire::{MAGIC, PROTOCOL_VERSION, Reject};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::Serialize;

/// Control connections open at once, at most; more are refused.
pub const MAX_CONTROL_CONNECTIONS: usize = 32;

/// Bytes of replies a client may leave unread before its connection is
/// closed (it asks faster than it reads).
pub const MAX_CONTROL_QUEUED: usize = 8 << 20;

/// Identifies one control connection; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ControlId(u64);

impl ControlId {
    /// The id as a number (for the runtime's own tables).
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// What the control server asks of its runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlOutput {
    /// The connection has bytes to write: drain
    /// [`ControlServer::poll_transmit`].
    Transmit(ControlId),
    /// Close the connection (after writing what is left, without blocking),
    /// then call [`ControlServer::handle_closed`].
    Close(ControlId, CloseReason),
    /// Something the kingpin's log should say (who connected, what they
    /// asked, why a connection closed).
    Log(String),
}

/// Why [`ControlServer::open`] refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyConnections;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's hello.
    Hello,
    /// Welcomed: requests flow.
    Open,
    /// Asked to close; the runtime has not closed it yet.
    Closing,
}

struct Conn {
    dec: Decoder,
    out: Vec<u8>,
    head: usize,
    phase: Phase,
    client: String,
}

/// Every control connection of one kingpin.
pub struct ControlServer {
    conns: BTreeMap<u64, Conn>,
    next: u64,
    pid: u32,
    started: Instant,
    outputs: VecDeque<ControlOutput>,
}

impl ControlServer {
    /// A server for the kingpin with process id `pid`, started at `now`
    /// (for the status table's uptime).
    pub fn new(pid: u32, now: Instant) -> ControlServer {
        ControlServer { conns: BTreeMap::new(), next: 1, pid, started: now, outputs: VecDeque::new() }
    }

    /// A connection was accepted (and its peer checked): its id, or an
    /// error if [`MAX_CONTROL_CONNECTIONS`] are open already.
    pub fn open(&mut self) -> Result<ControlId, TooManyConnections> {
        if self.conns.len() >= MAX_CONTROL_CONNECTIONS {
            return Err(TooManyConnections);
        }
        let id = self.next;
        self.next += 1;
        let conn = Conn {
            dec: Decoder::new(MAX_REQUEST_BODY),
            out: Vec::new(),
            head: 0,
            phase: Phase::Hello,
            client: String::new(),
        };
        self.conns.insert(id, conn);
        Ok(ControlId(id))
    }

    /// Open connections (for the runtime's shutdown: close them all).
    pub fn connections(&self) -> impl Iterator<Item = ControlId> + '_ {
        self.conns.keys().map(|id| ControlId(*id))
    }

    /// Bytes read from connection `id`: requests are answered at once,
    /// acting on `kingpin`.
    pub fn handle_read(&mut self, id: ControlId, bytes: &[u8], kingpin: &mut Kingpin, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id.0) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.dec.handle_read(bytes, Vec::new());
        self.process(id, kingpin, now);
    }

    /// The client closed its side: what it sent is answered, then the
    /// connection closes.
    pub fn handle_eof(&mut self, id: ControlId, kingpin: &mut Kingpin, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id.0) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.dec.handle_eof();
        self.process(id, kingpin, now);
        self.close(id, CloseReason::Eof);
    }

    /// The runtime could not read or write connection `id`.
    pub fn handle_error(&mut self, id: ControlId, what: &'static str) {
        self.close(id, CloseReason::Transport(what));
    }

    /// The runtime closed connection `id`'s socket: its state is dropped.
    pub fn handle_closed(&mut self, id: ControlId) {
        self.conns.remove(&id.0);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<ControlOutput> {
        self.outputs.pop_front()
    }

    /// What to write next on connection `id`.
    pub fn poll_transmit(&self, id: ControlId) -> Option<&[u8]> {
        let conn = self.conns.get(&id.0)?;
        let pending = &conn.out[conn.head..];
        (!pending.is_empty()).then_some(pending)
    }

    /// `n` bytes of the last [`ControlServer::poll_transmit`] on `id` were
    /// written.
    pub fn handle_transmitted(&mut self, id: ControlId, n: usize) {
        let Some(conn) = self.conns.get_mut(&id.0) else { return };
        conn.head = (conn.head + n).min(conn.out.len());
        if conn.head == conn.out.len() {
            conn.out.clear();
            conn.head = 0;
        }
    }

    fn process(&mut self, id: ControlId, kingpin: &mut Kingpin, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(&id.0) else { return };
            if conn.phase == Phase::Closing {
                return;
            }
            let frame = match conn.dec.decode() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.close(id, CloseReason::Decode(e)),
            };
            match (conn.phase, frame.kind) {
                (Phase::Hello, k) if k == ControlKind::Hello as u8 => {
                    let Some(hello) = whole::<ControlHello>(&frame.body) else {
                        return self.close(id, malformed(k));
                    };
                    self.on_hello(id, hello, kingpin);
                }
                (Phase::Hello, _) => {
                    return self.close(id, CloseReason::Protocol("first frame must be a ControlHello"));
                }
                (Phase::Open, k) if k == ControlKind::Request as u8 => {
                    let Ok((request, rest)) = postcard::take_from_bytes::<u64>(&frame.body) else {
                        return self.close(id, malformed(k));
                    };
                    let command = whole::<ControlCommand>(rest);
                    let log = match &command {
                        Some(c) => format!("control: {} asks {c:?}", conn.client),
                        None => format!("control: {} asks something this kingpin does not know", conn.client),
                    };
                    self.outputs.push_back(ControlOutput::Log(log));
                    let result = match command {
                        Some(command) => self.execute(command, kingpin, now),
                        None => Err(ControlError::Unsupported),
                    };
                    self.push(id, ControlKind::Reply as u8, &ControlReply { id: request, result });
                }
                (_, _) => {
                    return self.close(id, CloseReason::Protocol("frame kind not accepted on a control connection"));
                }
            }
        }
    }

    fn on_hello(&mut self, id: ControlId, hello: ControlHello, kingpin: &Kingpin) {
        if hello.magic != MAGIC {
            return self.close(id, CloseReason::BadMagic);
        }
        if hello.version != PROTOCOL_VERSION {
            let ours = PROTOCOL_VERSION;
            let reason = format!("client speaks protocol {}, kingpin speaks {ours}", hello.version);
            self.push(id, REJECT_KIND, &Reject { version: ours, reason });
            return self.close(id, CloseReason::VersionMismatch { ours, theirs: hello.version });
        }
        let welcome = ControlWelcome { version: PROTOCOL_VERSION, app: kingpin.config().app.clone(), pid: self.pid };
        if let Some(conn) = self.conns.get_mut(&id.0) {
            conn.phase = Phase::Open;
            conn.client = hello.client;
        }
        self.push(id, ControlKind::Welcome as u8, &welcome);
    }

    /// Carries out one command on the kingpin.
    fn execute(
        &mut self,
        command: ControlCommand,
        kingpin: &mut Kingpin,
        now: Instant,
    ) -> Result<ControlAnswer, ControlError> {
        match command {
            ControlCommand::Status => Ok(ControlAnswer::Status(self.status(kingpin, now))),
            ControlCommand::Resize { role, workers } => {
                kingpin.may_change(&role)?;
                let workers = kingpin.resize(&role, workers, now).ok_or(ControlError::UnknownRole(role))?;
                Ok(ControlAnswer::Resized { workers })
            }
            ControlCommand::Reload { role } => {
                kingpin.may_change(&role)?;
                if !kingpin.reload(&role, now) {
                    return Err(ControlError::AlreadyReloading(role));
                }
                Ok(ControlAnswer::Reloading)
            }
            ControlCommand::Stop => {
                kingpin.shutdown(false, now);
                Ok(ControlAnswer::Stopping)
            }
            ControlCommand::Kill => {
                kingpin.shutdown(true, now);
                Ok(ControlAnswer::Killing)
            }
        }
    }

    /// The status table, from the kingpin's state at `now`.
    pub fn status(&self, kingpin: &Kingpin, now: Instant) -> StatusReport {
        let roles = kingpin
            .roles
            .iter()
            .map(|r| RoleStatus {
                name: r.name.to_string(),
                workers: r.spec.workers,
                failed: r.failed,
                reloading: r.reloading.is_some(),
            })
            .collect();
        let workers = kingpin
            .health(now)
            .into_iter()
            .map(|h| WorkerStatus {
                role: h.role.to_string(),
                slot: h.slot,
                pid: h.pid,
                state: h.state,
                uptime_ms: millis(h.uptime),
                restarts: h.restarts,
                rss_kib: h.rss_kib,
                in_flight: h.in_flight,
            })
            .collect();
        StatusReport {
            app: kingpin.config().app.clone(),
            pid: self.pid,
            uptime_ms: millis(now.saturating_duration_since(self.started)),
            shutting_down: kingpin.is_shutting_down(),
            roles,
            workers,
        }
    }

    /// Queues a frame on `id`; a client that leaves too much unread is
    /// closed.
    fn push<M: Serialize>(&mut self, id: ControlId, kind: u8, message: &M) {
        let Some(conn) = self.conns.get_mut(&id.0) else { return };
        match encode_frame(kind, message, &[], 0, DEFAULT_MAX_BODY) {
            Ok(frame) => conn.out.extend_from_slice(&frame),
            Err(_) => return self.close(id, CloseReason::Protocol("reply does not fit the frame size limit")),
        }
        if conn.out.len() - conn.head > MAX_CONTROL_QUEUED {
            return self.close(id, CloseReason::Protocol("too many replies left unread"));
        }
        self.outputs.push_back(ControlOutput::Transmit(id));
    }

    fn close(&mut self, id: ControlId, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(&id.0) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        self.outputs.push_back(ControlOutput::Close(id, reason));
    }
}

fn malformed(kind: u8) -> CloseReason {
    CloseReason::Decode(crate::frame::DecodeError::Malformed { kind, reason: "body does not parse" })
}

impl Kingpin {
    /// Whether a control client may resize or reload `role` now.
    fn may_change(&self, role: &str) -> Result<(), ControlError> {
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        match self.roles.iter().find(|r| &*r.name == role) {
            None => Err(ControlError::UnknownRole(role.into())),
            Some(r) if r.failed => Err(ControlError::RoleFailed(role.into())),
            Some(_) => Ok(()),
        }
    }
}
