//! An agent node's config file (`dispatch-agent --config FILE`). Flags and `DISPATCH_AGENT_*`
//! environment variables override it.
//!
//! ```yaml
//! name: build-box
//! coordinator: http://dispatch.internal:7070
//! labels: { gpu: a100, zone: eu }
//! max_tasks: 4
//! workdir: /srv/src/app
//! workspace_roots: [/srv/src]      # a task's --workdir must be under one of these
//! backends:
//!   claude: { max_tasks: 1 }       # cap a detected backend (pass_model: true passes --model)
//!   mycli:                         # a custom backend
//!     command: mycli run --yes
//!     models: [fast, smart]
//! api_retries: 3                   # API retries in a row before a worker is stopped (default 3)
//! worker_env: [ANTHROPIC_*, OPENAI_API_KEY]   # only these reach workers (default: all but DISPATCH_*)
//! repositories:                    # which repositories tasks may name (this is the default)
//!   schemes: [https, ssh]          # add `file` for repositories on this machine
//!   hosts: []                      # only these hosts, by name or address (none: any public address)
//! trusted_keys:                    # run only tasks signed by one of these (`dispatch keys show`)
//!   - ed25519:3q2+7w…
//! changes:                         # how worktree/workspace tasks' branches come home
//!   deliver: bundle                # bundle (through the coordinator) or push (to origin)
//!   max_bundle_bytes: 67108864     # a larger bundle is an error that says to push instead
//!   name: dispatch on build-box    # committer of what a worker left uncommitted
//!   email: dispatch@build-box
//! tls:                             # for an https:// coordinator
//!   ca: /etc/dispatch/ca.pem       # the CA that signed it (none: the system's roots)
//!   cert: /etc/dispatch/node.pem   # this node's certificate, for a coordinator with --client-ca
//!   key: /etc/dispatch/node.key
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One backend entry: overrides for a detected backend, or a custom one (with `command`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBackend {
    /// Command template (required for a backend that is not detected).
    #[serde(default)]
    pub command: Option<String>,
    /// Models it offers.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// At most this many of its tasks at once.
    #[serde(default)]
    pub max_tasks: Option<u32>,
    /// Structured output: `true` for claude or codex (the node adds the flags that turn it
    /// on), or the format a custom command already prints (`claude-stream-json`,
    /// `codex-json`).
    #[serde(default)]
    pub structured: Option<Structured>,
    /// Pass the task's model as `--model` (claude's default is not to: the seed lets Claude
    /// Code pick its own model).
    #[serde(default)]
    pub pass_model: Option<bool>,
}

/// A backend's `structured:` setting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Structured {
    /// On or off, for a built-in backend that has a structured format.
    On(bool),
    /// The format a custom command prints.
    Format(String),
}

/// TLS settings for an `https://` coordinator (paths to PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA that signed the coordinator's certificate (none: the system's roots).
    #[serde(default)]
    pub ca: Option<String>,
    /// This client's certificate (mTLS).
    #[serde(default)]
    pub cert: Option<String>,
    /// Its private key.
    #[serde(default)]
    pub key: Option<String>,
}

/// How worktree and workspace tasks' changes come home (`changes:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesFile {
    /// `bundle` or `push`.
    #[serde(default)]
    pub deliver: Option<String>,
    /// Largest bundle sent through the coordinator.
    #[serde(default)]
    pub max_bundle_bytes: Option<u64>,
    /// Committer name of uncommitted work.
    #[serde(default)]
    pub name: Option<String>,
    /// Committer email.
    #[serde(default)]
    pub email: Option<String>,
}

/// The agent's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Node name.
    #[serde(default)]
    pub name: Option<String>,
    /// Coordinator address.
    #[serde(default)]
    pub coordinator: Option<String>,
    /// The node's token.
    #[serde(default)]
    pub token: Option<String>,
    /// TLS for an `https://` coordinator.
    #[serde(default)]
    pub tls: TlsFiles,
    /// Public keys (`ed25519:<base64>`) whose signed tasks this node runs; with any listed,
    /// it runs nothing else.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// How worktree and workspace tasks' changes come home.
    #[serde(default)]
    pub changes: ChangesFile,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Concurrent tasks.
    #[serde(default)]
    pub max_tasks: Option<u32>,
    /// Default workdir.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Spool and logs.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Directories a task's `--workdir` must be under (none: any).
    #[serde(default)]
    pub workspace_roots: Vec<String>,
    /// Backend overrides and custom backends.
    #[serde(default)]
    pub backends: BTreeMap<String, AgentBackend>,
    /// Which repositories tasks may name.
    #[serde(default)]
    pub repositories: crate::repo_url::RepoPolicy,
    /// API retries in a row (rate limits, overloaded or failing servers) after which a worker
    /// is stopped and its task counts as unable to continue (its fallback's reason); Claude
    /// Code is told the same limit. Default 3.
    #[serde(default)]
    pub api_retries: Option<u32>,
    /// Only these variables of the agent's environment reach a worker (`NAME` or `PREFIX*`;
    /// PATH, HOME, USER, LOGNAME, LANG and TERM always do). None: every variable but the
    /// agent's own (`DISPATCH_*`), which never do.
    #[serde(default)]
    pub worker_env: Option<Vec<String>>,
}

impl AgentFile {
    /// Parses the file at `path`; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<AgentFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<AgentFile, String> {
        if text.trim().is_empty() {
            return Ok(AgentFile::default());
        }
        let f: AgentFile = serde_norway::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })?;
        if f.max_tasks == Some(0) {
            return Err("max_tasks must be at least 1".into());
        }
        f.repositories.validate()?;
        if let Some(d) = &f.changes.deliver
            && d != "bundle"
            && d != "push"
        {
            return Err(format!(
                "changes.deliver: `{d}` is not a way to deliver changes; use bundle or push"
            ));
        }
        for name in f.worker_env.iter().flatten() {
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "worker_env: `{name}` is not a variable name (letters, digits and _, or a prefix ending in *)"
                ));
            }
        }
        for k in &f.trusted_keys {
            crate::signing::parse_public(k).map_err(|e| format!("trusted_keys: {e}"))?;
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let f = AgentFile::parse(
            "name: build-box\nlabels: { gpu: a100 }\nmax_tasks: 4\nworkspace_roots: [/srv/src]\nbackends:\n  claude: { max_tasks: 1 }\n  mycli:\n    command: mycli run\n    models: [fast]\n",
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("build-box"));
        assert_eq!(f.labels["gpu"], "a100");
        assert_eq!(f.backends["claude"].max_tasks, Some(1));
        assert_eq!(
            f.backends["mycli"].models.as_deref(),
            Some(&["fast".to_string()][..])
        );
        let e = AgentFile::parse("name: x\nmax_taks: 3\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("unknown field `max_taks`"),
            "{e}"
        );
        assert!(AgentFile::parse("max_tasks: 0\n").is_err());
        let f = AgentFile::parse("tls:\n  ca: /etc/ca.pem\n  cert: n.pem\n  key: n.key\n").unwrap();
        assert_eq!(f.tls.ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(f.tls.key.as_deref(), Some("n.key"));
        assert!(AgentFile::parse("tls: { cafile: x }\n").is_err());
    }
}
