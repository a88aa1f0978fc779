//! A budget as a person writes it, and a `budgets:` section (`dispatch_core::fuzzing::budget`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_core::fuzzing::budget(data));
