//! Replays the seed corpus through the harnesses, without libFuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("{target}: {}", path.display());
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn decoder_corpus() {
    replay("decoder", mob_fuzz::decoder::run);
}

#[test]
fn worker_corpus() {
    replay("worker", mob_fuzz::worker::run);
}

#[test]
fn kingpin_corpus() {
    replay("kingpin", mob_fuzz::kingpin::run);
}
