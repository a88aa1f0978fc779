//! Routing across several nodes: pools (labels), backends (custom ones from an agent config),
//! per-backend caps, queue order and `--after` chains.

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster, git, text};

#[test]
fn pools_backends_caps_queue_order_and_after_chains() {
    let mut c = Cluster::new();
    let cfg = c.dir.path().join("gpu-agent.yaml");
    let sim = dispatch_tests::bin("dispatch-agent");
    // A custom backend ("fast") that is the sim worker under another name, capped at 1.
    std::fs::write(&cfg, format!("labels: {{ gpu: a100, zone: eu }}\nbackends:\n  fast:\n    command: {} sim-worker\n    models: [tiny]\n    max_tasks: 1\n", sim.display())).unwrap();
    let mut gpu = AgentOpts::new("gpu", 3);
    gpu.config = Some(cfg);
    c.add_agent(gpu);
    let mut eu = AgentOpts::new("cpu-eu", 1);
    eu.labels = vec!["zone=eu".into()];
    c.add_agent(eu);
    let mut us = AgentOpts::new("cpu-us", 1);
    us.labels = vec!["zone=us".into()];
    c.add_agent(us);

    let nodes: serde_json::Value = serde_json::from_str(&c.ok(&["nodes", "--json"])).unwrap();
    let gpu_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "gpu")
        .unwrap();
    assert_eq!(gpu_node["backends"], serde_json::json!(["sim", "fast"]));
    assert_eq!(gpu_node["models"]["fast"], serde_json::json!(["tiny"]));
    assert_eq!(gpu_node["backend_caps"]["fast"], 1);

    // Pools.
    c.ok(&[
        "--backend",
        "sim",
        "--pool",
        "zone=us",
        "--id",
        "p-us",
        "--step",
        "x",
        "--wait",
        "us only",
    ]);
    assert_eq!(c.status("p-us")["node"], "cpu-us");
    c.ok(&[
        "--backend",
        "sim",
        "--pool",
        "gpu=a100,zone=eu",
        "--id",
        "p-gpu",
        "--step",
        "x",
        "--wait",
        "gpu",
    ]);
    assert_eq!(c.status("p-gpu")["node"], "gpu");
    let none = c.run(&["run", "--backend", "sim", "--pool", "zone=ap", "x"]);
    assert!(text(&none.stderr).contains("no connected node has the labels zone=ap; nodes and their labels: cpu-eu: zone=eu; cpu-us: zone=us; gpu: gpu=a100,zone=eu"), "{}", text(&none.stderr));

    // Backend and model matching: only gpu has `fast`, and it lists only `tiny`.
    c.ok(&[
        "--backend",
        "fast",
        "--model",
        "tiny",
        "--id",
        "b-fast",
        "--step",
        "x",
        "--wait",
        "fast",
    ]);
    assert_eq!(c.status("b-fast")["node"], "gpu");

    // The per-backend cap queues a second `fast` task on a node with free slots; it starts
    // when the first ends, in order, and the `--after` chain waits for its dependency.
    for id in ["cap-1", "cap-2"] {
        c.ok(&[
            "--backend",
            "fast",
            "--id",
            id,
            "--step",
            "work (sleep 300ms)",
            "capped",
        ]);
    }
    assert_eq!(c.status("cap-2")["state"], "queued");
    c.ok(&[
        "--backend",
        "sim",
        "--after",
        "cap-2",
        "--id",
        "then",
        "--step",
        "x",
        "after",
    ]);
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "doomed",
        "--step",
        "work (sleep 200ms)",
        "--step",
        "(fail: broken)",
        "fails",
    ]);
    c.ok(&[
        "--backend",
        "sim",
        "--after",
        "doomed",
        "--id",
        "never",
        "--step",
        "x",
        "after a failure",
    ]);
    let never = c.wait_task("never", "the failed dependency to fail it", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(never.task_state().as_str(), "failed");
    assert!(
        never.reason.starts_with("dependency `doomed` ended failed"),
        "{}",
        never.reason
    );
    let tasks: Vec<v1::Task> = ["cap-1", "cap-2", "then"]
        .iter()
        .map(|id| c.wait_task(id, "the end", |t| t.task_state().is_terminal()))
        .collect();
    for t in &tasks {
        assert_eq!(
            t.task_state().as_str(),
            "completed",
            "{}: {}",
            t.id,
            t.reason
        );
    }
    assert!(
        tasks[1].started_at_ms >= tasks[0].ended_at_ms
            && tasks[2].started_at_ms >= tasks[1].ended_at_ms
    );
    eprintln!(
        "hand-offs: {} ms, {} ms",
        tasks[1].started_at_ms - tasks[0].ended_at_ms,
        tasks[2].started_at_ms - tasks[1].ended_at_ms
    );
}

#[test]
fn a_task_for_a_repository_the_node_lacks_is_cloned_and_run_at_the_sent_commit() {
    // The repository is a path on this machine: the node must allow `file` repositories.
    let mut c = Cluster::new();
    let cfg = c.dir.path().join("agent.yaml");
    std::fs::write(&cfg, "repositories:\n  schemes: [https, ssh, file]\n").unwrap();
    let mut o = dispatch_tests::AgentOpts::new("box", 2);
    o.config = Some(cfg);
    c.add_agent(o);
    let root = c.dir.path();
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("hello.txt"), "v1\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "v1"]);
    let bare = root.join("remote.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let mine = root.join("mine");
    git(
        root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            mine.to_str().unwrap(),
        ],
    );
    let commit = git(&mine, &["rev-parse", "HEAD"]);

    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "sim",
            "--id",
            "remote-ws",
            "--step",
            "read hello.txt",
            "--wait",
            "work on the repo",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let ws = root.join("agent-box/workspaces/remote-ws");
    assert_eq!(
        git(&ws, &["rev-parse", "HEAD"]),
        commit,
        "the worktree is at the sent commit"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("hello.txt")).unwrap(),
        "v1\n"
    );
    assert!(
        ws.join(".dispatch/tasks/remote-ws/output.md").exists(),
        "the worker ran in the worktree"
    );
    assert!(
        root.join("agent-box/repos").read_dir().unwrap().count() == 1,
        "cloned into the node's cache"
    );

    // A repository the node cannot reach fails the task with git's message.
    git(
        &mine,
        &["remote", "set-url", "origin", "/nonexistent/nowhere.git"],
    );
    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "sim",
            "--id",
            "unreachable",
            "--step",
            "x",
            "--wait",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    let reason = c.status("unreachable")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    // The kind of failure, not git's own text (that stays in the node's log).
    assert!(
        reason.contains("git clone /nonexistent/nowhere.git failed")
            && reason.contains("no such repository, or the node has no access to it"),
        "{reason}"
    );
}

#[test]
fn priority_orders_the_queue() {
    // One slot, held by a busy task; then a low- and a high-priority task queue up. When the
    // slot frees, the high one takes it and the low one waits for it to end.
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("solo", 1));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "busy",
        "--step",
        "hold (sleep 400ms)",
        "busy",
    ]);
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "low",
        "--priority",
        "-5",
        "--step",
        "x",
        "low",
    ]);
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "high",
        "--priority",
        "10",
        "--step",
        "x",
        "high",
    ]);
    assert_eq!(c.status("high")["queue_position"], 1);
    assert_eq!(c.status("low")["queue_position"], 2);
    let high = c.wait_task("high", "the end", |t| t.task_state().is_terminal());
    let low = c.wait_task("low", "the end", |t| t.task_state().is_terminal());
    assert!(
        high.ended_at_ms <= low.started_at_ms,
        "high ran {}..{}, low started at {}",
        high.started_at_ms,
        high.ended_at_ms,
        low.started_at_ms
    );
}
