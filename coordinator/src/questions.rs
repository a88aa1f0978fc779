//! Questions and answers, notes to running workers, and the legacy `[?]` fallback.

use crate::error::{CoordinatorError, Result};
use crate::store::TaskRecord;
use crate::{Coordinator, now_ms};
use dispatch_core::limits::{self, check_len};
use dispatch_core::plan::{ItemStatus, Plan};
use dispatch_core::{TaskState, prompt};
use dispatch_proto::convert::state_to_proto;
use dispatch_proto::v1;

impl Coordinator {
    /// Answers question `seq` of task `id` (the oldest unanswered one when `seq` is 0).
    ///
    /// A waiting task gets the answer written to `NNN.answer` on its node (the command is
    /// stored first and resent until the node acks it). A blocked task (its worker timed out
    /// and exited) is queued again on the same node with a new worker that is told the answer
    /// and to continue from the blocked item.
    pub async fn answer(&self, id: &str, seq: u32, text: &str) -> Result<TaskRecord> {
        check_len("answer", text, limits::MAX_MESSAGE_BYTES)?;
        if text.trim().is_empty() {
            return Err(CoordinatorError::Invalid("the answer is empty".into()));
        }
        let mut t = self.task(id).await?;
        if t.state.is_terminal() && t.state != TaskState::Blocked {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "task `{id}` already ended ({}); there is no worker to answer",
                t.state
            )));
        }
        let questions = self.store.questions(id).await?;
        let q = if seq == 0 {
            questions
                .iter()
                .find(|q| q.answer.is_none())
                .ok_or_else(|| {
                    CoordinatorError::FailedPrecondition(format!(
                        "task `{id}` has no unanswered question"
                    ))
                })?
        } else {
            questions.iter().find(|q| q.seq == seq).ok_or_else(|| {
                let have: Vec<String> = questions.iter().map(|q| format!("{:03}", q.seq)).collect();
                CoordinatorError::NotFound(if have.is_empty() {
                    format!("task `{id}` has asked no question")
                } else {
                    format!(
                        "task `{id}` has no question {seq:03}; its questions: {}",
                        have.join(", ")
                    )
                })
            })?
        };
        if let Some(a) = &q.answer {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "question {:03} of `{id}` was already answered: \"{a}\"",
                q.seq
            )));
        }
        let now = now_ms();
        if !self
            .store
            .answer_question(id, q.seq, text.trim_end(), now)
            .await?
        {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "question {:03} of `{id}` was answered by someone else just now",
                q.seq
            )));
        }
        tracing::info!(task = id, seq = q.seq, state = %t.state, "answered");
        if t.state == TaskState::Blocked {
            self.resume_blocked(&mut t, &q.text, text).await?;
        } else {
            t.updated_ms = now;
            let node = t.node.clone();
            let (cmd_id, delivered) = self
                .command_node_acked(
                    &t,
                    v1::command::Kind::Answer(v1::DeliverAnswer {
                        task_id: id.into(),
                        seq: q.seq,
                        text: text.trim_end().into(),
                    }),
                )
                .await?;
            self.publish(&t, "answer", 0).await;
            // Return once NNN.answer is on the node (as the seed's dispatcher writes it before
            // it respawns its monitor). A node that is away gets it when it reconnects.
            match tokio::time::timeout(std::time::Duration::from_secs(5), delivered).await {
                Ok(Ok(e)) if !e.is_empty() => {
                    tracing::warn!(task = id, node = %node, error = %e, "the node could not write the answer")
                }
                Ok(Ok(_)) => {}
                _ => {
                    self.forget_ack(cmd_id);
                    tracing::info!(task = id, node = %node, "answer stored; the node writes it when it is back")
                }
            }
        }
        Ok(t)
    }

    /// The seed's legacy fallback: a new worker on the same node (where plan.md and
    /// context.md are) continues from the `[?]` item with the answer in its prompt.
    async fn resume_blocked(&self, t: &mut TaskRecord, question: &str, answer: &str) -> Result<()> {
        let mut plan = Plan::parse(&t.plan_md);
        if let Some(i) = plan
            .items()
            .iter()
            .position(|i| i.status == ItemStatus::Blocked)
        {
            plan.set_status(i, ItemStatus::Pending);
        }
        t.plan_md = plan.render();
        let context = prompt::resume_context(&t.id, &t.prompt, question, answer);
        t.worker_prompt = prompt::worker_prompt(&t.id, &context, None);
        t.state = TaskState::Queued;
        t.remote = t.node.clone();
        t.attempt = t.attempt.max(1) + 1;
        t.reason = format!("answered; a new worker continues on node `{}`", t.node);
        t.ended_ms = 0;
        t.exit_code = None;
        t.updated_ms = now_ms();
        self.store.update_task_and_worker_prompt(t).await?;
        tracing::info!(task = %t.id, attempt = t.attempt, node = %t.node, "blocked task resumes with its answer");
        self.publish(t, "state", 0).await;
        self.scheduler.pass().await;
        if let Some(fresh) = self.store.get_task(&t.id).await? {
            *t = fresh;
        }
        Ok(())
    }

    /// Appends a dispatcher note to a running task's plan.md on its node.
    pub async fn add_note(&self, id: &str, text: &str) -> Result<TaskRecord> {
        check_len("note", text, limits::MAX_MESSAGE_BYTES)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(CoordinatorError::Invalid("the note is empty".into()));
        }
        if text.contains('\n') {
            return Err(CoordinatorError::Invalid(
                "a note is one line; send several notes for several lines".into(),
            ));
        }
        let mut t = self.task(id).await?;
        if !t.state.holds_slot() {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "task `{id}` is {}; notes reach only a running worker (assigned, running or waiting)",
                t.state
            )));
        }
        t.updated_ms = now_ms();
        self.command_node(
            &t,
            v1::command::Kind::Note(v1::AppendNote {
                task_id: id.into(),
                text: text.into(),
            }),
        )
        .await?;
        tracing::info!(task = id, node = %t.node, "note sent");
        Ok(t)
    }

    /// Every unanswered question of every waiting or blocked task, oldest first.
    pub async fn pending_questions(&self) -> Result<Vec<v1::PendingQuestion>> {
        Ok(self
            .store
            .open_questions()
            .await?
            .into_iter()
            .map(|o| v1::PendingQuestion {
                task_id: o.question.task_id,
                node: o.node,
                seq: o.question.seq,
                text: o.question.text,
                asked_at_ms: o.question.asked_ms,
                title: o.title,
                state: state_to_proto(o.state) as i32,
            })
            .collect())
    }
}

impl Coordinator {
    /// Runs an ended task again from its unchecked items, with the same plan, optionally on
    /// another backend, model or node.
    pub async fn retry(
        &self,
        id: &str,
        backend: &str,
        model: &str,
        remote: &str,
    ) -> Result<TaskRecord> {
        let mut t = self.task(id).await?;
        match t.state {
            TaskState::Failed | TaskState::Lost | TaskState::Cancelled | TaskState::Blocked => {}
            TaskState::Completed => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` completed; there is nothing to retry (dispatch a new task instead)"
                )));
            }
            s => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` is {s}; only a failed, lost, cancelled or blocked task can be retried"
                )));
            }
        }
        if !model.is_empty() {
            limits::check_name("model", model)?;
        }
        let backend = if backend.is_empty() {
            t.backend.clone()
        } else {
            backend.to_string()
        };
        let remote = if remote.is_empty() {
            t.remote.clone()
        } else {
            remote.to_string()
        };
        let probe = TaskRecord {
            remote: remote.clone(),
            backend: backend.clone(),
            model: if !model.is_empty() {
                model.to_string()
            } else if backend != t.backend {
                String::new()
            } else {
                t.model.clone()
            },
            pool: t.pool.clone(),
            ..Default::default()
        };
        self.check_placement(&probe).await?;
        let mut plan = Plan::parse(&t.plan_md);
        for i in 0..plan.items().len() {
            if matches!(
                plan.items()[i].status,
                ItemStatus::Error | ItemStatus::Blocked
            ) {
                plan.set_status(i, ItemStatus::Pending);
            }
        }
        let previous = if t.reason.is_empty() {
            t.state.to_string()
        } else {
            format!("{}: {}", t.state, t.reason)
        };
        t.plan_md = plan.render();
        t.worker_prompt =
            prompt::worker_prompt(&t.id, &prompt::retry_context(&t.prompt, &previous), None);
        if !model.is_empty() {
            t.model = model.to_string();
        } else if backend != t.backend {
            // The old model belonged to the old backend.
            t.model = String::new();
        }
        t.backend = backend;
        t.remote = remote;
        t.node = String::new();
        t.state = TaskState::Queued;
        t.attempt = t.attempt.max(1) + 1;
        t.reason = format!("retry (worker run {})", t.attempt);
        t.exit_code = None;
        t.started_ms = 0;
        t.ended_ms = 0;
        t.updated_ms = now_ms();
        self.store.update_task_and_worker_prompt(&t).await?;
        tracing::info!(task = id, attempt = t.attempt, "retrying");
        self.publish(&t, "state", 0).await;
        self.scheduler.pass().await;
        Ok(self.store.get_task(id).await?.unwrap_or(t))
    }
}

impl Coordinator {
    /// Removes an ended worktree task's worktree on its node (the branch, with the work, stays)
    /// and waits up to 30 s for the node to confirm.
    pub async fn clean(&self, id: &str) -> Result<TaskRecord> {
        let mut t = self.task(id).await?;
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
        if !self.registry.is_connected(&t.node) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "node `{}`, which has the worktree of `{id}`, is not connected; try again when it is",
                t.node
            )));
        }
        let node = t.node.clone();
        let (cmd_id, ack) = self
            .command_node_acked(
                &t,
                v1::command::Kind::RemoveWorktree(v1::RemoveWorktree {
                    task_id: id.into(),
                    path: t.workdir.clone(),
                }),
            )
            .await?;
        match tokio::time::timeout(std::time::Duration::from_secs(30), ack).await {
            Ok(Ok(error)) if error.is_empty() => {}
            Ok(Ok(error)) => return Err(CoordinatorError::FailedPrecondition(error)),
            _ => {
                self.forget_ack(cmd_id);
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "node `{node}` did not confirm within 30 s; it removes the worktree of `{id}` when it gets the command"
                )));
            }
        }
        t.cleaned = true;
        t.updated_ms = now_ms();
        self.store.update_task(&t).await?;
        tracing::info!(task = id, node = %node, "worktree removed");
        self.publish(&t, "state", 0).await;
        Ok(t)
    }
}
