//! Backends a node offers: the seed's CLIs found on PATH, plus the `sim` worker.
//!
//! Each CLI found is probed once at start (`--version`, and the help of what the node runs):
//! its command is built from what that version accepts, and a version the node cannot drive
//! is offered with an `error` (shown in `dispatch nodes` and `doctor`, never routed to).

use dispatch_core::backend::{BUILTIN, SIM};
use dispatch_core::signals::Cli;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one probe of a CLI (`--version`, its help) may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// One backend this node can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Name used by tasks (`claude`, `cursor`, `codex`, `sim`, or a custom one).
    pub name: String,
    /// Command template, run as `sh -c '<command> "$@"' dispatch-worker [--model M] PROMPT`.
    pub command: String,
    /// Executable that must be on PATH for the backend to work, when known.
    pub program: Option<String>,
    /// Models it offers (discovered on this machine), empty when unknown.
    pub models: Vec<String>,
    /// At most this many of its tasks at once (0: no cap beyond the node's).
    pub max_tasks: u32,
    /// The structured stream its command prints, when configured (`structured:`).
    pub stream: Option<dispatch_core::stream::StreamFormat>,
    /// The CLI it runs, when dispatch can read that CLI's signals (retries, errors).
    pub cli: Option<Cli>,
    /// The version its CLI reported at start ("" when it did not say).
    pub version: String,
    /// Why this node cannot run it ("" when it can).
    pub error: String,
    /// Arguments added when a task's workdir is not inside a git repository.
    pub outside_git: Vec<String>,
    /// `--model` is passed to it: cursor and codex always, claude with `pass_model: true`.
    pub pass_model: bool,
    /// The flags that turn on its structured stream, as its version has them.
    pub stream_flags: Option<&'static str>,
    /// Its CLI runs a `PreToolUse` hook the node sets up per run (tool approvals).
    pub hooks: bool,
}

impl BackendSpec {
    /// A backend that runs `command` (a custom one, or `sim`).
    pub fn custom(name: &str, command: String) -> BackendSpec {
        let cli = Cli::of(name, &command);
        BackendSpec {
            name: name.into(),
            cli,
            command,
            program: None,
            models: vec![],
            max_tasks: 0,
            stream: None,
            version: String::new(),
            error: String::new(),
            outside_git: vec![],
            pass_model: false,
            stream_flags: None,
            // A command of one's own that runs Claude Code takes `--settings` as it always
            // has; any other is not known to run a hook.
            hooks: cli == Some(Cli::Claude),
        }
    }
}

/// What running `program`'s `--version` and help printed, for [`dispatch_core::drive`].
pub fn probe(b: &dispatch_core::backend::BuiltinBackend) -> dispatch_core::drive::Probe {
    let help_args: &[&str] = match b.name {
        "claude" => &["--help"],
        "codex" => &["exec", "--help"],
        _ => &[],
    };
    // Both at once: a node's start waits for the slower.
    let program = b.program.to_string();
    let help = (!help_args.is_empty()).then(|| {
        let program = program.clone();
        let args: Vec<String> = help_args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_with_limit(&program, &args, PROBE_LIMIT).ok()
        })
    });
    let version = run_with_limit(&program, &["--version"], PROBE_LIMIT).ok();
    dispatch_core::drive::Probe {
        version,
        help: help.and_then(|h| h.join().ok().flatten()),
        root: nix::unistd::geteuid().is_root(),
        sandbox_env: std::env::var_os("IS_SANDBOX").is_some_and(|v| !v.is_empty()),
    }
}

/// Finds `program` on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The backends of this machine: each seed CLI on PATH (probed, in parallel), then `sim` run
/// by `sim_command`.
pub fn detect(sim_command: String) -> Vec<BackendSpec> {
    let found: Vec<_> = BUILTIN
        .iter()
        .filter(|b| on_path(b.program).is_some())
        .map(|b| {
            std::thread::spawn(move || {
                let p = probe(b);
                builtin(
                    b,
                    &dispatch_core::drive::drive(b.name, &p),
                    discover_models(b.name),
                )
            })
        })
        .collect();
    let mut out: Vec<BackendSpec> = found.into_iter().filter_map(|h| h.join().ok()).collect();
    for b in &out {
        if !b.error.is_empty() {
            tracing::warn!(backend = %b.name, version = %b.version, "backend `{}` cannot run on this node: {}", b.name, b.error);
        } else if b.version.is_empty() {
            tracing::info!(backend = %b.name, "`{} --version` did not answer as the real CLI does; running it with the default command: {}", b.program.as_deref().unwrap_or(""), b.command);
        }
    }
    out.push(BackendSpec::custom(SIM, sim_command));
    out
}

/// Models a backend offers here: the Claude CLI's stable aliases, the seed's Codex ids, and
/// whatever `agent models` lists for Cursor (run with a 15 s limit).
pub fn discover_models(backend: &str) -> Vec<String> {
    match backend {
        "claude" => dispatch_core::backend::CLAUDE_MODELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "codex" => dispatch_core::backend::CODEX_MODELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "cursor" => {
            match run_with_limit("agent", &["models"], std::time::Duration::from_secs(15)) {
                Ok(out) => dispatch_core::backend::parse_agent_models(&out)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
                Err(e) => {
                    tracing::warn!(
                        "`agent models` failed: {e}; cursor models are unknown on this node"
                    );
                    vec![]
                }
            }
        }
        _ => vec![],
    }
}

/// Runs `program args` and returns its stdout and stderr, killing it after `limit`.
pub fn run_with_limit(
    program: &str,
    args: &[&str],
    limit: std::time::Duration,
) -> Result<String, String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        // Never in a workdir: a probe must not touch anything a task may use.
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            return if out.status.success() {
                Ok(text)
            } else {
                Err(format!(
                    "`{program} {}` exited with {}: {}",
                    args.join(" "),
                    out.status,
                    text.trim()
                ))
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{program} {}` did not finish within {limit:?}",
                args.join(" ")
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stand-ins for the built-in backends a config file names, as if they were detected: what
/// checking a file needs without looking at PATH (or running anything).
pub fn assume_detected(
    file: &std::collections::BTreeMap<String, dispatch_core::agent_config::AgentBackend>,
) -> Vec<BackendSpec> {
    BUILTIN
        .iter()
        .filter(|b| file.contains_key(b.name))
        .map(|b| {
            builtin(
                b,
                &dispatch_core::drive::drive(b.name, &Default::default()),
                vec![],
            )
        })
        .collect()
}

/// A built-in backend as a node offers it, driven as `d` says, with `models`.
fn builtin(
    b: &dispatch_core::backend::BuiltinBackend,
    d: &dispatch_core::drive::Drive,
    models: Vec<String>,
) -> BackendSpec {
    BackendSpec {
        name: b.name.into(),
        command: d.command.clone(),
        program: Some(b.program.into()),
        models,
        max_tasks: 0,
        stream: None,
        cli: Cli::of(b.name, ""),
        version: d.version.clone(),
        error: d.error.clone(),
        outside_git: d.outside_git.clone(),
        pass_model: dispatch_core::backend::appends_model(b.name),
        stream_flags: d.stream_flags,
        hooks: d.hooks,
    }
}

/// Applies the config file's `backends:` to the detected ones: caps, models and commands for
/// detected backends, and custom backends (which need a `command`).
pub fn configure(
    mut detected: Vec<BackendSpec>,
    file: &std::collections::BTreeMap<String, dispatch_core::agent_config::AgentBackend>,
) -> Result<Vec<BackendSpec>, String> {
    for (name, b) in file {
        dispatch_core::limits::check_name("backend name", name).map_err(|e| e.to_string())?;
        match detected.iter_mut().find(|d| d.name == *name) {
            Some(d) => {
                if let Some(c) = &b.command {
                    d.command = c.clone();
                    // The node runs the command it was given: what the probe found about the
                    // default one does not hold for it (running as root still does).
                    if !(d.error.contains("as root")
                        && c.contains("--dangerously-skip-permissions"))
                    {
                        d.error.clear();
                    }
                }
                if let Some(m) = &b.models {
                    d.models = m.clone();
                }
                d.max_tasks = b.max_tasks.unwrap_or(0);
                if let Some(p) = b.pass_model {
                    d.pass_model = p || dispatch_core::backend::appends_model(name);
                }
                structured(d, b.structured.as_ref())?;
            }
            None => {
                let Some(command) = &b.command else {
                    return Err(format!(
                        "backend `{name}` in the config is not installed here and has no `command`; give its command or remove it"
                    ));
                };
                let mut spec = BackendSpec::custom(name, command.clone());
                spec.models = b.models.clone().unwrap_or_default();
                spec.max_tasks = b.max_tasks.unwrap_or(0);
                spec.pass_model = b.pass_model.unwrap_or(false);
                structured(&mut spec, b.structured.as_ref())?;
                detected.push(spec);
            }
        }
    }
    Ok(detected)
}

/// Applies a backend's `structured:` setting: `true` adds the built-in CLI's flags for its
/// stream (claude: `--output-format stream-json --verbose`, codex: `--json`); a format name
/// says what a command already prints.
fn structured(
    b: &mut BackendSpec,
    setting: Option<&dispatch_core::agent_config::Structured>,
) -> Result<(), String> {
    use dispatch_core::agent_config::Structured;
    use dispatch_core::stream::StreamFormat;
    match setting {
        None | Some(Structured::On(false)) => {}
        Some(Structured::On(true)) => {
            let Some((format, _)) = StreamFormat::of_builtin(&b.name) else {
                return Err(format!(
                    "backend `{}`: `structured: true` works for claude and codex; for another command name the format it prints: `structured: claude-stream-json` or `structured: codex-json`",
                    b.name
                ));
            };
            // The flags this version has; one without them cannot stream (a capability
            // error of the backend, not of the file).
            let Some(flags) = b.stream_flags else {
                if b.error.is_empty() {
                    b.error = dispatch_core::drive::structured_error(
                        &b.name,
                        &dispatch_core::drive::Drive {
                            version: b.version.clone(),
                            ..Default::default()
                        },
                    );
                }
                return Ok(());
            };
            if !b.command.contains(flags) {
                b.command = format!("{} {flags}", b.command.trim_end());
            }
            b.stream = Some(format);
        }
        Some(Structured::Format(f)) => {
            let format = StreamFormat::parse(f).ok_or_else(|| {
                format!(
                    "backend `{}`: unknown structured format `{f}`; use claude-stream-json or codex-json (or true for claude and codex)",
                    b.name
                )
            })?;
            b.stream = Some(format);
            // The stream tells whose words the output is in.
            b.cli = Some(format.cli());
        }
    }
    Ok(())
}

/// The command that runs this executable's `sim-worker` subcommand.
pub fn sim_command_for_current_exe() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "dispatch-agent".into());
    format!("{} sim-worker", shell_quote(&exe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn structured_output_adds_the_flags_or_names_a_format() {
        use dispatch_core::agent_config::AgentFile;
        use dispatch_core::stream::StreamFormat;
        let detected = |name: &str, command: &str| {
            let b = BUILTIN.iter().find(|b| b.name == name).unwrap();
            let mut d = builtin(
                b,
                &dispatch_core::drive::drive(name, &Default::default()),
                vec![],
            );
            d.command = command.into();
            d
        };
        let file = AgentFile::parse(
            "backends:\n  claude: { structured: true }\n  codex: { structured: false }\n  mine: { command: mine run, structured: codex-json }\n",
        )
        .unwrap();
        let b = configure(
            vec![
                detected("claude", "claude -p"),
                detected("codex", "codex exec"),
            ],
            &file.backends,
        )
        .unwrap();
        assert_eq!(
            b[0].command,
            "claude -p --output-format stream-json --verbose"
        );
        assert_eq!(b[0].stream, Some(StreamFormat::ClaudeStreamJson));
        assert_eq!((b[1].command.as_str(), b[1].stream), ("codex exec", None));
        assert_eq!(b[2].command, "mine run");
        assert_eq!(b[2].stream, Some(StreamFormat::CodexJson));
        for (bad, says) in [
            (
                "backends:\n  mine: { command: x, structured: true }\n",
                "works for claude and codex",
            ),
            (
                "backends:\n  mine: { command: x, structured: xml }\n",
                "unknown structured format `xml`",
            ),
        ] {
            let file = AgentFile::parse(bad).unwrap();
            let err = configure(vec![], &file.backends).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn sim_is_always_there() {
        let b = detect("x sim-worker".into());
        assert_eq!(b.last().unwrap().name, "sim");
    }
}
