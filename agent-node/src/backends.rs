//! Backends a node offers: the seed's CLIs found on PATH, plus the `sim` worker.

use dispatch_core::backend::{BUILTIN, SIM};
use std::path::{Path, PathBuf};

/// One backend this node can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Name used by tasks (`claude`, `cursor`, `codex`, `sim`, or a custom one).
    pub name: String,
    /// Command template, run as `sh -c '<command> "$@"' dispatch-worker [--model M] PROMPT`.
    pub command: String,
    /// Executable that must be on PATH for the backend to work, when known.
    pub program: Option<String>,
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

/// The backends of this machine: each seed CLI on PATH, then `sim` run by `sim_command`.
pub fn detect(sim_command: String) -> Vec<BackendSpec> {
    let mut out: Vec<BackendSpec> = BUILTIN
        .iter()
        .filter(|b| on_path(b.program).is_some())
        .map(|b| BackendSpec {
            name: b.name.into(),
            command: b.command.into(),
            program: Some(b.program.into()),
        })
        .collect();
    out.push(BackendSpec {
        name: SIM.into(),
        command: sim_command,
        program: None,
    });
    out
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
    fn sim_is_always_there() {
        let b = detect("x sim-worker".into());
        assert_eq!(b.last().unwrap().name, "sim");
    }
}
