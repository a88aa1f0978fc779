//! Entry points for fuzzing (`fuzz/`) and for the property tests that run the same code in CI:
//! what a node sends, as bytes off the wire, must never panic the coordinator.

use crate::convert::{event_from_proto, hello_from_proto};
use crate::domain::events::over_limit;
use crate::domain::sessions::validate_hello;
use dispatch_proto::v1;
use prost::Message;

/// One `AgentMessage` as the coordinator decodes and checks it: a Hello is converted and
/// validated, an event converted and held to the limits, a Hello with more than a few
/// thousand backends or cursors refused.
pub fn agent_message(data: &[u8]) {
    let Ok(m) = v1::AgentMessage::decode(data) else {
        return;
    };
    match m.kind {
        Some(v1::agent_message::Kind::Hello(h)) => {
            let hello = hello_from_proto(h);
            if validate_hello(&hello).is_ok() {
                assert!(!hello.node.name.is_empty());
                assert!(hello.node.capacity >= 1);
            }
        }
        Some(v1::agent_message::Kind::Event(ev)) => {
            if let Ok(e) = event_from_proto(ev) {
                let _ = over_limit(&e.kind);
            }
        }
        _ => {}
    }
}
