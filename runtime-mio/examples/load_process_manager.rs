//! load-process-manager's README example: a supervisor enqueues 10 requests
//! to 2 workers that answer after a delay; Ctrl-C soft-kills (in-flight work
//! finishes first), a second Ctrl-C hard-kills.
//!
//! Run: `cargo run --example load_process_manager -p mob-mio`

use mob_mio::{App, Error, Event, Mobster, RoleSpec};
use std::time::Duration;

fn worker(mut mob: Mobster) -> Result<(), Error> {
    mob.on_job(|_mob, job| {
        let n: u32 = job.decode().unwrap_or(0);
        let responder = job.into_responder();
        // Answer later, from another thread: the responder can move.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            responder.respond(&format!("request {n} handled by {}", std::process::id())).ok();
        });
    });
    mob.on_stop(|_mob, done| {
        println!("worker {}: cleaning up before exit", std::process::id());
        done.confirm();
    });
    mob.run()
}

fn main() -> std::process::ExitCode {
    // Each worker handles at most three requests at once; the rest wait at
    // the kingpin, so the load spreads as workers come up.
    let mut role = RoleSpec::new("worker", 2);
    role.concurrency = Some(3);
    App::new("lpm")
        .role_spec(role, worker)
        .on_start(|kingpin| {
            for n in 0..10u32 {
                let job = kingpin.enqueue("worker", &n).map(|j| j.timeout(Duration::from_secs(10)).retries(1));
                let queued = job.and_then(|j| {
                    j.then(move |_kingpin, outcome| match outcome {
                        Ok(r) => println!(
                            "{} (after {:?})",
                            r.decode::<String>().unwrap_or_default(),
                            r.created_at.elapsed()
                        ),
                        Err(e) => println!("request {n} failed: {e}"),
                    })
                });
                if let Err(e) = queued {
                    println!("request {n} not queued: {e}");
                }
            }
        })
        .on_event(|_kingpin, event| {
            if let Event::WorkerExited { worker, status, .. } = event {
                println!("worker {} exited: {status:?}", worker.pid);
            }
        })
        .run()
}
