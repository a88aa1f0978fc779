//! Cancel, retry and clean a task, and end a queued one whose dependency failed.

use super::must_own;
use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, ChangeKind, NodeCommand, Principal, TaskRecord, node_allowed};
use crate::store::{TaskUpdate, Transition};
use crate::{Coordinator, now_ms};
use dispatch_core::limits;
use dispatch_core::plan::{ItemStatus, Plan};
use dispatch_core::{TaskState, prompt, task_id};

/// How long `dispatch clean` waits for the node to confirm.
const CLEAN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Coordinator {
    /// Cancels a task: a queued one at once; one on a node by telling the node to kill the
    /// worker's process group (its slot frees when the node reports the exit).
    pub async fn cancel(&self, id: &str, who: &Principal) -> Result<TaskRecord> {
        task_id::validate(id)?;
        let now = now_ms();
        let decide = |t: &TaskRecord| {
            must_own(who, t)?;
            if t.state.is_terminal() {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` already ended ({}); there is nothing to cancel",
                    t.state
                )));
            }
            let queued = t.state == TaskState::Queued;
            Ok(Transition {
                set: TaskUpdate {
                    state: Some(TaskState::Cancelled),
                    reason: Some(if queued {
                        "cancelled before it started".into()
                    } else {
                        format!(
                            "cancelled; the worker on node `{}` is being stopped",
                            t.node
                        )
                    }),
                    ended_ms: Some(now),
                    ..Default::default()
                },
                commands: if queued {
                    Vec::new()
                } else {
                    vec![(
                        t.node.clone(),
                        NodeCommand::Cancel {
                            task_id: id.to_string(),
                            attempt: t.attempt,
                        },
                    )]
                },
                kind: Some(ChangeKind::State),
            })
        };
        let audit = AuditEntry::new(who, "cancel", id, "");
        let done = self
            .store
            .transition(id, now, Some(&audit), &decide)
            .await?;
        let t = self.finish(done);
        tracing::info!(task = id, node = %t.node, by = %who.name(), "cancelled");
        Ok(t)
    }

    /// Ends a queued task that will never run (its dependency failed or is gone). Nothing when
    /// it is no longer queued.
    pub(crate) async fn fail_queued(&self, id: &str, reason: String) -> Result<()> {
        let now = now_ms();
        let decide = |t: &TaskRecord| {
            Ok(if t.state == TaskState::Queued {
                Transition {
                    set: TaskUpdate {
                        state: Some(TaskState::Failed),
                        reason: Some(reason.clone()),
                        ended_ms: Some(now),
                        ..Default::default()
                    },
                    commands: Vec::new(),
                    kind: Some(ChangeKind::State),
                }
            } else {
                Transition::default()
            })
        };
        let done = self.store.transition(id, now, None, &decide).await?;
        let t = self.finish(done);
        tracing::info!(task = id, state = %t.state, reason = %t.reason, "task ended");
        Ok(())
    }

    /// Runs an ended task again from its unchecked items, with the same plan, optionally on
    /// another backend, model or node.
    pub async fn retry(
        &self,
        id: &str,
        backend: &str,
        model: &str,
        remote: &str,
        who: &Principal,
    ) -> Result<TaskRecord> {
        let seen = self.task(id).await?;
        must_own(who, &seen)?;
        let retryable = |t: &TaskRecord| match t.state {
            TaskState::Failed | TaskState::Lost | TaskState::Cancelled | TaskState::Blocked => {
                Ok(())
            }
            // Waiting for a usage limit's reset: a retry runs it now instead (on another
            // backend or node, say), as a new worker run.
            TaskState::Queued if t.limit_until_ms > 0 && t.reset_resumes > 0 => Ok(()),
            TaskState::Completed => Err(CoordinatorError::FailedPrecondition(format!(
                "task `{id}` completed; there is nothing to retry (dispatch a new task instead)"
            ))),
            s => Err(CoordinatorError::FailedPrecondition(format!(
                "task `{id}` is {s}; only a failed, lost, cancelled or blocked task, or one waiting for a usage limit's reset, can be retried"
            ))),
        };
        retryable(&seen)?;
        if !model.is_empty() {
            limits::check_name("model", model)?;
        }
        // A retry starts work as a submit does: it takes from the same rate, counts toward the
        // same active-task limit (in its transaction, below), and goes only where the
        // retrier's token may send work.
        if !remote.is_empty() {
            limits::check_name("--remote node name", remote)?;
        }
        self.take_submit(who)?;
        // Where it would run: checked against the nodes before the write (advice; the
        // scheduler routes it in any case).
        let choose = |t: &TaskRecord| {
            let backend = if backend.is_empty() {
                t.backend.clone()
            } else {
                backend.to_string()
            };
            let model = if !model.is_empty() {
                model.to_string()
            } else if backend != t.backend {
                // The old model belonged to the old backend.
                String::new()
            } else {
                t.model.clone()
            };
            let remote = if remote.is_empty() {
                t.remote.clone()
            } else {
                remote.to_string()
            };
            (backend, model, remote)
        };
        let (b, m, r) = choose(&seen);
        crate::domain::submit::may_run_on(who, &r)?;
        if !r.is_empty() && !node_allowed(&seen.allowed_nodes, &r) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "task `{id}` may run only on {} (its submitter's token allows no other node); node `{r}` is not among them",
                seen.allowed_nodes.join(", ")
            )));
        }
        self.check_placement(&TaskRecord {
            remote: r,
            backend: b,
            model: m,
            pool: seen.pool.clone(),
            allowed_nodes: seen.allowed_nodes.clone(),
            ..Default::default()
        })
        .await?;
        let decide = |t: &TaskRecord| {
            must_own(who, t)?;
            retryable(t)?;
            let (backend, model, remote) = choose(t);
            let mut plan = Plan::parse(&t.plan_md);
            for i in 0..plan.items().len() {
                if matches!(
                    plan.items()[i].status,
                    ItemStatus::Error | ItemStatus::Blocked
                ) {
                    plan.set_status(i, ItemStatus::Pending);
                }
            }
            let attempt = t.attempt.max(1) + 1;
            Ok(Transition {
                set: TaskUpdate {
                    state: Some(TaskState::Queued),
                    // A task waiting for a reset is still active: its plan is the event
                    // path's to write, and it stays as its last run left it.
                    plan_md: (t.state != TaskState::Queued).then(|| plan.render()),
                    worker_prompt: Some(prompt::worker_prompt(
                        &t.id,
                        &prompt::retry_context(&t.prompt, !t.signer.is_empty()),
                        None,
                    )),
                    model: Some(model),
                    backend: Some(backend),
                    remote: Some(remote),
                    // The node is kept until the scheduler assigns the new run: events of the
                    // old run that still arrive from it are kept as history, in order.
                    attempt: Some(attempt),
                    reason: Some(format!("retry (worker run {attempt})")),
                    exit_code: Some(None),
                    started_ms: Some(0),
                    ended_ms: Some(0),
                    ..Default::default()
                },
                commands: Vec::new(),
                kind: Some(ChangeKind::State),
            })
        };
        let audit = AuditEntry::new(
            who,
            "retry",
            id,
            format!("backend={backend} model={model} remote={remote}"),
        );
        let done = self
            .store
            .restart(id, now_ms(), Some(&audit), self.active_quota(who), &decide)
            .await?;
        let t = self.finish(done);
        tracing::info!(task = id, attempt = t.attempt, by = %who.name(), "retrying");
        self.scheduler.pass().await;
        self.task(id).await
    }

    /// Removes an ended worktree task's worktree on its node (the branch, with the work, stays)
    /// and waits up to 30 s for the node to confirm.
    pub async fn clean(&self, id: &str, who: &Principal) -> Result<TaskRecord> {
        task_id::validate(id)?;
        let check = |t: &TaskRecord| {
            must_own(who, t)?;
            if !t.worktree {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` did not run in a worktree; there is nothing to clean"
                )));
            }
            if !t.state.is_terminal() {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` is {}; cancel it first or wait until it ends (its worktree is kept for review until then)",
                    t.state
                )));
            }
            if t.cleaned {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "the worktree of `{id}` was already removed (branch `{}` is kept)",
                    t.branch
                )));
            }
            if t.node.is_empty() || t.branch.is_empty() {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` never started, so it has no worktree"
                )));
            }
            Ok(())
        };
        let seen = self.task(id).await?;
        check(&seen)?;
        if !self.registry.is_connected(&seen.node) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "node `{}`, which has the worktree of `{id}`, is not connected; try again when it is",
                seen.node
            )));
        }
        let ask = |t: &TaskRecord| {
            check(t)?;
            Ok(Transition {
                commands: vec![(
                    t.node.clone(),
                    NodeCommand::RemoveWorktree {
                        task_id: id.to_string(),
                        path: t.workdir.clone(),
                    },
                )],
                ..Default::default()
            })
        };
        let audit = AuditEntry::new(who, "clean", id, "");
        let done = self
            .store
            .transition(id, now_ms(), Some(&audit), &ask)
            .await?;
        let cmd = done.command_ids[0];
        let ack = self.await_ack(cmd);
        let node = self.finish(done).node;
        match tokio::time::timeout(CLEAN_WAIT, ack).await {
            Ok(Ok(error)) if error.is_empty() => {}
            Ok(Ok(error)) => return Err(CoordinatorError::FailedPrecondition(error)),
            _ => {
                self.forget_ack(cmd);
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "node `{node}` did not confirm within 30 s; it removes the worktree of `{id}` when it gets the command"
                )));
            }
        }
        let mark = |t: &TaskRecord| {
            Ok(if t.cleaned {
                Transition::default()
            } else {
                Transition {
                    set: TaskUpdate {
                        cleaned: Some(true),
                        ..Default::default()
                    },
                    commands: Vec::new(),
                    kind: Some(ChangeKind::State),
                }
            })
        };
        let done = self.store.transition(id, now_ms(), None, &mark).await?;
        tracing::info!(task = id, node = %node, "worktree removed");
        Ok(self.finish(done))
    }
}
