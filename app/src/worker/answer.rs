//! What a worker does with the application's answers to the kingpin's
//! calls.

use crate::answer::{Answer, AnswerKind, Answered};
use mob_proto::FdTable;
use std::os::fd::OwnedFd;

/// Hands an answer to one of the kingpin's calls to a worker's proto, its
/// fds into `fds`. (An answer meant for the kingpin's side is dropped.)
#[inline]
pub fn hand_answer(proto: &mut mob_proto::Worker, fds: &mut FdTable<OwnedFd>, answered: Answered) {
    let Answered { to: Answer::Call(call), kind, payload, fds: given } = answered else { return };
    let handles = given.into_iter().map(|fd| fds.insert(fd)).collect();
    match kind {
        AnswerKind::Respond(result) => {
            let _ = proto.respond(call, result, &payload, handles);
        }
        AnswerKind::Invoke(callback) => {
            let _ = proto.invoke(call, callback, &payload, handles);
        }
    }
}
