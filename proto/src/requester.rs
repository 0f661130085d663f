//! The requesting side's bookkeeping, shared by workers and the kingpin:
//! open requests with their deadlines, and the callback registry.
//!
//! Every request ends exactly once: by a reply, by its deadline, by
//! cancellation, or because its link went away. Every callback is released
//! exactly once: invoked, or released when its request's deadline passes or
//! its handler is gone. A late reply or invocation is counted and dropped.

use crate::deadlines::Deadlines;
use crate::time::Instant;
use crate::wire::Failure;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

/// Why a request ended without a reply payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The handler's side has no handler in that namespace.
    UnknownNamespace,
    /// The handler's side has no handler of that name.
    Unhandled,
    /// The handler failed, with its message.
    Failed(String),
    /// The handler dropped the request without answering.
    Dropped,
    /// No worker matches the target (unknown role or pid, none alive).
    NoRoute,
    /// The handling worker died, or a link closed, before it answered.
    PeerGone,
    /// The target's queue is full, or the requester already has as many
    /// requests open through the kingpin as it may
    /// ([`KingpinConfig::max_open_requests`](crate::KingpinConfig)).
    Backpressure,
    /// The role does not export that function.
    NotExported,
    /// No answer before the request's timeout.
    TimedOut,
    /// The requester cancelled it.
    Cancelled,
    /// The kingpin shut down before it could run.
    ShuttingDown,
}

impl From<Failure> for RequestError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::UnknownNamespace => RequestError::UnknownNamespace,
            Failure::Unhandled => RequestError::Unhandled,
            Failure::Failed(m) => RequestError::Failed(m),
            Failure::Dropped => RequestError::Dropped,
            Failure::NoRoute => RequestError::NoRoute,
            Failure::PeerGone => RequestError::PeerGone,
            Failure::Backpressure => RequestError::Backpressure,
            Failure::NotExported => RequestError::NotExported,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownNamespace => f.write_str("no handler in that namespace"),
            RequestError::Unhandled => f.write_str("no handler of that name"),
            RequestError::Failed(m) => write!(f, "handler failed: {m}"),
            RequestError::Dropped => f.write_str("handler dropped the request without answering"),
            RequestError::NoRoute => f.write_str("no worker matches the target"),
            RequestError::PeerGone => f.write_str("the handling peer went away before answering"),
            RequestError::Backpressure => f.write_str("the target's queue is full, or too many requests are open"),
            RequestError::NotExported => f.write_str("the role does not export that function"),
            RequestError::TimedOut => f.write_str("timed out"),
            RequestError::Cancelled => f.write_str("cancelled"),
            RequestError::ShuttingDown => f.write_str("the kingpin shut down before it ran"),
        }
    }
}

/// Counters of things dropped because they came too late.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LateCounts {
    /// Replies to requests that had already ended.
    pub replies: u64,
    /// Invocations of callbacks already invoked or released.
    pub invocations: u64,
}

/// What expired at a deadline.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    pub requests: Vec<u64>,
    pub callbacks: Vec<u64>,
}

pub(crate) struct Requester {
    next_id: u64,
    next_callback: u64,
    /// Open requests.
    open: Deadlines<()>,
    /// Requests that passed callbacks: their live callback ids, until the
    /// request's deadline.
    groups: Deadlines<Vec<u64>>,
    /// Live callback id → its request.
    callbacks: BTreeMap<u64, u64>,
    pub(crate) late: LateCounts,
    pub(crate) default_timeout: Duration,
}

impl Requester {
    pub(crate) fn new(default_timeout: Duration) -> Requester {
        Requester {
            next_id: 1,
            next_callback: 1,
            open: Deadlines::new(),
            groups: Deadlines::new(),
            callbacks: BTreeMap::new(),
            late: LateCounts::default(),
            default_timeout,
        }
    }

    /// A fresh id that no request or call of this side has used.
    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Opens a request; returns its id, its deadline, and its callbacks' ids.
    pub(crate) fn open(
        &mut self,
        now: Instant,
        timeout: Option<Duration>,
        callbacks: usize,
    ) -> (u64, Instant, Vec<u64>) {
        let id = self.alloc_id();
        let deadline = now + timeout.unwrap_or(self.default_timeout);
        self.open.insert(id, deadline, ());
        let cbs: Vec<u64> = (0..callbacks)
            .map(|_| {
                let cb = self.next_callback;
                self.next_callback += 1;
                self.callbacks.insert(cb, id);
                cb
            })
            .collect();
        if !cbs.is_empty() {
            self.groups.insert(id, deadline, cbs.clone());
        }
        (id, deadline, cbs)
    }

    /// Number of open requests and of live callbacks.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.open.len(), self.callbacks.len())
    }

    /// Ends request `id` (reply, cancel, failure). False if it had already
    /// ended, in which case a late reply is counted.
    pub(crate) fn close(&mut self, id: u64, count_late: bool) -> bool {
        let was = self.open.remove(id).is_some();
        if !was && count_late {
            self.late.replies += 1;
        }
        was
    }

    /// A callback was invoked. True if it was live (it is released now).
    pub(crate) fn invoke(&mut self, request: u64, callback: u64) -> bool {
        if self.callbacks.get(&callback) != Some(&request) {
            self.late.invocations += 1;
            return false;
        }
        self.callbacks.remove(&callback);
        if let Some(group) = self.groups.get_mut(request) {
            group.retain(|c| *c != callback);
            if group.is_empty() {
                self.groups.remove(request);
            }
        }
        true
    }

    /// Whether `request` still has callbacks that may be invoked.
    pub(crate) fn has_callbacks(&self, request: u64) -> bool {
        self.groups.contains(request)
    }

    /// Releases every live callback of `request`.
    pub(crate) fn release_callbacks(&mut self, request: u64) -> Vec<u64> {
        let cbs = self.groups.remove(request).unwrap_or_default();
        for cb in &cbs {
            self.callbacks.remove(cb);
        }
        cbs
    }

    /// Requests and callbacks whose deadline has passed.
    pub(crate) fn expire(&mut self, now: Instant) -> Expired {
        let requests = self.open.expire(now).into_iter().map(|(id, ())| id).collect();
        let mut callbacks = Vec::new();
        for (_, cbs) in self.groups.expire(now) {
            for cb in &cbs {
                self.callbacks.remove(cb);
            }
            callbacks.extend(cbs);
        }
        Expired { requests, callbacks }
    }

    /// Ends everything (the link is gone).
    pub(crate) fn fail_all(&mut self) -> Expired {
        let requests = self.open.drain().map(|(id, ())| id).collect();
        let callbacks = self.groups.drain().flat_map(|(_, cbs)| cbs).collect();
        self.callbacks.clear();
        Expired { requests, callbacks }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.open.next_deadline(), self.groups.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Milliseconds in a duration, for the wire.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
