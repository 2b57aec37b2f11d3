#![no_main]
//! `cargo fuzz run -s none ticket`: see causeway_fuzz::targets::ticket for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::ticket(data));
