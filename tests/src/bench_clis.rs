//! Measures of `dispatch-bench` with the real agent CLIs against the mock model servers: how
//! long a rate-limited Claude Code takes to hand its task to the fallback, and what dispatch
//! adds to a CLI's own start (Submit → the CLI's first model request, against the CLI run
//! by hand → its first request).

use crate::mock_models::{Api, Fault, MockModels, now_ms};
use crate::real_clis::{self, RealClis};
use crate::{Cluster, DEADLINE};
use std::time::Duration;

/// A named set of samples, in ms.
pub type Samples = (String, Vec<f64>);

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn clis() -> RealClis {
    RealClis::installed().expect("the real CLIs (see tests/clis)")
}

/// `fallback [--count N] [--api-retries N]`: Claude Code answered only with 429s, its task's
/// fallback is Codex; from submit and from the first 429 to the fallback's worker start.
pub fn fallback(args: &[String]) -> Vec<Samples> {
    let count = arg(args, "--count", 5);
    let retries = arg(args, "--api-retries", 3);
    let clis = clis();
    let (mut to_start, mut from_429, mut first_req) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..count {
        let mut c = Cluster::new();
        let mock = MockModels::start();
        let mut o = real_clis::node(&c, "box", 2, &clis.bin, &mock);
        o.args = vec!["--api-retries".into(), retries.to_string()];
        c.add_agent(o);
        let home = c.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("config.yaml"), "fallback:\n  to: [codex]\n").unwrap();
        mock.fail(Api::Anthropic, Fault::Status(429), None);
        let id = format!("storm-{i}");
        let submitted = now_ms();
        c.ok(&[
            "--backend",
            "claude",
            "--remote",
            "box",
            "--id",
            &id,
            "--step",
            "one",
            "x",
        ]);
        let t = c.wait_task_for(
            &id,
            "the fallback's worker to start",
            Duration::from_secs(600),
            |t| t.attempt == 2 && t.started_at_ms > 0,
        );
        let first_429 = mock.seen_for(Api::Anthropic, &id)[0].at_ms;
        first_req.push((first_429 - submitted) as f64);
        to_start.push((t.started_at_ms - submitted) as f64);
        from_429.push((t.started_at_ms - first_429) as f64);
        c.wait_task(&id, "its end", |t| t.task_state().is_terminal());
    }
    vec![
        (
            format!("429 storm (api_retries {retries}): first 429 → fallback worker started"),
            from_429,
        ),
        ("  submit → fallback worker started".into(), to_start),
        ("  submit → Claude Code's first request".into(), first_req),
    ]
}

/// `overhead [--count N]`: for each CLI, Submit → its first model request through dispatch,
/// and the same CLI started by hand (same user, environment and prompt) → its first request.
pub fn overhead(args: &[String]) -> Vec<Samples> {
    let count = arg(args, "--count", 20);
    let clis = clis();
    let mut out = Vec::new();
    for backend in ["claude", "codex"] {
        let mut c = Cluster::new();
        let mock = MockModels::start();
        let o = real_clis::node(&c, "box", 1, &clis.bin, &mock);
        let env = o.env.clone();
        c.add_agent(o);
        let mut through = Vec::new();
        for i in 0..count {
            let id = format!("o-{backend}-{i}");
            let t0 = now_ms();
            c.ok(&[
                "--backend",
                backend,
                "--remote",
                "box",
                "--id",
                &id,
                "--step",
                "one",
                "x",
            ]);
            let at = mock
                .wait_first_request(&id, DEADLINE)
                .expect("the CLI's first request");
            through.push((at - t0) as f64);
            c.wait_task(&id, "its end", |t| t.task_state().is_terminal());
        }
        // By hand: the same CLI, prompt and environment, in a task directory of its own.
        let work = c.dir.path().join(format!("by-hand-{backend}"));
        let mut by_hand = Vec::new();
        for i in 0..count {
            let id = format!("h-{backend}-{i}");
            let dir = work.join(format!(".dispatch/tasks/{id}/ipc"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                work.join(format!(".dispatch/tasks/{id}/plan.md")),
                "- [ ] one\n",
            )
            .unwrap();
            if nix::unistd::geteuid().is_root() {
                crate::chown_tree(&work, crate::NOBODY);
            }
            let prompt = dispatch_core::prompt::worker_prompt(&id, "x", None);
            let program = clis.bin.join(backend);
            let mut cmd = std::process::Command::new(&program);
            match backend {
                "claude" => cmd.args(["-p", "--dangerously-skip-permissions"]),
                _ => cmd.args([
                    "exec",
                    "--sandbox",
                    "workspace-write",
                    "--skip-git-repo-check",
                ]),
            };
            cmd.arg(&prompt)
                .current_dir(&work)
                .env_clear()
                .env("PATH", format!("{}:/usr/bin:/bin", clis.bin.display()))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            if nix::unistd::geteuid().is_root() {
                use std::os::unix::process::CommandExt;
                cmd.uid(crate::NOBODY).gid(crate::NOBODY);
            }
            let t0 = now_ms();
            let mut child = cmd.spawn().unwrap();
            let at = mock
                .wait_first_request(&id, DEADLINE)
                .expect("the CLI's first request");
            by_hand.push((at - t0) as f64);
            let _ = child.wait();
        }
        out.push((format!("{backend}: Submit → first model request"), through));
        out.push((
            format!("{backend}: CLI started by hand → first model request"),
            by_hand,
        ));
    }
    out
}

/// Runs a worker run's approval hook (the command Claude Code runs before a tool call) for a
/// `Bash` call of `command`; its decision ("allow"/"deny") and how long it took, in ms.
fn hook(exe: &std::path::Path, socket: &str, command: &str) -> (String, f64) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["approve-hook", "--socket", socket])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    if nix::unistd::geteuid().is_root() {
        // The socket serves only the agent's user, as it does the worker's CLI.
        use std::os::unix::process::CommandExt;
        cmd.uid(crate::NOBODY).gid(crate::NOBODY);
    }
    let input = serde_json::json!({
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": { "command": command },
        "cwd": "/w",
    });
    let t0 = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decision = v["hookSpecificOutput"]["permissionDecision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (decision, ms)
}

/// `approvals [--count N]`: a tool call → its decision back in the CLI's hook, on a real
/// Claude Code run under a policy (allow Bash, ask `git push`). The bench runs that run's own
/// hook (what Claude Code runs before each tool call) N times for a call the allow rule
/// decides, and N/10 times for one a scripted person answers the moment it shows; for those,
/// the relay's own share is the total less the time from the question showing to the answer
/// being sent.
pub fn approvals(args: &[String]) -> Vec<Samples> {
    let count = arg(args, "--count", 200);
    let clis = clis();
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("coordinator.yaml");
    std::fs::write(
        &path,
        "policy:\n  allow: [Bash]\n  ask: [\"Bash(git push:*)\"]\n",
    )
    .unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", path.to_str().unwrap()]);
    let mock = MockModels::start();
    let o = real_clis::node(&c, "box", 1, &clis.bin, &mock);
    c.add_agent(o);
    c.ok(&[
        "--backend",
        "claude",
        "--remote",
        "box",
        "--id",
        "hold",
        "--step",
        "wait (sleep 600s)",
        "x",
    ]);
    // The run's socket, from the hook command in Claude Code's --settings.
    let socket = crate::wait_until("Claude Code to run under approvals", || {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            if let Some(i) = cmd.find("--socket dispatch-approve-") {
                let name: String = cmd[i + "--socket ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                return Some(name);
            }
        }
        None
    });
    // The worker's sleep is running: its own tool call was decided already.
    mock.wait_first_request("hold", DEADLINE)
        .expect("Claude Code's first request");
    let exe = crate::bin("dispatch-agent");
    let mut allowed = Vec::new();
    for i in 0..count {
        let (d, ms) = hook(&exe, &socket, &format!("cargo test -p t{i}"));
        assert_eq!(d, "allow");
        allowed.push(ms);
    }
    // The hook's own start and exit: no agent at that socket, so it refuses at once.
    let mut alone = Vec::new();
    for _ in 0..count {
        let (d, ms) = hook(&exe, "dispatch-approve-nobody-there", "cargo test");
        assert_eq!(d, "deny");
        alone.push(ms);
    }
    let (mut asked_total, mut relay) = (Vec::new(), Vec::new());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt
        .block_on(crate::client_with(&c.url, &c.admin_token))
        .unwrap();
    for i in 0..(count / 10).max(1) {
        let (exe, socket) = (exe.clone(), socket.clone());
        let t0 = std::time::Instant::now();
        let handle = std::thread::spawn(move || hook(&exe, &socket, &format!("git push o b{i}")));
        // The scripted person: watches for the question, answers it at once.
        let (seen, seq) = loop {
            let t = rt
                .block_on(client.get_task(dispatch_proto::v1::GetTaskRequest { id: "hold".into() }))
                .unwrap()
                .into_inner();
            if let Some(q) = t.questions.iter().find(|q| q.answer.is_none()) {
                break (std::time::Instant::now(), q.seq);
            }
            assert!(t0.elapsed() < DEADLINE, "the approval never showed");
            std::thread::sleep(Duration::from_millis(1));
        };
        rt.block_on(client.answer(dispatch_proto::v1::AnswerRequest {
            id: "hold".into(),
            seq,
            text: "yes".into(),
            ..Default::default()
        }))
        .unwrap();
        let person = seen.elapsed();
        let (d, ms) = handle.join().unwrap();
        assert_eq!(d, "allow");
        asked_total.push(ms);
        relay.push(ms - person.as_secs_f64() * 1000.0);
    }
    c.ok(&["cancel", "hold"]);
    vec![
        (
            "tool call (hook started) → decision in the hook, allow rule".into(),
            allowed,
        ),
        (
            "  the hook alone (no agent: it refuses at once)".into(),
            alone,
        ),
        (
            "  asked, answered at once: hook → decision".into(),
            asked_total,
        ),
        ("  the same, the relay's own share".into(), relay),
    ]
}
