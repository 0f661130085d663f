//! What a request is, before it is sent.

use mob_proto::Target;
use mob_proto::wire::DEFAULT_NAMESPACE;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// A request to send: where, what, and how long to wait.
#[derive(Debug)]
pub struct RequestSpec {
    /// Where it goes ([`Target::Any`], [`Target::Pid`] or
    /// [`Target::Kingpin`]).
    pub to: Target,
    /// Its namespace.
    pub ns: String,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// fds that go with it (ownership passes to the handler).
    pub fds: Vec<OwnedFd>,
    /// How long to wait from when it is sent (`None`: the kingpin's
    /// default).
    pub timeout: Option<Duration>,
}

impl RequestSpec {
    /// Request `name` in the default namespace carrying `payload`, with no
    /// fds and the default timeout.
    pub fn new(to: Target, name: &str, payload: Vec<u8>) -> RequestSpec {
        RequestSpec {
            to,
            ns: DEFAULT_NAMESPACE.to_string(),
            name: name.to_string(),
            payload,
            fds: Vec::new(),
            timeout: None,
        }
    }
}
