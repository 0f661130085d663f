//! Writes the seed corpus: `cargo run --example make_seeds` (in fuzz/).
//!
//! Seeds are real traffic, in each target's input format: single frames
//! (Hello, Welcome, Send, Deliver with fds) and a whole kingpin↔worker
//! exchange recorded from the real state machines. Each seed is run through
//! its harness before it is written.

use mob_fuzz::input::Writer;
use mob_fuzz::{PushFrame, decoder, kingpin, peer_frame, worker};
use mob_proto::frame::DEFAULT_MAX_BODY;
use mob_proto::wire::{self, Deliver, Hello, Kind, Send, Source, Target, Welcome};
use mob_proto::{
    Event, FdHandle, Instant, Kingpin, KingpinConfig, Output, Worker, WorkerConfig, WorkerEvent, WorkerOutput,
};
use std::path::Path;

/// One write on a link: its bytes and how many fds rode with them.
type Chunk = (Vec<u8>, usize);

fn frame(kind: Kind, meta: &impl PushFrame, payload: &[u8], fds: usize) -> Vec<u8> {
    let handles = (0..fds as u64).map(FdHandle::from_raw).collect();
    peer_frame(kind, meta, payload, handles).0
}

fn hello() -> Hello {
    Hello {
        magic: wire::MAGIC,
        version: wire::PROTOCOL_VERSION,
        pid: worker::PID,
        role: "back".into(),
        slot: 0,
        exports: vec!["f".into()],
    }
}

fn welcome() -> Welcome {
    mob_fuzz::real_welcome().clone()
}

/// Runs a kingpin (the kingpin target's config) and its worker `back#0`
/// (the worker target's) in memory, recording what each writes: a
/// handshake, messages with fds both ways, a request from the kingpin whose
/// handler invokes a callback, and a request from the worker to the kingpin.
fn exchange() -> (Vec<Chunk>, Vec<Chunk>) {
    let mut config = KingpinConfig::new("fuzz");
    for (name, n) in mob_fuzz::ROLES {
        config = config.role(name, n);
    }
    let mut k = Kingpin::new(config);
    let now = Instant::ZERO;
    let mut w: Option<(mob_proto::LinkId, Worker)> = None;
    let (mut k2w, mut w2k) = (Vec::new(), Vec::new());
    let mut next_fd = 100;
    let mut fd = |n: usize| -> Vec<FdHandle> {
        next_fd += n as u64;
        (next_fd - n as u64..next_fd).map(FdHandle::from_raw).collect()
    };
    let mut got = Vec::new();
    for _round in 0..8 {
        while let Some(out) = k.poll_output() {
            match out {
                Output::Spawn(s) if w.is_none() => {
                    k.handle_spawned(s.link, worker::PID, now);
                    let cfg = WorkerConfig {
                        pid: worker::PID,
                        role: s.role.to_string(),
                        slot: s.slot,
                        exports: vec!["f".into()],
                    };
                    w = Some((s.link, Worker::new(cfg)));
                }
                Output::Event(Event::WorkerUp(info)) => {
                    k.send(Target::Pid(info.pid), "_", "hi", b"hello", fd(2)).unwrap();
                    k.send(Target::Role("back".into()), "_", "all", b"x", vec![]).unwrap();
                    k.request(Target::Any("back".into()), wire::RPC_NAMESPACE, "f", b"arg", fd(1), None, 1, now)
                        .unwrap();
                }
                Output::Event(Event::Message { name, .. }) => got.push(name),
                Output::Event(Event::Callback { .. }) => got.push("callback".into()),
                Output::Event(Event::Reply { result, .. }) => {
                    assert_eq!(result.unwrap().1.len(), 1);
                    got.push("reply".into());
                }
                Output::Event(Event::Request { from, id, .. }) => {
                    k.respond(from.link, id, Ok(()), b"answer", fd(1)).unwrap();
                }
                _ => {}
            }
        }
        let Some((link, w)) = w.as_mut() else { continue };
        while let Some(t) = k.poll_transmit(*link) {
            let bytes = t.bytes.to_vec();
            let fds = k.handle_transmitted(*link, bytes.len());
            k2w.push((bytes.clone(), fds.len()));
            w.handle_read(&bytes, fds);
        }
        while let Some(out) = w.poll_output() {
            match out {
                WorkerOutput::Event(WorkerEvent::Message { name, fds, .. }) if name == "hi" => {
                    w.send(Target::Kingpin, "_", "back-at-you", b"ok", fds).unwrap();
                    w.send(Target::Role("front".into()), "_", "fwd", b"f", vec![]).unwrap();
                    w.send(Target::Pid(worker::PID), "_", "self", b"s", fd(1)).unwrap();
                    w.request(Target::Kingpin, "_", "q", b"?", vec![], None, 0, now).unwrap();
                }
                WorkerOutput::Event(WorkerEvent::Request { call, callbacks, fds, .. }) => {
                    w.invoke(call, callbacks[0], b"progress", vec![]).unwrap();
                    w.respond(call, Ok(()), b"result", fds).unwrap();
                }
                WorkerOutput::Event(WorkerEvent::Reply { result, .. }) => {
                    assert_eq!(result.unwrap().1.len(), 1);
                }
                _ => {}
            }
        }
        while let Some(t) = w.poll_transmit() {
            let bytes = t.bytes.to_vec();
            let fds = w.handle_transmitted(bytes.len());
            w2k.push((bytes.clone(), fds.len()));
            k.handle_read(*link, &bytes, fds, now);
        }
    }
    assert_eq!(got, ["back-at-you", "callback", "reply"], "the recorded exchange went wrong");
    (k2w, w2k)
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (k2w, w2k) = exchange();
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();

    // decoder
    let dec = |ops: &[decoder::Op]| {
        let mut w = Writer::new();
        w.u8(decoder::config_byte(DEFAULT_MAX_BODY));
        for op in ops {
            op.write(&mut w);
        }
        w.buf
    };
    let send = Send { to: Target::Role("front".into()), ns: "_", name: "job" };
    let deliver = Deliver { from: Source::Worker { id: 2, pid: 1001 }, ns: "_", name: "job" };
    let deliver_fds = frame(Kind::Deliver, &deliver, b"payload", 2);
    let (head, tail) = deliver_fds.split_at(3);
    let mut split = vec![decoder::Op::Read { fds: 1, bytes: head }];
    split.extend(tail.chunks(4).map(|c| decoder::Op::Read { fds: 0, bytes: c }));
    seeds.extend([
        ("decoder", "hello", dec(&[decoder::Op::Read { fds: 0, bytes: &frame(Kind::Hello, &hello(), b"", 0) }])),
        ("decoder", "welcome", dec(&[decoder::Op::Read { fds: 0, bytes: &frame(Kind::Welcome, &welcome(), b"", 0) }])),
        (
            "decoder",
            "send",
            dec(&[decoder::Op::Read { fds: 0, bytes: &frame(Kind::Send, &send, b"work", 0) }, decoder::Op::Eof]),
        ),
        ("decoder", "deliver-fds", dec(&[decoder::Op::Read { fds: 2, bytes: &deliver_fds }, decoder::Op::Eof])),
        ("decoder", "deliver-split", dec(&split)),
    ]);
    let stream = |chunks: &[Chunk]| {
        let mut ops: Vec<decoder::Op> = chunks.iter().map(|(b, n)| decoder::Op::Read { fds: *n, bytes: b }).collect();
        ops.push(decoder::Op::Eof);
        dec(&ops)
    };
    seeds.push(("decoder", "exchange-k2w", stream(&k2w)));
    seeds.push(("decoder", "exchange-w2k", stream(&w2k)));

    // worker
    let wk = |ops: &[worker::Op]| {
        let mut w = Writer::new();
        for op in ops {
            op.write(&mut w);
        }
        w.buf
    };
    use worker::Op as W;
    seeds.push((
        "worker",
        "welcome-deliver",
        wk(&[
            W::Transmit { n: u16::MAX },
            W::Welcome { bad_version: false, max_body: 0 },
            W::Deliver { fds: 2, from_worker: true, name: b"ping", payload: b"data" },
            W::Send { target: 0, fds: 1, payload: b"pong" },
            W::Transmit { n: 5 },
            W::Transmit { n: u16::MAX },
            W::Eof,
        ]),
    ));
    seeds.push((
        "worker",
        "calls",
        wk(&[
            W::Welcome { bad_version: false, max_body: 0 },
            W::Call { fds: 1, id: 5, callbacks: 1, payload: b"arg" },
            W::AppInvoke { call: 5, callback: 1, fds: 0, payload: b"progress" },
            W::Respond { call: 0, result: 0, fds: 1, payload: b"result" },
            W::Request { target: 6, fds: 1, timeout: 10, callbacks: 2, payload: b"q" },
            W::Transmit { n: u16::MAX },
            W::Invoke { fds: 1, call: 1, callback: 1, payload: b"cb" },
            W::Reply { fds: 1, id: 1, result: 0, payload: b"answer" },
            W::Release { call: 1 },
            W::Request { target: 0, fds: 0, timeout: 0, callbacks: 1, payload: b"q2" },
            W::Call { fds: 0, id: 6, callbacks: 0, payload: b"" },
            W::Cancel { id: 6 },
            W::AppCancel { id: 2 },
            W::Timeout { step: 0 },
            W::Transmit { n: u16::MAX },
            W::Eof,
        ]),
    ));
    seeds.push((
        "worker",
        "supervision",
        wk(&[
            W::Welcome { bad_version: false, max_body: 0 },
            W::Ping { seq: 7 },
            W::Status { sel: 0, value: 1 },
            W::Status { sel: 1, value: 200 },
            W::Status { sel: 3, value: 3 },
            W::Transmit { n: u16::MAX },
            W::Stop { grace: 10 },
            W::Status { sel: 2, value: 0 },
            W::Transmit { n: u16::MAX },
            W::Eof,
        ]),
    ));
    seeds.push(("worker", "reject", wk(&[W::Reject { reason: b"started as front#0" }])));
    let mut ops = vec![W::Transmit { n: u16::MAX }];
    for (b, n) in &k2w {
        ops.push(W::Read { fds: *n, bytes: b });
        ops.push(W::Send { target: 4, fds: 0, payload: b"fwd" });
        ops.push(W::Transmit { n: u16::MAX });
    }
    ops.push(W::Eof);
    seeds.push(("worker", "exchange", wk(&ops)));

    // kingpin
    let kp = |ops: &[kingpin::Op]| {
        let mut w = Writer::new();
        w.u8(0);
        for op in ops {
            op.write(&mut w);
        }
        w.buf
    };
    use kingpin::Op as K;
    let all = u16::MAX;
    seeds.push((
        "kingpin",
        "handshake",
        kp(&[
            K::Spawned { idx: 0 },
            K::Read { link: 0, hello: kingpin::HELLO, fds: 0, bytes: b"" },
            K::Transmit { link: 0, n: all },
            K::Send { target: 9, fds: 1, payload: b"hi" },
            K::Transmit { link: 0, n: 3 },
            K::Transmit { link: 0, n: all },
            K::ReadSend { link: 0, target: 0, fds: 1, payload: b"yo" },
            K::Eof { link: 0 },
            K::Exited { idx: 0, status: 0 },
            K::Timeout { step: 0 },
        ]),
    ));
    seeds.push((
        "kingpin",
        "routing",
        kp(&[
            K::Send { target: 7, fds: 1, payload: b"early" },
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Read { link: 0, hello: kingpin::HELLO, fds: 0, bytes: b"" },
            K::Read { link: 1, hello: kingpin::HELLO, fds: 0, bytes: b"" },
            K::Read { link: 2, hello: kingpin::HELLO, fds: 0, bytes: b"" },
            K::ReadSend { link: 0, target: 4, fds: 1, payload: b"to front" },
            K::ReadSend { link: 2, target: 6, fds: 0, payload: b"to any back" },
            K::ReadSend { link: 1, target: 1, fds: 0, payload: b"to all" },
            K::Transmit { link: 0, n: all },
            K::Transmit { link: 1, n: all },
            K::Transmit { link: 2, n: all },
            K::Read { link: 1, hello: kingpin::HELLO | 4, fds: 0, bytes: b"" },
            K::Exited { idx: 1, status: 1 },
            K::Timeout { step: 0 },
        ]),
    ));
    let hello = kingpin::HELLO | kingpin::EXPORTS;
    seeds.push((
        "kingpin",
        "requests",
        kp(&[
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Read { link: 0, hello, fds: 0, bytes: b"" },
            K::Read { link: 1, hello, fds: 0, bytes: b"" },
            K::Read { link: 2, hello, fds: 0, bytes: b"" },
            // The kingpin's request 1 to any back: the handler invokes its
            // callback, then replies with an fd.
            K::Request { target: 6, fds: 1, timeout: 0, callbacks: 1, ns: 1, payload: b"arg" },
            K::Transmit { link: 0, n: all },
            K::ReadInvoke { link: 0, fds: 1, call: 1, callback: 1, payload: b"cb" },
            K::ReadReply { link: 0, fds: 1, id: 1, result: 0, payload: b"answer" },
            // back#0 asks the kingpin; the kingpin answers.
            K::ReadRequest { link: 0, target: 0, fds: 1, id: 7, callbacks: 0, timeout: 10, ns: 0, payload: b"q" },
            K::Respond { sel: 0, result: 0, fds: 1, payload: b"a" },
            // back#0 asks any front (forwarded as call 2 to link 2).
            K::ReadRequest { link: 0, target: 7, fds: 1, id: 8, callbacks: 1, timeout: 50, ns: 0, payload: b"fwd" },
            K::Transmit { link: 2, n: all },
            K::ReadInvoke { link: 2, fds: 0, call: 2, callback: 1, payload: b"cb" },
            K::ReadReply { link: 2, fds: 1, id: 2, result: 0, payload: b"done" },
            K::Transmit { link: 0, n: all },
            // A request that times out, and one that is cancelled.
            K::Request { target: 9, fds: 0, timeout: 5, callbacks: 1, ns: 0, payload: b"slow" },
            K::Request { target: 7, fds: 1, timeout: 0, callbacks: 0, ns: 0, payload: b"c" },
            K::Cancel { id: 4 },
            K::Timeout { step: 10 },
            K::Transmit { link: 0, n: all },
            K::Transmit { link: 2, n: all },
            K::Exited { idx: 2, status: 0 },
        ]),
    ));
    seeds.push((
        "kingpin",
        "supervision",
        kp(&[
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Spawned { idx: 0 },
            K::Read { link: 0, hello, fds: 0, bytes: b"" },
            K::Read { link: 1, hello, fds: 0, bytes: b"" },
            K::Read { link: 2, hello, fds: 0, bytes: b"" },
            // Job 1 to back, answered with an fd; job 2 to front times out.
            K::Enqueue { role: 0, fds: 1, timeout: 0, retries: 1, payload: b"job" },
            K::Transmit { link: 0, n: all },
            K::ReadReply { link: 0, fds: 1, id: 1, result: 0, payload: b"done" },
            K::ReadControl { link: 2, sel: 0, value: 0 },
            K::Enqueue { role: 1, fds: 1, timeout: 5, retries: 0, payload: b"later" },
            K::Timeout { step: 10 },
            K::ReadControl { link: 0, sel: 1, value: 1 },
            K::ReadControl { link: 1, sel: 2, value: 0 },
            K::ReadControl { link: 1, sel: 3, value: 3 },
            K::Supervise { sel: 3, value: 1 },
            K::Spawned { idx: 0 },
            K::Supervise { sel: 2, value: 2 },
            K::Transmit { link: 0, n: all },
            K::Transmit { link: 1, n: all },
            K::Exited { idx: 1, status: 3 },
            K::Supervise { sel: 0, value: 0 },
            K::Timeout { step: 0 },
        ]),
    ));
    let mut ops = vec![K::Spawned { idx: 0 }];
    for (b, n) in &w2k {
        ops.push(K::Read { link: 0, hello: 0, fds: *n, bytes: b });
        ops.push(K::Transmit { link: 0, n: all });
    }
    ops.extend([K::Eof { link: 0 }, K::Exited { idx: 0, status: 0 }, K::Timeout { step: 0 }]);
    seeds.push(("kingpin", "exchange", kp(&ops)));

    let mut total = 0;
    for (target, name, bytes) in &seeds {
        match *target {
            "decoder" => decoder::run(bytes),
            "worker" => worker::run(bytes),
            _ => kingpin::run(bytes),
        }
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
        total += bytes.len();
    }
    println!("wrote {} seeds, {total} bytes, under {}", seeds.len(), dir.display());
}
