//! The scheduler: one task that assigns queued tasks to nodes whenever something changes
//! (a submit, a node connecting, a slot freeing). Kicks coalesce; there is no polling loop.

use crate::Coordinator;
use crate::error::Result;
use crate::router::route;
use dispatch_core::TaskState;
use dispatch_proto::v1;
use std::sync::Weak;
use tokio::sync::{mpsc, oneshot};

/// Wakes the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Option<oneshot::Sender<()>>>,
}

impl SchedulerHandle {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Option<oneshot::Sender<()>>>) {
        let (tx, rx) = mpsc::channel(1024);
        (SchedulerHandle { tx }, rx)
    }

    /// Asks for a scheduling pass soon (never blocks; kicks already queued cover this one).
    pub fn kick(&self) {
        let _ = self.tx.try_send(None);
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
    for mut task in queued {
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
                    c.finish_without_node(&mut task, TaskState::Failed, reason)
                        .await?;
                    continue;
                }
                Some(_) => continue,
                None => {
                    let reason = format!("dependency `{}` does not exist", task.after);
                    c.finish_without_node(&mut task, TaskState::Failed, reason)
                        .await?;
                    continue;
                }
            }
        }
        let Some((i, backend)) = route(&task, &slots) else {
            continue;
        };
        let node = slots[i].name.clone();
        task.state = TaskState::Assigned;
        task.node = node.clone();
        task.backend = backend.clone();
        task.updated_ms = crate::now_ms();
        let assign = v1::Assign {
            task_id: task.id.clone(),
            backend,
            model: task.model.clone(),
            worker_prompt: task.worker_prompt.clone(),
            plan_markdown: task.plan_md.clone(),
            workdir: task.workdir.clone(),
            last_seq: task.last_seq,
            attempt: task.attempt.max(1),
            worktree: task.worktree,
            repo: (!task.repo.0.is_empty()).then(|| v1::Repo {
                url: task.repo.0.clone(),
                branch: task.repo.1.clone(),
                commit: task.repo.2.clone(),
            }),
        };
        let mut cmd = v1::Command {
            id: 0,
            kind: Some(v1::command::Kind::Assign(assign)),
        };
        let body = prost::Message::encode_to_vec(&cmd);
        cmd.id = c.store.assign(&task, &body).await?;
        slots[i].running += 1;
        *slots[i]
            .backend_running
            .entry(task.backend.clone())
            .or_insert(0) += 1;
        c.registry.reserve(&node, &task.id, &task.backend);
        c.send_command(&node, cmd);
        tracing::info!(task = %task.id, node = %node, backend = %task.backend, "assigned");
        c.publish(&task, "state", 0).await;
    }
    Ok(())
}
