//! The worker state machine on its own, driven by hand-made kingpin frames:
//! its handshake, its limits, and how it gives back every fd it holds.

mod common;

use common::wire_frame;
use mob_proto::frame::{DEFAULT_MAX_BODY, DecodeError, Decoder, EncodeError};
use mob_proto::wire::{Deliver, Hello, Kind, MAGIC, Message, PROTOCOL_VERSION, Reject, Send, Settings, Welcome};
use mob_proto::{CloseReason, FdHandle, SendError, Source, Target, Worker, WorkerConfig, WorkerEvent, WorkerOutput};

fn worker() -> Worker {
    Worker::new(WorkerConfig { pid: 7, role: "back".into(), slot: 2, exports: vec!["resize".into()] })
}

fn outputs(w: &mut Worker) -> Vec<WorkerOutput> {
    std::iter::from_fn(|| w.poll_output()).collect()
}

/// Writes everything the worker has, one whole write at a time, and decodes
/// it as the kingpin would.
fn written(w: &mut Worker) -> Vec<Message> {
    let mut dec = Decoder::new(DEFAULT_MAX_BODY);
    while let Some(t) = w.poll_transmit() {
        let bytes = t.bytes.to_vec();
        let fds = w.handle_transmitted(bytes.len());
        dec.handle_read(&bytes, fds);
    }
    std::iter::from_fn(|| dec.decode().unwrap()).map(|f| Message::parse_owned(f).unwrap()).collect()
}

fn welcome(version: u16, max_body: u32) -> Welcome {
    Welcome {
        version,
        worker: 5,
        settings: Settings { app: "app".into(), max_body, request_timeout_ms: 2_000, starts_ready: true },
    }
}

/// A worker that has sent its Hello.
fn started() -> Worker {
    let mut w = worker();
    assert!(matches!(&written(&mut w)[..], [Message::Hello(_)]));
    assert_eq!(outputs(&mut w), vec![WorkerOutput::Transmit]);
    w
}

/// A worker that has sent its Hello and read a Welcome.
fn running(max_body: u32) -> Worker {
    let mut w = started();
    w.handle_read(&wire_frame(Kind::Welcome, &welcome(PROTOCOL_VERSION, max_body), &[], 0), Vec::new());
    assert!(w.is_running());
    outputs(&mut w);
    w
}

fn deliver(name: &str) -> Deliver {
    Deliver { from: Source::Kingpin, ns: "_".into(), name: name.into() }
}

fn released(outs: &[WorkerOutput]) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| match o {
            WorkerOutput::ReleaseFd(h) => Some(h.raw()),
            _ => None,
        })
        .collect()
}

fn h(n: u64) -> FdHandle {
    FdHandle::from_raw(n)
}

#[test]
fn hello_leaves_first_and_early_sends_follow_it() {
    let mut w = worker();
    assert_eq!(outputs(&mut w), vec![WorkerOutput::Transmit]);
    w.send(Target::Role("front".into()), "ns", "early", b"p", vec![h(1), h(2)]).unwrap();
    assert_eq!(outputs(&mut w), vec![], "Transmit was already asked for");
    assert!(!w.is_running());
    let sent = written(&mut w);
    assert_eq!(
        sent,
        vec![
            Message::Hello(Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                pid: 7,
                role: "back".into(),
                slot: 2,
                exports: vec!["resize".into()],
            }),
            Message::Send(
                Send { to: Target::Role("front".into()), ns: "ns".into(), name: "early".into() },
                "p".into(),
                vec![h(1), h(2)],
            ),
        ]
    );
    assert_eq!(w.queued_bytes(), 0);
}

#[test]
fn a_welcome_starts_it_and_sets_the_limits() {
    let mut w = started();
    let wl = welcome(PROTOCOL_VERSION, 64);
    w.handle_read(&wire_frame(Kind::Welcome, &wl, &[], 0), Vec::new());
    assert_eq!(outputs(&mut w), vec![WorkerOutput::Event(WorkerEvent::Welcome(wl.clone()))]);
    assert!(w.is_running());
    assert_eq!(w.welcome(), Some(&wl));

    // Sends above the kingpin's limit fail, and give their fds back.
    let err = w.send(Target::Kingpin, "_", "big", &[0; 64], vec![h(3)]).unwrap_err();
    assert!(matches!(err, SendError::Encode(EncodeError::TooLarge { max: 64, .. })));
    assert_eq!(released(&outputs(&mut w)), vec![3]);
    // Frames above it close the link.
    let big = wire_frame(Kind::Deliver, &deliver("big"), &[0; 64], 0);
    w.handle_read(&big, Vec::new());
    assert!(matches!(
        outputs(&mut w)[..],
        [WorkerOutput::Closed(CloseReason::Decode(DecodeError::TooLarge { max: 64, .. }))]
    ));
}

#[test]
fn a_message_is_an_event_with_its_fds() {
    let mut w = running(DEFAULT_MAX_BODY);
    let first = wire_frame(Kind::Deliver, &deliver("a"), b"1", 0);
    let second = wire_frame(Kind::Deliver, &deliver("b"), b"2", 2);
    // The second read ends the first frame and carries the second, whose
    // fds ride with it.
    w.handle_read(&first[..3], Vec::new());
    let mut read = first[3..].to_vec();
    read.extend_from_slice(&second);
    w.handle_read(&read, vec![h(8), h(9)]);
    let outs = outputs(&mut w);
    assert_eq!(
        outs,
        vec![
            WorkerOutput::Event(WorkerEvent::Message {
                from: Source::Kingpin,
                ns: "_".into(),
                name: "a".into(),
                payload: "1".into(),
                fds: vec![],
            }),
            WorkerOutput::Event(WorkerEvent::Message {
                from: Source::Kingpin,
                ns: "_".into(),
                name: "b".into(),
                payload: "2".into(),
                fds: vec![h(8), h(9)],
            }),
        ]
    );
}

#[test]
fn closing_gives_back_every_fd_it_holds() {
    let mut w = running(DEFAULT_MAX_BODY);
    // One fd waits to be written...
    w.send(Target::Kingpin, "_", "queued", b"", vec![h(1)]).unwrap();
    outputs(&mut w);
    // ...one arrived with a frame that is not complete.
    let frame = wire_frame(Kind::Deliver, &deliver("cut"), b"payload", 1);
    w.handle_read(&frame[..frame.len() - 1], vec![h(2)]);
    assert!(outputs(&mut w).is_empty());
    // The kingpin goes away mid-frame.
    w.handle_eof();
    let outs = outputs(&mut w);
    let mut rel = released(&outs);
    rel.sort_unstable();
    assert_eq!(rel, vec![1, 2]);
    assert!(matches!(outs.last(), Some(WorkerOutput::Closed(CloseReason::Decode(DecodeError::Truncated { .. })))));
    assert!(w.is_closed() && w.poll_transmit().is_none());

    // After the close, whatever comes in or is sent is given back.
    w.handle_read(b"more", vec![h(3)]);
    assert_eq!(w.send(Target::Kingpin, "_", "late", b"", vec![h(4)]), Err(SendError::Closed));
    w.handle_eof();
    assert_eq!(released(&outputs(&mut w)), vec![3, 4]);
}

#[test]
fn a_clean_eof_closes_with_eof() {
    let mut w = running(DEFAULT_MAX_BODY);
    w.handle_eof();
    assert_eq!(outputs(&mut w), vec![WorkerOutput::Closed(CloseReason::Eof)]);
}

#[test]
fn handshake_failures_close_the_worker() {
    // A Reject.
    let mut w = started();
    let reject = Reject { version: 9, reason: "no".into() };
    w.handle_read(&wire_frame(Kind::Reject, &reject, &[], 0), Vec::new());
    assert_eq!(
        outputs(&mut w),
        vec![WorkerOutput::Closed(CloseReason::Rejected { kingpin_version: 9, reason: "no".into() })]
    );

    // A Welcome in another version.
    let mut w = started();
    let wl = welcome(PROTOCOL_VERSION + 1, DEFAULT_MAX_BODY);
    w.handle_read(&wire_frame(Kind::Welcome, &wl, &[], 0), Vec::new());
    assert_eq!(
        outputs(&mut w),
        vec![WorkerOutput::Closed(CloseReason::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        })]
    );
    assert!(w.welcome().is_none());

    // A message before the Welcome: closed, and its fds given back.
    let mut w = started();
    let frame = wire_frame(Kind::Deliver, &deliver("early"), b"", 1);
    w.handle_read(&frame, vec![h(6)]);
    let outs = outputs(&mut w);
    assert_eq!(released(&outs), vec![6]);
    assert!(matches!(outs.last(), Some(WorkerOutput::Closed(CloseReason::Protocol(_)))));

    // A second Welcome once running.
    let mut w = running(DEFAULT_MAX_BODY);
    let wl = welcome(PROTOCOL_VERSION, DEFAULT_MAX_BODY);
    w.handle_read(&wire_frame(Kind::Welcome, &wl, &[], 0), Vec::new());
    assert!(matches!(outputs(&mut w)[..], [WorkerOutput::Closed(CloseReason::Protocol(_))]));
}
