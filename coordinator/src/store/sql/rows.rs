//! Rows ↔ records, and the column lists writes use.

use super::{Db, DbArguments, DbRow};
use crate::error::{CoordinatorError, Result};
use crate::model::{NodeRecord, QuestionRecord, TaskRecord};
use sqlx::Row;

/// The task columns an insert binds, in [`bind_new_task`]'s order. The prompt and worker prompt
/// live in `task_texts` (migration 7).
pub(super) const TASK_COLUMNS: [&str; 46] = [
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
    "epoch",
    "log_bytes",
    "owner",
    "allowed_nodes",
    "signer",
    "output_bytes",
    "output_truncated",
    "changes",
    "deliver",
    "usage",
    "activity",
    "fallback",
    "trace",
    "trouble",
    "limit_until_ms",
    "plan_bytes",
    "notes",
    "reset_resumes",
    "budget",
    "token",
];

/// `INSERT INTO tasks (<every column>, submit_order) VALUES ($1, …, next order)`.
pub(super) static INSERT_TASK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let params: Vec<String> = (1..=TASK_COLUMNS.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO tasks ({}, submit_order) VALUES ({}, (SELECT COALESCE(MAX(submit_order), 0) + 1 FROM tasks))",
        TASK_COLUMNS.join(", "),
        params.join(", ")
    )
});

/// Binds every column of a new task in [`TASK_COLUMNS`] order.
pub(super) fn bind_new_task<'q>(
    q: sqlx::query::Query<'q, Db, DbArguments>,
    t: &TaskRecord,
) -> sqlx::query::Query<'q, Db, DbArguments> {
    q.bind(t.id.clone())
        .bind(t.state.as_str())
        .bind(t.title.clone())
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
        .bind(t.epoch as i64)
        .bind(t.log_bytes as i64)
        .bind(t.owner.clone())
        .bind(serde_json::to_string(&t.allowed_nodes).unwrap_or_else(|_| "[]".into()))
        .bind(t.signer.clone())
        .bind(t.output_bytes as i64)
        .bind(t.output_truncated)
        .bind(changes_json(&t.changes))
        .bind(t.deliver.clone())
        .bind(usage_json(&t.usage))
        .bind(t.activity.clone())
        .bind(fallback_json(&t.fallback))
        .bind(t.trace.clone())
        .bind(t.trouble.clone())
        .bind(t.limit_until_ms)
        .bind(t.plan_bytes as i64)
        .bind(notes_json(&t.notes))
        .bind(i64::from(t.reset_resumes))
        .bind(budget_json(&t.budget))
        .bind(t.token.clone())
}

/// A task's budget as stored on its row ("" for none).
pub(super) fn budget_json(b: &Option<dispatch_core::budget::TaskBudget>) -> String {
    b.as_ref()
        .and_then(|b| serde_json::to_string(b).ok())
        .unwrap_or_default()
}

/// A task's notes as stored on its row ("" for none).
pub(super) fn notes_json(n: &[crate::model::NoteRecord]) -> String {
    if n.is_empty() {
        return String::new();
    }
    serde_json::to_string(n).unwrap_or_default()
}

/// A task's fallback as stored on its row ("" for none).
pub(super) fn fallback_json(f: &Option<crate::model::Fallback>) -> String {
    f.as_ref()
        .and_then(|f| serde_json::to_string(f).ok())
        .unwrap_or_default()
}

/// A task's usage per worker run as stored on its row ("" for none).
pub(super) fn usage_json(
    u: &std::collections::BTreeMap<u32, dispatch_core::stream::Usage>,
) -> String {
    if u.is_empty() {
        String::new()
    } else {
        serde_json::to_string(u).unwrap_or_default()
    }
}

/// A task's changes as stored on its row ("" for none).
pub(super) fn changes_json(c: &Option<crate::model::ChangesMeta>) -> String {
    c.as_ref()
        .and_then(|c| serde_json::to_string(c).ok())
        .unwrap_or_default()
}

/// A text column that a query may leave out (the task texts, which the event path does not
/// read): empty when absent.
fn optional_text(r: &DbRow, column: &str) -> Result<String> {
    match r.try_get(column) {
        Ok(v) => Ok(v),
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// Reads a task row (`tasks.*`, optionally with `prompt` and `worker_prompt`).
pub(super) fn task_from_row(r: &DbRow) -> Result<TaskRecord> {
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
        epoch: r.try_get::<i64, _>("epoch")? as u64,
        log_bytes: r.try_get::<i64, _>("log_bytes")? as u64,
        plan_bytes: r.try_get::<i64, _>("plan_bytes")?.max(0) as u64,
        owner: r.try_get("owner")?,
        allowed_nodes: serde_json::from_str(&r.try_get::<String, _>("allowed_nodes")?)
            .map_err(|e| CoordinatorError::Corrupt(format!("task allowed nodes: {e}")))?,
        signer: r.try_get("signer")?,
        output_bytes: r.try_get::<i64, _>("output_bytes")?.max(0) as u64,
        output_truncated: r.try_get("output_truncated")?,
        changes: match r.try_get::<String, _>("changes")?.as_str() {
            "" => None,
            j => Some(
                serde_json::from_str(j)
                    .map_err(|e| CoordinatorError::Corrupt(format!("task changes: {e}")))?,
            ),
        },
        deliver: r.try_get("deliver")?,
        usage: match r.try_get::<String, _>("usage")?.as_str() {
            "" => Default::default(),
            j => serde_json::from_str(j)
                .map_err(|e| CoordinatorError::Corrupt(format!("task usage: {e}")))?,
        },
        activity: r.try_get("activity")?,
        notes: match r.try_get::<String, _>("notes")?.as_str() {
            "" => Vec::new(),
            j => serde_json::from_str(j)
                .map_err(|e| CoordinatorError::Corrupt(format!("task notes: {e}")))?,
        },
        trace: r.try_get("trace")?,
        trouble: r.try_get("trouble")?,
        limit_until_ms: r.try_get("limit_until_ms")?,
        reset_resumes: r.try_get::<i64, _>("reset_resumes")? as u32,
        token: r.try_get("token")?,
        budget: match r.try_get::<String, _>("budget")?.as_str() {
            "" => None,
            j => Some(
                serde_json::from_str(j)
                    .map_err(|e| CoordinatorError::Corrupt(format!("task budget: {e}")))?,
            ),
        },
        fallback: match r.try_get::<String, _>("fallback")?.as_str() {
            "" => None,
            j => Some(
                serde_json::from_str(j)
                    .map_err(|e| CoordinatorError::Corrupt(format!("task fallback: {e}")))?,
            ),
        },
        signed_spec: optional_text(r, "signed_spec")?,
        signature: match r.try_get::<Vec<u8>, _>("signature") {
            Ok(v) => v,
            Err(sqlx::Error::ColumnNotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    })
}

/// The node columns [`node_from_row`] reads, in order.
pub(super) const NODE_COLUMNS: &str = "name, labels, backends, capacity, version, hostname, last_seen_ms, epoch, session_addr, session_started_ms, cordoned, ephemeral";

pub(super) fn node_from_row(r: &DbRow) -> Result<NodeRecord> {
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
        epoch: r.try_get::<i64, _>(7)? as u64,
        session_addr: r.try_get(8)?,
        session_started_ms: r.try_get(9)?,
        cordoned: r.try_get(10)?,
        ephemeral: r.try_get(11)?,
    })
}

/// The question columns [`question_from_row`] reads, in order.
pub(super) const QUESTION_COLUMNS: &str =
    "task_id, seq, text, asked_ms, answer, answered_ms, tool_call";

pub(super) fn question_from_row(r: &DbRow) -> Result<QuestionRecord> {
    Ok(QuestionRecord {
        task_id: r.try_get(0)?,
        seq: r.try_get::<i64, _>(1)? as u32,
        text: r.try_get(2)?,
        asked_ms: r.try_get(3)?,
        answer: r.try_get(4)?,
        answered_ms: r.try_get(5)?,
        tool_call: r.try_get(6)?,
    })
}
