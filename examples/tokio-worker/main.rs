//! A mob worker on tokio: `mob-proto`'s [`Worker`] state machine driven
//! through `tokio::io::unix::AsyncFd`, with fds passed both ways
//! (SCM_RIGHTS through `mob-sys`'s channel helpers). Neither mob runtime is
//! involved: this is what embedding the sans-IO protocol in another event
//! loop takes.
//!
//! A kingpin starts it like any worker (`App::role_exe("tokio", 1,
//! "path/to/mob-tokio-worker", vec![])`): it takes its channel from fd 3,
//! says hello, and then answers
//! - requests named `echo` with `TEXT from PID`;
//! - jobs (`mob.job`) whose text is `sock`, which carry a socket: it writes
//!   a line on the socket and answers with a pipe whose other end it has
//!   written a line to (an fd in, an fd out);
//! - messages named `ping` with a message `pong` to the kingpin.
//!
//! Build: `cargo build -p mob-tests --bin mob-tokio-worker` (tokio is a
//! dependency of the test crate only; the library crates never build it).

use mob_proto::kingpin::{JOB_NAME, JOB_NAMESPACE};
use mob_proto::{Failure, FdHandle, FdTable, Target, Worker, WorkerConfig, WorkerEvent, WorkerOutput};
use mob_sys::channel::{RecvError, recv_with_fds, send_with_fds};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let me = mob_sys::inherit::take()?;
    mob_sys::channel::set_nonblocking(&me.channel, true)?;
    // SAFETY: the OwnedFd is a valid fd that nothing replaces or closes
    // while the AsyncFd owns it (tokio's I/O-safety contract).
    let link = unsafe { AsyncFd::register(me.channel)? };
    let config = WorkerConfig { pid: std::process::id(), role: me.role, slot: me.slot, exports: vec![] };
    let mut proto = Worker::new(config);
    // proto holds fds as handles; the fds themselves wait here.
    let mut fds: FdTable<OwnedFd> = FdTable::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stopping = false;
    loop {
        while let Some(out) = proto.poll_output() {
            match out {
                WorkerOutput::Event(WorkerEvent::Stop { .. }) => stopping = true,
                WorkerOutput::Event(event) => handle(&mut proto, &mut fds, event),
                WorkerOutput::ReleaseFd(h) => drop(fds.take(h)),
                WorkerOutput::Closed(_) => return Ok(()),
                WorkerOutput::Transmit => {}
            }
        }
        let writing = proto.poll_transmit().is_some();
        if stopping && !writing {
            return Ok(()); // asked to stop, and everything is written
        }
        tokio::select! {
            guard = link.readable() => {
                let mut received = Vec::new();
                match guard?.try_io(|fd| recv_with_fds(fd, &mut buf, &mut received).map_err(io_error)) {
                    Ok(Ok(0)) => proto.handle_eof(),
                    Ok(Ok(n)) => proto.handle_read(&buf[..n], received.into_iter().map(|fd| fds.insert(fd)).collect()),
                    Ok(Err(_)) => proto.handle_link_error("read error"),
                    Err(_would_block) => {}
                }
            }
            guard = link.writable(), if writing => {
                let Some(t) = proto.poll_transmit() else { continue };
                let raw: Vec<RawFd> = t.fds.iter().filter_map(|h| fds.get(h).map(|fd| fd.as_raw_fd())).collect();
                match guard?.try_io(|fd| send_with_fds(fd, t.bytes, &raw)) {
                    // The fds that left with these bytes are the kernel's now: close ours.
                    Ok(Ok(n)) => proto.handle_transmitted(n).into_iter().for_each(|h| drop(fds.take(h))),
                    Ok(Err(_)) => proto.handle_link_error("write error"),
                    Err(_would_block) => {}
                }
            }
        }
    }
}

/// The application: answers requests and jobs, replies to pings.
fn handle(proto: &mut Worker, fds: &mut FdTable<OwnedFd>, event: WorkerEvent) {
    let pid = std::process::id();
    match event {
        WorkerEvent::Request { call, ns, name, payload, fds: handles, .. } => {
            let text: String = postcard::from_bytes(&payload).unwrap_or_default();
            let mut got = take(fds, handles);
            let answer = match (ns.as_str(), name.as_str()) {
                ("_", "echo") => Ok((format!("{text} from {pid}"), vec![])),
                (JOB_NAMESPACE, JOB_NAME) if text == "sock" => sock_job(got.pop(), fds),
                _ => Err(Failure::Unhandled),
            };
            let _ = match answer {
                Ok((reply, fds)) => {
                    proto.respond(call, Ok(()), &postcard::to_allocvec(&reply).unwrap_or_default(), fds)
                }
                Err(failure) => proto.respond(call, Err(failure), &[], vec![]),
            };
        }
        WorkerEvent::Message { name, payload, fds: handles, .. } => {
            drop(take(fds, handles));
            if name == "ping" {
                let _ = proto.send(Target::Kingpin, "_", "pong", &payload, vec![]);
            }
        }
        // This worker makes no requests: no replies, callbacks or timers.
        _ => {}
    }
}

/// A job that brought a connection: a line on it, and a pipe back with a
/// line in it.
fn sock_job(conn: Option<OwnedFd>, fds: &mut FdTable<OwnedFd>) -> Result<(String, Vec<FdHandle>), Failure> {
    let pid = std::process::id();
    let conn = conn.ok_or(Failure::Failed("the job carries no socket".into()))?;
    let _ = writeln!(std::os::unix::net::UnixStream::from(conn), "answered on the socket by {pid}");
    let (r, w) = nix::unistd::pipe().map_err(|e| Failure::Failed(e.to_string()))?;
    let _ = writeln!(std::fs::File::from(w), "streamed by {pid}");
    Ok((pid.to_string(), vec![fds.insert(r)]))
}

fn take(fds: &mut FdTable<OwnedFd>, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
    handles.into_iter().filter_map(|h| fds.take(h)).collect()
}

fn io_error(e: RecvError) -> io::Error {
    match e {
        RecvError::Io(e) => e,
        RecvError::ControlTruncated => io::Error::other(e),
    }
}
