//! Questions, answers, notes, `dispatch wait` and the seed's legacy `[?]` fallback, end to end.

use dispatch_proto::v1;
use dispatch_tests::{Cluster, assert_exit, text, wait_until};
use std::process::Command;

fn open_question(t: &v1::Task) -> Option<&v1::Question> {
    t.questions.iter().find(|q| q.answer.is_none())
}

#[test]
fn two_questions_in_a_row_are_answered_through_the_cli() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "asker",
        "--step",
        "pick (ask: Which database?)",
        "--step",
        "confirm (ask: Drop the old table?)",
        "ask twice",
    ]);
    let t = c.wait_task("asker", "the first question", |t| {
        t.task_state().as_str() == "waiting" && open_question(t).is_some()
    });
    assert_eq!(open_question(&t).unwrap().text, "Which database?");
    let status = c.status("asker");
    assert_eq!(status["questions"][0]["seq"], 1);
    assert_eq!(status["questions"][0]["answer"], serde_json::Value::Null);
    assert!(
        c.ok(&["status", "asker"])
            .contains("question 001 (unanswered): Which database?")
    );

    let out = c.ok(&["answer", "asker", "PostgreSQL"]);
    assert!(out.contains("Answered `asker`"), "{out}");
    let ipc = c.workdir().join(".dispatch/tasks/asker/ipc");
    let t = c.wait_task("asker", "the second question", |t| {
        t.questions.len() == 2 && t.task_state().as_str() == "waiting"
    });
    assert_eq!(
        std::fs::read_to_string(ipc.join("001.answer")).unwrap(),
        "PostgreSQL\n"
    );
    assert!(
        ipc.join("001.done").exists(),
        "the worker acknowledged the first answer"
    );
    assert_eq!(open_question(&t).unwrap().seq, 2);

    // Answering twice, a question that does not exist: clear errors, nothing changes.
    let twice = c.run(&["answer", "asker", "--seq", "1", "MySQL"]);
    assert!(!twice.status.success());
    assert!(
        text(&twice.stderr)
            .contains("question 001 of `asker` was already answered: \"PostgreSQL\""),
        "{}",
        text(&twice.stderr)
    );
    let missing = c.run(&["answer", "asker", "--seq", "9", "x"]);
    assert!(
        text(&missing.stderr).contains("task `asker` has no question 009; its questions: 001, 002"),
        "{}",
        text(&missing.stderr)
    );

    // The answer can come from stdin.
    let mut piped = c
        .cli()
        .args(["answer", "asker", "--seq", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(piped.stdin.as_mut().unwrap(), b"yes, drop it\n").unwrap();
    assert!(piped.wait_with_output().unwrap().status.success());
    let t = c.wait_task("asker", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    assert!(ipc.join("002.done").exists());
    let plan = std::fs::read_to_string(c.workdir().join(".dispatch/tasks/asker/plan.md")).unwrap();
    assert!(
        plan.contains("answer: PostgreSQL") && plan.contains("answer: yes, drop it"),
        "{plan}"
    );
    let late = c.run(&["answer", "asker", "too late"]);
    assert!(
        text(&late.stderr)
            .contains("task `asker` already ended (completed); there is no worker to answer"),
        "{}",
        text(&late.stderr)
    );
}

#[test]
fn the_seeds_own_monitor_script_works_unchanged() {
    let c = Cluster::with_node("box");
    let monitor = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-monitor.sh");
    // The seed's script names the task `security-review`; so does this task.
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "security-review",
        "--step",
        "scan (sleep 200ms)",
        "--step",
        "decide (ask: Should I report low-severity findings?)",
        "security review",
    ]);
    let first = Command::new("bash")
        .arg(monitor)
        .current_dir(c.workdir())
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "the monitor exits 0 when a question arrives"
    );
    let ipc = c.workdir().join(".dispatch/tasks/security-review/ipc");
    assert!(
        ipc.join("001.question").exists()
            && !ipc.join("001.answer").exists()
            && !ipc.join(".done").exists()
    );
    c.wait_task("security-review", "the question to be recorded", |t| {
        open_question(t).is_some()
    });
    c.ok(&["answer", "security-review", "yes"]);
    let second = Command::new("bash")
        .arg(monitor)
        .current_dir(c.workdir())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0));
    assert!(
        ipc.join(".done").exists(),
        "the respawned monitor exits 0 only after .done"
    );
}

#[test]
fn wait_exits_10_on_a_question_0_on_completion_and_12_on_failure() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "w1",
        "--step",
        "ask (ask: Proceed?)",
        "wait for me",
    ]);
    let out = c.run(&["wait", "w1"]);
    assert_exit(&out, 10);
    assert!(
        text(&out.stdout).contains("`w1` asks (question 001): Proceed?"),
        "{}",
        text(&out.stdout)
    );
    c.ok(&["answer", "w1", "go"]);
    let out = c.run(&["wait", "w1"]);
    assert_exit(&out, 0);

    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "w2",
        "--step",
        "(fail: broken build)",
        "fail",
    ]);
    let out = c.run(&["wait", "w2", "w1"]);
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("broken build"));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "w3",
        "--step",
        "slow (sleep 20s)",
        "slow",
    ]);
    assert_eq!(
        c.run(&["wait", "w3", "--timeout", "300ms"]).status.code(),
        Some(124)
    );
    assert_eq!(c.run(&["wait", "no-such-task"]).status.code(), Some(2));
    assert_eq!(c.run(&["wait"]).status.code(), Some(2));
    c.ok(&["cancel", "w3"]);
    assert_eq!(c.run(&["wait", "w3"]).status.code(), Some(13));
}

#[test]
fn a_timed_out_question_blocks_and_the_answer_starts_a_new_worker() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "legacy",
        "--step",
        "prepare",
        "--step",
        "choose (ask: Which region?; timeout 300ms)",
        "--step",
        "deploy",
        "legacy fallback",
    ]);
    let t = c.wait_task("legacy", "the worker to give up and exit", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "blocked", "{}", t.reason);
    assert!(t.reason.contains("Which region?"), "{}", t.reason);
    let dir = c.workdir().join(".dispatch/tasks/legacy");
    assert!(
        dir.join("context.md").exists(),
        "the worker saved its context"
    );
    assert_eq!(c.run(&["wait", "legacy"]).status.code(), Some(11));
    assert_eq!(
        c.ok(&["inbox", "--json"]).matches("Which region?").count(),
        1
    );

    let out = c.ok(&["answer", "legacy", "eu-west-1"]);
    assert!(out.contains("a new worker continues"), "{out}");
    let t = c.wait_task("legacy", "the second worker to finish", |t| {
        t.task_state().is_terminal()
    });
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let plan = std::fs::read_to_string(dir.join("plan.md")).unwrap();
    assert!(
        plan.contains("- [x] choose")
            && plan.contains("answer: eu-west-1")
            && plan.contains("- [x] deploy"),
        "{plan}"
    );
    assert!(
        c.ok(&["logs", "legacy"])
            .contains("resuming with the answer"),
        "the second worker saw the answer"
    );
}

#[test]
fn a_note_reaches_plan_md_on_the_node_while_the_worker_runs() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "noted",
        "--step",
        "hold (ask: Ready?)",
        "--step",
        "finish",
        "take a note",
    ]);
    c.wait_task("noted", "the worker to be waiting", |t| {
        open_question(t).is_some()
    });
    let out = c.ok(&[
        "note",
        "noted",
        "the",
        "skill",
        "is",
        "installed",
        "via",
        "npx",
    ]);
    assert!(out.contains("Noted on `noted`"), "{out}");
    let plan_path = c.workdir().join(".dispatch/tasks/noted/plan.md");
    wait_until("the note in plan.md", || {
        std::fs::read_to_string(&plan_path).ok().filter(|p| {
            p.ends_with("\n\n> **Note from dispatcher:** the skill is installed via npx\n")
        })
    });
    c.ok(&["answer", "noted", "yes"]);
    let t = c.wait_task("noted", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed");
    let plan = std::fs::read_to_string(&plan_path).unwrap();
    assert!(
        plan.contains("> **Note from dispatcher:** the skill is installed via npx"),
        "the worker kept the note:\n{plan}"
    );
    let late = c.run(&["note", "noted", "too late"]);
    assert!(
        text(&late.stderr).contains("notes reach only a worker that runs"),
        "{}",
        text(&late.stderr)
    );
    // Issue 23: the note is kept on the task — in `status`, `--json` (the refused one is not).
    let s = c.status("noted");
    let notes = s["notes"].as_array().expect("notes in --json");
    assert_eq!(notes.len(), 1, "{s}");
    assert_eq!(notes[0]["text"], "the skill is installed via npx");
    assert_eq!(notes[0]["author"], "admin");
    assert!(notes[0]["at_ms"].as_i64().unwrap() > 0);
    let shown = c.ok(&["status", "noted"]);
    assert!(
        shown.contains("note from admin (") && shown.contains("): the skill is installed via npx"),
        "{shown}"
    );
}

#[test]
fn the_inbox_lists_every_unanswered_question_across_nodes() {
    let mut c = Cluster::new();
    c.add_agent(dispatch_tests::AgentOpts::new("n1", 2));
    c.add_agent(dispatch_tests::AgentOpts::new("n2", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        "n1",
        "--id",
        "qa",
        "--step",
        "(ask: First on n1?)",
        "a",
    ]);
    c.wait_task("qa", "its question", |t| open_question(t).is_some());
    c.ok(&[
        "--backend",
        "sim",
        "--remote",
        "n2",
        "--id",
        "qb",
        "--step",
        "(ask: Then on n2?)",
        "b",
    ]);
    c.wait_task("qb", "its question", |t| open_question(t).is_some());
    let list: serde_json::Value = serde_json::from_str(&c.ok(&["inbox", "--json"])).unwrap();
    let rows: Vec<(String, String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["task"].as_str().unwrap().into(),
                q["node"].as_str().unwrap().into(),
                q["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![("qa".into(), "n1".into(), 1), ("qb".into(), "n2".into(), 1)]
    );
    let table = c.ok(&["inbox"]);
    assert!(
        table.contains("First on n1?") && table.contains("Then on n2?"),
        "{table}"
    );
    c.ok(&["answer", "qa", "x"]);
    c.ok(&["answer", "qb", "y"]);
    c.wait_task("qb", "completion", |t| t.task_state().is_terminal());
    assert!(c.ok(&["inbox"]).contains("No question is waiting"));
}

#[test]
fn an_agent_killed_while_a_question_is_pending_reattaches_and_nothing_is_lost_or_doubled() {
    let mut c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "survive",
        "--step",
        "ask (ask: Keep going?)",
        "--step",
        "after (sleep 100ms)",
        "outlive the agent",
    ]);
    c.wait_task("survive", "the question", |t| open_question(t).is_some());
    let run_file = c.dir.path().join("agent-box/running/survive.run");
    let pid: i32 = std::fs::read_to_string(&run_file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();

    c.restart_agent("box", dispatch_tests::AgentOpts::new("box", 2));
    assert!(
        dispatch_tests::alive(pid as u32),
        "the worker survived the agent's SIGKILL"
    );
    let inbox: serde_json::Value = serde_json::from_str(&c.ok(&["inbox", "--json"])).unwrap();
    assert_eq!(
        inbox.as_array().unwrap().len(),
        1,
        "the question is listed once: {inbox}"
    );
    assert_eq!(inbox[0]["task"], "survive");

    c.ok(&["answer", "survive", "yes"]);
    let t = c.wait_task("survive", "completion", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    assert_eq!(t.questions.len(), 1);
    assert_eq!(t.questions[0].answer.as_deref(), Some("yes"));
    let ipc = c.workdir().join(".dispatch/tasks/survive/ipc");
    assert_eq!(
        std::fs::read_to_string(ipc.join("001.answer")).unwrap(),
        "yes\n"
    );
    assert!(ipc.join("001.done").exists() && !ipc.join("002.question").exists());
    let logs = c.ok(&["logs", "survive"]);
    assert_eq!(
        logs.matches("asked question 001").count(),
        1,
        "no log line doubled:\n{logs}"
    );
    assert_eq!(logs.matches("got answer 001: yes").count(), 1, "{logs}");
    assert!(!run_file.exists(), "the finished worker's record is gone");
}
