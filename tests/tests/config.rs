//! The user's config: first-run setup with stub CLIs, edits that keep comments, and the seed's
//! model and alias resolution at submit.

use dispatch_tests::{AgentOpts, Cluster, bin, text};
use std::path::Path;
use std::process::Command;

fn stub(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn dispatch(home: &Path, path: &str) -> Command {
    let mut c = Command::new(bin("dispatch"));
    c.env_remove("DISPATCH_COORDINATOR")
        .env("DISPATCH_HOME", home)
        .env("PATH", path)
        .env("NO_COLOR", "1");
    c
}

#[test]
fn config_init_detects_the_clis_and_models_and_writes_the_seed_layout() {
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("bin");
    std::fs::create_dir_all(&stubs).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/agent-models.txt");
    stub(
        &stubs,
        "agent",
        &format!("[ \"$1\" = models ] && cat '{fixture}'"),
    );
    stub(&stubs, "claude", "exit 0");
    stub(&stubs, "codex", "exit 0");
    let home = dir.path().join("home");
    let out = dispatch(&home, &format!("{}:/usr/bin:/bin", stubs.display()))
        .args(["config", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Default: opus."),
        "{}",
        text(&out.stdout)
    );
    let written = std::fs::read_to_string(home.join("config.yaml")).unwrap();
    let cfg = dispatch_core::config::Config::parse(&written).unwrap();
    assert_eq!(cfg.default.as_deref(), Some("opus"));
    let backend = |m: &str| {
        cfg.model(m)
            .map(|x| x.backend.clone())
            .unwrap_or_else(|| panic!("{m} missing:\n{written}"))
    };
    for (m, b) in [
        ("opus", "claude"),
        ("sonnet", "claude"),
        ("haiku", "claude"),
        ("opus-4.6-thinking", "claude"),
        ("sonnet-4.6", "claude"),
        ("gpt-5.3-codex", "codex"),
        ("gpt-5.2", "codex"),
        ("gemini-3.1-pro", "cursor"),
        ("composer-1.5", "cursor"),
        ("grok-4", "cursor"),
    ] {
        assert_eq!(backend(m), b, "{m}");
    }
    assert!(
        cfg.model("auto").is_none(),
        "`auto` is not a model to route"
    );
    assert_eq!(
        cfg.backends
            .iter()
            .map(|b| b.0.as_str())
            .collect::<Vec<_>>(),
        ["claude", "cursor", "codex"]
    );
    for heading in ["  # Claude\n", "  # GPT / OpenAI\n", "  # Gemini\n"] {
        assert!(written.contains(heading), "{heading:?} in:\n{written}");
    }
    let again = dispatch(&home, "/usr/bin:/bin")
        .args(["config", "init"])
        .output()
        .unwrap();
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    // No CLI at all: say how to install one and write nothing.
    let empty = dir.path().join("empty-home");
    let out = dispatch(&empty, "/usr/bin:/bin")
        .args(["config", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(
        "Install one — Cursor CLI (`agent`), Claude Code (`claude`) or Codex CLI (`codex`)"
    ));
    assert!(!empty.join("config.yaml").exists());
}

#[test]
fn config_edits_keep_the_users_comments() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/seed/config-example.yaml"
        ),
        home.join("config.yaml"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = dispatch(home, "/usr/bin:/bin").args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(&["config", "set-default", "sonnet"]);
    assert_eq!(
        run(&["config", "add-model", "sonnet-4.6"]).trim(),
        "Added sonnet-4.6 → claude."
    );
    run(&["config", "remove-model", "gpt-5.2"]);
    run(&[
        "config",
        "add-alias",
        "gpt-reviewer",
        "--model",
        "gpt-5.3-codex",
        "--prompt",
        "Focus on naming.",
    ]);
    run(&["config", "remove-alias", "quick"]);
    let text_now = std::fs::read_to_string(home.join("config.yaml")).unwrap();
    assert!(
        text_now.contains("# Cursor CLI flags:")
            && text_now.contains("default: sonnet  # Default model"),
        "comments kept:\n{text_now}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&run(&["config", "show", "--json"])).unwrap();
    assert_eq!(shown["default"], "sonnet");
    assert_eq!(shown["models"]["sonnet-4.6"], "claude");
    assert!(shown["models"].get("gpt-5.2").is_none());
    assert_eq!(shown["aliases"]["gpt-reviewer"]["model"], "gpt-5.3-codex");
    assert!(shown["aliases"].get("quick").is_none());
    let bad = dispatch(home, "/usr/bin:/bin")
        .args(["config", "set-default", "nope"])
        .output()
        .unwrap();
    assert!(
        text(&bad.stderr).contains("`nope` is not a configured model or alias"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::write(
        home.join("config.yaml"),
        "default: opus\nmodels:\n  opus: { backend: [x] }\n",
    )
    .unwrap();
    let bad = dispatch(home, "/usr/bin:/bin")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(
        text(&bad.stderr).contains("config.yaml: line 3: models.opus"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_model_and_alias_named_in_the_prompt_pick_the_backend_and_the_alias_prompt() {
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("box", 2));
    let home = c.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.yaml"),
        "default: slow-sim\nmodels:\n  slow-sim: { backend: sim }\n  fast-sim: { backend: sim }\naliases:\n  reviewer:\n    model: fast-sim\n    prompt: >\n      You are a careful reviewer.\n",
    )
    .unwrap();
    let out = c.run(&[
        "--id",
        "by-alias",
        "--step",
        "look",
        "--wait",
        "have reviewer check the parser",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Dispatched `by-alias` using fast-sim on box."),
        "{}",
        text(&out.stdout)
    );
    let output =
        std::fs::read_to_string(c.workdir().join(".dispatch/tasks/by-alias/output.md")).unwrap();
    assert!(
        output.contains(
            "## Prompt as received\n\nYou are a careful reviewer.\n\nYou have a plan file at"
        ),
        "the alias prompt comes first:\n{output}"
    );
    let out = c.run(&[
        "--id",
        "by-default",
        "--step",
        "look",
        "no model named here",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Using slow-sim (your default)."),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(c.status("by-default")["model"], "slow-sim");
    let out = c.run(&["run", "--model", "llama-7", "x"]);
    assert!(
        text(&out.stderr).contains("model `llama-7` is not in your config"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 23: nodes that offer only a custom backend made the first dispatch fail with "No
/// agent CLI found … write ~/.dispatch/config.yaml yourself" (although DISPATCH_HOME was set),
/// `config init` said the same and `config add-model` sent the user back to `config init`.
/// Now the custom backend is offered as a model of its own name; with nothing at all, the
/// message names the real config path and `--backend`, and `add-model` writes a config.
#[test]
fn a_first_dispatch_to_nodes_with_only_a_custom_backend_works() {
    let mut c = Cluster::new();
    let dir = c.dir.path().join("custom");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        "backends:\n  house-bot:\n    command: sh -c 'echo done'\n",
    )
    .unwrap();
    let mut o = AgentOpts::new("box", 2);
    o.config = Some(cfg);
    c.add_agent(o);
    let home = c.dir.path().join("home");
    let out = c
        .cli()
        .env("PATH", "/usr/bin:/bin")
        .args(["--id", "first", "--step", "one", "the first task"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "First run: wrote {} with 1 model (default: house-bot)",
            home.join("config.yaml").display()
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(c.status("first")["backend"], "house-bot");

    // Nothing anywhere (no coordinator, no CLI on PATH): the hint names DISPATCH_HOME's file
    // and --backend; add-model is the way out, not a loop back to `config init`.
    let empty = c.dir.path().join("empty-home");
    let out = dispatch(&empty, "/usr/bin:/bin")
        .args(["config", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "Nothing was written to {}.",
            empty.join("config.yaml").display()
        )),
        "{err}"
    );
    assert!(!err.contains("~/.dispatch"), "{err}");
    assert!(err.contains("`dispatch --backend NAME"), "{err}");
    assert!(
        err.contains("`dispatch config add-model MODEL --backend NAME`"),
        "{err}"
    );
    let out = dispatch(&empty, "/usr/bin:/bin")
        .args(["config", "add-model", "house-bot", "--backend", "house-bot"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = dispatch_core::config::Config::parse(
        &std::fs::read_to_string(empty.join("config.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(written.default.as_deref(), Some("house-bot"));
    assert_eq!(written.model("house-bot").unwrap().backend, "house-bot");
}

/// `dispatch config show | head -1`: when the reader goes away the CLI stops quietly with
/// status 0 (no panic text), as README says — the CLI asks the pipe whether its reader is gone
/// rather than matching a panic message.
#[test]
fn output_into_a_reader_that_goes_away_ends_quietly_with_status_0() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let mut config = String::from("default: m0\nmodels:\n");
    for i in 0..6000 {
        config.push_str(&format!("  m{i}: {{ backend: claude }}\n"));
    }
    std::fs::write(home.path().join("config.yaml"), config).unwrap();
    let mut child = dispatch(home.path(), "/usr/bin:/bin")
        .args(["config", "show"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    // The reader goes away with ~130 KB still to write (more than a pipe holds).
    drop(out);
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(
        !text(&done.stderr).contains("panicked"),
        "{}",
        text(&done.stderr)
    );
}
