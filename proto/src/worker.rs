//! The worker's side of a link: handshake, then messages, requests, replies
//! and callbacks both ways.

use crate::error::{CloseReason, RespondError, SendError};
use crate::fd::FdHandle;
use crate::frame::{DEFAULT_MAX_BODY, Decoder, OutBuf, RawFrame, Transmit};
use crate::hot::{self, LastDeliver};
use crate::id_map::IdMap;
use crate::requester::{LateCounts, RequestError, Requester, millis};
use crate::text::{Interner, Text};
use crate::time::Instant;
use crate::wire::{
    self, Call, Cancel, Deliver, Failure, Fatal, Hello, Invoke, Kind, Message, Release, Reply, Request, Scale, Send,
    Source, Status, Stop, Target, Welcome,
};
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use bytes::{Buf, Bytes};
use core::time::Duration;

/// Default request timeout before the kingpin's [`Welcome`] says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Who this worker is, for its [`Hello`].
#[derive(Clone, Debug, Default)]
pub struct WorkerConfig {
    /// This process's id.
    pub pid: u32,
    /// The role the kingpin started it for.
    pub role: String,
    /// Its slot within the role.
    pub slot: u32,
    /// Functions it exports to `require` proxies.
    pub exports: Vec<String>,
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
        ns: Text,
        /// Its name.
        name: Text,
        /// The application payload.
        payload: Bytes,
        /// fds that came with it; the application owns them now.
        fds: Vec<FdHandle>,
    },
    /// A request arrived: answer it with [`Worker::respond`], exactly once.
    Request {
        /// The call's id, for [`Worker::respond`] and [`Worker::invoke`].
        call: u64,
        /// Who asked.
        from: Source,
        /// Its namespace.
        ns: Text,
        /// Its name.
        name: Text,
        /// The application payload.
        payload: Bytes,
        /// fds that came with it.
        fds: Vec<FdHandle>,
        /// Callbacks the handler may invoke, once each.
        callbacks: Vec<u64>,
    },
    /// The requester of a call gave up: stop working on it. Answering it now
    /// is [`RespondError::NotPending`].
    Cancelled {
        /// The call's id.
        call: u64,
    },
    /// The kingpin asks this worker to finish what it is doing, clean up and
    /// exit within `grace` (after which it is killed).
    Stop {
        /// Time left before the kill.
        grace: Duration,
    },
    /// One of our requests ended.
    Reply {
        /// The request's id, as [`Worker::request`] returned it.
        id: u64,
        /// The reply's payload and fds, or why there is none.
        result: Result<(Bytes, Vec<FdHandle>), RequestError>,
    },
    /// A callback we passed with a request was invoked (it is released now).
    Callback {
        /// The callback's id.
        callback: u64,
        /// The invocation's payload.
        payload: Bytes,
        /// fds that came with it.
        fds: Vec<FdHandle>,
    },
    /// A callback will never be invoked: its request's timeout passed, or
    /// its handler is gone.
    CallbackReleased {
        /// The callback's id.
        callback: u64,
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

/// What handling one buffered frame gave.
enum Step {
    /// An output for the runtime, not queued.
    Out(WorkerOutput),
    /// Outputs (maybe none) were queued.
    Queued,
    /// No complete frame is buffered, or the link is closed.
    Idle,
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
/// - getters ([`Worker::is_running`], [`Worker::welcome`],
///   [`Worker::poll_timeout`]);
/// - `handle_*`: input from the link and the clock ([`Worker::handle_read`],
///   [`Worker::handle_eof`], [`Worker::handle_transmitted`],
///   [`Worker::handle_timeout`]);
/// - mutators from the application ([`Worker::send`], [`Worker::request`],
///   [`Worker::respond`], [`Worker::invoke`], [`Worker::cancel`]);
/// - `poll_*`: output ([`Worker::poll_output`], [`Worker::poll_transmit`]).
///
/// After any `handle_*` or mutator call, drain `poll_output` until `None`,
/// then write what `poll_transmit` offers until it is empty or the socket
/// would block, and wake for [`Worker::poll_timeout`].
///
/// ```
/// use mob_proto::{Worker, WorkerConfig, WorkerOutput};
///
/// let mut w = Worker::new(WorkerConfig { pid: 42, role: "back".into(), ..Default::default() });
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
    requests: Requester,
    /// Calls we were given and have not answered.
    incoming: IdMap<()>,
    /// What this worker last said of its readiness.
    ready: bool,
    /// Names of incoming messages, shared.
    names: Interner,
    /// The last delivery's metadata, for the next one of the same kind.
    last_deliver: LastDeliver,
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
            requests: Requester::new(DEFAULT_REQUEST_TIMEOUT),
            incoming: IdMap::new(),
            ready: true,
            names: Interner::new(),
            last_deliver: LastDeliver::new(),
            config,
        };
        let hello = Hello {
            magic: wire::MAGIC,
            version: wire::PROTOCOL_VERSION,
            pid: w.config.pid,
            role: w.config.role.clone(),
            slot: w.config.slot,
            exports: w.config.exports.clone(),
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

    /// Open requests, live callbacks, and unanswered calls.
    pub fn pending(&self) -> (usize, usize, usize) {
        let (requests, callbacks) = self.requests.counts();
        (requests, callbacks, self.incoming.len())
    }

    /// Calls received and not yet answered (load-process-manager's
    /// `requests()`), in id order.
    pub fn open_calls(&self) -> impl Iterator<Item = u64> + use<> {
        let mut calls: Vec<u64> = self.incoming.iter().map(|(id, _)| id).collect();
        calls.sort_unstable();
        calls.into_iter()
    }

    /// Late replies and invocations dropped so far.
    pub fn late_counts(&self) -> LateCounts {
        self.requests.late
    }

    /// The earliest instant at which [`Worker::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.requests.next_deadline()
    }

    /// Feeds what one read returned: bytes, and the fds that came with them.
    pub fn handle_read(&mut self, bytes: &[u8], fds: Vec<FdHandle>) {
        if self.state == State::Closed {
            self.release(fds);
            return;
        }
        self.dec.handle_read(bytes, fds);
        // The handshake is answered at once; once running, frames are
        // decoded one at a time as `poll_output` asks for them, so a busy
        // read's events are not queued twice.
        if self.state == State::Handshaking {
            self.process(true);
        }
    }

    /// The kingpin closed the link.
    pub fn handle_eof(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.dec.handle_eof();
        self.process(false);
        self.close(CloseReason::Eof);
    }

    /// The runtime could not read or write the link (`what` says why).
    pub fn handle_link_error(&mut self, what: &'static str) {
        self.close(CloseReason::Transport(what));
    }

    /// Ends requests whose timeout has passed and releases their callbacks.
    /// Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.requests.expire(now);
        for id in expired.requests {
            self.event(WorkerEvent::Reply { id, result: Err(RequestError::TimedOut) });
        }
        for callback in expired.callbacks {
            self.event(WorkerEvent::CallbackReleased { callback });
        }
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
    #[inline]
    pub fn poll_output(&mut self) -> Option<WorkerOutput> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return Some(out);
            }
            match self.step() {
                Step::Out(out) => return Some(out),
                Step::Queued => {}
                Step::Idle => return None,
            }
        }
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
        let meta = Send { to, ns, name };
        self.push(Kind::Send, &meta, payload, fds)
    }

    /// Sends a request; its end comes back as exactly one
    /// [`WorkerEvent::Reply`] with the returned id. `timeout` (default: the
    /// kingpin's setting) starts now, even while the request waits in a queue.
    /// `callbacks` callback ids are allocated and returned; each ends in
    /// exactly one [`WorkerEvent::Callback`] or
    /// [`WorkerEvent::CallbackReleased`].
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
        timeout: Option<Duration>,
        callbacks: usize,
        now: Instant,
    ) -> Result<(u64, Vec<u64>), SendError> {
        if callbacks > wire::MAX_CALLBACKS {
            self.release(fds);
            return Err(SendError::Encode(crate::frame::EncodeError::TooManyCallbacks { count: callbacks }));
        }
        let (id, deadline, cbs) = self.requests.open(now, timeout, callbacks);
        let timeout_ms = millis(deadline.saturating_duration_since(now));
        let meta = Request { id, to, ns, name, timeout_ms, callbacks: &cbs[..] };
        match self.push(Kind::Request, &meta, payload, fds) {
            Ok(()) => Ok((id, cbs)),
            Err(e) => {
                self.requests.close(id, false);
                self.requests.release_callbacks(id);
                Err(e)
            }
        }
    }

    /// Ends our request `id` now as [`RequestError::Cancelled`] and releases
    /// its callbacks ([`WorkerEvent::CallbackReleased`]); a reply or an
    /// invocation that comes later is dropped. False if it had already ended.
    pub fn cancel(&mut self, id: u64) -> bool {
        if !self.requests.close(id, false) {
            return false;
        }
        self.event(WorkerEvent::Reply { id, result: Err(RequestError::Cancelled) });
        for callback in self.requests.release_callbacks(id) {
            self.event(WorkerEvent::CallbackReleased { callback });
        }
        true
    }

    /// Answers call `call`: `Ok(())` with `payload` and `fds`, or a failure.
    /// A second answer, or an answer to a cancelled call, is
    /// [`RespondError::NotPending`] (and its fds are released).
    pub fn respond(
        &mut self,
        call: u64,
        result: Result<(), Failure>,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), RespondError> {
        if self.incoming.remove(call).is_none() {
            self.release(fds);
            return Err(RespondError::NotPending);
        }
        let meta = Reply { id: call, result };
        self.push(Kind::Reply, &meta, payload, fds).map_err(RespondError::Send)
    }

    /// Says whether this worker takes new work (load-process-manager's
    /// `ready()` / `busy()`), with its current memory figure.
    pub fn set_ready(&mut self, ready: bool, rss_kib: u64) -> Result<(), SendError> {
        self.ready = ready;
        self.report_health(rss_kib)
    }

    /// Reports this worker's memory and load to the kingpin (`health()`).
    pub fn report_health(&mut self, rss_kib: u64) -> Result<(), SendError> {
        let status = Status { ready: self.ready, in_flight: self.incoming.len() as u32, rss_kib };
        self.push(Kind::Status, &status, &[], Vec::new())
    }

    /// Tells the kingpin why this process is about to die (a panic hook's
    /// message); the runtime should write it out before the process ends.
    pub fn fatal(&mut self, message: &str) -> Result<(), SendError> {
        self.push(Kind::Fatal, &Fatal { message: message.to_string() }, &[], Vec::new())
    }

    /// Asks the kingpin to resize this worker's role to `workers` (within the
    /// role's min and max).
    pub fn scale(&mut self, workers: u32) -> Result<(), SendError> {
        self.push(Kind::Scale, &Scale { workers }, &[], Vec::new())
    }

    /// Invokes callback `callback` of call `call`. Invoking a callback twice,
    /// or after its requester gave up, is dropped at the requester.
    pub fn invoke(&mut self, call: u64, callback: u64, payload: &[u8], fds: Vec<FdHandle>) -> Result<(), SendError> {
        self.push(Kind::Invoke, &Invoke { call, callback }, payload, fds)
    }

    fn push<M: serde::Serialize>(
        &mut self,
        kind: Kind,
        meta: &M,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        if self.state == State::Closed {
            self.release(fds);
            return Err(SendError::Closed);
        }
        let was_empty = self.out.is_empty();
        match self.out.push(kind as u8, meta, payload, fds) {
            Ok(()) => {
                if was_empty {
                    self.outputs.push_back(WorkerOutput::Transmit);
                }
                Ok(())
            }
            Err((e, fds)) => {
                self.release(fds);
                Err(e.into())
            }
        }
    }

    /// Handles every buffered frame (with `handshake`, only while the
    /// handshake lasts), queueing their outputs.
    fn process(&mut self, handshake: bool) {
        while !handshake || self.state == State::Handshaking {
            match self.step() {
                Step::Out(out) => self.outputs.push_back(out),
                Step::Queued => {}
                Step::Idle => return,
            }
        }
    }

    /// Handles the next buffered frame: its output straight back when it is
    /// a frame of the fast path, else queued.
    #[inline]
    fn step(&mut self) -> Step {
        if self.state == State::Closed {
            return Step::Idle;
        }
        let frame = match self.dec.decode() {
            Ok(Some(f)) => f,
            Ok(None) => return Step::Idle,
            Err(e) => {
                self.close(CloseReason::Decode(e));
                return Step::Queued;
            }
        };
        let frame = match self.fast_path(frame) {
            Ok(out) => return Step::Out(out),
            Err(frame) => frame,
        };
        match Message::parse(frame.kind, &frame.body, frame.fds) {
            Ok(msg) => self.on_message(msg),
            Err((e, fds)) => {
                self.release(fds);
                self.close(CloseReason::Decode(e));
            }
        }
        Step::Queued
    }

    /// The frames a busy worker gets most (deliveries and calls), decoded
    /// by hand and their names interned straight from the bytes. Anything
    /// else, or anything unusual, goes back for [`Message::parse`].
    #[inline]
    fn fast_path(&mut self, frame: RawFrame) -> Result<WorkerOutput, RawFrame> {
        if self.state != State::Running {
            return Err(frame);
        }
        if frame.kind == Kind::Deliver as u8 {
            let (from, ns, name, at) = match self.last_deliver.get(&frame.body) {
                Some(known) => known,
                None => {
                    let Some(d) = hot::deliver(&frame.body) else { return Err(frame) };
                    let (Some(ns), Some(name)) = (self.names.intern_bytes(d.ns), self.names.intern_bytes(d.name))
                    else {
                        return Err(frame);
                    };
                    self.last_deliver.set(&frame.body, d.payload_at, d.from.clone(), &ns, &name);
                    (d.from, ns, name, d.payload_at)
                }
            };
            let RawFrame { mut body, fds, .. } = frame;
            body.advance(at); // the payload: the same bytes, no new reference
            return Ok(WorkerOutput::Event(WorkerEvent::Message { from, ns, name, payload: body, fds }));
        }
        if frame.kind == Kind::Call as u8 {
            let Some(c) = hot::call(&frame.body) else { return Err(frame) };
            let (Some(ns), Some(name)) = (self.names.intern_bytes(c.ns), self.names.intern_bytes(c.name)) else {
                return Err(frame);
            };
            let (call, from, callbacks, at) = (c.id, c.from, c.callbacks, c.payload_at);
            let RawFrame { body: mut payload, fds, .. } = frame;
            payload.advance(at);
            self.incoming.insert(call, ());
            return Ok(WorkerOutput::Event(WorkerEvent::Request { call, from, ns, name, payload, fds, callbacks }));
        }
        Err(frame)
    }

    fn on_message(&mut self, msg: Message<&str>) {
        match (self.state, msg) {
            (State::Handshaking, Message::Welcome(w)) => {
                if w.version != wire::PROTOCOL_VERSION {
                    return self
                        .close(CloseReason::VersionMismatch { ours: wire::PROTOCOL_VERSION, theirs: w.version });
                }
                self.dec.set_max_body(w.settings.max_body);
                self.out.set_max_body(w.settings.max_body);
                self.requests.default_timeout = Duration::from_millis(w.settings.request_timeout_ms);
                self.ready = w.settings.starts_ready;
                self.state = State::Running;
                self.welcome = Some(w.clone());
                self.event(WorkerEvent::Welcome(w));
            }
            (State::Handshaking, Message::Reject(r)) => {
                self.close(CloseReason::Rejected { kingpin_version: r.version, reason: r.reason });
            }
            (State::Running, Message::Deliver(Deliver { from, ns, name }, payload, fds)) => {
                let (ns, name) = (self.names.intern(ns), self.names.intern(name));
                self.event(WorkerEvent::Message { from, ns, name, payload, fds });
            }
            (State::Running, Message::Call(Call { id, from, ns, name, callbacks, .. }, payload, fds)) => {
                self.incoming.insert(id, ());
                let (ns, name) = (self.names.intern(ns), self.names.intern(name));
                self.event(WorkerEvent::Request { call: id, from, ns, name, payload, fds, callbacks });
            }
            (State::Running, Message::Cancel(Cancel { id })) => {
                if self.incoming.remove(id).is_some() {
                    self.event(WorkerEvent::Cancelled { call: id });
                }
            }
            (State::Running, Message::Reply(Reply { id, result }, payload, fds)) => {
                if !self.requests.close(id, true) {
                    return self.release(fds);
                }
                let result = match result {
                    Ok(()) => Ok((payload, fds)),
                    Err(f) => {
                        self.release(fds);
                        Err(RequestError::from(f))
                    }
                };
                self.event(WorkerEvent::Reply { id, result });
            }
            (State::Running, Message::Invoke(Invoke { call, callback }, payload, fds)) => {
                if self.requests.invoke(call, callback) {
                    self.event(WorkerEvent::Callback { callback, payload, fds });
                } else {
                    self.release(fds);
                }
            }
            (State::Running, Message::Ping(ping)) => {
                self.push(Kind::Pong, &ping, &[], Vec::new()).ok();
            }
            (State::Running, Message::Stop(Stop { grace_ms })) => {
                self.event(WorkerEvent::Stop { grace: Duration::from_millis(grace_ms) });
            }
            (State::Running, Message::Release(Release { call })) => {
                for callback in self.requests.release_callbacks(call) {
                    self.event(WorkerEvent::CallbackReleased { callback });
                }
            }
            (_, msg) => {
                self.release(msg.into_fds());
                self.close(CloseReason::Protocol("unexpected frame for this state"));
            }
        }
    }

    fn event(&mut self, e: WorkerEvent) {
        self.outputs.push_back(WorkerOutput::Event(e));
    }

    fn release(&mut self, fds: Vec<FdHandle>) {
        self.outputs.extend(fds.into_iter().map(WorkerOutput::ReleaseFd));
    }

    fn close(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let leftover: Vec<FdHandle> = self.dec.drain_fds().chain(self.out.clear()).collect();
        self.release(leftover);
        let ended = self.requests.fail_all();
        for id in ended.requests {
            self.event(WorkerEvent::Reply { id, result: Err(RequestError::PeerGone) });
        }
        for callback in ended.callbacks {
            self.event(WorkerEvent::CallbackReleased { callback });
        }
        self.incoming.take_all().for_each(drop);
        self.outputs.push_back(WorkerOutput::Closed(reason));
    }
}
