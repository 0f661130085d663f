//! What the kingpin does with the application's answers to workers'
//! requests.

use crate::HeldFd;
use crate::answer::{Answer, AnswerKind, Answered};
use mob_proto::FdTable;

/// Hands an answer to a worker's request to the kingpin's proto, its fds
/// into `fds`. (An answer to one of a worker's calls has nothing to do on
/// the kingpin and is dropped.)
#[inline]
pub fn hand_answer(proto: &mut mob_proto::Kingpin, fds: &mut FdTable<HeldFd>, answered: Answered) {
    let Answered { to: Answer::Worker(link, id), kind, payload, fds: given } = answered else { return };
    let handles = HeldFd::hold(fds, given);
    match kind {
        AnswerKind::Respond(result) => {
            let _ = proto.respond(link, id, result, &payload, handles);
        }
        AnswerKind::Invoke(callback) => {
            let _ = proto.invoke(link, id, callback, &payload, handles);
        }
    }
}
