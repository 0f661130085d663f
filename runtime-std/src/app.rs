//! The application's entry point: one binary that is the kingpin when
//! started by hand and a worker when started by its kingpin.

use crate::Error;
use crate::kingpin::{Event, Kingpin, Launch};
use crate::mobster::{Mobster, WorkerEnv};
use mob_proto::{CloseReason, KingpinConfig};
use mob_sys::listen::{ListenAddr, ListenMode};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// A worker role's entry function: receive and answer until the kingpin
/// asks the worker to stop or goes away, then return.
pub type Entry = fn(Mobster) -> Result<(), Error>;

type EventHandler = Box<dyn FnMut(&mut Kingpin, Event)>;
type StartFn = Box<dyn FnOnce(&mut Kingpin)>;

/// A mob application: its name, its roles and what each runs.
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
pub struct App {
    config: KingpinConfig,
    entries: HashMap<String, Entry>,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_start: Option<StartFn>,
    listen: Vec<(String, ListenAddr, ListenMode)>,
    prefix_output: bool,
}

impl App {
    /// An application called `name` (it prefixes every process title).
    pub fn new(name: &str) -> App {
        App {
            config: KingpinConfig::new(name),
            entries: HashMap::new(),
            launch: HashMap::new(),
            on_event: None,
            on_start: None,
            listen: Vec::new(),
            prefix_output: true,
        }
    }

    /// A role of `workers` processes, each running `entry` in a re-execution
    /// of this binary.
    pub fn role(mut self, name: &str, workers: u32, entry: Entry) -> App {
        self.config = self.config.role(name, workers);
        self.entries.insert(name.to_string(), entry);
        self
    }

    /// A role described in full (restart type, intensity, min/max,
    /// readiness, concurrency), each worker running `entry`.
    pub fn role_spec(mut self, spec: mob_proto::RoleSpec, entry: Entry) -> App {
        self.entries.insert(spec.name.clone(), entry);
        self.config = self.config.role_spec(spec);
        self
    }

    /// A role of `workers` processes, each running another executable that
    /// speaks the protocol on fd 3 (one built on `mob-mio` works too).
    pub fn role_exe(mut self, name: &str, workers: u32, program: impl Into<PathBuf>, args: Vec<OsString>) -> App {
        self.config = self.config.role(name, workers);
        self.launch.insert(name.to_string(), Launch::Exe { program: program.into(), args });
        self
    }

    /// Gives `role` a listening socket: the kingpin binds `addr` once and
    /// either hands it to every worker of the role, revived ones included
    /// ([`ListenMode::Shared`]), or accepts itself and hands each
    /// connection to the least loaded ready worker of the role
    /// ([`ListenMode::Distributed`]). Workers get it with
    /// [`crate::Mobster::listener`], or receive each connection as
    /// [`crate::Incoming::Connection`].
    pub fn listen(mut self, role: &str, addr: ListenAddr, mode: ListenMode) -> App {
        self.listen.push((role.to_string(), addr, mode));
        self
    }

    /// Whether each line the workers write to stdout and stderr reaches
    /// the kingpin's stdout and stderr prefixed with `[role#slot pid] `
    /// (`true`, the default), or workers simply share the kingpin's stdout
    /// and stderr (`false`).
    pub fn prefix_output(mut self, on: bool) -> App {
        self.prefix_output = on;
        self
    }

    /// Runs `f` in the kingpin once, before its loop starts: install a
    /// signal handler, enqueue the first jobs, keep a [`crate::Handle`].
    pub fn on_start(mut self, f: impl FnOnce(&mut Kingpin) + 'static) -> App {
        self.on_start = Some(Box::new(f));
        self
    }

    /// Adjusts limits and timeouts (see [`KingpinConfig`]).
    pub fn configure(mut self, f: impl FnOnce(&mut KingpinConfig)) -> App {
        f(&mut self.config);
        self
    }

    /// Calls `handler` in the kingpin for every [`Event`].
    pub fn on_event(mut self, handler: impl FnMut(&mut Kingpin, Event) + 'static) -> App {
        self.on_event = Some(Box::new(handler));
        self
    }

    /// Whether this process was started by a kingpin as a worker.
    pub fn is_worker() -> bool {
        WorkerEnv::from_env().is_some()
    }

    /// Runs this process's side: the worker entry for its role, or the
    /// kingpin. Errors are logged (the `log` crate: install a logger to see
    /// them) and give a failing exit code.
    /// A worker whose entry returns [`Error::Closed`] because the kingpin
    /// closed the link, or [`Error::Stopped`], exits with success.
    pub fn run(self) -> ExitCode {
        let result = if App::is_worker() { self.run_worker() } else { self.run_kingpin() };
        match result {
            Ok(code) => code,
            Err(e) => {
                log::error!("mob: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn run_worker(self) -> Result<ExitCode, Error> {
        let mob = Mobster::from_env()?;
        let entry = *self.entries.get(mob.role()).ok_or_else(|| Error::UnknownRole(mob.role().to_string()))?;
        match entry(mob) {
            Ok(()) | Err(Error::Closed(CloseReason::Eof)) | Err(Error::Stopped) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e),
        }
    }

    fn run_kingpin(self) -> Result<ExitCode, Error> {
        let mut kingpin = Kingpin::new(self.config, self.launch)?;
        kingpin.prefix_output(self.prefix_output);
        for (role, addr, mode) in &self.listen {
            kingpin.listen(role, addr, *mode)?;
        }
        if let Some(handler) = self.on_event {
            kingpin.on_event(handler);
        }
        if let Some(f) = self.on_start {
            f(&mut kingpin);
        }
        kingpin.run()
    }
}
