//! How a node drives the built-in agent CLIs, which change every week: the command it runs is
//! built from what the installed version accepts (its `--version` and help text, read once at
//! node start), and a version it cannot drive is a capability error with what to do, not a
//! task that fails.
//!
//! Only what a probe shows for certain counts against a CLI: a program that does not answer
//! `--version` the way the real CLI does (a wrapper script, a stub) keeps the default command
//! and is reported as unchecked.

use crate::backend::BUILTIN;

/// What running a CLI's `--version` and help printed (None: it did not answer, or failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Output of `<program> --version`.
    pub version: Option<String>,
    /// Output of the help of the subcommand the node runs (`claude --help`,
    /// `codex exec --help`).
    pub help: Option<String>,
    /// The agent runs as root.
    pub root: bool,
    /// `IS_SANDBOX` is set in the agent's environment (Claude Code then allows
    /// `--dangerously-skip-permissions` as root).
    pub sandbox_env: bool,
}

/// How a node runs one built-in CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drive {
    /// The version the CLI reported (`2.1.332`, `0.171.0`; "" when it did not say).
    pub version: String,
    /// The command template (run as `sh -c '<command> "$@"'`), without `--model` and prompt.
    pub command: String,
    /// The flags that turn on its structured stream, when this version has them.
    pub stream_flags: Option<&'static str>,
    /// Arguments added when a task's workdir is not inside a git repository.
    pub outside_git: Vec<String>,
    /// Why this node cannot run it ("" when it can).
    pub error: String,
    /// Its version runs a `PreToolUse` hook that dispatch sets up for one run, so its tool
    /// calls can go through tool approvals: Claude Code (`--settings`), Codex 0.124 and later
    /// (`-c hooks.PreToolUse=…` with `--dangerously-bypass-hook-trust`).
    pub hooks: bool,
}

/// The help's usage of `exec` (Codex), as the node reads it.
fn has(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .any(|w| w == flag)
}

/// `2.1.332` from `2.1.332 (Claude Code)`, only for the real Claude Code.
pub fn claude_version(out: &str) -> Option<&str> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let v = line.strip_suffix("(Claude Code)")?.trim();
    v.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .then_some(v)
}

/// `0.171.0` from `codex-cli 0.171.0`, only for the real Codex CLI.
pub fn codex_version(out: &str) -> Option<&str> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let v = line.strip_prefix("codex-cli ")?.trim();
    (!v.is_empty()
        && v.split('.').count() >= 2
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    .then_some(v)
}

/// A version string from any CLI's `--version` (its first word that starts with a digit).
fn any_version(out: &str) -> String {
    out.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.len() <= 40)
        .unwrap_or("")
        .to_string()
}

fn default_command(backend: &str) -> String {
    BUILTIN
        .iter()
        .find(|b| b.name == backend)
        .map(|b| b.command.to_string())
        .unwrap_or_default()
}

/// How to run `backend` (`claude`, `codex` or `cursor`) as probed.
pub fn drive(backend: &str, p: &Probe) -> Drive {
    match backend {
        "claude" => claude(p),
        "codex" => codex(p),
        _ => Drive {
            version: p.version.as_deref().map(any_version).unwrap_or_default(),
            command: default_command(backend),
            ..Drive::default()
        },
    }
}

fn claude(p: &Probe) -> Drive {
    let mut d = Drive {
        command: default_command("claude"),
        stream_flags: Some("--output-format stream-json --verbose"),
        hooks: true,
        ..Drive::default()
    };
    // Not the real Claude Code (a wrapper, a stub): drive it as the seed does.
    let Some(v) = p.version.as_deref().and_then(claude_version) else {
        return d;
    };
    d.version = v.to_string();
    if let Some(help) = &p.help {
        if !has(help, "--print") && !has(help, "-p") {
            d.error = format!(
                "Claude Code {v} has no -p/--print (non-interactive mode); dispatch runs it unattended: update it (npm install -g @anthropic-ai/claude-code)"
            );
            return d;
        }
        if !has(help, "--dangerously-skip-permissions") {
            d.error = format!(
                "Claude Code {v} has no --dangerously-skip-permissions, which an unattended worker needs: update it (npm install -g @anthropic-ai/claude-code)"
            );
            return d;
        }
        if !has(help, "--output-format") {
            d.stream_flags = None;
        }
    }
    if p.root && !p.sandbox_env {
        d.error = "Claude Code refuses --dangerously-skip-permissions as root (\"cannot be used with root/sudo privileges\"): run this node's agent as an unprivileged user, as the systemd unit and the Kubernetes pods do (or set IS_SANDBOX=1 in its environment if the node is a disposable sandbox)".into();
    }
    d
}

fn codex(p: &Probe) -> Drive {
    let mut d = Drive {
        // What current versions accept; a probe refines it.
        command: default_command("codex"),
        stream_flags: Some("--json"),
        outside_git: vec!["--skip-git-repo-check".into()],
        ..Drive::default()
    };
    let Some(v) = p.version.as_deref().and_then(codex_version) else {
        return d;
    };
    d.version = v.to_string();
    let Some(help) = &p.help else {
        return d;
    };
    if !help.contains("exec") {
        d.error = format!(
            "codex-cli {v} has no `exec` (non-interactive mode), which dispatch runs: update it (npm install -g @openai/codex)"
        );
        return d;
    }
    let unattended = if has(help, "--full-auto") {
        "--full-auto"
    } else if has(help, "--sandbox") && help.contains("workspace-write") {
        "--sandbox workspace-write"
    } else {
        d.error = format!(
            "codex-cli {v}: its `exec` has neither --full-auto nor --sandbox workspace-write, so it cannot run unattended with writes to its workdir: update it (npm install -g @openai/codex)"
        );
        return d;
    };
    d.command = if has(help, "--cd") || has(help, "-C") {
        format!("codex exec {unattended} -C \"$(pwd)\"")
    } else {
        format!("codex exec {unattended}")
    };
    if !has(help, "--json") {
        d.stream_flags = None;
    }
    if !has(help, "--skip-git-repo-check") {
        d.outside_git.clear();
    }
    // Hooks run only once trusted, and trust is kept per hook in the user's config: a run's
    // own hook needs the flag that waives it for that run (0.124+ has hooks; the flag came
    // with trust).
    d.hooks =
        has(help, "--dangerously-bypass-hook-trust") && (has(help, "-c") || has(help, "--config"));
    d
}

/// Why `structured: true` cannot work with this version ("" when it can).
pub fn structured_error(backend: &str, d: &Drive) -> String {
    if d.stream_flags.is_some() {
        return String::new();
    }
    match backend {
        "codex" => format!(
            "structured: true needs `codex exec --json`, which codex-cli {} does not have: update codex (npm install -g @openai/codex) or set structured: false",
            d.version
        ),
        _ => format!(
            "structured: true needs `{backend} --output-format stream-json`, which version {} does not have: update it or set structured: false",
            d.version
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn probe(version: &str, help: &str) -> Probe {
        Probe {
            version: Some(fixture(version)),
            help: Some(fixture(help)),
            ..Probe::default()
        }
    }

    #[test]
    fn current_codex_gets_the_sandbox_flag_not_full_auto() {
        let d = drive(
            "codex",
            &probe("codex-0.171.0-version.txt", "codex-0.171.0-exec-help.txt"),
        );
        assert_eq!(d.version, "0.171.0");
        assert_eq!(
            d.command,
            "codex exec --sandbox workspace-write -C \"$(pwd)\""
        );
        assert_eq!(d.stream_flags, Some("--json"));
        assert_eq!(d.outside_git, ["--skip-git-repo-check"]);
        assert_eq!(d.error, "");
        assert!(d.hooks, "0.171 runs a hook set up for one run");
    }

    #[test]
    fn an_old_codex_keeps_full_auto_and_has_no_stream() {
        let d = drive(
            "codex",
            &probe(
                "codex-0.0.2505291458-version.txt",
                "codex-0.0.2505291458-exec-help.txt",
            ),
        );
        assert_eq!(d.version, "0.0.2505291458");
        assert_eq!(d.command, "codex exec --full-auto -C \"$(pwd)\"");
        assert_eq!(d.stream_flags, None);
        assert!(!d.hooks, "no hooks before 0.124");
        assert!(structured_error("codex", &d).contains("codex-cli 0.0.2505291458 does not have"));
        let none = drive(
            "codex",
            &Probe {
                version: Some("codex-cli 0.5.0".into()),
                help: Some("Usage: codex exec [OPTIONS] <PROMPT>\n  -m, --model <MODEL>\n".into()),
                ..Probe::default()
            },
        );
        assert!(
            none.error.contains("cannot run unattended"),
            "{}",
            none.error
        );
    }

    #[test]
    fn claude_as_root_is_a_capability_error_unless_in_a_sandbox() {
        let mut p = probe("claude-2.1.332-version.txt", "claude-2.1.332-help.txt");
        let d = drive("claude", &p);
        assert_eq!((d.version.as_str(), d.error.as_str()), ("2.1.332", ""));
        assert_eq!(
            d.stream_flags,
            Some("--output-format stream-json --verbose")
        );
        p.root = true;
        assert!(drive("claude", &p).error.contains("as root"));
        p.sandbox_env = true;
        assert_eq!(drive("claude", &p).error, "");
    }

    #[test]
    fn what_is_not_the_real_cli_is_driven_as_the_seed_does() {
        for backend in ["claude", "codex"] {
            let d = drive(
                backend,
                &Probe {
                    version: Some("Error: You've hit your usage limit.".into()),
                    help: None,
                    root: true,
                    sandbox_env: false,
                },
            );
            assert_eq!(d.error, "", "{backend}");
            assert_eq!(d.version, "");
        }
        assert_eq!(
            drive("cursor", &Probe::default()).command,
            "agent -p --force --workspace \"$(pwd)\""
        );
        assert_eq!(claude_version("2.1.332 (Claude Code)\n"), Some("2.1.332"));
        assert_eq!(claude_version("2.1 (Something)"), None);
        assert_eq!(codex_version("codex-cli 0.171.0\n"), Some("0.171.0"));
        assert_eq!(codex_version("codex 1.0"), None);
    }
}
