//! Tool approvals (issue 25), with the real Claude Code from the npm registry as the worker
//! (run by an unprivileged agent against the mock model server, which acts only through the
//! CLI's shell tool). The coordinator's policy runs any command, asks before `git push` and
//! refuses `rm -rf /…`; the CLI runs with its permission checks on and asks through its
//! `PreToolUse` hook.

use dispatch_tests::mock_models::MockModels;
use dispatch_tests::real_clis::{self, RealClis};
use dispatch_tests::{Cluster, assert_exit, text};

/// The coordinator's config file's part; the ask rule is set with `dispatch policy set`.
const POLICY: &str = "policy:\n  allow: [Bash]\n  deny: [\"Bash(rm -rf /*)\"]\n";

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn claude_asks_before_a_push_and_the_policy_allows_and_denies_the_rest() {
    let Some(clis) = RealClis::installed() else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("coordinator.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", path.to_str().unwrap()]);
    // A CI token of its own: its tasks may not push at all (a scope by token id).
    let made: serde_json::Value = serde_json::from_str(&c.ok(&[
        "token", "create", "--user", "ci", "--role", "member", "--json",
    ]))
    .unwrap();
    let ci_token = made["token"].as_str().unwrap().to_string();
    let ci_id = made["id"].as_str().unwrap();
    let asks = config.path().join("asks.yaml");
    std::fs::write(
        &asks,
        format!(
            "ask: [\"Bash(git push:*)\"]\ntokens:\n  {ci_id}: {{ deny: [\"Bash(git push:*)\"] }}\n"
        ),
    )
    .unwrap();
    c.ok(&["policy", "set", asks.to_str().unwrap()]);
    let shown = c.ok(&["policy", "show"]);
    assert!(shown.contains(ci_id), "{shown}");
    let mock = MockModels::start();
    let o = real_clis::node(&c, "box", 4, &clis.bin, &mock);
    c.add_agent(o);
    let submit = |id: &str, steps: &[&str]| {
        let mut args = vec!["--backend", "claude", "--remote", "box", "--id", id];
        for s in steps {
            args.extend(["--step", s]);
        }
        args.push("do the work");
        c.ok(&args);
    };
    submit(
        "push",
        &[
            "publish (run: git push origin main)",
            "publish again (run: git push origin main)",
            "force it (run: git push --force origin main)",
        ],
    );
    submit(
        "wipe",
        &["clean up (run: rm -rf /tmp/dispatch-approval-test)"],
    );
    let out = c
        .cli()
        .env("DISPATCH_TOKEN", &ci_token)
        .args([
            "--backend",
            "claude",
            "--remote",
            "box",
            "--id",
            "ci-push",
            "--step",
            "publish (run: git push origin main)",
            "do the work",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);

    // The first push is asked about, shaped as an approval.
    let out = c.run(&["wait", "push", "--timeout", "90s"]);
    assert_exit(&out, 10);
    let asked = text(&out.stdout);
    assert!(
        asked.contains("Allow Bash: git push origin main"),
        "{asked}"
    );
    assert!(asked.contains("yes, no, or always"), "{asked}");
    let t = c.status("push");
    assert_eq!(t["state"], "waiting", "{t}");
    // Anything but yes, no or always is refused and changes nothing.
    let out = c.run(&["answer", "push", "maybe"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("answer yes, no or always"),
        "{}",
        text(&out.stderr)
    );
    c.ok(&["answer", "push", "always"]);
    // The same push again runs without asking; a forced one asks, and "no" refuses it: the
    // worker marks the item failed, as the refusal tells it.
    let out = c.run(&["wait", "push", "--timeout", "90s"]);
    assert_exit(&out, 10);
    let asked = text(&out.stdout);
    assert!(asked.contains("git push --force origin main"), "{asked}");
    c.ok(&["answer", "push", "no"]);
    let out = c.run(&["wait", "push", "--timeout", "90s"]);
    assert_exit(&out, 12);
    let t = c.status("push");
    let items = t["items"].as_array().unwrap();
    assert_eq!(items[0]["status"], "done", "{t}");
    assert_eq!(items[1]["status"], "done", "{t}");
    assert_eq!(items[2]["status"], "error", "{t}");
    assert!(
        items[2]["note"]
            .as_str()
            .unwrap()
            .contains("denied this tool call"),
        "{t}"
    );
    let questions = t["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 2, "asked twice, not three times: {t}");

    // A denied command never runs: the policy refuses it without asking anyone.
    refused_without_asking(&c, "wipe");
    // The CI token's task is refused the push its scope denies, though its user's other
    // tasks (and everyone else's) would be asked.
    refused_without_asking(&c, "ci-push");
    // Who decided is in the audit.
    let audit = c.ok(&["audit", "--task", "push"]);
    assert!(audit.contains("answer"), "{audit}");
}

/// Waits for task `id` to fail, its first item refused by the policy with no one asked.
fn refused_without_asking(c: &Cluster, id: &str) {
    let out = c.run(&["wait", id, "--timeout", "90s"]);
    assert_exit(&out, 12);
    let t = c.status(id);
    assert_eq!(t["questions"].as_array().unwrap().len(), 0, "{t}");
    assert!(
        t["items"][0]["note"]
            .as_str()
            .unwrap()
            .contains("tool policy denies this call"),
        "{t}"
    );
}

/// Codex 0.124+ runs the node's `PreToolUse` hook for the run (`-c hooks.PreToolUse=…`, trust
/// waived for it): a push is asked about and goes on once allowed, a denied command never
/// runs, and each decision reaches the real Codex CLI in its hook's shape.
#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn codex_asks_through_its_own_hook() {
    let Some(clis) = RealClis::installed() else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("coordinator.yaml");
    std::fs::write(
        &path,
        "policy:\n  allow: [Bash]\n  ask: [\"Bash(git push:*)\"]\n  deny: [\"Bash(rm -rf /*)\"]\n",
    )
    .unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", path.to_str().unwrap()]);
    let mock = MockModels::start();
    let o = real_clis::node(&c, "box", 4, &clis.bin, &mock);
    c.add_agent(o);
    c.ok(&[
        "--backend",
        "codex",
        "--remote",
        "box",
        "--id",
        "codex-push",
        "--step",
        "publish (run: git push origin main)",
        "--step",
        "clean up (run: rm -rf /tmp/dispatch-approval-test)",
        "do the work",
    ]);
    let out = c.run(&["wait", "codex-push", "--timeout", "90s"]);
    assert_exit(&out, 10);
    let asked = text(&out.stdout);
    assert!(
        asked.contains("Allow Bash: git push origin main"),
        "{asked}"
    );
    c.ok(&["answer", "codex-push", "yes"]);
    let out = c.run(&["wait", "codex-push", "--timeout", "90s"]);
    assert_exit(&out, 12);
    let t = c.status("codex-push");
    let items = t["items"].as_array().unwrap();
    assert_eq!(items[0]["status"], "done", "the allowed push ran: {t}");
    assert_eq!(items[1]["status"], "error", "{t}");
    assert!(
        items[1]["note"]
            .as_str()
            .unwrap()
            .contains("tool policy denies this call"),
        "Codex told its model why: {t}"
    );
    assert_eq!(t["questions"].as_array().unwrap().len(), 1, "{t}");
    assert!(
        !mock
            .seen_for(dispatch_tests::mock_models::Api::OpenAi, "codex-push")
            .is_empty()
    );
}

/// Issue 25 (the dashboard as a place to work): in chromium, the inbox lists the question
/// waiting longest first; a tool approval of the real Claude Code is three buttons and a
/// budget question two, and pressing Allow and Continue lets both workers finish.
#[test]
#[ignore = "needs the real agent CLIs, Chromium and Python test clients; run with --run-ignored all (.ci/run does)"]
fn the_dashboard_decides_approvals_and_budgets_with_buttons() {
    let Some(clis) = RealClis::installed() else {
        return;
    };
    let (Some(python), Some(chromium)) = (
        dispatch_tests::python_with(&["playwright"]),
        dispatch_tests::chromium(),
    ) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("policy.yaml");
    let mut c = Cluster::with_coordinator_args(&["--http-listen", "127.0.0.1:0"]);
    // Only the tasks of ann's token run under the policy (the budget task is asked about its
    // budget alone).
    let made: serde_json::Value = serde_json::from_str(&c.ok(&[
        "token", "create", "--user", "ann", "--role", "member", "--json",
    ]))
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "tokens:\n  {}:\n    allow: [Bash]\n    ask: [\"Bash(git push:*)\"]\n",
            made["id"].as_str().unwrap()
        ),
    )
    .unwrap();
    c.ok(&["policy", "set", path.to_str().unwrap()]);
    let mock = MockModels::start();
    let o = real_clis::node(&c, "box", 4, &clis.bin, &mock);
    c.add_agent(o);
    let out = c
        .cli()
        .env("DISPATCH_TOKEN", made["token"].as_str().unwrap())
        .args([
            "--backend",
            "claude",
            "--remote",
            "box",
            "--id",
            "push",
            "--step",
            "publish (run: git push origin main)",
            "do the work",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_exit(&c.run(&["wait", "push", "--timeout", "90s"]), 10);
    // Asked after the push's approval, so it has waited less.
    c.ok(&[
        "--backend",
        "claude",
        "--remote",
        "box",
        "--id",
        "spend",
        "--budget",
        "1k",
        "--step",
        "one (run: echo one)",
        "do the work",
    ]);
    assert_exit(&c.run(&["wait", "spend", "--timeout", "90s"]), 10);
    let url = std::fs::read_to_string(c.dir.path().join("coordinator/http.addr"))
        .unwrap()
        .trim()
        .to_string();
    let artifacts =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard-decisions.png");
    let (code, said) = dispatch_tests::run_python(
        &python,
        "dashboard_decisions.py",
        &[
            &url,
            &c.admin_token,
            "push",
            "spend",
            shot.to_str().unwrap(),
            chromium.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("decisions ok"), "{said}");
    for id in ["push", "spend"] {
        let out = c.run(&["wait", id, "--timeout", "90s"]);
        assert_exit(&out, 0);
    }
    let t = c.status("spend");
    assert!(
        t["budget"]["tokens"].as_u64().unwrap() > 1000,
        "raised by Continue: {t}"
    );
    let audit = c.ok(&["audit", "--task", "push"]);
    assert!(audit.contains("answer"), "{audit}");
}

/// A policy whose rules cannot be used stops the coordinator at start, naming the file and the
/// rule, and creates nothing.
#[test]
fn a_policy_that_does_not_parse_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.yaml");
    std::fs::write(&path, "policy:\n  allow: [\"Bash(cargo test\"]\n").unwrap();
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
    assert!(
        err.contains("rule `Bash(cargo test`: a `(` needs its `)` at the end"),
        "{err}"
    );
    assert!(!data.exists(), "a refused start creates nothing");
}

/// `dispatch policy`: shown to anyone with a token, set and cleared by admins only, checked
/// whole (a bad rule changes nothing), audited, kept across a restart, and used together with
/// the config file's.
#[test]
fn the_policy_is_set_by_admins_checked_whole_audited_and_kept() {
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("coordinator.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", path.to_str().unwrap()]);
    let shown = c.ok(&["policy", "show"]);
    assert!(shown.contains("Bash(rm -rf /*)"), "{shown}");
    let bad = config.path().join("bad.yaml");
    std::fs::write(&bad, "allow: [\"Read\"]\nask: [\"Bash(git push\"]\n").unwrap();
    let out = c.run(&["policy", "set", bad.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("rule `Bash(git push`"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // A whole section, as in a config file, is read too.
    let good = config.path().join("good.yaml");
    std::fs::write(
        &good,
        "policy:\n  ask: [\"Bash(git push:*)\"]\n  users:\n    alice: { allow: [\"Bash(make:*)\"] }\n",
    )
    .unwrap();
    c.ok(&["policy", "set", good.to_str().unwrap()]);
    let member = c.user_token("bob", "member", &[]);
    let as_member = |args: &[&str]| {
        c.cli()
            .env("DISPATCH_TOKEN", &member)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_member(&["policy", "set", good.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("may not manage tokens, nodes and the tool policy"),
        "{}",
        text(&out.stderr)
    );
    let out = as_member(&["policy", "show", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let effective = v["effective"].as_str().unwrap();
    for rule in ["Bash(rm -rf /*)", "Bash(git push:*)", "Bash(make:*)"] {
        assert!(effective.contains(rule), "{effective}");
    }
    assert_eq!(v["updated_by"], "admin", "{v}");
    let audit = c.ok(&["audit"]);
    assert!(audit.contains("policy-set"), "{audit}");
    c.restart_coordinator();
    let shown = c.ok(&["policy", "show"]);
    assert!(
        shown.contains("Bash(git push:*)"),
        "kept across a restart: {shown}"
    );
    c.ok(&["policy", "clear"]);
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["policy", "show", "--json"])).unwrap();
    assert_eq!(v["stored"], "", "{v}");
    assert!(
        v["effective"].as_str().unwrap().contains("Bash(rm -rf /*)"),
        "{v}"
    );
    assert!(c.ok(&["audit"]).contains("policy-clear"));
}
