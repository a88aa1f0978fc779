//! What the store keeps of a task and a node: the records, their questions, notes, repository,
//! fallback and results.

use dispatch_core::TaskState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Notes a task keeps to show (every note reaches its worker; the newest are kept).
pub const MAX_NOTES: usize = 100;
/// Bytes of note text a task keeps to show, likewise.
pub const MAX_NOTES_BYTES: usize = 64 * 1024;

/// A note sent to a task's worker (`dispatch note`), as the task keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoteRecord {
    /// The note, one line.
    pub text: String,
    /// Who sent it (a user name; `local` in local mode).
    pub author: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskRecord {
    /// Task id (kebab-case, unique).
    pub id: String,
    /// Lifecycle state.
    pub state: TaskState,
    /// Plan title.
    pub title: String,
    /// The user's prompt (empty where a read leaves the task texts out).
    pub prompt: String,
    /// The full prompt the worker gets (empty where a read leaves the task texts out).
    pub worker_prompt: String,
    /// The public key that signed the task ("" when unsigned).
    pub signer: String,
    /// Size of its output.md on the node (0: none reported).
    pub output_bytes: u64,
    /// Whether the coordinator keeps only the first part of it.
    pub output_truncated: bool,
    /// What it changed in its repository, once it ended (worktree and workspace tasks).
    pub changes: Option<ChangesMeta>,
    /// How its branch comes home ("" for the node's default).
    pub deliver: String,
    /// Tokens and cost per worker run (attempt), from a structured stream.
    pub usage: BTreeMap<u32, dispatch_core::stream::Usage>,
    /// The last activity line of its structured stream.
    pub activity: String,
    /// Where it goes, once, when its CLI cannot start for quota or login.
    pub fallback: Option<Fallback>,
    /// The W3C traceparent of its submit span ("" when not traced).
    pub trace: String,
    /// A signed task's spec (JSON, exactly as signed; "" when unsigned or left out).
    pub signed_spec: String,
    /// Its ed25519 signature.
    pub signature: Vec<u8>,
    /// plan.md: as submitted, then as the node last reported it.
    pub plan_md: String,
    /// Node running the task ("" while queued).
    pub node: String,
    /// Node the task is pinned to ("" for any).
    pub remote: String,
    /// Backend the task asked for, then the one it runs on ("" for the node's preferred).
    pub backend: String,
    /// Model ("" for the backend's default).
    pub model: String,
    /// Workdir on the node ("" for the node's default).
    pub workdir: String,
    /// Task this one waits for ("" for none).
    pub after: String,
    /// Higher runs first.
    pub priority: i32,
    /// Why it ended as it did (or why it is unreachable).
    pub reason: String,
    /// Worker exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Times, in ms since the Unix epoch (0 = not yet).
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
    /// Worker start.
    pub started_ms: i64,
    /// Reached a terminal state.
    pub ended_ms: i64,
    /// Highest committed agent event seq.
    pub last_seq: u64,
    /// Worker run: 1, then one more for every resume or retry.
    pub attempt: u32,
    /// Runs in a git worktree on branch `dispatch/<id>`.
    pub worktree: bool,
    /// The worktree's branch, once the node created it.
    pub branch: String,
    /// The worktree was removed by `dispatch clean`.
    pub cleaned: bool,
    /// Label selector: only nodes with all these labels run the task.
    pub pool: BTreeMap<String, String>,
    /// Repository to run in: URL, branch, commit (all empty: none).
    pub repo: (String, String, String),
    /// The node session (epoch) whose events count for the task while it is active.
    pub epoch: u64,
    /// Worker output stored so far (past the cap, only a marker is stored).
    pub log_bytes: u64,
    /// Plan history stored so far (past the cap, no more edits are kept).
    pub plan_bytes: u64,
    /// The newest notes sent to its worker, oldest first (at most [`MAX_NOTES`] and
    /// [`MAX_NOTES_BYTES`] of text).
    pub notes: Vec<NoteRecord>,
    /// Who submitted it (a user name; `local` in local mode).
    pub owner: String,
    /// The nodes it may run on, from its submitter's token (patterns; empty: any).
    pub allowed_nodes: Vec<String>,
    /// The kind of trouble its worker's CLI reported when it ended ("" for none).
    pub trouble: String,
    /// When the usage limit that stopped it resets, ms since the epoch (0: not known).
    pub limit_until_ms: i64,
    /// How many times the task waited for a usage limit's reset and resumed by itself (once at
    /// most); while it waits, it is queued with `limit_until_ms` as its not-before.
    pub reset_resumes: u32,
    /// Its budget (None: none): a worker that reaches it is paused and its owner asked.
    pub budget: Option<dispatch_core::budget::TaskBudget>,
    /// The id of the token it was submitted with ("" for the local daemon's): the tool
    /// policy's `tokens:` scope for it applies.
    pub token: String,
}

/// A node as stored (its last Hello and session).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRecord {
    /// Unique node name.
    pub name: String,
    /// Labels for pool selection.
    pub labels: BTreeMap<String, String>,
    /// Backends it offers.
    pub backends: Vec<BackendRecord>,
    /// Max concurrent tasks.
    pub capacity: u32,
    /// Agent version.
    pub version: String,
    /// Machine host name.
    pub hostname: String,
    /// Last message from the node, ms since the epoch.
    pub last_seen_ms: i64,
    /// Epoch of its latest session (grows with every session).
    pub epoch: u64,
    /// Peer address of its latest session.
    pub session_addr: String,
    /// When its latest session started.
    pub session_started_ms: i64,
    /// An admin cordoned it: no new task goes there.
    pub cordoned: bool,
    /// It said it is ephemeral (a pod): forgotten once it has gone and its tasks are settled.
    pub ephemeral: bool,
}

/// What `forget_node` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgot {
    /// The node's record (and its pending commands) are gone.
    Forgotten,
    /// No node of that name.
    Unknown,
    /// Tasks not yet ended name it (as their node, or the node they wait for): their ids.
    Busy(Vec<String>),
}

/// One backend a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendRecord {
    /// Backend name.
    pub name: String,
    /// Command template.
    pub command: String,
    /// Models it lists (may be empty: any).
    #[serde(default)]
    pub models: Vec<String>,
    /// Per-backend cap on concurrent tasks (0: none).
    #[serde(default)]
    pub max_tasks: u32,
    /// The version its CLI reported ("" when it did not say).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Why the node cannot run it ("" when it can).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A question a worker asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuestionRecord {
    /// Task that asked.
    pub task_id: String,
    /// The question's NNN.
    pub seq: u32,
    /// Question text.
    pub text: String,
    /// When it arrived.
    pub asked_ms: i64,
    /// The answer, once given.
    pub answer: Option<String>,
    /// When it was answered (0 = not yet).
    pub answered_ms: i64,
    /// For an approval: the tool call it asks about (JSON of a [`ToolCallRecord`]; "" for a
    /// worker's own question).
    pub tool_call: String,
}

pub use dispatch_core::policy::APPROVAL_SEQ_BASE;

/// The tool call an approval question asks about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The worker run that made it.
    pub attempt: u32,
    /// Its number within the run.
    pub call: u64,
    /// The tool.
    pub tool: String,
    /// Its input (JSON).
    pub input_json: String,
    /// The worker's working directory.
    pub cwd: String,
    /// What "always for this task" grants ([`dispatch_core::policy::exact_rules`]; none when
    /// the call has no exact form, and "always" then allows this call only).
    pub rules: Vec<String>,
    /// The task reached its budget: the question also asks whether to go on (a "yes" raises
    /// the budget by its step). With no tool (`tool` empty), the worker was stopped after an
    /// item instead, and a "yes" resumes the task with a new worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetAsk>,
    /// The policy asked about the call (with `budget`, the question asks both).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asked: bool,
}

/// What a budget question asked about: the spend, the limit it reached and what a "yes" adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetAsk {
    /// What the task had spent when it asked.
    pub spent: dispatch_core::budget::Spend,
    /// The limit it reached.
    pub limit: dispatch_core::budget::Budget,
    /// What a "yes" adds.
    pub step: dispatch_core::budget::Budget,
}

/// An answer to an approval question: (allow, always). `yes`/`y`/`allow`, `no`/`n`/`deny`,
/// `always`/`a` (case and surrounding space ignored); None for anything else.
pub fn approval_answer(text: &str) -> Option<(bool, bool)> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "allow" => Some((true, false)),
        "no" | "n" | "deny" => Some((false, false)),
        "always" | "a" => Some((true, true)),
        _ => None,
    }
}

impl QuestionRecord {
    /// What the question asks: "" (a worker's question), "approval" or "budget".
    pub fn kind(&self) -> &'static str {
        match self.tool_call() {
            None => "",
            Some(c) if c.budget.is_some() && !c.asked => "budget",
            Some(_) => "approval",
        }
    }

    /// The tool call of an approval question.
    pub fn tool_call(&self) -> Option<ToolCallRecord> {
        (!self.tool_call.is_empty())
            .then(|| serde_json::from_str(&self.tool_call).ok())
            .flatten()
    }
}

/// An unanswered question and the task that asked it.
#[derive(Debug, Clone)]
pub struct OpenQuestion {
    /// The question.
    pub question: QuestionRecord,
    /// Node the task runs on.
    pub node: String,
    /// The task's title.
    pub title: String,
    /// The task's state.
    pub state: TaskState,
    /// Who submitted the task.
    pub owner: String,
}

/// A repository a task runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Repo {
    /// Remote URL.
    pub url: String,
    /// Branch the user was on.
    pub branch: String,
    /// Full commit id.
    pub commit: String,
}

/// A task's fallback: where it goes, once, when its worker cannot start because its CLI
/// reports a rate limit, an exhausted quota or an expired login.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Fallback {
    /// (backend, model) targets in order; the task's own backend means another node.
    pub to: Vec<(String, String)>,
    /// Case-insensitive substrings of the start failure that call for it.
    pub on: Vec<String>,
    /// It was used (a task falls back once).
    pub used: bool,
    /// The node whose CLI failed, when the retry uses the same backend elsewhere.
    pub avoid_node: String,
    /// What happened, for `status`.
    pub note: String,
}

impl Fallback {
    /// The pattern a start failure matches, if any.
    pub fn matches(&self, error: &str) -> Option<&str> {
        let e = error.to_lowercase();
        self.on
            .iter()
            .map(String::as_str)
            .find(|p| !p.trim().is_empty() && e.contains(&p.to_lowercase()))
    }
}

/// What a worktree or workspace task changed (the diff itself is kept apart).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChangesMeta {
    /// `dispatch/<task>`.
    pub branch: String,
    /// The commit the changes start from.
    pub base: String,
    /// The branch's head.
    pub head: String,
    /// Commits since `base`.
    pub commits: u32,
    /// Files changed.
    pub files: u32,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// `git diff base head` (its first part when `diff_truncated`; kept in its own table).
    #[serde(skip)]
    pub diff: String,
    /// Whether the diff was cut.
    pub diff_truncated: bool,
    /// `bundle`, `push`, or "".
    pub delivery: String,
    /// Where the node pushed it.
    pub pushed_to: String,
    /// The bundle's size.
    pub bundle_bytes: u64,
    /// How much of the bundle the coordinator holds.
    #[serde(default)]
    pub bundle_stored: u64,
    /// What went wrong delivering it.
    pub error: String,
}

/// The part of a task's output.md the coordinator keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskOutput {
    /// Its text (the first `MAX_OUTPUT_BYTES` when truncated).
    pub markdown: String,
    /// Its whole size on the node.
    pub bytes: u64,
    /// Whether `markdown` is only its first part.
    pub truncated: bool,
}
