//! `mob-sys`: the system calls both mob runtimes need, written once.
//!
//! This is where mob's `unsafe` lives (as quinn-udp is for quinn): fd passing
//! with SCM_RIGHTS, spawning a worker with its channel on a fixed fd and a
//! parent-death signal, a self-pipe for signals, and small `/proc` readers.
//! Everything here is a thin, documented wrapper; no protocol decisions.
//! [`listen`] holds the listening-socket vocabulary both runtimes share
//! (the names of the hand-over messages, and the socket types).
//! [`activation`], [`notify`] and [`reap`] are what a supervisor needs under
//! systemd and as a container's PID 1: sockets passed at start, `sd_notify`
//! datagrams, and reaping orphans. [`inherit`] is a worker's start: its
//! channel and identity, for workers that drive `mob-proto` themselves.
//!
//! Two ends of a channel, an fd passed from one to the other:
//!
//! ```
//! use mob_sys::channel::{recv_with_fds, send_with_fds, socketpair};
//! use std::os::fd::AsRawFd;
//!
//! let (a, b) = socketpair().unwrap();
//! let file = std::fs::File::open("/dev/null").unwrap();
//! send_with_fds(&a, b"hi", &[file.as_raw_fd()]).unwrap();
//! let (mut buf, mut fds) = ([0u8; 16], Vec::new());
//! let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
//! assert_eq!((&buf[..n], fds.len()), (&b"hi"[..], 1)); // a new fd, owned here
//! ```
#![deny(missing_docs)]

pub mod activation;
pub mod channel;
pub mod clock;
pub mod control;
pub mod inherit;
pub mod listen;
pub mod notify;
pub mod process;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod stdio;

/// The fd number at which a worker finds its channel to the kingpin.
pub const CHANNEL_FD: i32 = 3;

/// Environment variable: the worker's channel fd number.
pub const ENV_FD: &str = "MOB_FD";
/// Environment variable: the worker's role.
pub const ENV_ROLE: &str = "MOB_ROLE";
/// Environment variable: the worker's slot within its role.
pub const ENV_SLOT: &str = "MOB_SLOT";
/// Environment variable: the application's name.
pub const ENV_APP: &str = "MOB_APP";
/// Environment variable: the longest a worker's event loop polls for IO
/// before it sleeps, in microseconds (the kingpin's `KingpinConfig::spin`).
pub const ENV_SPIN_US: &str = "MOB_SPIN_US";
