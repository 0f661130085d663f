//! Jobs for the kingpin's work queue (load-process-manager's `enqueue`):
//! how one is built, and how it ends.

use crate::Error;
use mob_proto::{JobOptions, WorkerInfo};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// A job's response (load-process-manager's `enqueue` result).
#[derive(Debug)]
pub struct JobResponse {
    /// The job's id.
    pub id: u64,
    /// The worker that answered.
    pub worker: WorkerInfo,
    /// When the job was enqueued.
    pub created_at: std::time::Instant,
    /// The response payload.
    pub payload: bytes::Bytes,
    /// fds the worker sent back (a pipe or socket for a stream, say).
    pub fds: Vec<OwnedFd>,
}

impl JobResponse {
    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }
}

/// How a job ended: its response, or why there is none.
pub type JobOutcome = Result<JobResponse, mob_proto::RequestError>;

/// A job to queue: for which role, what, and how.
#[derive(Debug)]
pub struct JobSpec {
    /// The role whose workers take it.
    pub role: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// fds that go with it.
    pub fds: Vec<OwnedFd>,
    /// Its timeout and retries.
    pub options: JobOptions,
}

/// A closure run on the kingpin `K`'s loop when a job ends.
pub type JobDoneFn<K> = Box<dyn FnOnce(&mut K, JobOutcome)>;

/// How a job reports its end. `K` is the runtime's kingpin.
pub enum JobDone<K> {
    /// A closure the kingpin's loop runs.
    Then(JobDoneFn<K>),
    /// A `wait` on the kingpin's thread collects it.
    Wait,
}

impl<K> JobDone<K> {
    /// Hands over the job's end: runs the closure with `kingpin`; a
    /// [`JobDone::Wait`] gets it back, for the waiter.
    pub fn finish(self, kingpin: &mut K, outcome: JobOutcome) -> Option<JobOutcome> {
        match self {
            JobDone::Then(f) => {
                f(kingpin, outcome);
                None
            }
            JobDone::Wait => Some(outcome),
        }
    }
}

/// A kingpin that queues jobs.
pub trait JobQueue: Sized {
    /// Queues `job`; `done` learns its end. Returns the job's id.
    fn queue_job(&mut self, job: JobSpec, done: JobDone<Self>) -> Result<u64, Error>;
}

/// A kingpin that can also wait for a job on its own thread, running its
/// loop meanwhile (`mob-std`'s).
pub trait WaitJobs: JobQueue {
    /// Runs the loop until job `id` (queued with [`JobDone::Wait`]) ends.
    fn wait_job(&mut self, id: u64) -> JobOutcome;
}

/// A job being built; finish it with [`JobBuilder::then`], or (on a
/// `mob-std` kingpin) [`JobBuilder::wait`].
///
/// `kingpin.enqueue("workers", &"resize /tmp/a.png")?.timeout(Duration::from_secs(5)).retries(1).then(...)`
/// gives the job 5 s and one more try if the first worker dies.
pub struct JobBuilder<'a, K: JobQueue> {
    kingpin: &'a mut K,
    job: JobSpec,
}

impl<'a, K: JobQueue> JobBuilder<'a, K> {
    /// A job for `role` carrying `payload`, with no timeout and no retries
    /// (for runtimes: applications call their kingpin's `enqueue`).
    pub fn new(kingpin: &'a mut K, role: &str, payload: Vec<u8>) -> Self {
        let job = JobSpec { role: role.to_string(), payload, fds: Vec::new(), options: JobOptions::default() };
        JobBuilder { kingpin, job }
    }

    /// Gives up after `timeout` from now (default: never).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.job.options.timeout = Some(timeout);
        self
    }

    /// Up to `n` more tries if the worker handling the job dies (default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.job.options.retries = n;
        self
    }

    /// Sends `fd` with the job (a connection to answer on, say). A job whose
    /// fds have left cannot be retried.
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.job.fds.push(fd.into());
        self
    }

    /// Queues the job; `done` runs on the kingpin's loop with its end.
    /// Returns the job's id.
    pub fn then(self, done: impl FnOnce(&mut K, JobOutcome) + 'static) -> Result<u64, Error> {
        self.kingpin.queue_job(self.job, JobDone::Then(Box::new(done)))
    }
}

impl<K: WaitJobs> JobBuilder<'_, K> {
    /// Queues the job and runs the kingpin's loop until it ends. A job that
    /// ends without a response is [`Error::Request`].
    pub fn wait(self) -> Result<JobResponse, Error> {
        let id = self.kingpin.queue_job(self.job, JobDone::Wait)?;
        self.kingpin.wait_job(id).map_err(Error::Request)
    }
}
