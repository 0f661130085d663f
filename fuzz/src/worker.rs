//! Target `worker`: a `Worker` fed what its link might deliver, and driven by
//! its application.
//!
//! The worker is `back#0` with pid [`PID`]. Input: operations, each followed by
//! draining `poll_output`. "Frame" operations feed one well-formed frame as
//! the kingpin would write it, with its handles on its first byte.
//!
//! | tag % 21 | operation | fields |
//! |---|---|---|
//! | 0 | `handle_read(bytes, n fresh handles)` | fd count ([`fd_count`]), bytes |
//! | 1 | Welcome frame (a real kingpin's, see [`crate::real_welcome`]) | variant (bit 0: wrong version), body limit (`% 4`: default, 0, 32, 1024) |
//! | 2 | Deliver frame, n handles (≤ 32) | fd count, sender (bit 0: a worker), name, payload |
//! | 3 | Reject frame | reason |
//! | 4 | `handle_transmitted(n)`, n ≤ what `poll_transmit` offers | `u16`: `n % (offered + 1)`, 0xffff: all |
//! | 5 | `send(target, n fresh handles)` | target ([`crate::target`]), fd count, payload |
//! | 6 | `handle_eof()` | |
//! | 7 | `handle_link_error()` | |
//! | 8 | Call frame | fd count, call id, callbacks (`% 4`, ids 1..), payload |
//! | 9 | Reply frame | fd count, request id, result ([`crate::result`]), payload |
//! | 10 | Cancel frame | call id |
//! | 11 | Invoke frame | fd count, request id, callback id, payload |
//! | 12 | Release frame | request id |
//! | 13 | `request(target, n fresh handles, timeout, callbacks)` | target, fd count, timeout (0: default, else [`crate::timeout_ms`]), callbacks (`% 4`), payload |
//! | 14 | `respond(call, result, n fresh handles)` | call (< 0x80: an open call, else the byte), result, fd count, payload |
//! | 15 | `invoke(call, callback, n fresh handles)` | call, callback, fd count, payload |
//! | 16 | `cancel(id)` | request id |
//! | 17 | `handle_timeout(now)`, the clock moved on | step: 0 = to `poll_timeout()`, else step × 100 ms |
//! | 18 | Ping frame | seq |
//! | 19 | Stop frame | grace (× 100 ms) |
//! | 20 | `set_ready` / `report_health` / `fatal` / `scale` (`sel % 4`) | sel, value |
//!
//! At the end `handle_eof()`.
//!
//! Checked: no panic; every handle comes back exactly once (in an event, as
//! ReleaseFd, or from `handle_transmitted`, which returns exactly the handles
//! `poll_transmit` showed); every request ends in exactly one Reply event and
//! every callback in exactly one Callback or CallbackReleased, all of them by
//! the end; Welcome at most once, Message/Request/Callback/Stop only after it;
//! once Closed, only ReleaseFd outputs, `is_closed()`, nothing to transmit;
//! after `handle_timeout(now)`, `poll_timeout()` is later than `now`; what it
//! writes decodes as Hello then Send/Request/Reply/Invoke/Status/Pong/
//! Fatal/Scale.

use crate::input::{Input, Writer, fd_byte, fd_count};
use crate::{Ledger, PushFrame, Requests, Side, StreamCheck, peer_frame};
use core::time::Duration;
use mob_proto::frame::DEFAULT_MAX_BODY;
use mob_proto::wire::{self, Call, Cancel, Deliver, Invoke, Kind, Reject, Release, Reply, Source};
use mob_proto::{Instant, Worker, WorkerConfig, WorkerEvent, WorkerOutput};

/// The worker's pid.
pub const PID: u32 = 1000;

/// Operations of this target (for seeds).
pub enum Op<'a> {
    /// Raw bytes from the kingpin, with `fds` handles.
    Read { fds: usize, bytes: &'a [u8] },
    /// A Welcome frame.
    Welcome { bad_version: bool, max_body: u8 },
    /// A Deliver frame with `fds` handles.
    Deliver { fds: usize, from_worker: bool, name: &'a [u8], payload: &'a [u8] },
    /// A Reject frame.
    Reject { reason: &'a [u8] },
    /// Write `n` bytes (0xffff: all that is offered).
    Transmit { n: u16 },
    /// The application sends.
    Send { target: u8, fds: usize, payload: &'a [u8] },
    /// End of stream.
    Eof,
    /// Transport error.
    LinkError,
    /// A Call frame.
    Call { fds: usize, id: u8, callbacks: u8, payload: &'a [u8] },
    /// A Reply frame.
    Reply { fds: usize, id: u8, result: u8, payload: &'a [u8] },
    /// A Cancel frame.
    Cancel { id: u8 },
    /// An Invoke frame.
    Invoke { fds: usize, call: u8, callback: u8, payload: &'a [u8] },
    /// A Release frame.
    Release { call: u8 },
    /// The application requests.
    Request { target: u8, fds: usize, timeout: u8, callbacks: u8, payload: &'a [u8] },
    /// The application answers a call.
    Respond { call: u8, result: u8, fds: usize, payload: &'a [u8] },
    /// The application invokes a callback.
    AppInvoke { call: u8, callback: u8, fds: usize, payload: &'a [u8] },
    /// The application cancels a request.
    AppCancel { id: u8 },
    /// Time passes.
    Timeout { step: u8 },
    /// A Ping frame.
    Ping { seq: u8 },
    /// A Stop frame.
    Stop { grace: u8 },
    /// The application reports: `sel % 4` = set_ready, report_health,
    /// fatal, scale.
    Status { sel: u8, value: u8 },
}

impl Op<'_> {
    /// Appends this operation to a seed.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::Read { fds, bytes } => w.u8(0).u8(fd_byte(fds)).bytes(bytes),
            Op::Welcome { bad_version, max_body } => w.u8(1).u8(u8::from(bad_version)).u8(max_body),
            Op::Deliver { fds, from_worker, name, payload } => {
                w.u8(2).u8(fd_byte(fds)).u8(u8::from(from_worker)).bytes(name).bytes(payload)
            }
            Op::Reject { reason } => w.u8(3).bytes(reason),
            Op::Transmit { n } => w.u8(4).u16(n),
            Op::Send { target, fds, payload } => w.u8(5).u8(target).u8(fd_byte(fds)).bytes(payload),
            Op::Eof => w.u8(6),
            Op::LinkError => w.u8(7),
            Op::Call { fds, id, callbacks, payload } => w.u8(8).u8(fd_byte(fds)).u8(id).u8(callbacks).bytes(payload),
            Op::Reply { fds, id, result, payload } => w.u8(9).u8(fd_byte(fds)).u8(id).u8(result).bytes(payload),
            Op::Cancel { id } => w.u8(10).u8(id),
            Op::Invoke { fds, call, callback, payload } => {
                w.u8(11).u8(fd_byte(fds)).u8(call).u8(callback).bytes(payload)
            }
            Op::Release { call } => w.u8(12).u8(call),
            Op::Request { target, fds, timeout, callbacks, payload } => {
                w.u8(13).u8(target).u8(fd_byte(fds)).u8(timeout).u8(callbacks).bytes(payload)
            }
            Op::Respond { call, result, fds, payload } => w.u8(14).u8(call).u8(result).u8(fd_byte(fds)).bytes(payload),
            Op::AppInvoke { call, callback, fds, payload } => {
                w.u8(15).u8(call).u8(callback).u8(fd_byte(fds)).bytes(payload)
            }
            Op::AppCancel { id } => w.u8(16).u8(id),
            Op::Timeout { step } => w.u8(17).u8(step),
            Op::Ping { seq } => w.u8(18).u8(seq),
            Op::Stop { grace } => w.u8(19).u8(grace),
            Op::Status { sel, value } => w.u8(20).u8(sel).u8(value),
        };
    }
}

struct State {
    w: Worker,
    ledger: Ledger,
    now: Instant,
    closed: bool,
    welcomed: bool,
    requests: Requests,
    check: StreamCheck,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut s = State {
        w: Worker::new(WorkerConfig { pid: PID, role: "back".into(), slot: 0, exports: vec!["f".into()] }),
        ledger: Ledger::new(),
        now: Instant::ZERO,
        closed: false,
        welcomed: false,
        requests: Requests::default(),
        check: StreamCheck::new(Side::Worker),
    };
    s.drain();
    while let Some(tag) = input.tag() {
        s.ledger.op += 1;
        if crate::tracing() {
            eprintln!("op {}: tag {} ({})", s.ledger.op, tag, tag % 21);
        }
        match tag % 21 {
            0 => {
                let fds = s.ledger.mint(fd_count(input.u8()));
                let bytes = input.bytes();
                s.w.handle_read(bytes, fds);
            }
            1 => {
                let variant = input.u8();
                let max_body = match input.u8() % 4 {
                    0 => DEFAULT_MAX_BODY,
                    1 => 0,
                    2 => 32,
                    _ => 1024,
                };
                let mut welcome = crate::real_welcome().clone();
                welcome.version = wire::PROTOCOL_VERSION + u16::from(variant & 1);
                welcome.worker = 7;
                welcome.settings.max_body = max_body;
                s.frame(Kind::Welcome, &welcome, &[], 0);
            }
            2 => {
                let n = fd_count(input.u8());
                let from = if input.u8() & 1 == 1 { Source::Worker { id: 3, pid: 1001 } } else { Source::Kingpin };
                let name = String::from_utf8_lossy(input.bytes()).into_owned();
                let payload = input.bytes();
                let meta = Deliver { from, ns: wire::DEFAULT_NAMESPACE.into(), name };
                s.frame(Kind::Deliver, &meta, payload, n);
            }
            3 => {
                let reason = String::from_utf8_lossy(input.bytes()).into_owned();
                s.frame(Kind::Reject, &Reject { version: wire::PROTOCOL_VERSION, reason }, &[], 0);
            }
            4 => {
                let n = input.u16();
                s.transmit(n);
            }
            5 => {
                let to = crate::target(input.u8(), &[1001]);
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let r = s.w.send(to, "_", "m", payload, fds);
                assert!(!(s.closed && r.is_ok()), "send on a closed worker succeeded");
            }
            6 => s.w.handle_eof(),
            7 => s.w.handle_link_error("fuzz"),
            8 => {
                let n = fd_count(input.u8());
                let id = u64::from(input.u8());
                let callbacks = (1..=u64::from(input.u8() % 4)).collect();
                let payload = input.bytes();
                let meta = Call {
                    id,
                    from: Source::Kingpin,
                    ns: wire::RPC_NAMESPACE.into(),
                    name: "f".into(),
                    timeout_ms: 1000,
                    callbacks,
                };
                s.frame(Kind::Call, &meta, payload, n);
            }
            9 => {
                let n = fd_count(input.u8());
                let id = u64::from(input.u8());
                let result = crate::result(input.u8());
                let payload = input.bytes();
                s.frame(Kind::Reply, &Reply { id, result }, payload, n);
            }
            10 => {
                let id = u64::from(input.u8());
                s.frame(Kind::Cancel, &Cancel { id }, &[], 0);
            }
            11 => {
                let n = fd_count(input.u8());
                let call = u64::from(input.u8());
                let callback = u64::from(input.u8());
                let payload = input.bytes();
                s.frame(Kind::Invoke, &Invoke { call, callback }, payload, n);
            }
            12 => {
                let call = u64::from(input.u8());
                s.frame(Kind::Release, &Release { call }, &[], 0);
            }
            13 => {
                let to = crate::target(input.u8(), &[1001]);
                let fds = s.ledger.mint(fd_count(input.u8()));
                let timeout = match input.u8() {
                    0 => None,
                    t => Some(Duration::from_millis(crate::timeout_ms(t))),
                };
                let callbacks = usize::from(input.u8() % 4);
                let payload = input.bytes();
                if let Ok((id, cbs)) = s.w.request(to, "_", "m", payload, fds, timeout, callbacks, s.now) {
                    assert!(!s.closed, "request on a closed worker succeeded");
                    assert_eq!(cbs.len(), callbacks);
                    s.requests.opened(id, &cbs);
                }
            }
            14 => {
                let sel = input.u8();
                let result = crate::result(input.u8());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let open: Vec<u64> = s.w.open_calls().collect();
                let call =
                    if sel < 0x80 && !open.is_empty() { open[usize::from(sel) % open.len()] } else { u64::from(sel) };
                let r = s.w.respond(call, result, payload, fds);
                assert!(!(s.closed && r.is_ok()), "respond on a closed worker succeeded");
                assert!(!s.w.open_calls().any(|c| c == call), "call {call} still open after respond");
            }
            15 => {
                let call = u64::from(input.u8());
                let callback = u64::from(input.u8());
                let fds = s.ledger.mint(fd_count(input.u8()));
                let payload = input.bytes();
                let r = s.w.invoke(call, callback, payload, fds);
                assert!(!(s.closed && r.is_ok()), "invoke on a closed worker succeeded");
            }
            16 => {
                let id = u64::from(input.u8());
                let was_open = s.requests.is_open(id);
                assert_eq!(s.w.cancel(id), was_open, "cancel({id}) disagrees with what is open");
            }
            18 => {
                let seq = u64::from(input.u8());
                s.frame(Kind::Ping, &wire::Ping { seq }, &[], 0);
            }
            19 => {
                let grace_ms = 100 * u64::from(input.u8());
                s.frame(Kind::Stop, &wire::Stop { grace_ms }, &[], 0);
            }
            20 => {
                let sel = input.u8();
                let value = input.u8();
                let r = match sel % 4 {
                    0 => s.w.set_ready(value & 1 == 1, u64::from(value)),
                    1 => s.w.report_health(u64::from(value)),
                    2 => s.w.fatal("boom"),
                    _ => s.w.scale(u32::from(value)),
                };
                assert!(!(s.closed && r.is_ok()), "a report on a closed worker succeeded");
            }
            _ => {
                let step = input.u8();
                if step == 0 {
                    if let Some(t) = s.w.poll_timeout() {
                        s.now = s.now.max(t);
                    }
                } else {
                    s.now = s.now + Duration::from_millis(100 * u64::from(step));
                }
                s.w.handle_timeout(s.now);
                s.drain();
                if let Some(t) = s.w.poll_timeout() {
                    assert!(t > s.now, "poll_timeout() is {t:?} right after handle_timeout({:?})", s.now);
                }
            }
        }
        s.drain();
    }
    s.ledger.op += 1;
    s.w.handle_eof();
    s.drain();
    assert!(s.closed && s.w.is_closed(), "not closed after handle_eof");
    s.ledger.assert_all_back("worker, after handle_eof");
    s.requests.assert_all_ended("worker, after handle_eof");
    assert_eq!(s.w.pending(), (0, 0, 0), "worker.pending() after handle_eof");
}

impl State {
    /// Feeds one frame as the kingpin writes it, with `n` fresh handles (at
    /// most 32).
    fn frame<M>(&mut self, kind: Kind, meta: &M, payload: &[u8], n: usize)
    where
        M: PushFrame,
    {
        let fds = self.ledger.mint(n.min(32));
        let (bytes, fds) = peer_frame(kind, meta, payload, fds);
        self.w.handle_read(&bytes, fds);
    }

    fn transmit(&mut self, n: u16) {
        let Some(t) = self.w.poll_transmit() else { return };
        assert!(!t.bytes.is_empty(), "poll_transmit offers no bytes");
        let offered = t.bytes.len();
        let n = if n == u16::MAX { offered } else { usize::from(n) % (offered + 1) };
        let bytes = t.bytes[..n].to_vec();
        let shown = crate::raws(t.fds.iter());
        for raw in &shown {
            assert!(self.ledger.holds(*raw), "poll_transmit shows fd {raw:#x}, not outstanding");
        }
        let sent = self.w.handle_transmitted(n);
        if n == 0 {
            assert!(sent.is_empty(), "handle_transmitted(0) returned fds");
        } else {
            assert_eq!(crate::raws(&sent), shown, "handle_transmitted returned other fds than poll_transmit showed");
        }
        self.check.feed(&bytes, &sent);
        for h in sent {
            self.ledger.back(h, "handle_transmitted");
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.w.poll_output() {
            if crate::tracing() {
                eprintln!("  <- {out:?}");
            }
            if self.closed {
                assert!(matches!(out, WorkerOutput::ReleaseFd(_)), "{out:?} after Closed");
            }
            match out {
                WorkerOutput::ReleaseFd(h) => self.ledger.back(h, "ReleaseFd"),
                WorkerOutput::Transmit => {}
                WorkerOutput::Closed(_) => self.closed = true,
                WorkerOutput::Event(e) => match e {
                    WorkerEvent::Welcome(_) => {
                        assert!(!self.welcomed, "second Welcome event");
                        self.welcomed = true;
                    }
                    WorkerEvent::Message { fds, .. } => {
                        assert!(self.welcomed, "Message before Welcome");
                        self.back(fds, "Message event");
                    }
                    WorkerEvent::Request { fds, .. } => {
                        assert!(self.welcomed, "Request before Welcome");
                        self.back(fds, "Request event");
                    }
                    WorkerEvent::Cancelled { .. } => assert!(self.welcomed, "Cancelled before Welcome"),
                    WorkerEvent::Stop { .. } => assert!(self.welcomed, "Stop before Welcome"),
                    WorkerEvent::Reply { id, result } => {
                        self.requests.ended(id);
                        if let Ok((_, fds)) = result {
                            self.back(fds, "Reply event");
                        }
                    }
                    WorkerEvent::Callback { callback, fds, .. } => {
                        assert!(self.welcomed, "Callback before Welcome");
                        self.requests.callback_ended(callback);
                        self.back(fds, "Callback event");
                    }
                    WorkerEvent::CallbackReleased { callback } => self.requests.callback_ended(callback),
                },
            }
        }
        assert_eq!(self.w.is_closed(), self.closed, "is_closed() disagrees with the outputs");
        if self.closed {
            assert!(!self.w.is_running());
            assert!(self.w.poll_transmit().is_none(), "bytes to transmit after Closed");
            assert_eq!(self.w.pending(), (0, 0, 0), "pending() after Closed");
        } else {
            assert_eq!(self.w.is_running(), self.welcomed);
        }
    }

    fn back(&mut self, fds: Vec<mob_proto::FdHandle>, via: &str) {
        for h in fds {
            self.ledger.back(h, via);
        }
    }
}
