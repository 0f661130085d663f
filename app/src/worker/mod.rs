//! The worker side: what both runtimes' mobsters share.

mod env;

pub use env::WorkerEnv;
