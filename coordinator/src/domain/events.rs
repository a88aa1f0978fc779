//! What an agent's events do to a task: the rules the store runs inside the event path's
//! transaction, and the checks an event passes before it gets there.

use crate::model::{ChangeKind, EventKind, IncomingEvent, TaskEvent, TaskRecord};
use crate::store::{Applied, EventBatch, EventFacts, EventRules, SessionKey};
use crate::{Coordinator, now_ms};
use dispatch_core::limits::{self, check_len};
use dispatch_core::plan::Plan;
use dispatch_core::{TaskState, task};
use std::collections::HashMap;

/// The event rules, with the advice a start failure gets (where else the task could run).
pub(crate) struct Rules {
    /// Per task that failed to start: which other nodes offer which backends.
    advice: HashMap<String, String>,
    /// The tool policy (its scopes; a task's own is picked per call).
    policy: std::sync::Arc<dispatch_core::policy::PolicyConfig>,
    /// Budgets (their prices).
    budgets: std::sync::Arc<dispatch_core::budget::BudgetConfig>,
    /// Per task that failed to start and has a fallback: the first target a connected node
    /// can run (backend, model, node to avoid), or why there is none.
    fallbacks: HashMap<String, Result<(String, String, String), String>>,
}

impl EventRules for Rules {
    fn prices(&self) -> &dispatch_core::budget::Prices {
        &self.budgets.prices
    }

    fn decide_tool(
        &self,
        t: &TaskRecord,
        call: &dispatch_core::policy::ToolCall<'_>,
        granted: &[String],
    ) -> dispatch_core::policy::Verdict {
        match self.policy.for_task(&t.owner, &t.token, &t.pool) {
            Some(p) => p.decide_with(call, granted),
            // The policy that put this run under approvals was taken away since: the task
            // runs as one without a policy does.
            None => dispatch_core::policy::Verdict {
                decision: dispatch_core::policy::Decision::Allow,
                rule: Some("no tool policy applies to this task any more".into()),
            },
        }
    }

    fn apply(&self, t: &mut TaskRecord, ev: &TaskEvent, f: &EventFacts<'_>) -> Applied {
        let node = f.node;
        let at = ev.at_ms;
        t.updated_ms = now_ms();
        let kind = match &ev.kind {
            EventKind::Started { branch, .. } => {
                if t.state == TaskState::Assigned {
                    t.state = TaskState::Running;
                }
                // A new worker run: what an earlier run's CLI said no longer holds.
                t.trouble.clear();
                t.limit_until_ms = 0;
                if !branch.is_empty() {
                    t.branch = branch.clone();
                    t.cleaned = false;
                }
                t.started_ms = at;
                ChangeKind::State
            }
            EventKind::Plan { markdown } => {
                t.plan_md = markdown.clone();
                ChangeKind::Plan
            }
            // Stored by the store itself; nothing about the task changes. A rejected event
            // never reaches the rules (the store keeps it as history only).
            EventKind::Log { .. } | EventKind::Rejected { .. } | EventKind::ToolCall { .. } => {
                return Applied::default();
            }
            EventKind::Exited(x) => {
                if !x.markdown.is_empty() {
                    t.plan_md = x.markdown.clone();
                }
                t.exit_code = x.exit_code;
                if t.state == TaskState::Cancelled {
                    t.reason = format!("cancelled; the worker on node `{node}` was stopped");
                } else {
                    let (state, reason) = if x.drained {
                        (
                            TaskState::Lost,
                            format!(
                                "node `{node}` drained: its worker was stopped before it finished; `dispatch retry {}` runs it again",
                                t.id
                            ),
                        )
                    } else if !x.fault.is_empty() {
                        (TaskState::Failed, x.fault.clone())
                    } else if x.cancelled {
                        (TaskState::Cancelled, "cancelled".to_string())
                    } else {
                        task::outcome(
                            &Plan::parse(&t.plan_md),
                            x.done_marker,
                            x.exit_code,
                            x.signal,
                        )
                    };
                    let mut reason = if x.detail.is_empty() || state == TaskState::Completed {
                        reason
                    } else {
                        format!("{reason} ({})", x.detail)
                    };
                    // A run that failed with its CLI's own error: that error first, and it
                    // counts for the fallback as much as a start failure does.
                    if state == TaskState::Failed
                        && let Some(f) = &x.cli
                    {
                        let backend = if t.backend.is_empty() {
                            "its CLI"
                        } else {
                            &t.backend
                        };
                        reason = format!(
                            "`{backend}` on node `{node}` stopped: \"{}\" ({}); {reason}",
                            f.message,
                            f.note()
                        );
                        if let Some(done) =
                            self.fall_back_if_asked(t, node, &exit_said(x, f), "could not continue")
                        {
                            return done;
                        }
                        if let Some(done) = wait_for_reset(t, node, f, at) {
                            return done;
                        }
                        record_trouble(t, Some(f));
                    }
                    t.reason = reason;
                    t.state = state;
                }
                if t.ended_ms == 0 {
                    t.ended_ms = at;
                }
                return Applied {
                    kind: Some(ChangeKind::State),
                    freed_slot: true,
                };
            }
            EventKind::StartFailed { error, cli } => {
                if t.state != TaskState::Cancelled {
                    let text = match cli {
                        Some(f) => said(f, error),
                        None => error.clone(),
                    };
                    if let Some(done) = self.fall_back_if_asked(t, node, &text, "could not start") {
                        return done;
                    }
                    if let Some(f) = cli
                        && let Some(done) = wait_for_reset(t, node, f, at)
                    {
                        return done;
                    }
                    t.state = TaskState::Failed;
                    let advice = self.advice.get(&t.id).map(String::as_str).unwrap_or("");
                    t.reason =
                        format!("the worker could not start on node `{node}`: {error}. {advice}");
                    record_trouble(t, cli.as_ref());
                }
                t.ended_ms = at;
                return Applied {
                    kind: Some(ChangeKind::State),
                    freed_slot: true,
                };
            }
            EventKind::Question { .. } => {
                // A question number is asked once: a re-report (a resumed worker, a restarted
                // agent) changes nothing.
                if !f.new_question {
                    return Applied::default();
                }
                if matches!(t.state, TaskState::Running | TaskState::Assigned) {
                    t.state = TaskState::Waiting;
                }
                ChangeKind::Question
            }
            EventKind::AnswerDelivered { .. } => {
                if t.state == TaskState::Waiting && f.open_questions == 0 {
                    t.state = TaskState::Running;
                }
                ChangeKind::Answer
            }
            // The diff and the bundle's bytes are stored by the store (their own tables).
            EventKind::Changes(c) => {
                // A task's work comes home on its own branch only: a node that names another
                // (another task's, a user's) is refused, and nothing of it can be fetched.
                let own = format!("dispatch/{}", t.id);
                if !c.branch.is_empty() && c.branch != own {
                    t.changes = Some(crate::model::ChangesMeta {
                        branch: own.clone(),
                        error: format!(
                            "node `{node}` reported this task's changes on branch `{}`, not `{own}`; they were refused",
                            dispatch_core::text::printable_line(&c.branch)
                        ),
                        ..Default::default()
                    });
                    return Applied {
                        kind: Some(ChangeKind::Changes),
                        freed_slot: false,
                    };
                }
                t.changes = Some(c.as_ref().clone());
                // Done now unless a bundle is still to come.
                if c.bundle_bytes > 0 {
                    return Applied::default();
                }
                ChangeKind::Changes
            }
            EventKind::BundleChunk { offset, data } => {
                let Some(c) = &mut t.changes else {
                    return Applied::default();
                };
                let end = offset.saturating_add(data.len() as u64);
                if *offset == c.bundle_stored && end <= c.bundle_bytes {
                    c.bundle_stored = end;
                }
                if c.bundle_stored < c.bundle_bytes {
                    return Applied::default();
                }
                ChangeKind::Changes
            }
            // The lines are the event's stored body; the task keeps the run's totals and the
            // last line.
            EventKind::Activity { lines, usage } => {
                if let Some(u) = usage {
                    t.usage.insert(ev.attempt.max(1), u.clone());
                }
                if let Some(l) = lines.last() {
                    t.activity = l.clone();
                }
                ChangeKind::Activity
            }
            // Its text is stored by the store (its own table); the task records its size.
            EventKind::Output {
                bytes, truncated, ..
            } => {
                t.output_bytes = *bytes;
                t.output_truncated = *truncated;
                ChangeKind::Output
            }
        };
        Applied {
            kind: Some(kind),
            freed_slot: false,
        }
    }
}

impl Rules {
    /// Falls `t` back when its fallback is unused and `text` (what its CLI said) matches one of
    /// its patterns and a target was found; notes why not when none was. The change to return
    /// when it fell back.
    fn fall_back_if_asked(
        &self,
        t: &mut TaskRecord,
        node: &str,
        text: &str,
        why: &str,
    ) -> Option<Applied> {
        let pattern = t
            .fallback
            .as_ref()
            .filter(|f| !f.used)
            .and_then(|f| f.matches(text))
            .map(str::to_string)?;
        match self.fallbacks.get(&t.id) {
            Some(Ok((backend, model, avoid))) => {
                fall_back(t, node, why, &pattern, (backend, model, avoid));
                return Some(Applied {
                    kind: Some(ChangeKind::State),
                    freed_slot: true,
                });
            }
            Some(Err(why)) => {
                if let Some(f) = &mut t.fallback {
                    f.used = true;
                    f.note =
                        format!("did not fall back: the failure matched \"{pattern}\", but {why}");
                }
            }
            None => {}
        }
        None
    }
}

/// What a fallback's patterns are matched against: the kind of trouble and the text.
fn said(f: &dispatch_core::signals::Failure, text: &str) -> String {
    format!("{}: {} {text}", f.trouble.phrase(), f.message)
}

/// What a fallback's patterns are matched against for a run that ended with its CLI's error.
fn exit_said(x: &crate::model::WorkerExit, f: &dispatch_core::signals::Failure) -> String {
    match x.exit_code {
        Some(c) => said(f, &format!("status {c}")),
        None => said(f, ""),
    }
}

/// Keeps what kind of trouble ended the task, and when a usage limit resets.
fn record_trouble(t: &mut TaskRecord, f: Option<&dispatch_core::signals::Failure>) {
    let Some(f) = f else {
        return;
    };
    t.trouble = f.trouble.as_str().to_string();
    t.limit_until_ms = match f.trouble {
        dispatch_core::signals::Trouble::UsageLimit => f.resets_at_ms.unwrap_or(0),
        _ => 0,
    };
}

/// A usage limit that names its reset, on a task with no fallback taken: the task waits for
/// the reset and then resumes by itself on the same node (a new worker run continuing the
/// plan), once. It is queued, pinned to the node, with the reset as its not-before; `cancel`
/// ends the wait. None when this does not apply (no reset known, or it resumed once already).
fn wait_for_reset(
    t: &mut TaskRecord,
    node: &str,
    f: &dispatch_core::signals::Failure,
    at: i64,
) -> Option<Applied> {
    // One way back by itself per task: not after a fallback either.
    if f.trouble != dispatch_core::signals::Trouble::UsageLimit
        || t.reset_resumes > 0
        || t.fallback.as_ref().is_some_and(|f| f.used)
    {
        return None;
    }
    let resets = f.resets_at_ms.filter(|&r| r > 0)?;
    let backend = if t.backend.is_empty() {
        "its CLI"
    } else {
        &t.backend
    };
    let when = dispatch_core::signals::utc_text(resets);
    t.reset_resumes += 1;
    t.attempt = t.attempt.max(1) + 1;
    t.state = TaskState::Queued;
    t.remote = node.to_string();
    t.trouble = f.trouble.as_str().to_string();
    t.limit_until_ms = resets;
    t.exit_code = None;
    t.started_ms = 0;
    t.ended_ms = 0;
    t.updated_ms = at.max(t.updated_ms);
    t.reason = format!(
        "`{backend}` on node `{node}` hit its usage limit (\"{}\"); waiting for the reset at {when}, then it resumes here by itself as worker run {} (once; `dispatch cancel {}` stops it)",
        f.message, t.attempt, t.id
    );
    Some(Applied {
        kind: Some(ChangeKind::State),
        freed_slot: true,
    })
}

/// Sends a task that could not start to its fallback target: queued again as a new worker run
/// (its plan untouched: no worker ran), on `backend`, away from `avoid`.
fn fall_back(
    t: &mut TaskRecord,
    node: &str,
    why: &str,
    pattern: &str,
    (backend, model, avoid): (&str, &str, &str),
) {
    let from = if t.backend.is_empty() {
        "its backend".to_string()
    } else {
        format!("`{}`", t.backend)
    };
    let to = match (backend == t.backend, model.is_empty()) {
        (true, _) => format!("`{backend}` on another node"),
        (false, true) => format!("`{backend}`"),
        (false, false) => format!("`{backend}` ({model})"),
    };
    t.attempt = t.attempt.max(1) + 1;
    let note = format!(
        "{from} on node `{node}` {why} (it said \"{pattern}\"); retried once on {to} as worker run {}",
        t.attempt
    );
    t.state = TaskState::Queued;
    t.backend = backend.to_string();
    t.model = model.to_string();
    t.reason = note.clone();
    t.exit_code = None;
    t.started_ms = 0;
    t.ended_ms = 0;
    t.trouble.clear();
    t.limit_until_ms = 0;
    if let Some(f) = &mut t.fallback {
        f.used = true;
        f.avoid_node = avoid.to_string();
        f.note = note;
    }
}

/// Why an event breaks a limit, if it does. Such an event is kept as history only (the node's
/// sequence stays gap free and it is not resent forever), and its body is not stored.
pub fn over_limit(kind: &EventKind) -> Option<String> {
    let r = match kind {
        EventKind::Plan { markdown } => check_len("plan.md", markdown, limits::MAX_PLAN_BYTES),
        EventKind::Exited(x) => check_len("final plan.md", &x.markdown, limits::MAX_PLAN_BYTES)
            .and(check_len(
                "exit detail",
                &x.detail,
                limits::MAX_MESSAGE_BYTES,
            ))
            .and(check_len("exit fault", &x.fault, limits::MAX_MESSAGE_BYTES)),
        EventKind::Question { seq, text } => {
            if *seq == 0 || *seq as usize > limits::MAX_QUESTIONS {
                return Some(format!(
                    "question number {seq} is outside 1..={}",
                    limits::MAX_QUESTIONS
                ));
            }
            check_len("question", text, limits::MAX_MESSAGE_BYTES)
        }
        EventKind::Output { markdown, .. } => {
            check_len("output.md", markdown, limits::MAX_OUTPUT_BYTES)
        }
        EventKind::ToolCall {
            tool,
            input_json,
            cwd,
            ..
        } => check_len("tool name", tool, limits::MAX_VALUE_BYTES)
            .and(check_len(
                "tool input",
                input_json,
                limits::MAX_TOOL_INPUT_BYTES,
            ))
            .and(check_len(
                "tool call's directory",
                cwd,
                limits::MAX_PATH_BYTES,
            )),
        EventKind::Changes(c) => check_len("diff", &c.diff, limits::MAX_DIFF_BYTES)
            .and(check_len(
                "changes error",
                &c.error,
                limits::MAX_MESSAGE_BYTES,
            ))
            .and(check_len("branch", &c.branch, limits::MAX_VALUE_BYTES))
            .and(check_len(
                "pushed to",
                &c.pushed_to,
                limits::MAX_VALUE_BYTES,
            ))
            .and(if c.bundle_bytes > limits::MAX_BUNDLE_BYTES {
                Err(limits::InvalidInput::new(
                    "bundle",
                    "is over the coordinator's limit",
                ))
            } else {
                Ok(())
            }),
        EventKind::Activity { lines, usage } => {
            if lines.len() > limits::MAX_ACTIVITY_LINES {
                return Some(format!(
                    "{} activity lines in one event, over the {} limit",
                    lines.len(),
                    limits::MAX_ACTIVITY_LINES
                ));
            }
            let line = lines
                .iter()
                .try_for_each(|l| check_len("activity line", l, limits::MAX_ACTIVITY_LINE_BYTES));
            let model = usage.as_ref().map_or(Ok(()), |u| {
                check_len("model", &u.model, limits::MAX_VALUE_BYTES)
            });
            line.and(model)
        }
        EventKind::BundleChunk { data, .. } if data.len() > limits::MAX_BUNDLE_CHUNK_BYTES => {
            return Some(format!(
                "bundle chunk is {} bytes, over the {} limit",
                data.len(),
                limits::MAX_BUNDLE_CHUNK_BYTES
            ));
        }
        EventKind::Log { data } if data.len() > limits::MAX_LOG_CHUNK_BYTES => {
            return Some(format!(
                "log chunk is {} bytes, over the {} limit",
                data.len(),
                limits::MAX_LOG_CHUNK_BYTES
            ));
        }
        EventKind::StartFailed { error, .. } => {
            check_len("start error", error, limits::MAX_MESSAGE_BYTES)
        }
        EventKind::Started {
            command,
            workdir,
            branch,
            ..
        } => check_len("command", command, limits::MAX_VALUE_BYTES)
            .and(check_len("workdir", workdir, limits::MAX_PATH_BYTES))
            .and(check_len("branch", branch, limits::MAX_VALUE_BYTES)),
        _ => Ok(()),
    };
    r.err().map(|e| e.to_string())
}

impl Coordinator {
    /// Records a batch of events from one node session in one transaction (group commit) and
    /// publishes what it changed. Returns what to ack and which gaps to heal.
    pub async fn record_agent_events(
        &self,
        session: &SessionKey,
        events: Vec<IncomingEvent>,
    ) -> crate::error::Result<EventBatch> {
        let mut advice = HashMap::new();
        let mut fallbacks = HashMap::new();
        let mut incoming = Vec::with_capacity(events.len());
        for IncomingEvent { mut event } in events {
            event.scrub_nul();
            if let Some(reason) = over_limit(&event.kind) {
                tracing::warn!(task = %event.task_id, node = %session.node, seq = event.seq, %reason, "event over a limit; kept as history only");
                event.kind = EventKind::Rejected { reason };
            }
            // What a failure said, to find where its task would fall back to.
            let failed = match &event.kind {
                EventKind::StartFailed { error, cli } => Some(match cli {
                    Some(f) => said(f, error),
                    None => error.clone(),
                }),
                EventKind::Exited(x) => x.cli.as_ref().map(|f| exit_said(x, f)),
                _ => None,
            };
            if let Some(text) = failed
                && !fallbacks.contains_key(&event.task_id)
            {
                if matches!(event.kind, EventKind::StartFailed { .. }) {
                    // A commit origin lacks is fixed by a push, not by another node.
                    let a = if text.contains(dispatch_core::repo_url::NOT_PUSHED) {
                        format!(
                            "Push that commit to origin (`git push`), then `dispatch retry {}`",
                            event.task_id
                        )
                    } else {
                        self.alternatives(&session.node, &event.task_id).await?
                    };
                    advice.insert(event.task_id.clone(), a);
                }
                if let Some(f) = self
                    .fallback_target(&session.node, &event.task_id, &text)
                    .await?
                {
                    fallbacks.insert(event.task_id.clone(), f);
                }
            }
            incoming.push(IncomingEvent { event });
        }
        let asked: Vec<i64> = incoming
            .iter()
            .filter(|e| matches!(e.event.kind, EventKind::Question { .. }))
            .map(|e| e.event.at_ms)
            .collect();
        let n = incoming.len() as u64;
        let t0 = std::time::Instant::now();
        let recorded = self
            .store
            .record_events(
                session,
                incoming,
                &Rules {
                    advice,
                    fallbacks,
                    policy: self.policy(),
                    budgets: std::sync::Arc::clone(&self.config.budgets),
                },
                crate::store::HistoryCaps {
                    log_bytes: self.config.max_log_bytes,
                    plan_bytes: self.config.max_plan_history_bytes,
                },
            )
            .await;
        // A commit that failed took its time too.
        self.metrics
            .store_commit
            .observe(t0.elapsed().as_secs_f64());
        let mut batch = recorded?;
        self.metrics.events_committed.inc_by(n);
        for (task, seq, why) in &batch.fenced {
            tracing::info!(task = %task, node = %session.node, seq, why, "event kept as history only");
        }
        self.committed(std::mem::take(&mut batch.changes));
        for node in &batch.command_nodes {
            self.registry.wake(node);
        }
        // Published now: the node's clock and ours are one wall clock on one machine, and
        // close enough across machines for a histogram in milliseconds.
        let now = now_ms();
        for at in asked {
            self.metrics
                .question_latency
                .observe((now - at).max(0) as f64 / 1000.0);
        }
        Ok(batch)
    }

    /// Where task `task`, which could not start on `node` with `error`, would fall back to: the
    /// first of its targets a connected node can run (with the node to avoid, when the target
    /// is the same backend), or why none can. `None` when it has no fallback, used it, or the
    /// error is not one it falls back on. Advice for the event path, which decides on the row.
    async fn fallback_target(
        &self,
        node: &str,
        task: &str,
        error: &str,
    ) -> crate::error::Result<Option<Result<(String, String, String), String>>> {
        let Some(t) = self.store.get_task(task).await? else {
            return Ok(None);
        };
        let Some(f) = t.fallback.as_ref().filter(|f| !f.used) else {
            return Ok(None);
        };
        if f.matches(error).is_none() {
            return Ok(None);
        }
        let slots = self.registry.slots();
        let mut tried = Vec::new();
        for (backend, model) in &f.to {
            // A signed task runs only as signed: on another node, never on another backend.
            if !t.signer.is_empty() && (*backend != t.backend || *model != t.model) {
                tried.push(format!(
                    "`{backend}` (the task is signed for `{}`)",
                    t.backend
                ));
                continue;
            }
            let avoid = if *backend == t.backend || t.backend.is_empty() {
                node.to_string()
            } else {
                String::new()
            };
            let probe = TaskRecord {
                backend: backend.clone(),
                model: model.clone(),
                remote: t.remote.clone(),
                pool: t.pool.clone(),
                allowed_nodes: t.allowed_nodes.clone(),
                ..Default::default()
            };
            if slots
                .iter()
                .any(|s| s.name != avoid && crate::router::can_run(&probe, s))
            {
                return Ok(Some(Ok((backend.clone(), model.clone(), avoid))));
            }
            tried.push(if avoid.is_empty() {
                format!("no connected node runs `{backend}`")
            } else {
                format!("no other connected node runs `{backend}`")
            });
        }
        Ok(Some(Err(tried.join("; "))))
    }
}
