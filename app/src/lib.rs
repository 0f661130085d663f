//! `mob-app`: what mob's two runtimes share above the protocol.
//!
//! `mob-proto` decides everything about the protocol without IO; `mob-sys`
//! makes the system calls. Between them and the runtimes (`mob-mio`, an
//! event loop; `mob-std`, blocking IO on threads) sits this crate: the
//! application's vocabulary, which holds fds and uses `std`, and the parts of
//! a kingpin and a mobster that do not depend on how a runtime does its IO.
//! Each runtime re-exports the vocabulary under its own name (`mob_mio::App`,
//! `mob_std::App`...), so moving between them is a change of import.
//!
//! - The application's side: [`App`] (its builder, generic over the
//!   runtime's kingpin), [`Event`], [`Message`], [`Request`] with its
//!   [`Responder`] and [`Callback`]s, [`Reply`], [`Handle`] and
//!   [`HandleRequest`] (from any thread), [`RequestBuilder`] and
//!   [`JobBuilder`] (on the loop's thread), [`JobResponse`], [`Error`].
//! - For runtimes: how answers and commands reach a loop ([`LoopSender`],
//!   [`Command`], [`Answers`]), a requester's bookkeeping ([`Completions`]),
//!   the [`Clock`], [`WorkerEnv`], and the IO-free parts of a kingpin (in
//!   [`kingpin`]: turning proto's events into the application's, handing
//!   answers to proto, starting and reaping workers, shared listeners,
//!   broadcasts) and of a worker (in [`worker`]).
//!
//! A message as a handler gets it (with either runtime): who sent it, its
//! namespace and name, the payload, and any fds (owned: dropping the
//! message closes them).
//!
//! ```
//! use mob_app::Message;
//!
//! let payload = mob_proto::wire::encode_payload("hello").unwrap();
//! let msg = Message { from: 7u32, ns: "_".into(), name: "greet".into(), payload: payload.into(), fds: Vec::new() };
//! assert_eq!((msg.name.as_str(), msg.decode::<String>().unwrap()), ("greet", "hello".to_string()));
//! ```
#![deny(missing_docs)]

mod answer;
mod app;
mod clock;
mod command;
mod completions;
pub mod control;
mod error;
mod handle;
mod held_fd;
mod job;
pub mod kingpin;
mod message;
mod name_hasher;
mod reply;
mod request;
mod request_builder;
mod request_spec;
pub mod worker;

pub use answer::{Answer, AnswerKind, Answered, Answers};
pub use app::{App, ControlSocket, Entry, EventHandler, Runtime};
pub use clock::Clock;
pub use command::{Command, LoopSender, RemoteCallback, RemoteDone, RemoteRequest};
pub use completions::{CallbackFn, Completions, Done, LocalCallback, LocalDone};
pub use error::Error;
pub use handle::{Handle, HandleRequest};
pub use held_fd::HeldFd;
pub use job::{JobBuilder, JobDone, JobDoneFn, JobOutcome, JobQueue, JobResponse, JobSpec, WaitJobs};
pub use kingpin::{Event, Launch};
pub use message::Message;
pub use name_hasher::{BuildNameHasher, NameHasher};
pub use reply::{Outcome, Reply};
pub use request::{Callback, Request, Responder};
pub use request_builder::{RequestBuilder, RequestLoop, WaitLoop};
pub use request_spec::RequestSpec;
pub use worker::WorkerEnv;

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn what_threads_share_can_be_shared() {
        send_sync::<Handle<()>>();
        send::<HandleRequest<()>>();
        send::<Request<mob_proto::Source>>();
        send::<Request<mob_proto::WorkerInfo>>();
        send::<Responder>();
        send::<Callback>();
        send::<Reply>();
        send::<Error>();
        send::<Command<()>>();
    }
}
