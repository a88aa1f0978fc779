//! The agent protocol on the wire, driven by a hand-written node over real gRPC: gaps are
//! asked for on the live stream and healed, an event over a limit is kept as history only, a
//! node cannot ack another node's commands, and a node that stops reading its stream is
//! disconnected (its tasks' timers start) instead of being dropped quietly.

use dispatch_proto::v1;
use dispatch_proto::v1::agent_message::Kind as Out;
use dispatch_proto::v1::coordinator_message::Kind as In;
use dispatch_tests::Cluster;
use std::time::Duration;
use tokio::sync::mpsc;

struct FakeNode {
    out: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::CoordinatorMessage>,
}

async fn fake_node(url: &str, name: &str, token: &str) -> FakeNode {
    let channel = dispatch_tests::channel(url, None).await.unwrap();
    let s = dispatch_tests::hello_session(channel, token, name, 2)
        .await
        .unwrap();
    FakeNode {
        out: s.out,
        inbound: s.inbound,
    }
}

fn msg(kind: Out) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

fn event(task: &str, seq: u64, kind: v1::task_event::Kind) -> v1::AgentMessage {
    msg(Out::Event(v1::TaskEvent {
        task_id: task.into(),
        seq,
        at_ms: 1,
        attempt: 1,
        kind: Some(kind),
    }))
}

fn plan(md: &str) -> v1::task_event::Kind {
    v1::task_event::Kind::Plan(v1::PlanUpdated {
        markdown: md.into(),
    })
}

impl FakeNode {
    async fn send(&self, m: v1::AgentMessage) {
        self.out.send(m).await.unwrap();
    }

    /// The next message that is not a heartbeat (fails the test after 10 s).
    async fn next(&mut self) -> In {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("a message from the coordinator within 10 s")
                .unwrap()
                .expect("the stream is open");
            match m.kind {
                Some(In::Heartbeat(_)) => continue,
                Some(k) => return k,
                None => continue,
            }
        }
    }

    /// Waits for an ack of `task` up to `seq` (other messages are skipped).
    async fn acked(&mut self, task: &str, seq: u64) {
        loop {
            if let In::EventAck(a) = self.next().await
                && a.task_id == task
                && a.seq >= seq
            {
                assert_eq!(a.seq, seq, "acked past what was sent");
                return;
            }
        }
    }

    /// The Assign of `task` (acked).
    async fn assigned(&mut self, task: &str) -> u64 {
        loop {
            if let In::Command(c) = self.next().await
                && let Some(v1::command::Kind::Assign(a)) = &c.kind
                && a.task_id == task
            {
                self.send(msg(Out::CommandAck(v1::CommandAck {
                    command_id: c.id,
                    error: String::new(),
                })))
                .await;
                return c.id;
            }
        }
    }
}

fn submit_pinned(c: &Cluster, id: &str, node: &str) {
    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        node,
        "--id",
        id,
        "--step",
        "x",
        "pinned",
    ]);
}

#[test]
fn a_gap_is_asked_for_on_the_live_stream_and_healed() {
    let c = Cluster::new();
    let token = c.node_token("fake");
    c.block_on(async {
        let mut n = fake_node(&c.url, "fake", &token).await;
        submit_pinned(&c, "gappy", "fake");
        n.assigned("gappy").await;
        n.send(event("gappy", 1, plan("- [ ] one\n"))).await;
        n.acked("gappy", 1).await;
        // Event 2 never arrives: 3 is held and 2 is asked for, on this stream.
        n.send(event("gappy", 3, plan("- [ ] three\n"))).await;
        loop {
            match n.next().await {
                In::Resend(r) => {
                    assert_eq!((r.task_id.as_str(), r.from_seq), ("gappy", 2));
                    break;
                }
                In::EventAck(a) => assert_eq!(a.seq, 1, "nothing past the gap is acked"),
                other => panic!("{other:?}"),
            }
        }
        n.send(event("gappy", 2, plan("- [ ] two\n"))).await;
        n.send(event("gappy", 3, plan("- [x] three\n"))).await;
        n.acked("gappy", 3).await;
        // A node that no longer has what is asked for says so; the task goes on after it.
        n.send(event("gappy", 6, plan("- [x] six\n"))).await;
        loop {
            if let In::Resend(r) = n.next().await {
                assert_eq!(r.from_seq, 4);
                break;
            }
        }
        n.send(msg(Out::Unavailable(v1::EventsUnavailable {
            task_id: "gappy".into(),
            from_seq: 4,
            next_seq: 6,
        })))
        .await;
        n.send(event("gappy", 6, plan("- [x] six\n"))).await;
        n.acked("gappy", 6).await;
    });
    let t = c.status("gappy");
    assert_eq!(t["items"][0]["text"], "six", "{t}");
    let log = c.coordinator.log_text();
    assert!(
        log.contains("expected=2") && log.contains("got=3"),
        "the gap is logged with both numbers:\n{log}"
    );
    assert!(log.contains("lost events 4..5"), "{log}");
}

#[test]
fn an_event_over_a_limit_or_unreadable_is_history_only_and_the_stream_goes_on() {
    let c = Cluster::new();
    let token = c.node_token("fake");
    c.block_on(async {
        let mut n = fake_node(&c.url, "fake", &token).await;
        submit_pinned(&c, "big", "fake");
        n.assigned("big").await;
        let huge = "?".repeat(70 * 1024);
        n.send(event(
            "big",
            1,
            v1::task_event::Kind::Question(v1::QuestionAsked { seq: 1, text: huge }),
        ))
        .await;
        n.acked("big", 1).await;
        n.send(event("big", 2, plan("- [x] fine\n"))).await;
        n.acked("big", 2).await;
        // An event that cannot be read (no kind): its seq counts, the stream goes on.
        n.send(msg(Out::Event(v1::TaskEvent {
            task_id: "big".into(),
            seq: 3,
            at_ms: 1,
            attempt: 1,
            kind: None,
        })))
        .await;
        n.acked("big", 3).await;
        n.send(event("big", 4, plan("- [x] fine\n- [x] still\n")))
            .await;
        n.acked("big", 4).await;
    });
    let t = c.status("big");
    assert_eq!(t["questions"].as_array().unwrap().len(), 0, "{t}");
    assert_eq!(t["state"], "assigned");
    assert_eq!(t["items"][0]["status"], "done");
    assert_eq!(t["items"][1]["status"], "done", "{t}");
    assert!(
        c.coordinator
            .log_text()
            .contains("question: is 71680 bytes, over the limit of 65536 bytes"),
        "{}",
        c.coordinator.log_text()
    );
}

#[test]
fn a_node_cannot_ack_another_nodes_command() {
    let c = Cluster::new();
    let (ta, tb) = (c.node_token("node-a"), c.node_token("node-b"));
    c.block_on(async {
        let mut a = fake_node(&c.url, "node-a", &ta).await;
        let b = fake_node(&c.url, "node-b", &tb).await;
        submit_pinned(&c, "theirs", "node-a");
        // node-a sees its Assign but does not ack it; node-b tries to.
        let id = loop {
            if let In::Command(cmd) = a.next().await {
                break cmd.id;
            }
        };
        b.send(msg(Out::CommandAck(v1::CommandAck {
            command_id: id,
            error: String::new(),
        })))
        .await;
        // A heartbeat from b after its ack: once it is answered, the ack was handled.
        b.send(msg(Out::Heartbeat(v1::Heartbeat {
            running: 0,
            draining: false,
        })))
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(a);
        // node-a's next session gets the command again: it is still not acked.
        let mut a = loop {
            let mut client = c.client().await.unwrap();
            let gone = client
                .list_nodes(v1::ListNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes
                .iter()
                .any(|n| n.name == "node-a" && !n.connected);
            if gone {
                break fake_node(&c.url, "node-a", &ta).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        loop {
            if let In::Command(cmd) = a.next().await {
                assert_eq!(cmd.id, id, "the same Assign, resent");
                break;
            }
        }
    });
}

#[test]
fn a_node_that_stops_reading_is_disconnected_not_forgotten() {
    let c = Cluster::new();
    let token = c.node_token("deaf");
    c.block_on(async {
        let n = fake_node(&c.url, "deaf", &token).await;
        // Acks for a node that heartbeats but never reads (events of unknown tasks are acked
        // one task at a time): more than its queue and the HTTP/2 windows hold. The
        // coordinator ends the session once a send has waited the silence time.
        let out = n.out.clone();
        let feeder = tokio::spawn(async move {
            for i in 0..150_000u32 {
                if out
                    .send(event(&format!("ghost-{i}"), 1, plan("x")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let hb = msg(Out::Heartbeat(v1::Heartbeat {
                    running: 0,
                    draining: false,
                }));
                if out.send(hb).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut client = c.client().await.unwrap();
            let nodes = client
                .list_nodes(v1::ListNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes;
            if nodes.iter().any(|n| n.name == "deaf" && !n.connected) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the deaf node is still listed as connected"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Its stream is still open on this side: the coordinator ended it, not the node.
        feeder.abort();
        drop(n);
    });
    assert!(
        c.coordinator.log_text().contains("has not read its stream"),
        "{}",
        c.coordinator.log_text()
    );
}

#[test]
fn a_node_cannot_bring_a_task_home_on_another_branch() {
    let c = Cluster::new();
    let token = c.node_token("evil");
    c.block_on(async {
        let mut n = fake_node(&c.url, "evil", &token).await;
        submit_pinned(&c, "mine", "evil");
        n.assigned("mine").await;
        // Its "changes" name another task's branch, with a bundle to force-update it.
        n.send(event(
            "mine",
            1,
            v1::task_event::Kind::Changes(v1::ChangesReady {
                branch: "dispatch/alice-older".into(),
                base: "a".repeat(40),
                head: "b".repeat(40),
                commits: 1,
                files: 1,
                delivery: "bundle".into(),
                bundle_bytes: 4,
                ..Default::default()
            }),
        ))
        .await;
        n.send(event(
            "mine",
            2,
            v1::task_event::Kind::Bundle(v1::BundleChunk {
                offset: 0,
                data: b"evil".to_vec(),
            }),
        ))
        .await;
        n.acked("mine", 2).await;
    });
    let t = c.status("mine");
    let changes = &t["changes"];
    assert_eq!(changes["branch"], "dispatch/mine", "{t}");
    assert_eq!(changes["bundle_bytes"], 0, "{t}");
    assert!(
        changes["error"]
            .as_str()
            .unwrap()
            .contains("reported this task's changes on branch `dispatch/alice-older`, not `dispatch/mine`; they were refused"),
        "{t}"
    );
    let out = c.run(&["fetch", "mine"]);
    assert!(!out.status.success());
}
