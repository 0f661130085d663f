//! The worker's side of a link: handshake, then messages both ways.

use crate::error::{CloseReason, SendError};
use crate::fd::FdHandle;
use crate::frame::{DEFAULT_MAX_BODY, Decoder, OutBuf, Transmit};
use crate::wire::{self, Deliver, Hello, Kind, Message, Send, Source, Target, Welcome};
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use bytes::Bytes;

/// Who this worker is, for its [`Hello`].
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This process's id.
    pub pid: u32,
    /// The role the kingpin started it for.
    pub role: String,
    /// Its slot within the role.
    pub slot: u32,
}

/// Something the worker's application must see.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The kingpin accepted us.
    Welcome(Welcome),
    /// A one-way message arrived.
    Message {
        /// Who sent it.
        from: Source,
        /// Its namespace.
        ns: String,
        /// Its name.
        name: String,
        /// The application payload.
        payload: Bytes,
        /// fds that came with it; the application owns them now.
        fds: Vec<FdHandle>,
    },
}

/// What the worker asks of its runtime.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkerOutput {
    /// There are bytes to write: drain [`Worker::poll_transmit`].
    Transmit,
    /// Hand this to the application.
    Event(WorkerEvent),
    /// Close the runtime's copy of this fd: the message it rode with is gone.
    ReleaseFd(FdHandle),
    /// The link is closed: the worker should exit.
    Closed(CloseReason),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Handshaking,
    Running,
    Closed,
}

/// The worker-side protocol state machine (one per worker process).
///
/// Methods come in four kinds, as in quinn-proto:
/// - getters ([`Worker::is_running`], [`Worker::welcome`]);
/// - `handle_*`: input from the link ([`Worker::handle_read`],
///   [`Worker::handle_eof`], [`Worker::handle_transmitted`]);
/// - mutators from the application ([`Worker::send`]);
/// - `poll_*`: output ([`Worker::poll_output`], [`Worker::poll_transmit`]).
///
/// After any `handle_*` or mutator call, drain `poll_output` until `None`,
/// then write what `poll_transmit` offers until it is empty or the socket
/// would block.
///
/// ```
/// use mob_proto::{Worker, WorkerConfig, WorkerOutput};
///
/// let mut w = Worker::new(WorkerConfig { pid: 42, role: "back".into(), slot: 0 });
/// assert_eq!(w.poll_output(), Some(WorkerOutput::Transmit));
/// let hello = w.poll_transmit().unwrap().bytes.len();
/// w.handle_transmitted(hello);
/// assert!(w.poll_transmit().is_none());
/// ```
pub struct Worker {
    config: WorkerConfig,
    state: State,
    dec: Decoder,
    out: OutBuf,
    outputs: VecDeque<WorkerOutput>,
    welcome: Option<Welcome>,
}

impl Worker {
    /// A worker that has just queued its [`Hello`].
    pub fn new(config: WorkerConfig) -> Worker {
        let mut w = Worker {
            state: State::Handshaking,
            dec: Decoder::new(DEFAULT_MAX_BODY),
            out: OutBuf::new(DEFAULT_MAX_BODY),
            outputs: VecDeque::new(),
            welcome: None,
            config,
        };
        let hello = Hello {
            magic: wire::MAGIC,
            version: wire::PROTOCOL_VERSION,
            pid: w.config.pid,
            role: w.config.role.clone(),
            slot: w.config.slot,
        };
        w.push(Kind::Hello, &hello, &[], Vec::new()).ok();
        w
    }

    /// Whether the handshake is done and the link open.
    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Whether the link is closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The kingpin's welcome, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// This worker's configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Bytes queued for the kingpin and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Feeds what one read returned: bytes, and the fds that came with them.
    pub fn handle_read(&mut self, bytes: &[u8], fds: Vec<FdHandle>) {
        if self.state == State::Closed {
            self.outputs
                .extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
            return;
        }
        self.dec.handle_read(bytes, fds);
        self.process();
    }

    /// The kingpin closed the link.
    pub fn handle_eof(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.dec.handle_eof();
        self.process();
        if self.state != State::Closed {
            self.close(CloseReason::Eof);
        }
    }

    /// The runtime could not read or write the link (`what` says why).
    pub fn handle_link_error(&mut self, what: &'static str) {
        self.close(CloseReason::Transport(what));
    }

    /// What to write next.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.out.peek()
    }

    /// `n` bytes of the last [`Worker::poll_transmit`] were written; returns
    /// the fds that left with them, for the runtime to close.
    pub fn handle_transmitted(&mut self, n: usize) -> Vec<FdHandle> {
        self.out.advance(n)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<WorkerOutput> {
        self.outputs.pop_front()
    }

    /// Sends a one-way message. It may be called before the handshake ends:
    /// the message leaves after the [`Hello`].
    ///
    /// On error the fds are released (as [`WorkerOutput::ReleaseFd`]).
    pub fn send(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        if self.state == State::Closed {
            self.outputs
                .extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
            return Err(SendError::Closed);
        }
        let meta = Send {
            to,
            ns: ns.to_string(),
            name: name.to_string(),
        };
        self.push(Kind::Send, &meta, payload, fds)
    }

    fn push<M: serde::Serialize>(
        &mut self,
        kind: Kind,
        meta: &M,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        let was_empty = self.out.is_empty();
        match self.out.push(kind as u8, meta, payload, fds) {
            Ok(()) => {
                if was_empty {
                    self.outputs.push_back(WorkerOutput::Transmit);
                }
                Ok(())
            }
            Err((e, fds)) => {
                self.outputs
                    .extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
                Err(e.into())
            }
        }
    }

    fn process(&mut self) {
        while self.state != State::Closed {
            let frame = match self.dec.decode() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => return self.close(CloseReason::Decode(e)),
            };
            let msg = match Message::parse(frame) {
                Ok(m) => m,
                Err((e, fds)) => {
                    self.outputs
                        .extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
                    return self.close(CloseReason::Decode(e));
                }
            };
            self.on_message(msg);
        }
    }

    fn on_message(&mut self, msg: Message) {
        match (self.state, msg) {
            (State::Handshaking, Message::Welcome(w)) => {
                if w.version != wire::PROTOCOL_VERSION {
                    return self.close(CloseReason::VersionMismatch {
                        ours: wire::PROTOCOL_VERSION,
                        theirs: w.version,
                    });
                }
                self.dec.set_max_body(w.settings.max_body);
                self.out.set_max_body(w.settings.max_body);
                self.state = State::Running;
                self.welcome = Some(w.clone());
                self.outputs
                    .push_back(WorkerOutput::Event(WorkerEvent::Welcome(w)));
            }
            (State::Handshaking, Message::Reject(r)) => {
                self.close(CloseReason::Rejected {
                    kingpin_version: r.version,
                    reason: r.reason,
                });
            }
            (State::Running, Message::Deliver(Deliver { from, ns, name }, payload, fds)) => {
                let event = WorkerEvent::Message {
                    from,
                    ns,
                    name,
                    payload,
                    fds,
                };
                self.outputs.push_back(WorkerOutput::Event(event));
            }
            (_, Message::Send(_, _, fds) | Message::Deliver(_, _, fds)) => {
                self.outputs
                    .extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
                self.close(CloseReason::Protocol("unexpected frame for this state"));
            }
            (_, _) => self.close(CloseReason::Protocol("unexpected frame for this state")),
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let leftover: Vec<FdHandle> = self.dec.drain_fds().chain(self.out.clear()).collect();
        self.outputs
            .extend(leftover.into_iter().map(WorkerOutput::ReleaseFd));
        self.outputs.push_back(WorkerOutput::Closed(reason));
    }
}
