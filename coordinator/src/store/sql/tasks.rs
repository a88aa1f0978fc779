//! Task writes other than the event path: insert, transitions (cancel, retry, resume, clean,
//! note), answers and assignment. Each is one transaction on the writer connection that decides
//! on the row as it reads it there and writes only the columns the operation owns.

use super::{Backend, Db, rows};
use crate::error::{CoordinatorError, Result};
use crate::model::{
    AuditEntry, Change, ChangeKind, Changes, NodeCommand, QuestionRecord, TaskChange, TaskRecord,
};
use crate::store::{
    Answered, AssignWrite, Decide, DecideAnswer, Inserted, MakeCommand, TaskUpdate, Transition,
    Transitioned,
};
use dispatch_core::TaskState;
use sqlx::Transaction;

type Tx<'a> = Transaction<'a, Db>;

/// Reads a task with its texts inside a transaction.
pub(super) async fn task_in(tx: &mut Tx<'_>, id: &str) -> Result<Option<TaskRecord>> {
    let row = sqlx::query("SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id WHERE t.id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| rows::task_from_row(&r)).transpose()
}

/// A task that must exist, inside a transaction.
async fn existing_task(tx: &mut Tx<'_>, id: &str) -> Result<TaskRecord> {
    task_in(tx, id).await?.ok_or_else(|| {
        CoordinatorError::NotFound(format!(
            "no task `{id}`; `dispatch status` lists every task"
        ))
    })
}

/// The task a request id created, when the request was seen before.
async fn seen_request(tx: &mut Tx<'_>, request_id: Option<&str>) -> Result<Option<String>> {
    let Some(r) = request_id else {
        return Ok(None);
    };
    Ok(
        sqlx::query_scalar("SELECT task_id FROM requests WHERE id = $1")
            .bind(r)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Remembers a request id (for a retry of the same request).
async fn remember_request(
    tx: &mut Tx<'_>,
    request_id: Option<&str>,
    task: &str,
    now_ms: i64,
) -> Result<()> {
    if let Some(r) = request_id {
        sqlx::query("INSERT INTO requests (id, task_id, created_ms) VALUES ($1, $2, $3)")
            .bind(r)
            .bind(task)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Records an audit entry inside a transaction (the change and its record commit together).
pub(super) async fn record_audit(
    tx: &mut Tx<'_>,
    entry: Option<&AuditEntry>,
    now_ms: i64,
) -> Result<()> {
    if let Some(e) = entry {
        sqlx::query(
            "INSERT INTO audit (at_ms, who, action, task_id, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now_ms)
        .bind(&e.who)
        .bind(&e.action)
        .bind(&e.task_id)
        .bind(&e.detail)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Unanswered questions of a task, by seq, inside a transaction.
pub(super) async fn open_questions_in(tx: &mut Tx<'_>, id: &str) -> Result<Vec<QuestionRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM questions WHERE task_id = $1 AND answer IS NULL ORDER BY seq",
        rows::QUESTION_COLUMNS
    )))
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(rows::question_from_row).collect()
}

/// Stores a command for `node`; returns its id.
pub(super) async fn insert_command(
    tx: &mut Tx<'_>,
    node: &str,
    cmd: &NodeCommand,
    now_ms: i64,
) -> Result<u64> {
    let body = serde_json::to_vec(cmd)
        .map_err(|e| CoordinatorError::Corrupt(format!("cannot encode a command: {e}")))?;
    let id: i64 = sqlx::query_scalar("INSERT INTO commands (node, task_id, body, created_ms, kind) VALUES ($1, $2, $3, $4, $5) RETURNING id")
        .bind(node)
        .bind(cmd.task_id())
        .bind(body)
        .bind(now_ms)
        .bind(cmd.name())
        .fetch_one(&mut **tx)
        .await?;
    Ok(id as u64)
}

/// Drops the unacked commands of `task` for `node` (they can no longer apply).
pub(super) async fn void_commands(
    tx: &mut Tx<'_>,
    node: &str,
    task: &str,
    now_ms: i64,
) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE commands SET acked_ms = $3 WHERE node = $1 AND task_id = $2 AND acked_ms IS NULL",
    )
    .bind(node)
    .bind(task)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// Writes the columns `u` sets (and `updated_ms`).
pub(super) async fn write_update(
    tx: &mut Tx<'_>,
    id: &str,
    u: &TaskUpdate,
    now_ms: i64,
) -> Result<()> {
    let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE tasks SET updated_ms = ");
    q.push_bind(now_ms);
    macro_rules! text {
        ($field:ident, $col:literal) => {
            if let Some(v) = &u.$field {
                q.push(concat!(", ", $col, " = ")).push_bind(v.clone());
            }
        };
    }
    if let Some(s) = u.state {
        q.push(", state = ").push_bind(s.as_str());
        // Queued again by a person (retry, an answer): no usage reset to wait for.
        if s == dispatch_core::TaskState::Queued {
            q.push(", limit_until_ms = 0");
        }
    }
    text!(reason, "reason");
    text!(node, "node");
    text!(remote, "remote");
    text!(backend, "backend");
    text!(model, "model");
    text!(plan_md, "plan_md");
    if let Some(a) = u.attempt {
        q.push(", attempt = ").push_bind(i64::from(a));
    }
    if let Some(c) = u.exit_code {
        q.push(", exit_code = ").push_bind(c);
    }
    if let Some(v) = u.started_ms {
        q.push(", started_ms = ").push_bind(v);
    }
    if let Some(v) = u.ended_ms {
        q.push(", ended_ms = ").push_bind(v);
    }
    if let Some(v) = u.cleaned {
        q.push(", cleaned = ").push_bind(v);
    }
    if let Some(n) = &u.notes {
        q.push(", notes = ").push_bind(super::rows::notes_json(n));
    }
    if let Some(b) = &u.budget {
        q.push(", budget = ").push_bind(super::rows::budget_json(b));
    }
    q.push(" WHERE id = ").push_bind(id);
    q.build().persistent(false).execute(&mut **tx).await?;
    if let Some(p) = &u.worker_prompt {
        sqlx::query("UPDATE task_texts SET worker_prompt = $2 WHERE task_id = $1")
            .bind(id)
            .bind(p)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The task as a change for watchers (without its texts).
pub(super) fn task_change(
    t: &TaskRecord,
    before: TaskState,
    kind: ChangeKind,
    questions: Vec<QuestionRecord>,
    question: Option<u32>,
) -> Change {
    let mut task = t.clone();
    task.prompt = String::new();
    task.worker_prompt = String::new();
    Change::Task(Box::new(TaskChange {
        task,
        before,
        kind,
        seq: 0,
        questions,
        question,
        freed_slot: None,
    }))
}

/// `ResourceExhausted` when `owner` already has `max` active tasks (in the transaction `tx`).
async fn check_active(
    tx: &mut sqlx::Transaction<'static, Db>,
    owner: &str,
    max: u32,
) -> Result<()> {
    let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM tasks WHERE owner = $1 AND state IN {}",
        super::store::ACTIVE_SQL
    )))
    .bind(owner)
    .fetch_one(&mut **tx)
    .await?;
    if active >= i64::from(max) {
        return Err(CoordinatorError::ResourceExhausted(format!(
            "quota: `{owner}` may have at most {max} active tasks (queued or running) and has {active}; wait for some to end or cancel some, or ask an admin for a token with a higher --max-active"
        )));
    }
    Ok(())
}

impl Backend {
    pub(super) async fn insert_task_impl(
        &self,
        t: &TaskRecord,
        request_id: Option<&str>,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
    ) -> Result<Inserted> {
        let mut tx = self.write().await?;
        if let Some(task) = seen_request(&mut tx, request_id).await? {
            return Ok(Inserted::Existing(task));
        }
        if let Some(max) = max_active {
            check_active(&mut tx, &t.owner, max).await?;
        }
        let res = rows::bind_new_task(sqlx::query(rows::INSERT_TASK.as_str()), t)
            .execute(&mut *tx)
            .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "task id `{}` already exists; choose another with --id, or see it with `dispatch status {}`",
                    t.id, t.id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query("INSERT INTO task_texts (task_id, prompt, worker_prompt, signed_spec, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(&t.id)
            .bind(&t.prompt)
            .bind(&t.worker_prompt)
            .bind(&t.signed_spec)
            .bind(&t.signature)
            .execute(&mut *tx)
            .await?;
        remember_request(&mut tx, request_id, &t.id, t.created_ms).await?;
        record_audit(&mut tx, audit, t.created_ms).await?;
        tx.commit().await?;
        Ok(Inserted::New(Changes(vec![task_change(
            t,
            t.state,
            ChangeKind::State,
            Vec::new(),
            None,
        )])))
    }

    /// Applies a decided transition inside `tx`: the update, its commands, its change.
    async fn commit_transition(
        tx: &mut Tx<'_>,
        mut t: TaskRecord,
        tr: Transition,
        now_ms: i64,
        extra_question: Option<QuestionRecord>,
    ) -> Result<Transitioned> {
        let before = t.state;
        if tr.set.plan_md.is_some() && !before.is_terminal() {
            // The event path owns the plan of an active task.
            return Err(CoordinatorError::Corrupt(format!(
                "refusing to rewrite the plan of task `{}` while it is {before}",
                t.id
            )));
        }
        if !tr.set.is_empty() {
            write_update(tx, &t.id, &tr.set, now_ms).await?;
            tr.set.apply_to(&mut t, now_ms);
        }
        let mut command_ids = Vec::with_capacity(tr.commands.len());
        for (node, cmd) in &tr.commands {
            command_ids.push(insert_command(tx, node, cmd, now_ms).await?);
        }
        let mut changes = Changes::none();
        if let Some(kind) = tr.kind {
            let mut questions = open_questions_in(tx, &t.id).await?;
            let question = extra_question.as_ref().map(|q| q.seq);
            questions.extend(extra_question);
            changes
                .0
                .push(task_change(&t, before, kind, questions, question));
        }
        Ok(Transitioned {
            task: t,
            command_ids,
            command_nodes: tr.commands.into_iter().map(|(n, _)| n).collect(),
            changes,
        })
    }

    pub(super) async fn transition_impl(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
        decide: &Decide<'_>,
    ) -> Result<Transitioned> {
        let mut tx = self.write().await?;
        let t = existing_task(&mut tx, id).await?;
        let tr = decide(&t)?;
        // Work that starts again counts like work that starts (an ended task is not active).
        if let Some(max) = max_active
            && t.state.is_terminal()
        {
            check_active(&mut tx, &t.owner, max).await?;
        }
        if !tr.set.is_empty() || !tr.commands.is_empty() {
            record_audit(&mut tx, audit, now_ms).await?;
        }
        let done = Self::commit_transition(&mut tx, t, tr, now_ms, None).await?;
        tx.commit().await?;
        Ok(done)
    }

    pub(super) async fn answer_impl(
        &self,
        id: &str,
        text: &str,
        request_id: Option<&str>,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        decide: &DecideAnswer<'_>,
    ) -> Result<Answered> {
        let mut tx = self.write().await?;
        let t = existing_task(&mut tx, id).await?;
        if seen_request(&mut tx, request_id).await?.is_some() {
            return Ok(Answered::Repeated(t));
        }
        let questions: Vec<QuestionRecord> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM questions WHERE task_id = $1 ORDER BY seq",
            rows::QUESTION_COLUMNS
        )))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::question_from_row)
        .collect::<Result<_>>()?;
        let (seq, mut tr) = decide(&t, &questions)?;
        let r = sqlx::query("UPDATE questions SET answer = $3, answered_ms = $4 WHERE task_id = $1 AND seq = $2 AND answer IS NULL")
            .bind(id)
            .bind(i64::from(seq))
            .bind(text)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "question {seq:03} of `{id}` has no open question to answer"
            )));
        }
        remember_request(&mut tx, request_id, id, now_ms).await?;
        record_audit(&mut tx, audit, now_ms).await?;
        let mut answered = questions
            .into_iter()
            .find(|q| q.seq == seq)
            .expect("decide picked one of the task's questions");
        answered.answer = Some(text.to_string());
        answered.answered_ms = now_ms;
        tr.kind.get_or_insert(ChangeKind::Answer);
        let done = Self::commit_transition(&mut tx, t, tr, now_ms, Some(answered)).await?;
        tx.commit().await?;
        Ok(Answered::Stored { done, seq })
    }

    pub(super) async fn assign_impl(
        &self,
        a: &AssignWrite,
        now_ms: i64,
        command: &MakeCommand<'_>,
    ) -> Result<Option<Transitioned>> {
        let mut tx = self.write().await?;
        let live: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM nodes WHERE name = $1 AND epoch = $2 AND live = TRUE",
        )
        .bind(&a.node)
        .bind(a.epoch as i64)
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            return Ok(None);
        }
        let Some(mut t) = task_in(&mut tx, &a.task_id).await? else {
            return Ok(None);
        };
        if t.state != TaskState::Queued {
            return Ok(None);
        }
        sqlx::query("UPDATE tasks SET state = 'assigned', node = $2, backend = $3, epoch = $4, updated_ms = $5 WHERE id = $1")
            .bind(&a.task_id)
            .bind(&a.node)
            .bind(&a.backend)
            .bind(a.epoch as i64)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let before = t.state;
        t.state = TaskState::Assigned;
        t.node = a.node.clone();
        t.backend = a.backend.clone();
        t.epoch = a.epoch;
        t.updated_ms = now_ms;
        let id = insert_command(&mut tx, &a.node, &command(&t), now_ms).await?;
        let questions = open_questions_in(&mut tx, &t.id).await?;
        tx.commit().await?;
        let changes = Changes(vec![task_change(
            &t,
            before,
            ChangeKind::State,
            questions,
            None,
        )]);
        Ok(Some(Transitioned {
            task: t,
            command_ids: vec![id],
            command_nodes: vec![a.node.clone()],
            changes,
        }))
    }
}
