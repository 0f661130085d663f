//! mob's messaging, as its README shows it: send to all, to all of a role,
//! to any one of a role, to one pid; a `require` proxy with a callback.
//!
//! Run: `cargo run --example mob_messages -p mob-mio` (it stops by itself).

use mob_mio::{App, Error, Event, Mobster, Source, Target};

fn back(mut mob: Mobster) -> Result<(), Error> {
    // Exported functions are what `require("back")` proxies call.
    mob.export("foo", |_mob, mut req| {
        let who: String = req.decode().unwrap_or_default();
        println!("Bar! My pid is {} (called by {who})", std::process::id());
        // The caller passed a callback: call it back, once.
        if let Some(cb) = req.callbacks.pop() {
            cb.invoke(&format!("foo done in {}", std::process::id())).ok();
        }
        req.ack().ok();
    })?;
    mob.on("hello", |_mob, msg| {
        let from = match msg.from {
            Source::Kingpin => "the kingpin".to_string(),
            Source::Worker { pid, .. } => format!("worker {pid}"),
        };
        println!("back {} got {:?} from {from}", std::process::id(), msg.decode::<String>().unwrap_or_default());
    });
    mob.run()
}

fn front(mut mob: Mobster) -> Result<(), Error> {
    mob.on("go", |mob, _msg| {
        let me = std::process::id();
        mob.send(Target::All { include_sender: false }, "hello", "to everyone").ok();
        mob.send(Target::Role("back".into()), "hello", "to every back worker").ok();
        mob.send(Target::Any("back".into()), "hello", "to any one back worker").ok();
        let back = mob.require("back");
        let call = back.call(mob, "foo", &format!("front {me}"));
        let started = call.and_then(|c| {
            c.callback(|mob, reply| {
                println!("front {} called back: {}", std::process::id(), reply.decode::<String>().unwrap_or_default());
                mob.send(Target::Kingpin, "finished", &()).ok();
            })
            .send()
        });
        if let Err(e) = started {
            eprintln!("call failed: {e}");
        }
    });
    mob.run()
}

fn main() -> std::process::ExitCode {
    let mut back_pids = Vec::new();
    App::new("mobmessages")
        .role("back", 3, back)
        .role("front", 1, front)
        .on_event(move |kingpin, event| match event {
            Event::WorkerReady(w) if &*w.role == "back" => back_pids.push(w.pid),
            Event::AppOnline => {
                // One pid, chosen by the kingpin's application.
                kingpin.send(Target::Pid(back_pids[0]), "hello", "to one pid").ok();
                kingpin.send(Target::Any("front".into()), "go", &()).ok();
            }
            Event::Message(m) if m.name == "finished" => kingpin.stop(),
            _ => {}
        })
        .run()
}
