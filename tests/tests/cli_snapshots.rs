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
    insta::assert_snapshot!("one word", shown(&c.run(&["questions"])));
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

/// The `dispatch …`, `dispatch-coordinator …` and `dispatch-agent …` commands a file names:
/// the binary and the bare lowercase words after it (up to the first flag, argument or
/// placeholder), from inline code and, in Markdown, from the lines of code blocks (where only
/// a line's first word or one after a shell separator starts a command: the rest is prose
/// beside it).
fn commands_named(text: &str, markdown: bool) -> Vec<(String, Vec<String>)> {
    let mut snippets: Vec<(&str, bool)> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if markdown && line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            snippets.push((line, true));
        } else {
            snippets.extend(line.split('`').skip(1).step_by(2).map(|s| (s, false)));
        }
    }
    let mut found = Vec::new();
    for (snippet, in_block) in snippets {
        let words: Vec<&str> = snippet.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let starts = i == 0 || ["$", "|", "&&", ";", "||"].contains(&words[i - 1]);
            let w = w.trim_start_matches(['$', '(']);
            if (in_block && !starts)
                || !matches!(w, "dispatch" | "dispatch-coordinator" | "dispatch-agent")
            {
                continue;
            }
            let args = words[i + 1..]
                .iter()
                .take_while(|a| {
                    a.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && a.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                .map(|a| a.to_string())
                .collect();
            found.push((w.to_string(), args));
        }
    }
    found
}

/// Issue 23: docs/operations.md and an alert sent on-call to `dispatch questions`, which does
/// not exist (and which dispatched a paid task). Every command README, docs/, deploy/ and skills/ name
/// exists: each word after the binary is one of its commands (its `--help` shows a usage line
/// of exactly those words) until the first word of a command that takes no subcommands.
#[test]
fn every_command_the_docs_and_alerts_name_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs"), root.join("deploy"), root.join("skills")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .is_some_and(|x| ["md", "yaml", "yml", "service"].contains(&x.to_str().unwrap()))
            {
                files.push(p);
            }
        }
    }
    let mut helps: std::collections::HashMap<Vec<String>, String> = Default::default();
    let mut help = |path: &[String]| -> String {
        helps
            .entry(path.to_vec())
            .or_insert_with(|| {
                let mut cmd = offline();
                if path[0] != "dispatch" {
                    cmd = Command::new(bin(&path[0]));
                }
                let out = cmd.args(&path[1..]).arg("--help").output().unwrap();
                text(&out.stdout)
            })
            .clone()
    };
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let body = std::fs::read_to_string(file).unwrap();
        let markdown = file.extension().is_some_and(|x| x == "md");
        for (binary, words) in commands_named(&body, markdown) {
            if binary == "dispatch" && words == ["stauts"] {
                continue; // README's example of a mistyped command
            }
            let mut path = vec![binary];
            for w in words {
                let parent = help(&path);
                if !parent.contains("\nCommands:\n") {
                    break; // a command without subcommands: the rest are its arguments
                }
                path.push(w);
                let usage = format!("Usage: {} ", path.join(" "));
                if !help(&path).lines().any(|l| l.starts_with(&usage)) {
                    wrong.push(format!("{}: `{}`", file.display(), path.join(" ")));
                    break;
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "found only {checked} commands in {files:?}");
    assert!(
        wrong.is_empty(),
        "commands named that do not exist:\n{}",
        wrong.join("\n")
    );
}
