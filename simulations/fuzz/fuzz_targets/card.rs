#![no_main]
//! `cargo fuzz run -s none card`: see causeway_fuzz::targets::card for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::card(data));
