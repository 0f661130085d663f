//! `mob-mio`: mob's production runtime.
//!
//! A mob application runs as a family of processes: the *kingpin*
//! supervises, *mobsters* (workers) hold the application logic, each in a
//! *role*. This crate drives the sans-IO state machines of `mob-proto` with a
//! [mio] event loop: one Unix socketpair per worker, fds passed with
//! SCM_RIGHTS, children spawned and reaped, signals through a self-pipe.
//!
//! Start with [`App`]: name the application, give each role a worker count
//! and an entry function, and [`App::run`]. The same binary is the kingpin
//! when started by hand and a worker when started by its kingpin.
//!
//! This example runs as it stands (it is a doc test): the kingpin starts two
//! `echo` workers (re-executions of this same program), asks one of them,
//! prints the answer and stops.
//!
//! ```
//! use mob_mio::{App, Error, Event, Mobster, Target};
//!
//! fn echo(mut mob: Mobster) -> Result<(), Error> {
//!     mob.on_request("upper", |_mob, req| {
//!         let text: String = req.decode().unwrap_or_default();
//!         req.respond(&text.to_uppercase()).ok();
//!     });
//!     mob.run()
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("echoes")
//!         .role("echo", 2, echo)
//!         .on_event(|kingpin, event| {
//!             if let Event::AppOnline = event {
//!                 let asked = kingpin.request(Target::Any("echo".into()), "upper", "hello").and_then(|r| {
//!                     r.then(|kingpin, reply| {
//!                         let text: String = reply.expect("an answer").decode().expect("a string");
//!                         assert_eq!(text, "HELLO");
//!                         kingpin.stop(); // soft kill: the workers drain and exit
//!                     })
//!                 });
//!                 asked.expect("asked");
//!             }
//!         })
//!         .run()
//! }
//! ```
//!
//! Guarantees: workers never outlive the kingpin (parent-death signal, and
//! end of stream on their channel); a worker that dies is revived; a worker
//! that sends garbage loses its link and is replaced, and no other worker
//! notices.
#![deny(missing_docs)]

mod app;
mod control;
mod handlers;
mod kingpin;
mod link;
use mob_sys::listen;
mod loop_tx;
mod mobster;
mod output;
mod wait;

pub use app::{App, Entry};
pub use kingpin::{JobBuilder, Kingpin};
pub use listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
pub use mob_app::{
    Callback, Error, Event, JobOutcome, JobResponse, Launch, Message, Outcome, Reply, Request, RequestBuilder,
    Responder, WorkerEnv,
};
pub use mob_proto::{
    Backoff, CloseReason, ExitStatus, Intensity, KingpinConfig, OnRoleFailure, Phase, RequestError, Restart, RoleSpec,
    SendError, Source, Target, Text, WorkerHealth, WorkerInfo, WorkerState,
};
pub use mobster::{Mobster, Proxy, StopDone};

/// A clonable, `Send` handle to an event loop (a mobster's or the
/// kingpin's), for application threads: an HTTP server's, a pool's (see
/// [`mob_app::Handle`]).
pub type Handle = mob_app::Handle<Kingpin>;

/// A request being built from another thread (see
/// [`mob_app::HandleRequest`]).
pub type HandleRequest = mob_app::HandleRequest<Kingpin>;
