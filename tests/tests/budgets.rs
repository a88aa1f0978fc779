//! Budgets (issue 25), with the real Claude Code from the npm registry as the worker against
//! the mock model server, whose every answer reports plain token counts (its first about
//! 1,560 tokens, each later one about 70). A task that reaches its budget is paused at its
//! next tool call (Claude Code's `PreToolUse` hook, in its usual permission mode) and its
//! owner asked; yes raises the budget and the same worker goes on, no blocks the task and
//! stops its worker; a user past their daily budget cannot submit.

use dispatch_tests::mock_models::MockModels;
use dispatch_tests::real_clis::{self, RealClis};
use dispatch_tests::{Cluster, assert_exit, text};

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn a_budget_reached_asks_yes_raises_it_no_blocks_and_the_day_budget_refuses_submits() {
    let Some(clis) = RealClis::installed() else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("coordinator.yaml");
    std::fs::write(&path, "budgets:\n  day: 3k\n").unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", path.to_str().unwrap()]);
    let mock = MockModels::start();
    let o = real_clis::node(&c, "box", 4, &clis.bin, &mock);
    c.add_agent(o);
    let submit = |id: &str| {
        c.ok(&[
            "--backend",
            "claude",
            "--remote",
            "box",
            "--id",
            id,
            "--budget",
            "1k",
            "--step",
            "one (run: echo one)",
            "--step",
            "two (run: echo two)",
            "do the work",
        ]);
    };

    // The first answer alone passes 1k tokens: the worker waits before a tool call and its
    // owner is asked, in words.
    submit("goes-on");
    let out = c.run(&["wait", "goes-on", "--timeout", "90s"]);
    assert_exit(&out, 10);
    let asked = text(&out.stdout);
    assert!(asked.contains("`goes-on` has used"), "{asked}");
    assert!(asked.contains("of 1k tokens"), "{asked}");
    assert!(asked.contains("continue with 1k tokens more?"), "{asked}");
    assert!(asked.contains("(budget 1)"), "{asked}");
    assert!(asked.contains("dispatch answer goes-on yes|no"), "{asked}");
    let t = c.status("goes-on");
    assert_eq!(t["questions"][0]["kind"], "budget", "{t}");
    assert_eq!(t["state"], "waiting", "{t}");
    assert_eq!(t["budget"]["text"], "1k tokens", "{t}");
    let spent = t["spend"]["tokens"].as_u64().unwrap();
    assert!(spent >= 1000, "{t}");
    let detail = c.ok(&["status", "goes-on"]);
    assert!(detail.contains("budget: "), "{detail}");
    assert!(detail.contains("of 1k tokens — reached"), "{detail}");
    // Anything but yes or no is refused and changes nothing.
    let out = c.run(&["answer", "goes-on", "more please"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("whether to go on past its budget: answer yes or no"),
        "{}",
        text(&out.stderr)
    );
    // Yes: 1k more from what it has spent, and the same worker run goes on to the end.
    c.ok(&["answer", "goes-on", "yes"]);
    let out = c.run(&["wait", "goes-on", "--timeout", "90s"]);
    assert_exit(&out, 0);
    let t = c.status("goes-on");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["attempt"], 1, "one worker run, paused and resumed: {t}");
    let limit = t["budget"]["tokens"].as_u64().unwrap();
    assert!(limit >= spent + 1000, "raised from what was spent: {t}");
    assert!(t["spend"]["tokens"].as_u64().unwrap() < limit, "{t}");
    assert_eq!(t["questions"].as_array().unwrap().len(), 1, "{t}");

    // No: the task is blocked with the reason and its worker stopped.
    submit("stops");
    let out = c.run(&["wait", "stops", "--timeout", "90s"]);
    assert_exit(&out, 10);
    c.ok(&["answer", "stops", "no"]);
    c.wait_task("stops", "blocked", |t| {
        t.task_state() == dispatch_core::TaskState::Blocked
    });
    let t = c.status("stops");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("chose not to go on past 1k tokens"),
        "{t}"
    );
    let items = t["items"].as_array().unwrap();
    assert!(
        items.iter().all(|i| i["status"] != "done"),
        "no item ran past the budget: {t}"
    );
    let audit = c.ok(&["audit", "--task", "stops"]);
    assert!(audit.contains("answer"), "who decided is audited: {audit}");

    // The two tasks spent more than the owner's daily 3k tokens: a new submit is refused,
    // saying why and when it is allowed again, and nothing is created.
    let out = c.run(&["--remote", "box", "--id", "refused", "more work"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("daily budget"), "{err}");
    assert!(err.contains("of 3k tokens"), "{err}");
    assert!(err.contains("00:00 UTC") || err.contains("T00:00"), "{err}");
    let out = c.run(&["status", "refused"]);
    assert_ne!(out.status.code(), Some(0));
}

/// A budget that does not read is refused by the CLI and by the coordinator (for a client
/// that skips the CLI's check), and a config with one stops the coordinator at start.
#[test]
fn a_budget_that_does_not_read_is_refused() {
    let c = Cluster::new();
    let out = c.run(&["--budget", "lots", "--id", "x", "do it"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("--budget"), "{err}");
    assert!(err.contains("give dollars"), "{err}");
    let out = c.run(&["--budget", "$0", "--id", "x", "do it"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("stop the task before it starts"),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.yaml");
    std::fs::write(&path, "budgets:\n  task: lots\n").unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(dispatch_tests::bin("dispatch-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("coordinator.yaml"), "{err}");
    assert!(err.contains("budgets.task"), "{err}");
    assert!(!data.exists(), "a refused start creates nothing");
}

/// A worker for a CLI with no tool hook: prints Claude Code's stream with 600 input tokens
/// per item (a new message each), then checks the item off (taking a moment after each, as
/// work does), and ends with the done marker.
const NO_HOOK_WORKER: &str = r#"#!/bin/sh
for last; do :; done
plan=$(printf '%s' "$last" | sed -n 's/.*You have a plan file at \([^ ]*plan\.md\).*/\1/p' | head -n 1)
n=0
while grep -q '^- \[ \] ' "$plan"; do
  n=$((n+1))
  printf '{"type":"assistant","message":{"id":"msg_%s_%s","model":"claude-sonnet-4-5","content":[{"type":"text","text":"working"}],"usage":{"input_tokens":600,"output_tokens":0}}}\n' "$$" "$n"
  sleep 0.3
  awk 'BEGIN { d = 0 } { if (!d && $0 ~ /^- \[ \] /) { sub(/^- \[ \] /, "- [x] "); d = 1 } print }' "$plan" > "$plan.tmp" && mv "$plan.tmp" "$plan"
  if grep -q '^- \[ \] ' "$plan"; then sleep 2; fi
done
touch "$(dirname "$plan")/ipc/.done"
"#;

/// Node `box` with backend `mine`: [`NO_HOOK_WORKER`], its stream read as Claude Code's.
fn no_hook_node(c: &mut Cluster) {
    let script = c.dir.path().join("no-hook-worker");
    std::fs::write(&script, NO_HOOK_WORKER).unwrap();
    let cfg = c.dir.path().join("box.yaml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  mine: {{ command: sh {}, structured: claude-stream-json }}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut o = dispatch_tests::AgentOpts::new("box", 2);
    o.config = Some(cfg);
    c.add_agent(o);
}

/// A CLI with no hook is stopped after the item at which it reached its budget; the task is
/// blocked with the budget question, and yes resumes it on the same node with a new worker
/// that finishes the unchecked items (past its raised budget at its last item: a worker that
/// checked its last item is left to finish).
#[test]
fn a_cli_without_a_hook_is_stopped_after_an_item_and_yes_resumes_it() {
    let mut c = Cluster::new();
    no_hook_node(&mut c);
    c.ok(&[
        "--backend",
        "mine",
        "--id",
        "paced",
        "--budget",
        "1k",
        "--step",
        "one",
        "--step",
        "two",
        "--step",
        "three",
        "do the work",
    ]);
    c.wait_task("paced", "blocked at its budget", |t| {
        t.task_state() == dispatch_core::TaskState::Blocked
    });
    let t = c.status("paced");
    let done = t["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "done")
        .count();
    assert!(
        (2..4).contains(&done),
        "stopped after the item that passed 1k: {t}"
    );
    assert_eq!(t["attempt"], 1, "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("its worker was stopped"), "{t}");
    let q = &t["questions"][0];
    assert!(q["answer"].is_null(), "{t}");
    let asked = q["text"].as_str().unwrap();
    assert!(asked.contains("continue with 1k tokens more?"), "{asked}");
    assert!(asked.contains("resumes the task on node `box`"), "{asked}");
    // The worker is gone: nothing changes the plan while the question waits.
    let inbox = c.ok(&["inbox"]);
    assert!(inbox.contains("paced"), "{inbox}");
    c.ok(&["answer", "paced", "yes"]);
    let t = c.wait_task("paced", "its end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let t = c.status("paced");
    assert_eq!(t["attempt"], 2, "a new worker finished it: {t}");
    assert!(
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "done"),
        "{t}"
    );
    assert!(t["budget"]["tokens"].as_u64().unwrap() > 1000, "{t}");
}

/// A token's budgets: each task submitted with it gets its task budget, and its user's
/// submits stop at its daily budget (other users' do not).
#[test]
fn a_tokens_budgets_apply_to_its_submits() {
    let mut c = Cluster::new();
    no_hook_node(&mut c);
    let out = c.ok(&[
        "token",
        "create",
        "--user",
        "ann",
        "--role",
        "member",
        "--day-budget",
        "1k",
        "--task-budget",
        "$3",
        "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ann = made["token"].as_str().unwrap().to_string();
    let listed: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "list", "--json"])).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ann")
        .unwrap();
    assert_eq!(row["day_budget"], "1k tokens", "{row}");
    assert_eq!(row["task_budget"], "$3.00", "{row}");
    let as_ann = |args: &[&str]| {
        c.cli()
            .env("DISPATCH_TOKEN", &ann)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_ann(&[
        "--backend",
        "mine",
        "--id",
        "first",
        "--step",
        "one",
        "--step",
        "two",
        "do the work",
    ]);
    assert_exit(&out, 0);
    let t = c.wait_task("first", "its end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let t = c.status("first");
    assert_eq!(t["budget"]["text"], "$3.00", "the token's task budget: {t}");
    assert!(t["spend"]["tokens"].as_u64().unwrap() >= 1000, "{t}");
    assert_eq!(t["spend"]["estimated"], true, "{t}");
    let out = as_ann(&["--backend", "mine", "--id", "second", "do the work"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("`ann` has spent"), "{err}");
    assert!(err.contains("of 1k tokens today (UTC)"), "{err}");
    // Another user (the admin here) is not held by ann's budget.
    c.ok(&[
        "--backend",
        "mine",
        "--id",
        "third",
        "--step",
        "one",
        "do the work",
    ]);
    // A node token has no budgets.
    let out = c.run(&["token", "create", "--node", "n1", "--day-budget", "1k"]);
    assert_ne!(out.status.code(), Some(0));
}
