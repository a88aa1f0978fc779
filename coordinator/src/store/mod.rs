//! Durable state: tasks, events (plan snapshots, logs, exits), nodes, commands and questions.
//!
//! SQLite in WAL mode, one writer connection (writes are serialized by SQLite anyway; one
//! connection avoids busy retries) and a small pool of readers. Schema changes are numbered
//! migrations applied on open (`PRAGMA user_version` holds the version).

mod records;

pub use records::{BackendRecord, NodeRecord, QuestionRecord, TaskRecord};

use crate::error::{CoordinatorError, Result};
use dispatch_core::TaskState;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool as Pool};
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_attempts.sql"),
    include_str!("../../migrations/0003_worktrees.sql"),
    include_str!("../../migrations/0004_pools.sql"),
    include_str!("../../migrations/0005_repos.sql"),
    include_str!("../../migrations/0006_submit_order_index.sql"),
    include_str!("../../migrations/0007_task_texts.sql"),
];

/// An unanswered question and the task that asked it.
#[derive(Debug)]
pub struct OpenQuestion {
    /// The question.
    pub question: QuestionRecord,
    /// Node the task runs on.
    pub node: String,
    /// The task's title.
    pub title: String,
    /// The task's state.
    pub state: TaskState,
}

/// Bound values per statement stay well under SQLite's limit (32,766): task ids per read,
const TASKS_PER_STATEMENT: usize = 500;
/// event rows per insert (5 values each),
const EVENTS_PER_STATEMENT: usize = 400;
/// and task rows per update (28 values each).
const TASKS_PER_UPDATE: usize = 64;

/// Outcome of recording one agent event.
#[derive(Debug)]
pub enum EventOutcome {
    /// Committed; the task as it is now, without its prompt and worker prompt (left empty:
    /// events never change them, and the event path does not read them).
    Applied(Box<TaskRecord>),
    /// Already committed before (a resend): nothing changed.
    Duplicate {
        /// The task's highest committed seq.
        committed: u64,
    },
    /// An earlier event of the task is missing; the agent must resend from `expected`.
    Gap {
        /// The seq the store expects next.
        expected: u64,
    },
    /// The task does not exist.
    UnknownTask,
    /// The task runs on another node; the event was not recorded.
    NotOwner {
        /// The node that owns the task.
        owner: String,
    },
}

/// How an event changes its task (and the question it records, if any).
pub type ApplyEvent<'a> = Box<dyn FnOnce(&mut TaskRecord) -> Option<QuestionRecord> + Send + 'a>;

/// One agent event to record in a group commit.
pub struct EventItem<'a> {
    /// Task the event belongs to.
    pub task_id: String,
    /// The agent's seq for it.
    pub seq: u64,
    /// Kind name stored with it.
    pub kind: &'static str,
    /// When it happened.
    pub at_ms: i64,
    /// The encoded event.
    pub body: Vec<u8>,
    /// Its effect on the task.
    pub apply: ApplyEvent<'a>,
}

/// The coordinator's store.
#[derive(Clone, Debug)]
pub struct Store {
    writer: Pool,
    reader: Pool,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives a process crash; only an OS crash can lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false)
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub async fn open(path: &Path) -> Result<Store> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options(path))
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(path).read_only(true))
            .await?;
        Ok(Store { writer, reader })
    }

    /// Inserts a new task. Fails with `AlreadyExists` when the id is taken.
    pub async fn insert_task(&self, t: &TaskRecord) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        let res = records::bind_task(sqlx::query(records::INSERT_TASK.as_str()), t)
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
        sqlx::query("INSERT INTO task_texts (task_id, prompt, worker_prompt) VALUES (?1, ?2, ?3)")
            .bind(&t.id)
            .bind(&t.prompt)
            .bind(&t.worker_prompt)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes every column of an existing task's row. Its prompt and worker prompt (in
    /// `task_texts`) are left as they are: the prompt never changes, and the worker prompt only
    /// through [`Store::update_task_and_worker_prompt`].
    pub async fn update_task(&self, t: &TaskRecord) -> Result<()> {
        records::bind_task(sqlx::query(records::UPDATE_TASK.as_str()), t)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Writes a task's row and its new worker prompt (a resume or retry) in one transaction.
    pub async fn update_task_and_worker_prompt(&self, t: &TaskRecord) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        records::bind_task(sqlx::query(records::UPDATE_TASK.as_str()), t)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE task_texts SET worker_prompt = ?2 WHERE task_id = ?1")
            .bind(&t.id)
            .bind(&t.worker_prompt)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One task by id.
    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT t.*, x.prompt, x.worker_prompt FROM tasks t JOIN task_texts x ON x.task_id = t.id WHERE t.id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| records::task_from_row(&r)).transpose()
    }

    /// True when a task with this id exists.
    pub async fn task_exists(&self, id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = ?1")
            .bind(id)
            .fetch_one(&self.reader)
            .await?;
        Ok(n > 0)
    }

    /// The most recent `limit` tasks (all when `limit` is 0) in the given states (all when
    /// empty), oldest first.
    pub async fn list_tasks(&self, states: &[TaskState], limit: u32) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query("SELECT t.*, x.prompt, x.worker_prompt FROM (SELECT * FROM tasks ORDER BY submit_order DESC LIMIT ?1) t JOIN task_texts x ON x.task_id = t.id ORDER BY t.submit_order")
            .bind(if limit == 0 { -1 } else { i64::from(limit) })
            .fetch_all(&self.reader)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let t = records::task_from_row(&r)?;
            if states.is_empty() || states.contains(&t.state) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Tasks waiting for a node, in queue order (priority, then submission).
    pub async fn queued_tasks(&self) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT t.*, x.prompt, x.worker_prompt FROM tasks t JOIN task_texts x ON x.task_id = t.id \
             WHERE t.state = 'queued' ORDER BY t.priority DESC, t.submit_order",
        )
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(records::task_from_row).collect()
    }

    /// Ids of the tasks waiting for a node, in queue order (for queue positions).
    pub async fn queued_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, submit_order",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Tasks on `node` that hold a slot there (assigned, running, waiting).
    pub async fn active_tasks_on(&self, node: &str) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT t.*, x.prompt, x.worker_prompt FROM tasks t JOIN task_texts x ON x.task_id = t.id \
             WHERE t.node = ?1 AND t.state IN ('assigned', 'running', 'waiting')",
        )
        .bind(node)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(records::task_from_row).collect()
    }

    /// Number of tasks that are not in a terminal state.
    pub async fn count_active(&self) -> Result<u32> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'assigned', 'running', 'waiting')")
            .fetch_one(&self.reader)
            .await?;
        Ok(n as u32)
    }

    /// Marks a task assigned to `node` and stores the Assign command in one transaction.
    /// Returns the command id.
    pub async fn assign(&self, t: &TaskRecord, command: &[u8]) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        records::bind_task(sqlx::query(records::UPDATE_TASK.as_str()), t)
            .execute(&mut *tx)
            .await?;
        let id = insert_command(&mut tx, &t.node, &t.id, command, t.updated_ms).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Updates a task and stores a command for its node in one transaction.
    pub async fn update_with_command(
        &self,
        t: &TaskRecord,
        node: &str,
        command: &[u8],
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        records::bind_task(sqlx::query(records::UPDATE_TASK.as_str()), t)
            .execute(&mut *tx)
            .await?;
        let id = insert_command(&mut tx, node, &t.id, command, t.updated_ms).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Marks a command acknowledged by its node.
    pub async fn ack_command(&self, id: u64, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE commands SET acked_ms = ?2 WHERE id = ?1 AND acked_ms IS NULL")
            .bind(id as i64)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Commands for `node` not yet acked, oldest first: (id, task id, encoded command).
    pub async fn pending_commands(&self, node: &str) -> Result<Vec<(u64, String, Vec<u8>)>> {
        let rows = sqlx::query("SELECT id, task_id, body FROM commands WHERE node = ?1 AND acked_ms IS NULL ORDER BY id")
            .bind(node)
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Records many events from `node` in one transaction (group commit): the batch's tasks
    /// are read in one statement, its events inserted in as few statements as the bind limit
    /// allows, and each task it touched written once. Outcomes come back in the order of
    /// `items`.
    pub async fn record_events(
        &self,
        node: &str,
        items: Vec<EventItem<'_>>,
    ) -> Result<Vec<EventOutcome>> {
        use std::collections::HashMap;
        let mut tx = self.writer.begin().await?;
        let mut ids: Vec<&str> = Vec::new();
        for item in &items {
            if !ids.contains(&item.task_id.as_str()) {
                ids.push(&item.task_id);
            }
        }
        let mut tasks: HashMap<String, TaskRecord> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(TASKS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM tasks WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            q.push(")");
            for row in q.build().persistent(false).fetch_all(&mut *tx).await? {
                let t = records::task_from_row(&row)?;
                tasks.insert(t.id.clone(), t);
            }
        }
        drop(ids);

        let mut rows: Vec<(String, u64, &'static str, i64, Vec<u8>)> =
            Vec::with_capacity(items.len());
        let mut asked: Vec<QuestionRecord> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(task) = tasks.get_mut(&item.task_id) else {
                out.push(EventOutcome::UnknownTask);
                continue;
            };
            if task.node != node {
                out.push(EventOutcome::NotOwner {
                    owner: task.node.clone(),
                });
                continue;
            }
            if item.seq <= task.last_seq {
                out.push(EventOutcome::Duplicate {
                    committed: task.last_seq,
                });
                continue;
            }
            if item.seq != task.last_seq + 1 {
                out.push(EventOutcome::Gap {
                    expected: task.last_seq + 1,
                });
                continue;
            }
            task.last_seq = item.seq;
            asked.extend((item.apply)(task));
            if !touched.contains(&item.task_id) {
                touched.push(item.task_id.clone());
            }
            out.push(EventOutcome::Applied(Box::new(task.clone())));
            rows.push((item.task_id, item.seq, item.kind, item.at_ms, item.body));
        }
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (task_id, seq, kind, at_ms, body) ",
            );
            let chunk = rows.by_ref().take(EVENTS_PER_STATEMENT);
            q.push_values(chunk, |mut row, (task_id, seq, kind, at_ms, body)| {
                row.push_bind(task_id)
                    .push_bind(seq as i64)
                    .push_bind(kind)
                    .push_bind(at_ms)
                    .push_bind(body);
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for a in &asked {
            sqlx::query("INSERT OR IGNORE INTO questions (task_id, seq, text, asked_ms) VALUES (?1, ?2, ?3, ?4)")
                .bind(&a.task_id)
                .bind(i64::from(a.seq))
                .bind(&a.text)
                .bind(a.asked_ms)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in touched.chunks(TASKS_PER_UPDATE) {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new(records::UPDATE_TASKS_FROM_HEAD.as_str());
            q.push_values(chunk, |mut row, id| {
                records::bind_task(&mut row, &tasks[id]);
            });
            q.push(records::UPDATE_TASKS_FROM_TAIL);
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Highest committed event seq of a task (0 when none or unknown).
    pub async fn committed_seq(&self, task_id: &str) -> Result<u64> {
        let n: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_optional(&self.writer)
            .await?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Log output of a task after event `after_seq`: (seq, bytes), in order.
    pub async fn log_chunks(&self, task_id: &str, after_seq: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = sqlx::query("SELECT seq, body FROM events WHERE task_id = ?1 AND kind = 'log' AND seq > ?2 ORDER BY seq")
            .bind(task_id)
            .bind(after_seq as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get(1)?)))
            .collect()
    }

    /// Questions a task asked, by seq.
    pub async fn questions(&self, task_id: &str) -> Result<Vec<QuestionRecord>> {
        let rows = sqlx::query("SELECT task_id, seq, text, asked_ms, answer, answered_ms FROM questions WHERE task_id = ?1 ORDER BY seq")
            .bind(task_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(records::question_from_row).collect()
    }

    /// Questions of many tasks, by task then seq, read in as few statements as the bind limit
    /// allows. A task that asked none is absent.
    pub async fn questions_of(
        &self,
        task_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<QuestionRecord>>> {
        let mut out: std::collections::HashMap<String, Vec<QuestionRecord>> =
            std::collections::HashMap::new();
        for chunk in task_ids.chunks(TASKS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT task_id, seq, text, asked_ms, answer, answered_ms FROM questions WHERE task_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            q.push(") ORDER BY task_id, seq");
            for row in q.build().persistent(false).fetch_all(&self.reader).await? {
                let question = records::question_from_row(&row)?;
                out.entry(question.task_id.clone())
                    .or_default()
                    .push(question);
            }
        }
        Ok(out)
    }

    /// Records the answer to question `seq` of `task_id` (only if it had none). Returns false
    /// when it was already answered.
    pub async fn answer_question(
        &self,
        task_id: &str,
        seq: u32,
        text: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE questions SET answer = ?3, answered_ms = ?4 WHERE task_id = ?1 AND seq = ?2 AND answer IS NULL")
            .bind(task_id)
            .bind(i64::from(seq))
            .bind(text)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every unanswered question of a task that is still waiting or blocked, oldest first,
    /// with the asking task's node, title and state.
    pub async fn open_questions(&self) -> Result<Vec<OpenQuestion>> {
        let rows = sqlx::query(
            "SELECT q.task_id, q.seq, q.text, q.asked_ms, q.answer, q.answered_ms, t.node, t.title, t.state \
             FROM questions q JOIN tasks t ON t.id = q.task_id \
             WHERE q.answer IS NULL AND t.state IN ('running', 'waiting', 'blocked') ORDER BY q.asked_ms, q.task_id, q.seq",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(8)?;
                Ok(OpenQuestion {
                    question: records::question_from_row(r)?,
                    node: r.try_get(6)?,
                    title: r.try_get(7)?,
                    state: state.parse().map_err(CoordinatorError::Corrupt)?,
                })
            })
            .collect()
    }

    /// Inserts or refreshes a node's registration.
    pub async fn upsert_node(&self, n: &NodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (name, labels, backends, capacity, version, hostname, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(name) DO UPDATE SET labels = ?2, backends = ?3, capacity = ?4, version = ?5, hostname = ?6, last_seen_ms = ?7",
        )
        .bind(&n.name)
        .bind(serde_json::to_string(&n.labels).unwrap_or_default())
        .bind(serde_json::to_string(&n.backends).unwrap_or_default())
        .bind(i64::from(n.capacity))
        .bind(&n.version)
        .bind(&n.hostname)
        .bind(n.last_seen_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Updates a node's last-seen time.
    pub async fn touch_node(&self, name: &str, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1")
            .bind(name)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every node that ever registered, by name.
    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query("SELECT name, labels, backends, capacity, version, hostname, last_seen_ms FROM nodes ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(records::node_from_row).collect()
    }
}

async fn insert_command(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node: &str,
    task_id: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<u64> {
    let id: i64 = sqlx::query_scalar("INSERT INTO commands (node, task_id, body, created_ms) VALUES (?1, ?2, ?3, ?4) RETURNING id")
        .bind(node)
        .bind(task_id)
        .bind(body)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?;
    Ok(id as u64)
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    if version as usize > MIGRATIONS.len() {
        return Err(CoordinatorError::Corrupt(format!(
            "the database has schema version {version}, newer than this coordinator knows ({}); run a newer dispatch-coordinator",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            i + 1
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "applied store migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
