//! Seed behaviours a new user tries (issue 15): errors that say what a node lacks and has, a
//! refused submit that changes nothing, the state after answering a blocked task, a retried
//! plan whose next item fails, and an empty `--plan` file.

use dispatch_tests::{AgentOpts, Cluster, assert_exit, text};
use std::path::Path;

fn stub(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// node-a offers only sim; node-b offers codex (a stub) listing one model.
fn two_nodes() -> Cluster {
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("node-a", 2));
    let bin = c.dir.path().join("bin-b");
    std::fs::create_dir_all(&bin).unwrap();
    stub(&bin, "codex", "exit 0");
    let cfg = c.dir.path().join("node-b.yaml");
    std::fs::write(&cfg, "backends:\n  codex:\n    models: [gpt-5.2]\n").unwrap();
    let mut b = AgentOpts::new("node-b", 2);
    b.path_prefix = Some(bin);
    b.config = Some(cfg);
    c.add_agent(b);
    let home = c.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.yaml"),
        "default: gpt-5.2\n\nbackends:\n  codex:\n    command: codex exec --full-auto\n\nmodels:\n  gpt-5.2: { backend: codex }\n",
    )
    .unwrap();
    c
}

#[test]
fn errors_say_what_the_node_lacks_and_what_it_has() {
    let c = two_nodes();
    let out = c.run(&["run", "--remote", "node-a", "--backend", "claude", "x"]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("node `node-a` has no backend `claude`"),
        "{err}"
    );
    assert!(err.contains("node-a: sim"), "{err}");

    let config = c.dir.path().join("home/config.yaml");
    let before = std::fs::read_to_string(&config).unwrap();
    let out = c.run(&["run", "--remote", "node-b", "--model", "gpt-9", "x"]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("node `node-b` does not offer model `gpt-9`"),
        "{err}"
    );
    assert!(err.contains("gpt-5.2"), "{err}");
    // A refused submit changes nothing: no "Added gpt-9", the config as it was.
    assert!(!err.contains("Added gpt-9"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
}

#[test]
fn a_model_named_by_an_accepted_submit_is_added_to_the_config() {
    let c = two_nodes();
    // gpt-5.3-codex is not in the config; node-c's codex lists it (the seed's codex models).
    let bin = c.dir.path().join("bin-c");
    std::fs::create_dir_all(&bin).unwrap();
    stub(&bin, "codex", "exit 0");
    let mut n = AgentOpts::new("node-c", 2);
    n.path_prefix = Some(bin);
    let mut c = c;
    c.add_agent(n);
    let out = c.run(&[
        "run",
        "--remote",
        "node-c",
        "--model",
        "gpt-5.3-codex",
        "--id",
        "ok",
        "--yes",
        "x",
    ]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("Added gpt-5.3-codex (codex)"),
        "{}",
        text(&out.stderr)
    );
    let config = std::fs::read_to_string(c.dir.path().join("home/config.yaml")).unwrap();
    assert!(config.contains("gpt-5.3-codex"), "{config}");
}

#[test]
fn answering_a_blocked_task_shows_it_running_while_the_new_worker_works() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "blocky",
        "--step",
        "c (ask: which?; timeout 1s)",
        "--step",
        "after (sleep 4s)",
        "block then resume",
    ]);
    c.wait_task("blocky", "the task to block", |t| {
        t.task_state().as_str() == "blocked"
    });
    c.ok(&["answer", "blocky", "A"]);
    let t = c.wait_task("blocky", "the new worker to work", |t| {
        t.attempt == 2 && t.task_state().as_str() == "running"
    });
    assert!(t.questions.iter().all(|q| q.answer.is_some()));
    // While the resumed worker sleeps on the next item, nothing says it waits.
    c.wait_task("blocky", "the resumed worker past the answered item", |t| {
        t.plan
            .as_ref()
            .is_some_and(|p| p.items.first().is_some_and(|i| i.status == 2))
    });
    let s = c.status("blocky");
    assert_eq!(s["state"], "running", "{s}");
    let inbox = c.ok(&["inbox", "--list"]);
    assert!(!inbox.contains("blocky"), "{inbox}");
    let t = c.wait_task("blocky", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
}

#[test]
fn a_retried_plan_whose_next_item_fails_is_a_worker_failure_not_a_start_failure() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "flaky",
        "--step",
        "one",
        "--step",
        "two (exit 3)",
        "fail on two",
    ]);
    let t = c.wait_task("flaky", "the first run to fail", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "failed");
    c.ok(&["retry", "flaky"]);
    let t = c.wait_task("flaky", "the retry to end", |t| {
        t.attempt == 2 && t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "failed");
    assert!(!t.reason.contains("could not start"), "{}", t.reason);
    assert!(t.reason.contains("exited with status 3"), "{}", t.reason);
    // Issue 23 item 7: the failure (a CLI's error, advice meant for the user) was pasted into
    // the next worker's prompt. The retried worker gets the seed's resume instructions only.
    let db = c.dir.path().join("coordinator/dispatch.db");
    let received: String = c.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        sqlx::query_scalar("SELECT worker_prompt FROM task_texts WHERE task_id = 'flaky'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert!(
        received.contains("A previous worker stopped before finishing. Items already checked"),
        "{received}"
    );
    assert!(
        !received.contains("status 3") && !received.contains("dispatch retry"),
        "the failure reached the worker's prompt:\n{received}"
    );
}

#[test]
fn an_empty_plan_file_is_the_same_error_as_a_plan_without_items() {
    let c = Cluster::with_node("box");
    let empty = c.dir.path().join("empty.md");
    std::fs::write(&empty, "").unwrap();
    let itemless = c.dir.path().join("itemless.md");
    std::fs::write(&itemless, "# Just a title\n\nsome prose\n").unwrap();
    for f in [&empty, &itemless] {
        let out = c.run(&["--backend", "sim", "--plan", f.to_str().unwrap(), "x"]);
        assert_exit(&out, 1);
        let err = text(&out.stderr);
        assert!(
            err.contains("has no checklist items; write items as `- [ ] step` lines"),
            "{err}"
        );
    }
    assert!(c.ok(&["status"]).contains("no tasks yet"));
}
