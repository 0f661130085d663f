//! The kingpin side: what both runtimes' kingpins do the same way, without
//! IO of their own (their loops differ; this does not).

mod answer;
mod broadcast;
mod children;
mod event;
mod launch;
mod listeners;
mod systemd;

pub use answer::hand_answer;
pub use broadcast::live_pids;
pub use children::{Reaped, exit_status, kill_all, reap};
pub use event::{Event, Translated, exit_error, translate};
pub use launch::{Launch, start_worker};
pub use listeners::{RoleListener, local_addr, shared_with};
pub use systemd::Systemd;
