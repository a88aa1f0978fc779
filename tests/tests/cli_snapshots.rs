//! What the CLI prints, pinned (insta snapshots in tests/tests/snapshots/): help, `status`,
//! `nodes` and error messages, with terminal escapes in task text neutralised. A change shows
//! as a diff; accept it with `INSTA_UPDATE=always cargo nextest run -p dispatch-tests --test
//! cli_snapshots` (or `cargo insta review`) after reading it. Plus a closed pipe and
//! completions.

use dispatch_tests::{AgentOpts, Cluster, bin, text};
use std::process::{Command, Stdio};

/// Ports, durations and versions vary from run to run.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT");
    s.add_filter(r"\b\d+(\.\d+)? ?(ms|s|min|h) ago", "N ago");
    s.add_filter(r"output\.md: \d+ bytes", "output.md: N bytes");
    s.set_prepend_module_to_snapshot(false);
    s
}

/// A plain `dispatch` (no coordinator, an empty home: only what needs no daemon).
fn offline() -> Command {
    let mut c = Command::new(bin("dispatch"));
    c.env_remove("DISPATCH_COORDINATOR")
        .env(
            "DISPATCH_HOME",
            std::env::temp_dir().join("dispatch-snapshots-home"),
        )
        .env("NO_COLOR", "1");
    c
}

fn shown(out: &std::process::Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn help() {
    let _s = settings().bind_to_scope();
    for args in [
        &["--help"][..],
        &["status", "--help"],
        &["watch", "--help"],
        &["wait", "--help"],
        &["answer", "--help"],
        &["nodes", "--help"],
        &["doctor", "--help"],
    ] {
        let out = offline().args(args).output().unwrap();
        assert!(out.status.success());
        insta::assert_snapshot!(format!("help {}", args.join(" ")), text(&out.stdout));
    }
}

#[test]
fn status_and_nodes() {
    let _s = settings().bind_to_scope();
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("snap", 2));
    for (id, title) in [
        ("plain-task", "Review the auth module"),
        // Colour in a title is dropped; a screen-clearing sequence shows, escaped.
        ("coloured-task", "\x1b[31mred\x1b[0m alert \x1b[2J"),
    ] {
        let out = c
            .cli()
            .args([
                "--backend",
                "sim",
                "--id",
                id,
                "--title",
                title,
                "--step",
                "a",
                "x",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        c.wait_task(id, "it to end", |t| t.task_state().is_terminal());
    }
    insta::assert_snapshot!("status", shown(&c.run(&["status"])));
    insta::assert_snapshot!(
        "status one task",
        shown(&c.run(&["status", "coloured-task"]))
    );
    insta::assert_snapshot!("nodes", shown(&c.run(&["nodes"])));
}

#[test]
fn error_messages() {
    let _s = settings().bind_to_scope();
    let c = Cluster::new();
    insta::assert_snapshot!("unknown task", shown(&c.run(&["status", "no-such-task"])));
    insta::assert_snapshot!("bad task id", shown(&c.run(&["watch", "Not An Id"])));
    insta::assert_snapshot!("mistyped command", shown(&c.run(&["stauts"])));
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = c
        .cli()
        .env("DISPATCH_COORDINATOR", &nobody)
        .arg("status")
        .output()
        .unwrap();
    insta::assert_snapshot!("no coordinator", shown(&out));
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_0() {
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("pipe", 2));
    for i in 0..3 {
        let out = c
            .cli()
            .args([
                "--backend",
                "sim",
                "--id",
                &format!("p-{i}"),
                "--step",
                "a",
                "x",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // `dispatch status | head -1` with the reader gone before the first write.
    let mut child = c
        .cli()
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    // And through a real shell pipeline.
    let out = Command::new("sh")
        .args(["-c", "\"$0\" status | head -1"])
        .arg(bin("dispatch"))
        .env("DISPATCH_COORDINATOR", &c.url)
        .env("DISPATCH_TOKEN", &c.admin_token)
        .env("DISPATCH_HOME", c.dir.path().join("home"))
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).starts_with("ID "),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_generate_for_three_shells() {
    for (shell, marker) in [
        ("bash", "complete -F _dispatch"),
        ("zsh", "#compdef dispatch"),
        ("fish", "complete -c dispatch"),
    ] {
        let out = offline().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script:.300}");
        assert!(script.contains("watch"), "{shell} completes subcommands");
    }
    let man = offline().arg("man").output().unwrap();
    assert!(man.status.success());
    assert!(text(&man.stdout).contains(".TH dispatch 1"));
}
