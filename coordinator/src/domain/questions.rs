//! Questions and answers, notes to running workers, and the legacy `[?]` fallback.

use super::must_own;
use crate::error::{CoordinatorError, Result};
use crate::model::{
    AuditEntry, ChangeKind, NodeCommand, OpenQuestion, Principal, QuestionRecord, TaskRecord,
};
use crate::store::{Answered, TaskUpdate, Transition};
use crate::{Coordinator, now_ms};
use dispatch_core::limits::{self, check_len};
use dispatch_core::plan::{ItemStatus, Plan};
use dispatch_core::{TaskState, prompt, task_id};

/// How long `Answer` waits for the node to confirm `NNN.answer` before it returns anyway.
const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which question an answer is for: `seq`, or the oldest unanswered one when 0.
fn pick<'a>(id: &str, seq: u32, questions: &'a [QuestionRecord]) -> Result<&'a QuestionRecord> {
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
    Ok(q)
}

/// The seed's legacy fallback: a new worker on the same node (where plan.md and context.md
/// are) continues from the `[?]` item with the answer in its prompt.
fn resume(t: &TaskRecord, question: &str, answer: &str) -> Transition {
    let mut plan = Plan::parse(&t.plan_md);
    if let Some(i) = plan
        .items()
        .iter()
        .position(|i| i.status == ItemStatus::Blocked)
    {
        plan.set_status(i, ItemStatus::Pending);
    }
    let context = prompt::resume_context(&t.id, &t.prompt, question, answer, !t.signer.is_empty());
    Transition {
        set: TaskUpdate {
            state: Some(TaskState::Queued),
            plan_md: Some(plan.render()),
            worker_prompt: Some(prompt::worker_prompt(&t.id, &context, None)),
            remote: Some(t.node.clone()),
            attempt: Some(t.attempt.max(1) + 1),
            reason: Some(format!(
                "answered; a new worker continues on node `{}`",
                t.node
            )),
            ended_ms: Some(0),
            exit_code: Some(None),
            ..Default::default()
        },
        commands: Vec::new(),
        kind: Some(ChangeKind::State),
    }
}

impl Coordinator {
    /// Answers question `seq` of task `id` (the oldest unanswered one when `seq` is 0).
    ///
    /// The answer and the command that delivers it commit together. A waiting task gets it
    /// written to `NNN.answer` on its node (the call returns once the node confirms, or after
    /// 5 s; a node that is away gets it when it is back). A blocked task (its worker timed out
    /// and exited) is queued again on the same node with a new worker that is told the answer.
    /// A retry with the same `request_id` answers nothing twice.
    pub async fn answer(
        &self,
        id: &str,
        seq: u32,
        text: &str,
        request_id: &str,
        who: &Principal,
    ) -> Result<TaskRecord> {
        task_id::validate(id)?;
        check_len("answer", text, limits::MAX_MESSAGE_BYTES)?;
        check_len("request id", request_id, limits::MAX_REQUEST_ID_BYTES)?;
        let text = text.trim_end();
        if text.trim().is_empty() {
            return Err(CoordinatorError::Invalid("the answer is empty".into()));
        }
        let decide = |t: &TaskRecord, questions: &[QuestionRecord]| {
            must_own(who, t)?;
            if t.state.is_terminal() && t.state != TaskState::Blocked {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` already ended ({}); there is no worker to answer",
                    t.state
                )));
            }
            let q = pick(id, seq, questions)?;
            if let Some(call) = q.tool_call() {
                if let Some(ask) = call.budget {
                    let spent = self
                        .config
                        .budgets
                        .prices
                        .task_spend(t.usage.values(), &t.model);
                    return go_on(t, q, &call, ask, spent, text, who).map(|tr| (q.seq, tr));
                }
                return approve(t, q, &call, text, who).map(|tr| (q.seq, tr));
            }
            let tr = if t.state == TaskState::Blocked {
                resume(t, &q.text, text)
            } else {
                Transition {
                    commands: vec![(
                        t.node.clone(),
                        NodeCommand::Answer {
                            task_id: id.to_string(),
                            seq: q.seq,
                            text: text.to_string(),
                        },
                    )],
                    kind: Some(ChangeKind::Answer),
                    ..Default::default()
                }
            };
            Ok((q.seq, tr))
        };
        let request = (!request_id.is_empty()).then_some(request_id);
        let via_link = matches!(who, Principal::User { token, .. } if token.starts_with("link:"));
        let audit = AuditEntry::new(
            who,
            "answer",
            id,
            format!(
                "{}{}",
                if seq == 0 {
                    "the oldest open question".to_string()
                } else {
                    dispatch_core::policy::question_label(seq)
                },
                if via_link { " via a one-time link" } else { "" }
            ),
        );
        let (done, seq) = match self
            .store
            .answer(id, text, request, now_ms(), Some(&audit), &decide)
            .await?
        {
            Answered::Repeated(t) => {
                tracing::info!(
                    task = id,
                    request = request_id,
                    "answer retried; already stored"
                );
                return Ok(t);
            }
            Answered::Stored { done, seq } => (done, seq),
        };
        // Registered before the pump can send the command, so a fast ack is not missed.
        let delivered = done
            .command_ids
            .first()
            .map(|&cmd| (cmd, self.await_ack(cmd)));
        let blocked = done.task.state == TaskState::Queued;
        let node = done.task.node.clone();
        let t = self.finish(done);
        tracing::info!(task = id, seq, state = %t.state, "answered");
        if blocked {
            tracing::info!(task = id, attempt = t.attempt, node = %t.node, "blocked task resumes with its answer");
            self.scheduler.pass().await;
            return self.task(id).await;
        }
        if let Some((cmd, delivered)) = delivered {
            match tokio::time::timeout(DELIVERY_WAIT, delivered).await {
                Ok(Ok(e)) if !e.is_empty() => {
                    tracing::warn!(task = id, node = %node, error = %e, "the node could not write the answer")
                }
                Ok(Ok(_)) => {}
                _ => {
                    self.forget_ack(cmd);
                    tracing::info!(task = id, node = %node, "answer stored; the node writes it when it is back")
                }
            }
        }
        Ok(t)
    }

    /// Appends a dispatcher note to an active task's plan.md on its node (stored, and sent
    /// when the node is there).
    pub async fn add_note(&self, id: &str, text: &str, who: &Principal) -> Result<TaskRecord> {
        task_id::validate(id)?;
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
        let decide = |t: &TaskRecord| {
            must_own(who, t)?;
            if !t.state.holds_slot() {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "task `{id}` is {}; notes reach only a worker that runs (assigned, running, waiting or unreachable)",
                    t.state
                )));
            }
            let mut notes = t.notes.clone();
            notes.push(crate::model::NoteRecord {
                text: text.to_string(),
                author: who.name(),
                at_ms: now_ms(),
            });
            // Every note reaches the worker; the task keeps the newest that fit.
            while notes.len() > 1
                && (notes.len() > crate::model::MAX_NOTES
                    || notes.iter().map(|n| n.text.len()).sum::<usize>()
                        > crate::model::MAX_NOTES_BYTES)
            {
                notes.remove(0);
            }
            Ok(Transition {
                set: crate::store::TaskUpdate {
                    notes: Some(notes),
                    ..Default::default()
                },
                commands: vec![(
                    t.node.clone(),
                    NodeCommand::Note {
                        task_id: id.to_string(),
                        text: text.to_string(),
                    },
                )],
                ..Default::default()
            })
        };
        let audit = AuditEntry::new(who, "note", id, "");
        let done = self
            .store
            .transition(id, now_ms(), Some(&audit), &decide)
            .await?;
        let t = self.finish(done);
        tracing::info!(task = id, node = %t.node, "note stored for the node");
        Ok(t)
    }

    /// Every unanswered question of every task that can still take an answer, oldest first.
    pub async fn pending_questions(&self) -> Result<Vec<OpenQuestion>> {
        self.store.open_questions().await
    }
}

/// The decision on the tool call `q` asked about, as the command for `t`'s node (its hook waits
/// for it).
fn decision(
    t: &TaskRecord,
    q: &QuestionRecord,
    call: &crate::model::ToolCallRecord,
    allow: bool,
    reason: String,
) -> (String, NodeCommand) {
    (
        t.node.clone(),
        NodeCommand::ToolDecision {
            task_id: t.id.clone(),
            attempt: call.attempt,
            call: call.call,
            allow,
            reason,
            seq: q.seq,
        },
    )
}

/// A person's answer to an approval question: the decision goes to the node as a command
/// (its hook waits for it); "always" also allows the same call for the rest of the task.
fn approve(
    t: &TaskRecord,
    q: &QuestionRecord,
    call: &crate::model::ToolCallRecord,
    text: &str,
    who: &Principal,
) -> Result<Transition> {
    let id = &t.id;
    let Some((allow, always)) = crate::model::approval_answer(text) else {
        return Err(CoordinatorError::Invalid(format!(
            "question {} of `{id}` asks to approve a tool call: answer yes, no or always",
            q.seq
        )));
    };
    if t.state.is_terminal() || call.attempt != t.attempt.max(1) {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "the worker run that asked to approve this call of `{id}` has ended; nothing waits for the answer (`dispatch retry {id}` runs the task again)"
        )));
    }
    let by = who.name();
    let reason = match (allow, always) {
        (true, true) => format!("approved by {by}, always for this task"),
        (true, false) => format!("approved by {by}"),
        (false, _) => format!(
            "{by} denied this tool call; do not try to reach the same end another way — if an item needs it, mark the item [!] and say why"
        ),
    };
    Ok(Transition {
        commands: vec![decision(t, q, call, allow, reason)],
        kind: Some(ChangeKind::Answer),
        ..Default::default()
    })
}

/// A person's answer to a budget question: yes raises the task's budget by its step from what
/// it has spent now and lets the waiting tool call run (or, when its worker was stopped,
/// resumes the task with a new worker); no refuses the call and blocks the task, stopping its
/// worker.
fn go_on(
    t: &TaskRecord,
    q: &QuestionRecord,
    call: &crate::model::ToolCallRecord,
    ask: crate::model::BudgetAsk,
    spent: dispatch_core::budget::Spend,
    text: &str,
    who: &Principal,
) -> Result<Transition> {
    let id = &t.id;
    let Some((yes, _)) = crate::model::approval_answer(text) else {
        return Err(CoordinatorError::Invalid(format!(
            "question {} of `{id}` asks whether to go on past its budget: answer yes or no{}",
            q.seq,
            if call.tool.is_empty() {
                ""
            } else {
                " (or always, for the tool call it also asks about)"
            }
        )));
    };
    let by = who.name();
    let budget = t.budget.unwrap_or(dispatch_core::budget::TaskBudget {
        limit: ask.limit,
        step: ask.step,
    });
    let raised = dispatch_core::budget::TaskBudget {
        limit: budget.limit.raised(&budget.step, &spent),
        step: budget.step,
    };
    let waiting =
        !call.tool.is_empty() && !t.state.is_terminal() && call.attempt == t.attempt.max(1);
    if t.state == TaskState::Blocked {
        if !yes {
            return Ok(Transition {
                set: TaskUpdate {
                    reason: Some(format!(
                        "budget: {by} chose not to go on past {} (it used {})",
                        budget.limit,
                        budget.limit.against(&spent)
                    )),
                    ..Default::default()
                },
                commands: Vec::new(),
                kind: Some(ChangeKind::Answer),
            });
        }
        // A new worker on the same node continues from the unchecked items.
        let context = prompt::retry_context(&t.prompt, !t.signer.is_empty());
        return Ok(Transition {
            set: TaskUpdate {
                state: Some(TaskState::Queued),
                worker_prompt: Some(prompt::worker_prompt(&t.id, &context, None)),
                remote: Some(t.node.clone()),
                attempt: Some(t.attempt.max(1) + 1),
                reason: Some(format!(
                    "{by} raised its budget to {}; a new worker continues on node `{}`",
                    raised.limit, t.node
                )),
                ended_ms: Some(0),
                exit_code: Some(None),
                budget: Some(Some(raised)),
                ..Default::default()
            },
            commands: Vec::new(),
            kind: Some(ChangeKind::State),
        });
    }
    if !waiting {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "the worker run of `{id}` that asked to go on past its budget has ended; nothing waits for the answer (`dispatch retry {id}` runs the task again)"
        )));
    }
    let decision = |allow: bool, reason: String| decision(t, q, call, allow, reason);
    if yes {
        return Ok(Transition {
            set: TaskUpdate {
                budget: Some(Some(raised)),
                ..Default::default()
            },
            commands: vec![decision(
                true,
                format!("{by} raised this task's budget to {}", raised.limit),
            )],
            kind: Some(ChangeKind::Answer),
        });
    }
    Ok(Transition {
        set: TaskUpdate {
            state: Some(TaskState::Blocked),
            reason: Some(format!(
                "budget: {by} chose not to go on past {} (it used {}); its worker was stopped",
                budget.limit,
                budget.limit.against(&spent)
            )),
            ended_ms: Some(now_ms()),
            ..Default::default()
        },
        commands: vec![
            decision(
                false,
                format!("{by} stopped this task at its budget; end now without another tool call"),
            ),
            (
                t.node.clone(),
                NodeCommand::Cancel {
                    task_id: id.clone(),
                    attempt: t.attempt,
                },
            ),
        ],
        kind: Some(ChangeKind::State),
    })
}
