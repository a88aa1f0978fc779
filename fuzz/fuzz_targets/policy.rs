//! A worker's tool call judged by a tool policy (`dispatch_core::fuzzing::policy`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::policy(data));
