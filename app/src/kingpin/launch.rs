//! How the kingpin starts a worker process: which program, and the
//! environment that tells it who it is.

use crate::Error;
use mob_proto::{KingpinConfig, Spawn};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

/// How the processes of a role are started.
#[derive(Clone, Debug)]
pub enum Launch {
    /// Re-execute this program (with the same arguments, as Node's cluster
    /// does); its `main` sees `MOB_ROLE` and runs the role's entry.
    SelfExec,
    /// Run another executable, which must speak the protocol on fd 3 (for
    /// example one built with either runtime's `Mobster::from_env`).
    Exe {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
    },
}

/// Starts the worker `spawn` asks for, as `launch` says for its role (a
/// re-execution of this program for roles missing from it), titled
/// `APP: ROLE#SLOT` and told who it is (and how long its loop may poll,
/// `config.spin`) in `MOB_*` variables. Its stdout and
/// stderr are the first two of `output` (the write ends of the kingpin's
/// prefixing pipes, with what the runtime keeps of them, `P`), or the
/// kingpin's own if `None`. Returns the child, the kingpin's end of its
/// channel (blocking) and the runtime's `P`.
pub fn start_worker<P>(
    launch: &HashMap<String, Launch>,
    config: &KingpinConfig,
    spawn: &Spawn,
    output: Option<std::io::Result<(Stdio, Stdio, P)>>,
) -> Result<(Child, OwnedFd, Option<P>), Error> {
    let mut cmd = match launch.get(&*spawn.role).cloned().unwrap_or(Launch::SelfExec) {
        Launch::SelfExec => {
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            cmd.args(std::env::args_os().skip(1));
            cmd
        }
        Launch::Exe { program, args } => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args);
            cmd
        }
    };
    let app = &config.app;
    cmd.arg0(format!("{app}: {}#{}", spawn.role, spawn.slot))
        .env(mob_sys::ENV_ROLE, &*spawn.role)
        .env(mob_sys::ENV_SLOT, spawn.slot.to_string())
        .env(mob_sys::ENV_APP, app)
        .env(mob_sys::ENV_FD, mob_sys::CHANNEL_FD.to_string())
        .env(mob_sys::ENV_SPIN_US, spin_micros(config.spin).to_string())
        .stdin(Stdio::null());
    let pending = match output.transpose()? {
        Some((out, err, pending)) => {
            cmd.stdout(out).stderr(err);
            Some(pending)
        }
        None => None,
    };
    let (ours, theirs) = mob_sys::channel::socketpair()?;
    let child = mob_sys::spawn::spawn_worker(&mut cmd, theirs)?;
    Ok((child, ours, pending))
}

/// `spin` in whole microseconds for `MOB_SPIN_US`: rounded up, so that a
/// limit under a microsecond does not turn the workers' polling off, and
/// at most `u64::MAX`, which a worker can parse.
fn spin_micros(spin: std::time::Duration) -> u64 {
    u64::try_from(spin.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::spin_micros;
    use std::time::Duration;

    #[test]
    fn the_spin_limit_is_passed_in_whole_microseconds_rounded_up() {
        assert_eq!(spin_micros(Duration::ZERO), 0);
        assert_eq!(spin_micros(Duration::from_nanos(1)), 1);
        assert_eq!(spin_micros(Duration::from_micros(50)), 50);
        assert_eq!(spin_micros(Duration::from_nanos(50_001)), 51);
        assert_eq!(spin_micros(Duration::MAX), u64::MAX);
    }
}
