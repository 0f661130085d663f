#![no_main]

// See mob_fuzz::kingpin for the input format and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mob_fuzz::kingpin::run(data));
