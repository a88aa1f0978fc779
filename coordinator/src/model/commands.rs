//! What the coordinator tells a node (commands, assignments) and what a node says in its Hello.

use super::{NodeRecord, Repo};
use serde::{Deserialize, Serialize};

/// A command to a node: stored before it is sent, resent until acked, applied idempotently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeCommand {
    /// Run a task.
    Assign(Box<Assignment>),
    /// Stop a task's worker (its process group).
    Cancel {
        /// The task.
        task_id: String,
        /// Only this worker run (0: whichever runs).
        attempt: u32,
    },
    /// Write `NNN.answer`.
    Answer {
        /// The task.
        task_id: String,
        /// NNN.
        seq: u32,
        /// The answer.
        text: String,
    },
    /// Append a dispatcher note to plan.md.
    Note {
        /// The task.
        task_id: String,
        /// The note (one line).
        text: String,
    },
    /// Remove an ended task's worktree (its branch stays).
    RemoveWorktree {
        /// The task.
        task_id: String,
        /// The worktree directory as the node reported it.
        path: String,
    },
    /// Drain the node (stop what still runs after `timeout_ms`), or end a drain.
    Drain {
        /// Start (true) or end (false) the drain.
        draining: bool,
        /// How long running workers may go on.
        timeout_ms: u64,
    },
    /// The decision on a worker's tool call.
    ToolDecision {
        /// The task.
        task_id: String,
        /// Its worker run.
        attempt: u32,
        /// The call.
        call: u64,
        /// Run it.
        allow: bool,
        /// Why (a denial's reason is what the model is told).
        reason: String,
        /// The approval question a person answered (0: a rule decided).
        seq: u32,
    },
}

impl NodeCommand {
    /// Stable name (stored with the command).
    pub fn name(&self) -> &'static str {
        match self {
            NodeCommand::Assign(_) => "assign",
            NodeCommand::Cancel { .. } => "cancel",
            NodeCommand::Answer { .. } => "answer",
            NodeCommand::Note { .. } => "note",
            NodeCommand::RemoveWorktree { .. } => "remove_worktree",
            NodeCommand::Drain { .. } => "drain",
            NodeCommand::ToolDecision { .. } => "tool_decision",
        }
    }

    /// The task the command is about.
    pub fn task_id(&self) -> &str {
        match self {
            NodeCommand::Assign(a) => &a.task_id,
            NodeCommand::Cancel { task_id, .. }
            | NodeCommand::Answer { task_id, .. }
            | NodeCommand::Note { task_id, .. }
            | NodeCommand::RemoveWorktree { task_id, .. }
            | NodeCommand::ToolDecision { task_id, .. } => task_id,
            NodeCommand::Drain { .. } => "",
        }
    }
}

/// What a node needs to run a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task_id: String,
    /// Backend to run.
    pub backend: String,
    /// Model ("" for the backend's default).
    pub model: String,
    /// The worker prompt.
    pub worker_prompt: String,
    /// plan.md to write.
    pub plan_markdown: String,
    /// Workdir ("" for the node's default).
    pub workdir: String,
    /// Highest committed seq: the new worker's events continue after it.
    pub last_seq: u64,
    /// Worker run.
    pub attempt: u32,
    /// Run in a worktree.
    pub worktree: bool,
    /// Run in a worktree of this repository.
    pub repo: Option<Repo>,
    /// A signed task's spec and signature, forwarded untouched for the node to check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signed_spec: String,
    /// Its signature.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
    /// How the branch comes home ("" for the node's default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deliver: String,
    /// The assignment span's W3C traceparent ("" when not traced).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace: String,
    /// Run the worker under tool approvals (the coordinator's policy decides its tool calls).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approvals: bool,
    /// The task has a budget: its tool calls go through the coordinator too (Claude Code's
    /// hook), which pauses the worker when the budget is reached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tool_hook: bool,
}

/// A command as stored, with its id.
#[derive(Debug, Clone)]
pub struct StoredCommand {
    /// Id (increasing).
    pub id: u64,
    /// The command.
    pub command: NodeCommand,
}

/// A node's Hello, in domain terms.
#[derive(Debug, Clone, Default)]
pub struct NodeHello {
    /// What the node says it is (its session fields are filled by the store).
    pub node: NodeRecord,
    /// Tasks the node runs or has unacked events for.
    pub cursors: Vec<TaskCursor>,
}

/// A node's view of one task in Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCursor {
    /// The task.
    pub task_id: String,
    /// Highest seq it has spooled.
    pub seq: u64,
    /// Its worker still runs there.
    pub running: bool,
}
