//! The worker side: a *mobster* connected to its kingpin.

use crate::link::{Outgoing, READ_BUF, ReadEnd, WriteEnd, read_link, write_link};
use crate::{Error, Message};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use mob_proto::frame::Transmit;
use mob_proto::wire::DEFAULT_NAMESPACE;
use mob_proto::{
    CloseReason, FdHandle, FdTable, Source, Target, Worker, WorkerConfig, WorkerEvent, WorkerOutput,
};
use mob_sys::{CHANNEL_FD, ENV_APP, ENV_FD, ENV_ROLE, ENV_SLOT};
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};

const LINK: Token = Token(0);

type Handler = Box<dyn FnMut(&mut Mobster, Message<Source>)>;

/// Who a worker is, as the kingpin's environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEnv {
    /// The application's name.
    pub app: String,
    /// This worker's role.
    pub role: String,
    /// This worker's slot within the role.
    pub slot: u32,
    /// The fd of the channel to the kingpin.
    pub fd: i32,
}

impl WorkerEnv {
    /// Reads `MOB_ROLE`, `MOB_SLOT`, `MOB_APP` and `MOB_FD`; `None` if this
    /// process was not started by a kingpin.
    pub fn from_env() -> Option<WorkerEnv> {
        let role = std::env::var(ENV_ROLE).ok()?;
        let slot = std::env::var(ENV_SLOT).ok()?.parse().ok()?;
        let app = std::env::var(ENV_APP).unwrap_or_default();
        let fd = std::env::var(ENV_FD)
            .ok()
            .and_then(|f| f.parse().ok())
            .unwrap_or(CHANNEL_FD);
        Some(WorkerEnv {
            app,
            role,
            slot,
            fd,
        })
    }
}

/// A worker process's connection to its kingpin, and its event loop.
///
/// Register handlers with [`Mobster::on`], then call [`Mobster::run`]. The
/// loop ends when the kingpin goes away (the worker should then exit) or the
/// link fails.
///
/// ```no_run
/// use mob_mio::{Mobster, Target};
///
/// fn back(mut mob: Mobster) -> Result<(), mob_mio::Error> {
///     mob.on("ping", |mob, msg| {
///         let n: u32 = msg.decode().unwrap_or(0);
///         mob.send(Target::Kingpin, "pong", &(n + 1)).ok();
///     });
///     mob.run()
/// }
/// ```
pub struct Mobster {
    env: WorkerEnv,
    proto: Worker,
    sock: UnixStream,
    poll: Poll,
    fds: FdTable<OwnedFd>,
    handlers: HashMap<(String, String), Handler>,
    fallback: Option<Handler>,
    closed: Option<CloseReason>,
    buf: Vec<u8>,
}

impl Mobster {
    /// Connects to the kingpin described by the environment and queues the
    /// handshake.
    pub fn from_env() -> Result<Mobster, Error> {
        let env =
            WorkerEnv::from_env().ok_or(Error::NotAWorker("MOB_ROLE or MOB_SLOT is not set"))?;
        // SAFETY: the kingpin placed our channel at this fd for us alone; we
        // take ownership of it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(env.fd) };
        Mobster::new(env, fd)
    }

    /// Connects over `channel` (a Unix stream socket) as the worker `env`
    /// describes.
    pub fn new(env: WorkerEnv, channel: OwnedFd) -> Result<Mobster, Error> {
        mob_sys::channel::set_nonblocking(&channel, true)?;
        // Our own children must not inherit the channel, or the kingpin would
        // not see end of stream when we die.
        mob_sys::channel::set_cloexec(&channel)?;
        let std_sock = std::os::unix::net::UnixStream::from(channel);
        let mut sock = UnixStream::from_std(std_sock);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut sock, LINK, Interest::READABLE | Interest::WRITABLE)?;
        mob_sys::process::set_name(&format!("{}#{}", env.role, env.slot));
        let config = WorkerConfig {
            pid: std::process::id(),
            role: env.role.clone(),
            slot: env.slot,
        };
        let mut mob = Mobster {
            proto: Worker::new(config),
            env,
            sock,
            poll,
            fds: FdTable::new(),
            handlers: HashMap::new(),
            fallback: None,
            closed: None,
            buf: vec![0; READ_BUF],
        };
        mob.write();
        Ok(mob)
    }

    /// This worker's role.
    pub fn role(&self) -> &str {
        &self.env.role
    }

    /// This worker's slot within its role.
    pub fn slot(&self) -> u32 {
        self.env.slot
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.env.app
    }

    /// This worker's id, once the kingpin has welcomed it.
    pub fn id(&self) -> Option<u64> {
        self.proto.welcome().map(|w| w.worker)
    }

    /// Handles messages named `name` in the default namespace.
    pub fn on(&mut self, name: &str, handler: impl FnMut(&mut Mobster, Message<Source>) + 'static) {
        self.on_ns(DEFAULT_NAMESPACE, name, handler);
    }

    /// Handles messages named `name` in namespace `ns`.
    pub fn on_ns(
        &mut self,
        ns: &str,
        name: &str,
        handler: impl FnMut(&mut Mobster, Message<Source>) + 'static,
    ) {
        self.handlers
            .insert((ns.to_string(), name.to_string()), Box::new(handler));
    }

    /// Handles every message no other handler takes.
    pub fn on_any(&mut self, handler: impl FnMut(&mut Mobster, Message<Source>) + 'static) {
        self.fallback = Some(Box::new(handler));
    }

    /// Sends `value` (postcard-encoded) as message `name` in the default
    /// namespace.
    pub fn send<T: Serialize + ?Sized>(
        &mut self,
        to: Target,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        let payload = postcard::to_allocvec(value)?;
        self.send_raw(to, DEFAULT_NAMESPACE, name, &payload, Vec::new())
    }

    /// Sends raw bytes with fds (given up by the caller).
    pub fn send_raw(
        &mut self,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        let handles = fds.into_iter().map(|fd| self.fds.insert(fd)).collect();
        let result = self.proto.send(to, ns, name, payload, handles);
        // Write now; other outputs (events, releases) wait for the loop, so a
        // handler that sends is never re-entered.
        self.write();
        Ok(result?)
    }

    /// Runs the event loop until the link closes. Returns `Ok` when the
    /// kingpin closed the link cleanly.
    pub fn run(mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(16);
        loop {
            self.pump();
            if self.closed.is_some() {
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                if event.is_readable() || event.is_read_closed() {
                    self.read();
                }
                if event.is_writable() {
                    self.write();
                }
            }
        }
        match self.closed.take() {
            Some(CloseReason::Eof) | None => Ok(()),
            Some(reason) => Err(Error::Closed(reason)),
        }
    }

    fn read(&mut self) {
        let Mobster {
            sock,
            buf,
            fds,
            proto,
            ..
        } = self;
        let end = read_link(sock, buf, fds, |bytes, handles| {
            proto.handle_read(bytes, handles);
            !proto.is_closed()
        });
        match end {
            ReadEnd::Drained => {}
            ReadEnd::Eof => self.proto.handle_eof(),
            ReadEnd::Failed(what) => self.proto.handle_link_error(what),
        }
    }

    fn write(&mut self) {
        if let WriteEnd::Failed =
            write_link(&self.sock, &mut WorkerOut(&mut self.proto), &mut self.fds)
        {
            self.proto.handle_link_error("write error");
        }
    }

    /// Carries out everything proto asks for.
    fn pump(&mut self) {
        while let Some(out) = self.proto.poll_output() {
            match out {
                WorkerOutput::Transmit => self.write(),
                WorkerOutput::ReleaseFd(h) => drop(self.fds.take(h)),
                WorkerOutput::Closed(reason) => self.closed = Some(reason),
                WorkerOutput::Event(WorkerEvent::Welcome(_)) => {}
                WorkerOutput::Event(WorkerEvent::Message {
                    from,
                    ns,
                    name,
                    payload,
                    fds,
                }) => {
                    let fds = self.take_fds(fds);
                    self.dispatch(Message {
                        from,
                        ns,
                        name,
                        payload,
                        fds,
                    });
                }
            }
        }
    }

    fn take_fds(&mut self, handles: Vec<FdHandle>) -> Vec<OwnedFd> {
        handles
            .into_iter()
            .filter_map(|h| self.fds.take(h))
            .collect()
    }

    fn dispatch(&mut self, msg: Message<Source>) {
        let key = (msg.ns.clone(), msg.name.clone());
        if let Some(mut h) = self.handlers.remove(&key) {
            h(self, msg);
            self.handlers.entry(key).or_insert(h);
        } else if let Some(mut h) = self.fallback.take() {
            h(self, msg);
            self.fallback.get_or_insert(h);
        }
    }
}

struct WorkerOut<'a>(&'a mut Worker);

impl Outgoing for WorkerOut<'_> {
    fn peek(&self) -> Option<Transmit<'_>> {
        self.0.poll_transmit()
    }

    fn advance(&mut self, n: usize) -> Vec<FdHandle> {
        self.0.handle_transmitted(n)
    }
}
