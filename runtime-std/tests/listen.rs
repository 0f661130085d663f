//! Shared listeners and broadcast with real processes. This test binary is
//! the kingpin and, re-executed by it, each of its workers (so it runs
//! without the libtest harness).
//!
//! Checked here: in [`ListenMode::Shared`] both workers of a role accept
//! connections on the one TCP socket the kingpin bound, and a message that
//! arrives while a worker waits for the listener is still received after;
//! in [`ListenMode::Distributed`] the kingpin's connections reach both
//! workers as [`Incoming::Connection`]; [`Kingpin::broadcast`] gives every
//! worker of a role an fd to the same file.

use mob_std::{App, Error, Event, Incoming, Kingpin, ListenAddr, ListenMode, Listener, Mobster, Target};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Connections tried per role before giving up on seeing both workers.
const TRIES: usize = 200;

fn ino(fd: impl std::os::fd::AsFd) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat").st_ino as u64
}

/// What every worker does after its start: answer pings, report the inode
/// of broadcast files, serve handed connections.
fn serve(mob: Mobster) -> Result<(), Error> {
    let pid = std::process::id();
    loop {
        match mob.recv() {
            Ok(Incoming::Stop(_)) | Err(Error::Closed(_)) => return Ok(()),
            Err(e) => return Err(e),
            Ok(Incoming::Message(msg)) if msg.name == "ping" => mob.send(Target::Kingpin, "pong", &pid)?,
            Ok(Incoming::Message(mut msg)) if msg.name == "file" => {
                let fd = msg.fds.pop().expect("the broadcast fd");
                mob.send(Target::Kingpin, "ino", &(pid, ino(&fd)))?;
            }
            Ok(Incoming::Connection(fd)) => {
                let mut conn = TcpStream::from(fd);
                conn.write_all(pid.to_string().as_bytes())?;
            }
            Ok(_) => {}
        }
    }
}

/// A worker of the shared role: accepts on the role's listener on a thread
/// of its own.
fn shared(mob: Mobster) -> Result<(), Error> {
    // The kingpin answers "hi" with "ping", which arrives while this worker
    // waits for its listener: it must still be received afterwards.
    mob.send(Target::Kingpin, "hi", &())?;
    std::thread::sleep(Duration::from_millis(300));
    let Listener::Tcp(listener) = mob.listener()? else { panic!("not a TCP listener") };
    // A second call gives another handle to the same socket.
    let again = mob.listener()?;
    assert_eq!(again.local_addr(), listener.local_addr().ok());
    let pid = std::process::id();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(pid.to_string().as_bytes());
        }
    });
    serve(mob)
}

/// Connects to `addr` until two different workers have answered.
fn both_answer(addr: SocketAddr) -> Result<HashSet<u32>, String> {
    let mut pids = HashSet::new();
    for _ in 0..TRIES {
        let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut text = String::new();
        conn.read_to_string(&mut text).map_err(|e| format!("read from {addr}: {e}"))?;
        pids.insert(text.parse::<u32>().map_err(|e| format!("{text:?}: {e}"))?);
        if pids.len() == 2 {
            return Ok(pids);
        }
    }
    Err(format!("only {pids:?} answered on {addr} in {TRIES} connections"))
}

/// What the kingpin waits for before it stops the app.
#[derive(Default, Debug)]
struct Expect {
    pongs: HashSet<u32>,
    inos: HashMap<u32, u64>,
    file_ino: Option<u64>,
    broadcast_to: usize,
    shared_pids: HashSet<u32>,
    distributed_pids: HashSet<u32>,
    stopping: bool,
}

impl Expect {
    fn done(&self) -> bool {
        self.pongs.len() == 2 && self.inos.len() == 2 && self.shared_pids.len() == 2 && self.distributed_pids.len() == 2
    }
}

thread_local! {
    static EXPECT: RefCell<Option<Rc<RefCell<Expect>>>> = const { RefCell::new(None) };
}

/// Updates what has been seen, and stops the app once everything has.
fn record(k: &mut Kingpin, f: impl FnOnce(&mut Expect)) {
    let expect = EXPECT.with(|e| e.borrow().clone()).expect("the kingpin's expectations");
    let mut e = expect.borrow_mut();
    f(&mut e);
    if e.done() && !e.stopping {
        e.stopping = true;
        k.stop();
    }
}

/// Once every worker is up: broadcast a file to the shared role, and
/// connect to both roles from another thread.
fn online(k: &mut Kingpin) {
    let path = std::env::temp_dir().join(format!("mob-std-listen-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let file_ino = ino(&file);
    let sent = k.broadcast(Some("shared"), "_", "file", &[], vec![file.into()]);
    record(k, |e| {
        e.file_ino = Some(file_ino);
        e.broadcast_to = sent;
    });

    let shared = k.local_addr("shared").expect("the shared role's address");
    let distributed = k.local_addr("dist").expect("the distributed role's address");
    let handle = k.handle();
    std::thread::spawn(move || {
        let result = both_answer(shared).and_then(|s| Ok((s, both_answer(distributed)?)));
        match result {
            Ok((s, d)) => handle
                .with_kingpin(move |k| {
                    record(k, |e| {
                        e.shared_pids = s;
                        e.distributed_pids = d;
                    })
                })
                .unwrap(),
            Err(e) => {
                eprintln!("mob-std listen test: {e}");
                std::process::exit(1);
            }
        }
    });
}

fn main() -> ExitCode {
    let expect = Rc::new(RefCell::new(Expect::default()));
    if !App::is_worker() {
        EXPECT.with(|e| *e.borrow_mut() = Some(expect.clone()));
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            eprintln!("mob-std listen test: no clean stop within 60 s");
            std::process::exit(2);
        });
    }
    let local = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
    let code = App::new("stdlisten")
        .role("shared", 2, shared)
        .role("dist", 2, serve)
        .listen("shared", local.clone(), ListenMode::Shared)
        .listen("dist", local, ListenMode::Distributed)
        .configure(|c| c.shutdown_grace = Duration::from_secs(5))
        .on_event(|k, event| match event {
            Event::AppOnline => online(k),
            Event::Message(m) if m.name == "hi" => k.send(Target::Pid(m.from.pid), "ping", &()).unwrap(),
            Event::Message(m) if m.name == "pong" => record(k, |e| {
                e.pongs.insert(m.decode().unwrap());
            }),
            Event::Message(m) if m.name == "ino" => record(k, |e| {
                let (pid, ino) = m.decode().unwrap();
                e.inos.insert(pid, ino);
            }),
            Event::WorkerExited { worker, status, .. } => {
                let stopping = EXPECT.with(|e| e.borrow().as_ref().is_some_and(|e| e.borrow().stopping));
                assert!(stopping, "worker {} exited ({status:?}) before the stop", worker.pid);
            }
            _ => {}
        })
        .run();
    if !App::is_worker() {
        let e = expect.borrow();
        assert!(e.done(), "{e:?}");
        assert_eq!(e.broadcast_to, 2, "{e:?}");
        let file_ino = e.file_ino.unwrap();
        assert!(e.inos.values().all(|&i| i == file_ino), "{e:?}");
        assert_eq!(e.pongs, e.inos.keys().copied().collect(), "{e:?}");
        assert_eq!(e.pongs, e.shared_pids, "the shared role's workers");
        assert!(e.distributed_pids.is_disjoint(&e.shared_pids), "{e:?}");
        assert_eq!(code, ExitCode::SUCCESS, "the soft kill was not clean");
        println!("mob-std listen test: ok");
    }
    code
}
