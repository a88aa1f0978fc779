//! Rows of the store as plain structs, and their (de)serialization.

use crate::error::{CoordinatorError, Result};
use dispatch_core::TaskState;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};
use std::collections::BTreeMap;

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskRecord {
    /// Task id (kebab-case, unique).
    pub id: String,
    /// Lifecycle state.
    pub state: TaskState,
    /// Plan title.
    pub title: String,
    /// The user's prompt.
    pub prompt: String,
    /// The full prompt the worker gets.
    pub worker_prompt: String,
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
    /// Why it ended as it did.
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
    /// Worker run: 1, then 2 after a blocked question was answered, …
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
}

/// A node as stored (its last Hello).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// Unique node name.
    pub name: String,
    /// Labels for pool selection.
    pub labels: BTreeMap<String, String>,
    /// Backends: (name, command, models).
    pub backends: Vec<BackendRecord>,
    /// Max concurrent tasks.
    pub capacity: u32,
    /// Agent version.
    pub version: String,
    /// Machine host name.
    pub hostname: String,
    /// Last message from the node, ms since the epoch.
    pub last_seen_ms: i64,
}

/// One backend a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
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

/// The task columns every write binds, in [`bind_task`]'s order (`id` first). The prompt and
/// worker prompt live in `task_texts` (see migration 7).
pub(super) const TASK_COLUMNS: [&str; 26] = [
    "id",
    "state",
    "title",
    "plan_md",
    "node",
    "remote",
    "backend",
    "model",
    "workdir",
    "after_id",
    "priority",
    "reason",
    "exit_code",
    "created_ms",
    "updated_ms",
    "started_ms",
    "ended_ms",
    "last_seq",
    "attempt",
    "worktree",
    "branch",
    "cleaned",
    "pool",
    "repo_url",
    "repo_branch",
    "repo_commit",
];

/// `col2 = <value of 2>, col3 = …` for every column but `id` (1-based positions).
fn set_every_column(value: impl Fn(usize) -> String) -> String {
    let sets: Vec<String> = TASK_COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, c)| format!("{c} = {}", value(i + 1)))
        .collect();
    sets.join(", ")
}

/// `UPDATE tasks SET <every column> = ?N WHERE id = ?1`, bound with [`bind_task`].
pub(super) static UPDATE_TASK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE tasks SET {} WHERE id = ?1",
        set_every_column(|n| format!("?{n}"))
    )
});

/// `INSERT INTO tasks (<every column>, submit_order) VALUES (?1, …, next order)`.
pub(super) static INSERT_TASK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let params: Vec<String> = (1..=TASK_COLUMNS.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO tasks ({}, submit_order) VALUES ({}, (SELECT COALESCE(MAX(submit_order), 0) + 1 FROM tasks))",
        TASK_COLUMNS.join(", "),
        params.join(", ")
    )
});

/// `UPDATE tasks SET <every column> = v.<it> FROM (` — to be followed by a `VALUES` list of
/// rows bound with [`bind_task`], then [`UPDATE_TASKS_FROM_TAIL`]: many tasks in one statement.
pub(super) static UPDATE_TASKS_FROM_HEAD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "UPDATE tasks SET {} FROM (",
            set_every_column(|n| format!("v.column{n}"))
        )
    });

/// The end of a many-row task update (see [`UPDATE_TASKS_FROM_HEAD`]).
pub(super) const UPDATE_TASKS_FROM_TAIL: &str = ") AS v WHERE tasks.id = v.column1";

/// Something values can be bound to in order: a prepared query, or one row of a
/// [`sqlx::QueryBuilder`]'s `VALUES` list. Lets one [`bind_task`] serve both.
pub(super) trait Binder: Sized {
    /// Binds the next value.
    fn value<'t, T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>>(self, v: T) -> Self;
}

impl<'q> Binder for sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    fn value<'t, T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>>(self, v: T) -> Self {
        self.bind(v)
    }
}

impl<'a, 'qb> Binder for &'a mut sqlx::query_builder::Separated<'qb, Sqlite, &'static str> {
    fn value<'t, T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>>(self, v: T) -> Self {
        self.push_bind(v)
    }
}

/// Binds every column of `t` in [`TASK_COLUMNS`] order.
pub(super) fn bind_task<B: Binder>(q: B, t: &TaskRecord) -> B {
    q.value(t.id.clone())
        .value(t.state.as_str())
        .value(t.title.clone())
        .value(t.plan_md.clone())
        .value(t.node.clone())
        .value(t.remote.clone())
        .value(t.backend.clone())
        .value(t.model.clone())
        .value(t.workdir.clone())
        .value(t.after.clone())
        .value(t.priority)
        .value(t.reason.clone())
        .value(t.exit_code)
        .value(t.created_ms)
        .value(t.updated_ms)
        .value(t.started_ms)
        .value(t.ended_ms)
        .value(t.last_seq as i64)
        .value(i64::from(t.attempt.max(1)))
        .value(t.worktree)
        .value(t.branch.clone())
        .value(t.cleaned)
        .value(serde_json::to_string(&t.pool).unwrap_or_else(|_| "{}".into()))
        .value(t.repo.0.clone())
        .value(t.repo.1.clone())
        .value(t.repo.2.clone())
}

/// A text column that a query may leave out (the task texts, which the event path does not
/// read): empty when absent.
fn optional_text(r: &SqliteRow, column: &str) -> Result<String> {
    match r.try_get(column) {
        Ok(v) => Ok(v),
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn task_from_row(r: &SqliteRow) -> Result<TaskRecord> {
    let state: String = r.try_get("state")?;
    Ok(TaskRecord {
        id: r.try_get("id")?,
        state: state.parse().map_err(CoordinatorError::Corrupt)?,
        title: r.try_get("title")?,
        prompt: optional_text(r, "prompt")?,
        worker_prompt: optional_text(r, "worker_prompt")?,
        plan_md: r.try_get("plan_md")?,
        node: r.try_get("node")?,
        remote: r.try_get("remote")?,
        backend: r.try_get("backend")?,
        model: r.try_get("model")?,
        workdir: r.try_get("workdir")?,
        after: r.try_get("after_id")?,
        priority: r.try_get("priority")?,
        reason: r.try_get("reason")?,
        exit_code: r.try_get("exit_code")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        started_ms: r.try_get("started_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        last_seq: r.try_get::<i64, _>("last_seq")? as u64,
        attempt: r.try_get::<i64, _>("attempt")? as u32,
        worktree: r.try_get("worktree")?,
        branch: r.try_get("branch")?,
        cleaned: r.try_get("cleaned")?,
        repo: (
            r.try_get("repo_url")?,
            r.try_get("repo_branch")?,
            r.try_get("repo_commit")?,
        ),
        pool: serde_json::from_str(&r.try_get::<String, _>("pool")?)
            .map_err(|e| CoordinatorError::Corrupt(format!("task pool: {e}")))?,
    })
}

pub(super) fn node_from_row(r: &SqliteRow) -> Result<NodeRecord> {
    let labels: String = r.try_get(1)?;
    let backends: String = r.try_get(2)?;
    Ok(NodeRecord {
        name: r.try_get(0)?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| CoordinatorError::Corrupt(format!("node labels: {e}")))?,
        backends: serde_json::from_str(&backends)
            .map_err(|e| CoordinatorError::Corrupt(format!("node backends: {e}")))?,
        capacity: r.try_get::<i64, _>(3)? as u32,
        version: r.try_get(4)?,
        hostname: r.try_get(5)?,
        last_seen_ms: r.try_get(6)?,
    })
}

pub(super) fn question_from_row(r: &SqliteRow) -> Result<QuestionRecord> {
    Ok(QuestionRecord {
        task_id: r.try_get(0)?,
        seq: r.try_get::<i64, _>(1)? as u32,
        text: r.try_get(2)?,
        asked_ms: r.try_get(3)?,
        answer: r.try_get(4)?,
        answered_ms: r.try_get(5)?,
    })
}
