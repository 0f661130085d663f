//! Supervision, run in the deterministic simulation on the virtual clock:
//! restart intensity and backoff, restart types, readiness, heartbeats,
//! resizing, rolling reloads, shutdown, the work queue, and Fatal reports.
//! Each test pins one rule down; a proptest at the end checks that no
//! sequence of crashes, resizes, reloads, jobs and clock jumps makes a role
//! restart more often than its intensity allows, and that every job ends
//! exactly once and every fd comes back exactly once.

mod common;

use common::*;
use core::time::Duration;
use mob_proto::{
    Backoff, CloseReason, ExitStatus, Failure, Intensity, JobOptions, KingpinConfig, OnRoleFailure, Phase,
    RequestError, Restart, RoleSpec, SendError, Source, Target, WorkerInfo, WorkerState,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const JOB_NS: &str = mob_proto::kingpin::JOB_NAMESPACE;

/// A permanent role of `n` workers with default policy.
fn spec(name: &str, n: u32) -> RoleSpec {
    RoleSpec::new(name, n)
}

/// A role of `n` workers that restarts at most `max` times within `within`.
fn limited(name: &str, n: u32, max: u32, within: Duration) -> RoleSpec {
    RoleSpec { intensity: Intensity { max_restarts: max, within }, ..spec(name, n) }
}

/// An app of these roles, heartbeats off (their own tests turn them on),
/// restarts without backoff (its own test sets one).
fn app(roles: impl IntoIterator<Item = RoleSpec>) -> KingpinConfig {
    let mut config = roles.into_iter().fold(KingpinConfig::new("app"), KingpinConfig::role_spec);
    config.heartbeat = None;
    config.backoff = Backoff { initial: Duration::ZERO, max: Duration::ZERO, reset_after: secs(30) };
    config
}

/// A sim whose workers are all up, with no event recorded yet.
fn up(config: KingpinConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.run_until_idle();
    sim.take_events();
    sim
}

fn info(sim: &Sim, pid: u32) -> WorkerInfo {
    sim.info(pid).0
}

/// What `pid`'s application saw since the last look, but its Welcome.
fn wevents(sim: &mut Sim, pid: u32) -> Vec<WEvent> {
    let p = sim.procs.get_mut(&pid).expect("known pid");
    let (welcome, rest): (Vec<WEvent>, Vec<WEvent>) =
        std::mem::take(&mut p.events).into_iter().partition(|e| matches!(e, WEvent::Welcome(_)));
    p.events = welcome;
    rest
}

/// The calls `pid` received since the last look (and nothing else).
fn calls_of(sim: &mut Sim, pid: u32) -> Vec<(u64, Received)> {
    wevents(sim, pid)
        .into_iter()
        .map(|e| match e {
            WEvent::Request { call, msg, .. } => (call, msg),
            other => panic!("worker {pid}: wanted only calls, got {other:?}"),
        })
        .collect()
}

/// How many Stops `pid` received, in all.
fn stops(sim: &Sim, pid: u32) -> usize {
    sim.proc(pid).events.iter().filter(|e| matches!(e, WEvent::Stop { .. })).count()
}

/// (role, slot) of the Spawns since the `from`th.
fn spawned(sim: &Sim, from: usize) -> Vec<(String, u32)> {
    sim.spawns[from..].iter().map(|s| (s.role.to_string(), s.slot)).collect()
}

/// `pid` dies with `status`, and everything settles.
fn die(sim: &mut Sim, pid: u32, status: ExitStatus) {
    sim.exit(pid, status);
    sim.run_until_idle();
}

/// The live worker of `role`'s `slot` dies with `status`, and everything
/// settles.
fn crash(sim: &mut Sim, role: &str, slot: u32, status: ExitStatus) {
    let pid = sim.pid_of(role, slot);
    die(sim, pid, status);
}

/// Every worker that received a Stop exits cleanly, and everything settles.
fn obey_stops(sim: &mut Sim) {
    loop {
        let stopped: Vec<u32> =
            sim.procs.values().filter(|p| p.alive() && stops(sim, p.pid) > 0).map(|p| p.pid).collect();
        if stopped.is_empty() {
            return;
        }
        for pid in stopped {
            sim.exit(pid, ExitStatus::Code(0));
        }
        sim.run_until_idle();
    }
}

/// How a job ended: the pid that answered and its payload, or why not.
type JobEnd = (u64, Result<(u32, Vec<u8>), RequestError>);

/// The job ends among `events`, in order.
fn jobs_done(events: &[KEvent]) -> Vec<JobEnd> {
    events
        .iter()
        .filter_map(|e| match e {
            KEvent::JobDone { id, result } => {
                Some((*id, result.clone().map(|(w, payload, _)| (w.pid, payload.to_vec()))))
            }
            _ => None,
        })
        .collect()
}

fn enqueue(sim: &mut Sim, role: &str, payload: &str, options: JobOptions) -> u64 {
    let now = sim.now;
    sim.kingpin.enqueue(role, payload.as_bytes(), Vec::new(), options, now).unwrap()
}

/// The jobs `pid` received since the last look: (call id, payload).
fn jobs_of(sim: &mut Sim, pid: u32) -> Vec<(u64, String)> {
    calls_of(sim, pid)
        .into_iter()
        .map(|(call, m)| {
            assert_eq!((m.ns.as_str(), m.name.as_str(), &m.from), (JOB_NS, "job", &Source::Kingpin));
            (call, String::from_utf8(m.payload.to_vec()).unwrap())
        })
        .collect()
}

fn ack(sim: &mut Sim, pid: u32, call: u64, payload: &str) {
    sim.worker_mut(pid).respond(call, Ok(()), payload.as_bytes(), Vec::new()).unwrap();
}

// ---------------------------------------------------------------------------
// 1. Restart intensity
// ---------------------------------------------------------------------------

#[test]
fn a_role_restarts_exactly_max_restarts_times_within_the_window_and_the_next_exit_fails_it() {
    let mut sim = up(app([limited("a", 2, 3, secs(60)), spec("b", 1)]));
    let b = sim.pid_of("b", 0);
    // Three restarts, a second apart, alternating slots: each is made at once.
    for i in 0..3u32 {
        sim.advance(secs(1));
        let before = sim.spawns.len();
        crash(&mut sim, "a", i % 2, ExitStatus::Signal(9));
        assert_eq!(spawned(&sim, before), [("a".to_string(), i % 2)], "restart {}", i + 1);
    }
    sim.take_events();

    // The fourth exit within the window fails the role instead.
    sim.advance(secs(1));
    let before = sim.spawns.len();
    let (victim, other) = (sim.pid_of("a", 1), sim.pid_of("a", 0));
    let (victim_info, other_info, b_info) = (info(&sim, victim), info(&sim, other), info(&sim, b));
    die(&mut sim, victim, ExitStatus::Code(2));
    assert_eq!(spawned(&sim, before), [], "no restart once the intensity is used up");
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Exited(victim_info, ExitStatus::Code(2)),
            KEvent::LinkClosed(other_info.clone(), CloseReason::Stopped),
            KEvent::RoleFailed { role: "a".into(), last_error: Some("exited with code 2".into()) },
            KEvent::Exited(other_info, ExitStatus::Signal(9)),
        ]
    );
    assert_eq!(sim.kills, vec![(other, sim.proc(other).link)], "the rest of the role is killed, without a Stop");
    assert_eq!(stops(&sim, other), 0);
    assert_eq!(sim.kingpin.last_error("a"), Some("exited with code 2"));

    // By default the app shuts down: the other roles are asked to stop, and
    // the kingpin exits unclean once they have.
    assert!(sim.kingpin.is_shutting_down());
    assert_eq!(stops(&sim, b), 1);
    let now = sim.now;
    assert_eq!(sim.kingpin.enqueue("a", b"", Vec::new(), JobOptions::default(), now), Err(SendError::ShuttingDown));
    die(&mut sim, b, ExitStatus::Code(0));
    assert_eq!(sim.take_events(), vec![KEvent::Exited(b_info, ExitStatus::Code(0)), KEvent::Exit { clean: false }]);
    assert_eq!(spawned(&sim, before), []);
    sim.ledger.assert_balanced();
}

#[test]
fn a_role_failure_with_no_worker_left_to_stop_exits_unclean_at_once() {
    let mut sim = up(app([limited("a", 1, 0, secs(60))]));
    let a = sim.pid_of("a", 0);
    let ia = info(&sim, a);
    die(&mut sim, a, ExitStatus::Code(1));
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Exited(ia, ExitStatus::Code(1)),
            KEvent::RoleFailed { role: "a".into(), last_error: Some("exited with code 1".into()) },
            KEvent::Exit { clean: false },
        ]
    );
}

#[test]
fn with_continue_a_failed_role_stops_and_the_others_keep_working() {
    let mut config = app([limited("a", 1, 0, secs(60)), spec("b", 2)]);
    config.on_role_failure = OnRoleFailure::Continue;
    let mut sim = up(config);
    let (a, b0) = (sim.pid_of("a", 0), sim.pid_of("b", 0));
    // Jobs for the failing role wait (its only worker is busy), then end.
    sim.worker_mut(a).set_ready(false, 0).unwrap();
    sim.run_until_idle();
    let job = enqueue(&mut sim, "a", "j", JobOptions { timeout: None, retries: 3 });
    sim.take_events();

    // max_restarts 0: the first exit fails the role.
    let a_info = info(&sim, a);
    die(&mut sim, a, ExitStatus::Signal(11));
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Exited(a_info, ExitStatus::Signal(11)),
            KEvent::JobDone { id: job, result: Err(RequestError::NoRoute) },
            KEvent::RoleFailed { role: "a".into(), last_error: Some("killed by signal 11".into()) },
        ]
    );
    assert!(!sim.kingpin.is_shutting_down());
    assert_eq!(sim.kingpin.workers().filter(|(i, _)| &*i.role == "a").count(), 0);

    // The failed role finds no route; the other one works as before.
    let now = sim.now;
    assert_eq!(sim.kingpin.enqueue("a", b"", Vec::new(), JobOptions::default(), now), Err(SendError::NoRoute));
    assert_eq!(
        sim.kingpin.request(Target::Any("a".into()), "ns", "x", b"", Vec::new(), None, 0, now),
        Err(SendError::NoRoute)
    );
    assert_eq!(sim.kingpin.resize("a", 3, now), Some(1), "a failed role is not resized");
    assert!(!sim.kingpin.reload("a", now));
    let (id, _) = sim.kingpin.request(Target::Pid(b0), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
    let job = enqueue(&mut sim, "b", "jb", JobOptions::default());
    sim.run_until_idle();
    let mut answered = Vec::new();
    for pid in sim.pids_of("b") {
        for (call, m) in calls_of(&mut sim, pid) {
            ack(&mut sim, pid, call, "done");
            answered.push((pid, m.name));
        }
    }
    sim.run_until_idle();
    assert_eq!(answered.len(), 2, "{answered:?}");
    let events = sim.take_events();
    assert!(events.contains(&KEvent::Reply { id, result: Ok(("done".into(), vec![])) }), "{events:?}");
    assert_eq!(jobs_done(&events).len(), 1);
    assert_eq!(jobs_done(&events)[0].0, job);
    assert!(!events.iter().any(|e| matches!(e, KEvent::Exit { .. })));
    sim.ledger.assert_balanced();
}

#[test]
fn the_window_slides_so_restarts_spread_wider_than_within_never_fail_the_role() {
    let mut sim = up(app([limited("a", 1, 2, secs(10))]));
    // Two restarts per 10 s at most: one every 6 s goes on for ever.
    for _ in 0..20 {
        sim.advance(secs(6));
        crash(&mut sim, "a", 0, ExitStatus::Signal(9));
    }
    // A restart exactly `within` ago no longer counts.
    sim.advance(secs(4));
    crash(&mut sim, "a", 0, ExitStatus::Signal(9)); // t+4: two in (t-6, t+4]
    sim.advance(secs(6));
    crash(&mut sim, "a", 0, ExitStatus::Signal(9)); // t+10: t dropped out
    assert!(!sim.take_events().iter().any(|e| matches!(e, KEvent::RoleFailed { .. })));
    assert_eq!(sim.spawns.len(), 1 + 22);

    // But a third one within 10 s (of t+4) fails it.
    sim.advance(ms(3_999));
    crash(&mut sim, "a", 0, ExitStatus::Signal(9));
    assert!(
        sim.take_events()
            .contains(&KEvent::RoleFailed { role: "a".into(), last_error: Some("killed by signal 9".into()) })
    );
    assert_eq!(sim.spawns.len(), 1 + 22);
}

// ---------------------------------------------------------------------------
// 2. Backoff
// ---------------------------------------------------------------------------

#[test]
fn backoff_first_restart_is_immediate_then_doubles_up_to_max_and_resets_after_enough_uptime() {
    let mut config = app([limited("a", 1, 100, secs(3_600))]);
    config.backoff = Backoff { initial: ms(100), max: ms(400), reset_after: secs(30) };
    let mut sim = up(config);
    assert_eq!(sim.kingpin.poll_timeout(), None);

    // Crashes right after coming up: no delay, then 100, 200, 400, 400 ms.
    let mut delays = Vec::new();
    for _ in 0..5 {
        let before = sim.spawns.len();
        crash(&mut sim, "a", 0, ExitStatus::Code(1));
        let crashed_at = sim.now;
        if sim.spawns.len() > before {
            delays.push(Duration::ZERO);
            continue;
        }
        let due = sim.kingpin.poll_timeout().expect("a restart is due");
        delays.push(due.saturating_duration_since(crashed_at));
        // Not a nanosecond early.
        sim.advance(due.saturating_duration_since(sim.now) - Duration::from_nanos(1));
        sim.run_until_idle();
        assert_eq!(sim.spawns.len(), before);
        sim.advance(Duration::from_nanos(1));
        sim.run_until_idle();
        assert_eq!(spawned(&sim, before), [("a".to_string(), 0)]);
        assert_eq!(sim.info(sim.pid_of("a", 0)).1, Phase::Up);
    }
    assert_eq!(delays, [ms(0), ms(100), ms(200), ms(400), ms(400)]);

    // Up for just under `reset_after`: still backing off.
    sim.advance(secs(30) - Duration::from_nanos(1));
    let before = sim.spawns.len();
    crash(&mut sim, "a", 0, ExitStatus::Code(1));
    assert_eq!(sim.spawns.len(), before);
    assert_eq!(sim.kingpin.poll_timeout(), Some(sim.now + ms(400)));
    sim.advance(ms(400));
    sim.run_until_idle();

    // Up for `reset_after`: healthy again, so the next restart is immediate
    // and the one after starts over at `initial`.
    sim.advance(secs(30));
    let before = sim.spawns.len();
    crash(&mut sim, "a", 0, ExitStatus::Code(1));
    assert_eq!(spawned(&sim, before), [("a".to_string(), 0)]);
    crash(&mut sim, "a", 0, ExitStatus::Code(1));
    assert_eq!(sim.kingpin.poll_timeout(), Some(sim.now + ms(100)));
    sim.advance(ms(100));
    sim.run_until_idle();
    let health = sim.kingpin.health(sim.now);
    assert_eq!(health.len(), 1);
    assert_eq!((health[0].restarts, health[0].state), (8, WorkerState::Ready));
    assert!(!sim.take_events().iter().any(|e| matches!(e, KEvent::RoleFailed { .. })));
}

#[test]
fn each_slot_backs_off_on_its_own() {
    let mut config = app([limited("a", 2, 100, secs(3_600))]);
    config.backoff = Backoff { initial: ms(100), max: secs(10), reset_after: secs(30) };
    let mut sim = up(config);
    // Slot 0 crashes twice: its second restart waits. Slot 1's first is
    // immediate all the same.
    crash(&mut sim, "a", 0, ExitStatus::Code(1));
    crash(&mut sim, "a", 0, ExitStatus::Code(1));
    let before = sim.spawns.len();
    crash(&mut sim, "a", 1, ExitStatus::Code(1));
    assert_eq!(spawned(&sim, before), [("a".to_string(), 1)]);
    assert_eq!(sim.kingpin.poll_timeout(), Some(sim.now + ms(100)));
}

// ---------------------------------------------------------------------------
// 3. Restart types
// ---------------------------------------------------------------------------

/// Exits `status` in role `restart`; returns whether the slot was revived.
fn revived(restart: Restart, status: ExitStatus) -> bool {
    let mut sim = up(app([RoleSpec { restart, ..spec("a", 2) }]));
    let pid = sim.pid_of("a", 1);
    let before = sim.spawns.len();
    die(&mut sim, pid, status);
    // Whatever the clock does, nothing else comes.
    sim.advance(secs(600));
    sim.run_until_idle();
    let again = spawned(&sim, before);
    assert!(again.is_empty() || again == [("a".to_string(), 1)], "{again:?}");
    if again.is_empty() {
        // The slot stays empty; the other worker takes the work.
        assert_eq!(sim.pids_of("a"), vec![sim.pid_of("a", 0)]);
        let now = sim.now;
        sim.kingpin.request(Target::Any("a".into()), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
        sim.run_until_idle();
        let a0 = sim.pid_of("a", 0);
        assert_eq!(calls_of(&mut sim, a0).len(), 1);
    }
    !again.is_empty()
}

#[test]
fn permanent_slots_are_always_revived() {
    for status in [ExitStatus::Code(0), ExitStatus::Code(1), ExitStatus::Signal(9)] {
        assert!(revived(Restart::Permanent, status), "{status:?}");
    }
}

#[test]
fn transient_slots_are_revived_only_after_an_abnormal_exit() {
    assert!(!revived(Restart::Transient, ExitStatus::Code(0)));
    assert!(revived(Restart::Transient, ExitStatus::Code(3)));
    assert!(revived(Restart::Transient, ExitStatus::Signal(9)));
}

#[test]
fn temporary_slots_are_never_revived() {
    for status in [ExitStatus::Code(0), ExitStatus::Code(1), ExitStatus::Signal(9)] {
        assert!(!revived(Restart::Temporary, status), "{status:?}");
    }
}

#[test]
fn a_slot_left_empty_keeps_its_role_offline_and_counts_no_restart() {
    let mut sim = up(app([RoleSpec { restart: Restart::Temporary, ..limited("a", 2, 0, secs(60)) }]));
    crash(&mut sim, "a", 0, ExitStatus::Signal(9));
    let events = sim.take_events();
    assert!(!events.iter().any(|e| matches!(e, KEvent::RoleFailed { .. })), "{events:?}");
    let health = sim.kingpin.health(sim.now);
    assert_eq!(health.iter().map(|h| (h.slot, h.restarts)).collect::<Vec<_>>(), [(1, 0)]);
}

// ---------------------------------------------------------------------------
// 4. Readiness: Status frames
// ---------------------------------------------------------------------------

#[test]
fn workers_that_are_not_ready_on_connect_get_jobs_only_once_they_say_so() {
    let mut sim = Sim::new(app([RoleSpec { ready_on_connect: false, ..spec("a", 2) }, spec("b", 1)]));
    sim.run_until_idle();
    let (a0, a1, b) = (sim.pid_of("a", 0), sim.pid_of("a", 1), sim.pid_of("b", 0));
    let (i0, i1, ib) = (info(&sim, a0), info(&sim, a1), info(&sim, b));
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Spawned(i0.clone()),
            KEvent::Spawned(i1.clone()),
            KEvent::Spawned(ib.clone()),
            KEvent::Up(i0.clone()),
            KEvent::Up(i1.clone()),
            KEvent::Up(ib.clone()),
            KEvent::Ready(ib),
            KEvent::RoleOnline("b".into()),
        ]
    );
    assert!(!sim.proc(a0).welcome().unwrap().settings.starts_ready);
    assert!(sim.proc(b).welcome().unwrap().settings.starts_ready);
    let states: Vec<WorkerState> = sim.kingpin.health(sim.now).iter().map(|h| h.state).collect();
    assert_eq!(states, [WorkerState::Connected, WorkerState::Connected, WorkerState::Ready]);

    // A job waits for a ready worker.
    let job = enqueue(&mut sim, "a", "j1", JobOptions::default());
    sim.run_until_idle();
    assert_eq!(sim.kingpin.queued_jobs("a"), 1);
    assert!(calls_of(&mut sim, a0).is_empty() && calls_of(&mut sim, a1).is_empty());

    // a1 says it is ready: it gets the job at once.
    sim.worker_mut(a1).set_ready(true, 100).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![KEvent::Ready(i1.clone())]);
    assert_eq!(jobs_of(&mut sim, a1), [(job, "j1".to_string())]);
    assert_eq!(sim.kingpin.queued_jobs("a"), 0);
    // Saying so again changes nothing.
    sim.worker_mut(a1).set_ready(true, 100).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![]);

    // Once every worker of every role is ready: the role, then the app.
    sim.worker_mut(a0).set_ready(true, 100).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![KEvent::Ready(i0.clone()), KEvent::RoleOnline("a".into()), KEvent::AppOnline]);

    // Busy and ready again: the worker and its role come back, the app
    // was online once and for all.
    sim.worker_mut(a0).set_ready(false, 100).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![]);
    assert_eq!(sim.kingpin.health(sim.now)[0].state, WorkerState::Busy);
    sim.worker_mut(a0).set_ready(true, 100).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![KEvent::Ready(i0), KEvent::RoleOnline("a".into())]);
}

#[test]
fn busy_workers_get_no_any_work_and_no_jobs_while_another_is_ready() {
    let mut sim = up(app([spec("a", 2), spec("f", 1)]));
    let (a0, a1, f) = (sim.pid_of("a", 0), sim.pid_of("a", 1), sim.pid_of("f", 0));
    sim.worker_mut(a0).set_ready(false, 0).unwrap();
    sim.run_until_idle();
    let now = sim.now;
    for _ in 0..3 {
        sim.kingpin.request(Target::Any("a".into()), "ns", "k", b"", Vec::new(), None, 0, now).unwrap();
        sim.worker_mut(f).request(Target::Any("a".into()), "ns", "w", b"", Vec::new(), None, 0, now).unwrap();
        sim.worker_mut(f).send(Target::Any("a".into()), "ns", "m", b"", Vec::new()).unwrap();
        enqueue(&mut sim, "a", "j", JobOptions::default());
    }
    sim.run_until_idle();
    assert!(wevents(&mut sim, a0).is_empty(), "the busy worker got nothing");
    let got = wevents(&mut sim, a1);
    assert_eq!(got.len(), 12);
    // Role, Pid and All still reach it.
    sim.worker_mut(f).send(Target::Role("a".into()), "ns", "role", b"", Vec::new()).unwrap();
    sim.worker_mut(f).send(Target::Pid(a0), "ns", "pid", b"", Vec::new()).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.proc(a0).names(), ["role", "pid"]);

    // With every worker busy, jobs wait, and Any picks a busy one as a last
    // resort.
    sim.worker_mut(a1).set_ready(false, 0).unwrap();
    sim.run_until_idle();
    wevents(&mut sim, a1);
    let job = enqueue(&mut sim, "a", "waits", JobOptions::default());
    sim.worker_mut(f).send(Target::Any("a".into()), "ns", "any", b"", Vec::new()).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.kingpin.queued_jobs("a"), 1);
    let any: Vec<String> = [a0, a1].iter().flat_map(|p| sim.proc(*p).names()).filter(|n| n == "any").collect();
    assert_eq!(any.len(), 1, "a busy worker takes Any traffic when none is ready");
    // Ready again: the job goes out at once.
    sim.worker_mut(a0).set_ready(true, 0).unwrap();
    sim.run_until_idle();
    let calls: Vec<(u64, Received)> = calls_of_any(&mut sim, a0);
    assert_eq!(calls.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [job]);
}

/// The calls `pid` received since the last look, skipping messages.
fn calls_of_any(sim: &mut Sim, pid: u32) -> Vec<(u64, Received)> {
    wevents(sim, pid)
        .into_iter()
        .filter_map(|e| match e {
            WEvent::Request { call, msg, .. } => Some((call, msg)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 5. Heartbeats
// ---------------------------------------------------------------------------

fn with_heartbeats(mut config: KingpinConfig) -> KingpinConfig {
    config.heartbeat = Some((secs(5), secs(30)));
    config
}

#[test]
fn a_worker_that_goes_silent_is_closed_as_hung_at_the_timeout_and_killed() {
    let mut sim = up(with_heartbeats(app([spec("a", 2)])));
    let (a0, a1) = (sim.pid_of("a", 0), sim.pid_of("a", 1));
    let (i0, link0) = (info(&sim, a0), sim.proc(a0).link);
    let t0 = sim.now;
    assert_eq!(sim.kingpin.poll_timeout(), Some(t0), "the first pings are due at once");
    // a0 stops (SIGSTOP): it neither reads nor writes.
    sim.freeze(a0, true);
    while sim.now + secs(1) < t0 + secs(30) {
        sim.advance(secs(1));
        sim.run_until_idle();
    }
    sim.advance((t0 + secs(30)).saturating_duration_since(sim.now) - Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![], "not a nanosecond early");
    assert!(sim.kills.is_empty());

    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    let fresh = sim.pid_of("a", 0);
    let fi = info(&sim, fresh);
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::LinkClosed(i0.clone(), CloseReason::Hung),
            KEvent::Exited(i0, ExitStatus::Signal(9)),
            KEvent::Spawned(fi.clone()),
            KEvent::Up(fi.clone()),
            KEvent::Ready(fi),
            KEvent::RoleOnline("a".into()),
        ]
    );
    assert_eq!(sim.kills, vec![(a0, link0)]);
    assert!(sim.proc(a1).alive(), "the other worker answered its pings");
    assert_eq!(sim.kingpin.last_error("a"), Some("killed by signal 9"));
}

#[test]
fn live_workers_answer_every_ping_and_are_never_taken_for_hung() {
    let mut sim = up(with_heartbeats(app([spec("a", 3), spec("b", 1)])));
    // Ten minutes, in steps up to the ping interval (a jump longer than the
    // timeout would leave no chance to answer).
    for i in 0..240u64 {
        sim.advance(ms(500 + (i * 1_237) % 4_500));
        sim.run_until_idle();
        let next = sim.kingpin.poll_timeout().expect("heartbeats keep a timer");
        assert!(next <= sim.now + secs(5), "the next ping is at most an interval away");
    }
    assert!(sim.now >= mob_proto::Instant::ZERO + secs(600));
    assert_eq!(sim.take_events(), vec![]);
    assert!(sim.kills.is_empty() && sim.closed_links.is_empty());
    assert_eq!(sim.spawns.len(), 4);
}

#[test]
fn heartbeats_off_means_no_timer_and_no_hung_worker() {
    let mut sim = up(app([spec("a", 1)]));
    let a = sim.pid_of("a", 0);
    sim.freeze(a, true);
    assert_eq!(sim.kingpin.poll_timeout(), None);
    sim.advance(secs(3_600));
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![]);
}

// ---------------------------------------------------------------------------
// 6. Resizing
// ---------------------------------------------------------------------------

#[test]
fn growing_a_role_starts_workers_for_the_new_slots() {
    let mut sim = up(app([spec("a", 2)]));
    let before = sim.spawns.len();
    let now = sim.now;
    assert_eq!(sim.kingpin.resize("a", 4, now), Some(4));
    sim.run_until_idle();
    assert_eq!(spawned(&sim, before), [("a".to_string(), 2), ("a".to_string(), 3)]);
    let (n2, n3) = (info(&sim, sim.pid_of("a", 2)), info(&sim, sim.pid_of("a", 3)));
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Spawned(n2.clone()),
            KEvent::Spawned(n3.clone()),
            KEvent::Up(n2.clone()),
            KEvent::Ready(n2),
            KEvent::Up(n3.clone()),
            KEvent::Ready(n3),
            KEvent::RoleOnline("a".into()),
        ]
    );
    assert_eq!(sim.kingpin.health(sim.now).iter().map(|h| h.restarts).sum::<u32>(), 0, "growth is no restart");
    assert_eq!(sim.kingpin.resize("nope", 1, now), None);
}

#[test]
fn shrinking_drains_the_highest_slots_stops_them_once_idle_and_removes_them() {
    let mut sim = up(app([spec("a", 4), spec("f", 1)]));
    let a: Vec<u32> = sim.pids_of("a");
    let f = sim.pid_of("f", 0);
    // a3 has a call in flight.
    let now = sim.now;
    let (held, _) = sim.kingpin.request(Target::Pid(a[3]), "ns", "held", b"", Vec::new(), None, 0, now).unwrap();
    sim.run_until_idle();
    let (held_call, _) = calls_of(&mut sim, a[3])[0].clone();
    sim.take_events();

    assert_eq!(sim.kingpin.resize("a", 2, now), Some(2));
    sim.run_until_idle();
    // The idle one is asked to stop at once; the busy one once it is idle.
    assert_eq!(wevents(&mut sim, a[2]), vec![WEvent::Stop { grace: secs(10) }]);
    assert_eq!(stops(&sim, a[3]), 0);
    let states: Vec<WorkerState> = sim.kingpin.health(sim.now).iter().map(|h| h.state).collect();
    assert_eq!(states[2..4], [WorkerState::Draining, WorkerState::Draining]);
    // No new work for the draining slots.
    for i in 0..4 {
        sim.worker_mut(f).request(Target::Any("a".into()), "ns", "w", b"", Vec::new(), None, 0, now).unwrap();
        enqueue(&mut sim, "a", &format!("j{i}"), JobOptions::default());
    }
    sim.run_until_idle();
    assert_eq!(calls_of_any(&mut sim, a[0]).len() + calls_of_any(&mut sim, a[1]).len(), 8);
    assert!(calls_of_any(&mut sim, a[2]).is_empty() && calls_of_any(&mut sim, a[3]).is_empty());
    // The role is online with its two wanted workers.
    assert_eq!(sim.take_events().iter().filter(|e| matches!(e, KEvent::RoleOnline(_))).count(), 0);

    // a3 answers: its reply is delivered, then it gets its Stop, once.
    ack(&mut sim, a[3], held_call, "late but fine");
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![KEvent::Reply { id: held, result: Ok(("late but fine".into(), vec![])) }]);
    assert_eq!(wevents(&mut sim, a[3]), vec![WEvent::Stop { grace: secs(10) }]);

    // They exit: not revived, and their slots are gone.
    let before = sim.spawns.len();
    let (i2, i3) = (info(&sim, a[2]), info(&sim, a[3]));
    die(&mut sim, a[2], ExitStatus::Code(0));
    die(&mut sim, a[3], ExitStatus::Code(0));
    assert_eq!(
        sim.take_events(),
        vec![KEvent::Exited(i2, ExitStatus::Code(0)), KEvent::Exited(i3, ExitStatus::Code(0))]
    );
    assert_eq!(spawned(&sim, before), []);
    assert_eq!(sim.kingpin.health(sim.now).iter().map(|h| h.slot).collect::<Vec<_>>(), [0, 1, 0]);
    assert_eq!(sim.kingpin.last_error("a"), None, "a stop is not an error");
    sim.advance(secs(60));
    sim.run_until_idle();
    assert_eq!(spawned(&sim, before), []);
    assert!(sim.kills.is_empty());
}

#[test]
fn a_drained_worker_that_does_not_exit_is_killed_after_its_grace() {
    let mut sim = up(app([spec("a", 2)]));
    let a1 = sim.pid_of("a", 1);
    let now = sim.now;
    sim.kingpin.resize("a", 1, now);
    sim.run_until_idle();
    assert_eq!(stops(&sim, a1), 1);
    sim.advance(secs(10) - Duration::from_nanos(1));
    sim.run_until_idle();
    assert!(sim.kills.is_empty());
    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.kills, vec![(a1, sim.proc(a1).link)]);
    assert_eq!(sim.proc(a1).exit, Some(ExitStatus::Signal(9)));
    assert_eq!(sim.pids_of("a").len(), 1, "not revived");
    assert_eq!(sim.kingpin.last_error("a"), None, "killed as asked: not an error");
}

#[test]
fn resizing_clamps_to_the_roles_min_and_max() {
    let mut sim = up(app([RoleSpec { min: 1, max: 3, ..spec("a", 2) }, RoleSpec { min: 5, max: 2, ..spec("odd", 1) }]));
    let now = sim.now;
    assert_eq!(sim.kingpin.resize("a", 10, now), Some(3));
    assert_eq!(sim.kingpin.resize("a", 0, now), Some(1));
    assert_eq!(sim.kingpin.resize("a", 2, now), Some(2));
    // A configuration whose min exceeds its max does not panic.
    assert_eq!(sim.kingpin.resize("odd", 0, now), Some(2));
    sim.run_until_idle();
    obey_stops(&mut sim);
    assert_eq!(sim.pids_of("a").len(), 2);
    assert_eq!(sim.pids_of("odd").len(), 2);
}

#[test]
fn a_scale_frame_resizes_the_senders_role_within_its_bounds() {
    let mut sim = up(app([RoleSpec { max: 3, ..spec("a", 1) }, spec("b", 1)]));
    let a0 = sim.pid_of("a", 0);
    let before = sim.spawns.len();
    sim.worker_mut(a0).scale(5).unwrap();
    sim.run_until_idle();
    assert_eq!(spawned(&sim, before), [("a".to_string(), 1), ("a".to_string(), 2)]);
    // A worker may remove its own slot.
    sim.worker_mut(a0).scale(0).unwrap();
    sim.run_until_idle();
    for pid in sim.pids_of("a") {
        assert_eq!(stops(&sim, pid), 1);
    }
    obey_stops(&mut sim);
    assert!(sim.pids_of("a").is_empty());
    assert_eq!(spawned(&sim, before).len(), 2);
    assert_eq!(sim.pids_of("b").len(), 1, "other roles are not touched");
}

#[test]
fn a_slot_wanted_again_before_its_worker_left_is_kept() {
    let mut sim = up(app([RoleSpec { restart: Restart::Transient, ..spec("a", 3) }]));
    let a = sim.pids_of("a");
    let now = sim.now;
    // a2 is asked to stop; a1 has a call, so it only drains.
    let (id, _) = sim.kingpin.request(Target::Pid(a[1]), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
    sim.run_until_idle();
    let call = calls_of(&mut sim, a[1])[0].0;
    sim.kingpin.resize("a", 1, now);
    sim.run_until_idle();
    assert_eq!((stops(&sim, a[1]), stops(&sim, a[2])), (0, 1));
    // Wanted again: a1 goes back to work; a2, already asked to stop, leaves
    // its slot to a new worker at once, so its exit (clean, in a transient
    // role) leaves no hole and is no restart.
    let before = sim.spawns.len();
    assert_eq!(sim.kingpin.resize("a", 3, now), Some(3));
    sim.run_until_idle();
    assert_eq!(spawned(&sim, before), [("a".to_string(), 2)]);
    ack(&mut sim, a[1], call, "");
    die(&mut sim, a[2], ExitStatus::Code(0));
    assert_eq!(spawned(&sim, before), [("a".to_string(), 2)]);
    assert_eq!(stops(&sim, a[1]), 0);
    assert!(sim.take_events().contains(&KEvent::Reply { id, result: Ok(("".into(), vec![])) }));
    assert_eq!(sim.pids_of("a").len(), 3);
    let health = sim.kingpin.health(sim.now);
    assert!(health.iter().all(|h| h.state == WorkerState::Ready && h.restarts == 0), "{health:?}");
}

// ---------------------------------------------------------------------------
// 7. Rolling reload
// ---------------------------------------------------------------------------

/// The pid of the worker the kingpin has serving `role`'s `slot` (not a
/// reload's replacement), which is ready for work.
fn serving(sim: &Sim, role: &str, slot: u32) -> u32 {
    let h = sim.kingpin.health(sim.now);
    let first = h.iter().find(|h| &*h.role == role && h.slot == slot).expect("the slot has a worker");
    assert_eq!(first.state, WorkerState::Ready);
    first.pid
}

/// Answers every call the workers of `role` hold, echoing the name.
fn answer_all(sim: &mut Sim, role: &str) {
    for pid in sim.pids_of(role) {
        for (call, m) in calls_of_any(sim, pid) {
            let _ = sim.worker_mut(pid).respond(call, Ok(()), m.name.as_bytes(), Vec::new());
        }
    }
    sim.run_until_idle();
}

#[test]
fn a_reload_replaces_one_slot_at_a_time_and_no_request_fails() {
    let mut sim = up(app([spec("a", 3), spec("f", 1)]));
    let old = sim.pids_of("a");
    let old_ids: Vec<u64> = old.iter().map(|p| info(&sim, *p).id).collect();
    let f = sim.pid_of("f", 0);
    // Every old worker holds a call while the reload starts.
    for (i, pid) in old.iter().enumerate() {
        let now = sim.now;
        sim.worker_mut(f).request(Target::Pid(*pid), "ns", &format!("held{i}"), b"", Vec::new(), None, 0, now).unwrap();
    }
    sim.run_until_idle();
    sim.hold_spawns = true;
    let now = sim.now;
    assert!(sim.kingpin.reload("a", now));
    assert!(!sim.kingpin.reload("a", now), "one reload at a time");
    let mut asked = 3;
    let mut new = Vec::new();
    for slot in 0..3u32 {
        sim.run_until_idle();
        // One replacement at a time, for this slot.
        assert_eq!(sim.pending_spawns.iter().map(|s| s.slot).collect::<Vec<_>>(), [slot]);
        // Until it is ready, the old worker serves (Any goes to the old
        // workers only) and is not asked to stop.
        for _ in 0..3 {
            let now = sim.now;
            sim.worker_mut(f).request(Target::Any("a".into()), "ns", "any", b"", Vec::new(), None, 0, now).unwrap();
            asked += 1;
        }
        sim.run_until_idle();
        assert_eq!(stops(&sim, old[slot as usize]), 0);
        let link = sim.pending_spawns[0].link;
        let pid = sim.complete_spawn(link);
        new.push(pid);
        sim.run_until_idle();
        // Ready: it takes the slot, and only now is the old one drained. It
        // finishes what it holds, then gets its Stop.
        assert_eq!(serving(&sim, "a", slot), pid);
        answer_all(&mut sim, "a");
        assert_eq!(stops(&sim, old[slot as usize]), 1);
        obey_stops(&mut sim);
    }
    sim.run_until_idle();
    answer_all(&mut sim, "a");
    let events = sim.take_events();
    // Reported once, when the last replacement took over its slot.
    assert_eq!(events.iter().filter(|e| matches!(e, KEvent::RoleReloaded(_))).count(), 1);
    let reloaded = events.iter().position(|e| *e == KEvent::RoleReloaded("a".into())).unwrap();
    let last_ready = events.iter().rposition(|e| matches!(e, KEvent::Ready(_))).unwrap();
    assert_eq!(reloaded, last_ready + 1, "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, KEvent::LinkClosed(..))), "{events:?}");
    // Every request was answered.
    let replies: Vec<&WEvent> = sim.proc(f).events.iter().filter(|e| matches!(e, WEvent::Reply { .. })).collect();
    assert_eq!(replies.len(), asked);
    assert!(replies.iter().all(|e| matches!(e, WEvent::Reply { result: Ok(_), .. })), "{replies:?}");
    // New workers in every slot, with new ids; no restart counted.
    assert_eq!(sim.pids_of("a"), new);
    assert!(new.iter().all(|p| !old_ids.contains(&info(&sim, *p).id)));
    assert!(sim.kingpin.health(sim.now).iter().all(|h| h.restarts == 0));
    assert!(sim.kills.is_empty());
    sim.ledger.assert_balanced();
}

#[test]
fn a_replacement_that_dies_before_it_is_ready_is_restarted_and_the_old_worker_serves_meanwhile() {
    let mut sim = up(app([RoleSpec { ready_on_connect: false, ..spec("a", 1) }]));
    let old = sim.pid_of("a", 0);
    sim.worker_mut(old).set_ready(true, 0).unwrap();
    sim.run_until_idle();
    let now = sim.now;
    let before = sim.spawns.len();
    assert!(sim.kingpin.reload("a", now));
    sim.run_until_idle();
    let first = sim.spawns[before].clone();
    let first_pid = sim.procs.values().find(|p| p.link == first.link).unwrap().pid;
    // It crashes before saying it is ready: restarted as the replacement.
    die(&mut sim, first_pid, ExitStatus::Signal(6));
    assert_eq!(spawned(&sim, before), [("a".to_string(), 0), ("a".to_string(), 0)]);
    let second = sim.spawns[before + 1].clone();
    let second_pid = sim.procs.values().find(|p| p.link == second.link).unwrap().pid;
    // The old worker still serves its slot, and only it.
    assert_eq!(stops(&sim, old), 0);
    let now = sim.now;
    sim.kingpin.request(Target::Any("a".into()), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
    sim.run_until_idle();
    let calls = calls_of_any(&mut sim, old);
    assert_eq!(calls.len(), 1);
    assert!(calls_of_any(&mut sim, second_pid).is_empty());
    ack(&mut sim, old, calls[0].0, "");
    sim.run_until_idle();
    // The second one makes it.
    sim.worker_mut(second_pid).set_ready(true, 0).unwrap();
    sim.run_until_idle();
    assert_eq!(stops(&sim, old), 1);
    obey_stops(&mut sim);
    let events = sim.take_events();
    assert_eq!(events.iter().filter(|e| matches!(e, KEvent::RoleReloaded(_))).count(), 1);
    assert_eq!(sim.pids_of("a"), vec![second_pid]);
    assert_eq!(sim.kingpin.workers().count(), 1, "no worker left over");
    assert_eq!(sim.kingpin.health(sim.now)[0].restarts, 1, "the replacement's crash was a restart");
    let now = sim.now;
    assert!(sim.kingpin.reload("a", now), "and another reload may start");
}

#[test]
fn a_replacement_whose_spawn_fails_is_tried_again() {
    let mut config = app([spec("a", 1)]);
    config.spawn_retry = secs(1);
    let mut sim = up(config);
    let old = sim.pid_of("a", 0);
    sim.hold_spawns = true;
    let now = sim.now;
    sim.kingpin.reload("a", now);
    sim.run_until_idle();
    let link = sim.pending_spawns[0].link;
    sim.fail_spawn(link);
    sim.run_until_idle();
    assert_eq!(sim.kingpin.poll_timeout(), Some(sim.now + secs(1)));
    assert_eq!(stops(&sim, old), 0);
    sim.advance(secs(1));
    sim.run_until_idle();
    let link = sim.pending_spawns[0].link;
    let new = sim.complete_spawn(link);
    sim.run_until_idle();
    assert_eq!(stops(&sim, old), 1);
    obey_stops(&mut sim);
    assert_eq!(sim.pids_of("a"), vec![new]);
    assert!(sim.take_events().contains(&KEvent::RoleReloaded("a".into())));
    assert_eq!(sim.kingpin.health(sim.now)[0].restarts, 0, "a failed spawn is no restart");
}

#[test]
fn an_old_worker_that_dies_during_its_reload_is_replaced_by_its_replacement() {
    let mut sim = up(app([spec("a", 2)]));
    let old = sim.pids_of("a");
    sim.hold_spawns = true;
    let now = sim.now;
    sim.kingpin.reload("a", now);
    sim.run_until_idle();
    let before = sim.spawns.len();
    // a0 dies while its replacement starts: no extra restart, the
    // replacement takes the slot.
    die(&mut sim, old[0], ExitStatus::Signal(9));
    assert_eq!(spawned(&sim, before), []);
    let link = sim.pending_spawns[0].link;
    let r0 = sim.complete_spawn(link);
    sim.run_until_idle();
    assert_eq!(serving(&sim, "a", 0), r0);
    let link = sim.pending_spawns[0].link;
    let r1 = sim.complete_spawn(link);
    sim.run_until_idle();
    obey_stops(&mut sim);
    assert_eq!(sim.pids_of("a"), vec![r0, r1]);
    assert!(sim.take_events().contains(&KEvent::RoleReloaded("a".into())));
}

// ---------------------------------------------------------------------------
// 8. Shutdown
// ---------------------------------------------------------------------------

#[test]
fn a_soft_shutdown_stops_every_worker_delivers_in_flight_replies_and_exits_clean() {
    let mut sim = up(app([spec("a", 2), spec("b", 1), RoleSpec { ready_on_connect: false, ..spec("c", 1) }]));
    let (a0, a1, b) = (sim.pid_of("a", 0), sim.pid_of("a", 1), sim.pid_of("b", 0));
    let now = sim.now;
    let (kid, _) = sim.kingpin.request(Target::Pid(a0), "ns", "k", b"", Vec::new(), None, 0, now).unwrap();
    let (wid, _) = sim.worker_mut(b).request(Target::Pid(a1), "ns", "w", b"", Vec::new(), None, 0, now).unwrap();
    let waiting = enqueue(&mut sim, "c", "never", JobOptions::default());
    sim.run_until_idle();
    sim.take_events();

    sim.kingpin.shutdown(false, now);
    sim.run_until_idle();
    assert!(sim.kingpin.is_shutting_down());
    // The idle are asked to stop at once; the others once they answered.
    assert_eq!((stops(&sim, a0), stops(&sim, a1), stops(&sim, b), stops(&sim, sim.pid_of("c", 0))), (0, 0, 1, 1));
    assert_eq!(sim.take_events(), vec![KEvent::JobDone { id: waiting, result: Err(RequestError::ShuttingDown) }]);
    // No new work.
    assert_eq!(
        sim.kingpin.request(Target::Pid(a0), "ns", "late", b"", Vec::new(), None, 0, now),
        Err(SendError::ShuttingDown)
    );
    assert_eq!(sim.kingpin.enqueue("a", b"", Vec::new(), JobOptions::default(), now), Err(SendError::ShuttingDown));
    assert_eq!(sim.kingpin.resize("a", 5, now), Some(2));
    assert!(!sim.kingpin.reload("a", now));
    // In-flight replies are still delivered.
    answer_all(&mut sim, "a");
    assert_eq!(sim.take_events(), vec![KEvent::Reply { id: kid, result: Ok(("k".into(), vec![])) }]);
    assert!(sim.proc(b).events.contains(&WEvent::Reply { id: wid, result: Ok(("w".into(), vec![])) }));
    assert_eq!((stops(&sim, a0), stops(&sim, a1)), (1, 1));

    // Everyone exits: nobody is revived, and the kingpin exits clean once
    // the last one is gone.
    let before = sim.spawns.len();
    let mut pids: Vec<u32> = sim.procs.values().filter(|p| p.alive()).map(|p| p.pid).collect();
    let last = pids.pop().unwrap();
    for pid in pids {
        die(&mut sim, pid, ExitStatus::Code(0));
    }
    assert!(!sim.take_events().contains(&KEvent::Exit { clean: true }));
    die(&mut sim, last, ExitStatus::Code(0));
    assert_eq!(sim.take_events().last(), Some(&KEvent::Exit { clean: true }));
    assert_eq!(spawned(&sim, before), []);
    assert!(sim.kills.is_empty());
    assert_eq!(
        sim.kingpin.send(Target::All { include_sender: true }, "ns", "x", b"", Vec::new()),
        Err(SendError::ShuttingDown)
    );
    sim.ledger.assert_balanced();
}

#[test]
fn a_soft_shutdown_past_its_grace_kills_the_rest_and_exits_unclean() {
    let mut sim = up(app([spec("a", 2)]));
    let (a0, a1) = (sim.pid_of("a", 0), sim.pid_of("a", 1));
    let now = sim.now;
    sim.kingpin.shutdown(false, now);
    sim.run_until_idle();
    // a0 obeys; a1 ignores its Stop.
    die(&mut sim, a0, ExitStatus::Code(0));
    sim.take_events();
    sim.advance(secs(10) - Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![]);
    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.kills, vec![(a1, sim.proc(a1).link)], "killed once");
    let events = sim.take_events();
    assert_eq!(
        events.iter().filter(|e| matches!(e, KEvent::Exit { .. })).collect::<Vec<_>>(),
        [&KEvent::Exit { clean: false }]
    );
    assert_eq!(sim.spawns.len(), 2);
}

#[test]
fn a_worker_that_finishes_its_work_during_a_soft_shutdown_gets_what_is_left_of_the_grace() {
    let mut sim = up(app([spec("a", 1)]));
    let a0 = sim.pid_of("a", 0);
    let now = sim.now;
    let (held, _) =
        sim.kingpin.request(Target::Pid(a0), "ns", "held", b"", Vec::new(), Some(secs(60)), 0, now).unwrap();
    sim.run_until_idle();
    let (held_call, _) = calls_of(&mut sim, a0)[0].clone();
    sim.kingpin.shutdown(false, now);
    sim.run_until_idle();
    assert_eq!(stops(&sim, a0), 0, "not while it has work in flight");

    // It answers 4 s in: its Stop gives it the 6 s left, not 10.
    sim.advance(secs(4));
    ack(&mut sim, a0, held_call, "done");
    sim.run_until_idle();
    assert!(sim.take_events().contains(&KEvent::Reply { id: held, result: Ok(("done".into(), vec![])) }));
    assert_eq!(wevents(&mut sim, a0), vec![WEvent::Stop { grace: secs(6) }]);
    // And it is killed when the shutdown's grace ends, if still there.
    sim.advance(secs(6) - Duration::from_nanos(1));
    sim.run_until_idle();
    assert!(sim.kills.is_empty());
    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.kills, vec![(a0, sim.proc(a0).link)]);
}

#[test]
fn a_hard_shutdown_kills_every_worker_and_exits_at_once() {
    let mut sim = up(app([spec("a", 2), spec("b", 1)]));
    let pids: Vec<u32> = sim.procs.keys().copied().collect();
    let now = sim.now;
    sim.kingpin.shutdown(true, now);
    sim.drain();
    assert_eq!(sim.take_events(), vec![KEvent::Exit { clean: false }], "at once, before anyone is reaped");
    let mut killed: Vec<u32> = sim.kills.iter().map(|(p, _)| *p).collect();
    killed.sort_unstable();
    assert_eq!(killed, pids);
    sim.run_until_idle();
    assert!(pids.iter().all(|p| stops(&sim, *p) == 0 && !sim.proc(*p).alive()));
    assert_eq!(sim.spawns.len(), 3, "nobody is revived");
    assert_eq!(sim.kills.len(), 3);
}

#[test]
fn during_a_soft_shutdown_a_worker_dying_unasked_makes_it_unclean_but_one_dying_after_its_stop_does_not() {
    for unasked in [false, true] {
        let mut sim = up(app([spec("a", 3)]));
        let a = sim.pids_of("a");
        let now = sim.now;
        // a0 holds a call: it is not asked to stop before it answers.
        sim.kingpin.request(Target::Pid(a[0]), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
        sim.run_until_idle();
        let call = calls_of(&mut sim, a[0])[0].0;
        sim.kingpin.shutdown(false, now);
        sim.run_until_idle();
        assert_eq!(stops(&sim, a[0]), 0);
        if !unasked {
            ack(&mut sim, a[0], call, "");
            sim.run_until_idle();
            assert_eq!(stops(&sim, a[0]), 1);
        }
        // a0 crashes: unasked (before its Stop), or after it.
        die(&mut sim, a[0], ExitStatus::Signal(11));
        die(&mut sim, a[1], ExitStatus::Code(0));
        die(&mut sim, a[2], ExitStatus::Code(0));
        assert_eq!(sim.take_events().last(), Some(&KEvent::Exit { clean: !unasked }), "unasked: {unasked}");
        assert_eq!(sim.spawns.len(), 3);
    }
}

// ---------------------------------------------------------------------------
// 9. The work queue
// ---------------------------------------------------------------------------

fn done(id: u64, pid: u32, payload: &str) -> JobEnd {
    (id, Ok((pid, payload.as_bytes().to_vec())))
}

#[test]
fn jobs_wait_while_no_worker_is_ready_then_go_out_in_order_and_end_once() {
    let mut sim = up(app([RoleSpec { ready_on_connect: false, ..spec("a", 1) }]));
    let a = sim.pid_of("a", 0);
    let ids: Vec<u64> = (1..=3).map(|i| enqueue(&mut sim, "a", &format!("j{i}"), JobOptions::default())).collect();
    sim.run_until_idle();
    assert_eq!(sim.kingpin.queued_jobs("a"), 3);
    assert_eq!(sim.kingpin.pending().jobs, 3);
    assert!(calls_of(&mut sim, a).is_empty());
    sim.worker_mut(a).set_ready(true, 0).unwrap();
    sim.run_until_idle();
    let got = jobs_of(&mut sim, a);
    assert_eq!(got, ids.iter().zip(["j1", "j2", "j3"]).map(|(i, p)| (*i, p.to_string())).collect::<Vec<_>>());
    for (call, payload) in got.iter().rev() {
        ack(&mut sim, a, *call, &format!("re-{payload}"));
    }
    sim.run_until_idle();
    assert_eq!(
        jobs_done(&sim.take_events()),
        [done(ids[2], a, "re-j3"), done(ids[1], a, "re-j2"), done(ids[0], a, "re-j1")]
    );
    // A second answer is refused; nothing ends twice.
    assert!(sim.worker_mut(a).respond(got[0].0, Ok(()), b"", Vec::new()).is_err());
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), []);
    assert_eq!(sim.kingpin.pending(), mob_proto::Pending::default());
    let now = sim.now;
    assert_eq!(sim.kingpin.enqueue("nope", b"", Vec::new(), JobOptions::default(), now), Err(SendError::NoRoute));
}

#[test]
fn a_job_goes_to_the_ready_worker_with_fewest_in_flight_then_lowest_memory_then_lowest_slot() {
    let mut sim = up(app([spec("a", 3)]));
    let a = sim.pids_of("a");
    // All equal: the lowest slot.
    let j = enqueue(&mut sim, "a", "first", JobOptions::default());
    sim.run_until_idle();
    assert_eq!(jobs_of(&mut sim, a[0]), [(j, "first".to_string())]);
    ack(&mut sim, a[0], j, "");
    sim.run_until_idle();
    // Memory: a0 300 MiB, a1 100, a2 200.
    for (pid, rss) in [(a[0], 300), (a[1], 100), (a[2], 200)] {
        sim.worker_mut(pid).report_health(rss).unwrap();
    }
    // a2 also has a request of the kingpin's in flight, which counts.
    let now = sim.now;
    sim.kingpin.request(Target::Pid(a[2]), "ns", "busy", b"", Vec::new(), None, 0, now).unwrap();
    sim.run_until_idle();
    calls_of(&mut sim, a[2]);
    let jobs: Vec<u64> = (0..4).map(|i| enqueue(&mut sim, "a", &format!("j{i}"), JobOptions::default())).collect();
    sim.run_until_idle();
    // In flight (a0, a1, a2) and memory (300, 100, 200):
    // j0: (0, 0, 1) → a1, the lighter of the idle two;
    // j1: (0, 1, 1) → a0, the only idle one;
    // j2: (1, 1, 1) → a1, the lightest;
    // j3: (1, 2, 1) → a2, lighter than a0.
    let ids = |got: Vec<(u64, String)>| got.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
    assert_eq!(ids(jobs_of(&mut sim, a[1])), [jobs[0], jobs[2]]);
    assert_eq!(ids(jobs_of(&mut sim, a[0])), [jobs[1]]);
    assert_eq!(ids(jobs_of(&mut sim, a[2])), [jobs[3]]);
}

#[test]
fn the_concurrency_limit_caps_the_jobs_each_worker_has() {
    let mut sim = up(app([RoleSpec { concurrency: Some(1), ..spec("a", 2) }]));
    let a = sim.pids_of("a");
    let jobs: Vec<u64> = (0..3).map(|i| enqueue(&mut sim, "a", &format!("j{i}"), JobOptions::default())).collect();
    sim.run_until_idle();
    assert_eq!(jobs_of(&mut sim, a[0]), [(jobs[0], "j0".to_string())]);
    assert_eq!(jobs_of(&mut sim, a[1]), [(jobs[1], "j1".to_string())]);
    assert_eq!(sim.kingpin.queued_jobs("a"), 1);
    ack(&mut sim, a[1], jobs[1], "");
    sim.run_until_idle();
    assert_eq!(jobs_of(&mut sim, a[1]), [(jobs[2], "j2".to_string())]);
    assert!(jobs_of(&mut sim, a[0]).is_empty());
}

#[test]
fn retries_one_means_exactly_one_more_try_after_a_worker_death_at_the_front_of_the_queue() {
    let mut sim = up(app([RoleSpec { concurrency: Some(1), ..spec("a", 2) }]));
    let a = sim.pids_of("a");
    let j1 = enqueue(&mut sim, "a", "j1", JobOptions { timeout: None, retries: 1 });
    let j2 = enqueue(&mut sim, "a", "j2", JobOptions::default());
    let j3 = enqueue(&mut sim, "a", "j3", JobOptions::default());
    sim.run_until_idle();
    assert_eq!(jobs_of(&mut sim, a[0]), [(j1, "j1".to_string())]);
    assert_eq!(jobs_of(&mut sim, a[1]), [(j2, "j2".to_string())]);
    // a0 dies with j1: j1 goes back to the front, ahead of j3, and its
    // revived worker gets it, under the same id.
    sim.hold_spawns = true;
    die(&mut sim, a[0], ExitStatus::Signal(9));
    assert_eq!(sim.kingpin.queued_jobs("a"), 2);
    assert_eq!(jobs_done(&sim.take_events()), []);
    let link = sim.pending_spawns[0].link;
    let b0 = sim.complete_spawn(link);
    sim.run_until_idle();
    assert_eq!(jobs_of(&mut sim, b0), [(j1, "j1".to_string())]);
    // It dies again: no third try.
    die(&mut sim, b0, ExitStatus::Signal(9));
    assert_eq!(jobs_done(&sim.take_events()), [(j1, Err(RequestError::PeerGone))]);
    // A job without retries ends at its worker's death.
    die(&mut sim, a[1], ExitStatus::Signal(9));
    assert_eq!(jobs_done(&sim.take_events()), [(j2, Err(RequestError::PeerGone))]);
    let links: Vec<_> = sim.pending_spawns.iter().map(|s| s.link).collect();
    let fresh: Vec<u32> = links.into_iter().map(|l| sim.complete_spawn(l)).collect();
    sim.run_until_idle();
    let got: Vec<(u64, String)> = fresh.iter().flat_map(|p| jobs_of(&mut sim, *p)).collect();
    assert_eq!(got, [(j3, "j3".to_string())]);
}

#[test]
fn a_job_whose_fds_already_left_is_not_retried_and_a_failure_is_not_retried() {
    let mut sim = up(app([spec("a", 2)]));
    let a = sim.pids_of("a");
    let (files, fds) = sim.new_fds(Side::Kingpin, 1);
    let now = sim.now;
    let j = sim.kingpin.enqueue("a", b"with-fd", fds, JobOptions { timeout: None, retries: 5 }, now).unwrap();
    sim.run_until_idle();
    let calls = calls_of(&mut sim, a[0]);
    assert_eq!(calls[0].1.files, files);
    die(&mut sim, a[0], ExitStatus::Signal(9));
    assert_eq!(jobs_done(&sim.take_events()), [(j, Err(RequestError::PeerGone))]);
    assert_eq!(
        sim.ledger.history(files[0]),
        vec![(Side::Kingpin, Some(Fate::Transmitted)), (Side::Worker(a[0]), Some(Fate::Delivered))]
    );
    // A job answered with a failure ends with it, retries or not.
    let j = enqueue(&mut sim, "a", "fails", JobOptions { timeout: None, retries: 5 });
    sim.run_until_idle();
    let pid = sim
        .procs
        .values()
        .find(|p| p.alive() && p.events.iter().any(|e| matches!(e, WEvent::Request { .. })))
        .unwrap()
        .pid;
    let call = jobs_of(&mut sim, pid)[0].0;
    sim.worker_mut(pid).respond(call, Err(Failure::Failed("boom".into())), b"", Vec::new()).unwrap();
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), [(j, Err(RequestError::Failed("boom".into())))]);
    assert_eq!(sim.kingpin.pending(), mob_proto::Pending::default());
    sim.ledger.assert_balanced();
}

#[test]
fn a_job_that_times_out_ends_timed_out_and_is_cancelled_at_its_worker() {
    let mut sim = up(app([spec("a", 1), RoleSpec { ready_on_connect: false, ..spec("idle", 1) }]));
    let a = sim.pid_of("a", 0);
    let running = enqueue(&mut sim, "a", "slow", JobOptions { timeout: Some(secs(1)), retries: 3 });
    let (files, fds) = sim.new_fds(Side::Kingpin, 1);
    let now = sim.now;
    let waiting =
        sim.kingpin.enqueue("idle", b"never", fds, JobOptions { timeout: Some(ms(500)), retries: 0 }, now).unwrap();
    sim.run_until_idle();
    let call = jobs_of(&mut sim, a)[0].0;
    let link = sim.proc(a).link;
    assert_eq!(sim.kingpin.in_flight(link), Some(1));
    // The waiting one times out first, where it waits; its fd is released.
    sim.advance(ms(500) - Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), []);
    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), [(waiting, Err(RequestError::TimedOut))]);
    assert_eq!(sim.ledger.history(files[0]), vec![(Side::Kingpin, Some(Fate::Released))]);
    // The running one: its timeout covers everything since it was queued.
    sim.advance(ms(500));
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), [(running, Err(RequestError::TimedOut))]);
    assert_eq!(wevents(&mut sim, a), vec![WEvent::Cancelled { call }]);
    assert_eq!(sim.kingpin.in_flight(link), Some(0));
    // A late answer is refused at the worker; nothing ends twice.
    assert!(sim.worker_mut(a).respond(call, Ok(()), b"", Vec::new()).is_err());
    sim.advance(secs(10));
    sim.run_until_idle();
    assert_eq!(jobs_done(&sim.take_events()), []);
    assert_eq!(sim.kingpin.pending(), mob_proto::Pending::default());
    sim.ledger.assert_balanced();
}

// ---------------------------------------------------------------------------
// 10. Fatal
// ---------------------------------------------------------------------------

#[test]
fn a_fatal_message_becomes_the_last_error_and_wins_over_the_exit_status() {
    let mut config = app([limited("a", 2, 1, secs(60))]);
    config.on_role_failure = OnRoleFailure::Continue;
    let mut sim = up(config);
    let (a0, a1) = (sim.pid_of("a", 0), sim.pid_of("a", 1));
    let i0 = info(&sim, a0);
    sim.worker_mut(a0).fatal("panicked: boom").unwrap();
    sim.flush_worker(a0);
    die(&mut sim, a0, ExitStatus::Code(101));
    let events = sim.take_events();
    assert_eq!(
        events[..2],
        [KEvent::Fatal(i0.clone(), "panicked: boom".into()), KEvent::Exited(i0, ExitStatus::Code(101))]
    );
    assert_eq!(sim.kingpin.last_error("a"), Some("panicked: boom"));
    // Another death without a Fatal: its status is the last error now.
    crash(&mut sim, "a", 0, ExitStatus::Signal(9));
    assert!(
        sim.take_events()
            .contains(&KEvent::RoleFailed { role: "a".into(), last_error: Some("killed by signal 9".into()) })
    );

    // The Fatal of the worker whose death fails the role is reported with
    // the failure.
    let mut config = app([limited("a", 1, 0, secs(60))]);
    config.on_role_failure = OnRoleFailure::Continue;
    let mut sim = up(config);
    let a = sim.pid_of("a", 0);
    sim.worker_mut(a).fatal("out of memory").unwrap();
    sim.flush_worker(a);
    die(&mut sim, a, ExitStatus::Signal(6));
    assert!(
        sim.take_events().contains(&KEvent::RoleFailed { role: "a".into(), last_error: Some("out of memory".into()) })
    );
    let _ = a1;
}

#[test]
fn a_worker_that_sends_a_fatal_and_lives_on_is_not_punished() {
    let mut sim = up(app([spec("a", 1)]));
    let a = sim.pid_of("a", 0);
    sim.worker_mut(a).fatal("almost").unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_events(), vec![KEvent::Fatal(info(&sim, a), "almost".into())]);
    assert_eq!(sim.info(a).1, Phase::Up);
    let now = sim.now;
    sim.kingpin.request(Target::Pid(a), "ns", "x", b"", Vec::new(), None, 0, now).unwrap();
    sim.run_until_idle();
    assert_eq!(calls_of(&mut sim, a).len(), 1);
    assert_eq!(sim.kingpin.last_error("a"), Some("almost"));
}

// ---------------------------------------------------------------------------
// 11. Everything at once
// ---------------------------------------------------------------------------

/// The model's roles: "a" permanent, "b" transient with a concurrency
/// limit, "c" ready only once it says so. Each restarts at most
/// `INTENSITY[i].0` times within `INTENSITY[i].1` ms.
const ROLES: [&str; 3] = ["a", "b", "c"];
const INTENSITY: [(u32, u64); 3] = [(3, 10_000), (4, 20_000), (2, 5_000)];

fn model_config(shutdown_app: bool) -> KingpinConfig {
    let intensity = |i: usize| Intensity { max_restarts: INTENSITY[i].0, within: ms(INTENSITY[i].1) };
    let a = RoleSpec { intensity: intensity(0), max: 4, ..spec("a", 2) };
    let b =
        RoleSpec { intensity: intensity(1), restart: Restart::Transient, concurrency: Some(2), max: 4, ..spec("b", 2) };
    let c = RoleSpec { intensity: intensity(2), ready_on_connect: false, max: 3, ..spec("c", 1) };
    let mut config = KingpinConfig::new("app").role_spec(a).role_spec(b).role_spec(c);
    config.backoff = Backoff { initial: ms(100), max: secs(2), reset_after: secs(5) };
    config.shutdown_grace = secs(3);
    config.on_role_failure = if shutdown_app { OnRoleFailure::ShutdownApp } else { OnRoleFailure::Continue };
    config
}

#[derive(Clone, Debug)]
enum SOp {
    /// The `idx`th live worker of a role exits: 0 clean, 1 with an error
    /// code, 2 by a signal.
    Crash {
        role: usize,
        idx: usize,
        how: u8,
    },
    /// The newest live worker of a role exits (a reload's replacement, a
    /// fresh restart): as `Crash`.
    CrashNewest {
        role: usize,
        how: u8,
    },
    /// The `idx`th live worker of a role stops (SIGSTOP) for good.
    Freeze {
        role: usize,
        idx: usize,
    },
    /// Spawns wait (a slow fork) until started.
    Hold,
    /// Every held spawn starts, and spawns no longer wait.
    Release,
    /// One held spawn starts.
    Start(usize),
    /// One held spawn starts and dies before its Hello (a crash at start-up).
    StartAndDie(usize, u8),
    Resize {
        role: usize,
        workers: u32,
    },
    Reload(usize),
    Job {
        role: usize,
        fds: usize,
        timeout: u64,
        retries: u32,
    },
    /// The `idx`th live worker of a role says it is ready, or busy.
    Ready {
        role: usize,
        idx: usize,
        ready: bool,
    },
    Advance(u64),
    Run,
}

fn sop() -> impl Strategy<Value = SOp> {
    prop_oneof![
        4 => (0..3usize, 0..4usize, 0..3u8).prop_map(|(role, idx, how)| SOp::Crash { role, idx, how }),
        2 => (0..3usize, 0..3u8).prop_map(|(role, how)| SOp::CrashNewest { role, how }),
        1 => (0..3usize, 0..4usize).prop_map(|(role, idx)| SOp::Freeze { role, idx }),
        1 => Just(SOp::Hold),
        1 => Just(SOp::Release),
        2 => (0..4usize).prop_map(SOp::Start),
        1 => (0..4usize, 0..3u8).prop_map(|(i, how)| SOp::StartAndDie(i, how)),
        2 => (0..3usize, 0..5u32).prop_map(|(role, workers)| SOp::Resize { role, workers }),
        2 => (0..3usize).prop_map(SOp::Reload),
        5 => (0..3usize, 0..3usize, 100..20_000u64, 0..3u32)
            .prop_map(|(role, fds, timeout, retries)| SOp::Job { role, fds, timeout, retries }),
        2 => (0..3usize, 0..4usize, any::<bool>()).prop_map(|(role, idx, ready)| SOp::Ready { role, idx, ready }),
        4 => prop_oneof![4 => 1..2_000u64, 1 => 2_000..35_000u64].prop_map(SOp::Advance),
        2 => Just(SOp::Run),
    ]
}

/// The workers' applications, and what the kingpin reported.
struct Model {
    rng: common::Rng,
    /// How many of each process's events were handled.
    seen: BTreeMap<u32, usize>,
    /// Jobs received and not yet answered.
    held: Vec<(u32, u64)>,
    /// Workers asked to stop that have not exited yet.
    stopping: Vec<u32>,
    /// Workers not yet ready (role "c", or after a `Ready` op).
    unready: Vec<u32>,
    /// JobDone events by job id.
    done: BTreeMap<u64, usize>,
    /// Jobs accepted by `enqueue`.
    enqueued: Vec<u64>,
    /// `Output::Exit`s, by cleanliness.
    exits: Vec<bool>,
    /// Everyone now does what is asked of them at once.
    settling: bool,
}

fn live_of(sim: &Sim, role: usize) -> Vec<u32> {
    sim.procs.values().filter(|p| p.alive() && p.role == ROLES[role]).map(|p| p.pid).collect()
}

fn serve(sim: &mut Sim, m: &mut Model) {
    for _ in 0..4 {
        sim.run_until_idle();
        for e in sim.take_events() {
            match e {
                KEvent::JobDone { id, .. } => *m.done.entry(id).or_default() += 1,
                KEvent::Exit { clean } => m.exits.push(clean),
                _ => {}
            }
        }
        let pids: Vec<u32> = sim.procs.values().filter(|p| p.alive() && !p.frozen).map(|p| p.pid).collect();
        for pid in &pids {
            let from = m.seen.get(pid).copied().unwrap_or(0);
            let events = sim.proc(*pid).events[from..].to_vec();
            m.seen.insert(*pid, from + events.len());
            for e in events {
                match e {
                    WEvent::Welcome(w) if !w.settings.starts_ready => m.unready.push(*pid),
                    WEvent::Request { call, .. } => m.held.push((*pid, call)),
                    WEvent::Cancelled { call } => m.held.retain(|h| *h != (*pid, call)),
                    WEvent::Stop { .. } => m.stopping.push(*pid),
                    _ => {}
                }
            }
        }
        let alive = |sim: &Sim, pid: u32| sim.proc(pid).alive() && !sim.proc(pid).frozen;
        for pid in std::mem::take(&mut m.unready) {
            if !alive(sim, pid) {
                continue;
            }
            if m.settling || m.rng.range(0, 4) == 0 {
                sim.worker_mut(pid).set_ready(true, m.rng.range(0, 1_000) as u64).unwrap();
            } else {
                m.unready.push(pid);
            }
        }
        for (pid, call) in std::mem::take(&mut m.held) {
            if !alive(sim, pid) {
                continue;
            }
            if m.settling || m.rng.range(0, 2) == 0 {
                let result = if m.rng.range(0, 4) == 0 { Err(Failure::Failed("no".into())) } else { Ok(()) };
                let _ = sim.worker_mut(pid).respond(call, result, b"done", Vec::new());
            } else {
                m.held.push((pid, call));
            }
        }
        for pid in std::mem::take(&mut m.stopping) {
            if !sim.proc(pid).alive() {
                continue;
            }
            // Most obey at once; some take their time, or never do.
            if m.settling || m.rng.range(0, 3) != 0 {
                sim.exit(pid, ExitStatus::Code(0));
            } else {
                m.stopping.push(pid);
            }
        }
    }
    sim.run_until_idle();
}

fn apply(sim: &mut Sim, m: &mut Model, op: SOp) {
    let pick = |sim: &Sim, role: usize, idx: usize| {
        let live: Vec<u32> = live_of(sim, role).into_iter().filter(|p| !sim.proc(*p).frozen).collect();
        (!live.is_empty()).then(|| live[idx % live.len()])
    };
    let now = sim.now;
    match op {
        SOp::Crash { role, idx, how } => {
            if let Some(pid) = pick(sim, role, idx) {
                let status = [ExitStatus::Code(0), ExitStatus::Code(1), ExitStatus::Signal(9)][how as usize];
                sim.exit(pid, status);
            }
        }
        SOp::CrashNewest { role, how } => {
            if let Some(pid) = live_of(sim, role).into_iter().filter(|p| !sim.proc(*p).frozen).max() {
                let status = [ExitStatus::Code(0), ExitStatus::Code(1), ExitStatus::Signal(9)][how as usize];
                sim.exit(pid, status);
            }
        }
        SOp::Freeze { role, idx } => {
            if let Some(pid) = pick(sim, role, idx) {
                sim.freeze(pid, true);
            }
        }
        SOp::Hold => sim.hold_spawns = true,
        SOp::Release => {
            sim.hold_spawns = false;
            start_held(sim);
        }
        SOp::Start(i) => {
            if !sim.pending_spawns.is_empty() {
                let link = sim.pending_spawns[i % sim.pending_spawns.len()].link;
                sim.complete_spawn(link);
            }
        }
        SOp::StartAndDie(i, how) => {
            if !sim.pending_spawns.is_empty() {
                let link = sim.pending_spawns[i % sim.pending_spawns.len()].link;
                let pid = sim.complete_spawn(link);
                let status = [ExitStatus::Code(0), ExitStatus::Code(1), ExitStatus::Signal(9)][how as usize];
                sim.exit(pid, status);
            }
        }
        SOp::Resize { role, workers } => {
            sim.kingpin.resize(ROLES[role], workers, now);
        }
        SOp::Reload(role) => {
            sim.kingpin.reload(ROLES[role], now);
        }
        SOp::Job { role, fds, timeout, retries } => {
            let (_, fds) = sim.new_fds(Side::Kingpin, fds);
            let options = JobOptions { timeout: Some(ms(timeout)), retries };
            if let Ok(id) = sim.kingpin.enqueue(ROLES[role], b"job", fds, options, now) {
                m.enqueued.push(id);
            }
        }
        SOp::Ready { role, idx, ready } => {
            if let Some(pid) = pick(sim, role, idx)
                && sim.worker_mut(pid).is_running()
            {
                sim.worker_mut(pid).set_ready(ready, 0).unwrap();
                if !ready {
                    m.unready.push(pid);
                }
            }
        }
        SOp::Advance(by) => sim.advance(ms(by)),
        SOp::Run => {}
    }
    serve(sim, m);
}

fn start_held(sim: &mut Sim) {
    while let Some(s) = sim.pending_spawns.first() {
        let link = s.link;
        sim.complete_spawn(link);
    }
}

/// Whether a Spawn restarted a slot whose worker had died: made at that
/// worker's exit, for its slot, or later, when its backoff ran out (the
/// model has no failed spawns, whose retries come from timers too).
fn is_restart(spawn: &mob_proto::Spawn, cause: &Cause) -> bool {
    match cause {
        Cause::Exit { role, slot } => *role == *spawn.role && *slot == spawn.slot,
        Cause::Timeout => true,
        _ => false,
    }
}

fn run_supervision_model(seed: u64, shutdown_app: bool, ops: Vec<SOp>) -> Result<(), TestCaseError> {
    let mut sim = Sim::chunked(model_config(shutdown_app), seed);
    sim.eager = true;
    let mut m = Model {
        rng: common::Rng::new(seed ^ 0x5eed),
        seen: BTreeMap::new(),
        held: Vec::new(),
        stopping: Vec::new(),
        unready: Vec::new(),
        done: BTreeMap::new(),
        enqueued: Vec::new(),
        exits: Vec::new(),
        settling: false,
    };
    serve(&mut sim, &mut m);
    for op in ops {
        apply(&mut sim, &mut m, op);
    }

    // Quiescence: held spawns start, everyone does what is asked at once,
    // and the clock passes every job timeout, backoff and grace, in steps
    // short enough for live workers to answer their pings.
    m.settling = true;
    sim.hold_spawns = false;
    start_held(&mut sim);
    serve(&mut sim, &mut m);
    for _ in 0..60 {
        sim.advance(secs(1));
        start_held(&mut sim);
        serve(&mut sim, &mut m);
    }

    // No role ever restarted more often than its intensity allows: in any
    // window of `within`, at most `max_restarts` restarting Spawns.
    for (role, (max, within)) in ROLES.iter().zip(INTENSITY) {
        let times: Vec<mob_proto::Instant> = sim
            .spawn_log
            .iter()
            .filter(|(_, s, cause)| &*s.role == *role && is_restart(s, cause))
            .map(|(t, ..)| *t)
            .collect();
        for t in &times {
            let in_window = times.iter().filter(|u| *u <= t && t.saturating_duration_since(**u) < ms(within)).count();
            prop_assert!(
                in_window <= max as usize,
                "role {} restarted {} times within {} ms by {:?}: {:?}",
                role,
                in_window,
                within,
                t,
                times
            );
        }
    }
    // Every job accepted ended exactly once.
    for id in &m.enqueued {
        prop_assert_eq!(m.done.get(id).copied().unwrap_or(0), 1, "job {} ended {:?} times", id, m.done.get(id));
    }
    prop_assert_eq!(m.done.len(), m.enqueued.len());
    let pending = sim.kingpin.pending();
    prop_assert_eq!((pending.jobs, pending.calls, pending.early), (0, 0, 0));
    // Every live process is a worker of the kingpin's, and every worker the
    // kingpin knows is a live process: nothing orphaned, nothing leaked.
    let mut live: Vec<u32> = sim.procs.values().filter(|p| p.alive()).map(|p| p.pid).collect();
    let mut known: Vec<u32> = sim.kingpin.workers().map(|(i, _)| i.pid).collect();
    live.sort_unstable();
    known.sort_unstable();
    prop_assert_eq!(&live, &known);
    let mut serving: Vec<u32> = sim.kingpin.health(sim.now).iter().map(|h| h.pid).collect();
    serving.sort_unstable();
    prop_assert_eq!(&live, &serving, "every live worker serves a slot");
    // Only a failed role shuts the app down (with `ShutdownApp`): then every
    // process is gone and the kingpin asked, once, to exit unclean.
    if sim.kingpin.is_shutting_down() {
        prop_assert!(shutdown_app);
        prop_assert!(live.is_empty());
        prop_assert_eq!(&m.exits, &vec![false]);
    } else {
        prop_assert!(m.exits.is_empty());
    }
    // Every fd came back exactly once.
    sim.ledger.assert_balanced();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever crashes, freezes, resizes, reloads, jobs and clock jumps
    /// come: no role restarts more often than its intensity, every job ends
    /// exactly once, no worker is orphaned and every fd comes back once.
    #[test]
    fn supervision_keeps_its_promises_whatever_happens(
        seed in any::<u64>(),
        shutdown_app in any::<bool>(),
        ops in vec(sop(), 1..60),
    ) {
        run_supervision_model(seed, shutdown_app, ops)?;
    }
}
