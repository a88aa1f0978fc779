//! Coordinator replicas on one PostgreSQL database (issue 13): the leader is SIGKILLed in the
//! middle of a run and a standby takes over; agents and the CLI, given every replica's
//! address, follow it. Needs a PostgreSQL server (DISPATCH_TEST_POSTGRES; `.ci/run` starts
//! one): without it the tests say they skip, and under CI they fail.

use dispatch_proto::v1;
use dispatch_tests::{Replicas, text};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TASKS: usize = 100;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The whole run's deadline (every wait inside it is on an event).
const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// Dispatches a one-item sim task through `coordinator` (every replica's address when None)
/// and waits for it to complete.
fn dispatch_and_wait(r: &Replicas, coordinator: Option<&str>, id: &str) {
    let cli = || {
        let mut c = r.cli();
        if let Some(u) = coordinator {
            c.env("DISPATCH_COORDINATOR", u);
        }
        c
    };
    let out = cli()
        .args(["--backend", "sim", "--id", id, "--step", "a", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli()
        .args(["wait", id, "--timeout", "30s"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn task_id(i: usize) -> String {
    format!("r-{i:03}")
}

/// Answers every open question once (the request id makes a retried answer a no-op), except
/// those of `hold`; returns how many tasks are done.
fn answer_round(r: &Replicas, hold: &str) -> Option<(usize, usize)> {
    let mut c = r.leader_client()?;
    let tasks = r
        .block_on(c.list_tasks(v1::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        }))
        .ok()?
        .into_inner()
        .tasks;
    let mut answered = 0;
    for t in &tasks {
        if t.id == hold {
            continue;
        }
        for q in t.questions.iter().filter(|q| q.answer.is_none()) {
            let req = v1::AnswerRequest {
                id: t.id.clone(),
                seq: q.seq,
                text: format!("yes, {} {}", t.id, q.seq),
                request_id: format!("{}-{}", t.id, q.seq),
            };
            match r.block_on(c.answer(req)) {
                Ok(_) => answered += 1,
                // Answered meanwhile (the worker asked again?) or the replica went away.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                Err(_) => return None,
            }
        }
    }
    let done = tasks
        .iter()
        .filter(|t| t.task_state() == dispatch_core::TaskState::Completed)
        .count();
    Some((done, answered))
}

#[test]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
fn a_leader_killed_mid_run_loses_no_task_and_asks_no_question_twice() {
    let Some(mut r) = Replicas::start(2, "failover") else {
        return;
    };
    for n in NODES {
        r.add_agent(n, 12);
    }
    for i in 0..TASKS {
        let out = r
            .cli()
            .args([
                "--backend",
                "sim",
                "--id",
                &task_id(i),
                "--step",
                "look around (sleep 300ms)",
                "--step",
                &format!("decide (ask: may task {i} go on?)"),
                "--step",
                "finish (sleep 200ms)",
                &format!("replica test task {i}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // A task whose question waits until after the takeover, with a watcher on it.
    let watched = task_id(7);
    let mut watcher = r
        .cli()
        .args(["watch", &watched, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // And its worker output and output.md, followed across the takeover too.
    let follow = |what: &str| {
        r.cli()
            .args([what, &watched, "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (logs_follower, output_follower) = (follow("logs"), follow("output"));

    // Answer until about a third of the tasks are done, then kill the leader.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < RUN_DEADLINE, "the run took too long");
        if let Some((done, _)) = answer_round(&r, &watched)
            && done >= TASKS / 3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r.replicas[0].kill();
    let killed = Instant::now();
    dispatch_tests::wait_until("the standby to take over", || r.serving(1).then_some(()));
    eprintln!(
        "takeover: the standby served {} ms after the leader was killed",
        killed.elapsed().as_millis()
    );
    assert!(
        r.replicas[1].log_text().contains("leading: serving"),
        "{}",
        r.replicas[1].log_text()
    );

    // Everything else completes through the new leader.
    let mut held_back = true;
    loop {
        assert!(
            start.elapsed() < RUN_DEADLINE,
            "the run took too long after the takeover"
        );
        let hold = if held_back { watched.as_str() } else { "" };
        if let Some((done, _)) = answer_round(&r, hold) {
            if done == TASKS {
                break;
            }
            if held_back && done >= TASKS - 1 {
                held_back = false;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every task completed, on one node, its one question answered once.
    let mut c = r.leader_client().expect("the new leader");
    let tasks: BTreeMap<String, v1::Task> = r
        .block_on(c.list_tasks(v1::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    assert_eq!(tasks.len(), TASKS);
    for i in 0..TASKS {
        let id = task_id(i);
        let t = &tasks[&id];
        assert_eq!(
            t.task_state(),
            dispatch_core::TaskState::Completed,
            "{id}: {t:?}"
        );
        assert_eq!(t.questions.len(), 1, "{id} asked once: {:?}", t.questions);
        assert_eq!(
            t.questions[0].answer.as_deref(),
            Some(format!("yes, {id} 1").as_str()),
            "{id}"
        );
        // No double assignment: its directory is on exactly one node, the one it ran on.
        let homes: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|n| r.workdir(n).join(".dispatch/tasks").join(&id).exists())
            .collect();
        assert_eq!(homes, [t.node.as_str()], "{id} ran on exactly one node");
        let ipc = r
            .workdir(&t.node)
            .join(".dispatch/tasks")
            .join(&id)
            .join("ipc");
        assert!(ipc.join("001.answer").exists(), "{id}: the answer arrived");
        assert!(
            !ipc.join("002.question").exists(),
            "{id}: no question was asked twice"
        );
    }

    // The watcher followed the held task across the takeover, in order, to its end.
    let status =
        dispatch_tests::wait_until("the watcher to exit", || watcher.try_wait().ok().flatten());
    let mut out = String::new();
    std::io::Read::read_to_string(watcher.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(watcher.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "watch: {status}: {err}");
    assert!(err.contains("watching again through"), "{err}");
    let states: Vec<String> = out
        .as_bytes()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["state"].as_str().unwrap().to_string()
        })
        .collect();
    let rank = |s: &str| match s {
        "queued" => 0,
        "assigned" => 1,
        "running" | "waiting" => 2,
        "completed" => 3,
        other => panic!("unexpected state {other} in {states:?}"),
    };
    assert!(
        states.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "in order: {states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("completed"));
    assert!(states.iter().any(|s| s == "waiting"), "{states:?}");

    // The log and output followers went on through the new leader, from where they broke:
    // what they printed is what the task wrote, each byte once.
    for (what, follower) in [("logs", logs_follower), ("output", output_follower)] {
        let (status, out, err) = finish(follower);
        assert!(status.success(), "{what} --follow: {status}: {err}");
        assert!(err.contains("following again through"), "{what}: {err}");
        let whole = r.cli().args([what, &watched]).output().unwrap();
        assert!(whole.status.success(), "{}", text(&whole.stderr));
        assert!(!whole.stdout.is_empty(), "{what} of {watched} is empty");
        assert_eq!(
            text(&out),
            text(&whole.stdout),
            "{what} --follow across the takeover"
        );
    }
}

/// Waits for a child to exit: its status, stdout and stderr.
fn finish(mut child: std::process::Child) -> (std::process::ExitStatus, Vec<u8>, String) {
    let status =
        dispatch_tests::wait_until("a follower to exit", || child.try_wait().ok().flatten());
    let mut out = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, out, err)
}

#[test]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
fn a_paused_leader_is_cut_off_and_cannot_write_when_it_resumes() {
    let Some(mut r) = Replicas::start_with(2, "paused", &["--leader-timeout", "2s"]) else {
        return;
    };
    r.add_agent("p1", 2);
    let pid = nix::unistd::Pid::from_raw(r.replicas[0].child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let paused = Instant::now();
    dispatch_tests::wait_until("the standby to cut off the paused leader and lead", || {
        r.serving(1).then_some(())
    });
    eprintln!(
        "takeover from a paused leader: {} ms (--leader-timeout 2s)",
        paused.elapsed().as_millis()
    );
    assert!(
        r.replicas[1]
            .log_text()
            .contains("the leader has not renewed its lease"),
        "{}",
        r.replicas[1].log_text()
    );
    // Work goes on through the new leader; the agent follows it.
    dispatch_and_wait(&r, None, "after-pause");

    // The old leader resumes: it finds itself deposed and stops, writing nothing.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let status = dispatch_tests::wait_until("the old leader to step down", || {
        r.replicas[0].child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(75), "{}", r.replicas[0].log_text());
    assert!(
        r.replicas[0].log_text().contains("no longer the leader"),
        "{}",
        r.replicas[0].log_text()
    );
    assert!(r.serving(1));
}

#[test]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
fn a_client_that_reaches_a_standby_is_sent_to_the_leader() {
    let Some(mut r) = Replicas::start_with(2, "redirect", &["--metrics-listen", "127.0.0.1:0"])
    else {
        return;
    };
    let (leader, standby) = (r.urls[0].clone(), r.urls[1].clone());
    // Each says what it is to Prometheus; the standby has nothing else to say.
    let metrics = |i: usize| {
        dispatch_tests::scrape_metrics(
            &r.dir
                .path()
                .join(format!("replica-{i}/coordinator/metrics.addr")),
        )
    };
    assert!(metrics(0).contains("\ndispatch_coordinator_leader 1\n"));
    let m = metrics(1);
    assert!(m.contains("\ndispatch_coordinator_leader 0\n"), "{m}");
    assert!(!m.contains("dispatch_tasks"), "{m}");
    // A call made to the standby itself is refused, naming the leader.
    let refused = r.block_on(async {
        let mut c = dispatch_tests::client_with(&standby, &r.admin_token)
            .await
            .unwrap();
        c.list_nodes(v1::ListNodesRequest {}).await.unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused
            .message()
            .contains(&format!("standby; the leader is {leader}")),
        "{}",
        refused.message()
    );
    // Given only the standby's address (as behind a Service that reaches either), the CLI and
    // an agent end up on the leader.
    r.add_agent_via("s1", 1, &standby);
    dispatch_and_wait(&r, Some(&standby), "via-standby");
}
