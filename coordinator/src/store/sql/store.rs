//! The store operations in SQL both backends run (compiled once per backend: `Db` and
//! `Backend` come from the backend's module). Placeholders are `$N` (SQLite reads them too);
//! only portable SQL here: `ON CONFLICT`, `TRUE`/`FALSE`, quoted `"offset"`.

use super::{Backend, Db, rows};
use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, OpenQuestion};
use crate::store::*;
use sqlx::Row;

/// Bound values per statement stay well under SQLite's limit (32,766): task ids per read.
pub(super) const TASKS_PER_STATEMENT: usize = 500;

/// States of a task that has not ended, as SQL.
pub(super) const ACTIVE_SQL: &str = "('queued', 'assigned', 'running', 'waiting', 'unreachable')";
/// States of a task that holds a slot on its node, as SQL.
pub(super) const ON_NODE_SQL: &str = "('assigned', 'running', 'waiting', 'unreachable')";
/// States of a task that has ended, as SQL.
pub(super) const ENDED_SQL: &str = "('completed', 'failed', 'blocked', 'cancelled', 'lost')";

/// `(?, ?, …)` with `n` placeholders pushed onto `q`.
pub(super) fn push_in_list(q: &mut sqlx::QueryBuilder<Db>, ids: &[&str]) {
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
}

#[async_trait::async_trait]
impl TaskStore for Backend {
    async fn insert_task(
        &self,
        t: &TaskRecord,
        request_id: Option<&str>,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
    ) -> Result<Inserted> {
        self.insert_task_impl(t, request_id, audit, max_active)
            .await
    }

    async fn request_task(&self, request_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT task_id FROM requests WHERE id = $1")
                .bind(request_id)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id WHERE t.id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| rows::task_from_row(&r)).transpose()
    }

    async fn task_exists(&self, id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&self.reader)
            .await?;
        Ok(n > 0)
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<TaskPage> {
        let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
        let filter = |b: &mut sqlx::QueryBuilder<Db>| {
            b.push(" WHERE 1 = 1");
            if !states.is_empty() {
                b.push(" AND t.state IN (");
                let mut l = b.separated(", ");
                for s in &states {
                    l.push_bind(*s);
                }
                b.push(")");
            }
        };
        let mut b = sqlx::QueryBuilder::<Db>::new(
            "SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id",
        );
        filter(&mut b);
        if let Some(before) = q.before {
            b.push(" AND t.submit_order < ").push_bind(before);
        }
        b.push(" ORDER BY t.submit_order DESC LIMIT ")
            .push_bind(i64::from(q.limit.max(1)) + 1);
        let found = b.build().persistent(false).fetch_all(&self.reader).await?;
        let mut page = TaskPage::default();
        for row in found.iter().take(q.limit.max(1) as usize) {
            page.tasks.push(rows::task_from_row(row)?);
            page.positions.push(row.try_get("submit_order")?);
        }
        if found.len() > q.limit.max(1) as usize {
            page.next = page.positions.last().copied();
        }
        if q.count {
            let mut b = sqlx::QueryBuilder::<Db>::new("SELECT COUNT(*) FROM tasks t");
            filter(&mut b);
            let n: i64 = b
                .build_query_scalar()
                .persistent(false)
                .fetch_one(&self.reader)
                .await?;
            page.total = n as u64;
        }
        Ok(page)
    }

    async fn active_tasks(&self) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id \
             WHERE t.state IN {ACTIVE_SQL} ORDER BY t.submit_order"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rows::task_from_row).collect()
    }

    async fn queued_tasks(&self) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id \
             WHERE t.state = 'queued' ORDER BY t.priority DESC, t.submit_order",
        )
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(rows::task_from_row).collect()
    }

    async fn queued_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, submit_order",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    async fn task_gauges(&self) -> Result<crate::store::TaskGauges> {
        use sqlx::Row;
        let mut g = crate::store::TaskGauges::default();
        for r in sqlx::query("SELECT state, COUNT(*) FROM tasks GROUP BY state")
            .fetch_all(&self.reader)
            .await?
        {
            g.by_state
                .push((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64));
        }
        for r in sqlx::query(
            "SELECT backend, pool, COUNT(*) FROM tasks WHERE state = 'queued' GROUP BY backend, pool",
        )
        .fetch_all(&self.reader)
        .await?
        {
            let pool: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&r.try_get::<String, _>(1)?).unwrap_or_default();
            let pool: Vec<String> = pool.iter().map(|(k, v)| format!("{k}={v}")).collect();
            g.queued.push((
                r.try_get(0)?,
                pool.join(","),
                r.try_get::<i64, _>(2)?.max(0) as u64,
            ));
        }
        Ok(g)
    }

    async fn count_active(&self) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM tasks WHERE state IN {ACTIVE_SQL}"
        )))
        .fetch_one(&self.reader)
        .await?;
        Ok(n as u32)
    }

    async fn questions_of(&self, ids: &[&str]) -> Result<HashMap<String, Vec<QuestionRecord>>> {
        let mut out: HashMap<String, Vec<QuestionRecord>> = HashMap::new();
        for chunk in ids.chunks(TASKS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                "SELECT {} FROM questions WHERE task_id IN ",
                rows::QUESTION_COLUMNS
            ));
            push_in_list(&mut q, chunk);
            q.push(" ORDER BY task_id, seq");
            for row in q.build().persistent(false).fetch_all(&self.reader).await? {
                let question = rows::question_from_row(&row)?;
                out.entry(question.task_id.clone())
                    .or_default()
                    .push(question);
            }
        }
        Ok(out)
    }

    async fn open_questions(&self) -> Result<Vec<OpenQuestion>> {
        // The question's columns first, as `question_from_row` reads them (the tool call too:
        // it says whether a question is an approval or a budget's).
        let question = rows::QUESTION_COLUMNS
            .split(", ")
            .map(|c| format!("q.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Column names of our own: nothing a caller sent is in this text.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {question}, t.node, t.title, t.state, t.owner \
             FROM questions q JOIN tasks t ON t.id = q.task_id \
             WHERE q.answer IS NULL AND t.state IN ('running', 'waiting', 'unreachable', 'blocked') \
             ORDER BY q.asked_ms, q.task_id, q.seq"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(9)?;
                Ok(OpenQuestion {
                    question: rows::question_from_row(r)?,
                    node: r.try_get(7)?,
                    title: r.try_get(8)?,
                    state: state.parse().map_err(CoordinatorError::Corrupt)?,
                    owner: r.try_get(10)?,
                })
            })
            .collect()
    }

    async fn diff(&self, task: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT diff FROM task_diffs WHERE task_id = $1")
                .bind(task)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn bundle_page(
        &self,
        task: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        use sqlx::Row;
        // Chunks are at most 1 MiB.
        let rows_wanted = (max_bytes / (1024 * 1024)).clamp(1, 64) as i64;
        let rows = sqlx::query(r#"SELECT "offset", data FROM task_bundles WHERE task_id = $1 AND "offset" >= $2 ORDER BY "offset" LIMIT $3"#)
            .bind(task)
            .bind(offset as i64)
            .bind(rows_wanted)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get(1)?)))
            .collect()
    }

    async fn output(&self, task: &str) -> Result<Option<crate::model::TaskOutput>> {
        use sqlx::Row;
        let row = sqlx::query("SELECT body, bytes, truncated FROM task_outputs WHERE task_id = $1")
            .bind(task)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            Ok(crate::model::TaskOutput {
                markdown: r.try_get(0)?,
                bytes: r.try_get::<i64, _>(1)?.max(0) as u64,
                truncated: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn log_page(
        &self,
        task: &str,
        stream: crate::model::LogStream,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.log_page_impl(task, stream, after_seq, max_bytes).await
    }

    async fn transition(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        decide: &Decide<'_>,
    ) -> Result<Transitioned> {
        self.transition_impl(id, now_ms, audit, None, decide).await
    }

    async fn restart(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        max_active: Option<u32>,
        decide: &Decide<'_>,
    ) -> Result<Transitioned> {
        self.transition_impl(id, now_ms, audit, max_active, decide)
            .await
    }

    async fn answer(
        &self,
        id: &str,
        text: &str,
        request_id: Option<&str>,
        now_ms: i64,
        audit: Option<&AuditEntry>,
        decide: &DecideAnswer<'_>,
    ) -> Result<Answered> {
        self.answer_impl(id, text, request_id, now_ms, audit, decide)
            .await
    }

    async fn assign(
        &self,
        a: &AssignWrite,
        now_ms: i64,
        command: &MakeCommand<'_>,
    ) -> Result<Option<Transitioned>> {
        self.assign_impl(a, now_ms, command).await
    }

    async fn record_events(
        &self,
        session: &SessionKey,
        events: Vec<IncomingEvent>,
        rules: &dyn EventRules,
        caps: crate::store::HistoryCaps,
    ) -> Result<EventBatch> {
        self.record_events_impl(session, events, rules, caps).await
    }

    async fn skip_events(
        &self,
        session: &SessionKey,
        task: &str,
        from_seq: u64,
        next_seq: u64,
    ) -> Result<bool> {
        if next_seq <= from_seq || from_seq == 0 {
            return Ok(false);
        }
        let mut tx = self.write().await?;
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET last_seq = $4 - 1 WHERE id = $1 AND node = $2 AND last_seq = $3 - 1 \
             AND (epoch = $5 OR state IN {ENDED_SQL})"
        )))
        .bind(task)
        .bind(&session.node)
        .bind(from_seq as i64)
        .bind(next_seq as i64)
        .bind(session.epoch as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn compact(&self, ended_before_ms: i64) -> Result<Compacted> {
        self.compact_impl(ended_before_ms).await
    }
}

#[async_trait::async_trait]
impl NodeStore for Backend {
    async fn open_session(
        &self,
        hello: &NodeHello,
        addr: &str,
        now_ms: i64,
    ) -> Result<OpenedSession> {
        self.open_session_impl(hello, addr, now_ms).await
    }

    async fn session_silent(&self, node: &str, epoch: u64, now_ms: i64) -> Result<Changes> {
        self.session_silent_impl(node, epoch, now_ms).await
    }

    async fn session_expired(
        &self,
        node: &str,
        epoch: u64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Changes> {
        self.session_expired_impl(node, epoch, reason, now_ms).await
    }

    async fn reset_sessions(&self) -> Result<Vec<(String, u64)>> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE nodes SET live = FALSE")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT n.name, n.epoch FROM nodes n JOIN tasks t ON t.node = n.name \
             WHERE t.state IN {ON_NODE_SQL} ORDER BY n.name"
        )))
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
            .collect()
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM nodes ORDER BY name",
            rows::NODE_COLUMNS
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rows::node_from_row).collect()
    }

    async fn touch_node(&self, name: &str, now_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE nodes SET last_seen_ms = $2 WHERE name = $1")
            .bind(name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_commands(
        &self,
        node: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCommand>> {
        self.pending_commands_impl(node, after, limit).await
    }

    async fn ack_commands(&self, node: &str, ids: &[u64], now_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        for chunk in ids.chunks(TASKS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE commands SET acked_ms = ");
            q.push_bind(now_ms)
                .push(" WHERE acked_ms IS NULL AND node = ")
                .push_bind(node)
                .push(" AND id IN (");
            let mut l = q.separated(", ");
            for id in chunk {
                l.push_bind(*id as i64);
            }
            q.push(")");
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
