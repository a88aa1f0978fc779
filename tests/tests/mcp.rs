//! `dispatch mcp` (issue 16) driven by an independent client: the Python `mcp` SDK from PyPI
//! (tests/python/mcp_client.py; `.ci/run` installs it). Without it the test says it skips;
//! under CI it fails.

use dispatch_tests::{bin, python_with, text};
use std::process::Command;

#[test]
fn an_mcp_host_dispatches_waits_answers_and_reads_the_result() {
    let Some(python) = python_with(&["mcp"]) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let cli = || {
        let mut c = Command::new(bin("dispatch"));
        c.env_remove("DISPATCH_COORDINATOR")
            .env("DISPATCH_HOME", home.path())
            .current_dir(home.path());
        c
    };
    // What the CLI says for the same bad input: the tool errors must say the same.
    let cli_error = |args: &[&str]| {
        let out = cli().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        text(&out.stderr)
            .trim()
            .trim_start_matches("error: ")
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let unknown = cli_error(&["status", "no-such-task"]);
    let bad_pool = cli_error(&["run", "--backend", "sim", "--pool", "nonsense", "x"]);
    let expected = serde_json::json!([
        ["task_status", {"id": "no-such-task"}, unknown],
        ["answer_question", {"id": "no-such-task", "text": "hi"}, unknown],
        ["dispatch_task", {"backend": "sim"}, "`prompt` is required"],
        ["dispatch_task", {"prompt": "x", "backend": "sim", "pool": "nonsense"},
            bad_pool.trim_start_matches("invalid value 'nonsense' for '--pool <K=V[,K=V]>': ")],
        ["task_status", {"id": "Not An Id"}, "task id"],
    ]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(bin("dispatch"))
        .arg(expected.to_string())
        .env_remove("DISPATCH_COORDINATOR")
        .env("DISPATCH_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let _ = cli().args(["daemon", "stop"]).output();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("mcp ok"), "{said}");
}
