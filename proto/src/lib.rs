//! `mob-proto`: the sans-IO core of mob.
//!
//! mob runs one application as a supervised family of processes: a
//! *kingpin* starts role-based worker processes, keeps them alive and routes
//! messages between them. This crate is everything mob decides, as plain
//! state machines: framing, the handshake, routing and supervision. It does
//! no IO, reads no clock and holds no file descriptors; a runtime
//! (`mob-mio`, `mob-std`, or your own) feeds it what happened and carries out
//! what it asks. Everything it does can therefore be tested in memory,
//! deterministically.
//!
//! - [`Kingpin`]: one per supervisor process, one link per worker.
//! - [`Worker`]: one per worker process, one link to the kingpin.
//! - [`frame`]: the wire framing ([`frame::Decoder`], [`frame::OutBuf`]).
//! - [`wire`]: the messages of each frame kind.
//! - [`FdHandle`] / [`FdTable`]: how fds travel through proto without it
//!   holding any.
//! - [`Instant`]: time as the runtime tells it.
//! - [`notify`]: what to tell a service manager (systemd's `sd_notify`), and
//!   when.
//! - [`control`] and [`ControlServer`]: the control protocol an operator's
//!   tool speaks to a running kingpin (status, resize, reload, stop, kill).
//! - [`Spin`]: how long an event loop polls for IO before it sleeps.
//! - [`lines`]: workers' stdout and stderr cut into prefixed lines, with
//!   bounded memory.
//!
//! # The run loop
//!
//! Inputs go in through `handle_*` methods, outputs come out through
//! `poll_output`, bytes to write through `poll_transmit`, and the next timer
//! through `poll_timeout`. Here a kingpin and one worker run joined by an
//! in-memory "socket"; a real runtime does the same with sockets and
//! processes.
//!
//! ```
//! use mob_proto::*;
//!
//! let mut kingpin = Kingpin::new(KingpinConfig::new("demo").role("echo", 1));
//! let now = Instant::ZERO;
//! let mut worker = None;
//! let mut got = Vec::new();
//! for _round in 0..10 {
//!     // Kingpin outputs: spawn the worker, write its bytes, tell the app.
//!     while let Some(out) = kingpin.poll_output() {
//!         match out {
//!             Output::Spawn(s) => {
//!                 kingpin.handle_spawned(s.link, 100, now);
//!                 let config = WorkerConfig { pid: 100, role: s.role.to_string(), slot: s.slot, exports: vec![] };
//!                 worker = Some((s.link, Worker::new(config)));
//!             }
//!             Output::Transmit(link) => {
//!                 let (_, w) = worker.as_mut().unwrap();
//!                 while let Some(t) = kingpin.poll_transmit(link) {
//!                     let bytes = t.bytes.to_vec();
//!                     let fds = kingpin.handle_transmitted(link, bytes.len());
//!                     w.handle_read(&bytes, fds);
//!                 }
//!             }
//!             Output::Event(Event::WorkerUp(info)) => {
//!                 kingpin.send(Target::Pid(info.pid), "_", "hi", b"hello", Vec::new()).unwrap();
//!             }
//!             Output::Event(Event::Message { name, payload, .. }) => got.push((name.to_string(), payload)),
//!             _ => {}
//!         }
//!     }
//!     // Worker outputs: write its bytes to the kingpin, echo what it gets.
//!     let Some((link, w)) = worker.as_mut() else { continue };
//!     while let Some(out) = w.poll_output() {
//!         if let WorkerOutput::Event(WorkerEvent::Message { payload, .. }) = out {
//!             w.send(Target::Kingpin, "_", "echo", &payload, Vec::new()).unwrap();
//!         }
//!     }
//!     while let Some(t) = w.poll_transmit() {
//!         let bytes = t.bytes.to_vec();
//!         let fds = w.handle_transmitted(bytes.len());
//!         kingpin.handle_read(*link, &bytes, fds, now);
//!     }
//!     if let Some(deadline) = kingpin.poll_timeout() {
//!         if deadline <= now { kingpin.handle_timeout(now) }
//!     }
//! }
//! assert_eq!(got, vec![("echo".to_string(), bytes::Bytes::from_static(b"hello"))]);
//! ```
//!
//! # Invariants
//!
//! - Input from a peer never panics proto; a bad frame closes that link only
//!   ([`CloseReason`]). The local caller's mistakes are [`SendError`]s.
//! - Every [`FdHandle`] given to proto comes back exactly once: delivered in
//!   an event, returned by `handle_transmitted`, or released through a
//!   `ReleaseFd` output.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod config;
pub mod control;
mod deadlines;
pub mod error;
pub mod fd;
pub mod frame;
mod hot;
mod id_map;
pub mod kingpin;
pub mod lines;
pub mod notify;
pub mod requester;
pub mod spin;
mod text;
pub mod time;
pub mod wire;
pub mod worker;

pub use config::{Backoff, Intensity, KingpinConfig, OnRoleFailure, Restart, RoleSpec};
pub use error::{CloseReason, RespondError, SendError};
pub use fd::{FdHandle, FdTable};
pub use kingpin::Summary;
pub use kingpin::{
    ControlId, ControlOutput, ControlServer, Event, ExitStatus, FLUSH_AT, JobOptions, Kingpin, LinkId, Output, Pending,
    Phase, Spawn, WorkerHealth, WorkerInfo, WorkerState,
};
pub use requester::{LateCounts, RequestError};
pub use spin::Spin;
pub use text::Text;
pub use time::Instant;
pub use wire::{Failure, Source, Target};
pub use worker::{Worker, WorkerConfig, WorkerEvent, WorkerOutput};
