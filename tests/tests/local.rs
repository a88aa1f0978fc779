//! Embedded local mode: no coordinator configured, `dispatch` starts its own daemon.

use dispatch_tests::{DEADLINE, alive, assert_exit, bin, text, wait_until};
use std::process::{Command, Output};
use std::sync::mpsc;

struct Local {
    home: tempfile::TempDir,
    here: tempfile::TempDir,
}

impl Local {
    fn new() -> Local {
        Local {
            home: tempfile::tempdir().unwrap(),
            here: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `dispatch ARGS` in `here` and fails the test if it does not return: a daemon that
    /// kept our stdout/stderr pipes open would make `output()` hang.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_path(args, "/usr/bin:/bin")
    }

    /// [`Local::run`] with another PATH (stub agent CLIs first).
    fn run_with_path(&self, args: &[&str], path: &str) -> Output {
        let mut cmd = Command::new(bin("dispatch"));
        cmd.args(args)
            .current_dir(self.here.path())
            .env_remove("DISPATCH_COORDINATOR")
            .env("DISPATCH_HOME", self.home.path())
            .env("DISPATCH_DAEMON_IDLE_TIMEOUT", "1s")
            .env("NO_COLOR", "1")
            .env("PATH", path);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.output().expect("run dispatch"));
        });
        rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!("dispatch {args:?} did not return: is the daemon holding its pipes?")
        })
    }

    fn daemon_pid(&self) -> Option<i32> {
        let out = self.run(&["daemon", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pid"].as_i64().map(|p| p as i32)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.run(&["daemon", "stop", "--force"]);
    }
}

#[test]
fn the_first_dispatch_starts_a_detached_daemon_that_runs_tasks_here_and_exits_when_idle() {
    let l = Local::new();
    let out = l.run(&[
        "--backend",
        "sim",
        "--id",
        "here-task",
        "--step",
        "look around (sleep 1s)",
        "local work",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("Dispatched `here-task` using sim on local. Plan: 1) look around (sleep 1s) 2) Write summary"), "{}", text(&out.stdout));
    let pid = l.daemon_pid().expect("the daemon runs");
    let watched = l.run(&["watch", "here-task"]);
    assert_exit(&watched, 0);
    assert!(
        text(&watched.stdout).contains("[x] look around"),
        "{}",
        text(&watched.stdout)
    );
    let task_dir = l.here.path().join(".dispatch/tasks/here-task");
    assert!(
        task_dir.join("output.md").exists(),
        "the task ran in the directory where dispatch was run"
    );
    assert!(task_dir.join("plan.md").exists());
    // The daemon's session is its own, and it goes away by itself once idle.
    assert_eq!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
            .ok()
            .map(|s| s.as_raw()),
        Some(pid)
    );
    wait_until("the idle daemon to exit", || {
        (!alive(pid as u32)).then_some(())
    });
    assert!(
        !l.home.path().join("daemon.sock").exists(),
        "the socket was removed"
    );
    let status = text(&l.run(&["daemon", "status"]).stdout);
    assert!(status.contains("not running"), "{status}");
    // The store survives: the next command starts a new daemon that still knows the task.
    let again = l.run(&[
        "--backend",
        "sim",
        "--id",
        "second",
        "--step",
        "again (sleep 60s)",
        "more",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let listed = text(&l.run(&["status"]).stdout);
    assert!(
        listed.contains("here-task") && listed.contains("completed") && listed.contains("second"),
        "{listed}"
    );
    let stop = l.run(&["daemon", "stop"]);
    assert!(!stop.status.success(), "stop refuses while a task runs");
    assert!(
        text(&stop.stderr).contains("1 task(s) are still active"),
        "{}",
        text(&stop.stderr)
    );
    let stop = l.run(&["daemon", "stop", "--force"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
}

#[test]
fn the_demo_runs_end_to_end_on_the_local_daemon() {
    let l = Local::new();
    let out = l.run(&["demo"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("All 3 demo tasks completed."), "{stdout}");
    assert!(
        stdout.contains("Dispatched `demo-security-review` using sim on local."),
        "{stdout}"
    );
    assert!(
        l.home
            .path()
            .join("demo/.dispatch/tasks/demo-security-review/output.md")
            .exists()
    );
}

#[test]
fn local_mode_keeps_every_file_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let l = Local::new();
    let home = l.home.path().join("dispatch-home");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin("dispatch"));
        cmd.args(args)
            .current_dir(l.here.path())
            .env_remove("DISPATCH_COORDINATOR")
            .env("DISPATCH_HOME", &home)
            .env("NO_COLOR", "1")
            .env("PATH", "/usr/bin:/bin");
        cmd.output().unwrap()
    };
    let out = run(&[
        "--backend",
        "sim",
        "--id",
        "private",
        "--step",
        "one",
        "--wait",
        "a secret prompt",
    ]);
    assert_exit(&out, 0);
    // An edit keeps the mode the user gave the config (it may hold a token).
    let cfg = home.join("config.yaml");
    std::fs::write(
        &cfg,
        "default: opus\nmodels:\n  opus: { backend: claude }\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(&["config", "add-model", "sonnet", "--backend", "claude"]);
    assert_exit(&out, 0);
    assert!(std::fs::read_to_string(&cfg).unwrap().contains("sonnet"));
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o640
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&home), 0o700, "DISPATCH_HOME");
    for dir in ["coordinator", "agent", "agent/logs", "agent/spool"] {
        let p = home.join(dir);
        if p.exists() {
            assert_eq!(mode(&p), 0o700, "{dir}");
        }
    }
    assert_eq!(mode(&home.join("daemon.sock")), 0o600, "the socket");
    for file in [
        "daemon.log",
        "config.yaml",
        "coordinator/dispatch.db",
        "coordinator/dispatch.db-wal",
        "agent/logs/private.log",
    ] {
        let p = home.join(file);
        assert_eq!(mode(&p), 0o600, "{file}");
    }
    // The task's own files in the user's project keep the usual mode.
    let plan = l.here.path().join(".dispatch/tasks/private/plan.md");
    assert_eq!(
        mode(&plan) & 0o044,
        0o044,
        "plan.md is the project's, readable as usual"
    );
    let _ = run(&["daemon", "stop", "--force"]);
}

#[test]
fn a_local_worktree_tasks_branch_is_already_here_and_applies() {
    let l = Local::new();
    let here = l.here.path();
    dispatch_tests::git_repo(here, &[("hello.txt", "v1\n")]);
    // A `claude` on PATH that edits the checkout it runs in, and finishes.
    let stubs = tempfile::tempdir().unwrap();
    dispatch_tests::stub_cli(
        stubs.path(),
        "claude",
        "printf 'local edit\\n' >> hello.txt\ntouch \"$DISPATCH_TASK_DIR/ipc/.done\"\n",
    );
    let path = format!("{}:/usr/bin:/bin", stubs.path().display());
    let out = l.run_with_path(
        &[
            "--backend",
            "claude",
            "--worktree",
            "--id",
            "wt",
            "--step",
            "edit",
            "--wait",
            "edit hello",
        ],
        &path,
    );
    assert_exit(&out, 0);
    let out = l.run(&["status", "wt", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["changes"]["commits"], 1, "{s}");
    // Nothing of it is on the user's branch until they apply it.
    assert_eq!(
        std::fs::read_to_string(here.join("hello.txt")).unwrap(),
        "v1\n"
    );
    let out = l.run(&["apply", "wt"]);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(here.join("hello.txt")).unwrap(),
        "v1\nlocal edit\n"
    );
}

#[test]
fn the_local_node_reads_agent_yaml_for_its_backends_and_refuses_a_bad_one_at_once() {
    let l = Local::new();
    let script = l.home.path().join("streamy.sh");
    std::fs::write(
        &script,
        format!(
            "cat '{}'\n{}",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/codex-exec-json.jsonl"
            ),
            dispatch_tests::FINISH_PLAN_SH
        ),
    )
    .unwrap();
    let agent_yaml = l.home.path().join("agent.yaml");
    // A file the node refuses stops the first dispatch at once, naming the file and the fix.
    std::fs::write(
        &agent_yaml,
        "backends:\n  streamy: { command: x, structured: true }\n",
    )
    .unwrap();
    let out = l.run(&["run", "--backend", "sim", "--id", "never", "x"]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "agent.yaml: backend `streamy`: `structured: true` works for claude and codex"
        ),
        "{err}"
    );
    assert!(l.daemon_pid().is_none(), "no daemon was left running");

    std::fs::write(
        &agent_yaml,
        format!(
            "backends:\n  streamy:\n    command: sh {}\n    structured: codex-json\n",
            script.display()
        ),
    )
    .unwrap();
    let out = l.run(&[
        "--backend",
        "streamy",
        "--id",
        "streamed",
        "--step",
        "a",
        "x",
    ]);
    assert_exit(&out, 0);
    assert_exit(&l.run(&["wait", "streamed"]), 0);
    let out = l.run(&["status", "streamed", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["usage"]["output_tokens"], 967, "{s}");
    let activity = text(&l.run(&["logs", "streamed", "--activity"]).stdout);
    assert!(
        activity.contains("says: Fixed the depth tracking"),
        "{activity}"
    );
}
