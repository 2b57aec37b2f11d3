#![no_main]
//! `cargo fuzz run -s none catalog_command`: see causeway_fuzz::targets::catalog_command for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::catalog_command(data));
