#![no_main]
//! `cargo fuzz run -s none raft_wire`: see causeway_fuzz::targets::raft_wire for what is decoded and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::targets::raft_wire(data));
