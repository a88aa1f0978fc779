//! Durable state behind two traits: [`TaskStore`] (tasks, their events, questions and
//! commands) and [`NodeStore`] (nodes and their sessions). [`sqlite::SqliteStore`] implements
//! both; the scheduler and the domain never write SQL.
//!
//! Who writes what (the rule every implementation keeps):
//! - Every write is one transaction that decides on the rows as they are inside it — never on a
//!   copy read before an `.await` — and writes only the columns the operation owns.
//! - The event path ([`TaskStore::record_events`]) is the only writer of `last_seq`, and of the
//!   plan while the task is active. A requeue (resume, retry) may rewrite the plan of an ended
//!   task, to which no event applies.
//! - A change and the node commands it implies commit together (an answer is never stored
//!   without the command that delivers it).
//! - Each write returns the [`Changes`] it committed, for the one publisher.

pub mod fence;
pub mod migrate;
pub mod patch;
pub mod postgres;
pub mod sqlite;

use crate::error::Result;
use crate::model::{
    AuditEntry, AuditRecord, ChangeKind, Changes, IncomingEvent, NodeCommand, NodeHello,
    NodeRecord, OpenQuestion, QuestionRecord, StoredCommand, TaskEvent, TaskRecord, TokenRecord,
};
use dispatch_core::TaskState;
use std::collections::HashMap;

pub use postgres::PgStore;
pub use sqlite::{Backup, SqliteStore, backup as sqlite_backup};

/// The columns of a task an operation may set (besides `updated_ms`, always set).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskUpdate {
    /// New state.
    pub state: Option<TaskState>,
    /// New reason.
    pub reason: Option<String>,
    /// New node.
    pub node: Option<String>,
    /// New pinned node.
    pub remote: Option<String>,
    /// New backend.
    pub backend: Option<String>,
    /// New model.
    pub model: Option<String>,
    /// New worker run number.
    pub attempt: Option<u32>,
    /// New plan — only for an ended task (see the module rule).
    pub plan_md: Option<String>,
    /// New worker prompt.
    pub worker_prompt: Option<String>,
    /// New exit status.
    pub exit_code: Option<Option<i32>>,
    /// New start time.
    pub started_ms: Option<i64>,
    /// New end time.
    pub ended_ms: Option<i64>,
    /// Worktree removed.
    pub cleaned: Option<bool>,
    /// New notes (the whole list).
    pub notes: Option<Vec<crate::model::NoteRecord>>,
    /// New budget.
    pub budget: Option<Option<dispatch_core::budget::TaskBudget>>,
}

impl TaskUpdate {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == TaskUpdate::default()
    }

    /// Applies the update to `t` (what the row holds after the write).
    pub fn apply_to(&self, t: &mut TaskRecord, now_ms: i64) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { t.$f = v.clone(); } )* };
        }
        set!(
            state,
            reason,
            node,
            remote,
            backend,
            model,
            attempt,
            plan_md,
            worker_prompt,
            exit_code,
            started_ms,
            ended_ms,
            cleaned,
            notes,
            budget
        );
        if self.state == Some(TaskState::Queued) {
            t.limit_until_ms = 0;
        }
        t.updated_ms = now_ms;
    }
}

/// What an operation does to one task, decided on the row as it is inside the transaction.
#[derive(Debug, Default)]
pub struct Transition {
    /// Columns to write (nothing written when empty).
    pub set: TaskUpdate,
    /// Commands to store for nodes: (node, command).
    pub commands: Vec<(String, NodeCommand)>,
    /// The change to publish (none when nothing visible changed).
    pub kind: Option<ChangeKind>,
}

/// Decides a [`Transition`] from the task as the transaction reads it; an error aborts it.
pub type Decide<'a> = dyn Fn(&TaskRecord) -> Result<Transition> + Send + Sync + 'a;

/// Decides an answer from the task and its questions: which question, and the transition.
pub type DecideAnswer<'a> =
    dyn Fn(&TaskRecord, &[QuestionRecord]) -> Result<(u32, Transition)> + Send + Sync + 'a;

/// Builds the command that hands a task to its node, from the task as the transaction reads it.
pub type MakeCommand<'a> = dyn Fn(&TaskRecord) -> NodeCommand + Send + Sync + 'a;

/// What a committed transition produced.
#[derive(Debug)]
pub struct Transitioned {
    /// The task after it (with its texts).
    pub task: TaskRecord,
    /// Ids of the commands stored, in order.
    pub command_ids: Vec<u64>,
    /// The node each of those commands is for.
    pub command_nodes: Vec<String>,
    /// What to publish.
    pub changes: Changes,
}

/// What an answer did.
#[derive(Debug)]
pub enum Answered {
    /// Stored (with its delivery, or the requeue of a blocked task).
    Stored {
        /// The transition that came with it.
        done: Transitioned,
        /// The question answered.
        seq: u32,
    },
    /// A retry of a request already done: nothing changed.
    Repeated(TaskRecord),
}

/// A new task and, for an idempotent submit, its request id.
#[derive(Debug)]
pub enum Inserted {
    /// Stored.
    New(Changes),
    /// The request id was seen before: the task it created.
    Existing(String),
}

/// A task the scheduler gives to a node.
#[derive(Debug, Clone)]
pub struct AssignWrite {
    /// The task.
    pub task_id: String,
    /// The node.
    pub node: String,
    /// The node's session epoch the scheduler saw: the write happens only while it is live.
    pub epoch: u64,
    /// Backend it runs with.
    pub backend: String,
}

/// Filter and page of [`TaskStore::list_tasks`].
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only these states (all when empty).
    pub states: Vec<TaskState>,
    /// Most tasks in the page.
    pub limit: u32,
    /// Only tasks submitted before this position (from a page token); none for the newest.
    pub before: Option<i64>,
    /// Count every match too.
    pub count: bool,
}

/// One page of tasks, newest first.
#[derive(Debug, Default)]
pub struct TaskPage {
    /// The tasks (with their texts).
    pub tasks: Vec<TaskRecord>,
    /// Each task's place in submission order (what a page token holds).
    pub positions: Vec<i64>,
    /// Where the next page starts, when there is one.
    pub next: Option<i64>,
    /// Matching tasks in all (when counted).
    pub total: u64,
}

/// The node session a batch of events arrived on.
#[derive(Debug, Clone)]
pub struct SessionKey {
    /// Node name.
    pub node: String,
    /// Session epoch.
    pub epoch: u64,
}

/// How a committed event changes its task.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    /// What to publish (none: nothing visible changed).
    pub kind: Option<ChangeKind>,
    /// The worker of the task's current run ended: its slot is free.
    pub freed_slot: bool,
}

/// What the store knows when it applies an event.
#[derive(Debug)]
pub struct EventFacts<'a> {
    /// The node that reported it.
    pub node: &'a str,
    /// For a question: it was never asked before (a question number is asked once).
    pub new_question: bool,
    /// Unanswered questions of the task (after this event's own effect on them).
    pub open_questions: usize,
}

/// The domain's rules for events: how one committed event changes its task. The store runs
/// them inside the transaction, on the row as it is there.
pub trait EventRules: Sync {
    /// Changes `task` for `ev` (already known to be the task's next event, from its session
    /// and its current worker run, with the task still active).
    fn apply(&self, task: &mut TaskRecord, ev: &TaskEvent, facts: &EventFacts<'_>) -> Applied;

    /// Decides a worker's tool call on `task` (a run under tool approvals); `granted` holds
    /// the calls a person allowed always for this task.
    fn decide_tool(
        &self,
        task: &TaskRecord,
        call: &dispatch_core::policy::ToolCall<'_>,
        granted: &[String],
    ) -> dispatch_core::policy::Verdict;

    /// The prices that turn a worker's tokens into dollars (budgets, users' daily spend).
    fn prices(&self) -> &dispatch_core::budget::Prices;
}

/// How much of a task's history the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryCaps {
    /// Worker output; past it, a marker (the node keeps the whole log).
    pub log_bytes: u64,
    /// Plan history (the stored edits); past it the plan is kept current and its history
    /// ends with a marker.
    pub plan_bytes: u64,
}

impl HistoryCaps {
    /// `log_bytes` of output, and as much plan history.
    pub fn both(bytes: u64) -> Self {
        HistoryCaps {
            log_bytes: bytes,
            plan_bytes: bytes,
        }
    }
}

/// What recording a batch of events did.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// Per task, the seq to ack (everything up to it is committed or was dropped on purpose).
    pub acks: Vec<(String, u64)>,
    /// Tasks whose next event is missing: (task, the seq expected, the seq that came).
    pub gaps: Vec<(String, u64, u64)>,
    /// Events kept as history only: (task, seq, why).
    pub fenced: Vec<(String, u64, &'static str)>,
    /// What to publish.
    pub changes: Changes,
    /// Nodes commands were stored for (their pumps are woken after the commit).
    pub command_nodes: Vec<String>,
}

/// What opening a node session did.
#[derive(Debug)]
pub struct OpenedSession {
    /// The session's epoch.
    pub epoch: u64,
    /// Highest committed seq of every task the Hello mentioned.
    pub committed: Vec<(String, u64)>,
    /// Tasks holding a slot on the node now: task → backend.
    pub holding: HashMap<String, String>,
    /// What to publish (tasks claimed back from `unreachable`, tasks the node no longer has).
    pub changes: Changes,
}

/// What a compaction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Event rows of ended tasks.
    pub events: u64,
    /// Acked commands.
    pub commands: u64,
    /// Remembered request ids.
    pub requests: u64,
}

/// Tasks, their event history, questions and commands.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task (and its request id, and its audit record); `AlreadyExists` when the
    /// id is taken; `ResourceExhausted` when `max_active` is given and the task's owner already
    /// has that many active tasks (counted in the insert's transaction, so concurrent submits
    /// cannot pass the limit together).
    async fn insert_task(
        &self,
        t: &TaskRecord,
        request_id: Option<&str>,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
    ) -> Result<Inserted>;
    /// The task a request id created, if it was seen.
    async fn request_task(&self, request_id: &str) -> Result<Option<String>>;
    /// One task, with its texts.
    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>>;
    /// True when the id is taken.
    async fn task_exists(&self, id: &str) -> Result<bool>;
    /// A page of tasks, newest first.
    async fn list_tasks(&self, q: &TaskQuery) -> Result<TaskPage>;
    /// Tasks that have not ended (queued, assigned, running, waiting, unreachable), oldest first.
    async fn active_tasks(&self) -> Result<Vec<TaskRecord>>;
    /// Queued tasks in queue order (priority, then submission), with their texts.
    async fn queued_tasks(&self) -> Result<Vec<TaskRecord>>;
    /// Ids of the queued tasks in queue order.
    async fn queued_ids(&self) -> Result<Vec<String>>;
    /// Number of tasks that have not ended.
    async fn count_active(&self) -> Result<u32>;
    /// Tasks by state, and queued tasks by backend and pool, for the metrics.
    async fn task_gauges(&self) -> Result<TaskGauges>;
    /// Every question of these tasks, by task then seq.
    async fn questions_of(&self, ids: &[&str]) -> Result<HashMap<String, Vec<QuestionRecord>>>;
    /// Every unanswered question of a running, waiting, unreachable or blocked task.
    async fn open_questions(&self) -> Result<Vec<OpenQuestion>>;
    /// The diff of task `task`'s changes.
    async fn diff(&self, task: &str) -> Result<Option<String>>;
    /// Pieces of task `task`'s bundle from `offset` on, about `max_bytes` of them.
    async fn bundle_page(
        &self,
        task: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The kept part of task `task`'s output.md, as its node last reported it.
    async fn output(&self, task: &str) -> Result<Option<crate::model::TaskOutput>>;
    /// Stored worker output after `after_seq`, at most about `max_bytes` (at least one chunk).
    async fn log_page(
        &self,
        task: &str,
        stream: crate::model::LogStream,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>>;

    /// Runs `decide` on task `id` inside one transaction and commits what it returns (with its
    /// audit record, when the transition changes or commands anything).
    async fn transition(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        decide: &Decide<'_>,
    ) -> Result<Transitioned>;
    /// [`TaskStore::transition`] for one that makes an ended task active again (a retry): with
    /// `max_active`, refused (`ResourceExhausted`, nothing written) when the task's owner
    /// already has that many active tasks, counted in the same transaction.
    async fn restart(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
        decide: &Decide<'_>,
    ) -> Result<Transitioned>;
    /// Answers a question of task `id` and commits the transition `decide` returns with it.
    async fn answer(
        &self,
        id: &str,
        text: &str,
        request_id: Option<&str>,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        decide: &DecideAnswer<'_>,
    ) -> Result<Answered>;
    /// Gives a queued task to a node whose session `epoch` is still live, with its Assign
    /// command; `None` when the task is no longer queued or the session is gone.
    async fn assign(
        &self,
        a: &AssignWrite,
        now_ms: i64,
        command: &MakeCommand<'_>,
    ) -> Result<Option<Transitioned>>;
    /// Records a batch of events from one node session in one transaction.
    async fn record_events(
        &self,
        session: &SessionKey,
        events: Vec<IncomingEvent>,
        rules: &dyn EventRules,
        caps: HistoryCaps,
    ) -> Result<EventBatch>;
    /// The node said events `from_seq..next_seq` of a task are gone: continue after them.
    /// False when the task is not where the node says.
    async fn skip_events(
        &self,
        session: &SessionKey,
        task: &str,
        from_seq: u64,
        next_seq: u64,
    ) -> Result<bool>;
    /// Drops the event history of tasks that ended before `ended_before_ms` (their logs,
    /// questions and final plan stay), acked commands and request ids older than it.
    async fn compact(&self, ended_before_ms: i64) -> Result<Compacted>;
}

/// Nodes and their sessions, and the commands waiting for them.
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync {
    /// Opens a new session of a node (the caller made sure no other is live): a new epoch, the
    /// node's active tasks claimed by the Hello move to it, and those it no longer has are lost.
    async fn open_session(
        &self,
        hello: &NodeHello,
        addr: &str,
        now_ms: i64,
    ) -> Result<OpenedSession>;
    /// The session `epoch` of `node` fell silent: its active tasks become `unreachable`.
    async fn session_silent(&self, node: &str, epoch: u64, now_ms: i64) -> Result<Changes>;
    /// The grace of session `epoch` ran out: its unreachable tasks become `lost`, their pending
    /// commands are dropped, and the node is told to stop their workers if it comes back.
    async fn session_expired(
        &self,
        node: &str,
        epoch: u64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Changes>;
    /// Marks every session not live (a coordinator starting has none); returns (node, epoch)
    /// of every node that has active tasks.
    async fn reset_sessions(&self) -> Result<Vec<(String, u64)>>;
    /// Every node that ever connected, by name.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Records when a node was last heard from.
    async fn touch_node(&self, name: &str, now_ms: i64) -> Result<()>;
    /// Unacked commands of `node` after id `after`, oldest first, at most `limit`.
    async fn pending_commands(
        &self,
        node: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCommand>>;
    /// Marks commands of `node` acked (commands of other nodes are left alone).
    async fn ack_commands(&self, node: &str, ids: &[u64], now_ms: i64) -> Result<()>;
}

/// Tokens and the audit.
#[async_trait::async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new token (with its audit record).
    async fn create_token(&self, t: &TokenRecord, audit: &AuditEntry, now_ms: i64) -> Result<()>;
    /// Registers a node with registration token `registration`, in one transaction: takes one
    /// of its uses (none when `replace`, an unused token it minted for the same name, is
    /// revoked instead) and stores the node's own token `minted`, with the audit record.
    async fn register_node(
        &self,
        registration: &str,
        minted: &TokenRecord,
        replace: Option<&str>,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<crate::model::Registered>;
    /// Every token, revoked ones too.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Records when tokens were last used: (id, ms), one transaction for the batch; a time
    /// older than the one stored is ignored.
    async fn tokens_used(&self, used: &[(String, i64)]) -> Result<()>;
    /// Revokes token `id` (with its audit record); false when there is no such live token.
    async fn revoke_token(&self, id: &str, audit: &AuditEntry, now_ms: i64) -> Result<bool>;
    /// Cordons (or uncordons) node `name`, with its audit record and a command for the node
    /// (a drain to start or end); false when no such node.
    async fn set_cordoned(
        &self,
        name: &str,
        cordoned: bool,
        command: Option<&crate::model::NodeCommand>,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<bool>;
    /// Forgets node `name` (its record and pending commands), with its audit record, unless
    /// a task that has not ended names it (as its node or as the node it waits for); the
    /// caller checks the registry first (a node with a live session is not forgotten).
    async fn forget_node(
        &self,
        name: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<crate::model::Forgot>;
    /// Records a change that no other write carries.
    async fn audit(&self, entry: &AuditEntry, now_ms: i64) -> Result<()>;
    /// The secret named `name`: the stored one, or `fresh`, stored now (the first start; of
    /// replicas starting together, every one gets the one stored first).
    async fn secret(&self, name: &str, fresh: &str) -> Result<String>;
    /// Keeps an answer link handed out: bound to question `seq` of `task`, until `expires_ms`.
    async fn add_answer_link(&self, id: &str, task: &str, seq: u32, expires_ms: i64) -> Result<()>;
    /// Takes answer link `id` at `now_ms` for question `seq` of `task`: Taken (it is used from
    /// now on) when it was handed out for exactly that question, has not expired and was not
    /// used; else why not.
    async fn take_answer_link(
        &self,
        id: &str,
        task: &str,
        seq: u32,
        now_ms: i64,
    ) -> Result<crate::model::LinkTaken>;
    /// What `owner` spent on UTC day `day` (days since the epoch), as the event path counted
    /// it: (millionths of a dollar, tokens).
    async fn day_spend(&self, owner: &str, day: i64) -> Result<(u64, u64)>;
    /// The tool policy admins set: (YAML, when, by whom); None when never set or cleared.
    async fn stored_policy(&self) -> Result<Option<(String, i64, String)>>;
    /// Replaces (Some) or clears (None) the tool policy admins set, with its audit record.
    async fn set_policy(
        &self,
        yaml: Option<&str>,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<()>;
    /// Audit records, newest first: of one task or all, before id `before`, at most `limit`.
    async fn audit_records(
        &self,
        task: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;
}

/// Every part of the store.
pub trait Store: TaskStore + NodeStore + AccessStore {}

impl<T: TaskStore + NodeStore + AccessStore> Store for T {}

#[cfg(test)]
mod tests;

/// Counts the metrics read at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskGauges {
    /// (state, tasks).
    pub by_state: Vec<(String, u64)>,
    /// (backend, pool selector as `k=v,…`, queued tasks).
    pub queued: Vec<(String, String, u64)>,
}
