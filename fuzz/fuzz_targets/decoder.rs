#![no_main]

// See mob_fuzz::decoder for the input format and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mob_fuzz::decoder::run(data));
