//! mob-std's own API with real processes. This test binary is the kingpin
//! and, re-executed by it, each of its workers (so it runs without the
//! libtest harness). The kingpin drives every check from `on_start`, waiting
//! for requests and jobs on its own thread, then stops the app once the
//! events it expects have come; any failed check panics, which fails the
//! test.
//!
//! Checked here: waits on the kingpin's thread and on application threads;
//! exported functions; fds both ways; callbacks; jobs; `then` closures;
//! [`Error::TooLate`] and [`Error::Deadlock`]; both sides flooding each other
//! at once without deadlock; `pending()` figures; a clean soft kill.

use mob_std::{App, Error, Event, Incoming, Kingpin, Mobster, RequestError, SendError, Target};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

const RPC: &str = "mob.rpc";
/// Messages each side sends the other at once.
const FLOOD: usize = 100;
const BLOB: usize = 64 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn worker(mut mob: Mobster) -> Result<(), Error> {
    mob.export("add")?;
    let mut blobs = 0;
    let mut kept = Vec::new();
    loop {
        let incoming = match mob.recv() {
            Ok(incoming) => incoming,
            Err(Error::Closed(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match incoming {
            Incoming::Stop(_) => {
                // Nothing may be in flight to a worker asked to stop.
                assert_eq!(mob.pending(), (0, 0, 0));
                return Ok(());
            }
            Incoming::Message(msg) if msg.name == "blob" => {
                assert_eq!(msg.payload.len(), BLOB);
                blobs += 1;
                if blobs == FLOOD {
                    mob.send(Target::Kingpin, "blobs", &blobs)?;
                }
            }
            Incoming::Message(_) | Incoming::Connection(_) => {}
            Incoming::Request(job) if job.is_job() => {
                let text: String = job.decode()?;
                job.respond(&format!("{text} done"))?;
            }
            Incoming::Request(mut req) => match req.name.as_str() {
                "add" => {
                    assert_eq!(req.ns, RPC);
                    let (a, b): (u32, u32) = req.decode()?;
                    req.respond(&(a + b))?;
                }
                "echo" => {
                    let text: String = req.decode()?;
                    req.respond(&format!("{text} from {}", std::process::id()))?;
                }
                // The fds come back with the reply.
                "fd" => {
                    let fds = std::mem::take(&mut req.fds);
                    req.respond_raw(b"fds".to_vec(), fds)?;
                }
                "callback" => {
                    let callback = req.callbacks.pop().expect("a callback");
                    callback.invoke(&"called back".to_string())?;
                    req.ack()?;
                }
                "toolate" => {
                    let late = mob.export("late");
                    req.respond(&matches!(late, Err(Error::TooLate)))?;
                }
                "pending" => req.respond(&mob.pending())?,
                // A worker's request to another worker, waited for on the
                // application's thread.
                "ask" => {
                    let reply = mob.request(Target::Any("w".into()), "echo", &"asked".to_string())?.wait()?;
                    req.respond(&reply.decode::<String>()?)?;
                }
                // Waiting in a `then` closure (the mobster's driver thread)
                // would never end: it is refused.
                "deadlock" => {
                    let handle = mob.handle();
                    mob.request(Target::Any("w".into()), "echo", &"x".to_string())?.then(move |_| {
                        let inner = handle.request(Target::Kingpin, "nothing", &()).and_then(|r| r.wait());
                        let refused = matches!(inner, Err(Error::Deadlock));
                        handle.send(Target::Kingpin, "deadlock-refused", &refused).ok();
                    })?;
                    req.ack()?;
                }
                // Send FLOOD blobs to the kingpin from another thread, while
                // the kingpin floods us: neither side may block the other.
                "flood" => {
                    let handle = mob.handle();
                    std::thread::spawn(move || {
                        for _ in 0..FLOOD {
                            handle.send(Target::Kingpin, "blob", &vec![1u8; BLOB - 3]).unwrap();
                        }
                        req.respond(&"sent".to_string()).unwrap();
                    });
                }
                "never" => kept.push(req),
                _ => req.unhandled()?,
            },
        }
    }
}

/// What the kingpin waits for before it stops the app.
#[derive(Default, Debug)]
struct Expect {
    callback: Option<String>,
    then_ran: bool,
    thread_reply: Option<String>,
    deadlock_refused: Option<bool>,
    blobs_at_kingpin: usize,
    blobs_at_worker: Option<usize>,
    stopping: bool,
}

impl Expect {
    fn done(&self) -> bool {
        self.callback.is_some()
            && self.then_ran
            && self.thread_reply.is_some()
            && self.deadlock_refused.is_some()
            && self.blobs_at_kingpin == FLOOD
            && self.blobs_at_worker.is_some()
    }
}

fn checks(k: &mut Kingpin, expect: Rc<RefCell<Expect>>) {
    let any = || Target::Any("w".into());
    // A wait on the kingpin's thread (the worker is still starting: the
    // request waits for its handshake).
    let reply = k.request(any(), "echo", &"hello".to_string()).unwrap().timeout(WAIT).wait().unwrap();
    let text: String = reply.decode().unwrap();
    assert!(text.starts_with("hello from "), "{text}");
    let pid: u32 = text.rsplit(' ').next().unwrap().parse().unwrap();

    // Exported functions, and one that is not (refused at once: the
    // kingpin knows the exports from the handshake).
    let sum: u32 = k.request(any(), "add", &(2u32, 3u32)).unwrap().ns(RPC).wait().unwrap().decode().unwrap();
    assert_eq!(sum, 5);
    let refused = k.request(any(), "sub", &(2u32, 3u32)).unwrap().ns(RPC).wait();
    assert!(matches!(refused, Err(Error::Send(SendError::NotExported))), "{refused:?}");
    let unhandled = k.request(any(), "what", &()).unwrap().wait();
    assert!(matches!(unhandled, Err(Error::Request(RequestError::Unhandled))), "{unhandled:?}");

    // fds both ways: a pipe's read end goes to the worker and comes back.
    let (r, w) = nix::unistd::pipe().unwrap();
    std::fs::File::from(w).write_all(b"through").unwrap();
    let reply = k.request(Target::Pid(pid), "fd", &()).unwrap().fd(r).wait().unwrap();
    assert_eq!((&reply.payload[..], reply.fds.len()), (&b"fds"[..], 1));
    let mut got = String::new();
    std::fs::File::from(reply.fds.into_iter().next().unwrap()).read_to_string(&mut got).unwrap();
    assert_eq!(got, "through");

    // A callback: invoked once, its closure run on the kingpin's loop.
    let e = expect.clone();
    k.request(any(), "callback", &())
        .unwrap()
        .callback(move |_k, reply| e.borrow_mut().callback = reply.decode().ok())
        .wait()
        .unwrap();

    // Exports after the handshake are too late; `pending` counts the one
    // call being answered.
    assert!(k.request(any(), "toolate", &()).unwrap().wait().unwrap().decode::<bool>().unwrap());
    let pending: (usize, usize, usize) = k.request(any(), "pending", &()).unwrap().wait().unwrap().decode().unwrap();
    assert_eq!(pending, (0, 0, 1));

    // A worker waits for another worker, through the kingpin: both must be
    // up first, or the least loaded ready worker of the role could be the
    // asker itself, which is waiting and cannot answer. A request to each
    // worker's pid waits for its handshake.
    let pids: Vec<u32> = k.workers().map(|(w, _)| w.pid).collect();
    for pid in pids {
        k.request(Target::Pid(pid), "echo", &"up".to_string()).unwrap().timeout(WAIT).wait().unwrap();
    }
    let asked: String = k.request(any(), "ask", &()).unwrap().wait().unwrap().decode().unwrap();
    assert!(asked.starts_with("asked from "), "{asked}");

    // A job, waited for.
    let job = k.enqueue("w", &"job".to_string()).unwrap().timeout(WAIT).wait().unwrap();
    assert_eq!(job.decode::<String>().unwrap(), "job done");
    assert_eq!(job.worker.role.as_ref(), "w");

    // A request that ends at its timeout, on the kingpin's thread.
    let timed_out = k.request(any(), "never", &()).unwrap().timeout(Duration::from_millis(100)).wait();
    assert!(matches!(timed_out, Err(Error::Request(RequestError::TimedOut))), "{timed_out:?}");

    // A handle's wait on the kingpin's own thread is refused; from another
    // thread it works.
    let handle = k.handle();
    let refused = handle.request(any(), "echo", &"x".to_string()).unwrap().wait();
    assert!(matches!(refused, Err(Error::Deadlock)), "{refused:?}");
    std::thread::spawn(move || {
        let reply = handle.request(Target::Any("w".into()), "echo", &"thread".to_string()).unwrap().wait();
        let text: String = reply.unwrap().decode().unwrap();
        handle.with_kingpin(move |k| record(k, |e| e.thread_reply = Some(text))).unwrap();
    });

    // Waiting in a worker's `then` closure is refused.
    k.request(any(), "deadlock", &()).unwrap().wait().unwrap();

    // Both sides flood each other at once.
    for _ in 0..FLOOD {
        k.send(Target::Pid(pid), "blob", &vec![2u8; BLOB - 3]).unwrap();
    }
    let sent: String =
        k.request(Target::Pid(pid), "flood", &()).unwrap().timeout(WAIT).wait().unwrap().decode().unwrap();
    assert_eq!(sent, "sent");

    // A `then` closure runs on the loop, after `on_start`.
    let e = expect.clone();
    k.request(any(), "echo", &"later".to_string())
        .unwrap()
        .then(move |k, outcome| {
            assert!(outcome.is_ok());
            e.borrow_mut().then_ran = true;
            record(k, |_| {});
        })
        .unwrap();
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

fn main() -> ExitCode {
    let expect = Rc::new(RefCell::new(Expect::default()));
    if !App::is_worker() {
        EXPECT.with(|e| *e.borrow_mut() = Some(expect.clone()));
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            eprintln!("mob-std app test: no clean stop within 60 s");
            std::process::exit(2);
        });
    }
    let start = expect.clone();
    let code = App::new("stdtest")
        .role("w", 2, worker)
        .configure(|c| c.shutdown_grace = Duration::from_secs(5))
        .on_start(move |k| checks(k, start))
        .on_event(|k, event| match event {
            Event::Message(m) if m.name == "blob" => record(k, |e| e.blobs_at_kingpin += 1),
            Event::Message(m) if m.name == "blobs" => record(k, |e| e.blobs_at_worker = m.decode().ok()),
            Event::Message(m) if m.name == "deadlock-refused" => record(k, |e| e.deadlock_refused = m.decode().ok()),
            Event::Request(req) => drop(req), // answers "dropped"
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
        assert_eq!(e.callback.as_deref(), Some("called back"));
        assert!(e.thread_reply.as_deref().unwrap().starts_with("thread from "));
        assert_eq!(e.deadlock_refused, Some(true));
        assert_eq!(e.blobs_at_worker, Some(FLOOD));
        assert_eq!(code, ExitCode::SUCCESS, "the soft kill was not clean");
        println!("mob-std app test: ok");
    }
    code
}
