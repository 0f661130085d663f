//! The kingpin's configuration: the application's name and its roles.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::frame::DEFAULT_MAX_BODY;

/// When a worker that exited is revived (Erlang/OTP's restart types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Always revived.
    #[default]
    Permanent,
    /// Revived only after an abnormal exit (a non-zero code or a signal).
    Transient,
    /// Never revived: its slot stays empty.
    Temporary,
}

/// Restart intensity, as OTP defines it: at most `max_restarts` restarts of
/// a role within `within`; one more and the role has failed.
///
/// A restart counts from the moment its worker is started (its Spawn). When
/// a worker exits, the restarts started within the last `within`, plus those
/// already decided and waiting for their backoff, plus this one, must be at
/// most `max_restarts`, or the role fails instead. So no window of `within`
/// ever holds more than `max_restarts` restarting Spawns, however late the
/// runtime handles its timers. Retries of failed spawns, replacements of a
/// rolling reload and workers added by a resize are not restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window (default 5).
    pub max_restarts: u32,
    /// The window (default 120 s, load-process-manager's).
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity { max_restarts: 5, within: Duration::from_secs(120) }
    }
}

/// Delay between restarts of a slot that keeps crashing: none for the first
/// restart, then `initial`, doubling up to `max`; back to none once the slot
/// has stayed up for `reset_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second consecutive restart (default 100 ms).
    pub initial: Duration,
    /// Longest delay (default 10 s).
    pub max: Duration,
    /// Uptime after which a slot counts as healthy again (default 30 s).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `consecutive` (0-based) of a slot.
    ///
    /// ```
    /// use core::time::Duration;
    /// use mob_proto::config::Backoff;
    ///
    /// let b = Backoff::default();
    /// assert_eq!(b.delay(0), Duration::ZERO);
    /// assert_eq!(b.delay(1), Duration::from_millis(100));
    /// assert_eq!(b.delay(3), Duration::from_millis(400));
    /// assert_eq!(b.delay(60), b.max);
    /// ```
    pub fn delay(&self, consecutive: u32) -> Duration {
        if consecutive == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(consecutive - 1).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }
}

/// What the kingpin does when a role exceeds its restart intensity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRoleFailure {
    /// Stop the whole application, exiting non-zero (OTP's behaviour).
    #[default]
    ShutdownApp,
    /// Stop that role only; the others carry on.
    Continue,
}

/// One role: a kind of worker, how many to keep alive, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role's name, as workers and targets name it.
    pub name: String,
    /// How many workers (slots) to keep alive.
    pub workers: u32,
    /// Fewest workers a resize may leave (default 0).
    pub min: u32,
    /// Most workers a resize may ask for (default unbounded).
    pub max: u32,
    /// When an exited worker is revived.
    pub restart: Restart,
    /// How many restarts the role may have.
    pub intensity: Intensity,
    /// Whether a worker is ready for work as soon as its handshake is done
    /// (default), or only once it says so (load-process-manager's `ready()`).
    pub ready_on_connect: bool,
    /// Most jobs one worker of the role handles at once (default unbounded).
    pub concurrency: Option<u32>,
}

impl RoleSpec {
    /// A permanent role of `workers` workers with default policy.
    pub fn new(name: impl Into<String>, workers: u32) -> RoleSpec {
        RoleSpec {
            name: name.into(),
            workers,
            min: 0,
            max: u32::MAX,
            restart: Restart::Permanent,
            intensity: Intensity::default(),
            ready_on_connect: true,
            concurrency: None,
        }
    }
}

/// Everything the kingpin state machine needs to know up front.
///
/// ```
/// use mob_proto::KingpinConfig;
///
/// let config = KingpinConfig::new("myapp").role("back", 4).role("front", 2);
/// assert_eq!(config.roles.len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct KingpinConfig {
    /// The application's name (process titles, logs, handshake).
    pub app: String,
    /// The roles, in the order their workers are spawned.
    pub roles: Vec<RoleSpec>,
    /// Largest frame body either side may send (default 4 MiB).
    pub max_body: u32,
    /// How long a spawned worker has to complete its handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// How long to wait before retrying a spawn that failed (default 1 s).
    pub spawn_retry: Duration,
    /// Bytes that may wait for a worker that is still starting (default 1 MiB).
    pub early_queue_limit: usize,
    /// Bytes that may wait to be written to one worker before new work for
    /// it (messages, requests, jobs) fails with backpressure (default 8
    /// MiB): a worker that stops reading cannot grow the kingpin's memory
    /// without bound. What ends or steers work it already has (replies to
    /// its requests, callback invocations and releases, cancels, pings,
    /// stop) is queued regardless: it is bounded by that work, and losing
    /// it would leave a request without its end. Up to twice this: a
    /// worker that lets that much wait does not read its link, and is
    /// closed ([`CloseReason::NotReading`](crate::CloseReason)) and killed.
    pub max_queued_bytes: usize,
    /// fds that may wait to be written to one worker (default 2,048), the
    /// same way: past this, new work carrying fds for it fails with
    /// backpressure (work without fds still goes in, within
    /// `max_queued_bytes`); past twice this, the worker is not reading and
    /// is closed. Every fd waiting is one the kingpin holds open, so
    /// without this a worker sending small frames full of fds to one that
    /// does not read could use up the kingpin's fd table (its
    /// `RLIMIT_NOFILE`) long before the bytes limit. The same number
    /// bounds the fds waiting for a worker that is still starting.
    pub max_queued_fds: usize,
    /// Requests one worker may have open through the kingpin at once
    /// (default 65,536): the kingpin keeps a little state for each until
    /// its reply and callbacks are done or its deadline passes, so past
    /// this many a worker's further requests are answered with
    /// backpressure at once, and a worker that asks faster than it is
    /// answered (with long timeouts) cannot grow the kingpin's memory
    /// without bound. Requests to the kingpin itself are the
    /// application's to answer and are not counted.
    pub max_open_requests: u32,
    /// Timeout of requests that set none (default 10 s).
    pub request_timeout: Duration,
    /// Delays between restarts of a crashing slot.
    pub backoff: Backoff,
    /// What happens when a role fails (default: the app shuts down).
    pub on_role_failure: OnRoleFailure,
    /// How often the kingpin pings each worker, and how long a worker may
    /// stay silent before it is treated as hung: killed and replaced
    /// (default every 5 s, 30 s). `None` turns heartbeats off.
    pub heartbeat: Option<(Duration, Duration)>,
    /// How long a soft kill waits for workers to finish before killing them
    /// (default 10 s).
    pub shutdown_grace: Duration,
    /// The longest an event loop polls for IO before it sleeps, as
    /// [`Spin`](crate::Spin) adapts it (default
    /// [`Spin::DEFAULT_LIMIT`](crate::Spin::DEFAULT_LIMIT), 50 µs; zero:
    /// sleep at once). Proto does not poll: a runtime applies this to the
    /// kingpin's loop and passes it to the workers it starts (`mob-mio`
    /// does, in `MOB_SPIN_US`, in whole microseconds rounded up; `mob-std`,
    /// whose threads block in their reads, passes it on and does not poll).
    /// Polling trades CPU time for latency: an answer that comes within
    /// the window is taken without the cost of waking a sleeping process.
    /// Polling stops by itself while other tasks keep the CPUs busy. Keep
    /// it short: a loop whose events keep coming within the limit polls
    /// between all of them.
    pub spin: Duration,
}

impl KingpinConfig {
    /// A configuration with no roles and default limits.
    pub fn new(app: impl Into<String>) -> KingpinConfig {
        KingpinConfig {
            app: app.into(),
            roles: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
            handshake_timeout: Duration::from_secs(10),
            spawn_retry: Duration::from_secs(1),
            early_queue_limit: 1 << 20,
            max_queued_bytes: 8 << 20,
            max_queued_fds: 2048,
            max_open_requests: 65_536,
            request_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            on_role_failure: OnRoleFailure::ShutdownApp,
            heartbeat: Some((Duration::from_secs(5), Duration::from_secs(30))),
            shutdown_grace: Duration::from_secs(10),
            spin: crate::Spin::DEFAULT_LIMIT,
        }
    }

    /// Adds a permanent role with `workers` workers and default policy.
    pub fn role(self, name: impl Into<String>, workers: u32) -> KingpinConfig {
        self.role_spec(RoleSpec::new(name, workers))
    }

    /// Adds a role described in full.
    pub fn role_spec(mut self, spec: RoleSpec) -> KingpinConfig {
        self.roles.push(spec);
        self
    }
}
