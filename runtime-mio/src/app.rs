//! The application's entry point: one binary that is the kingpin when
//! started by hand and a worker when started by its kingpin.

use crate::Error;
use crate::kingpin::{Event, Kingpin, Launch};
use crate::listen::{ListenAddr, ListenMode};
use crate::mobster::{Mobster, WorkerEnv};
use mob_proto::KingpinConfig;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// A worker role's entry function: set up handlers, then run the mobster.
pub type Entry = fn(Mobster) -> Result<(), Error>;

type EventHandler = Box<dyn FnMut(&mut Kingpin, Event)>;

/// A mob application: its name, its roles and what each runs.
///
/// The same binary is both sides: started from a shell, [`App::run`] becomes
/// the kingpin and re-executes the binary once per worker; started by the
/// kingpin (which sets `MOB_ROLE`), it runs that role's entry instead. This
/// is mob's `main.js`:
///
/// ```no_run
/// use mob_mio::{App, Mobster, Error};
///
/// fn back(mut mob: Mobster) -> Result<(), Error> {
///     mob.on("foo", |mob, _msg| println!("Bar! My pid is {}", std::process::id()));
///     mob.run()
/// }
///
/// fn front(mob: Mobster) -> Result<(), Error> {
///     mob.run()
/// }
///
/// fn main() -> std::process::ExitCode {
///     App::new("myapp").role("back", 4, back).role("front", 2, front).run()
/// }
/// ```
pub struct App {
    config: KingpinConfig,
    entries: HashMap<String, Entry>,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler>,
    on_start: Option<StartHook>,
    listen: Vec<(String, ListenAddr, ListenMode)>,
    prefix_output: bool,
    control: Option<PathBuf>,
}

type StartHook = Box<dyn FnOnce(&mut Kingpin)>;

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
            control: None,
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

    /// Gives `role` a listening socket: the kingpin binds `addr` once and
    /// shares it with every worker of the role, revived and resized ones
    /// included ([`ListenMode::Shared`]), or accepts itself and hands each
    /// connection to the least loaded ready worker
    /// ([`ListenMode::Distributed`]). Workers get it with
    /// [`crate::Mobster::listener`] or [`crate::Mobster::on_connection`].
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

    /// Opens a control socket at `path` for the `mob` command (`mob status`,
    /// `resize`, `reload`, `stop`, `kill`); see [`Kingpin::control_socket`].
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> App {
        self.control = Some(path.into());
        self
    }

    /// Runs `f` in the kingpin once, before its loop starts: install a
    /// signal handler, enqueue the first jobs, keep a [`crate::Handle`].
    pub fn on_start(mut self, f: impl FnOnce(&mut Kingpin) + 'static) -> App {
        self.on_start = Some(Box::new(f));
        self
    }

    /// A role of `workers` processes, each running another executable that
    /// speaks the protocol on fd 3.
    pub fn role_exe(mut self, name: &str, workers: u32, program: impl Into<PathBuf>, args: Vec<OsString>) -> App {
        self.config = self.config.role(name, workers);
        self.launch.insert(name.to_string(), Launch::Exe { program: program.into(), args });
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
        entry(mob)?;
        Ok(ExitCode::SUCCESS)
    }

    fn run_kingpin(self) -> Result<ExitCode, Error> {
        let mut kingpin = Kingpin::new(self.config, self.launch)?;
        kingpin.prefix_output(self.prefix_output);
        if let Some(path) = &self.control {
            kingpin.control_socket(path)?;
        }
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
