//! Node sessions and the commands waiting for them.

use super::store::{ON_NODE_SQL, TASKS_PER_STATEMENT};
use super::tasks::{insert_command, open_questions_in, task_change, void_commands};
use super::{Backend, Db, rows};
use crate::error::Result;
use crate::model::{ChangeKind, Changes, NodeCommand, NodeHello, StoredCommand, TaskRecord};
use crate::store::OpenedSession;
use dispatch_core::TaskState;
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// The state an unreachable task returns to when its node comes back.
fn resumed_state(t: &TaskRecord, open_questions: usize) -> TaskState {
    if t.started_ms == 0 {
        TaskState::Assigned
    } else if open_questions > 0 {
        TaskState::Waiting
    } else {
        TaskState::Running
    }
}

impl Backend {
    pub(super) async fn open_session_impl(
        &self,
        hello: &NodeHello,
        addr: &str,
        now_ms: i64,
    ) -> Result<OpenedSession> {
        let n = &hello.node;
        let mut tx = self.write().await?;
        let previous: Option<i64> = sqlx::query_scalar("SELECT epoch FROM nodes WHERE name = $1")
            .bind(&n.name)
            .fetch_optional(&mut *tx)
            .await?;
        let epoch = previous.unwrap_or(0) as u64 + 1;
        sqlx::query(
            "INSERT INTO nodes (name, labels, backends, capacity, version, hostname, last_seen_ms, epoch, live, session_addr, session_started_ms, ephemeral) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, $7, $10) \
             ON CONFLICT(name) DO UPDATE SET labels = $2, backends = $3, capacity = $4, version = $5, hostname = $6, \
             last_seen_ms = $7, epoch = $8, live = TRUE, session_addr = $9, session_started_ms = $7, ephemeral = $10",
        )
        .bind(&n.name)
        .bind(serde_json::to_string(&n.labels).unwrap_or_default())
        .bind(serde_json::to_string(&n.backends).unwrap_or_default())
        .bind(i64::from(n.capacity))
        .bind(&n.version)
        .bind(&n.hostname)
        .bind(now_ms)
        .bind(epoch as i64)
        .bind(addr)
        .bind(n.ephemeral)
        .execute(&mut *tx)
        .await?;

        let pending_assign: HashSet<String> = sqlx::query_scalar(
            "SELECT DISTINCT task_id FROM commands WHERE node = $1 AND acked_ms IS NULL AND kind = 'assign'",
        )
        .bind(&n.name)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mentioned: HashMap<&str, bool> = hello
            .cursors
            .iter()
            .map(|c| (c.task_id.as_str(), c.running))
            .collect();

        let active = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t.*, x.prompt, x.worker_prompt, x.signed_spec, x.signature FROM tasks t JOIN task_texts x ON x.task_id = t.id \
             WHERE t.node = $1 AND t.state IN {ON_NODE_SQL}"
        )))
        .bind(&n.name)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::task_from_row)
        .collect::<Result<Vec<_>>>()?;
        let mut changes = Changes::none();
        let mut holding: HashMap<String, String> = HashMap::new();
        for mut t in active {
            let before = t.state;
            if mentioned.contains_key(t.id.as_str()) || pending_assign.contains(&t.id) {
                // Claimed: its events count from this session on.
                let open = open_questions_in(&mut tx, &t.id).await?;
                let state = if before == TaskState::Unreachable {
                    resumed_state(&t, open.len())
                } else {
                    before
                };
                sqlx::query("UPDATE tasks SET epoch = $2, state = $3, reason = CASE WHEN $4 THEN '' ELSE reason END, updated_ms = $5 WHERE id = $1")
                    .bind(&t.id)
                    .bind(epoch as i64)
                    .bind(state.as_str())
                    .bind(before == TaskState::Unreachable)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                t.epoch = epoch;
                holding.insert(t.id.clone(), t.backend.clone());
                if state != before {
                    t.state = state;
                    t.reason = String::new();
                    t.updated_ms = now_ms;
                    changes
                        .0
                        .push(task_change(&t, before, ChangeKind::State, open, None));
                }
            } else {
                let reason = format!(
                    "node `{}` reconnected without this task (its agent restarted and lost it)",
                    n.name
                );
                sqlx::query("UPDATE tasks SET state = 'lost', reason = $2, ended_ms = $3, updated_ms = $3 WHERE id = $1")
                    .bind(&t.id)
                    .bind(&reason)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                void_commands(&mut tx, &n.name, &t.id, now_ms).await?;
                t.state = TaskState::Lost;
                t.reason = reason;
                t.ended_ms = now_ms;
                t.updated_ms = now_ms;
                let open = open_questions_in(&mut tx, &t.id).await?;
                changes
                    .0
                    .push(task_change(&t, before, ChangeKind::State, open, None));
            }
        }

        // Cursors, and the cancelled workers still running here (their slot frees on exit).
        let ids: Vec<&str> = hello.cursors.iter().map(|c| c.task_id.as_str()).collect();
        let mut committed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(TASKS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Db>::new(
                "SELECT id, last_seq, node, state, backend FROM tasks WHERE id IN ",
            );
            super::store::push_in_list(&mut q, chunk);
            for r in q.build().persistent(false).fetch_all(&mut *tx).await? {
                let id: String = r.try_get(0)?;
                committed.push((id.clone(), r.try_get::<i64, _>(1)? as u64));
                let node: String = r.try_get(2)?;
                let state: String = r.try_get(3)?;
                if node == n.name
                    && state == "cancelled"
                    && mentioned.get(id.as_str()) == Some(&true)
                {
                    holding.insert(id, r.try_get(4)?);
                }
            }
        }
        tx.commit().await?;
        Ok(OpenedSession {
            epoch,
            committed,
            holding,
            changes,
        })
    }

    pub(super) async fn session_silent_impl(
        &self,
        node: &str,
        epoch: u64,
        now_ms: i64,
    ) -> Result<Changes> {
        let mut tx = self.write().await?;
        let r = sqlx::query("UPDATE nodes SET live = FALSE WHERE name = $1 AND epoch = $2")
            .bind(node)
            .bind(epoch as i64)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            // A newer session exists: its tasks are its own.
            return Ok(Changes::none());
        }
        let reason = format!("node `{node}` stopped answering; waiting for it to come back");
        let found = sqlx::query(
            "UPDATE tasks SET state = 'unreachable', reason = $3, updated_ms = $4 \
             WHERE node = $1 AND epoch = $2 AND state IN ('assigned', 'running', 'waiting') RETURNING *",
        )
        .bind(node)
        .bind(epoch as i64)
        .bind(&reason)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = Changes::none();
        for row in found {
            let t = rows::task_from_row(&row)?;
            let open = open_questions_in(&mut tx, &t.id).await?;
            // The state before is not returned; any active state reads the same to a watcher.
            changes.0.push(task_change(
                &t,
                TaskState::Running,
                ChangeKind::State,
                open,
                None,
            ));
        }
        tx.commit().await?;
        Ok(changes)
    }

    pub(super) async fn session_expired_impl(
        &self,
        node: &str,
        epoch: u64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Changes> {
        let mut tx = self.write().await?;
        let found = sqlx::query(
            "UPDATE tasks SET state = 'lost', reason = $3, ended_ms = $4, updated_ms = $4 \
             WHERE node = $1 AND epoch = $2 AND state = 'unreachable' RETURNING *",
        )
        .bind(node)
        .bind(epoch as i64)
        .bind(reason)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = Changes::none();
        for row in found {
            let t = rows::task_from_row(&row)?;
            // The worker is fenced: whatever it still had coming is void, and a node that comes
            // back is told to stop it.
            void_commands(&mut tx, node, &t.id, now_ms).await?;
            insert_command(
                &mut tx,
                node,
                &NodeCommand::Cancel {
                    task_id: t.id.clone(),
                    attempt: t.attempt,
                },
                now_ms,
            )
            .await?;
            let open = open_questions_in(&mut tx, &t.id).await?;
            changes.0.push(task_change(
                &t,
                TaskState::Unreachable,
                ChangeKind::State,
                open,
                None,
            ));
        }
        tx.commit().await?;
        Ok(changes)
    }

    pub(super) async fn pending_commands_impl(
        &self,
        node: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCommand>> {
        let rows = sqlx::query("SELECT id, body FROM commands WHERE node = $1 AND acked_ms IS NULL AND id > $2 ORDER BY id LIMIT $3")
            .bind(node)
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id = r.try_get::<i64, _>(0)? as u64;
            let body: Vec<u8> = r.try_get(1)?;
            match serde_json::from_slice::<NodeCommand>(&body) {
                Ok(command) => out.push(StoredCommand { id, command }),
                Err(e) => {
                    // Never block the queue behind a command that cannot be read.
                    tracing::error!(node, command = id, error = %e, "dropping a stored command that cannot be decoded");
                    let mut tx = self.write().await?;
                    sqlx::query("UPDATE commands SET acked_ms = 0 WHERE id = $1")
                        .bind(id as i64)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
            }
        }
        Ok(out)
    }
}
