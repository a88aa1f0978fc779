//! What a node sends, off the wire, never panics the coordinator: the fuzz target's code
//! (`dispatch_coordinator::fuzzing::agent_message`, also run by `fuzz/`) on arbitrary bytes and
//! on well-formed messages with hostile fields. `DISPATCH_PROPTEST_CASES` sets the cases.

use dispatch_coordinator::fuzzing::agent_message;
use dispatch_proto::v1;
use proptest::prelude::*;
use prost::Message;

fn cases() -> u32 {
    std::env::var("DISPATCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        "[^\\x00]{0,40}",
        Just(String::new()),
        (1usize..3).prop_map(|k| "x".repeat(k * 70_000)),
    ]
}

prop_compose! {
    fn hello()(
        name in text(),
        capacity in prop_oneof![Just(0u32), 1u32..8, Just(u32::MAX), any::<u32>()],
        backends in prop::collection::vec((text(), text(), prop::collection::vec(text(), 0..3)), 0..4),
        labels in prop::collection::btree_map(text(), text(), 0..3),
        tasks in prop::collection::vec((text(), any::<u64>()), 0..4),
    ) -> v1::AgentMessage {
        v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
                name,
                labels: labels.into_iter().collect(),
                backends: backends
                    .into_iter()
                    .map(|(name, command, models)| v1::Backend { name, command, models, ..Default::default() })
                    .collect(),
                capacity,
                version: String::new(),
                hostname: String::new(),
                tasks: tasks
                    .into_iter()
                    .map(|(task_id, seq)| v1::TaskCursor { task_id, seq, running: false })
                    .collect(),
                ephemeral: capacity % 2 == 0,
            })),
        }
    }
}

prop_compose! {
    fn event()(
        task_id in text(),
        seq in any::<u64>(),
        kind in 0u8..7,
        body in text(),
        n in any::<u32>(),
    ) -> v1::AgentMessage {
        use v1::task_event::Kind as K;
        let kind = match kind {
            0 => K::Plan(v1::PlanUpdated { markdown: body }),
            1 => K::Log(v1::LogChunk { data: body.into_bytes() }),
            2 => K::Question(v1::QuestionAsked { seq: n, text: body }),
            3 => K::AnswerDelivered(v1::AnswerDelivered { seq: n }),
            4 => K::StartFailed(v1::WorkerStartFailed {
                error: body.clone(),
                cli: Some(v1::CliFailure { trouble: body.clone(), message: body, status: n, resets_at_ms: i64::from(n) - 7, retries: n, stopped: n % 2 == 0 }),
            }),
            5 => K::Exited(v1::WorkerExited {
                markdown: body.clone(),
                cli: Some(v1::CliFailure { trouble: "usage_limit".into(), message: body, status: n, ..Default::default() }),
                ..Default::default()
            }),
            _ => K::Started(v1::WorkerStarted { pid: n, command: body, ..Default::default() }),
        };
        v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Event(v1::TaskEvent {
                task_id,
                seq,
                at_ms: 0,
                attempt: n,
                kind: Some(kind),
            })),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..2048)) {
        agent_message(&b);
    }

    #[test]
    fn hostile_hellos(m in hello()) {
        agent_message(&m.encode_to_vec());
    }

    #[test]
    fn hostile_events(m in event()) {
        agent_message(&m.encode_to_vec());
    }

    #[test]
    fn a_cut_or_flipped_message(m in prop_oneof![hello(), event()], cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let mut b = m.encode_to_vec();
        if !b.is_empty() {
            let i = flip.index(b.len());
            b[i] ^= 0x5a;
            let j = cut.index(b.len());
            b.truncate(j);
        }
        agent_message(&b);
    }
}
