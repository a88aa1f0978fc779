//! Property test (issue 23): the scheduler is kicked by every change that can free or open
//! capacity. Random sequences of submits, cordons, uncordons, drains starting and ending (as
//! the node's heartbeat says), nodes leaving and coming back (with another capacity) run on the
//! real coordinator (domain rules, SQLite store, scheduler — which has no polling loop); after
//! each step, no task stays queued while a node could run it, and none is assigned to a node
//! that may not take it. "Could run" comes from the test's own model of the nodes, not from the
//! coordinator.

use dispatch_coordinator::domain::SubmitSpec;
use dispatch_coordinator::model::{BackendRecord, NodeHello, NodeRecord, Principal};
use dispatch_coordinator::{Coordinator, CoordinatorConfig};
use dispatch_core::TaskState;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// A task pinned to node i, or (None) for any node.
    Submit(Option<usize>),
    Cordon(usize),
    Uncordon(usize),
    /// The node's heartbeat says it drains (true) or that its drain ended.
    Drain(usize, bool),
    Leave(usize),
    /// The node connects again (if away) with this capacity.
    Return(usize, u32),
}

fn step() -> impl Strategy<Value = Step> {
    let node = 0..NODES;
    prop_oneof![
        4 => proptest::option::of(node.clone()).prop_map(Step::Submit),
        1 => node.clone().prop_map(Step::Cordon),
        2 => node.clone().prop_map(Step::Uncordon),
        3 => (node.clone(), any::<bool>()).prop_map(|(n, d)| Step::Drain(n, d)),
        1 => node.clone().prop_map(Step::Leave),
        2 => (node, 1u32..4).prop_map(|(n, c)| Step::Return(n, c)),
    ]
}

/// What the test believes of one node.
#[derive(Debug, Clone, Default)]
struct Model {
    session: Option<(dispatch_coordinator::store::SessionKey, u64)>,
    capacity: u32,
    cordoned: bool,
    draining: bool,
}

fn name(i: usize) -> String {
    format!("n{i}")
}

fn hello(i: usize, capacity: u32) -> NodeHello {
    NodeHello {
        node: NodeRecord {
            name: name(i),
            capacity,
            backends: vec![BackendRecord {
                name: "sim".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        cursors: vec![],
    }
}

async fn connect(c: &Arc<Coordinator>, i: usize, capacity: u32, m: &mut Model) {
    let s = c.open_session(&hello(i, capacity), "model").await.unwrap();
    m.session = Some((s.key, s.granted.conn_id));
    m.capacity = capacity;
    m.draining = false;
}

async fn case(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::new(dir.path().to_path_buf());
    config.notify = Default::default();
    // Tasks of a node that left stay unreachable (not lost) for the whole case.
    config.node_timeout = Duration::from_secs(3600);
    let c = Coordinator::start(config).await.unwrap();
    let mut nodes: Vec<Model> = vec![Model::default(); NODES];
    for (i, m) in nodes.iter_mut().enumerate() {
        connect(&c, i, 1, m).await;
    }
    let mut submitted: Vec<(String, Option<usize>)> = Vec::new();
    let mut placed = std::collections::HashSet::new();
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Submit(pin) => {
                let id = format!("t{n}");
                let submitted_now = c
                    .submit(
                        SubmitSpec {
                            id: id.clone(),
                            prompt: "model task".into(),
                            steps: vec!["a".into()],
                            backend: "sim".into(),
                            remote: pin.map(name).unwrap_or_default(),
                            ..Default::default()
                        },
                        &Principal::Local,
                    )
                    .await;
                match submitted_now {
                    Ok(_) => submitted.push((id, pin)),
                    // A submit pinned to a node that is away is refused (it says so).
                    Err(e) => assert!(
                        pin.is_some_and(|i| nodes[i].session.is_none()),
                        "submit refused: {e}"
                    ),
                }
            }
            Step::Cordon(i) | Step::Uncordon(i) => {
                let cordon = matches!(step, Step::Cordon(_));
                c.set_cordoned(&name(i), cordon, None, &Principal::Local)
                    .await
                    .unwrap();
                nodes[i].cordoned = cordon;
            }
            Step::Drain(i, draining) => {
                if let Some((key, conn)) = &nodes[i].session {
                    c.heartbeat(&key.node, *conn, draining);
                    nodes[i].draining = draining;
                }
            }
            Step::Leave(i) => {
                if let Some((key, conn)) = nodes[i].session.take() {
                    c.session_ended(&key, conn).await;
                }
            }
            Step::Return(i, capacity) => {
                if nodes[i].session.is_none() {
                    connect(&c, i, capacity, &mut nodes[i]).await;
                }
            }
        }
        check(&c, &nodes, &submitted, &mut placed).await;
    }
}

/// No task stays queued while a node could run it; none is placed where it may not go (a task
/// placed since the last look went to a node that is connected, not cordoned, not draining).
async fn check(
    c: &Arc<Coordinator>,
    nodes: &[Model],
    submitted: &[(String, Option<usize>)],
    placed: &mut std::collections::HashSet<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tasks = Vec::new();
        for (id, pin) in submitted {
            tasks.push((c.task(id).await.unwrap(), *pin));
        }
        // Slots each node holds now: tasks the coordinator has given it and not ended.
        let held = |i: usize| {
            tasks
                .iter()
                .filter(|(t, _)| t.node == name(i) && t.state.holds_slot())
                .count() as u32
        };
        let open = |i: usize| {
            let m = &nodes[i];
            m.session.is_some() && !m.cordoned && !m.draining && held(i) < m.capacity
        };
        for (t, pin) in &tasks {
            if t.state == TaskState::Assigned && placed.insert(t.id.clone()) {
                let i: usize = t.node[1..].parse().unwrap();
                assert!(
                    nodes[i].session.is_some() && !nodes[i].cordoned && !nodes[i].draining,
                    "task {} went to {} which may not take it: {:?}",
                    t.id,
                    t.node,
                    nodes[i]
                );
                assert!(pin.is_none_or(|p| p == i), "task {} pinned elsewhere", t.id);
            }
        }
        let stuck: Vec<&str> = tasks
            .iter()
            .filter(|(t, pin)| {
                t.state == TaskState::Queued
                    && match pin {
                        Some(i) => open(*i),
                        None => (0..NODES).any(open),
                    }
            })
            .map(|(t, _)| t.id.as_str())
            .collect();
        if stuck.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queued while a node could run them: {stuck:?}; nodes: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn cases() -> u32 {
    std::env::var("DISPATCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_task_stays_queued_while_a_node_could_run_it(steps in prop::collection::vec(step(), 1..24)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(case(steps));
    }
}
