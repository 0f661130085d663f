//! A message as the application receives it.

use bytes::Bytes;
use mob_proto::Text;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;

/// A one-way message delivered to the application, with the fds that came
/// with it (owned: dropping the message closes them). `From` is who sent it:
/// a [`mob_proto::Source`] on a worker, a [`mob_proto::WorkerInfo`] on the
/// kingpin.
#[derive(Debug)]
pub struct Message<From> {
    /// Who sent it.
    pub from: From,
    /// Its namespace (`"_"` unless the sender chose one).
    pub ns: Text,
    /// Its name.
    pub name: Text,
    /// The raw payload.
    pub payload: Bytes,
    /// fds that came with it.
    pub fds: Vec<OwnedFd>,
}

impl<From> Message<From> {
    /// Deserializes the payload (postcard) as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(postcard::from_bytes(&self.payload)?)
    }
}
