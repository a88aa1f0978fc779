//! Routing across several nodes: pools (labels), backends (custom ones from an agent config),
//! per-backend caps, queue order and `--after` chains.

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster, text};

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
    let none = c.run(&["--backend", "sim", "--pool", "zone=ap", "x"]);
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
