//! Supervision: restart policy (OTP's restart types and intensity, with
//! backoff), readiness and online events, heartbeats, resizing, rolling
//! reloads, and shutdown.

use super::{Event, ExitStatus, Kingpin, LinkId, Output, Phase};
use crate::config::{OnRoleFailure, Restart, RoleSpec};
use crate::error::CloseReason;
use crate::time::Instant;
use crate::wire::{Kind, Ping, Status, Stop};
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

pub(super) struct Slot {
    /// The worker serving this slot.
    pub link: Option<LinkId>,
    /// A replacement starting during a rolling reload.
    pub replacement: Option<LinkId>,
    pub respawn_at: Option<Instant>,
    /// Restarts of this slot so far.
    pub restarts: u32,
    /// Restarts in a row without staying up for `Backoff::reset_after`.
    pub consecutive: u32,
    /// Being removed by a resize: not revived when its worker exits.
    pub retiring: bool,
}

impl Slot {
    pub(super) fn new() -> Slot {
        Slot { link: None, replacement: None, respawn_at: None, restarts: 0, consecutive: 0, retiring: false }
    }
}

pub(super) struct Role {
    pub name: Arc<str>,
    pub spec: RoleSpec,
    pub slots: Vec<Slot>,
    pub next_any: usize,
    /// Restart times within the intensity window.
    pub history: VecDeque<Instant>,
    pub failed: bool,
    pub online: bool,
    pub last_error: Option<String>,
    /// The slot a rolling reload is replacing, if one is under way.
    pub reloading: Option<usize>,
}

impl Role {
    pub(super) fn new(spec: &RoleSpec) -> Role {
        Role {
            name: Arc::from(spec.name.as_str()),
            spec: spec.clone(),
            slots: (0..spec.workers).map(|_| Slot::new()).collect(),
            next_any: 0,
            history: VecDeque::new(),
            failed: false,
            online: false,
            last_error: None,
            reloading: None,
        }
    }
}

/// A worker's state, as [`Kingpin::health`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawn requested, or process started and handshake not done.
    Spawning,
    /// Handshake done, not (yet) ready for work.
    Connected,
    /// Takes new work.
    Ready,
    /// Said it is busy: gets no new work.
    Busy,
    /// Finishing its work before it stops (resize, reload, shutdown).
    Draining,
    /// Its link is closed; waiting for the process to be reaped.
    Exited,
}

/// One worker's figures (load-process-manager's `health()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerHealth {
    /// Process id.
    pub pid: u32,
    /// Role.
    pub role: Arc<str>,
    /// Slot within the role.
    pub slot: u32,
    /// State.
    pub state: WorkerState,
    /// Resident memory in KiB, as the worker last reported it.
    pub rss_kib: u64,
    /// Requests and jobs in flight to it.
    pub in_flight: u32,
    /// Restarts of its slot so far.
    pub restarts: u32,
    /// Time since it was spawned.
    pub uptime: Duration,
}

/// Where an application shutdown stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shutdown {
    pub hard: bool,
    pub deadline: Instant,
    /// Whether it is a clean shutdown so far.
    pub clean: bool,
}

impl Kingpin {
    /// What happens to a slot whose worker on `link` has exited.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_exit(
        &mut self,
        role: usize,
        slot: usize,
        link: LinkId,
        status: ExitStatus,
        expected: bool,
        fatal: bool,
        up_for: Duration,
        now: Instant,
    ) {
        let abnormal = !matches!(status, ExitStatus::Code(0));
        // A worker's own account of its death (its panic message) wins over
        // the bare exit status.
        if abnormal && !expected && !fatal {
            self.roles[role].last_error = Some(describe(status));
        }
        if let Some(sd) = &mut self.shutdown {
            if abnormal && !expected {
                sd.clean = false;
            }
            return;
        }
        let Some(s) = self.roles[role].slots.get_mut(slot) else { return };
        if s.replacement == Some(link) {
            // A reload's replacement died before it was ready: try again.
            s.replacement = None;
        } else if s.link == Some(link) {
            s.link = None;
        } else {
            return; // an old worker replaced by a reload, or already gone
        }
        if s.retiring {
            self.retire_slots(role);
            return;
        }
        let restart = match self.roles[role].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart || self.roles[role].failed {
            self.update_online(role);
            return;
        }
        if !self.record_restart(role, now) {
            return self.fail_role(role);
        }
        let backoff = self.config.backoff;
        let s = &mut self.roles[role].slots[slot];
        if up_for >= backoff.reset_after {
            s.consecutive = 0;
        }
        let delay = backoff.delay(s.consecutive);
        s.consecutive += 1;
        s.restarts += 1;
        if delay.is_zero() {
            self.spawn(role, slot as u32);
        } else {
            s.respawn_at = Some(now + delay);
        }
        self.update_online(role);
    }

    /// Counts a restart against the role's intensity; false if it is one
    /// too many.
    fn record_restart(&mut self, role: usize, now: Instant) -> bool {
        let r = &mut self.roles[role];
        let window = r.spec.intensity.within;
        while r.history.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            r.history.pop_front();
        }
        r.history.push_back(now);
        r.history.len() <= r.spec.intensity.max_restarts as usize
    }

    /// The role restarted too often: stop it, report it, and shut the app
    /// down if so configured.
    pub(super) fn fail_role(&mut self, role: usize) {
        let r = &mut self.roles[role];
        if r.failed {
            return;
        }
        r.failed = true;
        r.online = false;
        let name = r.name.clone();
        let last_error = r.last_error.clone();
        let links: Vec<LinkId> = r
            .slots
            .iter_mut()
            .flat_map(|s| {
                s.respawn_at = None;
                [s.link.take(), s.replacement.take()]
            })
            .flatten()
            .collect();
        for link in links {
            self.close(link, CloseReason::Stopped, None);
        }
        self.event(Event::RoleFailed { role: name, last_error });
        if self.config.on_role_failure == OnRoleFailure::ShutdownApp {
            let now = self.now;
            self.begin_shutdown(false, now);
            if let Some(sd) = &mut self.shutdown {
                sd.clean = false;
            }
        }
    }

    /// A worker reported its status.
    pub(super) fn on_status(&mut self, link: LinkId, status: Status) {
        let Some(l) = self.link_mut(link) else { return };
        l.rss_kib = status.rss_kib;
        let was = l.ready;
        l.ready = status.ready;
        l.was_ready |= status.ready;
        if status.ready && !was {
            self.became_ready(link);
        } else if !status.ready && was {
            let role = l.role;
            self.update_online(role);
        }
    }

    /// `link` can take work now.
    pub(super) fn became_ready(&mut self, link: LinkId) {
        let Some(l) = self.link(link) else { return };
        let (role, slot, info) = (l.role, l.info.slot as usize, l.info.clone());
        self.event(Event::WorkerReady(info));
        // A reload's replacement is ready: it takes the slot; the old worker
        // drains and stops.
        if let Some(s) = self.roles[role].slots.get_mut(slot)
            && s.replacement == Some(link)
        {
            let old = s.link.replace(link);
            s.replacement = None;
            if let Some(old) = old {
                self.drain(old);
            }
            self.continue_reload(role);
        }
        self.update_online(role);
        self.dispatch_jobs(role);
    }

    /// Emits RoleOnline / AppOnline when every wanted slot is ready.
    pub(super) fn update_online(&mut self, role: usize) {
        let r = &self.roles[role];
        let all_ready = !r.failed
            && r.slots.iter().filter(|s| !s.retiring).all(|s| {
                s.link.and_then(|id| self.link(id)).is_some_and(|l| l.phase == Phase::Up && l.ready && !l.draining)
            });
        let name = r.name.clone();
        if all_ready && !r.online {
            self.roles[role].online = true;
            self.event(Event::RoleOnline(name));
            if !self.app_online && self.roles.iter().all(|r| r.online || r.failed) && self.shutdown.is_none() {
                self.app_online = true;
                self.event(Event::AppOnline);
            }
        } else if !all_ready {
            self.roles[role].online = false;
        }
    }

    /// Stops giving `link` work; once nothing is in flight, asks it to stop.
    pub(super) fn drain(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        if l.phase != Phase::Up {
            let (pid, has_pid) = (l.info.pid, l.phase == Phase::Handshaking);
            l.stopping = true;
            if has_pid {
                self.outputs.push_back(Output::Kill { pid, link });
            }
            return;
        }
        l.draining = true;
        self.finish_drain(link);
    }

    /// Sends Stop to a draining worker that has nothing left in flight.
    pub(super) fn finish_drain(&mut self, link: LinkId) {
        let grace_ms = crate::requester::millis(self.config.shutdown_grace);
        let deadline = self.now + self.config.shutdown_grace;
        let Some(l) = self.link_mut(link) else { return };
        if !l.draining || l.stopping || l.inflight > 0 || l.phase != Phase::Up {
            return;
        }
        l.stopping = true;
        l.stop_deadline = Some(deadline);
        self.push(link, Kind::Stop, &Stop { grace_ms }, &[], alloc::vec::Vec::new()).ok();
    }

    /// Changes how many workers `role` has (within its min and max).
    /// Growing spawns new slots; shrinking drains the highest slots and then
    /// stops them. Returns the count in force.
    pub(super) fn resize_role(&mut self, role: usize, wanted: u32) -> u32 {
        let r = &mut self.roles[role];
        let wanted = wanted.clamp(r.spec.min, r.spec.max);
        let current = r.slots.len() as u32;
        if r.failed || self.shutdown.is_some() {
            return current;
        }
        r.spec.workers = wanted;
        for slot in 0..current.min(wanted) {
            r.slots[slot as usize].retiring = false;
        }
        for _ in current..wanted {
            r.slots.push(Slot::new());
        }
        for slot in current..wanted {
            self.spawn(role, slot);
        }
        let r = &mut self.roles[role];
        let mut to_drain = Vec::new();
        for slot in wanted..current {
            let s = &mut r.slots[slot as usize];
            s.retiring = true;
            s.respawn_at = None;
            to_drain.extend(s.link.into_iter().chain(s.replacement));
        }
        for link in to_drain {
            self.drain(link);
        }
        self.retire_slots(role);
        self.update_online(role);
        wanted
    }

    /// Drops retiring slots at the end of the role that have no worker left.
    fn retire_slots(&mut self, role: usize) {
        let r = &mut self.roles[role];
        while r.slots.last().is_some_and(|s| s.retiring && s.link.is_none() && s.replacement.is_none()) {
            r.slots.pop();
        }
    }

    /// Starts a rolling restart of `role`: one slot at a time, a new worker
    /// is started, and once it is ready the old one drains and stops.
    pub(super) fn reload_role(&mut self, role: usize) -> bool {
        let r = &mut self.roles[role];
        if r.failed || r.reloading.is_some() || self.shutdown.is_some() {
            return false;
        }
        r.reloading = Some(0);
        self.continue_reload(role);
        true
    }

    /// Starts the replacement for the next slot of a reload, if any.
    fn continue_reload(&mut self, role: usize) {
        loop {
            let r = &mut self.roles[role];
            let Some(next) = r.reloading else { return };
            if next >= r.slots.len() {
                r.reloading = None;
                let name = r.name.clone();
                self.event(Event::RoleReloaded(name));
                return;
            }
            r.reloading = Some(next + 1);
            let s = &mut r.slots[next];
            if s.retiring || s.replacement.is_some() {
                continue;
            }
            if s.link.is_none() {
                continue; // an empty slot is revived by its own policy
            }
            let link = self.new_link(role, next as u32);
            self.roles[role].slots[next].replacement = Some(link);
            return;
        }
    }

    /// Heartbeats: pings due, and workers silent for too long.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        let Some((interval, timeout)) = self.config.heartbeat else { return };
        let mut hung = Vec::new();
        let mut ping = Vec::new();
        for (key, l) in self.links.iter_mut() {
            if l.phase != Phase::Up {
                continue;
            }
            let id = super::make_id(key, l.generation);
            if now.saturating_duration_since(l.last_seen) >= timeout {
                hung.push(id);
            } else if l.next_ping.is_none_or(|t| t <= now) {
                l.next_ping = Some(now + interval);
                l.ping_seq += 1;
                ping.push((id, l.ping_seq));
            }
        }
        for (link, seq) in ping {
            self.push(link, Kind::Ping, &Ping { seq }, &[], Vec::new()).ok();
        }
        for link in hung {
            self.close(link, CloseReason::Hung, None);
        }
    }

    /// Starts a shutdown: soft asks every worker to finish and stop and kills
    /// the rest after the grace period; hard kills everyone now.
    pub(super) fn begin_shutdown(&mut self, hard: bool, now: Instant) {
        match &mut self.shutdown {
            Some(sd) if sd.hard || !hard => return,
            Some(sd) => sd.hard = true,
            None => {
                self.shutdown = Some(Shutdown { hard, deadline: now + self.config.shutdown_grace, clean: true });
            }
        }
        for role in self.roles.iter_mut() {
            role.reloading = None;
            for s in role.slots.iter_mut() {
                s.respawn_at = None;
            }
        }
        let links: Vec<LinkId> = self.links.iter().map(|(key, l)| super::make_id(key, l.generation)).collect();
        for link in links {
            if hard {
                self.kill(link);
            } else {
                self.drain(link);
            }
        }
        self.fail_jobs_for_shutdown();
        self.check_exit();
    }

    /// Kills `link`'s process (or forgets a spawn not yet started).
    pub(super) fn kill(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        l.stopping = true;
        let (pid, phase) = (l.info.pid, l.phase);
        if phase == Phase::Spawning {
            return;
        }
        if self.pids.contains_key(&pid) {
            self.outputs.push_back(Output::Kill { pid, link });
        }
    }

    /// A soft shutdown past its grace, or drained workers past theirs.
    pub(super) fn shutdown_deadlines(&mut self, now: Instant) {
        let late: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.stop_deadline.is_some_and(|d| d <= now))
            .map(|(key, l)| super::make_id(key, l.generation))
            .collect();
        for link in late {
            if let Some(l) = self.link_mut(link) {
                l.stop_deadline = None;
            }
            self.kill(link);
        }
        if let Some(sd) = self.shutdown
            && !sd.hard
            && sd.deadline <= now
        {
            if let Some(sd) = &mut self.shutdown {
                sd.clean = false;
            }
            self.begin_shutdown(true, now);
        }
    }

    /// Emits [`Output::Exit`] once a shutdown has no process left.
    pub(super) fn check_exit(&mut self) {
        let Some(sd) = self.shutdown else { return };
        if self.exited {
            return;
        }
        // A hard kill exits at once; a soft one when every worker is gone.
        let live = self.links.iter().any(|(_, l)| l.phase != Phase::Spawning || l.stopping);
        let spawning_only = self.links.iter().all(|(_, l)| l.phase == Phase::Spawning);
        if sd.hard || !live || spawning_only {
            self.exited = true;
            let clean = sd.clean && !sd.hard;
            self.outputs.push_back(Output::Exit { clean });
        }
    }

    /// Per-worker figures.
    pub(super) fn health_report(&self, now: Instant) -> Vec<WorkerHealth> {
        let mut out = Vec::new();
        for role in &self.roles {
            for (slot, s) in role.slots.iter().enumerate() {
                for link in s.link.iter().chain(s.replacement.iter()) {
                    let Some(l) = self.link(*link) else { continue };
                    let state = match (l.phase, l.ready, l.draining || l.stopping) {
                        (Phase::Closing, _, _) => WorkerState::Exited,
                        (Phase::Spawning | Phase::Handshaking, _, _) => WorkerState::Spawning,
                        (Phase::Up, _, true) => WorkerState::Draining,
                        (Phase::Up, true, false) => WorkerState::Ready,
                        (Phase::Up, false, false) if l.was_ready => WorkerState::Busy,
                        (Phase::Up, false, false) => WorkerState::Connected,
                    };
                    out.push(WorkerHealth {
                        pid: l.info.pid,
                        role: role.name.clone(),
                        slot: slot as u32,
                        state,
                        rss_kib: l.rss_kib,
                        in_flight: l.inflight,
                        restarts: s.restarts,
                        uptime: now.saturating_duration_since(l.spawned_at),
                    });
                }
            }
        }
        out
    }
}

/// A one-line account of how a process ended.
pub(super) fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited with code {c}"),
        ExitStatus::Signal(s) => format!("killed by signal {s}"),
    }
}
