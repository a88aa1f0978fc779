//! A worker's structured output stream (`dispatch_core::fuzzing::worker_stream`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::worker_stream(data));
