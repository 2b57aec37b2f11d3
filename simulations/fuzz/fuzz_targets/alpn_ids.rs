#![no_main]
//! `cargo fuzz run -s none alpn_ids`: see causeway_fuzz::targets::alpn_ids for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::alpn_ids(data));
