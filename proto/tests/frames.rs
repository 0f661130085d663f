//! Framing: every frame kind survives `OutBuf` → any chunking → `Decoder`
//! → `Message::parse`; every `DecodeError` is reachable; arbitrary input never
//! panics the decoder nor loses an fd handle.

mod common;

use bytes::Bytes;
use common::{Chunker, Pipe};
use mob_proto::FdHandle;
use mob_proto::frame::{
    DEFAULT_MAX_BODY, DecodeError, Decoder, HEADER_LEN, Header, MAX_FDS_PER_FRAME, OutBuf, RawFrame,
};
use mob_proto::wire::{
    Call, Cancel, Deliver, Failure, Fatal, Hello, Invoke, Kind, MAGIC, MAX_CALLBACKS, Message, PROTOCOL_VERSION, Ping,
    Reject, Release, Reply, Request, Scale, Send, Settings, Source, Status, Stop, Target, Welcome,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A message to encode, with its payload and the number of fds it carries
/// (for the kinds that have them).
#[derive(Clone, Debug)]
enum Spec {
    Hello(Hello),
    Welcome(Welcome),
    Reject(Reject),
    Cancel(Cancel),
    Release(Release),
    Status(Status),
    Ping(Ping),
    Pong(Ping),
    Stop(Stop),
    Fatal(Fatal),
    Scale(Scale),
    Send(Send, Vec<u8>, usize),
    Deliver(Deliver, Vec<u8>, usize),
    Request(Request, Vec<u8>, usize),
    Call(Call, Vec<u8>, usize),
    Reply(Reply, Vec<u8>, usize),
    Invoke(Invoke, Vec<u8>, usize),
}

/// Every kind this protocol version defines, with whether it may carry fds.
const KINDS: [(Kind, bool); 17] = [
    (Kind::Hello, false),
    (Kind::Welcome, false),
    (Kind::Reject, false),
    (Kind::Send, true),
    (Kind::Deliver, true),
    (Kind::Request, true),
    (Kind::Call, true),
    (Kind::Reply, true),
    (Kind::Cancel, false),
    (Kind::Invoke, true),
    (Kind::Release, false),
    (Kind::Status, false),
    (Kind::Ping, false),
    (Kind::Pong, false),
    (Kind::Stop, false),
    (Kind::Fatal, false),
    (Kind::Scale, false),
];

fn handles(raws: &[u64]) -> Vec<FdHandle> {
    raws.iter().copied().map(FdHandle::from_raw).collect()
}

impl Spec {
    fn nfds(&self) -> usize {
        match self {
            Spec::Send(_, _, n)
            | Spec::Deliver(_, _, n)
            | Spec::Request(_, _, n)
            | Spec::Call(_, _, n)
            | Spec::Reply(_, _, n)
            | Spec::Invoke(_, _, n) => *n,
            _ => 0,
        }
    }

    /// Queues the frame in `out`, its fds being handles with the raw values
    /// `fds`.
    fn push(&self, out: &mut OutBuf, fds: &[u64]) {
        let fds = handles(fds);
        match self {
            Spec::Hello(m) => out.push(Kind::Hello as u8, m, &[], fds),
            Spec::Welcome(m) => out.push(Kind::Welcome as u8, m, &[], fds),
            Spec::Reject(m) => out.push(Kind::Reject as u8, m, &[], fds),
            Spec::Cancel(m) => out.push(Kind::Cancel as u8, m, &[], fds),
            Spec::Release(m) => out.push(Kind::Release as u8, m, &[], fds),
            Spec::Status(m) => out.push(Kind::Status as u8, m, &[], fds),
            Spec::Ping(m) => out.push(Kind::Ping as u8, m, &[], fds),
            Spec::Pong(m) => out.push(Kind::Pong as u8, m, &[], fds),
            Spec::Stop(m) => out.push(Kind::Stop as u8, m, &[], fds),
            Spec::Fatal(m) => out.push(Kind::Fatal as u8, m, &[], fds),
            Spec::Scale(m) => out.push(Kind::Scale as u8, m, &[], fds),
            Spec::Send(m, p, _) => out.push(Kind::Send as u8, m, p, fds),
            Spec::Deliver(m, p, _) => out.push(Kind::Deliver as u8, m, p, fds),
            Spec::Request(m, p, _) => out.push(Kind::Request as u8, m, p, fds),
            Spec::Call(m, p, _) => out.push(Kind::Call as u8, m, p, fds),
            Spec::Reply(m, p, _) => out.push(Kind::Reply as u8, m, p, fds),
            Spec::Invoke(m, p, _) => out.push(Kind::Invoke as u8, m, p, fds),
        }
        .map_err(|(e, _)| e)
        .expect("frame encodes");
    }

    /// The message `Message::parse` must give back.
    fn expected(&self, fds: &[u64]) -> Message {
        match self.clone() {
            Spec::Hello(m) => Message::Hello(m),
            Spec::Welcome(m) => Message::Welcome(m),
            Spec::Reject(m) => Message::Reject(m),
            Spec::Cancel(m) => Message::Cancel(m),
            Spec::Release(m) => Message::Release(m),
            Spec::Status(m) => Message::Status(m),
            Spec::Ping(m) => Message::Ping(m),
            Spec::Pong(m) => Message::Pong(m),
            Spec::Stop(m) => Message::Stop(m),
            Spec::Fatal(m) => Message::Fatal(m),
            Spec::Scale(m) => Message::Scale(m),
            Spec::Send(m, p, _) => Message::Send(m, Bytes::from(p), handles(fds)),
            Spec::Deliver(m, p, _) => Message::Deliver(m, Bytes::from(p), handles(fds)),
            Spec::Request(m, p, _) => Message::Request(m, Bytes::from(p), handles(fds)),
            Spec::Call(m, p, _) => Message::Call(m, Bytes::from(p), handles(fds)),
            Spec::Reply(m, p, _) => Message::Reply(m, Bytes::from(p), handles(fds)),
            Spec::Invoke(m, p, _) => Message::Invoke(m, Bytes::from(p), handles(fds)),
        }
    }
}

fn frame(kind: u8, body: &[u8], fds: u8) -> Vec<u8> {
    let mut v = Header { len: body.len() as u32, kind, fds }.encode().to_vec();
    v.extend_from_slice(body);
    v
}

fn h(n: u64) -> FdHandle {
    FdHandle::from_raw(n)
}

fn raws(fds: Vec<FdHandle>) -> Vec<u64> {
    fds.into_iter().map(FdHandle::into_raw).collect()
}

fn decode_one(bytes: &[u8], fds: Vec<FdHandle>) -> Result<Option<RawFrame>, DecodeError> {
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(bytes, fds);
    d.decode()
}

fn hello() -> Hello {
    Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        pid: 42,
        role: "back".into(),
        slot: 3,
        exports: vec!["resize".into()],
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z_]{1,8}", "\\PC{0,16}"]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Kingpin),
        any::<bool>().prop_map(|include_sender| Target::All { include_sender }),
        text().prop_map(Target::Role),
        text().prop_map(Target::Any),
        any::<u32>().prop_map(Target::Pid),
    ]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![Just(Source::Kingpin), (any::<u64>(), any::<u32>()).prop_map(|(id, pid)| Source::Worker { id, pid }),]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), 0..300)]
}

fn fd_count() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0), Just(1), 0..=MAX_FDS_PER_FRAME, Just(MAX_FDS_PER_FRAME)]
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        Just(Failure::UnknownNamespace),
        Just(Failure::Unhandled),
        text().prop_map(Failure::Failed),
        Just(Failure::Dropped),
        Just(Failure::NoRoute),
        Just(Failure::PeerGone),
        Just(Failure::Backpressure),
        Just(Failure::NotExported),
    ]
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    vec(any::<u64>(), 0..4)
}

fn spec() -> impl Strategy<Value = Spec> {
    let hello = (any::<[u8; 4]>(), any::<u16>(), any::<u32>(), text(), any::<u32>(), vec(text(), 0..3)).prop_map(
        |(magic, version, pid, role, slot, exports)| Spec::Hello(Hello { magic, version, pid, role, slot, exports }),
    );
    let welcome = (any::<u16>(), any::<u64>(), text(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
        |(version, worker, app, max_body, request_timeout_ms, starts_ready)| {
            let settings = Settings { app, max_body, request_timeout_ms, starts_ready };
            Spec::Welcome(Welcome { version, worker, settings })
        },
    );
    let request = (any::<u64>(), target(), text(), text(), any::<u64>(), ids());
    let request = (request, payload(), fd_count()).prop_map(|((id, to, ns, name, timeout_ms, callbacks), p, n)| {
        let m = Request { id, to, ns, name, timeout_ms, callbacks };
        Spec::Request(m, p, n)
    });
    let call = (any::<u64>(), source(), text(), text(), any::<u64>(), ids());
    let call = (call, payload(), fd_count()).prop_map(|((id, from, ns, name, timeout_ms, callbacks), p, n)| {
        let m = Call { id, from, ns, name, timeout_ms, callbacks };
        Spec::Call(m, p, n)
    });
    let result = prop_oneof![Just(Ok(())), failure().prop_map(Err)];
    let reply = (any::<u64>(), result, payload(), fd_count())
        .prop_map(|(id, result, p, n)| Spec::Reply(Reply { id, result }, p, n));
    let invoke = (any::<u64>(), any::<u64>(), payload(), fd_count())
        .prop_map(|(call, callback, p, n)| Spec::Invoke(Invoke { call, callback }, p, n));
    prop_oneof![
        hello,
        welcome,
        request,
        call,
        reply,
        invoke,
        any::<u64>().prop_map(|id| Spec::Cancel(Cancel { id })),
        any::<u64>().prop_map(|call| Spec::Release(Release { call })),
        (any::<bool>(), any::<u32>(), any::<u64>()).prop_map(|(ready, in_flight, rss_kib)| Spec::Status(Status {
            ready,
            in_flight,
            rss_kib
        })),
        any::<u64>().prop_map(|seq| Spec::Ping(Ping { seq })),
        any::<u64>().prop_map(|seq| Spec::Pong(Ping { seq })),
        any::<u64>().prop_map(|grace_ms| Spec::Stop(Stop { grace_ms })),
        text().prop_map(|message| Spec::Fatal(Fatal { message })),
        any::<u32>().prop_map(|workers| Spec::Scale(Scale { workers })),
        (any::<u16>(), text()).prop_map(|(version, reason)| Spec::Reject(Reject { version, reason })),
        (target(), text(), text(), payload(), fd_count()).prop_map(|(to, ns, name, p, n)| Spec::Send(
            Send { to, ns, name },
            p,
            n
        )),
        (source(), text(), text(), payload(), fd_count()).prop_map(|(from, ns, name, p, n)| Spec::Deliver(
            Deliver { from, ns, name },
            p,
            n
        )),
    ]
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![Just(vec![usize::MAX]), Just(vec![1]), vec(1usize..64, 1..16), vec(1usize..2000, 1..4),]
}

// ---------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Frames of every kind, written and read in arbitrary chunks, come out
    /// equal, in order, each with its own fds in their order.
    #[test]
    fn every_kind_round_trips_through_any_chunking(
        specs in vec(spec(), 1..8),
        writes in sizes(),
        reads in sizes(),
    ) {
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        let mut next_raw = 100u64;
        let mut fd_sets = Vec::new();
        for s in &specs {
            let fds: Vec<u64> = (0..s.nfds() as u64).map(|i| next_raw + i).collect();
            next_raw += fds.len() as u64;
            s.push(&mut out, &fds);
            fd_sets.push(fds);
        }

        // Writer: partial writes, fds leave with the first byte of each.
        let mut pipe = Pipe::new();
        let mut wsize = Chunker::sizes(writes);
        while let Some(t) = out.peek() {
            let n = wsize.next(t.bytes.len());
            let bytes = t.bytes[..n].to_vec();
            let offered: Vec<u64> = t.fds.iter().map(FdHandle::raw).collect();
            let sent = out.advance(n);
            let sent_raws: Vec<u64> = sent.iter().map(FdHandle::raw).collect();
            prop_assert_eq!(sent_raws, offered);
            pipe.write(&bytes, sent);
        }
        prop_assert!(out.is_empty());

        // Reader: arbitrary reads, decoding after each.
        let mut dec = Decoder::new(DEFAULT_MAX_BODY);
        let mut rsize = Chunker::sizes(reads);
        let mut got = Vec::new();
        while let Some((bytes, fds)) = pipe.read(rsize.next(pipe.len().max(1))) {
            dec.handle_read(&bytes, fds);
            while let Some(frame) = dec.decode().expect("a well-formed stream decodes") {
                got.push(Message::parse_owned(frame).map_err(|(e, _)| e).expect("frame parses"));
            }
        }
        dec.handle_eof();
        prop_assert_eq!(dec.decode(), Ok(None));
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(dec.queued_fds(), 0);

        prop_assert_eq!(got.len(), specs.len());
        for ((s, fds), m) in specs.iter().zip(&fd_sets).zip(got) {
            prop_assert_eq!(m, s.expected(fds));
        }
    }
}

/// The largest fd count and an empty payload, one byte at a time.
#[test]
fn max_fds_one_byte_at_a_time() {
    let meta = Deliver { from: Source::Kingpin, ns: "_".into(), name: "n".into() };
    let spec = Spec::Deliver(meta, Vec::new(), MAX_FDS_PER_FRAME);
    let fds: Vec<u64> = (0..MAX_FDS_PER_FRAME as u64).rev().collect();
    let mut out = OutBuf::new(DEFAULT_MAX_BODY);
    spec.push(&mut out, &fds);
    let mut dec = Decoder::new(DEFAULT_MAX_BODY);
    let mut frames = Vec::new();
    while let Some(t) = out.peek() {
        let byte = t.bytes[0];
        let sent = out.advance(1);
        dec.handle_read(&[byte], sent);
        frames.extend(dec.decode().unwrap());
    }
    assert_eq!(frames.len(), 1);
    let m = Message::parse_owned(frames.pop().unwrap()).unwrap();
    assert_eq!(m, spec.expected(&fds));
}

// ---------------------------------------------------------------------------
// One test per DecodeError
// ---------------------------------------------------------------------------

#[test]
fn truncated_when_the_stream_ends_inside_a_frame() {
    let w = frame(Kind::Send as u8, b"0123456789", 0);
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&w[..HEADER_LEN + 4], Vec::new());
    assert_eq!(d.decode(), Ok(None));
    d.handle_eof();
    assert_eq!(d.decode(), Err(DecodeError::Truncated { buffered: HEADER_LEN + 4 }));
    // Also inside a header.
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&w[..3], Vec::new());
    d.handle_eof();
    assert_eq!(d.decode(), Err(DecodeError::Truncated { buffered: 3 }));
}

#[test]
fn too_large_when_the_header_announces_more_than_the_limit() {
    let mut d = Decoder::new(16);
    // The limit itself is fine.
    d.handle_read(&frame(Kind::Send as u8, &[0; 16], 0), Vec::new());
    assert!(d.decode().unwrap().is_some());
    // One more byte is not, and only the header is needed to know it.
    let header = Header { len: 17, kind: Kind::Send as u8, fds: 0 };
    d.handle_read(&header.encode(), Vec::new());
    assert_eq!(d.decode(), Err(DecodeError::TooLarge { len: 17, max: 16 }));
    // Poisoned: the same error again.
    assert_eq!(d.decode(), Err(DecodeError::TooLarge { len: 17, max: 16 }));
    assert!(d.is_failed());
}

#[test]
fn too_many_fds_when_the_header_claims_more_than_the_cap() {
    let claimed = MAX_FDS_PER_FRAME as u8 + 1;
    assert_eq!(
        decode_one(&frame(Kind::Send as u8, b"", claimed), Vec::new()),
        Err(DecodeError::TooManyFds { claimed })
    );
    // The cap itself is fine when that many arrive.
    let cap = MAX_FDS_PER_FRAME as u8;
    let fds = (0..u64::from(cap)).map(h).collect();
    let f = decode_one(&frame(Kind::Send as u8, b"", cap), fds).unwrap().unwrap();
    assert_eq!(f.fds.len(), MAX_FDS_PER_FRAME);
}

#[test]
fn missing_fds_when_fewer_arrive_than_claimed() {
    assert_eq!(
        decode_one(&frame(Kind::Send as u8, b"x", 2), vec![h(1)]),
        Err(DecodeError::MissingFds { claimed: 2, arrived: 1 })
    );
    // fds that arrive after the frame's first byte are not its fds.
    let w = frame(Kind::Send as u8, b"xyz", 1);
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&w[..1], Vec::new());
    d.handle_read(&w[1..], vec![h(5)]);
    assert_eq!(d.decode(), Err(DecodeError::MissingFds { claimed: 1, arrived: 0 }));
    assert_eq!(raws(d.drain_fds().collect()), vec![5]);
}

#[test]
fn unexpected_fds_when_no_frame_claims_them() {
    // With an empty read.
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(b"", vec![h(1), h(2)]);
    assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 2 }));
    assert_eq!(raws(d.drain_fds().collect()), vec![1, 2]);
    // One more than the frames of the write claim: found at the end of the
    // stream (a later frame of the same write could have claimed it).
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&frame(Kind::Send as u8, b"x", 1), vec![h(1), h(2)]);
    assert_eq!(raws(d.decode().unwrap().unwrap().fds), vec![1]);
    d.handle_eof();
    assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
    assert_eq!(raws(d.drain_fds().collect()), vec![2]);
    // In the middle of a frame already begun: refused at once, before the
    // frame is complete.
    let w = frame(Kind::Send as u8, b"abcdefgh", 0);
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&w[..HEADER_LEN + 2], Vec::new());
    assert_eq!(d.decode(), Ok(None));
    d.handle_read(&w[HEADER_LEN + 2..HEADER_LEN + 4], vec![h(3)]);
    assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
    assert_eq!(raws(d.drain_fds().collect()), vec![3]);
    // With a frame that claims none, at the end of the stream.
    let mut d = Decoder::new(DEFAULT_MAX_BODY);
    d.handle_read(&frame(Kind::Send as u8, b"x", 0), vec![h(9)]);
    assert!(d.decode().unwrap().is_some());
    d.handle_eof();
    assert_eq!(d.decode(), Err(DecodeError::UnexpectedFds { count: 1 }));
    assert_eq!(raws(d.drain_fds().collect()), vec![9]);
}

#[test]
fn unknown_kind_is_refused_by_parse_with_the_fds_back() {
    let f = decode_one(&frame(99, b"whatever", 2), vec![h(1), h(2)]).unwrap().unwrap();
    let (e, fds) = Message::parse_owned(f).unwrap_err();
    assert_eq!(e, DecodeError::UnknownKind(99));
    assert_eq!(raws(fds), vec![1, 2]);
}

fn parse_err(kind: u8, body: &[u8], fds: Vec<FdHandle>) -> (DecodeError, Vec<u64>) {
    let n = fds.len() as u8;
    let f = decode_one(&frame(kind, body, n), fds).unwrap().unwrap();
    let (e, fds) = Message::parse_owned(f).unwrap_err();
    (e, raws(fds))
}

const BAD_BODY: &str = "body does not parse";

#[test]
fn malformed_when_a_body_does_not_parse() {
    // Each kind, with a body cut short.
    let hello = postcard::to_allocvec(&hello()).unwrap();
    let send = postcard::to_allocvec(&Send { to: Target::Role("back".into()), ns: "_", name: "n" }).unwrap();
    for (kind, body) in [
        (Kind::Hello, &hello[..hello.len() - 1]),
        (Kind::Welcome, &[1][..]),
        (Kind::Reject, &[][..]),
        (Kind::Send, &send[..send.len() - 1]),
        (Kind::Deliver, &[7][..]), // no Source variant 7
    ] {
        let (e, _) = parse_err(kind as u8, body, Vec::new());
        assert_eq!(e, DecodeError::Malformed { kind: kind as u8, reason: BAD_BODY }, "{kind:?}");
    }
    // A Send whose target variant does not exist: its fd comes back.
    let (e, fds) = parse_err(Kind::Send as u8, &[9, 0, 0], vec![h(4)]);
    assert_eq!(e, DecodeError::Malformed { kind: Kind::Send as u8, reason: BAD_BODY });
    assert_eq!(fds, vec![4]);
}

#[test]
fn malformed_when_a_request_or_call_lists_more_callbacks_than_the_limit() {
    for listed in [MAX_CALLBACKS, MAX_CALLBACKS + 1] {
        let callbacks: Vec<u64> = (0..listed as u64).collect();
        let request = Request {
            id: 1,
            to: Target::Any("b".into()),
            ns: "_",
            name: "n",
            timeout_ms: 5,
            callbacks: callbacks.clone(),
        };
        let call = Call { id: 1, from: Source::Kingpin, ns: "_", name: "n", timeout_ms: 5, callbacks };
        for (kind, mut body) in [
            (Kind::Request, postcard::to_allocvec(&request).unwrap()),
            (Kind::Call, postcard::to_allocvec(&call).unwrap()),
        ] {
            body.extend_from_slice(b"payload");
            let f = decode_one(&frame(kind as u8, &body, 1), vec![h(3)]).unwrap().unwrap();
            match Message::parse_owned(f) {
                Ok(_) => assert_eq!(listed, MAX_CALLBACKS, "{kind:?} with {listed} callbacks parsed"),
                Err((e, fds)) => {
                    assert_eq!(listed, MAX_CALLBACKS + 1, "{kind:?} with {listed} callbacks refused: {e}");
                    let reason = "more callbacks than MAX_CALLBACKS";
                    assert_eq!(e, DecodeError::Malformed { kind: kind as u8, reason });
                    assert_eq!(raws(fds), vec![3], "its fd comes back");
                }
            }
        }
    }
}

#[test]
fn malformed_when_bytes_trail_a_hello() {
    let mut body = postcard::to_allocvec(&hello()).unwrap();
    // Exactly the Hello parses...
    let f = decode_one(&frame(Kind::Hello as u8, &body, 0), Vec::new()).unwrap().unwrap();
    assert_eq!(Message::parse_owned(f).unwrap(), Message::Hello(hello()));
    // ...one more byte does not.
    body.push(0);
    assert_eq!(
        parse_err(Kind::Hello as u8, &body, Vec::new()).0,
        DecodeError::Malformed { kind: Kind::Hello as u8, reason: BAD_BODY }
    );
}

#[test]
fn malformed_when_fds_ride_on_a_kind_that_carries_none() {
    let bodies: [(Kind, Vec<u8>); 11] = [
        (Kind::Hello, postcard::to_allocvec(&hello()).unwrap()),
        (
            Kind::Welcome,
            postcard::to_allocvec(&Welcome {
                version: 1,
                worker: 2,
                settings: Settings { app: "a".into(), max_body: 3, request_timeout_ms: 4, starts_ready: true },
            })
            .unwrap(),
        ),
        (Kind::Reject, postcard::to_allocvec(&Reject { version: 1, reason: "no".into() }).unwrap()),
        (Kind::Cancel, postcard::to_allocvec(&Cancel { id: 5 }).unwrap()),
        (Kind::Release, postcard::to_allocvec(&Release { call: 6 }).unwrap()),
        (Kind::Status, postcard::to_allocvec(&Status { ready: true, in_flight: 1, rss_kib: 2 }).unwrap()),
        (Kind::Ping, postcard::to_allocvec(&Ping { seq: 7 }).unwrap()),
        (Kind::Pong, postcard::to_allocvec(&Ping { seq: 8 }).unwrap()),
        (Kind::Stop, postcard::to_allocvec(&Stop { grace_ms: 9 }).unwrap()),
        (Kind::Fatal, postcard::to_allocvec(&Fatal { message: "boom".into() }).unwrap()),
        (Kind::Scale, postcard::to_allocvec(&Scale { workers: 3 }).unwrap()),
    ];
    for (kind, body) in bodies {
        assert!(!KINDS.contains(&(kind, true)));
        // Without fds the body parses...
        let f = decode_one(&frame(kind as u8, &body, 0), Vec::new()).unwrap().unwrap();
        assert!(Message::parse_owned(f).is_ok(), "{kind:?}");
        // ...with them it does not, and they come back in order.
        let (e, fds) = parse_err(kind as u8, &body, vec![h(7), h(8)]);
        assert_eq!(e, DecodeError::Malformed { kind: kind as u8, reason: "this kind carries no fds" }, "{kind:?}");
        assert_eq!(fds, vec![7, 8]);
    }
}

/// Every kind byte is either one of the kinds of this version (then an
/// empty body is malformed, and the fds come back) or unknown.
#[test]
fn every_kind_byte_is_known_or_unknown() {
    for byte in 0..=u8::MAX {
        let known = KINDS.iter().find(|(k, _)| *k as u8 == byte);
        assert_eq!(Kind::from_u8(byte).map(|k| k as u8), known.map(|(k, _)| *k as u8));
        let (e, fds) = parse_err(byte, b"", vec![h(1)]);
        assert_eq!(fds, vec![1], "kind {byte}");
        let want = match known {
            None => DecodeError::UnknownKind(byte),
            Some((_, true)) => DecodeError::Malformed { kind: byte, reason: BAD_BODY },
            Some((_, false)) => DecodeError::Malformed { kind: byte, reason: "this kind carries no fds" },
        };
        assert_eq!(e, want, "kind {byte}");
    }
    for (kind, carries) in KINDS {
        assert_eq!(kind.may_carry_fds(), carries, "{kind:?}");
        assert_eq!(kind.has_payload(), carries, "{kind:?}");
    }
}

#[test]
fn malformed_when_reserved_header_bytes_are_set() {
    let mut w = frame(Kind::Send as u8, b"", 0);
    w[7] = 1;
    assert!(matches!(decode_one(&w, Vec::new()), Err(DecodeError::Malformed { kind: 16, .. })));
}

// ---------------------------------------------------------------------------
// Arbitrary input
// ---------------------------------------------------------------------------

/// A piece of hostile input: raw bytes, or a header (honest or lying) and a
/// body.
#[derive(Clone, Debug)]
enum Piece {
    Raw(Vec<u8>),
    Frame { kind: u8, fds: u8, body: Vec<u8>, lie: Option<u32> },
}

fn piece() -> impl Strategy<Value = Piece> {
    let kind = prop_oneof![Just(1u8), Just(2), Just(3), Just(16), Just(17), any::<u8>()];
    let fds = prop_oneof![Just(0u8), 0u8..4, 0u8..=34, any::<u8>()];
    let lie = prop_oneof![4 => Just(None), 1 => (0u32..200).prop_map(Some), 1 => any::<u32>().prop_map(Some)];
    prop_oneof![
        1 => vec(any::<u8>(), 0..40).prop_map(Piece::Raw),
        4 => (kind, fds, vec(any::<u8>(), 0..60), lie)
            .prop_map(|(kind, fds, body, lie)| Piece::Frame { kind, fds, body, lie }),
    ]
}

/// Feeds one read of `bytes` with `n` new handles.
fn feed(dec: &mut Decoder, bytes: &[u8], n: usize, next: &mut u64, fed: &mut Vec<u64>) {
    let range = *next..*next + n as u64;
    *next += n as u64;
    fed.extend(range.clone());
    dec.handle_read(bytes, range.map(h).collect());
}

/// Decodes and parses until the decoder needs more or fails, collecting the
/// handles that come back.
fn drain(
    dec: &mut Decoder,
    max_body: u32,
    back: &mut Vec<u64>,
    error: &mut Option<DecodeError>,
) -> Result<(), TestCaseError> {
    loop {
        match dec.decode() {
            Ok(Some(frame)) => {
                prop_assert!(frame.fds.len() <= MAX_FDS_PER_FRAME);
                prop_assert!(frame.body.len() <= max_body as usize);
                match Message::parse_owned(frame) {
                    Ok(Message::Send(_, _, fds) | Message::Deliver(_, _, fds)) => {
                        back.extend(raws(fds));
                    }
                    Ok(_) => {}
                    Err((_, fds)) => back.extend(raws(fds)),
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                if let Some(first) = error {
                    prop_assert_eq!(&*first, &e, "a failed decoder changed its error");
                }
                prop_assert!(dec.is_failed());
                *error = Some(e);
                return Ok(());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever arrives, in whatever reads, with whatever fds: the decoder
    /// does not panic, a failed decoder keeps failing the same way, and every
    /// fd handle fed comes back exactly once (in a frame, beside a parse
    /// error, in a parsed message, or from `drain_fds`).
    #[test]
    fn arbitrary_input_never_panics_nor_loses_fds(
        pieces in vec(piece(), 0..8),
        reads in vec((0usize..80, prop_oneof![4 => Just(0usize), 1 => 0usize..40]), 1..12),
        max_body in prop_oneof![Just(DEFAULT_MAX_BODY), 0u32..100],
        eof in any::<bool>(),
        extra_fds in 0usize..3,
    ) {
        let mut stream = Vec::new();
        for p in &pieces {
            match p {
                Piece::Raw(b) => stream.extend_from_slice(b),
                Piece::Frame { kind, fds, body, lie } => {
                    let len = lie.unwrap_or(body.len() as u32);
                    stream.extend_from_slice(&Header { len, kind: *kind, fds: *fds }.encode());
                    stream.extend_from_slice(body);
                }
            }
        }

        let mut dec = Decoder::new(max_body);
        let mut fed = Vec::new();
        let mut back = Vec::new();
        let mut next = 0u64;
        let mut pos = 0;
        let mut error: Option<DecodeError> = None;
        for (i, &(size, nfds)) in reads.iter().cycle().enumerate() {
            if pos >= stream.len() && i >= reads.len() {
                break;
            }
            // After one pass, every read makes progress.
            let size = if i >= reads.len() { size.max(1) } else { size };
            let end = (pos + size).min(stream.len());
            feed(&mut dec, &stream[pos..end], nfds, &mut next, &mut fed);
            pos = end;
            drain(&mut dec, max_body, &mut back, &mut error)?;
        }
        // Stray fds after the stream, then perhaps the end of it.
        feed(&mut dec, b"", extra_fds, &mut next, &mut fed);
        if eof {
            dec.handle_eof();
        }
        drain(&mut dec, max_body, &mut back, &mut error)?;
        if error.is_some() {
            prop_assert!(dec.decode().is_err());
        }
        back.extend(raws(dec.drain_fds().collect()));
        prop_assert_eq!(dec.queued_fds(), 0);

        back.sort_unstable();
        prop_assert_eq!(back, fed);
    }
}
