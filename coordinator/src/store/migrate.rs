//! `dispatch-coordinator migrate-store`: moves a single-machine SQLite store into an empty
//! PostgreSQL database — every table (tasks and their texts, events, questions, commands,
//! nodes, tokens, audit, outputs, diffs, bundles, request ids) — in one PostgreSQL transaction:
//! all of it arrives, or none.
//!
//! Both schemas have the same tables and columns; the copy follows PostgreSQL's column list
//! and types (SQLite's 0/1 become booleans). The SQLite store is brought to this version
//! first, and read in one read transaction (a consistent snapshot, even if a coordinator were
//! still writing it — stop it first anyway, or its later writes stay behind).

use super::postgres::{PgStore, SCHEMA_VERSION};
use super::sqlite::SqliteStore;
use crate::error::{CoordinatorError, Result};
use sqlx::Row;
use std::path::Path;
use tokio_stream::StreamExt;

/// Every table a store holds, parents first.
pub const TABLES: [&str; 16] = [
    "tasks",
    "task_texts",
    "events",
    "questions",
    "commands",
    "nodes",
    "requests",
    "tokens",
    "audit",
    "task_outputs",
    "task_diffs",
    "task_bundles",
    "policies",
    "spend_days",
    "secrets",
    "answer_links",
];

/// Rows per INSERT, and bytes: a statement stays well under PostgreSQL's 65,535 parameters
/// and a few MiB.
const ROWS_PER_INSERT: usize = 500;
const BYTES_PER_INSERT: usize = 8 * 1024 * 1024;

/// One value of a row on its way.
enum Value {
    Big(Option<i64>),
    Int(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Value::Text(Some(s)) => s.len(),
            Value::Bytes(Some(b)) => b.len(),
            _ => 8,
        }
    }
}

/// What was moved: rows per table, in [`TABLES`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// (table, rows).
    pub tables: Vec<(String, u64)>,
}

/// Copies the SQLite store at `sqlite_db` into the PostgreSQL database at `pg_url`, which must
/// hold no tasks, tokens or nodes yet.
pub async fn sqlite_to_postgres(sqlite_db: &Path, pg_url: &str) -> Result<Moved> {
    if !sqlite_db.exists() {
        return Err(CoordinatorError::NotFound(format!(
            "there is no SQLite store at {}; give --from sqlite:DIR with the coordinator's --data-dir",
            sqlite_db.display()
        )));
    }
    // Both brought to this version's schema.
    let src = SqliteStore::open(sqlite_db).await?;
    let dst = PgStore::open(pg_url).await?;
    let (src, dst) = (src.raw().clone(), dst.raw().clone());
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&src)
        .await?;
    if version != SCHEMA_VERSION {
        return Err(CoordinatorError::Corrupt(format!(
            "the SQLite store is at schema {version} and PostgreSQL's at {SCHEMA_VERSION}; run the same dispatch-coordinator version for both"
        )));
    }
    let mut tx = dst.begin().await?;
    for table in ["tasks", "tokens", "nodes"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await?;
        if n > 0 {
            return Err(CoordinatorError::AlreadyExists(format!(
                "the PostgreSQL store already holds {n} rows in `{table}`; migrate into an empty database (nothing was copied)"
            )));
        }
    }
    let mut read = src.begin().await?;
    let mut moved = Moved { tables: Vec::new() };
    for table in TABLES {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let list = columns
            .iter()
            .map(|(c, _)| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {list} FROM {table}")))
            .fetch(&mut *read);
        let mut batch: Vec<Vec<Value>> = Vec::new();
        let mut bytes = 0usize;
        let mut count = 0u64;
        while let Some(row) = rows.next().await {
            let row = row?;
            let mut values = Vec::with_capacity(columns.len());
            for (i, (name, ty)) in columns.iter().enumerate() {
                let v = match ty.as_str() {
                    "bigint" => Value::Big(row.try_get(i)?),
                    "integer" => Value::Int(row.try_get(i)?),
                    "boolean" => Value::Bool(row.try_get(i)?),
                    "text" => Value::Text(row.try_get(i)?),
                    "bytea" => Value::Bytes(row.try_get(i)?),
                    other => {
                        return Err(CoordinatorError::Corrupt(format!(
                            "column {table}.{name} has type {other}, which migrate-store does not know"
                        )));
                    }
                };
                bytes += v.size();
                values.push(v);
            }
            batch.push(values);
            count += 1;
            if batch.len() >= ROWS_PER_INSERT || bytes >= BYTES_PER_INSERT {
                insert(&mut tx, table, &list, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        drop(rows);
        insert(&mut tx, table, &list, batch).await?;
        moved.tables.push((table.to_string(), count));
    }
    // Ids made from now on follow the copied ones.
    for table in ["commands", "audit"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    // No session outlives its coordinator.
    sqlx::query("UPDATE nodes SET live = FALSE")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    read.rollback().await?;
    Ok(moved)
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    list: &str,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("INSERT INTO {table} ({list}) "));
    q.push_values(rows, |mut b, row| {
        for v in row {
            match v {
                Value::Big(v) => b.push_bind(v),
                Value::Int(v) => b.push_bind(v),
                Value::Bool(v) => b.push_bind(v),
                Value::Text(v) => b.push_bind(v),
                Value::Bytes(v) => b.push_bind(v),
            };
        }
    });
    q.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}
