//! The kingpin and its workers, run together in the deterministic simulation:
//! bring-up, revival, the handshake's failures, routing, and fd accounting.

mod common;

use common::*;
use core::time::Duration;
use mob_proto::frame::DecodeError;
use mob_proto::frame::{DEFAULT_MAX_BODY, Header};
use mob_proto::wire::PROTOCOL_VERSION;
use mob_proto::{CloseReason, ExitStatus, FLUSH_AT, Instant, KingpinConfig, Phase, SendError, Source, Target};
use proptest::collection::vec;
use proptest::prelude::*;

fn two_roles() -> KingpinConfig {
    KingpinConfig::new("app").role("back", 4).role("front", 2)
}

/// A sim whose workers are all up.
fn up(config: KingpinConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.run_until_idle();
    sim.take_events();
    sim
}

/// A sim that has asked for its first spawns and holds them.
fn held(config: KingpinConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.hold_spawns = true;
    sim.run_until_idle();
    sim
}

fn names(sim: &Sim, pid: u32) -> Vec<String> {
    sim.proc(pid).names()
}

fn send(sim: &mut Sim, from: u32, to: Target, name: &str) {
    sim.worker_mut(from).send(to, "_", name, name.as_bytes(), Vec::new()).unwrap();
}

/// Only the LinkClosed events.
fn closures(events: &[KEvent]) -> Vec<(u32, CloseReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            KEvent::LinkClosed(i, r) => Some((i.pid, r.clone())),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Bring-up and revival
// ---------------------------------------------------------------------------

#[test]
fn every_slot_of_two_roles_spawns_and_comes_up() {
    let mut sim = Sim::new(two_roles());
    sim.run_until_idle();

    let slots: Vec<(String, u32)> = sim.spawns.iter().map(|s| (s.role.to_string(), s.slot)).collect();
    let want: Vec<(String, u32)> = [("back", 0), ("back", 1), ("back", 2), ("back", 3)]
        .into_iter()
        .chain([("front", 0), ("front", 1)])
        .map(|(r, s)| (r.to_string(), s))
        .collect();
    assert_eq!(slots, want);
    let mut ids: Vec<u64> = sim.spawns.iter().map(|s| s.worker).collect();
    let mut links: Vec<_> = sim.spawns.iter().map(|s| s.link).collect();
    ids.sort();
    ids.dedup();
    links.sort();
    links.dedup();
    assert_eq!((ids.len(), links.len()), (6, 6));

    let events = sim.take_events();
    // Every process starts; then each worker comes up and, its role being
    // ready on connect, is ready at once; each role is online once its last
    // worker is ready, and the app once every role is.
    let infos: Vec<_> = sim.spawns.iter().map(|s| sim.info(sim.pid_of(&s.role, s.slot)).0).collect();
    let mut want: Vec<KEvent> = infos.iter().cloned().map(KEvent::Spawned).collect();
    for (i, info) in infos.iter().enumerate() {
        want.extend([KEvent::Up(info.clone()), KEvent::Ready(info.clone())]);
        if i == 3 {
            want.push(KEvent::RoleOnline("back".into()));
        }
    }
    want.extend([KEvent::RoleOnline("front".into()), KEvent::AppOnline]);
    assert_eq!(events, want);
    for s in sim.spawns.clone() {
        let pid = sim.pid_of(&s.role, s.slot);
        let (info, phase) = sim.info(pid);
        assert_eq!(phase, Phase::Up);
        assert_eq!((info.id, info.link, &*info.role, info.slot), (s.worker, s.link, &*s.role, s.slot));
        // The worker side agrees.
        let p = sim.proc(pid);
        assert!(p.worker.as_ref().unwrap().is_running());
        let welcome = p.welcome().unwrap();
        assert_eq!(welcome.version, PROTOCOL_VERSION);
        assert_eq!(welcome.worker, s.worker);
        assert_eq!(welcome.settings.app, "app");
        assert_eq!(welcome.settings.max_body, DEFAULT_MAX_BODY);
        assert!(welcome.settings.starts_ready);
        assert!(p.inbox().is_empty());
    }
    assert_eq!(sim.kingpin.workers().count(), 6);
    assert!(sim.kills.is_empty() && sim.closed_links.is_empty());
    assert_eq!(sim.kingpin.poll_timeout(), Some(sim.now), "no handshake left pending: the first pings are due");
    sim.ledger.assert_balanced();
}

#[test]
fn an_exit_revives_the_slot_with_new_ids_and_the_stale_link_is_ignored() {
    let mut sim = up(two_roles());
    let pid = sim.pid_of("back", 2);
    let (old, _) = sim.info(pid);
    let spawned_before = sim.spawns.len();
    let max_id = sim.spawns.iter().map(|s| s.worker).max().unwrap();

    sim.exit(pid, ExitStatus::Code(3));
    sim.run_until_idle();

    let respawn = sim.spawns[spawned_before..].to_vec();
    assert_eq!(respawn.len(), 1);
    let s = &respawn[0];
    assert_eq!((&*s.role, s.slot), ("back", 2));
    assert!(s.worker > max_id, "a revived slot gets a new worker id");
    assert_ne!(s.link, old.link, "a revived slot gets a new link");
    let new_pid = sim.pid_of("back", 2);
    assert_ne!(new_pid, pid);
    let (new, phase) = sim.info(new_pid);
    assert_eq!((new.id, new.link, phase), (s.worker, s.link, Phase::Up));
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Exited(old.clone(), ExitStatus::Code(3)),
            KEvent::Spawned(new.clone()),
            KEvent::Up(new.clone()),
            KEvent::Ready(new.clone()),
            KEvent::RoleOnline("back".into()),
        ]
    );
    assert!(sim.kills.is_empty(), "a process that exited is not killed");

    // Everything addressed to the old link is ignored; an fd is released.
    assert!(sim.kingpin.worker(old.link).is_none());
    let now = sim.now;
    let (file, fd) = sim.new_fd(Side::Kingpin);
    let mut wire = Header { len: 3, kind: 99, fds: 1 }.encode().to_vec();
    wire.extend_from_slice(b"bad");
    sim.kingpin.handle_read(old.link, &wire, vec![fd], now);
    sim.kingpin.handle_spawned(old.link, 4242, now);
    sim.kingpin.handle_spawn_failed(old.link, now);
    sim.kingpin.handle_eof(old.link, now);
    sim.kingpin.handle_exited(pid, ExitStatus::Signal(9), now);
    assert!(sim.kingpin.handle_transmitted(old.link, 5).is_empty());
    assert!(sim.kingpin.poll_transmit(old.link).is_none());
    sim.run_until_idle();
    assert_eq!(sim.ledger.history(file), vec![(Side::Kingpin, Some(Fate::Released))]);
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.spawns.len(), spawned_before + 1);
    assert!(sim.kills.is_empty());
    assert_eq!(sim.closed_links, vec![old.link]);

    // And the revived worker works.
    sim.kingpin.send(Target::Pid(new_pid), "_", "hi", b"", Vec::new()).unwrap();
    sim.run_until_idle();
    assert_eq!(names(&sim, new_pid), ["hi"]);
    assert!(sim.kingpin.workers().all(|(_, p)| p == Phase::Up));
    sim.ledger.assert_balanced();
}

#[test]
fn last_words_before_an_exit_are_delivered_first() {
    for eof_first in [false, true] {
        let mut sim = up(KingpinConfig::new("app").role("back", 1));
        sim.eof_on_exit = eof_first;
        let pid = sim.pid_of("back", 0);
        let (info, _) = sim.info(pid);
        let (file, fd) = sim.new_fd(Side::Worker(pid));
        sim.worker_mut(pid).send(Target::Kingpin, "_", "bye", b"!", vec![fd]).unwrap();
        // Written to the socket, but not yet read by the kingpin.
        sim.flush_worker(pid);
        sim.exit(pid, ExitStatus::Code(0));
        sim.run_until_idle();
        let events = sim.take_events();
        let mut want = vec![KEvent::Message {
            from: info.clone(),
            ns: "_".into(),
            name: "bye".into(),
            payload: "!".into(),
            files: vec![file],
        }];
        if eof_first {
            want.push(KEvent::LinkClosed(info.clone(), CloseReason::Eof));
        }
        want.push(KEvent::Exited(info.clone(), ExitStatus::Code(0)));
        let (fresh, _) = sim.info(sim.pid_of("back", 0));
        want.extend([
            KEvent::Spawned(fresh.clone()),
            KEvent::Up(fresh.clone()),
            KEvent::Ready(fresh),
            KEvent::RoleOnline("back".into()),
        ]);
        assert_eq!(events, want);
        assert!(sim.kills.is_empty(), "a worker that exits within its EOF grace is not killed");
        sim.ledger.assert_balanced();
    }
}

// ---------------------------------------------------------------------------
// Handshake failures
// ---------------------------------------------------------------------------

#[test]
fn bad_magic_closes_the_link_and_kills_the_process() {
    let mut sim = held(KingpinConfig::new("app").role("back", 1));
    let link = sim.pending_spawns[0].link;
    let pid = sim.complete_spawn(link);
    sim.rewrite_hello(pid, |h| h.magic = *b"bad!");
    sim.hold_spawns = false;
    sim.run_until_idle();

    let events = sim.take_events();
    let KEvent::Spawned(info) = events[0].clone() else { panic!("{events:?}") };
    assert_eq!(info.pid, pid);
    assert_eq!(events[1], KEvent::LinkClosed(info.clone(), CloseReason::BadMagic));
    assert_eq!(events[2], KEvent::Exited(info.clone(), ExitStatus::Signal(9)));
    assert_eq!(sim.kills, vec![(pid, link)]);
    assert_eq!(sim.closed_links, vec![link]);
    let p = sim.proc(pid);
    assert!(p.welcome().is_none());
    assert_eq!(p.exit, Some(ExitStatus::Signal(9)));
    // The slot is revived, and the honest replacement comes up.
    let (fresh, phase) = sim.info(sim.pid_of("back", 0));
    assert_eq!(phase, Phase::Up);
    assert_eq!(
        &events[3..],
        [
            KEvent::Spawned(fresh.clone()),
            KEvent::Up(fresh.clone()),
            KEvent::Ready(fresh),
            KEvent::RoleOnline("back".into()),
            KEvent::AppOnline,
        ]
    );
    sim.ledger.assert_balanced();
}

#[test]
fn wrong_version_is_rejected_and_both_sides_name_the_versions() {
    let mut sim = held(KingpinConfig::new("app").role("back", 1));
    let link = sim.pending_spawns[0].link;
    let pid = sim.complete_spawn(link);
    let (info, _) = sim.info(pid);
    let theirs = PROTOCOL_VERSION + 6;
    sim.rewrite_hello(pid, move |h| h.version = theirs);
    sim.run_until_idle();

    // The worker read the Reject and closed with both versions in hand.
    let p = sim.proc(pid);
    let Some(CloseReason::Rejected { kingpin_version, reason }) = &p.closed else {
        panic!("worker closed with {:?}", p.closed)
    };
    assert_eq!(*kingpin_version, PROTOCOL_VERSION);
    assert!(reason.contains(&theirs.to_string()) && reason.contains(&PROTOCOL_VERSION.to_string()), "{reason}");
    assert!(p.welcome().is_none());
    assert!(!p.alive());

    let events = sim.take_events();
    assert_eq!(closures(&events), vec![(pid, CloseReason::VersionMismatch { ours: PROTOCOL_VERSION, theirs })]);
    assert!(!events.iter().any(|e| matches!(e, KEvent::Up(_))));
    assert!(events.contains(&KEvent::Exited(info, ExitStatus::Code(1))));
    // A rejected worker gets EOF_GRACE to read why and exit: this one did,
    // so it was not killed.
    assert_eq!(sim.kills, vec![]);
    assert!(sim.kingpin.worker(link).is_none());
    sim.ledger.assert_balanced();
}

#[test]
fn a_rejected_worker_that_does_not_exit_is_killed_after_the_eof_grace() {
    let mut sim = held(KingpinConfig::new("app").role("back", 1));
    let link = sim.pending_spawns[0].link;
    let pid = sim.complete_spawn(link);
    sim.rewrite_hello(pid, |h| h.version = PROTOCOL_VERSION + 1);
    // It writes its Hello, then stops: it never reads the Reject.
    sim.flush_worker(pid);
    sim.freeze(pid, true);
    sim.run_until_idle();
    assert_eq!(sim.info(pid).1, Phase::Closing);
    assert!(sim.kills.is_empty());
    sim.advance(mob_proto::kingpin::EOF_GRACE - Duration::from_nanos(1));
    sim.run_until_idle();
    assert!(sim.kills.is_empty(), "not before the grace");
    sim.advance(Duration::from_nanos(1));
    sim.run_until_idle();
    assert_eq!(sim.kills, vec![(pid, link)]);
    assert_eq!(sim.proc(pid).exit, Some(ExitStatus::Signal(9)));
    sim.ledger.assert_balanced();
}

#[test]
fn a_hello_for_another_slot_is_rejected() {
    let mut sim = held(KingpinConfig::new("app").role("back", 2));
    let link = sim.pending_spawns[0].link;
    let pid = sim.complete_spawn(link);
    sim.rewrite_hello(pid, |h| h.slot = 1);
    sim.run_until_idle();
    let Some(CloseReason::Rejected { reason, .. }) = &sim.proc(pid).closed else {
        panic!("{:?}", sim.proc(pid).closed)
    };
    assert!(reason.contains("back#0") && reason.contains("back#1"), "{reason}");
    assert_eq!(closures(&sim.take_events()), vec![(pid, CloseReason::Protocol("hello names another role or slot"))]);
}

#[test]
fn a_garbage_frame_closes_only_its_own_link() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2));
    let (a, b) = (sim.pid_of("back", 0), sim.pid_of("back", 1));
    let (info_a, _) = sim.info(a);
    let (info_b, _) = sim.info(b);

    // `a` writes a frame of a kind that does not exist, claiming one fd.
    let mut garbage = Header { len: 4, kind: 99, fds: 1 }.encode().to_vec();
    garbage.extend_from_slice(b"junk");
    let files = sim.inject(a, &garbage, 1);
    // Meanwhile `b` and the kingpin talk.
    send(&mut sim, b, Target::Kingpin, "b-to-kingpin");
    sim.kingpin.send(Target::Pid(b), "_", "kingpin-to-b", b"", Vec::new()).unwrap();
    sim.run_until_idle();

    let events = sim.take_events();
    assert_eq!(closures(&events), vec![(a, CloseReason::Decode(DecodeError::UnknownKind(99)))]);
    assert!(events.contains(&KEvent::Message {
        from: info_b.clone(),
        ns: "_".into(),
        name: "b-to-kingpin".into(),
        payload: "b-to-kingpin".into(),
        files: vec![],
    }));
    assert!(!events.iter().any(|e| matches!(e, KEvent::Exited(i, _) if i.pid == b)));
    assert_eq!(sim.kills, vec![(a, info_a.link)]);
    assert_eq!(sim.closed_links, vec![info_a.link]);
    assert_eq!(sim.ledger.history(files[0]), vec![(Side::Kingpin, Some(Fate::Released))]);

    // `b` is untouched and keeps talking; `a`'s slot is revived.
    assert_eq!(names(&sim, b), ["kingpin-to-b"]);
    assert_eq!(sim.info(b), (info_b, Phase::Up));
    let a2 = sim.pid_of("back", 0);
    assert_ne!(a2, a);
    send(&mut sim, b, Target::Pid(a2), "b-to-a2");
    sim.run_until_idle();
    assert_eq!(names(&sim, a2), ["b-to-a2"]);
    sim.ledger.assert_balanced();
}

#[test]
fn a_silent_worker_times_out_by_the_virtual_clock() {
    let mut config = KingpinConfig::new("app").role("back", 1);
    config.handshake_timeout = Duration::from_secs(5);
    // Only the handshake's timer here (heartbeats: supervision.rs).
    config.heartbeat = None;
    let mut sim = held(config);
    let link = sim.pending_spawns[0].link;
    sim.now = Instant::from_nanos(1_000);
    let pid = sim.complete_spawn(link);
    sim.freeze(pid, true);
    sim.hold_spawns = false;
    sim.run_until_idle();
    let deadline = sim.now + Duration::from_secs(5);
    assert_eq!(sim.kingpin.poll_timeout(), Some(deadline));

    // Early timeouts do nothing.
    sim.kingpin.handle_timeout(deadline - Duration::from_nanos(1));
    sim.advance(Duration::from_secs(4));
    sim.run_until_idle();
    assert_eq!(sim.info(pid).1, Phase::Handshaking);
    assert!(closures(&sim.take_events()).is_empty());
    assert!(sim.kills.is_empty());
    assert_eq!(sim.kingpin.poll_timeout(), Some(deadline));

    // At the deadline, the link closes and the process is killed and replaced.
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.info(pid).1, Phase::Closing);
    // What is read from a closing link is dropped, its fds released.
    let (late, late_fd) = sim.new_fd(Side::Kingpin);
    sim.kingpin.handle_read(link, b"late", vec![late_fd], sim.now);
    sim.run_until_idle();
    assert_eq!(sim.ledger.history(late), vec![(Side::Kingpin, Some(Fate::Released))]);
    assert_eq!(closures(&sim.events), vec![(pid, CloseReason::HandshakeTimeout)]);
    assert_eq!(sim.kills, vec![(pid, link)]);
    assert_eq!(sim.proc(pid).exit, Some(ExitStatus::Signal(9)));
    let fresh = sim.pid_of("back", 0);
    assert_eq!(sim.info(fresh).1, Phase::Up);
    assert_eq!(sim.kingpin.poll_timeout(), None);
    // A timeout handled late finds nothing more to do.
    let before = sim.events.len();
    sim.kingpin.handle_timeout(sim.now + Duration::from_secs(60));
    sim.run_until_idle();
    assert_eq!(sim.events.len(), before);
    sim.ledger.assert_balanced();
}

#[test]
fn a_failed_spawn_releases_what_waited_and_is_retried() {
    let mut config = KingpinConfig::new("app").role("back", 1);
    config.spawn_retry = Duration::from_secs(1);
    let mut sim = held(config);
    let link = sim.pending_spawns[0].link;
    let (file, fd) = sim.new_fd(Side::Kingpin);
    sim.kingpin.send(Target::Role("back".into()), "_", "early", b"", vec![fd]).unwrap();
    // Bytes and an fd read from the new socket before the spawn failed.
    let (stray, stray_fd) = sim.new_fd(Side::Kingpin);
    sim.kingpin.handle_read(link, b"x", vec![stray_fd], sim.now);
    sim.fail_spawn(link);
    sim.run_until_idle();
    for f in [file, stray] {
        assert_eq!(
            sim.ledger.history(f),
            vec![(Side::Kingpin, Some(Fate::Released))],
            "fds held for a worker that never started are released"
        );
    }
    assert_eq!(closures(&sim.take_events()), vec![(0, CloseReason::Transport("spawn failed"))]);
    assert!(sim.kills.is_empty(), "there is no process to kill");
    assert_eq!(sim.spawns.len(), 1);
    assert_eq!(sim.kingpin.send(Target::Role("back".into()), "_", "x", b"", Vec::new()), Err(SendError::NoRoute));

    let retry = sim.now + Duration::from_secs(1);
    assert_eq!(sim.kingpin.poll_timeout(), Some(retry));
    sim.advance(Duration::from_millis(999));
    sim.run_until_idle();
    assert_eq!(sim.spawns.len(), 1);
    sim.advance(Duration::from_millis(1));
    sim.run_until_idle();
    assert_eq!(sim.spawns.len(), 2);
    let s = sim.spawns[1].clone();
    assert_eq!((&*s.role, s.slot), ("back", 0));
    assert_ne!(s.link, link);
    let pid = sim.complete_spawn(s.link);
    sim.run_until_idle();
    assert_eq!(sim.info(pid).1, Phase::Up);
    assert!(names(&sim, pid).is_empty(), "what was queued for the failed spawn is gone");
    sim.ledger.assert_balanced();
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

#[test]
fn messages_to_a_starting_worker_wait_and_follow_the_welcome_in_order() {
    for chunker in [Chunker::Whole, Chunker::sizes(vec![1]), Chunker::seeded(7)] {
        early_messages_follow_the_welcome(chunker);
    }
}

fn early_messages_follow_the_welcome(chunker: Chunker) {
    let mut sim = Sim::with_chunker(KingpinConfig::new("app").role("back", 1), chunker);
    sim.hold_spawns = true;
    sim.run_until_idle();
    let link = sim.pending_spawns[0].link;
    let k = |sim: &mut Sim, to: Target, name: &str, fds| {
        sim.kingpin.send(to, "ns", name, name.as_bytes(), fds).unwrap();
    };
    // Spawning: no pid yet, but role, any and all reach it.
    assert_eq!(sim.kingpin.worker(link).unwrap().1, Phase::Spawning);
    k(&mut sim, Target::Role("back".into()), "m1", vec![]);
    k(&mut sim, Target::Any("back".into()), "m2", vec![]);
    k(&mut sim, Target::All { include_sender: false }, "m3", vec![]);
    // Handshaking: the pid reaches it too, fds included.
    let pid = sim.complete_spawn(link);
    assert_eq!(sim.info(pid).1, Phase::Handshaking);
    let (file, fd) = sim.new_fd(Side::Kingpin);
    k(&mut sim, Target::Pid(pid), "m4", vec![fd]);
    assert!(sim.kingpin.poll_transmit(link).is_none(), "nothing goes on the wire before the Welcome");
    sim.run_until_idle();
    k(&mut sim, Target::Pid(pid), "m5", vec![]);
    sim.run_until_idle();

    let p = sim.proc(pid);
    assert!(matches!(p.events[0], WEvent::Welcome(_)));
    assert_eq!(names(&sim, pid), ["m1", "m2", "m3", "m4", "m5"]);
    for m in p.inbox() {
        assert_eq!(m.from, Source::Kingpin);
        assert_eq!(m.ns, "ns");
        assert_eq!(&m.payload[..], m.name.as_bytes());
        let want = if m.name == "m4" { vec![file] } else { vec![] };
        assert_eq!(m.files, want, "{}", m.name);
    }
    assert_eq!(
        sim.ledger.history(file),
        vec![(Side::Kingpin, Some(Fate::Transmitted)), (Side::Worker(pid), Some(Fate::Delivered))]
    );
    sim.ledger.assert_balanced();
}

#[test]
fn any_frames_for_a_worker_that_never_starts_go_to_another() {
    let mut sim = held(KingpinConfig::new("app").role("back", 2));
    let links: Vec<_> = sim.pending_spawns.iter().map(|s| s.link).collect();
    let (file, fd) = sim.new_fd(Side::Kingpin);
    let any = Target::Any("back".into());
    sim.kingpin.send(any.clone(), "_", "a1", b"", vec![fd]).unwrap();
    sim.kingpin.send(any, "_", "a2", b"", Vec::new()).unwrap();
    sim.kingpin.send(Target::Role("back".into()), "_", "r", b"", Vec::new()).unwrap();
    // Both wait for a worker; the one chosen first never starts.
    assert_eq!(sim.kingpin.pending().early, 4);
    sim.fail_spawn(links[0]);
    let pid = sim.complete_spawn(links[1]);
    sim.run_until_idle();
    assert_eq!(names(&sim, pid), ["a2", "r", "a1"]);
    assert_eq!(sim.proc(pid).inbox()[2].files, vec![file]);
    assert_eq!(
        sim.ledger.history(file),
        vec![(Side::Kingpin, Some(Fate::Transmitted)), (Side::Worker(pid), Some(Fate::Delivered))]
    );
    assert_eq!(sim.kingpin.pending().early, 0);
    sim.ledger.assert_balanced();
}

#[test]
fn too_much_for_a_starting_worker_is_backpressure() {
    let mut config = KingpinConfig::new("app").role("back", 1);
    config.early_queue_limit = 100;
    let mut sim = held(config);
    let (file, fd) = sim.new_fd(Side::Kingpin);
    let to = Target::Role("back".into());
    sim.kingpin.send(to.clone(), "_", "fits", &[0; 60], Vec::new()).unwrap();
    assert_eq!(sim.kingpin.send(to, "_", "too-much", &[0; 60], vec![fd]), Err(SendError::Backpressure));
    sim.run_until_idle();
    assert_eq!(sim.ledger.history(file), vec![(Side::Kingpin, Some(Fate::Released))]);
    let link = sim.pending_spawns[0].link;
    let pid = sim.complete_spawn(link);
    sim.run_until_idle();
    assert_eq!(names(&sim, pid), ["fits"]);
}

#[test]
fn worker_messages_to_the_kingpin_are_events() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2));
    let (a, b) = (sim.pid_of("back", 0), sim.pid_of("back", 1));
    let (file, fd) = sim.new_fd(Side::Worker(a));
    sim.worker_mut(a).send(Target::Kingpin, "ns", "hi", b"payload", vec![fd]).unwrap();
    send(&mut sim, a, Target::Kingpin, "again");
    sim.run_until_idle();
    let (info, _) = sim.info(a);
    assert_eq!(
        sim.take_events(),
        vec![
            KEvent::Message {
                from: info.clone(),
                ns: "ns".into(),
                name: "hi".into(),
                payload: "payload".into(),
                files: vec![file],
            },
            KEvent::Message {
                from: info,
                ns: "_".into(),
                name: "again".into(),
                payload: "again".into(),
                files: vec![],
            },
        ]
    );
    assert!(names(&sim, a).is_empty() && names(&sim, b).is_empty());
    assert_eq!(
        sim.ledger.history(file),
        vec![(Side::Worker(a), Some(Fate::Transmitted)), (Side::Kingpin, Some(Fate::Delivered))]
    );
    sim.ledger.assert_balanced();
}

#[test]
fn worker_to_worker_routing_reaches_exactly_the_named_workers() {
    let mut sim = up(KingpinConfig::new("app").role("back", 3).role("front", 2));
    let back: Vec<u32> = sim.pids_of("back");
    let front: Vec<u32> = sim.pids_of("front");
    let s = front[0];
    let (file, fd) = sim.new_fd(Side::Worker(s));
    sim.worker_mut(s).send(Target::Pid(back[1]), "_", "pid", b"pid", vec![fd]).unwrap();
    send(&mut sim, s, Target::Role("back".into()), "role");
    for i in 1..=6 {
        send(&mut sim, s, Target::Any("back".into()), &format!("any{i}"));
    }
    send(&mut sim, s, Target::All { include_sender: false }, "all");
    send(&mut sim, s, Target::All { include_sender: true }, "all+self");
    sim.run_until_idle();

    assert_eq!(names(&sim, back[0]), ["role", "any1", "any4", "all", "all+self"]);
    assert_eq!(names(&sim, back[1]), ["pid", "role", "any2", "any5", "all", "all+self"]);
    assert_eq!(names(&sim, back[2]), ["role", "any3", "any6", "all", "all+self"]);
    assert_eq!(names(&sim, front[0]), ["all+self"]);
    assert_eq!(names(&sim, front[1]), ["all", "all+self"]);

    let source = sim.source_of(s);
    let Source::Worker { id, .. } = source else { unreachable!() };
    assert_eq!(sim.proc(s).welcome().unwrap().worker, id);
    for pid in back.iter().chain(&front) {
        for m in sim.proc(*pid).inbox() {
            assert_eq!(m.from, source);
            assert_eq!(&m.payload[..], m.name.as_bytes());
            assert_eq!(m.files.len(), usize::from(m.name == "pid"));
        }
    }
    assert_eq!(sim.proc(back[1]).inbox()[0].files, vec![file]);
    assert!(sim.take_events().is_empty(), "nothing for the kingpin itself");
    assert_eq!(
        sim.ledger.history(file),
        vec![
            (Side::Worker(s), Some(Fate::Transmitted)),
            (Side::Kingpin, Some(Fate::Transmitted)),
            (Side::Worker(back[1]), Some(Fate::Delivered)),
        ]
    );
    sim.ledger.assert_balanced();
}

#[test]
fn any_prefers_workers_that_are_up() {
    let mut sim = up(KingpinConfig::new("app").role("back", 3).role("front", 1));
    let back = sim.pids_of("back");
    let s = sim.pid_of("front", 0);
    sim.hold_spawns = true;
    sim.exit(back[1], ExitStatus::Code(1));
    sim.run_until_idle();
    assert_eq!(sim.pending_spawns.len(), 1, "back#1 is spawning again");
    for i in 1..=4 {
        send(&mut sim, s, Target::Any("back".into()), &format!("any{i}"));
    }
    sim.run_until_idle();
    assert_eq!(names(&sim, back[0]), ["any1", "any3"]);
    assert_eq!(names(&sim, back[2]), ["any2", "any4"]);
    // With every worker starting, one of them gets it once it is up.
    sim.exit(back[0], ExitStatus::Code(1));
    sim.exit(back[2], ExitStatus::Code(1));
    sim.run_until_idle();
    send(&mut sim, s, Target::Any("back".into()), "any5");
    sim.run_until_idle();
    let pending: Vec<_> = sim.pending_spawns.iter().map(|s| s.link).collect();
    assert_eq!(pending.len(), 3);
    let fresh: Vec<u32> = pending.into_iter().map(|l| sim.complete_spawn(l)).collect();
    sim.run_until_idle();
    let got: Vec<Vec<String>> = fresh.iter().map(|p| names(&sim, *p)).collect();
    assert_eq!(got.iter().filter(|n| *n == &["any5"]).count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|n| n.is_empty()).count(), 2, "{got:?}");
}

#[test]
fn unroutable_messages_are_reported_and_their_fds_released() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2).role("empty", 0).role("front", 1));
    let s = sim.pid_of("front", 0);
    let (info, _) = sim.info(s);
    let (file, fd) = sim.new_fd(Side::Worker(s));
    sim.worker_mut(s).send(Target::Pid(4242), "_", "x", b"", vec![fd]).unwrap();
    let (many, fd2) = sim.new_fd(Side::Worker(s));
    sim.worker_mut(s).send(Target::Role("back".into()), "_", "x", b"", vec![fd2]).unwrap();
    for to in [
        Target::Role("nope".into()),
        Target::Any("nope".into()),
        Target::Role("empty".into()),
        Target::Any("empty".into()),
    ] {
        sim.worker_mut(s).send(to, "_", "x", b"", Vec::new()).unwrap();
    }
    sim.run_until_idle();
    let undeliverable = |to: Target, error| KEvent::Undeliverable { from: info.clone(), to, error };
    assert_eq!(
        sim.take_events(),
        vec![
            undeliverable(Target::Pid(4242), SendError::NoRoute),
            undeliverable(Target::Role("back".into()), SendError::FdsToMany),
            undeliverable(Target::Role("nope".into()), SendError::NoRoute),
            undeliverable(Target::Any("nope".into()), SendError::NoRoute),
            undeliverable(Target::Role("empty".into()), SendError::NoRoute),
            undeliverable(Target::Any("empty".into()), SendError::NoRoute),
        ]
    );
    for f in [file, many] {
        assert_eq!(
            sim.ledger.history(f),
            vec![(Side::Worker(s), Some(Fate::Transmitted)), (Side::Kingpin, Some(Fate::Released))]
        );
    }
    for pid in sim.pids_of("back") {
        assert!(names(&sim, pid).is_empty());
    }

    // The kingpin's own sends fail the same way, and release their fds.
    let (kfile, kfd) = sim.new_fd(Side::Kingpin);
    assert_eq!(sim.kingpin.send(Target::Pid(4242), "_", "x", b"", vec![kfd]), Err(SendError::NoRoute));
    let (kmany, kfd2) = sim.new_fd(Side::Kingpin);
    assert_eq!(
        sim.kingpin.send(Target::All { include_sender: false }, "_", "x", b"", vec![kfd2]),
        Err(SendError::FdsToMany)
    );
    for to in [Target::Kingpin, Target::Role("nope".into()), Target::Any("empty".into())] {
        assert_eq!(sim.kingpin.send(to, "_", "x", b"", Vec::new()), Err(SendError::NoRoute));
    }
    sim.run_until_idle();
    for f in [kfile, kmany] {
        assert_eq!(sim.ledger.history(f), vec![(Side::Kingpin, Some(Fate::Released))]);
    }
    assert!(sim.take_events().is_empty());
    sim.ledger.assert_balanced();
}

#[test]
fn a_burst_asks_for_its_link_to_be_written_once_it_reaches_flush_at() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2));
    let [a, b] = [sim.pid_of("back", 0), sim.pid_of("back", 1)];
    let link = |sim: &Sim, pid: u32| sim.kingpin.workers().find(|(w, _)| w.pid == pid).map(|(w, _)| w.link).unwrap();
    let (la, lb) = (link(&sim, a), link(&sim, b));
    let payload = [7u8; 1000];
    let queued = |sim: &mut Sim, pid: u32| {
        sim.kingpin.send(Target::Pid(pid), "_", "bulk", &payload, Vec::new()).unwrap();
        sim.kingpin.poll_transmit(link(sim, pid)).map_or(0, |t| t.bytes.len())
    };
    // Below FLUSH_AT nothing asks; the send that reaches it names its link,
    // once, however much more is queued.
    let mut flushed = Vec::new();
    let mut crossed_at = None;
    for i in 0..(2 * FLUSH_AT / payload.len()) {
        let len = queued(&mut sim, a);
        flushed.extend(std::iter::from_fn(|| sim.kingpin.poll_flush()));
        if len >= FLUSH_AT && crossed_at.is_none() {
            crossed_at = Some(i);
            assert_eq!(flushed, vec![la], "asked at the send that reached {FLUSH_AT}");
        }
        if crossed_at.is_none() {
            assert!(flushed.is_empty(), "asked below {FLUSH_AT} ({len} bytes)");
        }
    }
    assert_eq!(flushed, vec![la]);
    // The other link is its own count; once written, a link asks again.
    while queued(&mut sim, b) < FLUSH_AT {}
    assert_eq!(sim.kingpin.poll_flush(), Some(lb));
    assert_eq!(sim.kingpin.poll_flush(), None);
    sim.run_until_idle();
    assert!(names(&sim, a).len() == 2 * FLUSH_AT / payload.len() && names(&sim, a).iter().all(|n| n == "bulk"));
    while queued(&mut sim, a) < FLUSH_AT {}
    assert_eq!(sim.kingpin.poll_flush(), Some(la));
}

// ---------------------------------------------------------------------------
// fds of messages whose recipient died
// ---------------------------------------------------------------------------

/// `a` sends an fd to `b`; it waits at the kingpin; `b` dies; the kingpin
/// must release it.
fn fd_for_dead_recipient(sim: &mut Sim, a: u32, b: u32) -> u64 {
    let (file, fd) = sim.new_fd(Side::Worker(a));
    sim.worker_mut(a).send(Target::Pid(b), "_", "for-b", b"", vec![fd]).unwrap();
    sim.run_until_idle();
    assert_eq!(
        sim.ledger.history(file),
        vec![(Side::Worker(a), Some(Fate::Transmitted)), (Side::Kingpin, None)],
        "the fd waits at the kingpin"
    );
    sim.exit(b, ExitStatus::Signal(9));
    sim.run_until_idle();
    assert_eq!(
        sim.ledger.history(file),
        vec![(Side::Worker(a), Some(Fate::Transmitted)), (Side::Kingpin, Some(Fate::Released))]
    );
    sim.ledger.assert_balanced();
    file
}

#[test]
fn fds_for_a_recipient_that_died_with_its_socket_full_are_released() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2));
    let (a, b) = (sim.pid_of("back", 0), sim.pid_of("back", 1));
    let link = sim.info(b).0.link;
    sim.block_writes(link, true);
    fd_for_dead_recipient(&mut sim, a, b);
    assert!(names(&sim, b).is_empty());
}

#[test]
fn fds_for_a_recipient_that_died_during_its_handshake_are_released() {
    let mut sim = up(KingpinConfig::new("app").role("back", 2));
    let a = sim.pid_of("back", 0);
    sim.hold_spawns = true;
    sim.exit(sim.pid_of("back", 1), ExitStatus::Code(1));
    sim.run_until_idle();
    let link = sim.pending_spawns[0].link;
    let b = sim.complete_spawn(link);
    sim.freeze(b, true);
    fd_for_dead_recipient(&mut sim, a, b);
    assert!(sim.proc(b).welcome().is_none());
}

// ---------------------------------------------------------------------------
// Routing under arbitrary chunking, against a model
// ---------------------------------------------------------------------------

/// Workers of the model: front#0, front#1, back#0, back#1, back#2.
const WORKERS: [(&str, u32); 5] = [("front", 0), ("front", 1), ("back", 0), ("back", 1), ("back", 2)];

#[derive(Clone, Debug)]
enum To {
    Kingpin,
    Worker(usize),
    Role(usize),
    Any(usize),
    All(bool),
}

const ROLES: [&str; 2] = ["front", "back"];

fn to() -> impl Strategy<Value = To> {
    prop_oneof![
        Just(To::Kingpin),
        (0..WORKERS.len()).prop_map(To::Worker),
        (0..2usize).prop_map(To::Role),
        (0..2usize).prop_map(To::Any),
        any::<bool>().prop_map(To::All),
    ]
}

/// One message of the model: target, payload, fd count.
type ModelMsg = (To, Vec<u8>, usize);

/// Rounds: one sender sends several messages, then the system settles.
fn rounds() -> impl Strategy<Value = Vec<(usize, Vec<ModelMsg>)>> {
    let msg = (to(), vec(any::<u8>(), 0..200), 0usize..3);
    vec((0..WORKERS.len(), vec(msg, 1..6)), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the write and read sizes, every message reaches exactly the
    /// workers the model says, in order, with its payload and its files, and
    /// every fd handle comes back exactly once.
    #[test]
    fn routing_matches_the_model_under_any_chunking(seed in any::<u64>(), rounds in rounds(), burst in 1usize..4) {
        let config = KingpinConfig::new("app").role("front", 2).role("back", 3);
        let mut sim = Sim::chunked(config, seed);
        sim.run_until_idle();
        sim.take_events();
        let pids: Vec<u32> = WORKERS.iter().map(|(r, s)| sim.pid_of(r, *s)).collect();
        let in_role = |role: usize| -> Vec<usize> {
            (0..WORKERS.len()).filter(|&w| WORKERS[w].0 == ROLES[role]).collect()
        };

        let mut want: Vec<Vec<Received>> = vec![Vec::new(); WORKERS.len()];
        let mut want_kingpin = Vec::new();
        let mut next_any = [0usize; 2];
        let mut n = 0;
        for (sender, msgs) in rounds {
            let from = sim.source_of(pids[sender]);
            for (to, payload, nfds) in msgs {
                n += 1;
                let name = format!("m{n}");
                let recipients: Vec<usize> = match to {
                    To::Kingpin => vec![],
                    To::Worker(w) => vec![w],
                    To::Role(r) => in_role(r),
                    To::Any(r) => {
                        let ws = in_role(r);
                        let w = ws[next_any[r] % ws.len()];
                        next_any[r] += 1;
                        vec![w]
                    }
                    To::All(include) => (0..WORKERS.len()).filter(|&w| include || w != sender).collect(),
                };
                let single = matches!(to, To::Kingpin) || recipients.len() == 1;
                let nfds = if single { nfds } else { 0 };
                let (files, fds) = sim.new_fds(Side::Worker(pids[sender]), nfds);
                let target = match to {
                    To::Kingpin => Target::Kingpin,
                    To::Worker(w) => Target::Pid(pids[w]),
                    To::Role(r) => Target::Role(ROLES[r].into()),
                    To::Any(r) => Target::Any(ROLES[r].into()),
                    To::All(include_sender) => Target::All { include_sender },
                };
                sim.worker_mut(pids[sender]).send(target, "ns", &name, &payload, fds).unwrap();
                let m = Received { from: from.clone(), ns: "ns".into(), name, payload: payload.into(), files };
                if matches!(to, To::Kingpin) {
                    want_kingpin.push((pids[sender], m));
                } else {
                    for w in recipients {
                        want[w].push(m.clone());
                    }
                }
            }
            sim.run_until_idle();
        }
        for (w, pid) in pids.iter().enumerate() {
            let got: Vec<Received> = sim.proc(*pid).inbox().into_iter().cloned().collect();
            prop_assert_eq!(&got, &want[w], "inbox of {:?}", WORKERS[w]);
        }
        let got_kingpin: Vec<(u32, Received)> = sim.take_events().into_iter().map(|e| match e {
            KEvent::Message { from, ns, name, payload, files } => {
                let source = Source::Worker { id: from.id, pid: from.pid };
                (from.pid, Received { from: source, ns, name, payload, files })
            }
            other => panic!("unexpected event {other:?}"),
        }).collect();
        prop_assert_eq!(got_kingpin, want_kingpin);

        // A burst: everyone sends to everyone at once. Interleaving across
        // senders is free; each sender's order is not.
        let before: Vec<usize> = pids.iter().map(|p| sim.proc(*p).inbox().len()).collect();
        for (i, pid) in pids.iter().enumerate() {
            for k in 0..burst {
                send(&mut sim, *pid, Target::All { include_sender: true }, &format!("b{i}.{k}"));
            }
        }
        sim.run_until_idle();
        for (w, pid) in pids.iter().enumerate() {
            let inbox = sim.proc(*pid).inbox();
            let got = &inbox[before[w]..];
            prop_assert_eq!(got.len(), burst * pids.len());
            for (i, sender) in pids.iter().enumerate() {
                let from_i: Vec<&str> = got
                    .iter()
                    .filter(|m| m.from == sim.source_of(*sender))
                    .map(|m| m.name.as_str())
                    .collect();
                let want: Vec<String> = (0..burst).map(|k| format!("b{i}.{k}")).collect();
                prop_assert_eq!(from_i, want);
            }
        }
        prop_assert!(sim.kills.is_empty() && sim.closed_links.is_empty());
        sim.ledger.assert_balanced();
    }
}

/// A worker drained while it was still starting (a resize down) is being
/// killed: its Hello, if it arrives first, is not welcomed. It never comes
/// up, no work is flushed into it, and its exit removes the link.
#[test]
fn a_hello_from_a_worker_drained_while_starting_is_not_welcomed() {
    use mob_proto::wire::{Hello, Kind, MAGIC};
    use mob_proto::{Event, Kingpin, Output};
    let now = Instant::ZERO;
    let mut k = Kingpin::new(KingpinConfig::new("app").role("back", 1));
    let next_spawn = |k: &mut Kingpin| {
        std::iter::from_fn(|| k.poll_output())
            .find_map(|o| match o {
                Output::Spawn(s) => Some(s),
                _ => None,
            })
            .expect("a spawn")
    };
    let spawn = next_spawn(&mut k);
    k.handle_spawned(spawn.link, 500, now);
    // Grow, then shrink before the new worker said hello: the new slot is
    // drained while its worker is starting, so it is killed.
    k.resize("back", 2, now);
    let second = next_spawn(&mut k);
    k.handle_spawned(second.link, 501, now);
    while k.poll_output().is_some() {}
    k.resize("back", 1, now);
    let outputs: Vec<Output> = std::iter::from_fn(|| k.poll_output()).collect();
    assert!(outputs.iter().any(|o| matches!(o, Output::Kill { pid: 501, .. })), "{outputs:?}");
    // Its Hello arrives before the kill takes effect.
    let hello =
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, pid: 501, role: "back".into(), slot: 1, exports: vec![] };
    k.handle_read(second.link, &wire_frame(Kind::Hello, &hello, &[], 0), Vec::new(), now);
    let outputs: Vec<Output> = std::iter::from_fn(|| k.poll_output()).collect();
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Event(Event::WorkerUp(_)) | Output::Transmit(_))),
        "a worker being killed is not welcomed: {outputs:?}"
    );
    assert!(k.poll_transmit(second.link).is_none(), "no Welcome queued");
    // Its exit ends the link; the kingpin has one worker of back left.
    k.handle_exited(501, ExitStatus::Signal(9), now);
    while k.poll_output().is_some() {}
    assert!(k.workers().all(|(w, _)| w.pid != 501));
}
