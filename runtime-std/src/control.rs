//! The kingpin's control socket on threads: an accept thread (blocking
//! accept, the peer's user checked), and per connection a reader thread
//! that hands its bytes to the kingpin's loop and a writer thread that
//! writes the replies, so that a client that does not read never blocks
//! the loop (what waits for it is bounded by proto's
//! `MAX_CONTROL_QUEUED`). What the bytes mean is [`ControlServer`]'s
//! business.

use crate::link::{Credit, Msg};
use mob_proto::{ControlId, ControlOutput, ControlServer, Instant};
use mob_sys::control::{SocketFile, bind_private, my_uid};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// How long one write to a client may block before the connection is
/// given up (a client that does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the kingpin's exit waits for the last replies to be written.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// What the control socket's threads tell the kingpin's loop.
pub(crate) enum ControlMsg {
    /// A connection from the kingpin's own user.
    Accepted(UnixStream),
    /// Bytes read from a connection.
    Read(ControlId, Vec<u8>),
    /// A connection's reader is done: end of file (`None`) or an error.
    ReadEnd(ControlId, Option<&'static str>),
    /// A connection's writer wrote a chunk (its length), or failed.
    Written(ControlId, Option<usize>),
}

/// One open connection, as the loop sees it.
struct Conn {
    /// To wake its reader when it closes.
    stream: UnixStream,
    credit: Arc<Credit>,
    /// Chunks for its writer thread.
    writer: Sender<Vec<u8>>,
    /// Bytes handed to the writer and not yet reported written.
    in_flight: usize,
}

/// The control socket and its connections.
pub(crate) struct Control {
    listener: UnixListener,
    /// Set before the listener is shut down: the accept thread then ends.
    closed: Arc<AtomicBool>,
    file: SocketFile,
    server: ControlServer,
    conns: HashMap<ControlId, Conn>,
    tx: Sender<Msg>,
    /// Each writer thread holds a clone; all dropped: every writer ended.
    writers_tx: Option<Sender<()>>,
    writers_rx: Receiver<()>,
}

impl Control {
    /// Binds the control socket at `path` (mode 0600; a stale socket there
    /// is replaced) and starts its accept thread.
    pub(crate) fn bind(path: &Path, tx: Sender<Msg>, now: Instant) -> std::io::Result<Control> {
        let (listener, file) = bind_private(path)?;
        let accepting = listener.try_clone()?;
        let closed = Arc::new(AtomicBool::new(false));
        let (uid, path_buf, thread_tx, thread_closed) = (my_uid(), path.to_path_buf(), tx.clone(), closed.clone());
        std::thread::Builder::new()
            .name("mob-control".into())
            .spawn(move || accept(accepting, uid, path_buf, thread_tx, thread_closed))?;
        log::info!("control socket at {}", path.display());
        let (writers_tx, writers_rx) = channel();
        Ok(Control {
            listener,
            closed,
            file,
            server: ControlServer::new(std::process::id(), now),
            conns: HashMap::new(),
            tx,
            writers_tx: Some(writers_tx),
            writers_rx,
        })
    }

    /// Handles what one of this module's threads sent.
    pub(crate) fn handle(&mut self, msg: ControlMsg, kingpin: &mut mob_proto::Kingpin, now: Instant) {
        match msg {
            ControlMsg::Accepted(stream) => self.open(stream),
            ControlMsg::Read(id, bytes) => {
                let Some(conn) = self.conns.get(&id) else { return };
                let credit = conn.credit.clone();
                self.server.handle_read(id, &bytes, kingpin, now);
                credit.give(bytes.len());
            }
            ControlMsg::ReadEnd(id, end) => {
                if self.conns.contains_key(&id) {
                    match end {
                        None => self.server.handle_eof(id, kingpin, now),
                        Some(what) => self.server.handle_error(id, what),
                    }
                }
            }
            ControlMsg::Written(id, written) => {
                let Some(conn) = self.conns.get_mut(&id) else { return };
                conn.in_flight = 0;
                match written {
                    Some(n) => {
                        self.server.handle_transmitted(id, n);
                        self.write(id);
                    }
                    None => self.server.handle_error(id, "write error"),
                }
            }
        }
        self.pump();
    }

    /// Opens a connection: its reader and writer threads.
    fn open(&mut self, stream: UnixStream) {
        let Some(id) = mob_app::control::open(&mut self.server) else { return };
        match self.start(id, stream) {
            Ok(conn) => {
                self.conns.insert(id, conn);
            }
            Err(e) => {
                log::warn!("control: cannot serve a connection: {e}");
                self.server.handle_closed(id);
            }
        }
    }

    fn start(&self, id: ControlId, stream: UnixStream) -> std::io::Result<Conn> {
        let reading = stream.try_clone()?;
        let writing = stream.try_clone()?;
        writing.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let credit = Credit::new();
        let (writer, chunks) = channel();
        let (tx, reader_credit) = (self.tx.clone(), credit.clone());
        std::thread::Builder::new()
            .name("mob-control-read".into())
            .spawn(move || read(id, reading, tx, reader_credit))?;
        let (tx, done) = (self.tx.clone(), self.writers_tx.clone());
        std::thread::Builder::new().name("mob-control-write".into()).spawn(move || {
            write(id, writing, chunks, tx);
            drop(done);
        })?;
        Ok(Conn { stream, credit, writer, in_flight: 0 })
    }

    /// Hands `id`'s writer what is queued, unless it is still writing.
    fn write(&mut self, id: ControlId) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.in_flight > 0 {
            return;
        }
        let Some(bytes) = self.server.poll_transmit(id) else { return };
        conn.in_flight = bytes.len();
        if conn.writer.send(bytes.to_vec()).is_err() {
            self.server.handle_error(id, "write error");
        }
    }

    /// Carries out what the server asks.
    fn pump(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                ControlOutput::Transmit(id) => self.write(id),
                ControlOutput::Close(id, reason) => {
                    self.close(id);
                    log::debug!("control: connection closed: {reason}");
                }
                ControlOutput::Log(line) => log::info!("{line}"),
            }
        }
    }

    /// Closes `id`: what is queued goes to its writer, which writes it and
    /// then shuts the connection down; its reader is woken and ends.
    fn close(&mut self, id: ControlId) {
        if let Some(conn) = self.conns.remove(&id) {
            if let Some(bytes) = self.server.poll_transmit(id) {
                let rest = &bytes[conn.in_flight.min(bytes.len())..];
                if !rest.is_empty() {
                    let _ = conn.writer.send(rest.to_vec());
                }
            }
            conn.credit.close();
            let _ = conn.stream.shutdown(Shutdown::Read);
        }
        self.server.handle_closed(id);
    }

    /// Answers nothing more: every connection closes (clients see the
    /// kingpin exit) once what is queued for it is written, for at most
    /// [`EXIT_FLUSH`]; the socket is removed.
    pub(crate) fn close_all(mut self) {
        self.pump();
        let ids: Vec<ControlId> = self.server.connections().collect();
        for id in ids {
            self.close(id);
        }
        self.writers_tx = None;
        let deadline = std::time::Instant::now() + EXIT_FLUSH;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.writers_rx.recv_timeout(left) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // Wakes the accept thread (a listening socket shut down fails
        // `accept`), which then ends; `file` removes the socket.
        self.closed.store(true, Ordering::SeqCst);
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        log::debug!("control socket at {} closed", self.file.path().display());
    }
}

/// The accept thread: lets in the kingpin's own user, refuses (and logs)
/// everyone else. Ends when the kingpin is gone or the socket is closed.
fn accept(listener: UnixListener, uid: u32, path: PathBuf, tx: Sender<Msg>, closed: Arc<AtomicBool>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if closed.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of fds, a connection reset before it was accepted:
                // try again shortly.
                log::warn!("control: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !mob_app::control::check(&stream, uid, &path) {
            continue;
        }
        if tx.send(Msg::Control(ControlMsg::Accepted(stream))).is_err() {
            return;
        }
    }
}

/// A connection's reader thread: its bytes go to the loop, no more than
/// the read-ahead ahead of it.
fn read(id: ControlId, mut stream: UnixStream, tx: Sender<Msg>, credit: Arc<Credit>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let end = match stream.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                if tx.send(Msg::Control(ControlMsg::Read(id, buf[..n].to_vec()))).is_err() || !credit.take(n) {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => Some("read error"),
        };
        let _ = tx.send(Msg::Control(ControlMsg::ReadEnd(id, end)));
        return;
    }
}

/// A connection's writer thread: writes each chunk and reports it; once
/// the loop lets go of the connection, shuts it down.
fn write(id: ControlId, mut stream: UnixStream, chunks: Receiver<Vec<u8>>, tx: Sender<Msg>) {
    for chunk in chunks {
        let written = stream.write_all(&chunk).map(|()| chunk.len()).ok();
        let failed = written.is_none();
        let _ = tx.send(Msg::Control(ControlMsg::Written(id, written)));
        if failed {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
