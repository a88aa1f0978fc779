//! The real agent CLIs as workers (issue 21): Claude Code and Codex from the npm registry
//! (pinned in tests/clis), each plain and structured, run by an agent as an unprivileged user
//! against the mock model servers of the test suite, which they reach the way a user's node
//! reaches a gateway. The "model" acts only through each CLI's own shell tool.
//!
//! Per backend and mode: a question round trip with a note, output.md, usage equal to what the
//! mock sent, a `[?]` timeout and its resume, a cancel that leaves no process behind; and every
//! failure the mock can produce — 401, 403, 429, 529, 500, a usage limit with a reset time, no
//! API key — plus a CLI that is not on PATH and one too old to drive. For each failure: the
//! task's state, a one-line reason quoting the CLI's own error (never usage text or raw JSON),
//! and how long it took (printed).

use dispatch_tests::mock_models::{Api, Fault, MockModels, now_ms};
use dispatch_tests::real_clis::{self, RealClis};
use dispatch_tests::{Cluster, assert_exit, text};
use std::time::Instant;

struct Suite {
    c: Cluster,
    mock: MockModels,
    clis: RealClis,
}

/// A cluster with node `box` running both CLIs against the mock, structured or plain.
fn suite(structured: bool, agent_yaml: &str) -> Option<Suite> {
    let clis = RealClis::installed()?;
    let mut c = Cluster::new();
    let mock = MockModels::start();
    let mut o = real_clis::node(&c, "box", 4, &clis.bin, &mock);
    let cfg = c.dir.path().join("box.yaml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  claude: {{ structured: {structured} }}\n  codex: {{ structured: {structured} }}\n{agent_yaml}"
        ),
    )
    .unwrap();
    o.config = Some(cfg);
    c.add_agent(o);
    Some(Suite { c, mock, clis })
}

fn api(backend: &str) -> Api {
    match backend {
        "claude" => Api::Anthropic,
        _ => Api::OpenAi,
    }
}

/// Every process whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Waits until task `id` has ended; its `status --json`.
fn ended(c: &Cluster, id: &str) -> serde_json::Value {
    c.wait_task(id, "its end", |t| t.task_state().is_terminal());
    c.status(id)
}

fn conformance(backend: &str, structured: bool) {
    let Some(s) = suite(structured, "") else {
        return;
    };
    let (c, mock) = (&s.c, &s.mock);
    let mode = if structured { "structured" } else { "plain" };
    let id = |what: &str| format!("{what}-{backend}-{mode}");
    let (round, blocked, cancel) = (id("round"), id("blocked"), id("cancel"));
    let long = "wait a long time (sleep 90s)";
    for (task, steps) in [
        (
            &round,
            vec!["look around", "pick a database (ask: which database?)"],
        ),
        (
            &blocked,
            vec!["ask it (ask: which colour?; timeout 2s)", "then this"],
        ),
        (&cancel, vec![long]),
    ] {
        let mut args = vec!["--backend", backend, "--remote", "box", "--id", task];
        for st in &steps {
            args.extend(["--step", st]);
        }
        args.push("do the work");
        c.ok(&args);
    }

    // The question round trip, with a note while it waits.
    let out = c.run(&["wait", &round, "--timeout", "60s"]);
    assert_exit(&out, 10);
    assert!(
        text(&out.stdout).contains("which database?"),
        "{}",
        text(&out.stdout)
    );
    c.ok(&["note", &round, "use the staging database"]);
    c.ok(&["answer", &round, "postgres"]);
    let out = c.run(&["wait", &round, "--timeout", "60s"]);
    assert_exit(&out, 0);
    let t = c.status(&round);
    assert_eq!(t["state"], "completed", "{t}");
    assert!(
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "done"),
        "{t}"
    );
    // The note is in plan.md on the node, through every rewrite the worker made.
    let plan_md = std::fs::read_to_string(
        c.dir
            .path()
            .join(format!("work-box/.dispatch/tasks/{round}/plan.md")),
    )
    .unwrap();
    assert!(
        plan_md.contains("Note from dispatcher:** use the staging database"),
        "{plan_md}"
    );
    let plan = c.ok(&["status", &round]);
    let output = c.ok(&["output", &round]);
    assert!(output.contains("The user answered: postgres"), "{output}");
    assert_eq!(
        mock.seen_for(api(backend), &round)
            .iter()
            .filter(|r| r.status != 200)
            .count(),
        0
    );
    if structured {
        // What the CLI reported is exactly what the mock sent.
        let sent = mock.sent(api(backend), &round);
        let u = &t["usage"];
        assert_eq!(u["input_tokens"], sent.input, "{t}");
        assert_eq!(u["output_tokens"], sent.output, "{t}");
        assert_eq!(u["cache_read_tokens"], sent.cache_read, "{t}");
        assert_eq!(u["garbled_lines"], 0, "{t}");
        match backend {
            "claude" => {
                assert_eq!(u["cache_write_tokens"], sent.cache_write, "{t}");
                assert!(u["cost_usd"].as_f64().unwrap() > 0.0, "{t}");
                assert_eq!(u["turns"], sent.responses, "{t}");
                let model = mock.seen_for(api(backend), &round)[0].model.clone();
                assert_eq!(u["model"], model.as_str());
                assert!(plan.contains(&format!("(claude, ran {model})")), "{plan}");
            }
            _ => assert_eq!(u["cost_usd"], serde_json::Value::Null),
        }
        let activity = c.ok(&["logs", &round, "--activity"]);
        assert!(!activity.trim().is_empty());
    } else {
        assert_eq!(
            t["usage"],
            serde_json::Value::Null,
            "a plain run reports no usage"
        );
    }

    // A question nobody answers in time: [?], context.md, blocked; the answer resumes it.
    c.wait_task(&blocked, "the worker to give up on its question", |t| {
        t.task_state() == dispatch_core::TaskState::Blocked
    });
    let t = c.status(&blocked);
    assert_eq!(t["state"], "blocked", "{t}");
    assert_eq!(t["items"][0]["status"], "blocked", "{t}");
    assert!(
        c.dir
            .path()
            .join(format!("work-box/.dispatch/tasks/{blocked}/context.md"))
            .exists(),
        "the worker saved its context"
    );
    c.ok(&["answer", &blocked, "the blue one"]);
    let out = c.run(&["wait", &blocked, "--timeout", "60s"]);
    assert_exit(&out, 0);
    let t = c.status(&blocked);
    assert_eq!(t["attempt"], 2, "{t}");
    assert!(
        t["items"][0]["note"]
            .as_str()
            .unwrap()
            .contains("answer: the blue one"),
        "{t}"
    );

    // Cancel while the worker's command runs: nothing of its process tree is left (the CLI
    // has the task's directory in its prompt, its shell in its command).
    let marker = format!(".dispatch/tasks/{cancel}/");
    dispatch_tests::wait_until("the worker's long command to run", || {
        processes_with(&format!("{marker}ipc/.stop-waiting"))
            .iter()
            .any(|p| !p.contains("dispatch-worker"))
            .then_some(())
    });
    c.ok(&["cancel", &cancel]);
    let t = c.wait_task(&cancel, "the worker's end after the cancel", |t| {
        t.reason.contains("was stopped")
    });
    assert_eq!(t.task_state(), dispatch_core::TaskState::Cancelled, "{t:?}");
    // A SIGKILL lands when the process is next scheduled: on a busy machine one may still
    // show for a moment. Anything the kill missed would live on (its loop runs 90 s).
    let deadline = std::time::Instant::now() + dispatch_tests::DEADLINE;
    let mut left = processes_with(&marker);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = processes_with(&marker);
    }
    assert!(left.is_empty(), "left behind after the cancel: {left:?}");
    let _ = &s.clis;
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn claude_plain() {
    conformance("claude", false);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn claude_structured() {
    conformance("claude", true);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn codex_plain() {
    conformance("codex", false);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn codex_structured() {
    conformance("codex", true);
}

/// One failure the mock produces for one task, and what its reason must quote.
struct Case {
    id: String,
    fault: Option<Fault>,
    says: &'static str,
    trouble: &'static str,
}

fn failures(backend: &str, structured: bool) {
    let Some(mut s) = suite(structured, "") else {
        return;
    };
    let mode = if structured { "structured" } else { "plain" };
    let reset = now_ms() / 1000 + 3 * 3600;
    let quoted = |claude: &'static str, codex: &'static str| {
        if backend == "claude" { claude } else { codex }
    };
    let mut cases: Vec<Case> = [
        (
            401,
            quoted("Invalid API key", "401 Unauthorized: Incorrect API key"),
            "auth",
        ),
        (
            403,
            quoted("403 Your API key does not have permission", "403 Forbidden"),
            "auth",
        ),
        (
            429,
            quoted("Request rejected (429)", "429 Too Many Requests"),
            "rate_limit",
        ),
        (529, quoted("529 Overloaded", "at capacity"), "overloaded"),
        (
            500,
            quoted("500", "high demand"),
            quoted("server", "overloaded"),
        ),
    ]
    .into_iter()
    .map(|(status, says, trouble)| Case {
        id: format!("http{status}-{backend}-{mode}"),
        fault: Some(Fault::Status(status)),
        says,
        trouble,
    })
    .collect();
    cases.push(Case {
        id: format!("usage-{backend}-{mode}"),
        fault: Some(Fault::UsageLimit(reset)),
        says: quoted(
            "You have reached your specified API usage limits",
            "hit your usage limit",
        ),
        trouble: "usage_limit",
    });
    // No API key: a node whose environment has none.
    let mut nokey = real_clis::node(&s.c, "nokey", 2, &s.clis.bin, &s.mock);
    nokey
        .env
        .retain(|(k, _)| k != "ANTHROPIC_API_KEY" && k != "GATEWAY_OPENAI_KEY");
    let cfg = s.c.dir.path().join("nokey.yaml");
    std::fs::write(
        &cfg,
        format!("backends:\n  claude: {{ structured: {structured} }}\n  codex: {{ structured: {structured} }}\n"),
    )
    .unwrap();
    nokey.config = Some(cfg);
    s.c.add_agent(nokey);
    cases.push(Case {
        id: format!("nokey-{backend}-{mode}"),
        fault: None,
        says: quoted("Not logged in", "Missing environment variable"),
        trouble: "auth",
    });

    let start = Instant::now();
    for case in &cases {
        let node = if case.fault.is_some() { "box" } else { "nokey" };
        if let Some(f) = &case.fault {
            s.mock.fail_task(api(backend), &case.id, f.clone(), None);
        }
        s.c.ok(&[
            "--backend",
            backend,
            "--remote",
            node,
            "--id",
            &case.id,
            "--step",
            "first",
            "do it",
        ]);
    }
    let mut table = Vec::new();
    for case in &cases {
        // A usage limit that names its reset waits for it (issue 25); the rest end failed.
        let waits = case.trouble == "usage_limit";
        let t = if waits {
            s.c.wait_task(&case.id, "the wait for the reset", |t| {
                t.reason.contains("waiting for the reset")
            });
            s.c.status(&case.id)
        } else {
            ended(&s.c, &case.id)
        };
        let at = if waits {
            "updated_at_ms"
        } else {
            "ended_at_ms"
        };
        let took = t[at].as_i64().unwrap() - t["created_at_ms"].as_i64().unwrap();
        let reason = t["reason"].as_str().unwrap().to_string();
        table.push(format!("{:>6} ms  {:<28} {}", took, case.id, reason));
        assert_eq!(
            t["state"],
            if waits { "queued" } else { "failed" },
            "{}: {t}",
            case.id
        );
        assert!(reason.contains(case.says), "{}: {reason}", case.id);
        assert_eq!(t["trouble"], case.trouble, "{}: {t}", case.id);
        assert!(!reason.contains('\n'), "{}: one line: {reason}", case.id);
        assert!(!reason.contains("{\""), "{}: raw JSON: {reason}", case.id);
        assert!(
            !reason.contains("Usage:"),
            "{}: usage text: {reason}",
            case.id
        );
        assert!(reason.len() < 2000, "{}: {} bytes", case.id, reason.len());
        if case.trouble == "usage_limit" {
            let until = t["limit_until_ms"].as_i64().expect("a reset time");
            // Within the minute the CLI rounds it to.
            assert!(
                (until - reset * 1000).abs() <= 60_000,
                "{}: {until} vs {reset}",
                case.id
            );
            let human = s.c.ok(&["status", &case.id]);
            assert!(human.contains("waiting for the reset"), "{human}");
            s.c.ok(&["cancel", &case.id]);
        }
    }
    eprintln!(
        "{backend} {mode}: {} failures in {:.1} s\n{}",
        cases.len(),
        start.elapsed().as_secs_f64(),
        table.join("\n")
    );
    if structured && backend == "claude" {
        let activity =
            s.c.ok(&["logs", &format!("http429-{backend}-{mode}"), "--activity"]);
        assert!(
            activity.contains("API retry 1/3 — 429 rate limit"),
            "{activity}"
        );
    }
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn claude_failures_plain() {
    failures("claude", false);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn claude_failures_structured() {
    failures("claude", true);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn codex_failures_plain() {
    failures("codex", false);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn codex_failures_structured() {
    failures("codex", true);
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn a_cli_not_on_path_or_too_old_is_said_before_anything_runs() {
    let Some(mut s) = suite(true, "") else {
        return;
    };
    // A node without Claude Code: a task for it there is refused, naming what the node has.
    let mut bare = real_clis::node(&s.c, "bare", 1, &s.clis.bin, &s.mock);
    bare.path_prefix = None;
    s.c.add_agent(bare);
    let out =
        s.c.run(&["run", "--remote", "bare", "--backend", "claude", "x"]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(err.contains("node `bare` has no backend `claude`"), "{err}");
    // Its command names a CLI that is not there: the task fails at once, saying so.
    let mut gone = real_clis::node(&s.c, "gone", 1, &s.clis.bin, &s.mock);
    gone.path_prefix = None;
    let cfg = s.c.dir.path().join("gone.yaml");
    std::fs::write(
        &cfg,
        "backends:\n  claude: { command: /opt/claude-code/bin/claude -p --dangerously-skip-permissions }\n",
    )
    .unwrap();
    gone.config = Some(cfg);
    s.c.add_agent(gone);
    s.c.ok(&[
        "run",
        "--remote",
        "gone",
        "--backend",
        "claude",
        "--id",
        "gone",
        "x",
    ]);
    let t = ended(&s.c, "gone");
    assert_eq!(t["state"], "failed", "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("was not found on node `gone` (exit status 127)"),
        "{reason}"
    );
    assert!(reason.contains("/opt/claude-code/bin/claude"), "{reason}");

    // A Codex too old to stream: a capability error of the node, never a failed task.
    let mut old = real_clis::node(&s.c, "old", 1, &s.clis.old_bin, &s.mock);
    let cfg = s.c.dir.path().join("old.yaml");
    std::fs::write(&cfg, "backends:\n  codex: { structured: true }\n").unwrap();
    old.config = Some(cfg);
    s.c.add_agent(old);
    let nodes = s.c.ok(&["nodes"]);
    assert!(nodes.contains("codex@0.0.2505291458(3)!"), "{nodes}");
    assert!(
        nodes.contains("! node `old`: backend `codex` cannot run there: structured: true needs `codex exec --json`, which codex-cli 0.0.2505291458 does not have"),
        "{nodes}"
    );
    let (claude_v, codex_v) = &s.clis.versions;
    let v = |s: &str| {
        s.split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap()
            .to_string()
    };
    assert!(
        nodes.contains(&format!("claude@{}", v(claude_v))),
        "{nodes}"
    );
    assert!(nodes.contains(&format!("codex@{}", v(codex_v))), "{nodes}");
    let out =
        s.c.run(&["run", "--remote", "old", "--backend", "codex", "x"]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("codex (cannot run there: structured: true needs"),
        "{err}"
    );
    let doctor = s.c.run(&["doctor"]);
    let d = text(&doctor.stdout);
    assert!(d.contains("backend `codex` cannot run there"), "{d}");
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn a_rate_limited_claude_falls_back_to_codex_in_seconds() {
    let Some(s) = suite(true, "") else {
        return;
    };
    let home = s.c.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.yaml"), "fallback:\n  to: [codex]\n").unwrap();
    s.mock.fail(Api::Anthropic, Fault::Status(429), None);
    let start = Instant::now();
    s.c.ok(&[
        "--backend",
        "claude",
        "--remote",
        "box",
        "--id",
        "storm",
        "--step",
        "first",
        "x",
    ]);
    let t = ended(&s.c, "storm");
    let took = start.elapsed();
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["backend"], "codex", "{t}");
    let note = t["fallback"].as_str().unwrap();
    assert!(
        note.contains("`claude` on node `box` could not start (it said \"rate limit\")"),
        "{note}"
    );
    let first_codex = s.mock.seen_for(Api::OpenAi, "storm")[0].at_ms;
    let first_claude = s.mock.seen_for(Api::Anthropic, "storm")[0].at_ms;
    eprintln!(
        "429 storm: first claude request → first codex request {} ms; submit → completed on codex {:.1} s",
        first_codex - first_claude,
        took.as_secs_f64()
    );
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn the_model_a_claude_task_asks_for_is_passed_only_where_the_node_says_and_status_tells_the_truth()
{
    let Some(mut s) = suite(true, "") else {
        return;
    };
    let mut passing = real_clis::node(&s.c, "passing", 1, &s.clis.bin, &s.mock);
    let cfg = s.c.dir.path().join("passing.yaml");
    std::fs::write(
        &cfg,
        "backends:\n  claude: { structured: true, pass_model: true }\n",
    )
    .unwrap();
    passing.config = Some(cfg);
    s.c.add_agent(passing);
    for (id, node) in [("seed-rule", "box"), ("passed", "passing")] {
        s.c.ok(&[
            "--backend",
            "claude",
            "--model",
            "sonnet",
            "--remote",
            node,
            "--id",
            id,
            "--step",
            "one",
            "x",
        ]);
    }
    for id in ["seed-rule", "passed"] {
        let t = ended(&s.c, id);
        assert_eq!(t["state"], "completed", "{t}");
    }
    // The seed's rule: claude picks its own model; the node that passes it sends sonnet's id.
    let default_model = s.mock.seen_for(Api::Anthropic, "seed-rule")[0]
        .model
        .clone();
    let passed_model = s.mock.seen_for(Api::Anthropic, "passed")[0].model.clone();
    assert!(!default_model.contains("sonnet"), "{default_model}");
    assert!(passed_model.contains("sonnet"), "{passed_model}");
    let human = s.c.ok(&["status", "seed-rule"]);
    assert!(
        human.contains(&format!("(claude, asked sonnet, ran {default_model})")),
        "{human}"
    );
    let human = s.c.ok(&["status", "passed"]);
    assert!(human.contains(&format!("ran {passed_model})")), "{human}");
}

#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn the_first_run_config_writes_the_commands_the_installed_clis_accept() {
    let Some(clis) = RealClis::installed() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(dispatch_tests::bin("dispatch"))
        .args(["config", "init"])
        .env("DISPATCH_HOME", home.path())
        .env("PATH", format!("{}:/usr/bin:/bin", clis.bin.display()))
        .env_remove("DISPATCH_COORDINATOR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let cfg = std::fs::read_to_string(home.path().join("config.yaml")).unwrap();
    assert!(
        cfg.contains("codex exec --sandbox workspace-write -C \"$(pwd)\""),
        "{cfg}"
    );
    assert!(
        !cfg.contains("--full-auto"),
        "codex-cli 0.171 has no --full-auto: {cfg}"
    );
    assert!(
        cfg.contains("claude -p --dangerously-skip-permissions"),
        "{cfg}"
    );
    // And that command runs: codex accepts every flag of it.
    let help = std::process::Command::new(clis.bin.join("codex"))
        .args([
            "exec",
            "--sandbox",
            "workspace-write",
            "-C",
            "/tmp",
            "--help",
        ])
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", text(&help.stderr));
}

/// Issue 25: a usage limit that names its reset, with no fallback, makes the task wait for the
/// reset and then resume by itself on the same node as a new worker run — once. A reset already
/// due resumes at once; one hours away keeps the task queued, saying so, and `cancel` ends the
/// wait; a task that hits the limit again after its resume fails.
#[test]
#[ignore = "needs the real agent CLIs; run with --run-ignored all (.ci/run does)"]
fn a_usage_limit_waits_for_its_reset_and_resumes_by_itself_once() {
    let Some(mut s) = suite(false, "") else {
        return;
    };
    let submit = |c: &Cluster, id: &str| {
        c.ok(&[
            "--backend",
            "claude",
            "--remote",
            "box",
            "--id",
            id,
            "--step",
            "one",
            "do it",
        ]);
    };
    let (c, mock) = (&s.c, &s.mock);
    // Due already (this minute): resumes at once, and the second run completes.
    let due = now_ms() / 1000 - 1;
    mock.fail_task(Api::Anthropic, "due", Fault::UsageLimit(due), None);
    submit(c, "due");
    // The limit lifts as the task is queued again (the CLI of the new run takes far longer to
    // start than this takes, so its first request is answered).
    c.wait_task("due", "its second worker run to be queued", |t| {
        t.attempt == 2
    });
    mock.heal(Api::Anthropic);
    let out = c.run(&["wait", "due", "--timeout", "90s"]);
    assert_exit(&out, 0);
    let t = c.status("due");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(t["node"], "box", "{t}");
    // Hours away: queued on its node, saying why and until when; cancel ends the wait.
    let later = now_ms() / 1000 + 3 * 3600;
    mock.fail_task(Api::Anthropic, "later", Fault::UsageLimit(later), None);
    submit(c, "later");
    let t = c.wait_task("later", "the wait for the reset", |t| {
        t.reason.contains("waiting for the reset")
    });
    assert_eq!(t.task_state(), dispatch_core::TaskState::Queued, "{t:?}");
    let st = c.status("later");
    assert!(
        st["waiting"]
            .as_str()
            .unwrap()
            .contains("usage limit resets at"),
        "{st}"
    );
    assert_eq!(st["limit_until_ms"], (later / 60) * 60 * 1000, "{st}");
    // The wait is stored: a coordinator restart keeps it.
    s.c.restart_coordinator();
    let (c, mock) = (&s.c, &s.mock);
    let st = c.status("later");
    assert_eq!(st["state"], "queued", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for the reset"),
        "{st}"
    );
    c.ok(&["cancel", "later"]);
    let t = c.wait_task("later", "the cancel", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state(), dispatch_core::TaskState::Cancelled, "{t:?}");
    // Once: the limit again after the resume fails the task.
    mock.fail_task(Api::Anthropic, "twice", Fault::UsageLimit(due), None);
    submit(c, "twice");
    let out = c.run(&["wait", "twice", "--timeout", "90s"]);
    assert_exit(&out, 12);
    let t = c.status("twice");
    assert_eq!(t["attempt"], 2, "{t}");
    assert!(t["reason"].as_str().unwrap().contains("usage limit"), "{t}");
}
