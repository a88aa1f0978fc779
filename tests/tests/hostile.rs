//! What a hostile or broken worker, a second agent under a taken name, and a node that is
//! away for a while can do to the system: each is an error that names what happened, and
//! nothing else is harmed.

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster, text, wait_until};
use std::path::Path;
use std::time::{Duration, Instant};

/// A node with a custom backend `evil` that runs `script` (with the task dir in
/// $DISPATCH_TASK_DIR) besides the sim worker.
fn evil_node(c: &mut Cluster, name: &str, script: &str) {
    let dir = c.dir.path().join(format!("evil-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = dir.join("evil.sh");
    std::fs::write(&sh, format!("#!/bin/sh\n{script}\n")).unwrap();
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!("backends:\n  evil:\n    command: sh {}\n", sh.display()),
    )
    .unwrap();
    let mut o = AgentOpts::new(name, 2);
    o.config = Some(cfg);
    c.add_agent(o);
}

fn node_connected(c: &Cluster, name: &str) -> bool {
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        client
            .list_nodes(v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
            .iter()
            .any(|n| n.name == name && n.connected)
    })
}

#[test]
fn a_5_mb_plan_fails_its_task_with_the_reason_and_the_node_runs_on() {
    let mut c = Cluster::new();
    evil_node(
        &mut c,
        "box",
        "head -c 5242880 /dev/zero | tr '\\0' x > \"$DISPATCH_TASK_DIR/plan.md\"; sleep 30",
    );
    c.ok(&["--backend", "evil", "--id", "huge", "write a huge plan"]);
    let t = c.wait_task("huge", "the task to fail", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "failed", "{}", t.reason);
    assert!(
        // The worker may still be writing when the agent looks: any size past the limit.
        t.reason.contains("/.dispatch/tasks/huge/plan.md is ")
            && t.reason.contains(", over the 256 KiB limit")
            && t.reason.contains("stopped by the agent on node `box`"),
        "{}",
        t.reason
    );
    // Nothing over the limit was stored or shipped (what was seen while the worker was still
    // writing, under the limit, may be); the node is fine and runs the next task.
    assert!(t.plan.unwrap().markdown.len() <= 256 * 1024);
    assert!(node_connected(&c, "box"));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "after",
        "--step",
        "one",
        "still fine",
    ]);
    let t = c.wait_task("after", "the next task", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let log = c.agents[0].1.log_text();
    assert!(
        !log.contains("reconnecting"),
        "the node never lost its session:\n{log}"
    );
}

#[test]
fn a_fifo_question_or_a_linked_plan_is_a_task_error_never_a_hung_node() {
    let mut c = Cluster::new();
    let secret = c.dir.path().join("id_rsa");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    evil_node(
        &mut c,
        "box",
        &format!(
            "case \"$*\" in\n\
             *fifo*) mkfifo \"$DISPATCH_TASK_DIR/ipc/001.question\" ;;\n\
             *link*) ln -sf {} \"$DISPATCH_TASK_DIR/ipc/001.question\" ;;\n\
             esac\nsleep 30",
            secret.display()
        ),
    );
    c.ok(&["--backend", "evil", "--id", "fifo", "ask through a fifo"]);
    let t = c.wait_task("fifo", "the task to fail", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "failed");
    assert!(t.reason.contains("001.question is a FIFO"), "{}", t.reason);

    c.ok(&["--backend", "evil", "--id", "link", "ask through a link"]);
    let t = c.wait_task("link", "the task to fail", |t| t.task_state().is_terminal());
    assert!(t.reason.contains("symbolic link"), "{}", t.reason);
    assert!(
        t.questions.is_empty(),
        "the key never reached the coordinator"
    );
    let status = c.ok(&["status", "link"]);
    assert!(!status.contains("PRIVATE KEY"), "{status}");

    // The node answers SIGTERM at once.
    let started = Instant::now();
    c.agent("box").terminate();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_second_agent_cannot_take_over_a_live_node() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        "box",
        "--id",
        "held",
        "--step",
        "hold (sleep 3s)",
        "stay",
    ]);
    c.wait_task("held", "the worker to start", |t| {
        t.task_state().as_str() == "running"
    });
    let own = c.dir.path().join("impostor-work");
    std::fs::create_dir_all(&own).unwrap();
    let mut o = AgentOpts::new("box", 8);
    o.workdir = Some(own.clone());
    let impostor = c.spawn_agent(&o);
    wait_until("the impostor to be refused", || {
        let log = impostor.log_text();
        log.contains("node `box` is already connected from 127.0.0.1:")
            .then_some(())
    });
    let log = impostor.log_text();
    assert!(
        log.contains("started") && log.contains("another --name"),
        "{log}"
    );
    // The real node keeps its task and gets the next pinned one.
    assert!(node_connected(&c, "box"));
    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        "box",
        "--id",
        "next",
        "--step",
        "x",
        "x",
    ]);
    for id in ["held", "next"] {
        let t = c.wait_task(id, "completion", |t| t.task_state().is_terminal());
        assert_eq!(t.task_state().as_str(), "completed", "{id}: {}", t.reason);
    }
    assert!(
        !own.join(".dispatch").exists(),
        "nothing ran on the impostor"
    );
}

/// Issue 23: an agent with no token was told to "set DISPATCH_TOKEN" (only
/// DISPATCH_AGENT_TOKEN works for an agent), and a bogus, revoked or other node's token, or a
/// name another live agent holds, made it retry forever with exit status 0 never reached — under
/// systemd or Kubernetes it failed unseen. Each now ends the agent with status 78 and the reason
/// once refusals have lasted --give-up-after (and 3 tries); a coordinator that is merely away
/// is retried as before.
#[test]
fn an_agent_refused_for_good_exits_78_and_says_why() {
    let c = Cluster::with_node("box");
    let revoked = c.block_on(async {
        let mut admin = c.client().await.unwrap();
        let t = admin
            .create_token(v1::CreateTokenRequest {
                node: "gone".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        admin
            .revoke_token(v1::RevokeTokenRequest {
                id: t.info.unwrap().id,
            })
            .await
            .unwrap();
        t.token
    });
    let box_token = c.node_token("box");
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("no-token", None, "set DISPATCH_AGENT_TOKEN"),
        (
            "bogus",
            Some("dsp_0123456789abcdef_bogus"),
            "the token is not valid here",
        ),
        ("gone", Some(&revoked), "the token is not valid here"),
        ("other", Some(&box_token), "this node token is for `box`"),
        ("box", Some(&box_token), "node `box` is already connected"),
    ];
    let mut agents = Vec::new();
    for (name, token, _) in &cases {
        let mut o = AgentOpts::new(name, 1);
        o.no_token = true;
        if let Some(t) = token {
            o.env.push(("DISPATCH_AGENT_TOKEN".into(), t.to_string()));
        }
        let own = c.dir.path().join(format!("refused-{name}"));
        std::fs::create_dir_all(&own).unwrap();
        o.workdir = Some(own);
        o.args = vec!["--give-up-after".into(), "1s".into()];
        agents.push(c.spawn_agent(&o));
    }
    for ((name, _, why), mut agent) in cases.iter().zip(agents) {
        let status = wait_until(&format!("agent `{name}` to give up"), || {
            agent.child.try_wait().unwrap()
        });
        let log = agent.log_text();
        assert_eq!(status.code(), Some(78), "{name}: {log}");
        assert!(log.contains(why), "{name}: expected {why:?} in:\n{log}");
        assert!(
            log.contains("times in a row, and retrying does not fix it"),
            "{name}: {log}"
        );
        assert!(!log.contains("set DISPATCH_TOKEN "), "{name}: {log}");
    }
    // The real node was never disturbed.
    assert!(node_connected(&c, "box"));

    // A coordinator that is away is not a refusal: the agent keeps trying past the limit.
    let mut o = AgentOpts::new("patient", 1);
    o.via = Some({
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    });
    o.args = vec!["--give-up-after".into(), "1s".into()];
    let mut patient = c.spawn_agent(&o);
    wait_until("the patient agent to retry for over 2 s", || {
        (patient.log_text().matches("retrying in").count() >= 6).then_some(())
    });
    assert!(
        patient.child.try_wait().unwrap().is_none(),
        "{}",
        patient.log_text()
    );
    patient.kill();
}

/// Unacked commands for `node` in the coordinator's store.
fn pending_for(db: &Path, node: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx_pool(db).await;
        sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE node = ?1 AND acked_ms IS NULL")
            .bind(node)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

/// 2,000 notes (`DISPATCH_SOAK_NOTES=100000` for the soak in RELIABILITY.md): more than the
/// node's stream queue holds, so they must be streamed after the session is up.
#[test]
fn two_thousand_notes_sent_while_a_node_is_away_all_arrive() {
    // A grace longer than sending the notes takes, so the task waits for its node.
    let mut c = Cluster::with_coordinator_args(&["--node-timeout", "900s"]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "noted",
        "--step",
        "wait (ask: go on?)",
        "finish",
        "collect notes",
    ]);
    c.wait_task("noted", "the question", |t| {
        t.questions.iter().any(|q| q.answer.is_none())
    });
    c.agent("box").kill();
    let notes: usize = std::env::var("DISPATCH_SOAK_NOTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let sent = Instant::now();
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        for i in 0..notes {
            client
                .add_note(v1::AddNoteRequest {
                    id: "noted".into(),
                    text: format!("note {i}"),
                })
                .await
                .unwrap();
        }
    });
    let sent = sent.elapsed();
    let back = Instant::now();
    c.restart_agent("box", AgentOpts::new("box", 2));
    let connected = back.elapsed();
    let db = c.dir.path().join("coordinator/dispatch.db");
    let deadline = Instant::now() + Duration::from_secs(30 + notes as u64 / 200);
    while pending_for(&db, "box") > 0 {
        assert!(
            Instant::now() < deadline,
            "the node never took every command"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = back.elapsed();
    let plan = c.workdir().join(".dispatch/tasks/noted/plan.md");
    let text = std::fs::read_to_string(&plan).unwrap();
    let arrived = text.matches("> **Note from dispatcher:** note ").count();
    println!(
        "{notes} notes stored in {sent:?} while the node was away; it reconnected in {connected:?} and took them all in {drained:?}; {arrived} fit in plan.md"
    );
    if notes <= 2000 {
        assert_eq!(arrived, notes);
    } else {
        // plan.md holds at most 256 KiB: the rest are refused by the node, each with a reason.
        assert!(arrived > 2000, "{arrived}");
    }
    c.ok(&["answer", "noted", "yes"]);
    let t = c.wait_task("noted", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
}

#[test]
fn a_thousand_item_plan_ticked_one_by_one_stores_the_changes_only() {
    let c = Cluster::with_node("box");
    let mut args: Vec<String> = ["--backend", "sim", "--id", "long"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..999 {
        args.push("--step".into());
        args.push(format!(
            "item {i:03} of a long checklist that a worker ticks one by one"
        ));
    }
    args.push("tick them all".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ok(&refs);
    let t = c.wait_task("long", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let plan_bytes = t.plan.as_ref().unwrap().markdown.len();
    let (events, stored) = plan_history(&c.dir.path().join("coordinator/dispatch.db"), "long");
    // The worker ticked 1,000 items; the node reports a quick run of ticks coalesced (a burst
    // of 20 plan changes, then 5 a second), each report storing only what changed.
    let per_tick = stored / 1000;
    println!(
        "1,000-item plan ({plan_bytes} bytes): 1,000 ticks in {events} plan events stored in {stored} bytes, {per_tick} bytes per tick"
    );
    assert!(events >= 20, "the worker's ticks were seen ({events})");
    assert!(
        per_tick < 200,
        "a tick of a {plan_bytes}-byte plan stored {per_tick} bytes"
    );
    assert!(
        stored < plan_bytes as u64 * 4,
        "{stored} bytes of history for a {plan_bytes}-byte plan"
    );
}

/// (plan events stored, their bytes) for a task, read from the coordinator's database.
fn plan_history(db: &Path, task: &str) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx_pool(db).await;
        let row: (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM events WHERE task_id = ?1 AND kind = 'plan'",
        )
        .bind(task)
        .fetch_one(&pool)
        .await
        .unwrap();
        (row.0 as u64, row.1 as u64)
    })
}

async fn sqlx_pool(db: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .read_only(true),
        )
        .await
        .unwrap()
}

#[test]
fn logs_print_exactly_the_bytes_the_worker_wrote() {
    let mut c = Cluster::new();
    // Every byte value, several times over, and more than one chunk.
    evil_node(
        &mut c,
        "box",
        "i=0; while [ $i -lt 300 ]; do printf '%s' \"$(seq -s, 1 60)\"; printf '\\001\\002\\377\\n'; i=$((i+1)); done; \
         sed -i 's/- \\[ \\]/- [x]/' \"$DISPATCH_TASK_DIR/plan.md\"",
    );
    c.ok(&[
        "--backend",
        "evil",
        "--id",
        "bytes",
        "--step",
        "print",
        "print bytes",
    ]);
    let t = c.wait_task("bytes", "the end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let out = c.run(&["logs", "bytes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = format!(
        "{}\u{1}\u{2}",
        (1..=60)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut want = Vec::new();
    for _ in 0..300 {
        want.extend(line.as_bytes());
        want.extend([0xff, b'\n']);
    }
    assert_eq!(out.stdout.len(), want.len());
    assert!(
        out.stdout == want,
        "logs printed exactly what the worker wrote"
    );
}

#[test]
fn output_past_the_cap_is_cut_with_a_marker_and_the_node_keeps_it_all() {
    let mut c = Cluster::with_coordinator_args(&["--max-log-bytes", "4KiB"]);
    evil_node(
        &mut c,
        "box",
        "i=0; while [ $i -lt 2000 ]; do echo \"line $i of a chatty worker\"; i=$((i+1)); done; \
         sed -i 's/- \\[ \\]/- [x]/' \"$DISPATCH_TASK_DIR/plan.md\"",
    );
    c.ok(&[
        "--backend",
        "evil",
        "--id",
        "chatty",
        "--step",
        "talk",
        "talk a lot",
    ]);
    let t = c.wait_task("chatty", "the end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let out = c.run(&["logs", "chatty"]);
    let shown = text(&out.stdout);
    assert!(shown.starts_with("line 0 of a chatty worker\n"), "{shown}");
    assert!(
        shown.contains("[dispatch: the coordinator keeps the first 4 KiB of this task's output"),
        "{shown}"
    );
    assert!(shown.len() < 4096 + 300, "{} bytes shown", shown.len());
    let full = std::fs::read_to_string(c.dir.path().join("agent-box/logs/chatty.log")).unwrap();
    assert!(full.contains("line 1999 of a chatty worker"));
}
