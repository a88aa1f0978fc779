//! git, one way: in a directory, with `-c` settings and environment (a repository policy's
//! reach: pinned addresses, no proxies), never prompting for credentials, stdin closed. The
//! agent (workspaces, worktrees, changes), the CLI (a submit's repository, fetch and apply) and
//! the tests run git through here.

use std::path::Path;

/// How git is run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Git {
    /// `-c NAME=VALUE` settings, in order.
    pub config: Vec<String>,
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
}

/// Why a git command did not succeed.
#[derive(Debug)]
pub enum GitError {
    /// git could not be started (not installed, not on PATH).
    Spawn(std::io::Error),
    /// It ran and failed: its first argument, and what it said on stderr.
    Failed {
        /// The subcommand (`fetch`, `rev-parse`, …).
        command: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Spawn(e) => write!(f, "cannot run git ({e})"),
            GitError::Failed { command, stderr } => write!(f, "git {command}: {stderr}"),
        }
    }
}

impl std::error::Error for GitError {}

impl GitError {
    /// What git said (empty when it could not start).
    pub fn stderr(&self) -> &str {
        match self {
            GitError::Spawn(_) => "",
            GitError::Failed { stderr, .. } => stderr,
        }
    }
}

impl Git {
    /// git with no settings of its own (the machine's own repositories).
    pub fn local() -> Git {
        Git::default()
    }

    /// `git -C dir ARGS`: its stdout as bytes.
    pub fn output(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let mut cmd = std::process::Command::new("git");
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        let out = cmd
            .arg("-C")
            .arg(dir)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Failed {
                command: args.first().copied().unwrap_or("").to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// `git -C dir ARGS`: its stdout as text, trimmed.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        self.output(dir, args)
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_a_directory_with_settings_and_says_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git {
            config: vec!["init.defaultBranch=trunk".into()],
            env: vec![],
        };
        git.run(dir.path(), &["init", "-q"]).unwrap();
        let head = git
            .run(dir.path(), &["symbolic-ref", "--short", "HEAD"])
            .unwrap();
        assert_eq!(head, "trunk");
        let e = Git::local()
            .run(dir.path(), &["rev-parse", "--verify", "no-such-ref"])
            .unwrap_err();
        assert!(e.to_string().starts_with("git rev-parse: "), "{e}");
        assert!(!e.stderr().is_empty());
    }
}
