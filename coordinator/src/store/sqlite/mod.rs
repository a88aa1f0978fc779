//! The SQLite store: WAL mode, one writer connection (SQLite serializes writers anyway, and one
//! connection makes every write transaction run alone: what it reads cannot change before it
//! commits) and a small pool of readers. Schema changes are numbered migrations applied on
//! open (`PRAGMA user_version` holds the version).

// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/access.rs"]
mod access;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/events.rs"]
mod events;
mod legacy;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/nodes.rs"]
mod nodes;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/rows.rs"]
mod rows;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/store.rs"]
mod store;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/tasks.rs"]
mod tasks;

use super::*;
use crate::error::CoordinatorError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

pub(in crate::store) const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_init.sql"),
    include_str!("../../../migrations/0002_attempts.sql"),
    include_str!("../../../migrations/0003_worktrees.sql"),
    include_str!("../../../migrations/0004_pools.sql"),
    include_str!("../../../migrations/0005_repos.sql"),
    include_str!("../../../migrations/0006_submit_order_index.sql"),
    include_str!("../../../migrations/0007_task_texts.sql"),
    include_str!("../../../migrations/0008_sessions.sql"),
    include_str!("../../../migrations/0009_access.sql"),
    include_str!("../../../migrations/0010_outputs.sql"),
    include_str!("../../../migrations/0011_usage.sql"),
    include_str!("../../../migrations/0012_cli_trouble.sql"),
    include_str!("../../../migrations/0013_plan_history.sql"),
    include_str!("../../../migrations/0014_notes.sql"),
    include_str!("../../../migrations/0015_ephemeral_nodes.sql"),
    include_str!("../../../migrations/0016_token_lifecycle.sql"),
    include_str!("../../../migrations/0017_registration_tokens.sql"),
    include_str!("../../../migrations/0018_tool_approvals.sql"),
    include_str!("../../../migrations/0019_policies.sql"),
    include_str!("../../../migrations/0020_reset_resumes.sql"),
    include_str!("../../../migrations/0021_budgets.sql"),
    include_str!("../../../migrations/0022_answer_links.sql"),
    include_str!("../../../migrations/0023_task_tokens.sql"),
];

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// The database the shared SQL (`store/sql/`) runs on here.
type Db = sqlx::Sqlite;
/// The store the shared SQL implements the traits for.
type Backend = SqliteStore;
type DbRow = sqlx::sqlite::SqliteRow;
type DbArguments = <Db as sqlx::Database>::Arguments;

pub(in crate::store) fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives a process crash; only an OS crash can lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false)
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`. The database holds every prompt
    /// and answer: it is readable by its owner only (0600), and SQLite gives its write-ahead
    /// log and shared-memory files the database's mode.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        private_files(path)?;
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
        Ok(SqliteStore { writer, reader })
    }

    /// Begins a write transaction on the one writer connection (SQLite serializes writers).
    /// IMMEDIATE: the write lock is taken at BEGIN, where the busy timeout waits for another
    /// process holding it (a backup, an operator's sqlite3) — a DEFERRED transaction that reads
    /// first would fail at once (SQLITE_BUSY) when it came to write.
    async fn write(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The writer connection, for tests that look at the raw tables and for migrate-store.
    pub(crate) fn raw(&self) -> &SqlitePool {
        &self.writer
    }
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Its schema version.
    pub version: i64,
    /// Tasks in it.
    pub tasks: i64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies the store at `db` to `to` while it is in use: one consistent snapshot (`VACUUM INTO`,
/// a read transaction that blocks no writer), written 0600, then checked
/// (`PRAGMA integrity_check`). `to` must not exist (or be empty).
pub async fn backup(db: &Path, to: &Path) -> Result<Backup> {
    if !db.exists() {
        return Err(CoordinatorError::NotFound(format!(
            "there is no store at {}; give the coordinator's --data-dir",
            db.display()
        )));
    }
    if std::fs::metadata(to).is_ok_and(|m| m.len() > 0) {
        return Err(CoordinatorError::AlreadyExists(format!(
            "{} exists; give a new file name (a backup never overwrites one)",
            to.display()
        )));
    }
    // Created 0600 first: VACUUM INTO would make it 0644.
    dispatch_core::fs::private_create(to)
        .map_err(|e| CoordinatorError::Invalid(format!("cannot create {}: {e}", to.display())))?;
    let src = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options(db).create_if_missing(false))
        .await?;
    let target = to.display().to_string();
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(&target)
        .execute(&src)
        .await;
    src.close().await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(e.into());
    }
    let copy = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(to).read_only(true))
        .await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&copy)
        .await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&copy)
        .await?;
    let tasks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks")
        .fetch_one(&copy)
        .await?;
    copy.close().await;
    if check != "ok" {
        return Err(CoordinatorError::Corrupt(format!(
            "the backup {} fails its integrity check: {check}",
            to.display()
        )));
    }
    Ok(Backup {
        version,
        tasks,
        bytes: std::fs::metadata(to).map(|m| m.len()).unwrap_or(0),
    })
}

/// Creates the database file 0600 (SQLite would create it 0644), and tightens a database and its
/// WAL files that an earlier version left readable by others.
fn private_files(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| {
        CoordinatorError::Corrupt(format!("cannot secure {}: {e}", path.display()))
    };
    if !path.exists() {
        drop(dispatch_core::fs::private_append(path).map_err(io)?);
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
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
        if i + 1 == 8 {
            legacy::convert_bodies(&mut tx).await?;
        }
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
