//! mob's own example, for real: `main.js` + `http-server.js` +
//! `background-worker.js` in one binary.
//!
//! The kingpin ("myapp") keeps 4 `back` workers exporting `foo` and 2
//! `front` workers serving HTTP on 127.0.0.1:1337 (`MYAPP_PORT` changes the
//! port; 0 picks a free one) from one listening socket the kingpin binds and
//! shares. Every request answers "Hello World" and calls `back.foo()` on any
//! one back worker. Kill any worker (`kill -9 PID`) and the port keeps
//! answering while the kingpin revives it; Ctrl-C stops the family.
//!
//! Run: `cargo run --example myapp -p mob-mio`, then `curl 127.0.0.1:1337`.
//! With `MYAPP_MODE=distributed` the kingpin accepts each connection itself
//! and hands it to the least loaded front worker instead.
//!
//! Socket-activated (a `.socket` unit with `FileDescriptorName=web`, or
//! `systemd-socket-activate -l 127.0.0.1:1337 --fdname=web myapp`), the
//! kingpin takes the socket systemd passed instead of binding one.
//!
//! The HTTP side is a few lines of std on purpose: mob hands the worker a
//! plain `std::net::TcpListener`, so a real application can give it to the
//! server library it already uses (hyper, axum, tiny_http...) instead, and
//! mob itself stays free of an HTTP dependency.

use mob_mio::{App, Error, Event, ListenAddr, ListenMode, Listener, Mobster};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn background_worker(mut mob: Mobster) -> Result<(), Error> {
    println!("Background worker {} running.", std::process::id());
    mob.export("foo", |_mob, req| {
        println!("Bar! My pid is {}", std::process::id());
        req.ack().ok();
    })?;
    mob.run()
}

fn http_server(mut mob: Mobster) -> Result<(), Error> {
    let handle = mob.handle();
    let served = move |conn: TcpStream| {
        if serve(conn).is_ok() {
            println!("Server {} served an http request.", std::process::id());
            // Call foo on any one of the 4 back workers; the proxy balances,
            // so the next call may reach another one.
            if let Ok(call) = handle.call("back", "foo", &()) {
                call.then(|_| {}).ok();
            }
        }
    };
    if distributed() {
        // The kingpin accepts and hands each connection to one worker.
        mob.on_connection(move |_mob, fd| served(TcpStream::from(fd)));
    } else {
        // Every front worker accepts on the socket the kingpin shares.
        let Listener::Tcp(listener) = mob.listener()? else {
            return Err(Error::NotAWorker("the front role listens on TCP"));
        };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                served(conn);
            }
        });
    }
    println!("Server {} running at http://{}/", std::process::id(), mob_addr());
    mob.run()
}

/// `MYAPP_MODE=distributed`: the kingpin accepts and distributes.
fn distributed() -> bool {
    std::env::var("MYAPP_MODE").is_ok_and(|m| m == "distributed")
}

/// Answers one HTTP/1.x request with "Hello World".
fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let body = "Hello World\n";
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn mob_addr() -> String {
    format!("127.0.0.1:{}", std::env::var("MYAPP_PORT").unwrap_or_else(|_| "1337".into()))
}

fn main() -> std::process::ExitCode {
    let addr = mob_addr().parse().expect("a socket address");
    App::new("myapp")
        .role("back", 4, background_worker)
        .role("front", 2, http_server)
        .listen(
            "front",
            ListenAddr::systemd_or("web", ListenAddr::Tcp(addr)),
            if distributed() { ListenMode::Distributed } else { ListenMode::Shared },
        )
        .on_start(|kingpin| {
            if let Some(addr) = kingpin.local_addr("front") {
                println!("Kingpin {}: myapp listening on http://{addr}/", std::process::id());
            }
        })
        .on_event(|_kingpin, event| match event {
            Event::WorkerExited { worker: w, status, .. } => {
                println!("Kingpin: {}#{} (pid {}) exited: {status:?}", w.role, w.slot, w.pid)
            }
            Event::AppOnline => println!("Kingpin: all workers ready"),
            _ => {}
        })
        .run()
}
