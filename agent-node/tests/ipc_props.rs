//! Whatever a worker leaves in its task directory — any names, any bytes, links, directories —
//! the node's reading of it never panics, never follows a link, and reports each question
//! once: the fuzz target's code (`dispatch_agent::fuzzing::ipc`, also run by `fuzz/`) as a
//! property test. `DISPATCH_PROPTEST_CASES` sets the cases (default 64: each case writes files).

use dispatch_agent::fuzzing::{Entry, ipc};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("DISPATCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(64, |n| (n / 4).max(1))
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..12, prop::sample::select(vec!["question", "done", "answer", "question.tmp", ""]))
            .prop_map(|(n, ext)| if ext.is_empty() { format!("{n:03}") } else { format!("{n:03}.{ext}") }),
        1 => "[0-9]{1,6}\\.question",
        1 => "[^/\\x00]{1,12}",
        1 => Just(".done".to_string()),
        1 => Just("4294967296.question".to_string()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Entry::File),
        1 => (0usize..3).prop_map(|k| Entry::File(vec![b'q'; 70_000 * k])),
        1 => prop::sample::select(vec!["/etc/passwd", "../plan.md", "001.question", "/nonexistent"])
            .prop_map(|t| Entry::Link(t.to_string())),
        1 => Just(Entry::Dir),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_hostile_task_directory(
        plan in prop::collection::vec(any::<u8>(), 0..400),
        entries in prop::collection::vec((name(), entry()), 0..10),
    ) {
        let d = tempfile::tempdir().unwrap();
        ipc(d.path(), &plan, &entries);
    }
}
