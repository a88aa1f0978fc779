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

pub(super) const UPDATE_TASK: &str = "UPDATE tasks SET state = ?2, title = ?3, prompt = ?4, worker_prompt = ?5, plan_md = ?6, \
     node = ?7, remote = ?8, backend = ?9, model = ?10, workdir = ?11, after_id = ?12, priority = ?13, reason = ?14, \
     exit_code = ?15, created_ms = ?16, updated_ms = ?17, started_ms = ?18, ended_ms = ?19, last_seq = ?20, attempt = ?21, worktree = ?22, branch = ?23, cleaned = ?24, pool = ?25, repo_url = ?26, repo_branch = ?27, repo_commit = ?28 WHERE id = ?1";

pub(super) fn bind_task<'q>(
    q: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    t: &TaskRecord,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    q.bind(t.id.clone())
        .bind(t.state.as_str())
        .bind(t.title.clone())
        .bind(t.prompt.clone())
        .bind(t.worker_prompt.clone())
        .bind(t.plan_md.clone())
        .bind(t.node.clone())
        .bind(t.remote.clone())
        .bind(t.backend.clone())
        .bind(t.model.clone())
        .bind(t.workdir.clone())
        .bind(t.after.clone())
        .bind(t.priority)
        .bind(t.reason.clone())
        .bind(t.exit_code)
        .bind(t.created_ms)
        .bind(t.updated_ms)
        .bind(t.started_ms)
        .bind(t.ended_ms)
        .bind(t.last_seq as i64)
        .bind(i64::from(t.attempt.max(1)))
        .bind(t.worktree)
        .bind(t.branch.clone())
        .bind(t.cleaned)
        .bind(serde_json::to_string(&t.pool).unwrap_or_else(|_| "{}".into()))
        .bind(t.repo.0.clone())
        .bind(t.repo.1.clone())
        .bind(t.repo.2.clone())
}

pub(super) fn task_from_row(r: &SqliteRow) -> Result<TaskRecord> {
    let state: String = r.try_get("state")?;
    Ok(TaskRecord {
        id: r.try_get("id")?,
        state: state.parse().map_err(CoordinatorError::Corrupt)?,
        title: r.try_get("title")?,
        prompt: r.try_get("prompt")?,
        worker_prompt: r.try_get("worker_prompt")?,
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
