//! Workers that speak the protocol by hand on their channel (fd 3), without
//! a runtime: they break it on purpose. Being the only writer on their
//! channel, they can write bytes no runtime would, at any moment, the same
//! under either runtime's kingpin.

use mob_proto::frame::{Decoder, Header, encode_frame};
use mob_proto::wire::{Hello, Kind, MAGIC, Message, Send, Target};
use mob_proto::{Failure, FdTable, Worker, WorkerConfig, WorkerEvent, WorkerOutput};
use mob_sys::channel::{recv_with_fds, send_with_fds, set_nonblocking};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The worker's channel to the kingpin (the runtime's mobster owns it and
/// keeps it open while these workers run).
fn channel() -> BorrowedFd<'static> {
    // SAFETY: the kingpin placed our channel at CHANNEL_FD; the mobster that
    // owns it lives until the process exits, so the fd stays open.
    unsafe { BorrowedFd::borrow_raw(mob_sys::CHANNEL_FD) }
}

/// Writes a header that claims a 4 GiB body straight onto the channel, then
/// waits to be killed.
pub fn garbage() -> ! {
    send_with_fds(&channel(), &[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0], &[]).ok();
    loop {
        std::thread::park();
    }
}

/// Says hello in protocol version 99 and prints the kingpin's answer as
/// `rejected ROLE 0 PID kingpin VERSION: REASON`.
pub fn bad_version(role: &str) -> io::Result<()> {
    let fd = channel();
    set_nonblocking(&fd, false)?;
    let hello =
        Hello { magic: MAGIC, version: 99, pid: std::process::id(), role: role.into(), slot: 0, exports: vec![] };
    let frame = encode_frame(Kind::Hello as u8, &hello, &[], 0, 1 << 20).expect("a hello");
    send_with_fds(&fd, &frame, &[])?;
    let mut dec = Decoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = recv_with_fds(&fd, &mut buf, &mut Vec::new()).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        dec.handle_read(&buf[..n], Vec::new());
        if let Ok(Some(f)) = dec.decode() {
            if let Ok(Message::Reject(r)) = Message::parse_owned(f) {
                println!("rejected {role} 0 {} kingpin {}: {}", std::process::id(), r.version, r.reason);
            }
            return Ok(());
        }
    }
}

/// A well-behaved worker until told otherwise, driving `mob-proto`'s
/// [`Worker`] with blocking reads and writes on one thread: message
/// `hostile KIND` writes KIND onto the channel ([`hostile`]), `stall` stops
/// reading for good; request `echo` is answered `TEXT from PID`, others
/// `Unhandled`. Ends at end of stream.
pub fn hostile_worker(role: &str, slot: u32) -> io::Result<()> {
    let fd = channel();
    set_nonblocking(&fd, false)?;
    let config = WorkerConfig { pid: std::process::id(), role: role.into(), slot, exports: vec![] };
    let mut worker = Worker::new(config);
    let mut fds = FdTable::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        flush(&fd, &mut worker, &mut fds)?;
        while let Some(out) = worker.poll_output() {
            match out {
                WorkerOutput::Event(WorkerEvent::Message { name, payload, fds: handles, .. }) => {
                    handles.into_iter().for_each(|h| drop(fds.take(h)));
                    match name.as_str() {
                        "hostile" => {
                            // Everything proto queued goes first: what follows
                            // is ours alone.
                            flush(&fd, &mut worker, &mut fds)?;
                            hostile(&postcard::from_bytes::<String>(&payload).unwrap_or_default());
                        }
                        "stall" => loop {
                            std::thread::park();
                        },
                        _ => {}
                    }
                }
                WorkerOutput::Event(WorkerEvent::Request { call, name, payload, fds: handles, .. }) => {
                    handles.into_iter().for_each(|h| drop(fds.take(h)));
                    if name == "echo" {
                        let text: String = postcard::from_bytes(&payload).unwrap_or_default();
                        let answer = postcard::to_allocvec(&format!("{text} from {}", std::process::id()));
                        let _ = worker.respond(call, Ok(()), &answer.unwrap_or_default(), Vec::new());
                    } else {
                        let _ = worker.respond(call, Err(Failure::Unhandled), &[], Vec::new());
                    }
                }
                WorkerOutput::ReleaseFd(h) => drop(fds.take(h)),
                WorkerOutput::Closed(_) => return Ok(()),
                WorkerOutput::Event(_) | WorkerOutput::Transmit => {}
            }
        }
        flush(&fd, &mut worker, &mut fds)?;
        let mut got = Vec::new();
        let n = recv_with_fds(&fd, &mut buf, &mut got).map_err(|_| io::Error::other("read error"))?;
        if n == 0 {
            return Ok(());
        }
        let handles = got.into_iter().map(|f| fds.insert(f)).collect();
        worker.handle_read(&buf[..n], handles);
    }
}

/// Writes everything `worker` has queued (blocking).
fn flush(fd: &BorrowedFd<'_>, worker: &mut Worker, fds: &mut FdTable<OwnedFd>) -> io::Result<()> {
    while let Some(t) = worker.poll_transmit() {
        let raw: Vec<i32> = t.fds.iter().filter_map(|h| fds.get(h).map(|fd| fd.as_raw_fd())).collect();
        let n = send_with_fds(fd, t.bytes, &raw)?;
        for h in worker.handle_transmitted(n) {
            drop(fds.take(h));
        }
    }
    Ok(())
}

/// Writes bytes that break the protocol onto the channel: `garbage` (a
/// header whose reserved bytes are not zero), `claims-fd` (a frame that
/// claims an fd it does not carry), `stray-fd` (an fd in the middle of a
/// frame, claimed by nothing), `unknown-kind` (a frame of kind 200), or
/// `flood` (200,000 valid frames to role `b`, as fast as they go).
pub fn hostile(kind: &str) {
    let fd = channel();
    let send = Send { to: Target::Kingpin, ns: "_", name: "x" };
    let frame = encode_frame(Kind::Send as u8, &send, b"payload", 0, 1 << 20).expect("a frame");
    let (r, _w) = nix::unistd::pipe().expect("pipe");
    let result = match kind {
        "garbage" => send_with_fds(&fd, &[3, 0, 0, 0, 16, 0, 0xde, 0xad, 1, 2, 3], &[]),
        "claims-fd" => {
            let mut f = frame.clone();
            let header = Header { len: (f.len() - 8) as u32, kind: Kind::Send as u8, fds: 1 }.encode();
            f[..8].copy_from_slice(&header);
            send_with_fds(&fd, &f, &[])
        }
        "stray-fd" => {
            send_with_fds(&fd, &frame[..10], &[]).and_then(|_| send_with_fds(&fd, &frame[10..], &[r.as_raw_fd()]))
        }
        "flood" => {
            let send = Send { to: Target::Role("b".into()), ns: "_", name: "flooded" };
            let one = encode_frame(Kind::Send as u8, &send, &[0u8; 64], 0, 1 << 20).expect("a frame");
            let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
            (0..200).try_for_each(|_| write_all(&fd, &batch)).map(|()| 0)
        }
        "unknown-kind" => send_with_fds(&fd, &Header { len: 0, kind: 200, fds: 0 }.encode(), &[]),
        _ => Ok(0),
    };
    result.ok();
}

/// Writes all of `bytes` (a blocking socket may take them in parts).
fn write_all(fd: &BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        off += send_with_fds(fd, &bytes[off..], &[])?;
    }
    Ok(())
}
