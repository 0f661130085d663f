//! The application's entry point: one binary that is the kingpin when
//! started by hand and a worker when started by its kingpin.

use crate::Error;
use crate::kingpin::{Event, Launch};
use crate::worker::WorkerEnv;
use mob_proto::{CloseReason, KingpinConfig, RoleSpec};
use mob_sys::listen::{ListenAddr, ListenMode};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A worker role's entry function (`M` is the runtime's mobster): set up,
/// then receive and answer until the kingpin asks the worker to stop or
/// goes away, then return.
pub type Entry<M> = fn(M) -> Result<(), Error>;

/// The application's handler of the kingpin `K`'s events.
pub type EventHandler<K> = Box<dyn FnMut(&mut K, Event)>;

/// A runtime, as [`App`] drives it: implemented by the runtime's kingpin.
pub trait Runtime: Sized + 'static {
    /// The runtime's worker side.
    type Mobster;

    /// A kingpin for `config`, starting each role as `launch` says.
    fn kingpin(config: KingpinConfig, launch: HashMap<String, Launch>) -> Result<Self, Error>;

    /// Binds `addr` and shares it with every worker of `role`.
    fn listen(&mut self, role: &str, addr: &ListenAddr, mode: ListenMode) -> Result<(), Error>;

    /// Calls `handler` for every [`Event`].
    fn on_event(&mut self, handler: EventHandler<Self>);

    /// Whether workers' stdout and stderr reach the kingpin's prefixed with
    /// `[role#slot pid] ` (`true`), or workers share them directly.
    fn prefix_output(&mut self, on: bool);

    /// Runs until the shutdown ends; success if it was clean.
    fn run(self) -> Result<ExitCode, Error>;

    /// The worker `env` describes, connected over `channel`.
    fn mobster(env: WorkerEnv, channel: OwnedFd) -> Result<Self::Mobster, Error>;
}

/// A runtime whose kingpin can listen on a control socket for the `mob`
/// command (both `mob-mio`'s and `mob-std`'s).
pub trait ControlSocket: Runtime {
    /// Opens the control socket at `path` (mode 0600, only the kingpin's
    /// own user is answered).
    fn control_socket(&mut self, path: &Path) -> Result<(), Error>;
}

type StartHook<K> = Box<dyn FnOnce(&mut K)>;
type ControlHook<K> = Box<dyn FnOnce(&mut K) -> Result<(), Error>>;

/// A mob application: its name, its roles and what each runs. `K` is the
/// runtime's kingpin (each runtime names this type `App`; its crate docs
/// show one).
///
/// The same binary is both sides: started from a shell, [`App::run`] becomes
/// the kingpin and re-executes the binary once per worker; started by the
/// kingpin (which sets `MOB_ROLE`), it runs that role's entry instead. This
/// is mob's `main.js`: `App::new("myapp").role("back", 4, back).role("front",
/// 2, front).run()`.
pub struct App<K: Runtime> {
    config: KingpinConfig,
    entries: HashMap<String, Entry<K::Mobster>>,
    launch: HashMap<String, Launch>,
    on_event: Option<EventHandler<K>>,
    on_start: Option<StartHook<K>>,
    listen: Vec<(String, ListenAddr, ListenMode)>,
    prefix_output: bool,
    control: Option<ControlHook<K>>,
}

impl<K: Runtime> App<K> {
    /// An application called `name` (it prefixes every process title).
    pub fn new(name: &str) -> Self {
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
    pub fn role(mut self, name: &str, workers: u32, entry: Entry<K::Mobster>) -> Self {
        self.config = self.config.role(name, workers);
        self.entries.insert(name.to_string(), entry);
        self
    }

    /// A role described in full (restart type, intensity, min/max,
    /// readiness, concurrency), each worker running `entry`.
    pub fn role_spec(mut self, spec: RoleSpec, entry: Entry<K::Mobster>) -> Self {
        self.entries.insert(spec.name.clone(), entry);
        self.config = self.config.role_spec(spec);
        self
    }

    /// A role of `workers` processes, each running another executable that
    /// speaks the protocol on fd 3 (one built on either runtime).
    pub fn role_exe(mut self, name: &str, workers: u32, program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        self.config = self.config.role(name, workers);
        self.launch.insert(name.to_string(), Launch::Exe { program: program.into(), args });
        self
    }

    /// Gives `role` a listening socket: the kingpin binds `addr` once and
    /// either hands it to every worker of the role, revived and resized ones
    /// included ([`ListenMode::Shared`]), or accepts itself and hands each
    /// connection to the least loaded ready worker of the role
    /// ([`ListenMode::Distributed`]). Workers get it with their mobster's
    /// `listener`, or receive each connection (`on_connection` on
    /// `mob-mio`, `Incoming::Connection` on `mob-std`).
    pub fn listen(mut self, role: &str, addr: ListenAddr, mode: ListenMode) -> Self {
        self.listen.push((role.to_string(), addr, mode));
        self
    }

    /// Whether each line the workers write to stdout and stderr reaches
    /// the kingpin's stdout and stderr prefixed with `[role#slot pid] `
    /// (`true`, the default), or workers simply share the kingpin's stdout
    /// and stderr (`false`).
    pub fn prefix_output(mut self, on: bool) -> Self {
        self.prefix_output = on;
        self
    }

    /// Runs `f` in the kingpin once, before its loop starts: install a
    /// signal handler, enqueue the first jobs, keep a [`crate::Handle`].
    pub fn on_start(mut self, f: impl FnOnce(&mut K) + 'static) -> Self {
        self.on_start = Some(Box::new(f));
        self
    }

    /// Adjusts limits and timeouts (see [`KingpinConfig`]).
    pub fn configure(mut self, f: impl FnOnce(&mut KingpinConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Calls `handler` in the kingpin for every [`Event`].
    pub fn on_event(mut self, handler: impl FnMut(&mut K, Event) + 'static) -> Self {
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
        let result = if Self::is_worker() { self.run_worker() } else { self.run_kingpin() };
        match result {
            Ok(code) => code,
            Err(e) => {
                log::error!("mob: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn run_worker(self) -> Result<ExitCode, Error> {
        let (env, channel) = WorkerEnv::take_channel()?;
        let entry = *self.entries.get(&env.role).ok_or_else(|| Error::UnknownRole(env.role.clone()))?;
        match entry(K::mobster(env, channel)?) {
            Ok(()) | Err(Error::Closed(CloseReason::Eof)) | Err(Error::Stopped) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e),
        }
    }

    fn run_kingpin(self) -> Result<ExitCode, Error> {
        let mut kingpin = K::kingpin(self.config, self.launch)?;
        kingpin.prefix_output(self.prefix_output);
        if let Some(control) = self.control {
            control(&mut kingpin)?;
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

impl<K: ControlSocket> App<K> {
    /// Opens a control socket at `path` for the `mob` command (`mob status`,
    /// `resize`, `reload`, `stop`, `kill`); see the runtime's
    /// `Kingpin::control_socket`.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.control = Some(Box::new(move |k: &mut K| k.control_socket(&path)));
        self
    }
}
