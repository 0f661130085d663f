//! The line mux: workers' output cut into prefixed lines, bytes unchanged,
//! memory bounded, nothing dropped.

use mob_proto::lines::{ATOMIC_WRITE, LineLimits, LineMux, worker_prefix};
use proptest::prelude::*;

/// Writes everything the mux offers; the bytes in write order.
fn drain(mux: &mut LineMux) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = mux.peek() {
        out.extend_from_slice(chunk);
        let n = chunk.len();
        mux.advance(n);
    }
    out
}

fn small() -> LineLimits {
    LineLimits { max_line: 8, per_source: 16, queued: 32 }
}

#[test]
fn complete_lines_get_the_prefix_and_a_partial_line_waits() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(7, b"[a#0 1] ");
    mux.handle_read(7, b"one\ntw");
    assert_eq!(drain(&mut mux), b"[a#0 1] one\n");
    mux.handle_read(7, b"o\nthree");
    assert_eq!(drain(&mut mux), b"[a#0 1] two\n");
    assert_eq!(mux.buffered(), 5, "\"three\" waits for its end");
}

#[test]
fn the_last_partial_line_is_flushed_with_its_prefix_at_eof() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(1, b"> ");
    mux.handle_read(1, b"done\nno newline");
    mux.handle_eof(1);
    assert_eq!(drain(&mut mux), b"> done\n> no newline\n");
    assert!(mux.is_empty());
    assert!(!mux.contains(1), "an ended source is forgotten once flushed");
}

#[test]
fn an_empty_source_that_ends_adds_nothing() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(1, b"> ");
    mux.handle_read(1, b"x\n");
    mux.handle_eof(1);
    assert_eq!(drain(&mut mux), b"> x\n");
}

#[test]
fn binary_bytes_pass_through_unchanged() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(1, b"P ");
    let bytes: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n').collect();
    let mut input = bytes.clone();
    input.push(b'\n');
    input.extend_from_slice(&[0xff, 0xfe, b'\r', 0]);
    mux.handle_read(1, &input);
    mux.handle_eof(1);
    let mut expected = b"P ".to_vec();
    expected.extend_from_slice(&bytes);
    expected.extend_from_slice(b"\nP \xff\xfe\r\0\n");
    assert_eq!(drain(&mut mux), expected);
}

#[test]
fn a_line_longer_than_the_bound_is_cut_into_prefixed_pieces() {
    let mut mux = LineMux::new(small());
    mux.add(1, b"> ");
    mux.handle_read(1, b"abcdefghij\n");
    assert_eq!(drain(&mut mux), b"> abcdefgh\n> ij\n");
}

#[test]
fn a_long_line_is_cut_even_before_its_newline_arrives() {
    let mut mux = LineMux::new(small());
    mux.add(1, b"> ");
    mux.handle_read(1, b"0123456789");
    assert_eq!(drain(&mut mux), b"> 01234567\n");
    assert_eq!(mux.buffered(), 2);
}

#[test]
fn a_full_source_has_no_space_until_the_destination_takes_lines() {
    let limits = LineLimits { max_line: 4, per_source: 8, queued: 8 };
    let mut mux = LineMux::new(limits);
    mux.add(1, b"");
    assert_eq!(mux.space(1), 8);
    // No newline: pieces of max_line bytes are cut and queued up to the bound.
    mux.handle_read(1, b"aaaabbbb");
    assert_eq!(mux.queued(), 10, "two pieces of 4 + newline: the queue is full");
    assert_eq!(mux.space(1), 8, "both pieces left the source");
    mux.handle_read(1, b"cccccccc");
    assert_eq!(mux.space(1), 0, "the queue is full, so the source keeps its bytes: stop reading");
    assert_eq!(mux.buffered(), 18);
    let first = mux.peek().unwrap().len();
    mux.advance(first);
    assert!(mux.space(1) > 0, "room again once the destination took lines");
    assert_eq!(drain(&mut mux), b"cccc\ncccc\n");
}

#[test]
fn back_pressure_without_loss() {
    let limits = LineLimits { max_line: 4, per_source: 8, queued: 8 };
    let mut mux = LineMux::new(limits);
    mux.add(1, b"");
    let mut fed = 0;
    // A source that writes as long as it may: it stops when space is 0.
    let input = b"x\n".repeat(100);
    while fed < input.len() {
        let n = mux.space(1).min(input.len() - fed);
        if n == 0 {
            break;
        }
        mux.handle_read(1, &input[fed..fed + n]);
        fed += n;
    }
    assert!(fed < input.len(), "the writer was held back");
    assert!(mux.buffered() <= 8 + 4 + 1 + 8, "bounded: {}", mux.buffered());
    // The destination reads: everything arrives, in order, once.
    let mut out = drain(&mut mux);
    while fed < input.len() {
        let n = mux.space(1).min(input.len() - fed);
        assert!(n > 0, "space comes back after the queue drains");
        mux.handle_read(1, &input[fed..fed + n]);
        fed += n;
        out.extend(drain(&mut mux));
    }
    assert_eq!(out, input);
}

#[test]
fn sources_take_turns_and_their_lines_never_mix() {
    let mut mux = LineMux::new(LineLimits { max_line: 64, per_source: 64, queued: 4 });
    for (id, prefix) in [(1, b"A "), (2, b"B "), (3, b"C ")] {
        mux.add(id, prefix);
    }
    // C fills the queue; A and B have lines waiting, and halves of lines.
    mux.handle_read(3, b"c\n");
    mux.handle_read(1, b"a1\na2\na3\nhalf");
    mux.handle_read(2, b"b1\nb2\nb3\nother half");
    let text = String::from_utf8(drain(&mut mux)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["C c", "A a1", "B b1", "A a2", "B b2", "A a3", "B b3"]);
    mux.handle_eof(2);
    mux.handle_eof(1);
    assert_eq!(drain(&mut mux), b"B other half\nA half\n", "each flushed when it ends");
}

#[test]
fn peek_offers_whole_lines_of_at_most_an_atomic_write() {
    let mut mux = LineMux::new(LineLimits { max_line: 16 << 10, per_source: 64 << 10, queued: 64 << 10 });
    mux.add(1, b"");
    let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
    for _ in 0..100 {
        mux.handle_read(1, &line);
    }
    let chunk = mux.peek().unwrap();
    assert!(chunk.len() <= ATOMIC_WRITE);
    assert_eq!(chunk.len() % 100, 0, "whole lines");
    let n = chunk.len();
    mux.advance(n);
    // A line longer than an atomic write goes alone.
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(1, b"");
    let long = [b'y'; 5000].iter().chain(b"\nz\n").copied().collect::<Vec<u8>>();
    mux.handle_read(1, &long);
    assert_eq!(mux.peek().unwrap().len(), 5001);
}

#[test]
fn partial_writes_resume_where_they_stopped() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.add(1, b"> ");
    mux.handle_read(1, b"hello\nworld\n");
    let mut out = Vec::new();
    while let Some(chunk) = mux.peek() {
        out.push(chunk[0]);
        mux.advance(1);
    }
    assert_eq!(out, b"> hello\n> world\n");
}

#[test]
fn unknown_or_ended_sources_are_ignored() {
    let mut mux = LineMux::new(LineLimits::default());
    mux.handle_read(9, b"lost?\n");
    assert_eq!(mux.space(9), 0);
    assert!(mux.peek().is_none());
    mux.add(1, b"");
    mux.handle_eof(1);
    mux.handle_read(1, b"late\n");
    assert!(mux.is_empty());
}

#[test]
fn the_worker_prefix_names_role_slot_and_pid() {
    assert_eq!(worker_prefix("web", 0, 42), b"[web#0 42] ");
}

proptest! {
    /// Whatever the sources write and however the reads and writes are cut,
    /// every source's bytes arrive in order, unchanged, each line once with
    /// its prefix, and memory stays within the documented bound.
    #[test]
    fn every_byte_arrives_once_in_order(
        inputs in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300), 1..4),
        cuts in proptest::collection::vec(1usize..50, 1..20),
        max_line in 1usize..40,
        queued in 1usize..64,
    ) {
        let limits = LineLimits { max_line, per_source: max_line + 7, queued };
        let mut mux = LineMux::new(limits);
        let prefixes: Vec<Vec<u8>> = (0..inputs.len()).map(|i| format!("<{i}>").into_bytes()).collect();
        for (i, p) in prefixes.iter().enumerate() {
            mux.add(i as u64, p);
        }
        let mut fed = vec![0usize; inputs.len()];
        let mut written = Vec::new();
        let mut cut = cuts.iter().cycle();
        let bound = queued + max_line + 3 + 1 + inputs.len() * (max_line + 7);
        loop {
            let mut progress = false;
            for (i, input) in inputs.iter().enumerate() {
                let n = mux.space(i as u64).min(input.len() - fed[i]).min(*cut.next().unwrap());
                if n > 0 {
                    mux.handle_read(i as u64, &input[fed[i]..fed[i] + n]);
                    fed[i] += n;
                    progress = true;
                } else if fed[i] == input.len() && mux.contains(i as u64) && mux.space(i as u64) > 0 {
                    mux.handle_eof(i as u64);
                    progress = true;
                }
                prop_assert!(mux.buffered() <= bound);
            }
            if let Some(chunk) = mux.peek() {
                let n = chunk.len().min(*cut.next().unwrap());
                written.extend_from_slice(&chunk[..n]);
                mux.advance(n);
                progress = true;
            }
            if !progress {
                break;
            }
        }
        for i in 0..inputs.len() {
            if mux.contains(i as u64) {
                mux.handle_eof(i as u64);
            }
        }
        written.extend(drain(&mut mux));
        prop_assert!(mux.is_empty());
        // Split the output back into lines per source: each source's lines,
        // without prefixes and with the added newlines removed, are its input.
        let mut got = vec![Vec::new(); inputs.len()];
        for line in written.split_inclusive(|&b| b == b'\n') {
            let (i, p) = prefixes.iter().enumerate().find(|(_, p)| line.starts_with(p)).expect("every line has a prefix");
            got[i].push(line[p.len()..].to_vec());
        }
        for (i, input) in inputs.iter().enumerate() {
            // Rebuild: a piece that ends the input or was cut at max_line got
            // a newline added; others carried their own.
            let mut rebuilt = Vec::new();
            let mut rest: &[u8] = input;
            for piece in &got[i] {
                let body = &piece[..piece.len() - 1];
                prop_assert!(rest.starts_with(body));
                rest = &rest[body.len()..];
                rebuilt.extend_from_slice(body);
                if rest.first() == Some(&b'\n') && body.len() < max_line {
                    rebuilt.push(b'\n');
                    rest = &rest[1..];
                }
            }
            prop_assert_eq!(&rebuilt, input);
        }
    }
}
