//! The worker side: what both runtimes' mobsters share.

mod answer;
mod env;

pub use answer::hand_answer;
pub use env::WorkerEnv;
