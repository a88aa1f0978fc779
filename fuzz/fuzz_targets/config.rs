//! The user's config, an agent's config and the notify section (`dispatch_core::fuzzing::config`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::config(data));
