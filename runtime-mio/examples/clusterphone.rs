//! clusterphone's acknowledgements: a reply payload, a timeout, and an error
//! (not silence) when the worker dies before it acknowledges.
//!
//! Run: `cargo run --example clusterphone -p mob-mio` (it stops by itself).

use mob_mio::{App, Error, Event, Kingpin, Mobster, Request, Source, Target};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn worker(mut mob: Mobster) -> Result<(), Error> {
    // Acknowledged with a reply payload.
    mob.on_request("hello", |_mob, req| {
        req.respond(&"world").ok();
    });
    // Never acknowledged: the requester's timeout ends it.
    let ignored: Rc<RefCell<Vec<Request<Source>>>> = Rc::default();
    mob.on_request("ignore", move |_mob, req| ignored.borrow_mut().push(req));
    // The worker dies before acknowledging.
    mob.on_request("die", |_mob, _req| std::process::exit(1));
    mob.run()
}

/// Asks `name` of worker `pid`, prints how it ended, then asks the next.
fn ask(kingpin: &mut Kingpin, pid: u32, mut script: Vec<(&'static str, Duration)>) {
    if script.is_empty() {
        return kingpin.stop();
    }
    let (name, timeout) = script.remove(0);
    let started = kingpin.request(Target::Pid(pid), name, &()).and_then(|r| {
        r.timeout(timeout).then(move |kingpin, outcome| {
            match outcome {
                Ok(reply) => println!("{name}: acknowledged with {:?}", reply.decode::<String>().unwrap_or_default()),
                Err(e) => println!("{name}: {e}"),
            }
            ask(kingpin, pid, script);
        })
    });
    if let Err(e) = started {
        println!("{name}: not sent: {e}");
    }
}

fn main() -> std::process::ExitCode {
    App::new("clusterphone")
        .role("worker", 1, worker)
        .on_event(|kingpin, event| {
            if let Event::AppOnline = event {
                let pid = kingpin.health()[0].pid;
                let script = vec![
                    ("hello", Duration::from_secs(10)),
                    ("ignore", Duration::from_millis(500)),
                    ("die", Duration::from_secs(30)),
                ];
                ask(kingpin, pid, script);
            }
        })
        .run()
}
