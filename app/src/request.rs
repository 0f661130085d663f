//! A request as the application receives it, with the one right to answer
//! it ([`Responder`]) and the callbacks that came with it ([`Callback`]).

use crate::Error;
use crate::answer::{Answer, AnswerKind, Answered, Answers};
use bytes::Bytes;
use mob_proto::{Failure, Text};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A request received by the application, with the one right to answer it.
///
/// Answer with [`Request::respond`], [`Request::respond_raw`],
/// [`Request::fail`] or [`Request::ack`]; each consumes the request, so it
/// cannot be answered twice. The request may be moved to another thread and
/// answered later. Dropping it unanswered sends "dropped without reply" to
/// the requester at once, so nobody waits for a timeout.
pub struct Request<From> {
    /// Who asked.
    pub from: From,
    /// Its namespace.
    pub ns: Text,
    /// Its name.
    pub name: Text,
    /// The raw payload.
    pub payload: Bytes,
    /// fds that came with it.
    pub fds: Vec<OwnedFd>,
    /// Callbacks passed with it, each invocable once.
    pub callbacks: Vec<Callback>,
    responder: Responder,
}

impl<From: std::fmt::Debug> std::fmt::Debug for Request<From> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("from", &self.from)
            .field("ns", &self.ns)
            .field("name", &self.name)
            .field("payload", &self.payload)
            .field("fds", &self.fds.len())
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}

impl<From> Request<From> {
    /// A request as a runtime delivers it (applications receive requests;
    /// they do not build them).
    pub fn new(
        from: From,
        ns: Text,
        name: Text,
        payload: Bytes,
        fds: Vec<OwnedFd>,
        callbacks: Vec<Callback>,
        responder: Responder,
    ) -> Self {
        Request { from, ns, name, payload, fds, callbacks, responder }
    }

    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }

    /// Whether this is a job from the kingpin's work queue (namespace
    /// [`mob_proto::kingpin::JOB_NAMESPACE`]).
    pub fn is_job(&self) -> bool {
        self.ns == mob_proto::kingpin::JOB_NAMESPACE && self.name == mob_proto::kingpin::JOB_NAME
    }

    /// Takes the responder out, to answer elsewhere.
    pub fn into_responder(self) -> Responder {
        self.responder
    }

    /// Answers with `value` (postcard-encoded).
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.responder.respond(value)
    }

    /// Answers with raw bytes and fds.
    pub fn respond_raw(self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.responder.respond_raw(payload, fds)
    }

    /// Answers with a failure carrying `message`.
    pub fn fail(self, message: impl Into<String>) -> Result<(), Error> {
        self.responder.fail(message)
    }

    /// Answers with no data: a bare acknowledgement.
    pub fn ack(self) -> Result<(), Error> {
        self.responder.respond_raw(Vec::new(), Vec::new())
    }

    /// Answers that nothing here handles this request's name (the requester
    /// sees [`mob_proto::RequestError::Unhandled`]), as a worker with no
    /// handler for it does.
    pub fn unhandled(self) -> Result<(), Error> {
        self.responder.refuse(Failure::Unhandled)
    }
}

/// The right to answer one request, exactly once (dropping it answers
/// "dropped without reply").
pub struct Responder {
    to: Answer,
    answers: Arc<dyn Answers>,
    answered: bool,
}

impl Responder {
    /// The responder of request `to`, whose answer goes through `answers`
    /// (for runtimes).
    pub fn new(to: Answer, answers: Arc<dyn Answers>) -> Responder {
        Responder { to, answers, answered: false }
    }

    /// Answers with `value` (postcard-encoded).
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.respond_raw(payload, Vec::new())
    }

    /// Answers with raw bytes and fds.
    pub fn respond_raw(self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.answer(Ok(()), payload, fds)
    }

    /// Answers with a failure carrying `message`.
    pub fn fail(self, message: impl Into<String>) -> Result<(), Error> {
        self.refuse(Failure::Failed(message.into()))
    }

    /// Answers with one of the protocol's failures (unhandled, unknown
    /// namespace...), as a runtime does for a request nothing handles.
    pub fn refuse(self, failure: Failure) -> Result<(), Error> {
        self.answer(Err(failure), Vec::new(), Vec::new())
    }

    fn answer(mut self, result: Result<(), Failure>, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.answered = true;
        self.answers.answer(Answered { to: self.to, kind: AnswerKind::Respond(result), payload, fds })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let kind = AnswerKind::Respond(Err(Failure::Dropped));
            let _ = self.answers.answer(Answered { to: self.to, kind, payload: Vec::new(), fds: Vec::new() });
        }
    }
}

/// A callback passed with a request: invoke it once, now or later, from
/// any thread. Invoking it after its request's timeout does nothing.
pub struct Callback {
    to: Answer,
    id: u64,
    answers: Arc<dyn Answers>,
}

impl Callback {
    /// Callback `id` of request `to`, invoked through `answers` (for
    /// runtimes).
    pub fn new(to: Answer, id: u64, answers: Arc<dyn Answers>) -> Callback {
        Callback { to, id, answers }
    }

    /// Invokes the callback with `value` (postcard-encoded).
    pub fn invoke<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        let payload = mob_proto::wire::encode_payload(value)?;
        self.invoke_raw(payload, Vec::new())
    }

    /// Invokes the callback with raw bytes and fds.
    pub fn invoke_raw(self, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.answers.answer(Answered { to: self.to, kind: AnswerKind::Invoke(self.id), payload, fds })
    }
}
