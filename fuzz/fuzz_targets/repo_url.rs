//! A repository URL as a task names it (`dispatch_core::fuzzing::repo_url`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::repo_url(data));
