#![no_main]
//! `cargo fuzz run -s none fed_messages`: see causeway_fuzz::targets::fed_messages for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::fed_messages(data));
