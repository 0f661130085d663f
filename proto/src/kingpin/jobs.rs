//! The work queue (load-process-manager's `enqueue`): jobs for a role wait
//! at the kingpin until one of its workers is ready, then go to the ready
//! worker with the fewest jobs and requests in flight (ties: the lowest
//! reported memory), within the role's concurrency limit.
//!
//! `retries: n` means up to `n` more tries after the first: when the worker
//! handling a job dies, the job goes back to the front of the queue while it
//! has retries left. A job whose fds already left with a try cannot be tried
//! again (the fds went with the dead worker) and ends as peer gone. A job's
//! timeout covers all its tries, queueing included; when it passes the job
//! ends as timed out and its worker is told to cancel it.

use super::calls::CallEntry;
use super::{Event, Kingpin, LinkId};
use crate::deadlines::Deadlines;
use crate::error::SendError;
use crate::fd::FdHandle;
use crate::requester::RequestError;
use crate::time::Instant;
use crate::wire::{Call, Kind, Source};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::ToString;
use alloc::vec::Vec;
use bytes::Bytes;
use core::time::Duration;

/// The namespace jobs are delivered in; the name is [`JOB_NAME`].
pub const JOB_NAMESPACE: &str = "mob.job";
/// The name jobs are delivered under.
pub const JOB_NAME: &str = "job";

/// Options of one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Give up after this long, counted from `enqueue` (default: never).
    pub timeout: Option<Duration>,
    /// How many more tries after the first if the worker dies (default 0).
    pub retries: u32,
}

/// A job as the queue keeps it.
pub struct Job {
    role: usize,
    payload: Bytes,
    /// Held until the job's first try leaves.
    fds: Vec<FdHandle>,
    fds_sent: bool,
    retries_left: u32,
    created_at: Instant,
    deadline: Instant,
    running: Option<LinkId>,
}

#[derive(Default)]
pub(super) struct JobQueue {
    jobs: BTreeMap<u64, Job>,
    waiting: BTreeMap<usize, VecDeque<u64>>,
    deadlines: Deadlines<()>,
}

impl Default for Deadlines<()> {
    fn default() -> Self {
        Deadlines::new()
    }
}

impl JobQueue {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next_deadline()
    }

    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }
}

impl Kingpin {
    /// Queues a job for `role`; it ends in exactly one [`Event::JobDone`]
    /// with the returned id. Errors at once if the role is unknown or has
    /// failed, or the kingpin is shutting down (the fds are released).
    pub fn enqueue(
        &mut self,
        role: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
        options: JobOptions,
        now: Instant,
    ) -> Result<u64, SendError> {
        self.now = now;
        if self.shutdown.is_some() {
            self.release(fds);
            return Err(SendError::ShuttingDown);
        }
        let Some(r) = self.role_index(role).filter(|r| !self.roles[*r].failed) else {
            self.release(fds);
            return Err(SendError::NoRoute);
        };
        if fds.len() > crate::frame::MAX_FDS_PER_FRAME {
            let count = fds.len();
            self.release(fds);
            return Err(SendError::Encode(crate::frame::EncodeError::TooManyFds { count }));
        }
        let id = self.requests.alloc_id();
        let deadline = options.timeout.map_or(Instant::MAX, |t| now + t);
        let job = Job {
            role: r,
            payload: Bytes::copy_from_slice(payload),
            fds,
            fds_sent: false,
            retries_left: options.retries,
            created_at: now,
            deadline,
            running: None,
        };
        self.jobs.jobs.insert(id, job);
        self.jobs.deadlines.insert(id, deadline, ());
        self.jobs.waiting.entry(r).or_default().push_back(id);
        self.dispatch_jobs(r);
        Ok(id)
    }

    /// Jobs waiting for a worker of `role`.
    pub fn queued_jobs(&self, role: &str) -> usize {
        self.role_index(role).and_then(|r| self.jobs.waiting.get(&r)).map_or(0, |q| q.len())
    }

    /// Hands waiting jobs of `role` to ready workers, while there are both.
    pub(super) fn dispatch_jobs(&mut self, role: usize) {
        while let Some(&id) = self.jobs.waiting.get(&role).and_then(|q| q.front()) {
            let Some(target) = self.pick_job_worker(role) else { return };
            if let Some(q) = self.jobs.waiting.get_mut(&role) {
                q.pop_front();
            }
            let Some(job) = self.jobs.jobs.get_mut(&id) else { continue };
            job.running = Some(target);
            let fds = core::mem::take(&mut job.fds);
            job.fds_sent |= !fds.is_empty();
            let payload = job.payload.clone();
            let timeout_ms = crate::requester::millis(job.deadline.saturating_duration_since(self.now));
            let call = Call {
                id,
                from: Source::Kingpin,
                ns: JOB_NAMESPACE,
                name: JOB_NAME,
                timeout_ms,
                callbacks: &[][..] as &[u64],
            };
            match self.push(target, Kind::Call, &call, &payload, fds) {
                Ok(()) => {
                    if let Some(l) = self.link_mut(target) {
                        l.inflight += 1;
                    }
                    self.calls.insert(id, Instant::MAX, CallEntry::Job { target });
                }
                Err(e) => {
                    let error = match e {
                        SendError::Encode(_) => RequestError::Failed("job does not fit in a frame".to_string()),
                        _ => RequestError::PeerGone,
                    };
                    self.end_job(id, Err(error));
                }
            }
        }
    }

    /// The ready worker of `role` with the fewest in flight (then the least
    /// memory), under the role's concurrency limit.
    fn pick_job_worker(&self, role: usize) -> Option<LinkId> {
        let limit = self.roles[role].spec.concurrency.unwrap_or(u32::MAX);
        self.roles[role]
            .slots
            .iter()
            .filter_map(|s| s.link)
            .filter_map(|id| self.link(id).map(|l| (id, l)))
            .filter(|(_, l)| l.takes_work() && l.inflight < limit)
            .min_by_key(|(_, l)| (l.inflight, l.rss_kib))
            .map(|(id, _)| id)
    }

    /// A worker answered job `id`.
    pub(super) fn job_answered(&mut self, id: u64, link: LinkId, result: Result<(Bytes, Vec<FdHandle>), RequestError>) {
        let Some(info) = self.link(link).map(|l| l.info.clone()) else { return };
        self.end_job(id, result.map(|(payload, fds)| (info, payload, fds)));
    }

    /// The worker running job `id` is gone: try again, or end it.
    pub(super) fn job_lost(&mut self, id: u64) {
        let Some(job) = self.jobs.jobs.get_mut(&id) else { return };
        job.running = None;
        let role_failed = self.roles[job.role].failed;
        if job.retries_left > 0 && !job.fds_sent && self.shutdown.is_none() && !role_failed {
            job.retries_left -= 1;
            let role = job.role;
            self.jobs.waiting.entry(role).or_default().push_front(id);
            self.dispatch_jobs(role);
        } else {
            self.end_job(id, Err(RequestError::PeerGone));
        }
    }

    /// Jobs whose timeout has passed.
    pub(super) fn expire_jobs(&mut self, now: Instant) {
        for (id, ()) in self.jobs.deadlines.expire(now) {
            if let Some(CallEntry::Job { target }) = self.calls.remove(id) {
                self.withdraw_call(target, id);
            }
            self.end_job(id, Err(RequestError::TimedOut));
        }
    }

    /// A role that failed takes no more work: its jobs still waiting end
    /// now, with no route.
    pub(super) fn fail_jobs_of_role(&mut self, role: usize) {
        let waiting: Vec<u64> = self.jobs.waiting.get_mut(&role).map(|q| q.drain(..).collect()).unwrap_or_default();
        for id in waiting {
            self.end_job(id, Err(RequestError::NoRoute));
        }
    }

    /// A soft shutdown takes no new work: jobs still waiting end now.
    pub(super) fn fail_jobs_for_shutdown(&mut self) {
        let waiting: Vec<u64> = self.jobs.waiting.values_mut().flat_map(|q| q.drain(..)).collect();
        for id in waiting {
            self.end_job(id, Err(RequestError::ShuttingDown));
        }
    }

    fn end_job(&mut self, id: u64, result: Result<(super::WorkerInfo, Bytes, Vec<FdHandle>), RequestError>) {
        let Some(job) = self.jobs.jobs.remove(&id) else {
            if let Ok((_, _, fds)) = result {
                self.release(fds);
            }
            return;
        };
        self.jobs.deadlines.remove(id);
        if let Some(q) = self.jobs.waiting.get_mut(&job.role) {
            q.retain(|j| *j != id);
        }
        self.release(job.fds);
        self.event(Event::JobDone { id, created_at: job.created_at, result });
    }
}
