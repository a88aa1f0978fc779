//! plan.md as a worker may write it (`dispatch_core::fuzzing::plan`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::plan(data));
