//! The PostgreSQL store, for a team's coordinator and its replicas: the same SQL as SQLite
//! (`store/sql/`, compiled here with `Db = Postgres`), on one writer connection and a small
//! pool of readers.
//!
//! One writer connection keeps SQLite's rule: a write transaction runs alone, so what it reads
//! cannot change before it commits (at READ COMMITTED, with no second writer, that holds).
//! Several coordinator replicas share one database, but only the leader writes
//! ([`lease`]): its every write transaction first locks the lease row (`FOR SHARE`) and checks
//! the lease's epoch is still the one it took. A new leader raises the epoch, which waits for
//! that lock, so an old leader — paused, partitioned, or just slow — can never commit after a
//! new one starts (fencing).
//!
//! Schema: `migrations/postgres/`, numbered in step with SQLite's migrations (the first file
//! is the whole schema at version 11); `dispatch_schema` holds the version.

// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/access.rs"]
mod access;
// The shared SQL, compiled for this backend (intentionally once per backend).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/events.rs"]
mod events;
pub mod lease;
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The database the shared SQL (`store/sql/`) runs on here.
type Db = sqlx::Postgres;
/// The store the shared SQL implements the traits for.
type Backend = PgStore;
type DbRow = sqlx::postgres::PgRow;
type DbArguments = <Db as sqlx::Database>::Arguments;

/// Schema files by version: (version, SQL). Version 11 is the whole schema of SQLite's 0001–0011;
/// later ones step with SQLite's files of the same number.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        11,
        include_str!("../../../migrations/postgres/0011_schema.sql"),
    ),
    (
        12,
        include_str!("../../../migrations/postgres/0012_cli_trouble.sql"),
    ),
    (
        13,
        include_str!("../../../migrations/postgres/0013_plan_history.sql"),
    ),
    (
        14,
        include_str!("../../../migrations/postgres/0014_notes.sql"),
    ),
    (
        15,
        include_str!("../../../migrations/postgres/0015_ephemeral_nodes.sql"),
    ),
    (
        16,
        include_str!("../../../migrations/postgres/0016_token_lifecycle.sql"),
    ),
    (
        17,
        include_str!("../../../migrations/postgres/0017_registration_tokens.sql"),
    ),
    (
        18,
        include_str!("../../../migrations/postgres/0018_tool_approvals.sql"),
    ),
    (
        19,
        include_str!("../../../migrations/postgres/0019_policies.sql"),
    ),
    (
        20,
        include_str!("../../../migrations/postgres/0020_reset_resumes.sql"),
    ),
    (
        21,
        include_str!("../../../migrations/postgres/0021_budgets.sql"),
    ),
    (
        22,
        include_str!("../../../migrations/postgres/0022_answer_links.sql"),
    ),
    (
        23,
        include_str!("../../../migrations/postgres/0023_task_tokens.sql"),
    ),
];

/// The store version this coordinator writes (the same number as SQLite's).
pub const SCHEMA_VERSION: i64 = 23;

/// Advisory lock key held while migrating (two replicas starting at once migrate once).
const MIGRATION_LOCK: i64 = 0x6469_7370_6d69_6772; // "dispmigr"

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
    /// The lease epoch this leader writes under; none for a store opened alone (a tool, a
    /// test, a single coordinator without replicas).
    fence: Option<u64>,
    /// Set when a write found the lease taken by another replica.
    deposed: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Parses a `postgres://` URL, with a message that says what is wrong.
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| {
        CoordinatorError::Invalid(format!(
            "the store URL `{}` is not a PostgreSQL URL ({e}); give postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            redact(url)
        ))
    })
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date; writes are not
    /// fenced (the caller is the only writer).
    pub async fn open(url: &str) -> Result<PgStore> {
        PgStore::open_with(url, None).await
    }

    /// [`PgStore::open`] for a leader: every write checks the lease still has `epoch`.
    pub async fn open_fenced(url: &str, epoch: u64) -> Result<PgStore> {
        PgStore::open_with(url, Some(epoch)).await
    }

    async fn open_with(url: &str, fence: Option<u64>) -> Result<PgStore> {
        let opts = connect_options(url)?.application_name("dispatch-coordinator");
        let unreachable = |e: sqlx::Error| {
            CoordinatorError::Invalid(format!(
                "cannot connect to the PostgreSQL store {}: {e}; check that the server runs, the URL, and the user's password",
                redact(url)
            ))
        };
        // A writer that stalls inside a transaction (a paused process) loses it, and the row
        // lock on the lease with it, instead of holding a new leader's takeover.
        let writer = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                opts.clone()
                    .options([("idle_in_transaction_session_timeout", "10s")]),
            )
            .await
            .map_err(unreachable)?;
        migrate(&writer).await?;
        let reader = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(unreachable)?;
        Ok(PgStore {
            writer,
            reader,
            fence,
            deposed: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// Resolves once a write found that another replica holds the lease: this one must stop.
    pub fn deposed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.deposed.subscribe();
        async move {
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    /// Begins a write transaction on the one writer connection; for a leader, first checks
    /// (and holds, until the transaction ends) the lease it writes under.
    async fn write(&self) -> Result<sqlx::Transaction<'static, Db>> {
        let mut tx = self.writer.begin().await?;
        if let Some(mine) = self.fence {
            let (epoch, leader): (i64, String) = sqlx::query_as(
                "SELECT epoch, leader FROM coordinator_lease WHERE id = 1 FOR SHARE",
            )
            .fetch_one(&mut *tx)
            .await?;
            if epoch as u64 != mine {
                let _ = self.deposed.send(true);
                return Err(CoordinatorError::Fenced(format!(
                    "this coordinator replica is no longer the leader (lease {mine}; {leader} holds lease {epoch}); retry, and the call reaches the leader"
                )));
            }
        }
        Ok(tx)
    }

    /// The writer pool, for tests that look at the raw tables and for migrate-store.
    pub(crate) fn raw(&self) -> &PgPool {
        &self.writer
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    migrate_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Brings the schema up to date inside `tx` (under an advisory lock: replicas starting
/// together migrate once).
async fn migrate_in(tx: &mut sqlx::Transaction<'_, Db>) -> Result<()> {
    let tx = &mut **tx;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('dispatch_schema') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        sqlx::raw_sql("CREATE TABLE dispatch_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM dispatch_schema")
        .fetch_one(&mut *tx)
        .await?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(CoordinatorError::Corrupt(format!(
            "the PostgreSQL store has schema version {version}, newer than this coordinator knows ({SCHEMA_VERSION}); run a newer dispatch-coordinator"
        )));
    }
    for (v, sql) in MIGRATIONS {
        if *v <= version {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dispatch_schema")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO dispatch_schema (version) VALUES ($1)")
            .bind(*v)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = v, "applied PostgreSQL store migration");
    }
    Ok(())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let path = base[host_start..].find('/').map(|i| host_start + i);
    let root = path.map_or(base, |p| &base[..p]);
    format!("{root}/{database}{query}")
}

/// Creates a new empty database `dispatch_<tag>_<unix seconds>_<random>` on the server at
/// `url` (whose user may create databases) and returns its URL: one per test, so tests run in
/// parallel. Nothing drops them when a test ends (a test that fails is easier to look into
/// with its database), so the first call in a process drops the scratch databases made more
/// than [`SCRATCH_KEPT_FOR`] ago that nobody is connected to: a developer's server stays
/// bounded.
#[doc(hidden)]
pub async fn scratch_database(url: &str, tag: &str) -> Result<String> {
    use sqlx::Connection;
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut admin = sqlx::postgres::PgConnection::connect_with(&connect_options(url)?).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'dispatch\\_%'")
                .fetch_all(&mut admin)
                .await?;
        for old in names
            .iter()
            .filter(|n| scratch_made_at(n).is_some_and(|t| t + SCRATCH_KEPT_FOR.as_secs() < now))
        {
            // Refused while someone is connected (a test still running): then it stays.
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{old}\""
            )))
            .execute(&mut admin)
            .await;
        }
    }
    let name = format!(
        "dispatch_{}_{now}_{:016x}",
        tag.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>()
            .to_ascii_lowercase(),
        {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| {
                CoordinatorError::Invalid(format!("no randomness for a database name: {e}"))
            })?;
            u64::from_le_bytes(b)
        }
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(with_database(url, &name))
}

/// How long a scratch database is kept before a later test run drops it.
pub const SCRATCH_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// When scratch database `name` was made (from its name), or None for any other database.
fn scratch_made_at(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("dispatch_")?;
    let mut parts = rest.rsplitn(3, '_');
    let random = parts.next()?;
    let secs = parts.next()?;
    parts.next()?;
    (random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| secs.parse().ok())
        .flatten()
}

#[cfg(test)]
mod scratch_tests {
    use super::scratch_made_at;

    #[test]
    fn only_scratch_databases_have_a_making_time() {
        assert_eq!(
            scratch_made_at("dispatch_store_paused_1795700000_00ff00ff00ff00ff"),
            Some(1_795_700_000)
        );
        for other in [
            "dispatch",
            "postgres",
            "dispatch_team",
            "dispatch_bench_00ff00ff00ff00ff",
            "dispatch_x_notatime_00ff00ff00ff00ff",
            "dispatch_x_1795700000_short",
            "mine_x_1795700000_00ff00ff00ff00ff",
        ] {
            assert_eq!(scratch_made_at(other), None, "{other}");
        }
    }
}
