//! The `dispatch.v1` wire protocol shared by the coordinator, agent nodes and the CLI.
//!
//! Code is generated at build time from `dispatch/v1/dispatch.proto` (see `build.rs`);
//! conversions between wire and domain types live in [`convert`].

#[allow(unreachable_pub, clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("dispatch.v1");
}

/// The encoded `FileDescriptorSet` of `dispatch.v1` (what server reflection serves).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dispatch_descriptor.bin"));

pub mod codec;
pub mod convert;

pub use v1::*;

/// Peers one minor version apart (docs/operations.md, "Upgrades"): an older peer's message
/// reads with today's fields at their defaults, and a newer peer's fields and message kinds
/// are skipped, never an error.
#[cfg(test)]
mod compat {
    use super::v1;
    use prost::Message;

    /// `msg` with a field from the future appended: number 99 (varint 7) and 100 (bytes).
    fn with_future_fields(msg: &impl Message) -> Vec<u8> {
        let mut b = msg.encode_to_vec();
        b.extend_from_slice(&[0x98, 0x06, 0x07]);
        b.extend_from_slice(&[0xa2, 0x06, 0x03, b'n', b'e', b'w']);
        b
    }

    #[test]
    fn an_older_agents_heartbeat_and_exit_read_with_todays_fields_at_their_defaults() {
        // What an agent before `draining` and `drained` sends: field 1 only.
        let old = v1::Heartbeat {
            running: 3,
            draining: false,
        }
        .encode_to_vec();
        assert_eq!(old, [0x08, 0x03]);
        let hb = v1::Heartbeat::decode(old.as_slice()).unwrap();
        assert_eq!((hb.running, hb.draining), (3, false));
        let exit = v1::WorkerExited {
            exit_code: Some(0),
            done_marker: true,
            ..Default::default()
        };
        let back = v1::WorkerExited::decode(exit.encode_to_vec().as_slice()).unwrap();
        assert!(!back.drained && back.done_marker);
        // A Task from a coordinator before usage/fallback: no usage, no fallback note.
        let t = v1::Task {
            id: "t".into(),
            ..Default::default()
        };
        let back = v1::Task::decode(t.encode_to_vec().as_slice()).unwrap();
        assert!(back.usage.is_none() && back.fallback.is_empty() && back.activity.is_empty());
    }

    #[test]
    fn a_newer_peers_fields_and_event_kinds_are_skipped_not_refused() {
        let hb = v1::Heartbeat {
            running: 2,
            draining: true,
        };
        let back = v1::Heartbeat::decode(with_future_fields(&hb).as_slice()).unwrap();
        assert_eq!(back, hb);
        let task = v1::Task {
            id: "from-the-future".into(),
            attempt: 4,
            ..Default::default()
        };
        let back = v1::Task::decode(with_future_fields(&task).as_slice()).unwrap();
        assert_eq!((back.id.as_str(), back.attempt), ("from-the-future", 4));
        // An event whose kind this version does not know (oneof field 99): it decodes with no
        // kind, which the coordinator keeps as history and acknowledges.
        let ev = v1::TaskEvent {
            task_id: "t".into(),
            seq: 7,
            at_ms: 1,
            attempt: 1,
            kind: None,
        };
        let back = v1::TaskEvent::decode(with_future_fields(&ev).as_slice()).unwrap();
        assert_eq!((back.seq, back.kind.is_none()), (7, true));
        let msg = v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Event(ev)),
        };
        assert!(v1::AgentMessage::decode(with_future_fields(&msg).as_slice()).is_ok());
    }
}
