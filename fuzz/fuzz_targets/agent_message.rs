//! A node's message off the wire: Hello and event decoding and checks
//! (`dispatch_coordinator::fuzzing::agent_message`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dispatch_coordinator::fuzzing::agent_message(data));
