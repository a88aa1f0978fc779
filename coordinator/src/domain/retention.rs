//! History retention: the event history of tasks that ended longer ago than the retention is
//! compacted (their plan, questions and stored logs stay), with acked commands and remembered
//! request ids of that age. Runs at start and then hourly.

use crate::{Coordinator, now_ms};
use std::sync::Weak;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(3600);

/// Starts the hourly compaction (it stops with the coordinator).
pub(crate) fn spawn(c: Weak<Coordinator>) {
    tokio::spawn(async move {
        loop {
            let Some(coordinator) = c.upgrade() else {
                return;
            };
            coordinator.compact_history().await;
            let stopping = coordinator.stopping();
            drop(coordinator);
            tokio::select! {
                _ = stopping => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}

impl Coordinator {
    /// Compacts the history older than the retention now.
    pub async fn compact_history(&self) {
        let retention = self.config.history_retention;
        if retention.is_zero() {
            return;
        }
        let before = now_ms() - retention.as_millis() as i64;
        match self.store.compact(before).await {
            Ok(done) if done != Default::default() => {
                tracing::info!(
                    events = done.events,
                    commands = done.commands,
                    requests = done.requests,
                    "compacted history older than {}",
                    dispatch_core::duration::format(retention)
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compact the history"),
        }
    }
}
