//! End to end: the real binaries as separate processes on loopback.

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster, alive, assert_exit, git, text, wait_until};

fn done_count(t: &v1::Task) -> usize {
    t.plan.as_ref().map_or(0, |p| {
        p.items
            .iter()
            .filter(|i| i.status == v1::ItemStatus::Done as i32)
            .count()
    })
}

#[test]
fn submit_runs_to_completion_and_every_snapshot_arrives_in_order() {
    let c = Cluster::with_node("box");
    let plan = "# Three steps\n\n- [ ] first (sleep 400ms)\n- [ ] second (sleep 400ms)\n- [ ] third (sleep 400ms)\n- [ ] Write summary to .dispatch/tasks/steps/output.md (sleep 400ms)\n";
    let plan_file = c.dir.path().join("plan.md");
    std::fs::write(&plan_file, plan).unwrap();

    // Watch everything from before the submit, as a second user would. The items take 400 ms
    // each: the node may coalesce plan snapshots written faster than it reads them (DESIGN.md),
    // and a loaded CI machine must not make that happen here.
    let events = c.block_on(async {
        let mut client = c.client().await.unwrap();
        let mut stream = client
            .watch(v1::WatchRequest {
                task_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let out = c.ok(&[
            "--backend",
            "sim",
            "--id",
            "steps",
            "--plan",
            plan_file.to_str().unwrap(),
            "work through three steps",
        ]);
        assert!(
            out.starts_with(
                "Dispatched `steps` using sim on box. Plan: 1) first (sleep 400ms) 2) second"
            ),
            "{out}"
        );
        let mut seen = Vec::new();
        let collect = async {
            while let Some(ev) = stream.message().await.unwrap() {
                let t = ev.task.clone().unwrap();
                if t.id != "steps" {
                    continue;
                }
                let end = t.task_state().is_terminal();
                seen.push(ev);
                if end {
                    break;
                }
            }
        };
        tokio::time::timeout(dispatch_tests::DEADLINE, collect)
            .await
            .expect("the task never ended");
        seen
    });
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e.change == "state")
        .map(|e| e.task.as_ref().unwrap().task_state().as_str())
        .collect();
    assert_eq!(states.first(), Some(&"queued"), "{states:?}");
    assert!(states.contains(&"running"), "{states:?}");
    assert_eq!(states.last(), Some(&"completed"), "{states:?}");
    let plans: Vec<(u64, usize)> = events
        .iter()
        .filter(|e| e.change == "plan")
        .map(|e| (e.seq, done_count(e.task.as_ref().unwrap())))
        .collect();
    assert_eq!(
        plans.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "every checklist snapshot, in order: {plans:?}"
    );
    assert!(
        plans.windows(2).all(|w| w[0].0 < w[1].0),
        "event seqs increase: {plans:?}"
    );
    // Changes leave out the prompt (it never changes); a watcher's snapshot carries it.
    assert!(
        events
            .iter()
            .all(|e| e.change != "snapshot" && e.task.as_ref().unwrap().prompt.is_empty()),
        "change events carry no prompt"
    );
    let snapshot = c.block_on(async {
        let mut client = c.client().await.unwrap();
        let mut stream = client
            .watch(v1::WatchRequest {
                task_id: "steps".into(),
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap()
    });
    assert_eq!(snapshot.change, "snapshot");
    assert_eq!(snapshot.task.unwrap().prompt, "work through three steps");

    let task_dir = c.workdir().join(".dispatch/tasks/steps");
    assert!(task_dir.join("output.md").exists(), "output.md was written");
    assert!(task_dir.join("ipc/.done").exists());
    let status = c.status("steps");
    assert_eq!(status["state"], "completed");
    assert_eq!(status["node"], "box");
    assert_eq!(status["backend"], "sim");
    assert!(
        status["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "done")
    );
    assert!(c.ok(&["logs", "steps"]).contains("sim: all items checked"));
    // Watching an ended task returns at once with its exit status.
    let out = c.run(&["watch", "steps"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn remote_pins_a_node_and_a_full_node_drains_its_queue_in_order() {
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("alpha", 1));
    c.add_agent(AgentOpts::new("beta", 1));

    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        "beta",
        "--id",
        "pinned",
        "--wait",
        "pinned to beta",
    ]);
    assert_eq!(c.status("pinned")["node"], "beta");

    let ids = ["q1", "q2", "q3"];
    for id in ids {
        c.ok(&[
            "--backend",
            "sim",
            "--remote",
            "alpha",
            "--id",
            id,
            "--step",
            "work (sleep 300ms)",
            "queued work",
        ]);
    }
    let q3 = c.status("q3");
    assert_eq!(q3["state"], "queued");
    assert_eq!(q3["queue_position"], 2);
    let tasks: Vec<v1::Task> = ids
        .iter()
        .map(|id| c.wait_task(id, "completed", |t| t.task_state().is_terminal()))
        .collect();
    for t in &tasks {
        assert_eq!(
            t.task_state().as_str(),
            "completed",
            "{}: {}",
            t.id,
            t.reason
        );
        assert_eq!(t.node, "alpha");
    }
    for w in tasks.windows(2) {
        assert!(
            w[1].started_at_ms >= w[0].ended_at_ms,
            "{} started before {} ended",
            w[1].id,
            w[0].id
        );
        eprintln!(
            "queue hand-off {} -> {}: {} ms",
            w[0].id,
            w[1].id,
            w[1].started_at_ms - w[0].ended_at_ms
        );
    }
}

#[test]
fn cancel_kills_the_workers_whole_process_tree() {
    let c = Cluster::with_node("box");
    let (child, worker) = c.start_sleeping_child("long");
    assert!(alive(child as u32) && alive(worker as u32));

    let out = c.ok(&["cancel", "long"]);
    assert!(out.starts_with("Cancelled `long`"), "{out}");
    let t = c.wait_task("long", "the node to report the worker's exit", |t| {
        t.exit_code.is_some() || t.reason.contains("was stopped")
    });
    assert_eq!(t.task_state().as_str(), "cancelled");
    wait_until("the worker and its child to be gone", || {
        (!alive(child as u32) && !alive(worker as u32)).then_some(())
    });
    let again = c.run(&["cancel", "long"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already ended (cancelled)"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn a_failed_item_fails_the_task_with_its_reason() {
    let c = Cluster::with_node("box");
    let out = c.run(&[
        "--backend",
        "sim",
        "--id",
        "broken",
        "--step",
        "fine",
        "--step",
        "explode (fail: disk is full)",
        "--wait",
        "fail on purpose",
    ]);
    assert_exit(&out, 12);
    let s = c.status("broken");
    assert_eq!(s["state"], "failed");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("explode (fail: disk is full) — disk is full"),
        "{}",
        s["reason"]
    );
    assert_eq!(s["items"][1]["status"], "error");
    assert_eq!(s["items"][1]["note"], "disk is full");
}

#[test]
fn a_coordinator_restart_between_submit_and_completion_loses_nothing() {
    let mut c = Cluster::with_node("box");
    let steps = [
        "--step",
        "a (sleep 400ms)",
        "--step",
        "b (sleep 400ms)",
        "--step",
        "c (sleep 400ms)",
    ];
    let mut args = vec!["--backend", "sim", "--id", "survivor"];
    args.extend(steps);
    args.push("survive a restart");
    c.ok(&args);
    c.wait_task("survivor", "the worker to check off its first item", |t| {
        done_count(t) >= 1
    });
    c.restart_coordinator();
    let t = c.wait_task("survivor", "completion after the restart", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    assert_eq!(done_count(&t), 4);
    let logs = c.ok(&["logs", "survivor"]);
    for item in ["a (sleep 400ms)", "b (sleep 400ms)", "c (sleep 400ms)"] {
        assert_eq!(
            logs.matches(item).count(),
            1,
            "the log line for {item} arrived exactly once:\n{logs}"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let c = Cluster::with_node("box");
    c.ok(&["--backend", "sim", "--id", "taken", "the one task"]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--id".into(), "Not Kebab".into(), "x".into()],
            "kebab-case",
        ),
        (
            vec!["--id".into(), "../../etc".into(), "x".into()],
            "kebab-case",
        ),
        (
            vec![
                "--backend".into(),
                "sim".into(),
                "--id".into(),
                "taken".into(),
                "again".into(),
            ],
            "task id `taken` already exists",
        ),
        (
            vec!["--backend".into(), "sim".into(), "y".repeat(70 * 1024)],
            "over the limit of 65536 bytes",
        ),
        (
            vec![
                "--backend".into(),
                "sim".into(),
                "--remote".into(),
                "nowhere".into(),
                "x".into(),
            ],
            "no node named `nowhere`; known nodes: box (connected)",
        ),
        (
            vec!["--backend".into(), "gemini-cli".into(), "x".into()],
            "no connected node has backend `gemini-cli`; nodes and their backends: box: sim",
        ),
        (
            vec!["x".into()],
            "No agent CLI found (looked for `agent`, `claude` and `codex` on PATH and on the connected nodes)",
        ),
        (
            vec![
                "--backend".into(),
                "sim".into(),
                "--after".into(),
                "ghost".into(),
                "x".into(),
            ],
            "--after names task `ghost`, which does not exist",
        ),
        (
            vec![
                "--backend".into(),
                "sim".into(),
                "--plan".into(),
                "/nonexistent/plan.md".into(),
                "x".into(),
            ],
            "cannot read the plan from /nonexistent/plan.md",
        ),
        (
            vec!["--backend".into(), "sim".into(), "".into()],
            "the prompt is empty",
        ),
    ];
    for (args, want) in cases {
        let args = [vec!["run".to_string()], args].concat();
        let out = c.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {err}");
        assert!(
            err.contains(want),
            "{:?}: expected {want:?} in: {err}",
            &args[..args.len().min(5)]
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let unreachable = c
        .cli()
        .env("DISPATCH_COORDINATOR", "http://127.0.0.1:9")
        .args(["run", "--backend", "sim", "x"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        text(&unreachable.stderr)
            .contains("cannot connect to the coordinator at http://127.0.0.1:9"),
        "{}",
        text(&unreachable.stderr)
    );
    let all: serde_json::Value = serde_json::from_str(&c.ok(&["status", "--json"])).unwrap();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["taken"], "nothing else was stored");
}

#[test]
fn a_hostile_prompt_reaches_the_worker_byte_for_byte_and_runs_nothing() {
    let c = Cluster::with_node("box");
    let trap = c.dir.path().join("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::fs::write(trap.join("keep"), "x").unwrap();
    let t = trap.display();
    let prompt = format!(
        "Review $(touch {t}/p1) and `touch {t}/p2` \"dq\" 'sq' ; rm -f {t}/keep && touch {t}/p3 | cat \\ $HOME ${{IFS}} \n- [ ] not a real step\n{}",
        // Far larger than the codec's 1 KiB starting buffers, on every hop (Submit, the
        // node's Assign, the plan and the worker's prompt).
        "context line ✓ with \u{1F600}\n".repeat(1500)
    );
    let out = c.run(&["--backend", "sim", "--id", "hostile", "--wait", &prompt]);
    assert_exit(&out, 0);
    let output =
        std::fs::read_to_string(c.workdir().join(".dispatch/tasks/hostile/output.md")).unwrap();
    assert!(
        output.contains(&format!("Context:\n{prompt}\n")),
        "the worker got the prompt verbatim:\n{output}"
    );
    for f in ["p1", "p2", "p3"] {
        assert!(!trap.join(f).exists(), "{f} was created: the prompt ran");
    }
    assert!(
        trap.join("keep").exists(),
        "keep was removed: the prompt ran"
    );
}

#[test]
fn nodes_lists_backends_capacity_and_load() {
    let mut c = Cluster::new();
    let mut o = AgentOpts::new("gpu-box", 3);
    o.labels = vec!["gpu=a100".into(), "zone=eu".into()];
    c.add_agent(o);
    let nodes: serde_json::Value = serde_json::from_str(&c.ok(&["nodes", "--json"])).unwrap();
    let n = &nodes[0];
    assert_eq!(n["name"], "gpu-box");
    assert_eq!(n["capacity"], 3);
    assert_eq!(n["running"], 0);
    assert_eq!(n["backends"], serde_json::json!(["sim"]));
    assert_eq!(
        n["labels"],
        serde_json::json!({"gpu": "a100", "zone": "eu"})
    );
    let table = c.ok(&["nodes"]);
    assert!(
        table.contains("gpu-box") && table.contains("0/3") && table.contains("gpu=a100,zone=eu"),
        "{table}"
    );
}

#[test]
fn a_worker_that_cannot_start_says_where_else_it_could_run_and_retry_moves_it() {
    let mut c = Cluster::new();
    // A `claude` that refuses to run, as one that is not logged in does.
    let stubs = c.dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let claude = stubs.join("claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\necho 'Invalid API key · Please run /login' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut broken = AgentOpts::new("laptop", 1);
    broken.path_prefix = Some(stubs);
    c.add_agent(broken);
    c.add_agent(AgentOpts::new("build-box", 1));

    let out = c.run(&[
        "--remote",
        "laptop",
        "--id",
        "review",
        "--step",
        "look",
        "--wait",
        "review it",
    ]);
    assert_exit(&out, 12);
    let s = c.status("review");
    assert_eq!(s["state"], "failed");
    assert_eq!(
        s["backend"], "claude",
        "no --backend: the node's installed CLI"
    );
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not start on node `laptop`"),
        "{reason}"
    );
    assert!(reason.contains("Invalid API key"), "{reason}");
    assert!(
        reason.contains("Other nodes offer: build-box: sim"),
        "{reason}"
    );

    let out = c.ok(&[
        "retry",
        "review",
        "--remote",
        "build-box",
        "--backend",
        "sim",
    ]);
    assert!(
        out.starts_with("Retrying: `review` using sim on build-box."),
        "{out}"
    );
    let t = c.wait_task("review", "the retry to finish", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    assert_eq!(t.node, "build-box");
    let again = c.run(&["retry", "review"]);
    assert!(
        text(&again.stderr).contains("task `review` completed; there is nothing to retry"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn a_worktree_task_runs_on_its_own_branch_and_clean_removes_the_worktree() {
    let c = Cluster::with_node("box");
    let repo = c.workdir();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);

    let out = c.ok(&[
        "--backend",
        "sim",
        "--id",
        "isolated",
        "--step",
        "edit (sleep 50ms)",
        "--wait",
        "fix it, use a worktree",
    ]);
    assert!(out.contains("branch dispatch/isolated"), "{out}");
    let s = c.status("isolated");
    assert_eq!(s["state"], "completed");
    assert_eq!(
        s["worktree"], true,
        "the prompt's directive asked for a worktree"
    );
    assert_eq!(s["branch"], "dispatch/isolated");
    let wt = repo.join(".dispatch/worktrees/isolated");
    assert_eq!(
        git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "dispatch/isolated"
    );
    assert!(
        wt.join(".dispatch/tasks/isolated/output.md").exists(),
        "the worker ran in the worktree"
    );
    assert!(!repo.join(".dispatch/tasks/isolated").exists());
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "",
        "task files stay out of git status"
    );

    let out = c.ok(&["clean", "isolated"]);
    assert!(
        out.contains(
            "Removed the worktree of `isolated` on box; branch `dispatch/isolated` keeps its work."
        ),
        "{out}"
    );
    assert!(!wt.exists());
    assert_eq!(
        git(&repo, &["branch", "--list", "dispatch/isolated"]),
        "dispatch/isolated"
    );
    let again = c.run(&["clean", "isolated"]);
    assert!(
        text(&again.stderr).contains("was already removed"),
        "{}",
        text(&again.stderr)
    );

    // --worktree outside a git repository fails the task saying so.
    let plain = c.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let out = c.run(&[
        "--backend",
        "sim",
        "--id",
        "no-repo",
        "--worktree",
        "--workdir",
        plain.to_str().unwrap(),
        "--step",
        "x",
        "--wait",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(12));
    let reason = c.status("no-repo")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("is not in a git repository, which a worktree task needs"),
        "{reason}"
    );
}

#[test]
fn logs_follow_streams_the_output_live_and_ends_with_the_task() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "chatty",
        "--step",
        "one (sleep 300ms)",
        "--step",
        "two (sleep 300ms)",
        "talk",
    ]);
    // Started while the worker runs: prints what was stored, then follows, then returns.
    let out = c.run(&["logs", "-f", "chatty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stdout);
    for line in [
        "sim: working on item 1: one (sleep 300ms)",
        "sim: working on item 2: two (sleep 300ms)",
        "sim: all items checked",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} once in:\n{log}");
    }
    assert_eq!(
        c.status("chatty")["state"],
        "completed",
        "logs -f returned when the task ended"
    );
    let table = c.ok(&["status"]);
    assert!(
        table.starts_with("ID") && table.contains("chatty") && table.contains("completed on box"),
        "{table}"
    );
    // Each chunk comes numbered, and asking for those after one (how a follower resumes on a
    // new connection) gives exactly the rest.
    let chunks = |after_seq: u64| -> Vec<(u64, Vec<u8>)> {
        c.block_on(async {
            let mut cl = c.client().await.unwrap();
            let mut s = cl
                .logs(v1::LogsRequest {
                    id: "chatty".into(),
                    after_seq,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            while let Some(r) = s.message().await.unwrap() {
                got.push((r.seq, r.data));
            }
            got
        })
    };
    let all = chunks(0);
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "increasing seqs");
    assert_eq!(
        all.iter().flat_map(|(_, d)| d.clone()).collect::<Vec<u8>>(),
        out.stdout
    );
    assert_eq!(chunks(all[0].0), all[1..]);
    assert!(chunks(all.last().unwrap().0).is_empty());
}

/// Issue 23: `dispatch questions` (a command that does not exist, named by the old docs)
/// started a paid worker. A lone bare word is never dispatched by a plain `dispatch WORD`:
/// nothing is stored, the exit is a usage error that says how to dispatch it anyway and which
/// command it resembles; `dispatch run WORD` dispatches it.
#[test]
fn a_lone_word_is_never_dispatched_by_accident() {
    let c = Cluster::with_node("box");
    for (word, resembles) in [
        ("questions", None),
        ("stat", Some("status")),
        ("nodess", Some("nodes")),
        ("fix-login.rs", None),
    ] {
        let out = c.run(&["--backend", "sim", "--remote", "box", word]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(err.contains(&format!("`dispatch run {word}`")), "{err}");
        match resembles {
            Some(cmd) => assert!(
                err.contains(&format!("did you mean `dispatch {cmd}`")),
                "{err}"
            ),
            None => assert!(!err.contains("did you mean"), "{err}"),
        }
    }
    let listed: serde_json::Value =
        serde_json::from_str(&c.ok(&["status", "--json"])).expect("status --json is JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    // Saying so, or giving more than one word or a checklist, dispatches as before.
    c.ok(&["run", "--backend", "sim", "--id", "asked", "questions"]);
    c.ok(&["--backend", "sim", "--id", "two-words", "two words"]);
    c.ok(&["--backend", "sim", "--id", "stepped", "--step", "a", "word"]);
    for id in ["asked", "two-words", "stepped"] {
        assert_eq!(c.status(id)["id"], id);
    }
}

#[test]
fn status_lists_the_most_recent_tasks_and_all_of_them_on_request() {
    let c = Cluster::with_node("box");
    for i in 0..5 {
        c.ok(&[
            "--backend",
            "sim",
            "--id",
            &format!("s-{i}"),
            "--step",
            "x",
            "x",
        ]);
    }
    let out = c.ok(&["status", "--limit", "2"]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("s-")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with("s-3") && rows[1].starts_with("s-4"),
        "{out}"
    );
    assert!(out.contains("the 2 most recent of 5 tasks"), "{out}");
    let all = c.ok(&["status", "--all"]);
    assert_eq!(
        all.lines().filter(|l| l.starts_with("s-")).count(),
        5,
        "{all}"
    );
    assert!(!all.contains("most recent"), "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["status", "--json", "--limit", "3"])).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-2", "s-3", "s-4"]);
}

/// Issue 24: a failing end-to-end test explains itself — a `wait_task` that times out says the
/// last state it saw (state, node, checklist, open questions), not only that it timed out.
#[test]
fn a_wait_that_times_out_says_the_last_state_it_saw() {
    let mut c = dispatch_tests::Cluster::new();
    c.add_agent(dispatch_tests::AgentOpts::new("box", 1));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "asks",
        "--step",
        "start (ask: which branch?)",
        "go",
    ]);
    c.wait_task("asks", "its question", |t| !t.questions.is_empty());
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.wait_task_for(
            "asks",
            "something that never happens",
            std::time::Duration::from_millis(500),
            |_| false,
        )
    }));
    let message = match waited {
        Ok(_) => panic!("the wait did not time out"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("something that never happens")
            && message.contains("last seen: state waiting on `box`")
            && message.contains("001: which branch?"),
        "{message}"
    );
    c.ok(&["cancel", "asks"]);
}
