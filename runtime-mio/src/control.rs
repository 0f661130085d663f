//! The kingpin's control socket on the event loop: accept, check the peer's
//! user, move bytes. What the bytes mean is [`ControlServer`]'s business.

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use mob_proto::{ControlId, ControlOutput, ControlServer, Instant};
use mob_sys::control::{SocketFile, bind_private, my_uid};
use slab::Slab;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::path::Path;

/// The tokens of this module: the listener, then the connections (a range
/// above worker output's, below the listeners').
const LISTENER: usize = usize::MAX - (1 << 24) + (1 << 22) + 1;
const FIRST_CONN: usize = LISTENER + 1;
const MAX_CONNS: usize = 1 << 16;

/// Whether `token` belongs to the control socket.
pub(crate) fn owns(token: Token) -> bool {
    (LISTENER..FIRST_CONN + MAX_CONNS).contains(&token.0)
}

/// The control socket and its connections.
pub(crate) struct Control {
    listener: UnixListener,
    file: SocketFile,
    server: ControlServer,
    conns: Slab<(ControlId, UnixStream)>,
    keys: HashMap<ControlId, usize>,
    uid: u32,
    buf: Vec<u8>,
}

impl Control {
    /// Binds the control socket at `path` (mode 0600; a stale socket there
    /// is replaced) and registers it.
    pub(crate) fn bind(path: &Path, registry: &Registry, now: Instant) -> std::io::Result<Control> {
        let (listener, file) = bind_private(path)?;
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        registry.register(&mut listener, Token(LISTENER), Interest::READABLE)?;
        log::info!("control socket at {}", path.display());
        Ok(Control {
            listener,
            file,
            server: ControlServer::new(std::process::id(), now),
            conns: Slab::new(),
            keys: HashMap::new(),
            uid: my_uid(),
            buf: vec![0; 16 * 1024],
        })
    }

    /// Handles a readiness event for one of this module's tokens.
    pub(crate) fn ready(&mut self, registry: &Registry, token: Token, kingpin: &mut mob_proto::Kingpin, now: Instant) {
        if token.0 == LISTENER {
            self.accept(registry);
        } else {
            let key = token.0 - FIRST_CONN;
            self.read(key, kingpin, now);
            if let Some((id, _)) = self.conns.get(key) {
                let id = *id;
                self.write(id);
            }
        }
        self.pump(registry);
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control: accept failed: {e}");
                    return;
                }
            };
            if !mob_app::control::check(&stream, self.uid, self.file.path()) {
                continue;
            }
            // The server's limit on connections is far below the token
            // range's (MAX_CONNS).
            let Some(id) = mob_app::control::open(&mut self.server) else { continue };
            let entry = self.conns.vacant_entry();
            let token = Token(FIRST_CONN + entry.key());
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                log::warn!("control: cannot watch a connection: {e}");
                self.server.handle_closed(id);
                continue;
            }
            self.keys.insert(id, entry.key());
            entry.insert((id, stream));
        }
    }

    fn read(&mut self, key: usize, kingpin: &mut mob_proto::Kingpin, now: Instant) {
        let Some((id, stream)) = self.conns.get_mut(key) else { return };
        let id = *id;
        loop {
            match stream.read(&mut self.buf) {
                Ok(0) => return self.server.handle_eof(id, kingpin, now),
                Ok(n) => self.server.handle_read(id, &self.buf[..n], kingpin, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.server.handle_error(id, "read error"),
            }
        }
    }

    /// Writes what `id` has queued, until it would block.
    fn write(&mut self, id: ControlId) {
        let Some((_, stream)) = self.keys.get(&id).and_then(|k| self.conns.get(*k)) else { return };
        while let Some(bytes) = self.server.poll_transmit(id) {
            match mob_sys::channel::send_with_fds(stream, bytes, &[]) {
                Ok(n) => self.server.handle_transmitted(id, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.server.handle_error(id, "write error"),
            }
        }
    }

    /// Carries out what the server asks.
    fn pump(&mut self, registry: &Registry) {
        while let Some(out) = self.server.poll_output() {
            match out {
                ControlOutput::Transmit(id) => self.write(id),
                ControlOutput::Close(id, reason) => {
                    self.write(id);
                    self.remove(registry, id);
                    log::debug!("control: connection closed: {reason}");
                }
                ControlOutput::Log(line) => log::info!("{line}"),
            }
        }
    }

    fn remove(&mut self, registry: &Registry, id: ControlId) {
        if let Some(key) = self.keys.remove(&id) {
            let (_, mut stream) = self.conns.remove(key);
            let _ = registry.deregister(&mut stream);
        }
        self.server.handle_closed(id);
    }

    /// Answers nothing more: what is queued goes out if it can without
    /// waiting, and every connection closes (clients see the kingpin exit).
    pub(crate) fn close_all(&mut self, registry: &Registry) {
        self.pump(registry);
        let ids: Vec<ControlId> = self.server.connections().collect();
        for id in ids {
            self.write(id);
            self.remove(registry, id);
        }
        let _ = registry.deregister(&mut self.listener);
    }
}
