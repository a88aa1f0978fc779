//! Tokens and the audit.

use super::Backend;
use super::tasks::record_audit;
use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, AuditRecord, Registered, TokenRecord};
use crate::store::AccessStore;
use sqlx::Row;

#[async_trait::async_trait]
impl AccessStore for Backend {
    async fn create_token(&self, t: &TokenRecord, audit: &AuditEntry, now_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        insert_token(&mut tx, t).await?;
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_node(
        &self,
        registration: &str,
        minted: &TokenRecord,
        replace: Option<&str>,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<Registered> {
        let mut tx = self.write().await?;
        let row: Option<(i64, i64, Option<i64>)> =
            sqlx::query_as("SELECT uses, uses_max, revoked_ms FROM tokens WHERE id = $1")
                .bind(registration)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((uses, _, None)) = row else {
            return Ok(Registered::Gone);
        };
        // A token minted for this name by this registration and never used (its Welcome was
        // lost) is replaced without counting a use; otherwise one use is taken, in the same
        // statement that checks one is left.
        let replaced = match replace {
            Some(old) => {
                sqlx::query(
                    "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL AND created_by = $3 AND last_used_ms = 0",
                )
                .bind(old)
                .bind(now_ms)
                .bind(TokenRecord::minted_by(registration))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            None => false,
        };
        if !replaced {
            let took = sqlx::query(
                "UPDATE tokens SET uses = uses + 1 WHERE id = $1 AND uses < uses_max AND revoked_ms IS NULL",
            )
            .bind(registration)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if took == 0 {
                return Ok(Registered::Exhausted {
                    uses: uses.clamp(0, u32::MAX.into()) as u32,
                });
            }
        }
        insert_token(&mut tx, minted).await?;
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(Registered::Minted)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT id, kind, name, role, hash, nodes, created_ms, created_by, revoked_ms, submits_per_minute, max_active, expires_ms, last_used_ms, uses_max, uses, budgets FROM tokens ORDER BY created_ms, id")
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.try_get(4)?;
                let nodes: String = r.try_get(5)?;
                Ok(TokenRecord {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    name: r.try_get(2)?,
                    role: r.try_get(3)?,
                    hash: hash.try_into().map_err(|_| {
                        CoordinatorError::Corrupt("a token hash is not 32 bytes".into())
                    })?,
                    nodes: serde_json::from_str(&nodes)
                        .map_err(|e| CoordinatorError::Corrupt(format!("token nodes: {e}")))?,
                    created_ms: r.try_get(6)?,
                    created_by: r.try_get(7)?,
                    revoked_ms: r.try_get(8)?,
                    submits_per_minute: r.try_get::<i64, _>(9)?.clamp(0, u32::MAX.into()) as u32,
                    max_active: r.try_get::<i64, _>(10)?.clamp(0, u32::MAX.into()) as u32,
                    expires_ms: r.try_get(11)?,
                    last_used_ms: r.try_get(12)?,
                    uses_max: r.try_get::<i64, _>(13)?.clamp(0, u32::MAX.into()) as u32,
                    uses: r.try_get::<i64, _>(14)?.clamp(0, u32::MAX.into()) as u32,
                    budgets: match r.try_get::<String, _>(15)?.as_str() {
                        "" => Default::default(),
                        j => serde_json::from_str(j).map_err(|e| {
                            CoordinatorError::Corrupt(format!("token budgets: {e}"))
                        })?,
                    },
                })
            })
            .collect()
    }

    async fn tokens_used(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for (id, at) in used {
            sqlx::query("UPDATE tokens SET last_used_ms = $2 WHERE id = $1 AND last_used_ms < $2")
                .bind(id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_token(&self, id: &str, audit: &AuditEntry, now_ms: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let r =
            sqlx::query("UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_cordoned(
        &self,
        name: &str,
        cordoned: bool,
        command: Option<&crate::model::NodeCommand>,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let r = sqlx::query("UPDATE nodes SET cordoned = $2 WHERE name = $1")
            .bind(name)
            .bind(cordoned)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(c) = command {
            super::tasks::insert_command(&mut tx, name, c, now_ms).await?;
        }
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn forget_node(
        &self,
        name: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<crate::model::Forgot> {
        use crate::model::Forgot;
        let mut tx = self.write().await?;
        let known: Option<String> = sqlx::query_scalar("SELECT name FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Ok(Forgot::Unknown);
        }
        let ended: Vec<String> = dispatch_core::TaskState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let busy: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM tasks WHERE (node = $1 OR remote = $1) AND state NOT IN ({}) ORDER BY id LIMIT 20",
            ended.join(", ")
        )))
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !busy.is_empty() {
            return Ok(Forgot::Busy(busy));
        }
        sqlx::query("DELETE FROM commands WHERE node = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(Forgot::Forgotten)
    }

    async fn secret(&self, name: &str, fresh: &str) -> Result<String> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&mut *tx)
        .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn add_answer_link(&self, id: &str, task: &str, seq: u32, expires_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO answer_links (id, task_id, seq, expires_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(task)
        .bind(i64::from(seq))
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        // Links that expired a day ago are of no use to anyone.
        sqlx::query("DELETE FROM answer_links WHERE expires_ms < $1")
            .bind(crate::now_ms() - 86_400_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_answer_link(
        &self,
        id: &str,
        task: &str,
        seq: u32,
        now_ms: i64,
    ) -> Result<crate::model::LinkTaken> {
        use crate::model::LinkTaken;
        let mut tx = self.write().await?;
        let row: Option<(String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT task_id, seq, expires_ms, used_ms FROM answer_links WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let taken = match row {
            Some((t, s, _, _)) if t != task || s != i64::from(seq) => LinkTaken::Unknown,
            None => LinkTaken::Unknown,
            Some((_, _, _, Some(used))) => LinkTaken::Used(used),
            Some((_, _, expires, None)) if expires <= now_ms => LinkTaken::Expired,
            Some(_) => {
                let r = sqlx::query(
                    "UPDATE answer_links SET used_ms = $2 WHERE id = $1 AND used_ms IS NULL",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 1 {
                    LinkTaken::Taken
                } else {
                    LinkTaken::Used(now_ms)
                }
            }
        };
        tx.commit().await?;
        Ok(taken)
    }

    async fn day_spend(&self, owner: &str, day: i64) -> Result<(u64, u64)> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT usd_micros, tokens FROM spend_days WHERE owner = $1 AND day = $2",
        )
        .bind(owner)
        .bind(day)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map_or((0, 0), |(u, t)| (u.max(0) as u64, t.max(0) as u64)))
    }

    async fn stored_policy(&self) -> Result<Option<(String, i64, String)>> {
        Ok(
            sqlx::query_as(
                "SELECT body, updated_ms, updated_by FROM policies WHERE name = 'tools'",
            )
            .fetch_optional(&self.reader)
            .await?,
        )
    }

    async fn set_policy(
        &self,
        yaml: Option<&str>,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        match yaml {
            Some(body) => {
                sqlx::query(
                    "INSERT INTO policies (name, body, updated_ms, updated_by) VALUES ('tools', $1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET body = $1, updated_ms = $2, updated_by = $3",
                )
                .bind(body)
                .bind(now_ms)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM policies WHERE name = 'tools'")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        record_audit(&mut tx, Some(audit), now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, entry: &AuditEntry, now_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        record_audit(&mut tx, Some(entry), now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_records(
        &self,
        task: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, who, action, task_id, detail FROM audit \
             WHERE ($1 IS NULL OR task_id = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(task)
        .bind(before.map(|b| b as i64))
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get::<i64, _>(0)? as u64,
                    at_ms: r.try_get(1)?,
                    entry: AuditEntry {
                        who: r.try_get(2)?,
                        action: r.try_get(3)?,
                        task_id: r.try_get(4)?,
                        detail: r.try_get(5)?,
                    },
                })
            })
            .collect()
    }
}

async fn insert_token(tx: &mut sqlx::Transaction<'_, super::Db>, t: &TokenRecord) -> Result<()> {
    sqlx::query("INSERT INTO tokens (id, kind, name, role, hash, nodes, created_ms, created_by, submits_per_minute, max_active, expires_ms, uses_max, budgets) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
        .bind(&t.id)
        .bind(&t.kind)
        .bind(&t.name)
        .bind(&t.role)
        .bind(t.hash.as_slice())
        .bind(serde_json::to_string(&t.nodes).unwrap_or_else(|_| "[]".into()))
        .bind(t.created_ms)
        .bind(&t.created_by)
        .bind(i64::from(t.submits_per_minute))
        .bind(i64::from(t.max_active))
        .bind(t.expires_ms)
        .bind(i64::from(t.uses_max))
        .bind(if t.budgets.is_none() {
            String::new()
        } else {
            serde_json::to_string(&t.budgets).unwrap_or_default()
        })
        .execute(&mut **tx)
        .await?;
    Ok(())
}
