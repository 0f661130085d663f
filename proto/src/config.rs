//! The kingpin's configuration: the application's name and its roles.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::frame::DEFAULT_MAX_BODY;

/// One role: a kind of worker and how many to keep alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role's name, as workers and targets name it.
    pub name: String,
    /// How many workers (slots) to keep alive.
    pub workers: u32,
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
    /// Bytes that may wait to be written to one worker before sends to it
    /// fail with backpressure (default 8 MiB): a worker that stops reading
    /// cannot grow the kingpin's memory without bound.
    pub max_queued_bytes: usize,
    /// Timeout of requests that set none (default 10 s).
    pub request_timeout: Duration,
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
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Adds a role with `workers` workers.
    pub fn role(mut self, name: impl Into<String>, workers: u32) -> KingpinConfig {
        self.roles.push(RoleSpec { name: name.into(), workers });
        self
    }
}
