//! Which coordinator replica leads, on one PostgreSQL database (active-standby).
//!
//! - Election: the leader holds a session advisory lock ([`LEADER_LOCK`]) on a connection of
//!   its own. PostgreSQL releases it when that connection ends — the process died, or the
//!   server closed it — and a standby polling `pg_try_advisory_lock` takes it next.
//! - Fencing: taking the lock, a leader raises `coordinator_lease.epoch`; every write
//!   transaction of a leader locks that row `FOR SHARE` and checks the epoch is its own
//!   ([`super::PgStore::open_fenced`]). The raise waits for the old leader's open write
//!   transaction, and every later one of the old leader fails: it can never commit after the
//!   new leader starts.
//! - A leader that stops renewing (paused, partitioned from the database while its connection
//!   lingers) is cut off: after `stale_after` without a heartbeat a standby ends the old lock
//!   connection (`pg_terminate_backend`) and takes over. Its writer connection cannot keep
//!   a row lock past `idle_in_transaction_session_timeout` either.
//! - A leader that loses its lock connection, or finds the epoch moved, stops serving.

use crate::error::{CoordinatorError, Result};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::time::Duration;

/// The advisory lock key of leadership ("displead").
pub const LEADER_LOCK: i64 = 0x6469_7370_6c65_6164;

/// What a replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting: `leader` is the address the leader advertised ("" when none leads).
    Standby {
        /// The leader's advertised address.
        leader: String,
    },
    /// Leading under lease `epoch`.
    Leader {
        /// The fencing epoch.
        epoch: u64,
    },
}

/// How a replica campaigns.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The store's URL.
    pub url: String,
    /// The address this replica serves on, as clients should reach it (told to callers of a
    /// standby).
    pub advertise: String,
    /// How long a leader may go without renewing before a standby cuts it off.
    pub stale_after: Duration,
    /// How often a standby tries the lock.
    pub poll: Duration,
}

/// The lease of a leader: its lock connection.
pub struct Lease {
    conn: PgConnection,
    /// The fencing epoch.
    pub epoch: u64,
}

use crate::now_ms;

impl Campaign {
    /// Waits until this replica leads; `role` follows what it is meanwhile (a standby and
    /// whom it follows). Store errors are logged and retried: a standby outlives a database
    /// restart.
    pub async fn lead(&self, role: &tokio::sync::watch::Sender<Role>) -> Lease {
        let mut conn: Option<PgConnection> = None;
        let mut last_error = String::new();
        loop {
            match self.try_once(&mut conn, role).await {
                Ok(Some(lease)) => return lease,
                Ok(None) => last_error.clear(),
                Err(e) => {
                    conn = None;
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(error = %e, "standby cannot reach the store; retrying");
                        last_error = e;
                    }
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn try_once(
        &self,
        conn: &mut Option<PgConnection>,
        role: &tokio::sync::watch::Sender<Role>,
    ) -> Result<Option<Lease>> {
        if conn.is_none() {
            *conn = Some(lock_connection(&self.url).await?);
        }
        let c = conn.as_mut().expect("connected above");
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *c)
            .await?;
        if got {
            let now = now_ms();
            // Waits for the old leader's open write transaction (it holds the row FOR SHARE);
            // bounded so a wedged one is retried rather than waited on forever.
            sqlx::query("SET lock_timeout = '5s'")
                .execute(&mut *c)
                .await?;
            let epoch: i64 = sqlx::query_scalar(
                "UPDATE coordinator_lease SET epoch = epoch + 1, leader = $1, backend_pid = pg_backend_pid(), \
                 since_ms = $2, heartbeat_ms = $2 WHERE id = 1 RETURNING epoch",
            )
            .bind(&self.advertise)
            .bind(now)
            .fetch_one(&mut *c)
            .await
            .inspect_err(|_| {
                // Let another replica try; this one retries too.
                *conn = None;
            })?;
            let c = conn.take().expect("connected above");
            role.send_replace(Role::Leader {
                epoch: epoch as u64,
            });
            return Ok(Some(Lease {
                conn: c,
                epoch: epoch as u64,
            }));
        }
        let (leader, pid, heartbeat): (String, i32, i64) = sqlx::query_as(
            "SELECT leader, backend_pid, heartbeat_ms FROM coordinator_lease WHERE id = 1",
        )
        .fetch_one(&mut *c)
        .await?;
        role.send_if_modified(|r| {
            let next = Role::Standby {
                leader: leader.clone(),
            };
            let changed = *r != next;
            *r = next;
            changed
        });
        let silent = now_ms() - heartbeat;
        if pid > 0 && heartbeat > 0 && silent > self.stale_after.as_millis() as i64 {
            tracing::warn!(
                leader = %leader,
                silent_ms = silent,
                "the leader has not renewed its lease; ending its lock session so this replica can take over"
            );
            let _: Option<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_optional(&mut *c)
                .await?;
        }
        Ok(None)
    }
}

/// A connection of its own for the lock (never in a pool: the lock is the connection's).
async fn lock_connection(url: &str) -> Result<PgConnection> {
    let opts = super::connect_options(url)?.application_name("dispatch-coordinator-lease");
    let mut c = PgConnection::connect_with(&opts).await?;
    // The schema (and its lease row) exists before anyone campaigns.
    let mut tx = c.begin().await?;
    super::migrate_in(&mut tx).await?;
    tx.commit().await?;
    Ok(c)
}

impl Lease {
    /// Renews the lease every `every` until it is lost; returns why. Dropping the future (or
    /// the lease) ends the lock connection, which releases the lock at once.
    pub async fn keep(&mut self, every: Duration) -> String {
        loop {
            tokio::time::sleep(every).await;
            let renewed = sqlx::query(
                "UPDATE coordinator_lease SET heartbeat_ms = $1 WHERE id = 1 AND epoch = $2",
            )
            .bind(now_ms())
            .bind(self.epoch as i64)
            .execute(&mut self.conn)
            .await;
            match renewed {
                Ok(r) if r.rows_affected() == 1 => {}
                Ok(_) => return "another replica took the lease".into(),
                Err(e) => {
                    return format!("the store connection that holds the lease failed: {e}");
                }
            }
        }
    }

    /// Gives the lease up (a graceful stop): a standby takes over at its next poll.
    pub async fn release(mut self) -> Result<()> {
        let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut self.conn)
            .await?;
        self.conn.close().await.map_err(CoordinatorError::from)
    }
}
