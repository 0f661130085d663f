mod common;
use common::*;
use core::time::Duration;
use mob_proto::{ExitStatus, KingpinConfig, Target};

#[test]
fn repro() {
    let mut config = KingpinConfig::new("app").role("a", 2).role("b", 2);
    config.request_timeout = Duration::from_millis(2_000);
    let mut sim = Sim::chunked(config, 0);
    sim.run_until_idle();
    sim.take_events();
    sim.hold_spawns = true;
    sim.exit(1002, ExitStatus::Signal(9));
    eprintln!("pending after crash b0: {:?}", sim.pending_spawns);
    let l = sim.pending_spawns[0].link;
    sim.fail_spawn(l);
    eprintln!("pending after fail: {:?}", sim.pending_spawns);
    sim.exit(1003, ExitStatus::Signal(9));
    eprintln!("pending after crash b1: {:?}", sim.pending_spawns);
    let now = sim.now;
    sim.worker_mut(1000)
        .request(Target::Any("b".into()), "ns", "w", b"x", vec![], Some(Duration::ZERO), 0, now)
        .unwrap();
    sim.run_until_idle();
    eprintln!("pending after run: {:?} {:?}", sim.pending_spawns, sim.kingpin.pending());
    sim.advance(Duration::ZERO);
    eprintln!("after advance: {:?} {:?}", sim.pending_spawns, sim.kingpin.pending());
    let l = sim.pending_spawns[0].link;
    sim.fail_spawn(l);
    eprintln!("after fail2: {:?} {:?}", sim.pending_spawns, sim.kingpin.pending());
    sim.hold_spawns = false;
    for _ in 0..30 {
        sim.run_until_idle();
        sim.advance(Duration::from_millis(500));
    }
    sim.run_until_idle();
    for p in sim.procs.values() {
        eprintln!("{} {:?} alive={} {:?}", p.pid, (&p.role, p.slot), p.alive(), p.events);
    }
    eprintln!("{:#?}", sim.take_events());
}
