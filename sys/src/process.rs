//! Small facts about processes: exit statuses, titles, memory, liveness.

use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io;

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// Reaps `pid` if it has ended; `Ok(None)` if it still runs.
pub fn try_reap(pid: u32) -> io::Result<Option<Exit>> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(Exit::Code(code))),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(Exit::Signal(sig as i32))),
            Ok(_) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends SIGKILL to `pid`. A process that is already gone is not an error.
pub fn kill(pid: u32) -> io::Result<()> {
    send_signal(pid, Signal::SIGKILL)
}

/// Sends `sig` to `pid`. A process that is already gone is not an error.
pub fn send_signal(pid: u32, sig: Signal) -> io::Result<()> {
    match signal::kill(Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks for SIGKILL when the parent dies, and exits if it already has.
/// Workers spawned by [`crate::spawn::spawn_worker`] already have this; a
/// worker started some other way can call it itself.
pub fn die_with_parent(expected_parent: u32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() as u32 != expected_parent {
        std::process::exit(1);
    }
    Ok(())
}

/// Sets the name the kernel shows for this thread (`comm`, at most 15 bytes;
/// longer names are cut at a character boundary).
pub fn set_name(name: &str) {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if let Ok(c) = std::ffi::CString::new(&name[..end]) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// This process's resident set size in KiB, from `/proc/self/statm`.
pub fn rss_kib() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/statm"))?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    Ok(pages * page / 1024)
}

/// Number of fds this process has open, from `/proc/self/fd`.
pub fn open_fd_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// The kernel's scheduling figures for one thread, from
/// `/proc/thread-self/schedstat`, kept open so that each reading is one
/// `pread`.
#[derive(Debug)]
pub struct SchedStat(std::fs::File);

impl SchedStat {
    /// Opens the figures of the calling thread (readings taken on another
    /// thread still describe this one).
    pub fn open() -> io::Result<SchedStat> {
        std::fs::File::open("/proc/thread-self/schedstat").map(SchedStat)
    }

    /// How long the thread has waited, runnable, for a CPU, and how many
    /// times it has been given one, since it started.
    pub fn read(&self) -> io::Result<(std::time::Duration, u64)> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0)?;
        let text = std::str::from_utf8(&buf[..n]).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mut fields = text.split_whitespace().skip(1).map(|f| f.parse::<u64>());
        match (fields.next(), fields.next()) {
            (Some(Ok(waited)), Some(Ok(runs))) => Ok((std::time::Duration::from_nanos(waited), runs)),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/thread-self/schedstat")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SchedStat;
    use std::time::Duration;

    #[test]
    fn sched_stat_counts_the_runs_of_this_thread() {
        let stat = SchedStat::open().expect("/proc/thread-self/schedstat");
        let (waited, runs) = stat.read().expect("a reading");
        // Each sleep gives the CPU up; waking takes it again: a new run.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (waited_after, runs_after) = stat.read().expect("a reading");
        assert!(runs_after >= runs + 3, "{runs} then {runs_after} runs");
        assert!(waited_after >= waited);
    }
}
