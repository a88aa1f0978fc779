//! Liveness both ways, with the default heartbeat (3 s): a stopped agent shows disconnected
//! and its task `unreachable` within 10 s, `lost` after the grace, and when it wakes up its
//! fenced worker is stopped, not run twice; a hung coordinator is noticed by its agents within
//! 10 s; SIGTERM ends an agent whatever it is waiting for.

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster, alive, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

fn signal(p: &dispatch_tests::Proc, s: Signal) {
    kill(Pid::from_raw(p.child.id() as i32), s).unwrap();
}

/// The pid of a task's worker, from the agent's record of it.
fn worker_pid(c: &Cluster, node: &str, task: &str) -> i32 {
    let rec = c
        .dir
        .path()
        .join(format!("agent-{node}/running/{task}.run"));
    wait_until("the worker's record", || {
        std::fs::read_to_string(&rec)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("pid=").and_then(|p| p.parse::<i32>().ok()))
    })
}

fn node(c: &Cluster, name: &str) -> v1::Node {
    c.block_on(async {
        c.client()
            .await
            .unwrap()
            .list_nodes(v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
            .into_iter()
            .find(|n| n.name == name)
            .unwrap()
    })
}

#[test]
fn a_stopped_agent_is_noticed_within_ten_seconds_and_its_fenced_worker_never_runs_twice() {
    let grace = Duration::from_secs(12);
    let mut c =
        Cluster::with_coordinator_args(&["--heartbeat-interval", "3s", "--node-timeout", "12s"]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "sleeper",
        "--step",
        "sleep (sleep 120s)",
        "sleep for a long time",
    ]);
    c.wait_task("sleeper", "the worker to start", |t| {
        t.task_state().as_str() == "running"
    });
    let pid = worker_pid(&c, "box", "sleeper");

    signal(c.agent("box"), Signal::SIGSTOP);
    let stopped = Instant::now();
    let t = c.wait_task("sleeper", "the task to turn unreachable", |t| {
        t.task_state().as_str() == "unreachable"
    });
    let detected = stopped.elapsed();
    assert!(
        detected <= Duration::from_secs(10),
        "noticed after {detected:?}"
    );
    assert!(t.reason.contains("stopped answering"), "{}", t.reason);
    assert!(!node(&c, "box").connected);
    let t = c.wait_task("sleeper", "the task to be lost", |t| {
        t.task_state().as_str() == "lost"
    });
    let lost_after = stopped.elapsed();
    assert!(
        lost_after >= grace,
        "lost after {lost_after:?}, before the grace"
    );
    assert!(
        t.reason.contains("did not come back within 12s"),
        "{}",
        t.reason
    );
    println!("SIGSTOP: unreachable after {detected:?}, lost after {lost_after:?}");

    // It wakes up: the node comes back with a new session and stops the fenced worker; the
    // task stays lost, nothing runs twice.
    signal(c.agent("box"), Signal::SIGCONT);
    c.wait_node_connected("box");
    wait_until("the fenced worker to be stopped", || {
        (!alive(pid as u32)).then_some(())
    });
    let t = c.status("sleeper");
    assert_eq!(t["state"], "lost", "{t}");
    let log = c.agent("box").log_text();
    assert_eq!(log.matches("worker started").count(), 1, "{log}");
    assert!(node(&c, "box").epoch >= 2);
    // The node is free for new work.
    c.ok(&["--backend", "sim", "--id", "next", "--step", "x", "next"]);
    let t = c.wait_task("next", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
}

#[test]
fn a_short_stop_within_the_grace_loses_nothing() {
    let mut c = Cluster::with_coordinator_args(&["--heartbeat-interval", "500ms"]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "paused",
        "--step",
        "nap (sleep 4s)",
        "survive a pause",
    ]);
    c.wait_task("paused", "the worker to start", |t| {
        t.task_state().as_str() == "running"
    });
    signal(c.agent("box"), Signal::SIGSTOP);
    c.wait_task("paused", "the task to turn unreachable", |t| {
        t.task_state().as_str() == "unreachable"
    });
    signal(c.agent("box"), Signal::SIGCONT);
    c.wait_task("paused", "the node to claim it back", |t| {
        t.task_state().as_str() == "running"
    });
    let t = c.wait_task("paused", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
}

#[test]
fn agents_notice_a_hung_coordinator_and_sigterm_ends_them_while_they_wait() {
    let mut c = Cluster::with_coordinator_args(&["--heartbeat-interval", "3s"]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "through",
        "--step",
        "nap (sleep 12s)",
        "outlive a hang",
    ]);
    c.wait_task("through", "the worker to start", |t| {
        t.task_state().as_str() == "running"
    });
    signal(&c.coordinator, Signal::SIGSTOP);
    let hung = Instant::now();
    wait_until("the agent to notice the hung coordinator", || {
        c.agents[0]
            .1
            .log_text()
            .contains("no heartbeat from the coordinator")
            .then_some(())
    });
    let noticed = hung.elapsed();
    assert!(
        noticed <= Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    println!("hung coordinator noticed after {noticed:?}");
    signal(&c.coordinator, Signal::SIGCONT);
    let t = c.wait_task("through", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);

    // SIGTERM while connecting to a coordinator that does not answer: the agent exits.
    signal(&c.coordinator, Signal::SIGSTOP);
    wait_until("the agent to be reconnecting", || {
        let log = c.agents[0].1.log_text();
        (log.matches("no heartbeat from the coordinator").count() >= 2).then_some(())
    });
    let asked = Instant::now();
    c.agent("box").terminate();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    signal(&c.coordinator, Signal::SIGCONT);
}
