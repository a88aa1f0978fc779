//! The coordinator's own types: what a task, a node, an agent event and a node command are, and
//! the changes a committed write produced. Wire types (`dispatch_proto::v1`) appear only in
//! `service/` and `convert.rs`.

use dispatch_core::TaskState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// What a user token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every task, tokens and the audit.
    Admin,
    /// Submit, and read and act on their own tasks; summaries of the others.
    Member,
    /// Summaries only.
    Viewer,
}

impl Role {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// The role called `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// Who is asking: the local owner over the Unix socket, a user token, or a node token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The user of the local daemon, over its Unix socket (checked by peer credentials).
    Local,
    /// A user token.
    User {
        /// The token's id (quotas are per token).
        token: String,
        /// User name.
        name: String,
        /// Role.
        role: Role,
        /// Nodes the user's tasks may run on (patterns; empty: any).
        nodes: Vec<String>,
    },
    /// A node token: it may open sessions for node names matching `pattern` only.
    Node {
        /// A node name, or a prefix followed by `*`.
        pattern: String,
        /// A registration token's id: the node's first session mints it a token of its own.
        register: Option<String>,
    },
}

impl Principal {
    /// The name written as a task's owner and in the audit.
    pub fn name(&self) -> String {
        match self {
            Principal::Local => "local".into(),
            Principal::User { name, .. } => name.clone(),
            Principal::Node { pattern, .. } => format!("node:{pattern}"),
        }
    }

    /// True for the local owner and admins: every task is theirs.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::Local
                | Principal::User {
                    role: Role::Admin,
                    ..
                }
        )
    }

    /// True when the principal may read everything of, and act on, a task owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin()
            || matches!(self, Principal::User { name, role: Role::Member, .. } if name == owner)
    }
}

/// True when `name` matches `pattern`: equal, or starting with what precedes a trailing `*`.
pub fn node_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// True when node `name` is among `allowed` (patterns; empty: any node).
pub fn node_allowed(allowed: &[String], name: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|p| node_matches(p, name))
}

/// A token as stored (its secret is not: only a hash of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRecord {
    /// Public id (the part of the token before its secret).
    pub id: String,
    /// `user` or `node`.
    pub kind: String,
    /// User name, or node name pattern.
    pub name: String,
    /// admin, member, viewer, or node.
    pub role: String,
    /// A member's allowed nodes (patterns; empty: any).
    pub nodes: Vec<String>,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// When it was made, and by whom.
    pub created_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
    /// Submits a minute it may make (0: the coordinator's default).
    pub submits_per_minute: u32,
    /// Active tasks its user may have (0: the coordinator's default).
    pub max_active: u32,
    /// When it stops working, ms since the epoch (0: never).
    pub expires_ms: i64,
    /// When it was last used, as last written (the cache holds newer uses until its next
    /// batch), ms since the epoch (0: never).
    pub last_used_ms: i64,
    /// A registration token: how many nodes it may register (0: not one; an ordinary token).
    pub uses_max: u32,
    /// How many it has registered.
    pub uses: u32,
}

impl TokenRecord {
    /// The `created_by` of the tokens registration token `id` minted.
    pub fn minted_by(id: &str) -> String {
        format!("registration:{id}")
    }
}

/// What registering a node with a registration token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The node's own token was stored (and `replaced`, a token minted for the same name by the
    /// same registration that was never used, revoked); one use was counted unless it replaced.
    Minted,
    /// The registration token has no use left (`uses` of `uses_max`).
    Exhausted {
        /// Nodes it registered.
        uses: u32,
    },
    /// It was revoked, or is unknown.
    Gone,
}

/// A change to record in the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who made it.
    pub who: String,
    /// What: submit, answer, note, cancel, retry, clean, token-create, token-revoke.
    pub action: String,
    /// The task, when there is one.
    pub task_id: String,
    /// More, in a few words.
    pub detail: String,
}

impl AuditEntry {
    /// `who` did `action` to `task`.
    pub fn new(who: &Principal, action: &str, task: &str, detail: impl Into<String>) -> Self {
        AuditEntry {
            who: who.name(),
            action: action.to_string(),
            task_id: task.to_string(),
            detail: detail.into(),
        }
    }
}

/// An audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: u64,
    /// When.
    pub at_ms: i64,
    /// The entry.
    pub entry: AuditEntry,
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

/// One event an agent reported for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The task.
    pub task_id: String,
    /// The agent's per-task sequence number.
    pub seq: u64,
    /// When it happened on the node.
    pub at_ms: i64,
    /// The worker run it comes from (0: not said).
    pub attempt: u32,
    /// What happened.
    pub kind: EventKind,
}

/// What an agent event says happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The worker started.
    Started {
        /// Its pid.
        pid: u32,
        /// The command line (prompt elided).
        command: String,
        /// Where it runs.
        workdir: String,
        /// Its worktree branch, for a worktree task.
        branch: String,
    },
    /// plan.md changed.
    Plan {
        /// plan.md as it is now.
        markdown: String,
    },
    /// Worker output.
    Log {
        /// The bytes (stored raw, never in an event body).
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// The worker exited.
    Exited(WorkerExit),
    /// The worker could not start.
    StartFailed {
        /// Why.
        error: String,
        /// What its CLI said, when the node could read it.
        #[serde(default)]
        cli: Option<dispatch_core::signals::Failure>,
    },
    /// `ipc/NNN.question` appeared.
    Question {
        /// NNN.
        seq: u32,
        /// Its text.
        text: String,
    },
    /// output.md changed (its first part; kept in its own table, never in an event body).
    Output {
        /// Its text (the first `MAX_OUTPUT_BYTES`).
        #[serde(skip)]
        markdown: String,
        /// Its whole size on the node.
        bytes: u64,
        /// Whether `markdown` is only its first part.
        truncated: bool,
    },
    /// A worktree or workspace task's work, committed on its branch.
    Changes(Box<ChangesMeta>),
    /// A piece of the bundle of its branch.
    BundleChunk {
        /// Where it goes.
        offset: u64,
        /// Its bytes (stored in their own table, never in an event body).
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// Activity lines of a structured worker stream and the run's totals so far (the lines
    /// are stored as the event's body, the totals on the task).
    Activity {
        /// One per tool use, message or command.
        lines: Vec<String>,
        /// The run's totals.
        usage: Option<dispatch_core::stream::Usage>,
    },
    /// The worker took the answer to question `seq` (`NNN.done`).
    AnswerDelivered {
        /// NNN.
        seq: u32,
    },
    /// An event the coordinator does not take (it could not be read, or breaks a limit): its
    /// seq counts, so the node's sequence stays whole, and it is kept as history only, with
    /// why.
    Rejected {
        /// Why.
        reason: String,
    },
}

impl TaskEvent {
    /// Replaces every NUL in the event's text with U+FFFD. A worker may write anything into
    /// its files; no text a store keeps may hold a NUL (PostgreSQL's text refuses it, and both
    /// stores must hold the same), so an event is never refused, or its batch failed, for one.
    pub fn scrub_nul(&mut self) {
        fn scrub(s: &mut String) {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        scrub(&mut self.task_id);
        match &mut self.kind {
            EventKind::Started {
                command,
                workdir,
                branch,
                ..
            } => {
                scrub(command);
                scrub(workdir);
                scrub(branch);
            }
            EventKind::Plan { markdown } | EventKind::Output { markdown, .. } => scrub(markdown),
            EventKind::Exited(x) => {
                scrub(&mut x.markdown);
                scrub(&mut x.detail);
                scrub(&mut x.fault);
                if let Some(f) = &mut x.cli {
                    scrub(&mut f.message);
                }
            }
            EventKind::StartFailed { error, cli } => {
                scrub(error);
                if let Some(f) = cli {
                    scrub(&mut f.message);
                }
            }
            EventKind::Question { text, .. } => scrub(text),
            EventKind::Rejected { reason } => scrub(reason),
            EventKind::Changes(c) => {
                for s in [
                    &mut c.branch,
                    &mut c.base,
                    &mut c.head,
                    &mut c.diff,
                    &mut c.delivery,
                    &mut c.pushed_to,
                    &mut c.error,
                ] {
                    scrub(s);
                }
            }
            EventKind::Activity { lines, usage } => {
                lines.iter_mut().for_each(scrub);
                if let Some(u) = usage {
                    scrub(&mut u.model);
                }
            }
            EventKind::Log { .. }
            | EventKind::BundleChunk { .. }
            | EventKind::AnswerDelivered { .. } => {}
        }
    }
}

impl EventKind {
    /// Stable name (stored with the event).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::Plan { .. } => "plan",
            EventKind::Log { .. } => "log",
            EventKind::Exited(_) => "exited",
            EventKind::StartFailed { .. } => "start_failed",
            EventKind::Question { .. } => "question",
            EventKind::AnswerDelivered { .. } => "answer_delivered",
            EventKind::Output { .. } => "output",
            EventKind::Changes(_) => "changes",
            EventKind::BundleChunk { .. } => "bundle",
            EventKind::Activity { .. } => "activity",
            EventKind::Rejected { .. } => "rejected",
        }
    }
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

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerExit {
    /// Exit status, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal, when one killed it.
    pub signal: Option<i32>,
    /// plan.md as the worker left it.
    pub markdown: String,
    /// `ipc/.done` existed.
    pub done_marker: bool,
    /// The node stopped it on a cancel.
    pub cancelled: bool,
    /// Extra context for the reason.
    pub detail: String,
    /// The agent stopped it because its task directory broke a rule.
    pub fault: String,
    /// Its node drained and stopped it.
    #[serde(default)]
    pub drained: bool,
    /// What its CLI said went wrong, when it did.
    #[serde(default)]
    pub cli: Option<dispatch_core::signals::Failure>,
}

/// An event as it enters the store: checked against the limits first (one that breaks one is
/// [`EventKind::Rejected`] by then).
#[derive(Debug)]
pub struct IncomingEvent {
    /// The event.
    pub event: TaskEvent,
}

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
        }
    }

    /// The task the command is about.
    pub fn task_id(&self) -> &str {
        match self {
            NodeCommand::Assign(a) => &a.task_id,
            NodeCommand::Cancel { task_id, .. }
            | NodeCommand::Answer { task_id, .. }
            | NodeCommand::Note { task_id, .. }
            | NodeCommand::RemoveWorktree { task_id, .. } => task_id,
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

/// What about a task changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Its state (or node, reason, exit).
    State,
    /// Its plan.
    Plan,
    /// A new question.
    Question,
    /// An answer (given, or taken by the worker).
    Answer,
    /// Its output.md.
    Output,
    /// What it changed in its repository.
    Changes,
    /// Its structured stream's activity and totals.
    Activity,
}

impl ChangeKind {
    /// Name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::State => "state",
            ChangeKind::Plan => "plan",
            ChangeKind::Question => "question",
            ChangeKind::Answer => "answer",
            ChangeKind::Output => "output",
            ChangeKind::Changes => "changes",
            ChangeKind::Activity => "activity",
        }
    }
}

/// A task after a committed change.
#[derive(Debug, Clone)]
pub struct TaskChange {
    /// The task now, without its texts (prompt, worker prompt).
    pub task: TaskRecord,
    /// Its state before.
    pub before: TaskState,
    /// What changed.
    pub kind: ChangeKind,
    /// The agent event that changed it (0 for a change made by the coordinator).
    pub seq: u64,
    /// Its unanswered questions, and the question the change is about.
    pub questions: Vec<QuestionRecord>,
    /// The question the change is about, when there is one.
    pub question: Option<u32>,
    /// The node whose slot the task gave back (its worker ended there).
    pub freed_slot: Option<String>,
}

impl TaskChange {
    /// True when this change ended the task.
    pub fn ended(&self) -> bool {
        self.task.state.is_terminal() && self.task.state != self.before
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A task changed.
    Task(Box<TaskChange>),
    /// Worker output (or the activity lines read from it) was stored.
    Log {
        /// The task.
        task_id: String,
        /// Its event seq.
        seq: u64,
        /// Raw output, or activity lines.
        stream: LogStream,
        /// The bytes.
        data: Arc<[u8]>,
    },
}

/// What a write committed: every change goes to [`crate::Coordinator::committed`], the one
/// place that tells watchers, followers, notifications, slots and the scheduler.
#[must_use = "committed changes must be handed to Coordinator::committed"]
#[derive(Debug, Default)]
pub struct Changes(pub Vec<Change>);

impl Changes {
    /// No change.
    pub fn none() -> Changes {
        Changes(Vec::new())
    }

    /// Adds `other`'s changes after these.
    pub fn extend(&mut self, other: Changes) {
        self.0.extend(other.0);
    }

    /// The last task change of `id`, if any.
    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.0.iter().rev().find_map(|c| match c {
            Change::Task(t) if t.task.id == id => Some(&t.task),
            _ => None,
        })
    }
}

/// Which of a task's two outputs: what the worker printed, or the activity lines a structured
/// stream was read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Bytes as the worker wrote them (events of kind `log`).
    Raw,
    /// One line per tool use, message or command (events of kind `activity`).
    Activity,
}

impl LogStream {
    /// The kind its events are stored under.
    pub fn kind(self) -> &'static str {
        match self {
            LogStream::Raw => "log",
            LogStream::Activity => "activity",
        }
    }
}
