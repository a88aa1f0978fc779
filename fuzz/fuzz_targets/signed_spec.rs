//! A signed task spec and signature as a node receives them (`dispatch_core::fuzzing::signed_spec`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::signed_spec(data));
