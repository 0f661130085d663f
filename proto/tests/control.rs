//! The control protocol's state machines: a `ControlClient` talking to a
//! `ControlServer` in front of a simulated kingpin with its workers.

mod common;

use common::Sim;
use mob_proto::control::{
    ClientEvent, ControlAnswer, ControlClient, ControlCommand, ControlError, ControlHello, ControlKind, StatusReport,
};
use mob_proto::frame::{Header, encode_frame};
use mob_proto::kingpin::{MAX_CONTROL_CONNECTIONS, TooManyConnections};
use mob_proto::wire::{MAGIC, PROTOCOL_VERSION};
use mob_proto::{CloseReason, ControlId, ControlOutput, ControlServer, KingpinConfig, WorkerState};
use std::collections::BTreeSet;

/// One control connection, both ends in memory.
struct Conn {
    client: ControlClient,
    id: ControlId,
    closed: Option<CloseReason>,
    events: Vec<ClientEvent>,
}

struct Ctl {
    server: ControlServer,
    logs: Vec<String>,
}

impl Ctl {
    fn new(sim: &Sim) -> Ctl {
        Ctl { server: ControlServer::new(4242, sim.now), logs: Vec::new() }
    }

    /// A connection, welcomed.
    fn connect(&mut self, sim: &mut Sim) -> Conn {
        let id = self.server.open().expect("room for a connection");
        let mut conn = Conn { client: ControlClient::new("test"), id, closed: None, events: Vec::new() };
        self.send_client(sim, &mut conn);
        match conn.events.remove(0) {
            ClientEvent::Welcome(w) => {
                assert_eq!((w.version, w.app.as_str(), w.pid), (PROTOCOL_VERSION, "ctl", 4242));
            }
            other => panic!("expected a welcome, got {other:?}"),
        }
        conn
    }

    /// Writes what the client queued to the server, and runs the server's
    /// outputs, feeding its bytes back to the client.
    fn send_client(&mut self, sim: &mut Sim, conn: &mut Conn) {
        let bytes = conn.client.take_transmit();
        self.feed(sim, conn, &bytes);
    }

    /// Feeds raw bytes to the server as if read from `conn`.
    fn feed(&mut self, sim: &mut Sim, conn: &mut Conn, bytes: &[u8]) {
        self.server.handle_read(conn.id, bytes, &mut sim.kingpin, sim.now);
        self.run(conn);
    }

    fn run(&mut self, conn: &mut Conn) {
        while let Some(out) = self.server.poll_output() {
            match out {
                ControlOutput::Transmit(id) => {
                    assert_eq!(id, conn.id);
                    self.flush(conn);
                }
                ControlOutput::Close(id, reason) => {
                    assert_eq!(id, conn.id);
                    self.flush(conn);
                    self.server.handle_closed(id);
                    conn.closed = Some(reason);
                }
                ControlOutput::Log(line) => self.logs.push(line),
            }
        }
    }

    fn flush(&mut self, conn: &mut Conn) {
        while let Some(bytes) = self.server.poll_transmit(conn.id) {
            let n = bytes.len();
            conn.client.handle_read(bytes).expect("the kingpin's frames decode");
            self.server.handle_transmitted(conn.id, n);
        }
        while let Some(event) = conn.client.poll_event() {
            conn.events.push(event);
        }
    }

    /// Sends `command` and returns its answer.
    fn ask(&mut self, sim: &mut Sim, conn: &mut Conn, command: ControlCommand) -> Result<ControlAnswer, ControlError> {
        let id = conn.client.request(&command).expect("a request encodes");
        self.send_client(sim, conn);
        let at = conn
            .events
            .iter()
            .position(|e| matches!(e, ClientEvent::Reply(r) if r.id == id))
            .unwrap_or_else(|| panic!("no reply to {command:?}: {:?}", conn.events));
        match conn.events.remove(at) {
            ClientEvent::Reply(r) => r.result,
            _ => unreachable!(),
        }
    }

    fn status(&mut self, sim: &mut Sim, conn: &mut Conn) -> StatusReport {
        match self.ask(sim, conn, ControlCommand::Status) {
            Ok(ControlAnswer::Status(report)) => report,
            other => panic!("expected a status, got {other:?}"),
        }
    }
}

fn app() -> Sim {
    let mut sim = Sim::new(KingpinConfig::new("ctl").role("web", 2).role("jobs", 1));
    sim.run_until_idle();
    sim
}

fn pids(report: &StatusReport, role: &str) -> BTreeSet<u32> {
    report.workers.iter().filter(|w| w.role == role && w.state == WorkerState::Ready).map(|w| w.pid).collect()
}

#[test]
fn status_lists_every_worker_with_its_figures() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    let report = ctl.status(&mut sim, &mut conn);
    assert_eq!((report.app.as_str(), report.pid, report.shutting_down), ("ctl", 4242, false));
    let roles: Vec<(&str, u32)> = report.roles.iter().map(|r| (r.name.as_str(), r.workers)).collect();
    assert_eq!(roles, [("web", 2), ("jobs", 1)]);
    let rows: Vec<(&str, u32, u32)> = report.workers.iter().map(|w| (w.role.as_str(), w.slot, w.pid)).collect();
    let expected =
        [("web", 0, sim.pid_of("web", 0)), ("web", 1, sim.pid_of("web", 1)), ("jobs", 0, sim.pid_of("jobs", 0))];
    assert_eq!(rows, expected);
    assert!(report.workers.iter().all(|w| w.state == WorkerState::Ready && w.restarts == 0 && w.in_flight == 0));
    assert!(ctl.logs.iter().any(|l| l.contains("test asks Status")), "{:?}", ctl.logs);
}

#[test]
fn resize_grows_and_shrinks_a_role_within_its_bounds() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    let grow = ControlCommand::Resize { role: "web".into(), workers: 4 };
    assert_eq!(ctl.ask(&mut sim, &mut conn, grow), Ok(ControlAnswer::Resized { workers: 4 }));
    sim.run_until_idle();
    let report = ctl.status(&mut sim, &mut conn);
    assert_eq!(pids(&report, "web").len(), 4);
    assert_eq!(report.roles[0].workers, 4);
    let shrink = ControlCommand::Resize { role: "web".into(), workers: 1 };
    assert_eq!(ctl.ask(&mut sim, &mut conn, shrink), Ok(ControlAnswer::Resized { workers: 1 }));
    sim.run_until_idle();
    assert_eq!(pids(&ctl.status(&mut sim, &mut conn), "web").len(), 1);
    let unknown = ControlCommand::Resize { role: "nope".into(), workers: 1 };
    assert_eq!(ctl.ask(&mut sim, &mut conn, unknown), Err(ControlError::UnknownRole("nope".into())));
}

#[test]
fn reload_replaces_every_worker_and_a_second_reload_waits_its_turn() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    let before = pids(&ctl.status(&mut sim, &mut conn), "web");
    let reload = ControlCommand::Reload { role: "web".into() };
    assert_eq!(ctl.ask(&mut sim, &mut conn, reload.clone()), Ok(ControlAnswer::Reloading));
    assert_eq!(ctl.ask(&mut sim, &mut conn, reload.clone()), Err(ControlError::AlreadyReloading("web".into())));
    assert!(ctl.status(&mut sim, &mut conn).roles[0].reloading);
    sim.run_until_idle();
    let after = pids(&ctl.status(&mut sim, &mut conn), "web");
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "{before:?} {after:?}");
    let unknown = ControlCommand::Reload { role: "nope".into() };
    assert_eq!(ctl.ask(&mut sim, &mut conn, unknown), Err(ControlError::UnknownRole("nope".into())));
}

#[test]
fn stop_starts_a_soft_kill_after_which_only_status_stop_and_kill_work() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    assert_eq!(ctl.ask(&mut sim, &mut conn, ControlCommand::Stop), Ok(ControlAnswer::Stopping));
    assert!(sim.kingpin.is_shutting_down());
    let report = ctl.status(&mut sim, &mut conn);
    assert!(report.shutting_down);
    assert!(report.workers.iter().all(|w| w.state == WorkerState::Draining), "{:?}", report.workers);
    let resize = ControlCommand::Resize { role: "web".into(), workers: 3 };
    assert_eq!(ctl.ask(&mut sim, &mut conn, resize), Err(ControlError::ShuttingDown));
    let reload = ControlCommand::Reload { role: "web".into() };
    assert_eq!(ctl.ask(&mut sim, &mut conn, reload), Err(ControlError::ShuttingDown));
    assert_eq!(ctl.ask(&mut sim, &mut conn, ControlCommand::Stop), Ok(ControlAnswer::Stopping), "idempotent");
    assert_eq!(ctl.ask(&mut sim, &mut conn, ControlCommand::Kill), Ok(ControlAnswer::Killing));
    sim.run_until_idle();
    assert!(sim.procs.values().all(|p| !p.alive()));
}

#[test]
fn kill_kills_every_worker_now() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    assert_eq!(ctl.ask(&mut sim, &mut conn, ControlCommand::Kill), Ok(ControlAnswer::Killing));
    sim.run_until_idle();
    assert_eq!(sim.kills.len(), 3);
    assert!(sim.procs.values().all(|p| !p.alive()));
}

#[test]
fn a_failed_role_takes_no_more_changes() {
    let mut config = KingpinConfig::new("ctl").role("web", 1);
    config.on_role_failure = mob_proto::OnRoleFailure::Continue;
    let mut sim = Sim::new(config);
    sim.run_until_idle();
    for _ in 0..6 {
        let pid = sim.pid_of("web", 0);
        sim.exit(pid, mob_proto::ExitStatus::Code(1));
        sim.run_until_idle();
        sim.advance(std::time::Duration::from_secs(20));
        sim.run_until_idle();
    }
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    assert!(ctl.status(&mut sim, &mut conn).roles[0].failed);
    let resize = ControlCommand::Resize { role: "web".into(), workers: 3 };
    assert_eq!(ctl.ask(&mut sim, &mut conn, resize), Err(ControlError::RoleFailed("web".into())));
}

#[test]
fn an_unknown_command_is_answered_unsupported_and_the_connection_stays() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    // id 7, then a command index no kingpin knows.
    let frame = encode_frame(ControlKind::Request as u8, &(7u64, 99u8), &[], 0, 1 << 16).unwrap();
    ctl.feed(&mut sim, &mut conn, &frame);
    match conn.events.remove(0) {
        ClientEvent::Reply(r) => assert_eq!((r.id, r.result), (7, Err(ControlError::Unsupported))),
        other => panic!("{other:?}"),
    }
    assert!(conn.closed.is_none());
    assert_eq!(ctl.status(&mut sim, &mut conn).workers.len(), 3);
}

#[test]
fn a_client_of_another_version_is_rejected_with_both_versions() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let id = ctl.server.open().unwrap();
    let mut conn = Conn { client: ControlClient::new("old"), id, closed: None, events: Vec::new() };
    conn.client.take_transmit();
    let hello = ControlHello { magic: MAGIC, version: 9, client: "old".into() };
    let frame = encode_frame(ControlKind::Hello as u8, &hello, &[], 0, 1 << 16).unwrap();
    ctl.feed(&mut sim, &mut conn, &frame);
    match &conn.events[..] {
        [ClientEvent::Rejected(r)] => {
            assert_eq!((r.version, r.reason.as_str()), (1, "client speaks protocol 9, kingpin speaks 1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.closed, Some(CloseReason::VersionMismatch { ours: 1, theirs: 9 }));
}

#[test]
fn bad_input_closes_that_connection_only() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut good = ctl.connect(&mut sim);
    type Expect = fn(&CloseReason) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        // Not a mob hello.
        (
            encode_frame(
                ControlKind::Hello as u8,
                &ControlHello { magic: *b"http", version: 1, client: "x".into() },
                &[],
                0,
                1 << 16,
            )
            .unwrap(),
            |r| *r == CloseReason::BadMagic,
        ),
        // A request before the hello.
        (encode_frame(ControlKind::Request as u8, &(1u64, 0u8), &[], 0, 1 << 16).unwrap(), |r| {
            matches!(r, CloseReason::Protocol(_))
        }),
        // A worker's hello on the control socket.
        (encode_frame(1, &(), &[], 0, 1 << 16).unwrap(), |r| matches!(r, CloseReason::Protocol(_))),
        // Garbage: reserved header bytes set.
        (vec![0, 0, 0, 0, 48, 0, 0xde, 0xad], |r| matches!(r, CloseReason::Decode(_))),
        // A body larger than a control request may be.
        (Header { len: 1 << 20, kind: 50, fds: 0 }.encode().to_vec(), |r| matches!(r, CloseReason::Decode(_))),
    ];
    for (bytes, expected) in cases {
        let id = ctl.server.open().unwrap();
        let mut bad = Conn { client: ControlClient::new("bad"), id, closed: None, events: Vec::new() };
        ctl.feed(&mut sim, &mut bad, &bytes);
        let reason = bad.closed.clone().expect("closed");
        assert!(expected(&reason), "{reason:?}");
    }
    assert_eq!(ctl.status(&mut sim, &mut good).workers.len(), 3, "the good connection carries on");
}

#[test]
fn a_request_split_across_reads_is_answered_once_whole() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    let id = conn.client.request(&ControlCommand::Status).unwrap();
    let bytes = conn.client.take_transmit();
    for b in &bytes {
        ctl.feed(&mut sim, &mut conn, &[*b]);
    }
    let replies: Vec<u64> =
        conn.events.iter().filter_map(|e| if let ClientEvent::Reply(r) = e { Some(r.id) } else { None }).collect();
    assert_eq!(replies, [id]);
}

#[test]
fn a_client_that_closes_after_asking_is_answered_then_closed() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    conn.client.request(&ControlCommand::Stop).unwrap();
    let bytes = conn.client.take_transmit();
    ctl.server.handle_read(conn.id, &bytes, &mut sim.kingpin, sim.now);
    ctl.server.handle_eof(conn.id, &mut sim.kingpin, sim.now);
    ctl.run(&mut conn);
    assert!(matches!(&conn.events[..], [ClientEvent::Reply(r)] if r.result == Ok(ControlAnswer::Stopping)));
    assert_eq!(conn.closed, Some(CloseReason::Eof));
    assert!(sim.kingpin.is_shutting_down());
}

#[test]
fn a_client_that_never_reads_is_cut_off() {
    let mut sim = app();
    let mut ctl = Ctl::new(&sim);
    let mut conn = ctl.connect(&mut sim);
    let mut closed = None;
    for _ in 0..200_000 {
        conn.client.request(&ControlCommand::Status).unwrap();
        let bytes = conn.client.take_transmit();
        ctl.server.handle_read(conn.id, &bytes, &mut sim.kingpin, sim.now);
        // The runtime's writes would block: nothing is transmitted.
        while let Some(out) = ctl.server.poll_output() {
            if let ControlOutput::Close(_, reason) = out {
                closed = Some(reason);
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(closed, Some(CloseReason::Protocol("too many replies left unread")));
}

#[test]
fn connections_are_limited() {
    let sim = app();
    let mut server = ControlServer::new(1, sim.now);
    let ids: Vec<ControlId> = (0..MAX_CONTROL_CONNECTIONS).map(|_| server.open().unwrap()).collect();
    assert_eq!(server.open(), Err(TooManyConnections));
    server.handle_closed(ids[0]);
    assert!(server.open().is_ok(), "room again once one closed");
    assert_eq!(server.connections().count(), MAX_CONTROL_CONNECTIONS);
}

/// The bytes of `SPEC.md` section 16.5, from the real encoders.
#[test]
fn the_spec_example_is_what_the_code_sends() {
    use mob_proto::control::{ControlReply, ControlWelcome, RoleStatus, WorkerStatus};
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }
    let hello = ControlHello { magic: MAGIC, version: 1, client: "mob".into() };
    fn frame<M: serde::Serialize>(kind: ControlKind, message: &M) -> Vec<u8> {
        encode_frame(kind as u8, message, &[], 0, 1 << 22).unwrap()
    }
    assert_eq!(frame(ControlKind::Hello, &hello), hex("09 00 00 00 30 00 00 00 6d 6f 62 21 01 03 6d 6f 62"));
    let welcome = ControlWelcome { version: 1, app: "myapp".into(), pid: 1234 };
    assert_eq!(frame(ControlKind::Welcome, &welcome), hex("09 00 00 00 31 00 00 00 01 05 6d 79 61 70 70 d2 09"));
    assert_eq!(frame(ControlKind::Request, &(1u64, ControlCommand::Status)), hex("02 00 00 00 32 00 00 00 01 00"));
    let report = StatusReport {
        app: "myapp".into(),
        pid: 1234,
        uptime_ms: 1000,
        shutting_down: false,
        roles: vec![RoleStatus { name: "web".into(), workers: 1, failed: false, reloading: false }],
        workers: vec![WorkerStatus {
            role: "web".into(),
            slot: 0,
            pid: 1235,
            state: WorkerState::Ready,
            uptime_ms: 480,
            restarts: 0,
            rss_kib: 2048,
            in_flight: 0,
        }],
    };
    let reply = ControlReply { id: 1, result: Ok(ControlAnswer::Status(report)) };
    let expected = "25 00 00 00 33 00 00 00 01 00 00 05 6d 79 61 70 70 d2 09 e8 07 00 01 03 77 65 62 01 00 00 \
                    01 03 77 65 62 00 d3 09 02 e0 03 00 80 10 00";
    assert_eq!(frame(ControlKind::Reply, &reply), hex(expected));
    let resize = (2u64, ControlCommand::Resize { role: "nope".into(), workers: 2 });
    assert_eq!(frame(ControlKind::Request, &resize), hex("08 00 00 00 32 00 00 00 02 01 04 6e 6f 70 65 02"));
    let refused = ControlReply { id: 2, result: Err(ControlError::UnknownRole("nope".into())) };
    assert_eq!(frame(ControlKind::Reply, &refused), hex("08 00 00 00 33 00 00 00 02 01 00 04 6e 6f 70 65"));
}
