//! `mob-std`: mob on blocking std IO and threads.
//!
//! A mob application runs as a family of processes: the *kingpin*
//! supervises, *mobsters* (workers) hold the application logic, each in a
//! *role*. This crate drives the sans-IO state machines of `mob-proto` with
//! plain blocking sockets and threads, for programs that want no event loop:
//! scripts, tools, tests, and workers written as a loop.
//!
//! - The worker side is a blocking API: [`Mobster::recv`] the next
//!   [`Incoming`] message, request or stop request (with a timeout if you
//!   like), answer each [`Request`] exactly once from any thread, send, and
//!   make requests and [`HandleRequest::wait`] for their replies. A
//!   [`Handle`] is clonable and `Send`, for the application's other threads.
//!   Heartbeats, timeouts and health reports run on the mobster's own
//!   threads, whatever the application does.
//! - The kingpin side is `mob-mio`'s, on threads: the same [`App`],
//!   [`Kingpin`], [`Event`], requests and work queue, supervision, routing,
//!   shutdown and the control socket for the `mob` command
//!   ([`Kingpin::control_socket`]); moving a kingpin between the two runtimes is a change of
//!   import. Requests and jobs can also be waited for on the kingpin's own
//!   thread.
//!
//! The two runtimes speak the same protocol: a `mob-std` worker runs under a
//! `mob-mio` kingpin and the other way round ([`App::role_exe`]).
//!
//! This example runs as it stands (it is a doc test): two `echo` workers
//! (re-executions of this same program), one request, then a soft stop.
//!
//! ```
//! use mob_std::{App, Error, Event, Incoming, Mobster, Target};
//!
//! fn echo(mut mob: Mobster) -> Result<(), Error> {
//!     mob.export("upper")?; // exports go out with the handshake: declare them first
//!     loop {
//!         match mob.recv()? {
//!             Incoming::Message(msg) if msg.name == "ping" => {
//!                 let text: String = msg.decode()?;
//!                 mob.send(Target::Kingpin, "pong", &text)?;
//!             }
//!             Incoming::Request(req) if req.name == "upper" => {
//!                 let text: String = req.decode()?;
//!                 req.respond(&text.to_uppercase())?;
//!             }
//!             Incoming::Stop(_) => return Ok(()), // drained: clean up and go
//!             _ => {}                             // unanswered requests answer "dropped"
//!         }
//!     }
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
//!                         kingpin.stop(); // soft kill: the workers see Incoming::Stop
//!                     })
//!                 });
//!                 asked.expect("asked");
//!             }
//!         })
//!         .run()
//! }
//! ```
//!
//! # Threads
//!
//! Each link has a reader thread (blocking in `recvmsg`) and a writer thread
//! (for what the socket does not take at once: the owning thread writes
//! itself while it can without waiting); one thread owns each proto state
//! machine and is the only one to touch it: the kingpin's is the thread
//! that runs [`Kingpin::run`] (it must live as long as the kingpin:
//! workers' parent-death signal is tied to it), a mobster's is a driver
//! thread of its own. Everything else reaches that
//! thread through a channel, so sending from any number of threads, and both
//! sides sending at once, never deadlock; and a peer that stops reading
//! blocks only its own writer thread.
//!
//! Guarantees are `mob-mio`'s: workers never outlive the kingpin; a worker
//! that dies is revived; every request ends exactly once (reply, failure,
//! timeout, or the peer gone) and every callback is invoked or released
//! exactly once; fds passed with a message belong to its receiver and are
//! closed if it never gets them.
#![deny(missing_docs)]

mod app;
mod control;
mod kingpin;
mod link;
mod loop_tx;
mod mobster;
mod output;

pub use app::{App, Entry};
pub use kingpin::{JobBuilder, Kingpin, RequestBuilder};
pub use mob_app::{
    Callback, Error, Event, JobOutcome, JobResponse, Launch, Message, Outcome, Reply, Request, Responder, WorkerEnv,
};
pub use mob_proto::{
    Backoff, CloseReason, ExitStatus, Intensity, KingpinConfig, OnRoleFailure, Phase, RequestError, Restart, RoleSpec,
    SendError, Source, Target, Text, WorkerHealth, WorkerInfo, WorkerState,
};
pub use mob_sys::listen::{LISTEN_CONNECTION, LISTEN_LISTENER, LISTEN_NAMESPACE, ListenAddr, ListenMode, Listener};
pub use mobster::{Incoming, Mobster, Proxy};

/// A clonable, `Send` handle to a loop (a mobster's or the kingpin's), for
/// any thread (see [`mob_app::Handle`]).
pub type Handle = mob_app::Handle<Kingpin>;

/// A request being built on any thread (see [`mob_app::HandleRequest`]).
///
/// ```no_run
/// # fn f(mob: &mob_std::Mobster) -> Result<(), mob_std::Error> {
/// use mob_std::Target;
/// use std::time::Duration;
///
/// let reply = mob.request(Target::Any("back".into()), "sum", &(2u32, 3u32))?
///     .timeout(Duration::from_secs(1))
///     .wait()?;
/// println!("sum = {}", reply.decode::<u32>()?);
/// # Ok(()) }
/// ```
pub type HandleRequest = mob_app::HandleRequest<Kingpin>;

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn what_threads_share_can_be_shared() {
        // (mob-app checks its own types.)
        send::<Mobster>();
        send::<Incoming>();
        send_sync::<Handle>();
        send::<HandleRequest>();
    }
}
