#![no_main]
//! `cargo fuzz run -s none join_messages`: see causeway_fuzz::targets::join_messages for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::join_messages(data));
