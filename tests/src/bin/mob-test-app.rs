//! The application the integration tests drive. Its kingpin prints one line
//! per event on stdout: `WHAT ROLE SLOT PID [REST]`.
//!
//! Usage: `mob-test-app ROLE:COUNT[,ROLE:COUNT...]`. Roles:
//! - `echo`: answers the kingpin's `ping` with `pong` carrying the same text;
//! - `idle`: does nothing but stay connected;
//! - `garbage`: writes bytes that are not a mob frame, then idles.
//!
//! When a worker comes up, the kingpin sends it `ping` with its pid.

use mob_mio::{App, Error, Event, Mobster, Target};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

fn echo(mut mob: Mobster) -> Result<(), Error> {
    mob.on("ping", |mob, msg| {
        let text: String = msg.decode().unwrap_or_default();
        mob.send(Target::Kingpin, "pong", &text).ok();
    });
    mob.run()
}

fn idle(mob: Mobster) -> Result<(), Error> {
    mob.run()
}

fn garbage(_mob: Mobster) -> Result<(), Error> {
    // Write straight onto the channel, bypassing the protocol: a header that
    // claims a 4 GiB body.
    // SAFETY: a second handle to our channel, used for one write and leaked
    // (never closed) so the real one stays valid.
    let mut raw = std::mem::ManuallyDrop::new(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(mob_sys::CHANNEL_FD)
    }));
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0]).ok();
    loop {
        std::thread::park();
    }
}

fn say(what: &str, w: &mob_mio::WorkerInfo, rest: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} {} {} {} {rest}", w.role, w.slot, w.pid).ok();
    out.flush().ok();
}

fn main() -> ExitCode {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "echo:2".into());
    let mut app = App::new("testapp");
    for part in spec.split(',') {
        let (role, count) = part.split_once(':').unwrap_or((part, "1"));
        let entry: mob_mio::Entry = match role {
            "echo" => echo,
            "garbage" => garbage,
            _ => idle,
        };
        app = app.role(role, count.parse().unwrap_or(1), entry);
    }
    app.on_event(|kingpin, event| match event {
        Event::WorkerSpawned(w) => say("spawned", &w, ""),
        Event::WorkerUp(w) => {
            say("up", &w, "");
            kingpin
                .send(Target::Pid(w.pid), "ping", &w.pid.to_string())
                .ok();
        }
        Event::WorkerExited(w, status) => say("exited", &w, &format!("{status:?}")),
        Event::LinkClosed(w, reason) => say("closed", &w, &reason.to_string()),
        Event::Message(m) => {
            let text: String = m.decode().unwrap_or_default();
            say("message", &m.from, &format!("{} {text}", m.name));
        }
        Event::Undeliverable { from, to } => say("undeliverable", &from, &format!("{to:?}")),
    })
    .run()
}
