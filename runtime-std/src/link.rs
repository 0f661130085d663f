//! One link's IO on threads: a reader thread blocks in `recvmsg` and hands
//! the loop what it reads. The loop writes itself while the socket takes
//! bytes without waiting (`MSG_DONTWAIT`: no thread hand-off per frame), and
//! hands the rest to a writer thread, which blocks. So the loop (the one
//! owner of the proto state machine) never blocks on a socket, a peer that
//! stops reading stalls only its own writer thread, and timers keep firing.
//!
//! Bytes stay in proto's outgoing queue until the writer reports them
//! written, so proto's accounting (the high-water mark that turns sends into
//! backpressure) sees exactly what a non-blocking runtime would.

use crate::loop_tx::{Command, WorkerCommand};
use mob_app::HeldFd;
use mob_proto::frame::Transmit;
use mob_proto::{FdHandle, FdTable, LinkId};
use mob_sys::channel::{RecvError, recv_with_fds, send_with_fds};
use nix::sys::signal::Signal;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Size of each reader thread's buffer.
const READ_BUF: usize = 64 * 1024;

/// The most a writer is handed at once. Bytes handed over stay in proto's
/// queue until all of them are written; a small chunk keeps that queue what
/// a non-blocking runtime's would be (the bytes the peer has not taken),
/// within one chunk, instead of counting a whole backlog as unsent until
/// the last of it leaves.
const WRITE_CHUNK: usize = 64 * 1024;

/// Bytes a reader may have read ahead of the loop (and, on a worker, of the
/// application's `recv`) before it stops reading: what the kernel's socket
/// buffer does for a non-blocking runtime, so that a flood from the peer
/// cannot grow this process without bound.
pub(crate) const READ_AHEAD: usize = 8 << 20;

/// How a link's reading ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed the stream.
    Eof,
    /// The link cannot be read any more.
    Failed(&'static str),
}

/// What a loop is told: IO from its link threads, signals, and commands from
/// the application's threads.
pub(crate) enum Msg {
    /// One read: bytes, and the fds that came with them.
    Read { link: LinkId, bytes: Vec<u8>, fds: Vec<OwnedFd> },
    /// The reader thread is done.
    ReadEnd { link: LinkId, end: ReadEnd },
    /// Writers finished: see [`Writes`] (sent when it stops being empty).
    WritesDone,
    /// Signals arrived (kingpin only).
    Signals(Vec<Signal>),
    /// A command from the application.
    App(Command),
    /// A command only a mobster's loop takes.
    Worker(WorkerCommand),
    /// From the control socket's threads (kingpin only).
    Control(crate::control::ControlMsg),
}

/// Read-ahead accounting shared by a reader thread and the loop.
pub(crate) struct Credit {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Credit {
    pub(crate) fn new() -> Arc<Credit> {
        Arc::new(Credit { state: Mutex::new((0, false)), cv: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader read `n` bytes: counts them and waits while too much is
    /// outstanding. False once the link is closed.
    pub(crate) fn take(&self, n: usize) -> bool {
        let mut s = self.lock();
        s.0 += n;
        while s.0 > READ_AHEAD && !s.1 {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        !s.1
    }

    /// Counts `n` more bytes outstanding (queued for the application).
    pub(crate) fn add(&self, n: usize) {
        self.lock().0 += n;
    }

    /// `n` outstanding bytes were dealt with.
    pub(crate) fn give(&self, n: usize) {
        let mut s = self.lock();
        s.0 = s.0.saturating_sub(n);
        self.cv.notify_all();
    }

    /// The link is closed: the reader stops waiting.
    pub(crate) fn close(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }
}

/// The writes a loop's writer threads have finished, by link: the bytes
/// written, or `None` if the link could not be written. They are handed
/// over beside the loop's channel, which only wakes the loop, so that the
/// loop sees them before whatever is queued ahead: a link whose reads flood
/// the loop cannot keep another link's writer waiting for its next chunk
/// (a non-blocking runtime learns of writability at once, too).
#[derive(Default)]
pub(crate) struct Writes {
    done: Mutex<Vec<(LinkId, Option<usize>)>>,
}

impl Writes {
    pub(crate) fn new() -> Arc<Writes> {
        Arc::default()
    }

    /// Records a finished write; true if the loop must be woken (nothing
    /// was waiting for it yet).
    fn push(&self, link: LinkId, written: Option<usize>) -> bool {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push((link, written));
        done.len() == 1
    }

    /// Every finished write not yet taken, in order.
    pub(crate) fn take(&self) -> Vec<(LinkId, Option<usize>)> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Bytes for the writer thread, with the fds that ride with the first one
/// (the writer drops them once they are sent).
struct Chunk {
    bytes: Vec<u8>,
    fds: Vec<HeldFd>,
}

/// The loop's side of one link: its socket, its writer, its read-ahead.
pub(crate) struct LinkIo {
    sock: UnixStream,
    writer: Sender<Chunk>,
    writing: bool,
    credit: Arc<Credit>,
}

impl LinkIo {
    /// Starts the reader and writer threads of `sock` (a connected Unix
    /// stream socket, made blocking here), reporting to `tx` (and finished
    /// writes to `writes`) as `link`.
    pub(crate) fn start(
        link: LinkId,
        sock: OwnedFd,
        tx: Sender<Msg>,
        writes: Arc<Writes>,
        credit: Arc<Credit>,
        name: &str,
    ) -> io::Result<LinkIo> {
        mob_sys::channel::set_nonblocking(&sock, false)?;
        let sock = UnixStream::from(sock);
        let (reader_sock, writer_sock) = (sock.try_clone()?, sock.try_clone()?);
        let (wtx, wrx) = channel::<Chunk>();
        let reader_credit = credit.clone();
        let reader_tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("{name}-read"))
            .spawn(move || read_loop(link, reader_sock, reader_tx, reader_credit))?;
        std::thread::Builder::new().name(format!("{name}-write")).spawn(move || {
            for chunk in wrx {
                let written = write_all(&writer_sock, &chunk).ok();
                drop(chunk);
                let wake = writes.push(link, written);
                if wake && tx.send(Msg::WritesDone).is_err() || written.is_none() {
                    return;
                }
            }
        })?;
        Ok(LinkIo { sock, writer: wtx, writing: false, credit })
    }

    /// The read-ahead accounting of this link.
    pub(crate) fn credit(&self) -> &Arc<Credit> {
        &self.credit
    }

    /// Whether the writer has bytes it has not reported written.
    pub(crate) fn is_writing(&self) -> bool {
        self.writing
    }

    /// Writes `out` (what proto offers to write next) at once if the
    /// socket takes it without waiting: `Some(n)`, the bytes written, which
    /// the caller reports to proto (its fds left with them: proto hands
    /// their handles back to close) before it calls again. Otherwise hands
    /// it (at most [`WRITE_CHUNK`] of it) to the writer thread, unless a
    /// write is under way: `None`. Handed fds leave `fds` with the bytes:
    /// the writer closes them once sent, so the handles that proto returns
    /// for them later find nothing to close.
    ///
    /// Writing from the loop saves a thread hand-off per frame when the
    /// peer keeps up (the common case); the writer thread is only for a
    /// peer that does not, so the loop never blocks.
    pub(crate) fn flush<T: AsRawFd + Into<HeldFd>>(
        &mut self,
        out: Option<Transmit<'_>>,
        fds: &mut FdTable<T>,
    ) -> Option<usize> {
        let t = out?;
        if self.writing {
            return None;
        }
        let raw: Vec<RawFd> = t.fds.iter().filter_map(|h| fds.get(h).map(|fd| fd.as_raw_fd())).collect();
        if let Ok(n @ 1..) = mob_sys::channel::try_send_with_fds(&self.sock, t.bytes, &raw) {
            return Some(n);
        }
        let fds = t.fds.iter().filter_map(|h| fds.take(FdHandle::from_raw(h.raw())).map(Into::into)).collect();
        let bytes = t.bytes[..t.bytes.len().min(WRITE_CHUNK)].to_vec();
        if self.writer.send(Chunk { bytes, fds }).is_ok() {
            self.writing = true;
        }
        None
    }

    /// The writer reported its chunk written.
    pub(crate) fn written(&mut self) {
        self.writing = false;
    }

    /// Closes the link: writes `farewell` if it can go at once without
    /// blocking (best effort), then shuts the socket down, which ends both
    /// threads and shows the peer end of stream.
    pub(crate) fn close(self, farewell: Option<Transmit<'_>>) {
        if let Some(t) = farewell
            && !self.writing
            && t.fds.is_empty()
        {
            use nix::sys::socket::{MsgFlags, send};
            let _ = send(self.sock.as_raw_fd(), t.bytes, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        self.credit.close();
    }
}

/// Writes a whole chunk, its fds with the first byte.
fn write_all(sock: &UnixStream, chunk: &Chunk) -> io::Result<usize> {
    let raw: Vec<RawFd> = chunk.fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut off = 0;
    while off < chunk.bytes.len() {
        let fds: &[RawFd] = if off == 0 { &raw } else { &[] };
        match send_with_fds(sock, &chunk.bytes[off..], fds)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => off += n,
        }
    }
    Ok(off)
}

/// Reads until end of stream, an error, or the loop going away.
fn read_loop(link: LinkId, sock: UnixStream, tx: Sender<Msg>, credit: Arc<Credit>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut fds = Vec::new();
    let end = loop {
        match recv_with_fds(&sock, &mut buf, &mut fds) {
            Ok(0) => break ReadEnd::Eof,
            Ok(n) => {
                let msg = Msg::Read { link, bytes: buf[..n].to_vec(), fds: std::mem::take(&mut fds) };
                if tx.send(msg).is_err() || !credit.take(n) {
                    return;
                }
            }
            Err(RecvError::Io(_)) => break ReadEnd::Failed("read error"),
            Err(RecvError::ControlTruncated) => break ReadEnd::Failed("control data truncated (fds lost)"),
        }
    };
    let _ = tx.send(Msg::ReadEnd { link, end });
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_proto::frame::{DEFAULT_MAX_BODY, OutBuf};
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    const LINK: LinkId = LinkId::from_u64(7);

    fn next(rx: &Receiver<Msg>) -> Msg {
        rx.recv_timeout(Duration::from_secs(5)).expect("a message from the link's threads")
    }

    fn start(ours: OwnedFd, tx: Sender<Msg>, credit: Arc<Credit>) -> (LinkIo, Arc<Writes>) {
        let writes = Writes::new();
        (LinkIo::start(LINK, ours, tx, writes.clone(), credit, "test").unwrap(), writes)
    }

    #[test]
    fn bytes_and_fds_go_out_and_come_in() {
        let (ours, theirs) = mob_sys::channel::socketpair().unwrap();
        let (tx, rx) = channel();
        let (mut io, writes) = start(ours, tx, Credit::new());
        let mut fds = FdTable::new();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let handle = fds.insert(r);
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &("ns", "name"), b"payload", vec![handle]).unwrap();
        let len = out.len();
        // The socket has room: written at once, from the loop's thread. The
        // fd stays in the table until proto hands its handle back.
        assert_eq!(io.flush(out.peek(), &mut fds), Some(len));
        assert!(!io.is_writing() && writes.take().is_empty());
        let sent = out.advance(len);
        assert_eq!(sent.len(), 1);
        assert!(fds.take(FdHandle::from_raw(sent[0].raw())).is_some());
        assert!(fds.is_empty());
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        assert_eq!(recv_with_fds(&theirs, &mut buf, &mut got).unwrap(), len);
        assert_eq!(got.len(), 1);

        send_with_fds(&theirs, b"hello", &[got[0].as_raw_fd()]).unwrap();
        match next(&rx) {
            Msg::Read { link, bytes, fds } => assert_eq!((link, &bytes[..], fds.len()), (LINK, &b"hello"[..], 1)),
            _ => panic!("expected Read"),
        }
        drop(theirs);
        assert!(matches!(next(&rx), Msg::ReadEnd { end: ReadEnd::Eof, .. }));
    }

    #[test]
    fn what_a_full_socket_does_not_take_goes_to_the_writer_thread() {
        let (ours, theirs) = mob_sys::channel::socketpair().unwrap();
        let (tx, rx) = channel();
        let (mut io, writes) = start(ours, tx, Credit::new());
        let mut fds = FdTable::<OwnedFd>::new();
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(16, &("ns", "big"), &vec![7u8; 2 << 20], Vec::new()).unwrap();
        let total = out.len();
        // The loop writes what the socket takes...
        while let Some(n) = io.flush(out.peek(), &mut fds) {
            out.advance(n);
        }
        // ...and the writer, blocking, the next chunk of the rest.
        assert!(io.is_writing() && !out.is_empty());
        let handed = out.len().min(WRITE_CHUNK);
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < total {
                got += recv_with_fds(&theirs, &mut buf, &mut Vec::new()).unwrap();
            }
        });
        assert!(matches!(next(&rx), Msg::WritesDone));
        assert_eq!(writes.take(), [(LINK, Some(handed))]);
        io.written();
        out.advance(handed);
        while !out.is_empty() {
            match io.flush(out.peek(), &mut fds) {
                Some(n) => drop(out.advance(n)),
                None => {
                    assert!(matches!(next(&rx), Msg::WritesDone));
                    let [(_, Some(n))] = writes.take()[..] else { panic!("one write") };
                    io.written();
                    out.advance(n);
                }
            }
        }
        drain.join().unwrap();
    }

    #[test]
    fn closing_ends_both_threads_and_the_peer_sees_end_of_stream() {
        let (ours, theirs) = mob_sys::channel::socketpair().unwrap();
        let (tx, rx) = channel();
        let (io, _writes) = start(ours, tx, Credit::new());
        let mut out = OutBuf::new(DEFAULT_MAX_BODY);
        out.push(3, &(1u16, "bye"), b"", Vec::new()).unwrap();
        io.close(out.peek());
        let mut buf = [0u8; 64];
        let n = recv_with_fds(&theirs, &mut buf, &mut Vec::new()).unwrap();
        assert_eq!(n, out.len(), "the farewell went out first");
        assert_eq!(recv_with_fds(&theirs, &mut buf, &mut Vec::new()).unwrap(), 0);
        // The reader ends; then every sender is gone (the writer too).
        assert!(matches!(next(&rx), Msg::ReadEnd { .. }));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_reader_stops_at_its_read_ahead_until_the_loop_catches_up() {
        let (ours, theirs) = mob_sys::channel::socketpair().unwrap();
        let (tx, rx) = channel();
        let credit = Credit::new();
        let _io = start(ours, tx, credit.clone());
        let chunk = vec![0u8; 64 * 1024];
        let writer = std::thread::spawn(move || {
            for _ in 0..(2 * READ_AHEAD / chunk.len()) {
                let mut off = 0;
                while off < chunk.len() {
                    off += send_with_fds(&theirs, &chunk[off..], &[]).unwrap();
                }
            }
            theirs
        });
        // Nothing is handed back: the reader stops a little past the limit.
        let mut read = 0;
        while read < READ_AHEAD {
            if let Msg::Read { bytes, .. } = next(&rx) {
                read += bytes.len();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        while let Ok(Msg::Read { bytes, .. }) = rx.try_recv() {
            read += bytes.len();
        }
        assert!(read <= READ_AHEAD + READ_BUF, "{read}");
        // Once the loop has dealt with it, reading goes on to the end.
        credit.give(read);
        let mut total = read;
        while total < 2 * READ_AHEAD {
            if let Msg::Read { bytes, .. } = next(&rx) {
                total += bytes.len();
                credit.give(bytes.len());
            }
        }
        assert_eq!(total, 2 * READ_AHEAD);
        drop(writer.join().unwrap());
        assert!(matches!(next(&rx), Msg::ReadEnd { end: ReadEnd::Eof, .. }));
    }
}
