#![no_main]

// See mob_fuzz::worker for the input format and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mob_fuzz::worker::run(data));
