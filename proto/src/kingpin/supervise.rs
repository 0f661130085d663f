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
    /// When the slot's missing worker (or reload replacement) is to be
    /// started: a delayed restart, or the retry of a failed spawn.
    pub respawn_at: Option<Instant>,
    /// Whether the start due at `respawn_at` is a restart (it counts against
    /// the role's intensity when it happens), not a retry of a failed spawn.
    pub restart_due: bool,
    /// Restarts of this slot so far.
    pub restarts: u32,
    /// Restarts in a row without staying up for `Backoff::reset_after`.
    pub consecutive: u32,
    /// Being removed by a resize: not revived when its worker exits.
    pub retiring: bool,
}

impl Slot {
    pub(super) fn new() -> Slot {
        Slot {
            link: None,
            replacement: None,
            respawn_at: None,
            restart_due: false,
            restarts: 0,
            consecutive: 0,
            retiring: false,
        }
    }

    /// Forgets a start that was due.
    fn cancel_respawn(&mut self) {
        self.respawn_at = None;
        self.restart_due = false;
    }
}

/// A rolling reload under way.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reload {
    /// The slot being replaced; those before it are done.
    pub slot: usize,
    /// Workers with this id or a higher one were started after the reload
    /// began: they already run the new code.
    pub since: u64,
}

pub(super) struct Role {
    pub name: Arc<str>,
    pub spec: RoleSpec,
    pub slots: Vec<Slot>,
    pub next_any: usize,
    /// When the role's recent restarts were started (the Spawns), oldest
    /// first.
    pub history: VecDeque<Instant>,
    pub failed: bool,
    pub online: bool,
    pub last_error: Option<String>,
    /// The rolling reload under way, if any.
    pub reloading: Option<Reload>,
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

/// A worker's state, as [`Kingpin::health`] reports it (and, as the index
/// of each variant, the control protocol's status table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
        let was_replacement = s.replacement == Some(link);
        if was_replacement {
            // A reload's replacement died before it took over.
            s.replacement = None;
        } else if s.link == Some(link) {
            s.link = None;
        } else {
            return; // an old worker replaced by a reload, or already gone
        }
        if s.retiring {
            self.retire_slots(role);
            self.continue_reload(role);
            return;
        }
        if !was_replacement && s.replacement.is_some() {
            // The old worker of a slot under reload: its replacement, already
            // starting, takes the slot once ready.
            self.update_online(role);
            return;
        }
        let restart = match self.roles[role].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart || self.roles[role].failed {
            if was_replacement {
                // This slot keeps its old worker; the reload moves on.
                self.skip_reload_slot(role, slot);
            }
            self.update_online(role);
            return;
        }
        if !self.may_restart(role, now) {
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
            self.respawn(role, slot, true, now);
        } else {
            s.respawn_at = Some(now + delay);
            s.restart_due = true;
            self.timers_changed();
        }
        self.update_online(role);
        self.continue_reload(role);
    }

    /// Whether `role` may make one more restart now: the restarts started
    /// within the intensity window, plus those already decided and waiting
    /// for their backoff, plus this one, are at most `max_restarts`. Counting
    /// the waiting ones keeps every window of started restarts (Spawns)
    /// within the intensity, however late they are started.
    fn may_restart(&mut self, role: usize, now: Instant) -> bool {
        let r = &mut self.roles[role];
        let window = r.spec.intensity.within;
        while r.history.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            r.history.pop_front();
        }
        let waiting = r.slots.iter().filter(|s| s.restart_due).count();
        r.history.len() + waiting < r.spec.intensity.max_restarts as usize
    }

    /// Starts what `slot` lacks: its worker if it has none, else the
    /// replacement its reload is waiting for. A restart (`counted`) is
    /// recorded against the role's intensity.
    pub(super) fn respawn(&mut self, role: usize, slot: usize, counted: bool, now: Instant) {
        let r = &self.roles[role];
        let Some(s) = r.slots.get(slot) else { return };
        if s.retiring || r.failed || self.shutdown.is_some() {
            return;
        }
        let fill_link = s.link.is_none();
        let fill_replacement = !fill_link
            && s.replacement.is_none()
            && r.reloading.is_some_and(|rl| rl.slot == slot && !self.is_new(s.link, rl.since));
        if !fill_link && !fill_replacement {
            return;
        }
        if counted {
            self.roles[role].history.push_back(now);
        }
        let link = self.new_link(role, slot as u32);
        let s = &mut self.roles[role].slots[slot];
        if fill_link {
            s.link = Some(link);
        } else {
            s.replacement = Some(link);
        }
    }

    /// Whether the worker on `link` was started at or after worker id
    /// `since` (so runs the code a reload brings).
    fn is_new(&self, link: Option<LinkId>, since: u64) -> bool {
        link.and_then(|l| self.link(l)).is_some_and(|l| l.info.id >= since)
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
        r.reloading = None;
        let name = r.name.clone();
        let last_error = r.last_error.clone();
        let links: Vec<LinkId> = r
            .slots
            .iter_mut()
            .flat_map(|s| {
                s.cancel_respawn();
                [s.link.take(), s.replacement.take()]
            })
            .flatten()
            .collect();
        for link in links {
            if let Some(l) = self.link_mut(link) {
                l.stopping = true;
            }
            self.close(link, CloseReason::Stopped, None);
        }
        // No worker will take the jobs still waiting for the role.
        self.fail_jobs_of_role(role);
        self.event(Event::RoleFailed { role: name, last_error });
        if self.config.on_role_failure == OnRoleFailure::ShutdownApp {
            // Unclean from the start: it may end at once, if no worker is
            // left to stop.
            let now = self.now;
            self.begin_shutdown(false, false, now);
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

    /// `link` can take work now (a worker that is draining or asked to stop
    /// takes none: nothing happens).
    pub(super) fn became_ready(&mut self, link: LinkId) {
        let Some(l) = self.link(link) else { return };
        if l.draining || l.stopping {
            return;
        }
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
            self.skip_reload_slot(role, slot);
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

    /// Roles with no slot at all are online from the start (their workers,
    /// none, are all ready).
    pub(super) fn empty_roles_online(&mut self) {
        for role in 0..self.roles.len() {
            if self.roles[role].slots.is_empty() {
                self.update_online(role);
            }
        }
    }

    /// Stops giving `link` work; once nothing is in flight, asks it to stop.
    /// A worker still starting is killed instead (once its process exists).
    pub(super) fn drain(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        l.draining = true;
        match l.phase {
            Phase::Up => self.finish_drain(link),
            Phase::Spawning | Phase::Handshaking => self.kill(link),
            Phase::Closing => {}
        }
    }

    /// Sends Stop to a draining worker that has nothing left in flight. Its
    /// grace is [`KingpinConfig::shutdown_grace`](crate::KingpinConfig),
    /// or during a shutdown what is left of the shutdown's own (the worker
    /// may have drained for part of it).
    pub(super) fn finish_drain(&mut self, link: LinkId) {
        let mut deadline = self.now + self.config.shutdown_grace;
        if let Some(sd) = &self.shutdown {
            deadline = deadline.min(sd.deadline);
        }
        let grace_ms = crate::requester::millis(deadline.saturating_duration_since(self.now));
        let Some(l) = self.link_mut(link) else { return };
        if !l.draining || l.stopping || l.inflight > 0 || l.phase != Phase::Up {
            return;
        }
        l.stopping = true;
        l.stop_deadline = Some(deadline);
        self.timers_changed();
        self.push(link, Kind::Stop, &Stop { grace_ms }, &[], alloc::vec::Vec::new()).ok();
    }

    /// Changes how many workers `role` has (within its min and max).
    /// Growing spawns new slots; shrinking drains the highest slots and then
    /// stops them. Returns the count in force.
    pub(super) fn resize_role(&mut self, role: usize, wanted: u32) -> u32 {
        let r = &mut self.roles[role];
        // Not `clamp`: a configuration with `min > max` must not panic.
        let wanted = wanted.max(r.spec.min).min(r.spec.max);
        let current = r.slots.len() as u32;
        if r.failed || self.shutdown.is_some() {
            return r.spec.workers;
        }
        r.spec.workers = wanted;
        // Slots that were retiring and are wanted again: a worker not yet
        // asked to stop goes back to work; an empty slot is filled.
        let mut unretired = Vec::new();
        for slot in 0..current.min(wanted) {
            let s = &mut r.slots[slot as usize];
            if s.retiring {
                s.retiring = false;
                unretired.push(slot as usize);
            }
        }
        for slot in unretired {
            let s = &self.roles[role].slots[slot];
            let (link, replacement) = (s.link, s.replacement);
            if let Some(l) = link.and_then(|id| self.link_mut(id)) {
                if l.stopping {
                    // On its way out: it leaves the slot, as a reload's old
                    // worker does, and a new worker takes the slot now.
                    self.roles[role].slots[slot].link = None;
                } else {
                    l.draining = false;
                }
            }
            if replacement.and_then(|id| self.link(id)).is_some_and(|l| l.stopping) {
                self.roles[role].slots[slot].replacement = None;
            }
            let now = self.now;
            self.respawn(role, slot, false, now);
        }
        for _ in current..wanted {
            self.roles[role].slots.push(Slot::new());
        }
        for slot in current..wanted {
            self.spawn(role, slot);
        }
        let r = &mut self.roles[role];
        let mut to_drain = Vec::new();
        for slot in wanted..current {
            let s = &mut r.slots[slot as usize];
            if s.retiring {
                continue;
            }
            s.retiring = true;
            s.cancel_respawn();
            to_drain.extend(s.link.into_iter().chain(s.replacement));
        }
        for link in to_drain {
            self.drain(link);
        }
        self.retire_slots(role);
        self.update_online(role);
        self.continue_reload(role);
        wanted
    }

    /// Drops retiring slots at the end of the role that have no worker left.
    pub(super) fn retire_slots(&mut self, role: usize) {
        let r = &mut self.roles[role];
        while r.slots.last().is_some_and(|s| s.retiring && s.link.is_none() && s.replacement.is_none()) {
            r.slots.pop();
        }
    }

    /// Starts a rolling restart of `role`: one slot at a time, a new worker
    /// is started, and once it is ready the old one drains and stops.
    pub(super) fn reload_role(&mut self, role: usize) -> bool {
        let since = self.next_worker;
        let r = &mut self.roles[role];
        if r.failed || r.reloading.is_some() || self.shutdown.is_some() {
            return false;
        }
        r.reloading = Some(Reload { slot: 0, since });
        self.continue_reload(role);
        true
    }

    /// The reload is done with `slot` (its replacement took over, or it
    /// keeps its old worker): on to the next one.
    fn skip_reload_slot(&mut self, role: usize, slot: usize) {
        if let Some(rl) = &mut self.roles[role].reloading
            && rl.slot == slot
        {
            rl.slot += 1;
        }
        self.continue_reload(role);
    }

    /// Moves the reload on to the next slot that still runs an old worker,
    /// and starts its replacement; reports the reload once every slot is
    /// done. A slot waits while its replacement starts, or while a restart
    /// of its replacement waits for its backoff.
    fn continue_reload(&mut self, role: usize) {
        loop {
            let Some(rl) = self.roles[role].reloading else { return };
            let r = &self.roles[role];
            let Some(s) = r.slots.get(rl.slot) else {
                self.roles[role].reloading = None;
                let name = self.roles[role].name.clone();
                self.event(Event::RoleReloaded(name));
                return;
            };
            if s.replacement.is_some() {
                return;
            }
            // Done: removed by a resize, empty (revived by its own policy,
            // with new code), or already new.
            if s.retiring || s.link.is_none() || self.is_new(s.link, rl.since) {
                if let Some(rl) = &mut self.roles[role].reloading {
                    rl.slot += 1;
                }
                continue;
            }
            if s.respawn_at.is_some() {
                return;
            }
            let link = self.new_link(role, rl.slot as u32);
            self.roles[role].slots[rl.slot].replacement = Some(link);
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
    /// the rest after the grace period; hard kills everyone now. A shutdown
    /// started as not `clean` (a role failed) can only end unclean.
    pub(super) fn begin_shutdown(&mut self, hard: bool, clean: bool, now: Instant) {
        if let Some(sd) = &mut self.shutdown {
            sd.clean &= clean;
        }
        match &mut self.shutdown {
            Some(sd) if sd.hard || !hard => return,
            Some(sd) => sd.hard = true,
            None => {
                self.shutdown = Some(Shutdown { hard, deadline: now + self.config.shutdown_grace, clean });
            }
        }
        for role in self.roles.iter_mut() {
            role.reloading = None;
            for s in role.slots.iter_mut() {
                s.cancel_respawn();
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

    /// Kills `link`'s process; one still being spawned is killed as soon
    /// as it exists ([`Kingpin::handle_spawned`]).
    pub(super) fn kill(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        l.stopping = true;
        self.push_kill(link);
    }

    /// Asks the runtime to kill `link`'s process, once: only if it has one
    /// that has not been reaped nor already killed.
    pub(super) fn push_kill(&mut self, link: LinkId) {
        let Some(l) = self.link(link) else { return };
        let pid = l.info.pid;
        if l.killed || l.phase == Phase::Spawning || self.pids.get(&pid) != Some(&link) {
            return;
        }
        if let Some(l) = self.link_mut(link) {
            l.killed = true;
        }
        self.outputs.push_back(Output::Kill { pid, link });
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
            self.begin_shutdown(true, false, now);
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
