//! The channel into one of this runtime's event loops (a mobster's or the
//! kingpin's), which handles, responders and callbacks share. Code on the
//! loop's own thread skips the channel and the wake-up.

use crate::Error;
use mob_app::LoopSender;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};

/// What the application's threads ask of a loop.
pub(crate) type Command = mob_app::Command<crate::Kingpin>;

/// The loop's wake-up: its waker, and its id on its own thread.
pub(crate) struct Shared {
    pub waker: mio::Waker,
    id: u64,
}

static NEXT_LOOP: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The loop that runs on this thread, if any.
    static LOOP_HERE: Cell<u64> = const { Cell::new(0) };
    /// Commands that code on the loop's own thread gave it: no channel, no
    /// wake-up needed (the loop drains them after every handler).
    static LOCAL: RefCell<VecDeque<Command>> = const { RefCell::new(VecDeque::new()) };
}

impl Shared {
    /// The wake-up of a loop that runs on this thread.
    pub(crate) fn new(waker: mio::Waker) -> Shared {
        let id = NEXT_LOOP.fetch_add(1, Ordering::Relaxed);
        LOOP_HERE.with(|l| l.set(id));
        Shared { waker, id }
    }

    fn is_here(&self) -> bool {
        LOOP_HERE.with(|l| l.get()) == self.id
    }

    /// Wakes the loop unless we are on it.
    pub(crate) fn wake(&self) {
        if !self.is_here() {
            let _ = self.waker.wake();
        }
    }
}

/// The channel to a loop that runs on this thread, shared by handles,
/// responders and callbacks.
pub(crate) struct LoopTx {
    pub tx: Sender<Command>,
    pub shared: Shared,
    /// Commands may wait in this thread's queue (set and cleared only on
    /// the loop's thread: a plain load tells the loop it need not look).
    local: AtomicBool,
}

impl LoopTx {
    /// The channel `tx`, woken by `waker`, of a loop that runs on this
    /// thread.
    pub(crate) fn new(tx: Sender<Command>, waker: mio::Waker) -> Arc<LoopTx> {
        Arc::new(LoopTx { tx, shared: Shared::new(waker), local: AtomicBool::new(false) })
    }

    /// The next command for the loop: from its own thread first, then, if
    /// the waker fired (`woken`), from other threads, whose every command
    /// comes with a wake-up; `woken` is cleared once their channel is empty.
    pub(crate) fn next(&self, rx: &Receiver<Command>, woken: &mut bool) -> Option<Command> {
        if let Some(cmd) = self.next_local() {
            return Some(cmd);
        }
        if *woken {
            match rx.try_recv() {
                Ok(cmd) => return Some(cmd),
                Err(_) => *woken = false,
            }
        }
        None
    }

    /// The next command code on the loop's own thread gave.
    pub(crate) fn next_local(&self) -> Option<Command> {
        if !self.local.load(Ordering::Relaxed) || !self.shared.is_here() {
            return None;
        }
        let cmd = LOCAL.with(|q| q.borrow_mut().pop_front());
        if cmd.is_none() {
            self.local.store(false, Ordering::Relaxed);
        }
        cmd
    }
}

impl LoopSender for LoopTx {
    type Kingpin = crate::Kingpin;

    fn send(&self, cmd: Command) -> Result<(), Error> {
        if self.shared.is_here() {
            LOCAL.with(|q| q.borrow_mut().push_back(cmd));
            self.local.store(true, Ordering::Relaxed);
            return Ok(());
        }
        self.tx.send(cmd).map_err(|_| Error::Stopped)?;
        let _ = self.shared.waker.wake();
        Ok(())
    }

    fn on_loop_thread(&self) -> bool {
        self.shared.is_here()
    }
}
