//! The application the integration tests drive, on `mob-std` (see
//! `mob_tests::test_app` for its roles and command protocol). The kingpin
//! is `test_app/kingpin.rs`, the same on both runtimes; the worker below is
//! `mob-test-app`'s written as a `recv` loop.

use mob_std::{Error, Incoming, Mobster, Target};
use mob_tests::test_app::{
    FdMixTally, Job, Tell, answer_sock_job, exit_if_asked, fdmix_send, inode, request_end, source,
};
use std::process::ExitCode;

use mob_std as rt;
#[path = "../test_app/kingpin.rs"]
mod kingpin;

fn main() -> ExitCode {
    kingpin::main(worker)
}

fn report(mob: &Mobster, text: String) {
    mob.send(Target::Kingpin, "report", &text).ok();
}

/// Runs a command the kingpin told `mob` to run ([`Tell`]). Requests are
/// waited for in a thread of their own.
fn run_command(mob: &Mobster, line: &str) {
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
            match built {
                Ok(request) => {
                    let request = request.timeout(timeout);
                    let handle = mob.handle();
                    std::thread::spawn(move || {
                        let end = match request.wait() {
                            Ok(reply) => Ok(reply.decode::<String>().unwrap_or_default()),
                            Err(Error::Request(e)) => Err(Ok(e)),
                            Err(e) => Err(Err(e.to_string())),
                        };
                        handle.send(Target::Kingpin, "report", &format!("reply {tag} {}", request_end(end))).ok();
                    });
                }
                Err(e) => report(mob, format!("request-error {e}")),
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
    mob.export("whoami")?;
    if mob.role().starts_with("listen") {
        mob_tests::answer_connections(mob.listener()?);
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    let mut kept = Vec::new();
    let mut fdmix = FdMixTally::default();
    loop {
        let incoming = match mob.recv() {
            Ok(incoming) => incoming,
            Err(Error::Closed(_) | Error::Stopped) => return Ok(()),
            Err(e) => return Err(e),
        };
        match incoming {
            Incoming::Stop(_) => return Ok(()),
            Incoming::Message(msg) => {
                let text: String = msg.decode().unwrap_or_default();
                match msg.name.as_str() {
                    "boom" => panic!("boom in the handler"),
                    "holdfd" => report(&mob, format!("holdfd {}", inode(msg.fds.first()))),
                    "writefd" => mob_tests::test_app::write_byte(msg.fds.first()),
                    "fdmix" => {
                        if let Some(text) = fdmix.take(&msg.payload, &msg.fds) {
                            report(&mob, text);
                        }
                    }
                    "emit" => {
                        mob_tests::emit_output();
                        report(&mob, "emitted".into());
                    }
                    "spew" => mob_tests::spew_stderr(text.parse().unwrap_or(1)),
                    "busy" => {
                        mob.busy().ok();
                    }
                    "ready" => {
                        mob.ready().ok();
                    }
                    "alloc" => hoard.push(vec![1u8; text.parse::<usize>().unwrap_or(0) << 20]),
                    "ping" => {
                        mob.send(Target::Kingpin, "pong", &text).ok();
                    }
                    "seq" | "hello" => report(&mob, format!("{} {text} from {}", msg.name, source(&msg.from))),
                    "do" => run_command(&mob, &text),
                    "orphans" => {
                        let n = text.parse().unwrap_or(0);
                        let pids: Vec<String> =
                            mob_tests::orphans::make_orphans(n).iter().map(u32::to_string).collect();
                        report(&mob, format!("orphans {}", pids.join(" ")));
                    }
                    _ => {}
                }
            }
            Incoming::Request(mut job) if job.is_job() => {
                let pid = std::process::id().to_string();
                match Job::parse(&job.decode::<String>().unwrap_or_default()) {
                    Job::Sleep(delay) => {
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            job.respond(&pid).ok();
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
            }
            Incoming::Request(mut req) => match req.name.as_str() {
                "whoami" => {
                    req.respond(&std::process::id().to_string()).ok();
                }
                "echo" => {
                    let text: String = req.decode().unwrap_or_default();
                    req.respond(&format!("{text} from {}", std::process::id())).ok();
                }
                "callback" => {
                    if let Some(callback) = req.callbacks.pop() {
                        callback.invoke(&"called back".to_string()).ok();
                    }
                    req.ack().ok();
                }
                "exit" => std::process::exit(3),
                "never" => kept.push(req),
                "drop" => drop(req),
                _ => {
                    req.unhandled().ok();
                }
            },
            // This app listens on nothing.
            Incoming::Connection(_) => {}
        }
    }
}
