//! Structured worker output (issue 11): a node whose config turns on `structured:` for a
//! backend runs its CLI with the stream flags, reads the event stream into activity lines and
//! totals, and keeps the raw stream as the log. The CLIs are stubs that print the recorded
//! streams in tests/fixtures/ (written to match each CLI's documented format).

use dispatch_tests::{AgentOpts, Cluster, text};
use std::path::Path;

const CLAUDE_STREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/claude-stream-json.jsonl"
);
const CODEX_STREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/codex-exec-json.jsonl"
);

/// A stub CLI: refuses to run without `flags` (what `structured: true` must add), then prints
/// `stream`, checks every item of the plan and says it is done, as a worker would.
fn stub(dir: &Path, name: &str, flags: &str, stream: &str) {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\ncase \"$*\" in *'{flags}'*) ;; *) echo \"{name}: called without {flags}: $*\" >&2; exit 2;; esac\n\
             cat '{stream}'\n{}",
            dispatch_tests::FINISH_PLAN_SH
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn structured_node(c: &mut Cluster) {
    let bin = c.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    stub(
        &bin,
        "claude",
        "-p --dangerously-skip-permissions --output-format stream-json --verbose",
        CLAUDE_STREAM,
    );
    stub(&bin, "codex", "--json", CODEX_STREAM);
    let cfg = c.dir.path().join("box.yaml");
    std::fs::write(
        &cfg,
        "backends:\n  claude: { structured: true }\n  codex: { structured: true }\n",
    )
    .unwrap();
    let mut o = AgentOpts::new("box", 2);
    o.path_prefix = Some(bin);
    o.config = Some(cfg);
    o.args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    c.add_agent(o);
}

/// The node's `/metrics`.
fn agent_metrics(c: &Cluster) -> String {
    dispatch_tests::scrape_metrics(&c.dir.path().join("agent-box/metrics.addr"))
}

#[test]
fn a_claude_stream_becomes_activity_lines_and_totals_and_stays_the_log() {
    let mut c = Cluster::new();
    structured_node(&mut c);
    c.ok(&[
        "--backend",
        "claude",
        "--id",
        "streamed",
        "--step",
        "fix the parser",
        "fix the failing parser test",
    ]);
    let t = c.wait_task("streamed", "completed", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);

    let s = c.status("streamed");
    let u = &s["usage"];
    assert_eq!(u["input_tokens"], 31, "{s}");
    assert_eq!(u["output_tokens"], 1204);
    assert_eq!(u["cache_read_tokens"], 52_310);
    assert_eq!(u["cache_write_tokens"], 9_876);
    assert_eq!(u["cost_usd"], 0.0873);
    assert_eq!(u["turns"], 4);
    assert_eq!(u["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(
        u["garbled_lines"], 0,
        "a line of text is the CLI's stderr, not a garbled event"
    );
    assert_eq!(s["activity"], "finished: 4 turns, 41.2 s, $0.0873");

    let human = c.ok(&["status", "streamed"]);
    assert!(
        human.contains(
            "usage: 31 in (52.3k cached) · 1.2k out · 4 turns · $0.0873 · claude-sonnet-4-5-20250929"
        ),
        "{human}"
    );

    let activity = c.ok(&["logs", "streamed", "--activity"]);
    let lines: Vec<&str> = activity.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"session started: claude-sonnet-4-5-20250929, 16 tools")
    );
    assert!(lines.contains(&"Bash: cargo test -p parser"), "{activity}");
    assert!(
        lines.contains(&"Warning: this line is not JSON"),
        "a garbled line is kept as text: {activity}"
    );
    assert_eq!(lines.last(), Some(&"finished: 4 turns, 41.2 s, $0.0873"));
    assert_eq!(lines.len(), 10, "{activity}");

    // The node counts what the stream reported, per backend.
    let m = agent_metrics(&c);
    for line in [
        r#"dispatch_agent_tokens_total{backend="claude",kind="input"} 31"#,
        r#"dispatch_agent_tokens_total{backend="claude",kind="output"} 1204"#,
        r#"dispatch_agent_tokens_total{backend="claude",kind="cache_read"} 52310"#,
        r#"dispatch_agent_cost_usd_total{backend="claude"} 0.0873"#,
        "dispatch_agent_worker_starts_total 1",
        "dispatch_agent_connected 1",
        "dispatch_agent_workers 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in:\n{m}");
    }

    // The raw stream is the log, byte for byte.
    let raw = c.run(&["logs", "streamed"]);
    assert_eq!(
        text(&raw.stdout),
        std::fs::read_to_string(CLAUDE_STREAM).unwrap()
    );
}

#[test]
fn a_codex_stream_counts_tokens_across_turns_and_has_no_cost() {
    let mut c = Cluster::new();
    structured_node(&mut c);
    c.ok(&[
        "--backend",
        "codex",
        "--model",
        "gpt-5.2",
        "--id",
        "codexed",
        "--step",
        "fix it",
        "fix the depth bug",
    ]);
    let t = c.wait_task("codexed", "completed", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let s = c.status("codexed");
    assert_eq!(s["usage"]["input_tokens"], 483, "{s}");
    assert_eq!(s["usage"]["cache_read_tokens"], 54_400);
    assert_eq!(s["usage"]["output_tokens"], 967);
    assert_eq!(s["usage"]["turns"], 2);
    assert!(s["usage"]["cost_usd"].is_null(), "{s}");
    assert_eq!(s["usage"]["unknown_events"], 1, "{s}");
    let activity = c.ok(&["logs", "codexed", "--activity"]);
    assert!(
        activity.contains("ran: bash -lc 'cargo test -p parser' (exit 101)\n"),
        "{activity}"
    );
    assert!(
        activity.contains("changed: src/parser.rs (update), tests/depth.rs (add)\n"),
        "{activity}"
    );
}

#[test]
fn a_task_on_a_plain_backend_has_no_usage_and_no_activity() {
    let c = Cluster::with_node("plain");
    c.ok(&["--backend", "sim", "--id", "plain-task", "--step", "a", "x"]);
    let t = c.wait_task("plain-task", "completed", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed");
    let s = c.status("plain-task");
    assert!(s["usage"].is_null(), "{s}");
    assert_eq!(s["activity"], "");
    assert_eq!(c.ok(&["logs", "plain-task", "--activity"]), "");
}
