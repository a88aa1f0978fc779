//! The Claude Code skill (`skills/dispatch/SKILL.md`) drives the real CLI: its example, the
//! commands it tells the host to run, is run here as written — through `sh`, in order, against
//! a local daemon with the sim backend — including a question round trip, a note and a
//! blocked-then-answered task. The commands come from the file itself, so the file and this
//! test cannot drift.

use dispatch_tests::{bin, text, wait_until};
use std::path::Path;
use std::process::{Command, Output};

const SKILL: &str = include_str!("../../skills/dispatch/SKILL.md");

/// The `dispatch …` lines of the skill's ```bash blocks, in order; with `section`, only those
/// under that heading.
fn commands(section: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut in_section = section.is_none();
    for line in SKILL.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            in_section = section.is_none_or(|s| h.starts_with(s));
        }
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim() == "```bash";
            continue;
        }
        if in_block && in_section && line.trim_start().starts_with("dispatch ") {
            out.push(line.trim().to_string());
        }
    }
    out
}

fn verb(cmd: &str) -> String {
    cmd.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

struct Host {
    home: tempfile::TempDir,
    here: tempfile::TempDir,
}

impl Host {
    /// Runs one command line as the host would: through a shell, with `dispatch` on PATH.
    fn sh(&self, line: &str) -> Output {
        let bin_dir = bin("dispatch").parent().unwrap().to_path_buf();
        let line = line.replace("/tmp/", &format!("{}/", self.here.path().display()));
        Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(self.here.path())
            .env_remove("DISPATCH_COORDINATOR")
            .env("DISPATCH_HOME", self.home.path())
            .env("DISPATCH_DAEMON_IDLE_TIMEOUT", "5s")
            .env("NO_COLOR", "1")
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .output()
            .unwrap()
    }

    fn state(&self, id: &str) -> String {
        let out = self.sh(&format!("dispatch status {id} --json"));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["state"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.sh("dispatch daemon stop --force");
    }
}

#[test]
fn the_skills_example_runs_as_written_against_the_sim_backend() {
    let host = Host {
        home: tempfile::tempdir().unwrap(),
        here: tempfile::tempdir().unwrap(),
    };
    // The user's config: `opus` is the sim here, so no agent CLI is needed.
    std::fs::write(
        host.home.path().join("config.yaml"),
        "default: opus\nmodels:\n  opus: { backend: sim }\n",
    )
    .unwrap();
    // The plan the host writes in Step 1, with the sim's directives: a question, a note to
    // read, a question the user answers too late for the worker, and the summary.
    std::fs::write(
        host.here.path().join("dispatch-impl-feature-plan.md"),
        "# Implement the feature\n\n- [ ] (ask: Which database?)\n- [ ] read the notes (sleep 300ms)\n- [ ] (ask: Deploy now?; timeout 1s)\n- [ ] deploy (sleep 10ms)\n- [ ] Write summary of findings/changes to .dispatch/tasks/impl-feature/output.md\n",
    )
    .unwrap();

    let example = commands(Some("Example"));
    assert!(example.len() >= 10, "the example: {example:?}");
    // Every command the skill tells the host to run is in the example.
    let used: std::collections::BTreeSet<String> = commands(None).iter().map(|c| verb(c)).collect();
    let shown: std::collections::BTreeSet<String> = example.iter().map(|c| verb(c)).collect();
    let missing: Vec<&String> = used.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "commands the skill uses but its example does not run: {missing:?}"
    );

    let mut exits = Vec::new();
    for line in &example {
        let (cmd, comment) = line
            .split_once('#')
            .map_or((line.as_str(), ""), |(c, m)| (c.trim(), m.trim()));
        if comment.contains("blocked") {
            // The user is away: wait (with a deadline) for the worker to give up.
            wait_until("the task to be blocked", || {
                (host.state("impl-feature") == "blocked").then_some(())
            });
        }
        let out = host.sh(cmd);
        let code = out.status.code().unwrap_or(-1);
        let want = comment
            .strip_prefix("exit ")
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(0);
        assert_eq!(
            code,
            want,
            "`{cmd}` exited {code}, the skill says {want}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // What the comment quotes is what the host sees.
        if let Some(q) = comment.split('"').nth(1) {
            assert!(
                text(&out.stdout).contains(q),
                "`{cmd}` should show \"{q}\": {}",
                text(&out.stdout)
            );
        }
        if comment.contains("blocked") {
            assert!(
                text(&out.stdout).contains("blocked"),
                "{}",
                text(&out.stdout)
            );
        }
        exits.push((verb(cmd), code));
    }
    assert_eq!(host.state("impl-feature"), "completed");
    let out = host.sh("dispatch status impl-feature --json");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answers: Vec<&str> = s["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["answer"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(answers, ["PostgreSQL", "Yes, deploy it"], "{s}");
    let plan = std::fs::read_to_string(
        Path::new(host.here.path()).join(".dispatch/tasks/impl-feature/plan.md"),
    )
    .unwrap();
    assert!(
        plan.contains("The staging database is read-only."),
        "the note reached the worker's plan: {plan}"
    );
}
