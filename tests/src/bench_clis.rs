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
