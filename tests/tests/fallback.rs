//! Fallback on quota or login failure (issue 11): with `fallback:` in the user's config, a task
//! whose CLI refuses to start (a rate limit, an exhausted quota, an expired login, recognised
//! from its exit status and output) is retried once on the next target a node can run, and
//! `status` says what happened. The CLIs are stubs on the nodes' PATH.

use dispatch_tests::{AgentOpts, Cluster, text};
use std::path::{Path, PathBuf};

const WORKS: &str = dispatch_tests::FINISH_PLAN_SH;
const QUOTA: &str = "echo \"Error: You've hit your usage limit. It resets at 5pm.\" >&2\nexit 1";
const CRASH: &str = "echo 'Segmentation fault' >&2\nexit 139";

/// A stub CLI `name` in `dir` that records each call in `calls` and then runs `body`.
fn stub(dir: &Path, calls: &Path, node: &str, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n{}echo '{node} {name}' >> '{}'\n{body}\n",
            dispatch_tests::STUB_PROBE_SH,
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

struct Setup {
    c: Cluster,
    calls: PathBuf,
}

impl Setup {
    /// Nodes named by `nodes`, each with stub CLIs (name, body), and the user's `fallback:`.
    fn new(nodes: &[(&str, &[(&str, &str)])], fallback: &str) -> Setup {
        let mut c = Cluster::new();
        let calls = c.dir.path().join("calls");
        std::fs::write(&calls, "").unwrap();
        for (node, clis) in nodes {
            let bin = c.dir.path().join(format!("bin-{node}"));
            for (name, body) in *clis {
                stub(&bin, &calls, node, name, body);
            }
            let mut o = AgentOpts::new(node, 2);
            o.path_prefix = Some(bin);
            c.add_agent(o);
        }
        let home = c.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("config.yaml"), fallback).unwrap();
        Setup { c, calls }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn ended(&self, id: &str) -> serde_json::Value {
        self.c
            .wait_task(id, "its end", |t| t.task_state().is_terminal());
        self.c.status(id)
    }
}

#[test]
fn a_quota_failure_falls_back_to_the_next_backend_and_status_says_so() {
    let s = Setup::new(
        &[("box", &[("claude", QUOTA), ("codex", WORKS)])],
        "fallback:\n  to: [codex]\n",
    );
    s.c.ok(&[
        "--backend",
        "claude",
        "--id",
        "fb",
        "--step",
        "fix it",
        "fix it",
    ]);
    let t = s.ended("fb");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["backend"], "codex");
    assert_eq!(t["attempt"], 2);
    let note = t["fallback"].as_str().unwrap();
    assert!(
        note.contains("`claude` on node `box` could not start (it said \"usage limit\")")
            && note.contains("retried once on `codex`"),
        "{note}"
    );
    assert_eq!(s.calls(), ["box claude", "box codex"]);
    let human = s.c.ok(&["status", "fb"]);
    assert!(
        human.contains("fallback: `claude` on node `box`"),
        "{human}"
    );
}

#[test]
fn a_task_falls_back_once_and_then_fails_with_both_reasons() {
    let s = Setup::new(
        &[("box", &[("claude", QUOTA), ("codex", QUOTA)])],
        "fallback:\n  to: [codex, claude]\n",
    );
    s.c.ok(&["--backend", "claude", "--id", "twice", "--step", "a", "x"]);
    let t = s.ended("twice");
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(s.calls(), ["box claude", "box codex"], "once, never again");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("the worker could not start on node `box`"),
        "{t}"
    );
    assert!(
        t["fallback"]
            .as_str()
            .unwrap()
            .contains("retried once on `codex`"),
        "{t}"
    );
}

#[test]
fn the_same_backend_falls_back_to_another_node_never_the_one_that_failed() {
    let s = Setup::new(
        &[
            ("node-a", &[("claude", QUOTA)]),
            ("node-b", &[("claude", WORKS)]),
        ],
        "fallback:\n  to: [claude]\n",
    );
    s.c.ok(&["--backend", "claude", "--id", "moved", "--step", "a", "x"]);
    let t = s.ended("moved");
    assert_eq!(t["state"], "completed", "{t}");
    let calls = s.calls();
    // The scheduler may pick either node first; a failure on node-a moves it to node-b.
    if calls[0] == "node-a claude" {
        assert_eq!(calls, ["node-a claude", "node-b claude"]);
        assert_eq!(t["node"], "node-b");
        assert!(
            t["fallback"]
                .as_str()
                .unwrap()
                .contains("retried once on `claude` on another node"),
            "{t}"
        );
    } else {
        assert_eq!(calls, ["node-b claude"]);
        assert_eq!(t["fallback"], "");
    }
}

#[test]
fn other_failures_and_no_fallback_fail_as_before() {
    let s = Setup::new(
        &[("box", &[("claude", CRASH), ("codex", WORKS)])],
        "fallback:\n  to: [codex]\n",
    );
    s.c.ok(&["--backend", "claude", "--id", "crashed", "--step", "a", "x"]);
    let t = s.ended("crashed");
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["fallback"], "", "a crash is not a quota failure");
    assert!(
        t["reason"].as_str().unwrap().contains("Segmentation fault"),
        "{t}"
    );

    // A task that opts out does not fall back though its CLI hit the quota: it waits for the
    // quota's reset on its node instead (issue 25), and nothing else is called.
    let s = Setup::new(
        &[("box", &[("claude", QUOTA), ("codex", WORKS)])],
        "fallback:\n  to: [codex]\n",
    );
    s.c.ok(&[
        "--backend",
        "claude",
        "--no-fallback",
        "--id",
        "stays",
        "--step",
        "a",
        "x",
    ]);
    s.c.wait_task("stays", "the wait for the reset", |t| {
        t.reason.contains("waiting for the reset")
    });
    let t = s.c.status("stays");
    assert_eq!(t["state"], "queued", "{t}");
    assert_eq!(t["fallback"], "", "{t}");
    assert_eq!(s.calls(), ["box claude"]);
    // A retry while it waits runs it now, here on another backend, as a new worker run.
    s.c.ok(&["retry", "stays", "--backend", "codex"]);
    let t = s.ended("stays");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(s.calls(), ["box claude", "box codex"]);
    // And a cancel ends the wait.
    s.c.ok(&[
        "--backend",
        "claude",
        "--no-fallback",
        "--id",
        "stops",
        "--step",
        "a",
        "x",
    ]);
    s.c.wait_task("stops", "the wait for the reset", |t| {
        t.reason.contains("waiting for the reset")
    });
    s.c.ok(&["cancel", "stops"]);
    assert_eq!(s.c.status("stops")["state"], "cancelled");
    assert_eq!(s.calls(), ["box claude", "box codex", "box claude"]);

    // A config that names something unknown is refused before anything is sent.
    let s = Setup::new(
        &[("box", &[("codex", WORKS)])],
        "fallback:\n  to: [nonesuch]\n",
    );
    let out =
        s.c.run(&["run", "--backend", "codex", "--id", "refused", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("fallback.to in your config names `nonesuch`"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.calls().is_empty());
}
