//! The application the integration tests drive, on `mob-mio` (see
//! `mob_tests::test_app` for its roles and command protocol). The kingpin
//! is `test_app/kingpin.rs`, the same on both runtimes; the worker below is
//! written with `mob-mio`'s handlers.

use mob_mio::{Error, Mobster, Outcome, Request, Source, Target};
use mob_tests::test_app::{
    FdMixTally, Job, Tell, answer_sock_job, exit_if_asked, fdmix_send, inode, request_end, source,
};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use mob_mio as rt;
#[path = "../test_app/kingpin.rs"]
mod kingpin;

fn main() -> ExitCode {
    kingpin::main(worker)
}

fn report(mob: &mut Mobster, text: String) {
    mob.send(Target::Kingpin, "report", &text).ok();
}

/// Runs a command the kingpin told `mob` to run ([`Tell`]).
fn run_command(mob: &mut Mobster, line: &str) {
    match Tell::parse(line) {
        Tell::Send { to, name, text } => {
            if let Err(e) = mob.send(to, &name, &text) {
                report(mob, format!("send-error {e}"));
            }
        }
        Tell::Request { to, name, tag, timeout } => {
            let built = match to {
                Err(role) => mob.require(&role).call(mob, &name, &()),
                Ok(to) => mob.request(to, &name, &tag),
            };
            let started = built.and_then(|r| {
                r.timeout(timeout).then(move |mob, o: Outcome| {
                    let end = o.map(|reply| reply.decode::<String>().unwrap_or_default()).map_err(Ok);
                    report(mob, format!("reply {tag} {}", request_end(end)))
                })
            });
            if let Err(e) = started {
                report(mob, format!("request-error {e}"));
            }
        }
        Tell::FdMix { to, n } => {
            if let Err(e) = fdmix_send(n, |payload, fds| mob.send_raw(to.clone(), "_", "fdmix", payload, fds)) {
                report(mob, format!("send-error {e}"));
            }
        }
        Tell::Bad(line) => report(mob, format!("bad-command {line}")),
    }
}

fn worker(mut mob: Mobster) -> Result<(), Error> {
    exit_if_asked(mob.role());
    mob.on("boom", |_mob, _msg| panic!("boom in the handler"));
    mob.on("holdfd", |mob, msg| {
        // Reports which file the fd it got refers to.
        report(mob, format!("holdfd {}", inode(msg.fds.first())));
    });
    mob.on("writefd", |_mob, msg| mob_tests::test_app::write_byte(msg.fds.first()));
    let mut fdmix = FdMixTally::default();
    mob.on("fdmix", move |mob, msg| {
        if let Some(text) = fdmix.take(&msg.payload, &msg.fds) {
            report(mob, text);
        }
    });
    mob.on("orphans", |mob, msg| {
        let n = msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let pids: Vec<String> = mob_tests::orphans::make_orphans(n).iter().map(u32::to_string).collect();
        report(mob, format!("orphans {}", pids.join(" ")));
    });
    mob.on("emit", |mob, _msg| {
        mob_tests::emit_output();
        report(mob, "emitted".into());
    });
    mob.on("spew", |_mob, msg| {
        mob_tests::spew_stderr(msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(1));
    });
    mob.on("busy", |mob, _msg| {
        mob.busy().ok();
    });
    mob.on("ready", |mob, _msg| {
        mob.ready().ok();
    });
    let hoard: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    mob.on("alloc", move |_mob, msg| {
        let mb: usize = msg.decode::<String>().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        hoard.borrow_mut().push(vec![1u8; mb << 20]);
    });
    mob.on_job(|_mob, mut job| {
        let pid = std::process::id().to_string();
        match Job::parse(&job.decode::<String>().unwrap_or_default()) {
            Job::Sleep(delay) => {
                let responder = job.into_responder();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    responder.respond(&pid).ok();
                });
            }
            Job::Exit => std::process::exit(4),
            Job::Sock => {
                let pipe = answer_sock_job(std::mem::take(&mut job.fds));
                job.respond_raw(mob_proto::wire::encode_payload(&pid).unwrap_or_default(), pipe).ok();
            }
            Job::Pid => {
                job.respond(&pid).ok();
            }
        }
    });
    mob.export("whoami", |_mob, req| {
        req.respond(&std::process::id().to_string()).ok();
    })?;
    // After the exports: this runs the loop until the listener arrives.
    if mob.role().starts_with("listen") {
        mob_tests::answer_connections(mob.listener()?);
    }
    mob.on("ping", |mob, msg| {
        let text: String = msg.decode().unwrap_or_default();
        mob.send(Target::Kingpin, "pong", &text).ok();
    });
    for name in ["seq", "hello"] {
        mob.on(name, move |mob, msg| {
            let text: String = msg.decode().unwrap_or_default();
            report(mob, format!("{name} {text} from {}", source(&msg.from)));
        });
    }
    mob.on("do", |mob, msg| {
        let line: String = msg.decode().unwrap_or_default();
        run_command(mob, &line);
    });
    mob.on_request("echo", |_mob, req| {
        let text: String = req.decode().unwrap_or_default();
        req.respond(&format!("{text} from {}", std::process::id())).ok();
    });
    mob.on_request("callback", |_mob, mut req| {
        if let Some(callback) = req.callbacks.pop() {
            callback.invoke(&"called back".to_string()).ok();
        }
        req.ack().ok();
    });
    mob.on_request("exit", |_mob, _req| std::process::exit(3));
    let kept: Rc<RefCell<Vec<Request<Source>>>> = Rc::default();
    mob.on_request("never", move |_mob, req| kept.borrow_mut().push(req));
    mob.on_request("drop", |_mob, req| drop(req));
    mob.run()
}
