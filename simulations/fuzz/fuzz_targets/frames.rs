#![no_main]
//! `cargo fuzz run -s none frames`: see causeway_fuzz::targets::frames for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::frames(data));
