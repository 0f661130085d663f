//! Runs inputs through a harness without libFuzzer, for debugging:
//! `cargo run --example replay -- [--trace] TARGET FILE...` (in fuzz/).

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--trace") {
        args.next();
        mob_fuzz::TRACE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let target = args.next().expect("usage: replay TARGET FILE...");
    let run: fn(&[u8]) = match target.as_str() {
        "decoder" => mob_fuzz::decoder::run,
        "worker" => mob_fuzz::worker::run,
        "kingpin" => mob_fuzz::kingpin::run,
        other => panic!("unknown target {other}"),
    };
    for file in args {
        println!("{target}: {file}");
        run(&std::fs::read(&file).unwrap());
    }
}
