//! mob's `main.js`, `background-worker.js` and a front role, in one binary.
//!
//! The kingpin keeps 4 `back` workers and 2 `front` workers alive. Each
//! `front` worker, once up, asks "any one `back` worker" to `foo` a few
//! times; the kingpin picks a different back worker each time. Kill any
//! worker (`kill -9 PID`) and watch the kingpin revive it; Ctrl-C stops the
//! whole family.
//!
//! Run: `cargo run --example myapp -p mob-mio`

use mob_mio::{App, Error, Event, Mobster, Target};

fn back(mut mob: Mobster) -> Result<(), Error> {
    println!("Background worker {} running.", std::process::id());
    mob.on("foo", |_mob, msg| {
        let from: u32 = msg.decode().unwrap_or(0);
        println!("Bar! My pid is {} (asked by front worker {from})", std::process::id());
    });
    mob.run()
}

fn front(mut mob: Mobster) -> Result<(), Error> {
    println!("Front worker {} running.", std::process::id());
    for _ in 0..4 {
        mob.send(Target::Any("back".into()), "foo", &std::process::id())?;
    }
    mob.run()
}

fn main() -> std::process::ExitCode {
    App::new("myapp")
        .role("back", 4, back)
        .role("front", 2, front)
        .on_event(|_kingpin, event| match event {
            Event::WorkerUp(w) => println!("kingpin: {}#{} is up (pid {})", w.role, w.slot, w.pid),
            Event::WorkerExited { worker: w, status, .. } => {
                println!("kingpin: {}#{} (pid {}) exited: {status:?}; reviving", w.role, w.slot, w.pid)
            }
            Event::LinkClosed(w, reason) => {
                println!("kingpin: {}#{} link closed: {reason}", w.role, w.slot)
            }
            _ => {}
        })
        .run()
}
