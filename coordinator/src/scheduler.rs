//! The scheduler: one task that assigns queued tasks to nodes whenever something changes
//! (a submit, a node connecting, a slot freeing). Kicks coalesce; there is no polling loop.

use crate::error::Result;
use crate::model::{Assignment, NodeCommand, Repo, TaskRecord};
use crate::router::route;
use crate::store::AssignWrite;
use crate::{Coordinator, now_ms};
use dispatch_core::TaskState;
use std::sync::Weak;
use tokio::sync::{mpsc, oneshot};

/// Wakes the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Option<oneshot::Sender<()>>>,
    /// When the armed timed kick fires (ms since the epoch; 0: none).
    armed: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SchedulerHandle {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Option<oneshot::Sender<()>>>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            SchedulerHandle {
                tx,
                armed: Default::default(),
            },
            rx,
        )
    }

    /// Asks for a scheduling pass soon (never blocks; kicks already queued cover this one).
    pub fn kick(&self) {
        let _ = self.tx.try_send(None);
    }

    /// Asks for a pass at `at_ms` (a task waiting for a usage reset): one timer, the earliest
    /// asked for, is armed at a time.
    pub fn kick_at(&self, at_ms: i64) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = now_ms();
        let armed = self.armed.load(SeqCst);
        if armed > now && armed <= at_ms {
            return;
        }
        self.armed.store(at_ms, SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            let wait = (at_ms - now_ms()).max(0) as u64 + 5;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            me.kick();
        });
    }

    /// Runs a scheduling pass and waits until it has finished.
    pub async fn pass(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Some(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

pub(crate) fn spawn(c: Weak<Coordinator>, mut rx: mpsc::Receiver<Option<oneshot::Sender<()>>>) {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut waiters: Vec<oneshot::Sender<()>> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                waiters.extend(more);
            }
            let Some(c) = c.upgrade() else { break };
            if let Err(e) = schedule(&c).await {
                tracing::error!(error = %e, "scheduling pass failed");
            }
            drop(c);
            for w in waiters {
                let _ = w.send(());
            }
        }
    });
}

async fn schedule(c: &Coordinator) -> Result<()> {
    let queued = c.store.queued_tasks().await?;
    if queued.is_empty() {
        return Ok(());
    }
    let mut slots = c.registry.slots();
    let now = now_ms();
    let mut next_reset: Option<i64> = None;
    for task in queued {
        // Waiting for a usage limit's reset: not before then (a kick is armed for it).
        if task.limit_until_ms > now {
            next_reset =
                Some(next_reset.map_or(task.limit_until_ms, |n| n.min(task.limit_until_ms)));
            continue;
        }
        if !task.after.is_empty() {
            match c.store.get_task(&task.after).await? {
                Some(dep) if dep.state == TaskState::Completed => {}
                Some(dep)
                    if matches!(
                        dep.state,
                        TaskState::Failed | TaskState::Cancelled | TaskState::Lost
                    ) =>
                {
                    let reason = format!(
                        "dependency `{}` ended {}{}",
                        dep.id,
                        dep.state,
                        if dep.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", dep.reason)
                        }
                    );
                    c.fail_queued(&task.id, reason).await?;
                    continue;
                }
                Some(_) => continue,
                None => {
                    let reason = format!("dependency `{}` does not exist", task.after);
                    c.fail_queued(&task.id, reason).await?;
                    continue;
                }
            }
        }
        let Some((i, backend)) = route(&task, &slots) else {
            continue;
        };
        let write = AssignWrite {
            task_id: task.id.clone(),
            node: slots[i].name.clone(),
            epoch: slots[i].epoch,
            backend: backend.clone(),
        };
        // The assignment joins the task's trace, and hands it on to the node.
        let span = tracing::info_span!("coordinator.assign", task_id = %task.id, node = %write.node, %backend);
        dispatch_telemetry::set_parent(&span, &task.trace);
        let trace = dispatch_telemetry::traceparent(&span);
        let command = |t: &TaskRecord| {
            NodeCommand::Assign(Box::new(Assignment {
                task_id: t.id.clone(),
                backend: t.backend.clone(),
                model: t.model.clone(),
                worker_prompt: t.worker_prompt.clone(),
                plan_markdown: t.plan_md.clone(),
                workdir: t.workdir.clone(),
                last_seq: t.last_seq,
                attempt: t.attempt.max(1),
                worktree: t.worktree,
                repo: (!t.repo.0.is_empty()).then(|| Repo {
                    url: t.repo.0.clone(),
                    branch: t.repo.1.clone(),
                    commit: t.repo.2.clone(),
                }),
                signed_spec: t.signed_spec.clone(),
                signature: t.signature.clone(),
                deliver: t.deliver.clone(),
                trace: trace.clone(),
                approvals: c.under_approvals(t),
                tool_hook: t.budget.is_some(),
            }))
        };
        // None: the task is no longer queued (cancelled), or the node's session ended.
        let Some(done) = c.store.assign(&write, now_ms(), &command).await? else {
            continue;
        };
        slots[i].running += 1;
        *slots[i].backend_running.entry(backend.clone()).or_insert(0) += 1;
        c.registry.reserve(&write.node, &task.id, &backend);
        c.metrics
            .assign_latency
            .observe((now_ms() - task.updated_ms).max(0) as f64 / 1000.0);
        tracing::info!(task = %task.id, node = %write.node, %backend, "assigned");
        c.finish(done);
    }
    if let Some(at) = next_reset {
        c.scheduler.kick_at(at);
    }
    Ok(())
}
