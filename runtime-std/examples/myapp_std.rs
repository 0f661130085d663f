//! mob's own example on `mob-std`: `mob-mio`'s `myapp` (the seed's
//! `main.js` + `http-server.js` + `background-worker.js`) with its workers
//! written as plain loops.
//!
//! The kingpin ("myapp") keeps 4 `back` workers exporting `foo` and 2
//! `front` workers serving HTTP on 127.0.0.1:1337 (`MYAPP_PORT` changes the
//! port; 0 picks a free one) from one listening socket the kingpin binds and
//! shares. Every request answers "Hello World" and calls `back.foo()` on any
//! one back worker. With `MYAPP_MODE=distributed` the kingpin accepts each
//! connection and hands it to the least loaded front worker, which receives
//! it as `Incoming::Connection`.
//!
//! Socket-activated (a `.socket` unit with `FileDescriptorName=web`, or
//! `systemd-socket-activate -l 127.0.0.1:1337 --fdname=web myapp_std`), the
//! kingpin takes the socket systemd passed instead of binding one.
//!
//! Run: `cargo run --example myapp_std -p mob-std`, then `curl 127.0.0.1:1337`.

use mob_std::{App, Error, Event, Incoming, ListenAddr, ListenMode, Listener, Mobster};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn background_worker(mut mob: Mobster) -> Result<(), Error> {
    println!("Background worker {} running.", std::process::id());
    mob.export("foo")?;
    loop {
        match mob.recv()? {
            Incoming::Request(req) if req.name == "foo" => {
                println!("Bar! My pid is {}", std::process::id());
                req.ack()?;
            }
            Incoming::Stop(_) => return Ok(()),
            _ => {}
        }
    }
}

fn http_server(mob: Mobster) -> Result<(), Error> {
    let handle = mob.handle();
    // Serves one connection, then calls foo on any one of the 4 back
    // workers (the kingpin balances, so the next call may reach another).
    let served = move |conn: TcpStream| {
        if answer(conn).is_ok() {
            println!("Server {} served an http request.", std::process::id());
            if let Ok(call) = handle.call("back", "foo", &()) {
                call.send().ok();
            }
        }
    };
    if std::env::var("MYAPP_MODE").is_ok_and(|m| m == "distributed") {
        println!("Server {} running at http://127.0.0.1:{}/", std::process::id(), port());
        // The kingpin accepts and hands each connection to one worker.
        loop {
            match mob.recv()? {
                Incoming::Connection(fd) => served(TcpStream::from(fd)),
                Incoming::Stop(_) => return Ok(()),
                _ => {}
            }
        }
    }
    // Every front worker accepts on the socket the kingpin shares, on a
    // thread of its own; this one answers the kingpin.
    let Listener::Tcp(listener) = mob.listener()? else {
        return Err(Error::NotAWorker("the front role listens on TCP"));
    };
    std::thread::spawn(move || listener.incoming().flatten().for_each(served));
    println!("Server {} running at http://127.0.0.1:{}/", std::process::id(), port());
    while !matches!(mob.recv()?, Incoming::Stop(_)) {}
    Ok(())
}

/// Reads one HTTP/1.x request's head and answers "Hello World".
fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    let mut head = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if head.read_line(&mut line)? <= 2 {
            break;
        }
    }
    let body = "Hello World\n";
    let headers = format!("Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close", body.len());
    write!(conn, "HTTP/1.1 200 OK\r\n{headers}\r\n\r\n{body}")
}

fn port() -> String {
    std::env::var("MYAPP_PORT").unwrap_or_else(|_| "1337".into())
}

fn main() -> std::process::ExitCode {
    let addr = format!("127.0.0.1:{}", port()).parse().expect("a socket address");
    let mode = match std::env::var("MYAPP_MODE") {
        Ok(m) if m == "distributed" => ListenMode::Distributed,
        _ => ListenMode::Shared,
    };
    App::new("myapp")
        .role("back", 4, background_worker)
        .role("front", 2, http_server)
        .listen("front", ListenAddr::systemd_or("web", ListenAddr::Tcp(addr)), mode)
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
