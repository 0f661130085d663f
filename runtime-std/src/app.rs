//! The application's entry point ([`App`]), on this runtime.

use crate::{Error, Kingpin, Mobster, WorkerEnv};
use mob_app::{EventHandler, Launch};
use mob_proto::KingpinConfig;
use mob_sys::listen::{ListenAddr, ListenMode};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

/// A mob application: its name, its roles and what each runs (see
/// [`mob_app::App`]).
///
/// The same binary is both sides: started from a shell, [`App::run`] becomes
/// the kingpin and re-executes the binary once per worker; started by the
/// kingpin (which sets `MOB_ROLE`), it runs that role's entry instead.
///
/// ```no_run
/// use mob_std::{App, Error, Incoming, Mobster};
///
/// fn back(mob: Mobster) -> Result<(), Error> {
///     while let Ok(incoming) = mob.recv() {
///         match incoming {
///             Incoming::Message(msg) if msg.name == "foo" => println!("Bar! My pid is {}", std::process::id()),
///             Incoming::Stop(_) => break,
///             _ => {}
///         }
///     }
///     Ok(())
/// }
///
/// fn main() -> std::process::ExitCode {
///     App::new("myapp").role("back", 4, back).run()
/// }
/// ```
pub type App = mob_app::App<Kingpin>;

/// A worker role's entry function: receive and answer until the kingpin
/// asks the worker to stop or goes away, then return.
pub type Entry = mob_app::Entry<Mobster>;

impl mob_app::Runtime for Kingpin {
    type Mobster = Mobster;

    fn kingpin(config: KingpinConfig, launch: HashMap<String, Launch>) -> Result<Kingpin, Error> {
        Kingpin::new(config, launch)
    }

    fn listen(&mut self, role: &str, addr: &ListenAddr, mode: ListenMode) -> Result<(), Error> {
        Kingpin::listen(self, role, addr, mode)
    }

    fn on_event(&mut self, handler: EventHandler<Kingpin>) {
        Kingpin::on_event(self, handler)
    }

    fn prefix_output(&mut self, on: bool) {
        Kingpin::prefix_output(self, on)
    }

    fn run(self) -> Result<ExitCode, Error> {
        Kingpin::run(self)
    }

    fn mobster(env: WorkerEnv, channel: OwnedFd) -> Result<Mobster, Error> {
        Mobster::new(env, channel)
    }
}

impl mob_app::ControlSocket for Kingpin {
    fn control_socket(&mut self, path: &Path) -> Result<(), Error> {
        Kingpin::control_socket(self, path)
    }
}
