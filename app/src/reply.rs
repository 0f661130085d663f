//! What a requester gets back.

use crate::Error;
use bytes::Bytes;
use mob_proto::RequestError;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;

/// A successful reply (or a callback's invocation): payload and fds.
#[derive(Debug, Default)]
pub struct Reply {
    /// The raw payload.
    pub payload: Bytes,
    /// fds that came with it (owned: dropping the reply closes them).
    pub fds: Vec<OwnedFd>,
}

impl Reply {
    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }
}

/// How a request ended, as the requester sees it.
pub type Outcome = Result<Reply, RequestError>;
