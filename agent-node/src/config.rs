//! What an agent node is configured with, and how it ends when the coordinator refuses it.

use crate::backends::BackendSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` or `unix:/path`.
    pub coordinator: String,
    /// Unique node name.
    pub name: String,
    /// Labels for pool selection.
    pub labels: BTreeMap<String, String>,
    /// Max concurrent tasks.
    pub max_tasks: u32,
    /// Default workdir for tasks that name none.
    pub workdir: PathBuf,
    /// Spool and logs live here.
    pub data_dir: PathBuf,
    /// Backends offered.
    pub backends: Vec<BackendSpec>,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// API retries in a row after which a worker is stopped (Claude Code is told the same).
    pub api_retries: u32,
    /// Only these variables of the agent's environment reach a worker (None: all but its own).
    pub worker_env: Option<Vec<String>>,
    /// A task's own workdir must be under one of these (empty: any).
    pub workspace_roots: Vec<PathBuf>,
    /// Which repositories tasks may name.
    pub repositories: dispatch_core::repo_url::RepoPolicy,
    /// The node token for a coordinator that needs one (none over the local socket).
    pub token: Option<String>,
    /// How an `https://` coordinator is verified, and this node's certificate for mTLS.
    pub tls: dispatch_connect::ClientTls,
    /// Public keys whose signed tasks this node runs; when any are listed, nothing else runs.
    pub trusted_keys: Vec<String>,
    /// How a worktree or workspace task's changes come home.
    pub changes: crate::changes::Policy,
    /// What SIGTERM does.
    pub on_sigterm: OnSigterm,
    /// Serve the gRPC health check here (SERVING while connected to a coordinator).
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics here (`/metrics`).
    pub metrics_listen: Option<String>,
    /// Give up (exit with [`EXIT_REFUSED`]) once the coordinator has refused every connection
    /// attempt for this long (and at least [`MIN_REFUSALS`] of them) for a reason retrying does
    /// not fix: the token (missing, bogus, revoked, another node's) or the name (another live
    /// agent holds it). Zero: never give up.
    pub give_up_after: Duration,
    /// The node is ephemeral (a pod): the coordinator forgets it once it has gone and its
    /// tasks are settled.
    pub ephemeral: bool,
}

/// The file in the agent's data dir that holds the node's own token, given by the coordinator
/// when the node first connected with a registration token; it is presented from then on.
pub const NODE_TOKEN_FILE: &str = "node.token";

/// The agent's exit status when the coordinator refused it for good (sysexits' EX_CONFIG:
/// systemd's unit says `RestartPreventExitStatus=78`).
pub const EXIT_REFUSED: i32 = 78;

/// Refusals in a row before the agent may give up, however long they took.
pub const MIN_REFUSALS: u32 = 3;

/// Why the agent stopped trying: the coordinator's last refusal, and how many in a row.
#[derive(Debug)]
pub struct RefusedForGood {
    /// The last refusal, with what to do.
    pub reason: String,
    /// Attempts refused in a row.
    pub tries: u32,
}

impl std::fmt::Display for RefusedForGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the coordinator refused this node {} times in a row, and retrying does not fix it: {}",
            self.tries, self.reason
        )
    }
}

impl std::error::Error for RefusedForGood {}

/// What the agent does on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSigterm {
    /// Leave the workers running (the next start re-attaches to them).
    Detach,
    /// Take no new task, let running workers finish within the timeout, stop the rest (each
    /// reported drained: lost, retryable), flush the events, exit.
    Drain(Duration),
}
