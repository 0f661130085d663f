//! The channel into one of this runtime's loops (the kingpin's, or a
//! mobster's driver thread), which handles, responders and callbacks share.

use crate::Error;
use crate::link::Msg;
use mob_app::LoopSender;
use mob_proto::Target;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

/// What the application's threads ask of a loop.
pub(crate) type Command = mob_app::Command<crate::Kingpin>;

/// What only a mobster's loop does.
pub(crate) enum WorkerCommand {
    /// Send a message and report whether proto took it.
    Send {
        to: Target,
        ns: String,
        name: String,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
        ack: SyncSender<Result<(), Error>>,
    },
    SetReady(bool, SyncSender<Result<(), Error>>),
    Scale(u32, SyncSender<Result<(), Error>>),
    Fatal(String),
    Pending(SyncSender<(usize, usize, usize)>),
    OpenCalls(SyncSender<Vec<u64>>),
    /// Write what is queued, close the link, end the loop.
    Shutdown,
}

/// A mobster's deferred start: its exports (declared until then), and what
/// starts its threads.
pub(crate) struct Starter {
    pub exports: Vec<String>,
    pub run: Box<dyn FnOnce(Vec<String>) + Send>,
}

/// The channel to one loop, and what every sender to it shares.
pub(crate) struct LoopTx {
    tx: Sender<Msg>,
    /// The thread that runs the loop, once known.
    thread: Mutex<Option<ThreadId>>,
    /// A mobster not yet started (its Hello not yet sent).
    start: Mutex<Option<Starter>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LoopTx {
    pub(crate) fn new(tx: Sender<Msg>) -> Arc<LoopTx> {
        Arc::new(LoopTx { tx, thread: Mutex::new(None), start: Mutex::new(None) })
    }

    /// The raw channel, for the loop's own link and accept threads (no
    /// start, no wake-up needed).
    pub(crate) fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    /// Records the current thread as the loop's.
    pub(crate) fn set_thread(&self) {
        *lock(&self.thread) = Some(std::thread::current().id());
    }

    /// Defers a mobster's start until something needs its loop.
    pub(crate) fn set_starter(&self, starter: Starter) {
        *lock(&self.start) = Some(starter);
    }

    /// Starts a mobster's threads if they are not running yet.
    pub(crate) fn ensure_started(&self) {
        let starter = lock(&self.start).take();
        if let Some(s) = starter {
            (s.run)(s.exports);
        }
    }

    /// Whether the loop was started.
    pub(crate) fn is_started(&self) -> bool {
        lock(&self.start).is_none()
    }

    /// Adds an export to a mobster not yet started.
    pub(crate) fn export(&self, name: &str) -> Result<(), Error> {
        match lock(&self.start).as_mut() {
            Some(s) => {
                s.exports.push(name.to_string());
                Ok(())
            }
            None => Err(Error::TooLate),
        }
    }

    /// Sends `cmd` to a mobster's loop, starting it first if need be.
    pub(crate) fn send_worker(&self, cmd: WorkerCommand) -> Result<(), Error> {
        self.ensure_started();
        self.tx.send(Msg::Worker(cmd)).map_err(|_| Error::Stopped)
    }
}

impl LoopSender for LoopTx {
    type Kingpin = crate::Kingpin;

    /// Sends `cmd` to the loop, starting a mobster's loop first if need be.
    fn send(&self, cmd: Command) -> Result<(), Error> {
        self.ensure_started();
        self.tx.send(Msg::App(cmd)).map_err(|_| Error::Stopped)
    }

    fn on_loop_thread(&self) -> bool {
        *lock(&self.thread) == Some(std::thread::current().id())
    }
}
