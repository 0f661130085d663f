//! What the kingpin tells its application ([`Event`]), and what a kingpin
//! runtime makes of each of proto's events ([`translate`]).

use crate::answer::{Answer, Answers};
use crate::clock::Clock;
use crate::job::{JobOutcome, JobResponse};
use crate::{Callback, HeldFd, Message, Outcome, Reply, Request, Responder};
use mob_proto::{CloseReason, ExitStatus, FdHandle, FdTable, LinkId, Target, WorkerInfo};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// What the kingpin tells its application.
#[derive(Debug)]
pub enum Event {
    /// A worker process was started.
    WorkerSpawned(WorkerInfo),
    /// A worker completed its handshake.
    WorkerUp(WorkerInfo),
    /// A worker's link closed for a reason other than its exit (bad input,
    /// handshake timeout, ...). Its process is killed and revived.
    LinkClosed(WorkerInfo, CloseReason),
    /// A worker is ready for work.
    WorkerReady(WorkerInfo),
    /// A worker process ended (its slot is revived as its role's policy
    /// says).
    WorkerExited {
        /// The worker.
        worker: WorkerInfo,
        /// How it ended.
        status: ExitStatus,
        /// Why, if it died abnormally: its panic message if it sent one,
        /// else its exit status in words.
        error: Option<String>,
    },
    /// Every worker of a role is ready.
    RoleOnline(String),
    /// Every role is online (once).
    AppOnline,
    /// A role restarted more often than its intensity allows and was stopped.
    RoleFailed {
        /// The role.
        role: String,
        /// Why its last worker died.
        last_error: Option<String>,
    },
    /// A rolling reload finished.
    RoleReloaded(String),
    /// A worker sent a message to the kingpin.
    Message(Message<WorkerInfo>),
    /// A worker sent a request to the kingpin: answer it through the
    /// [`Request`] (dropping it answers "dropped without reply").
    Request(Request<WorkerInfo>),
    /// A worker's message had no route and was dropped.
    Undeliverable {
        /// Who sent it.
        from: WorkerInfo,
        /// Where it was going.
        to: Target,
    },
    /// A process that was not one of our workers was reaped: an orphan the
    /// kernel handed us, because the kingpin is PID 1 (a container's init)
    /// or a subreaper (the runtime's `Kingpin::reap_orphans`).
    OrphanReaped {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
}

/// One of proto's events, as a kingpin runtime must deal with it.
#[derive(Debug)]
pub enum Translated {
    /// For the application's event handler.
    App(Event),
    /// A job ended.
    JobDone {
        /// The job's id.
        id: u64,
        /// Its end.
        outcome: JobOutcome,
    },
    /// One of the kingpin's requests ended.
    Reply {
        /// The request's id.
        id: u64,
        /// Its end.
        outcome: Outcome,
    },
    /// A callback the kingpin passed was invoked.
    Callback {
        /// The callback's id.
        id: u64,
        /// The invocation.
        reply: Reply,
    },
    /// A callback the kingpin passed can no longer be invoked.
    CallbackReleased {
        /// The callback's id.
        id: u64,
    },
    /// Nothing to do now (a dying worker's last words were kept for its
    /// [`Event::WorkerExited`]).
    Kept,
}

/// Turns proto's `event` into the application's terms: fds come out of
/// `fds`, requests get a responder and callbacks answering through
/// `answers`, a worker's last words (`fatal`, by link) go into its exit's
/// error.
pub fn translate<A: Answers + 'static>(
    event: mob_proto::Event,
    fds: &mut FdTable<HeldFd>,
    clock: &Clock,
    fatal: &mut HashMap<LinkId, String>,
    answers: &Arc<A>,
) -> Translated {
    use mob_proto::Event as E;
    // Fds from workers are the kingpin's own: handed over as they are.
    let mut take = |handles: Vec<FdHandle>| -> Vec<OwnedFd> {
        handles.into_iter().filter_map(|h| fds.take(h)?.into_owned().ok()).collect()
    };
    Translated::App(match event {
        E::WorkerSpawned(w) => Event::WorkerSpawned(w),
        E::WorkerUp(w) => Event::WorkerUp(w),
        E::LinkClosed(w, r) => Event::LinkClosed(w, r),
        E::WorkerExited(worker, status) => {
            let error = fatal.remove(&worker.link).or_else(|| exit_error(status));
            Event::WorkerExited { worker, status, error }
        }
        E::WorkerReady(w) => Event::WorkerReady(w),
        E::RoleOnline(r) => Event::RoleOnline(r.to_string()),
        E::AppOnline => Event::AppOnline,
        E::RoleFailed { role, last_error } => Event::RoleFailed { role: role.to_string(), last_error },
        E::RoleReloaded(r) => Event::RoleReloaded(r.to_string()),
        E::Undeliverable { from, to, .. } => Event::Undeliverable { from, to },
        E::Message { from, ns, name, payload, fds } => {
            Event::Message(Message { from, ns, name, payload, fds: take(fds) })
        }
        E::Request { from, id, ns, name, payload, fds, callbacks } => {
            let to = Answer::Worker(from.link, id);
            let callbacks = callbacks.into_iter().map(|cb| Callback::new(to, cb, answers.clone())).collect();
            let responder = Responder::new(to, answers.clone());
            Event::Request(Request::new(from, ns, name, payload, take(fds), callbacks, responder))
        }
        E::WorkerFatal(w, message) => {
            fatal.insert(w.link, message);
            return Translated::Kept;
        }
        E::JobDone { id, created_at, result } => {
            let outcome = result.map(|(worker, payload, fds)| JobResponse {
                id,
                worker,
                created_at: clock.to_std(created_at),
                payload,
                fds: take(fds),
            });
            return Translated::JobDone { id, outcome };
        }
        E::Reply { id, result } => {
            let outcome = result.map(|(payload, fds)| Reply { payload, fds: take(fds) });
            return Translated::Reply { id, outcome };
        }
        E::Callback { callback, payload, fds } => {
            return Translated::Callback { id: callback, reply: Reply { payload, fds: take(fds) } };
        }
        E::CallbackReleased { callback } => return Translated::CallbackReleased { id: callback },
    })
}

/// An abnormal exit in words (`None` for a clean one).
pub fn exit_error(status: ExitStatus) -> Option<String> {
    match status {
        ExitStatus::Code(0) => None,
        ExitStatus::Code(c) => Some(format!("exited with code {c}")),
        ExitStatus::Signal(s) => Some(format!("killed by signal {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::answer::{AnswerKind, Answered};
    use mob_proto::Failure;
    use std::sync::Mutex;

    /// Keeps every answer it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Answered>>);

    impl Answers for Kept {
        fn answer(&self, answered: Answered) -> Result<(), Error> {
            self.0.lock().unwrap().push(answered);
            Ok(())
        }
    }

    fn worker(link: u64) -> WorkerInfo {
        WorkerInfo { id: link, link: LinkId::from_u64(link), role: "w".into(), slot: 0, pid: 100 + link as u32 }
    }

    #[test]
    fn last_words_become_the_exits_error_and_plain_exits_are_put_in_words() {
        let (mut fds, clock, mut fatal, kept) =
            (FdTable::new(), Clock::new(), HashMap::new(), Arc::new(Kept::default()));
        let mut go = |e| translate(e, &mut fds, &clock, &mut fatal, &kept);
        assert!(matches!(go(mob_proto::Event::WorkerFatal(worker(1), "panicked: boom".into())), Translated::Kept));
        let exits = [
            (1, ExitStatus::Code(101)),
            (2, ExitStatus::Code(3)),
            (3, ExitStatus::Signal(9)),
            (4, ExitStatus::Code(0)),
        ];
        let errors: Vec<Option<String>> = exits
            .into_iter()
            .map(|(link, status)| match go(mob_proto::Event::WorkerExited(worker(link), status)) {
                Translated::App(Event::WorkerExited { error, .. }) => error,
                other => panic!("{other:?}"),
            })
            .collect();
        let words = ["panicked: boom", "exited with code 3", "killed by signal 9"].map(|s| Some(s.to_string()));
        assert_eq!(errors, [words[0].clone(), words[1].clone(), words[2].clone(), None]);
    }

    #[test]
    fn a_workers_request_comes_with_fds_and_answers_back_to_its_link() {
        let (mut fds, clock, mut fatal, kept) =
            (FdTable::new(), Clock::new(), HashMap::new(), Arc::new(Kept::default()));
        let (r, _w) = fd_pair();
        let handle = fds.insert(HeldFd::from(r));
        let event = mob_proto::Event::Request {
            from: worker(7),
            id: 42,
            ns: "_".into(),
            name: "ask".into(),
            payload: bytes::Bytes::from_static(b"x"),
            fds: vec![handle],
            callbacks: vec![5],
        };
        let Translated::App(Event::Request(mut req)) = translate(event, &mut fds, &clock, &mut fatal, &kept) else {
            panic!("a request for the application");
        };
        assert!(fds.is_empty(), "the fd left the table with the request");
        assert_eq!(req.fds.len(), 1);
        req.callbacks.pop().unwrap().invoke_raw(b"cb".to_vec(), Vec::new()).unwrap();
        drop(req);
        let kept = kept.0.lock().unwrap();
        let to = Answer::Worker(LinkId::from_u64(7), 42);
        assert_eq!(
            kept.iter().map(|a| (a.to, a.kind.clone())).collect::<Vec<_>>(),
            [(to, AnswerKind::Invoke(5)), (to, AnswerKind::Respond(Err(Failure::Dropped))),]
        );
    }

    fn fd_pair() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        (r.into(), w.into())
    }
}
