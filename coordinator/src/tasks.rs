//! Task operations: submit, look up, cancel, and record what agents report.

use crate::convert::{task_change_to_proto, task_to_proto};
use crate::error::{CoordinatorError, Result};
use crate::registry::NodeSlot;
use crate::router::{backend_on, can_run, in_pool, preferred_backend};
use crate::store::{EventItem, EventOutcome, NodeRecord, QuestionRecord, TaskRecord};
use crate::{Coordinator, LogLine, now_ms};
use dispatch_core::limits::{self, check_len, check_name};
use dispatch_core::plan::{self, Plan};
use dispatch_core::{TaskState, prompt, task, task_id};
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind as EventKind;
use std::collections::HashMap;

const MAX_TITLE_CHARS: usize = 80;

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}

fn describe_backends(nodes: &[NodeRecord]) -> String {
    nodes
        .iter()
        .map(|n| {
            let b: Vec<&str> = n.backends.iter().map(|b| b.name.as_str()).collect();
            format!(
                "{}: {}",
                n.name,
                if b.is_empty() {
                    "none".to_string()
                } else {
                    b.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Coordinator {
    /// Validates and stores a new task, then runs a scheduling pass so the returned task
    /// already shows its node when one was free.
    pub async fn submit(&self, req: v1::SubmitRequest) -> Result<TaskRecord> {
        let prompt_text = req.prompt.trim_end().to_string();
        check_len("prompt", &prompt_text, limits::MAX_PROMPT_BYTES)?;
        check_len("plan", &req.plan_markdown, limits::MAX_PLAN_BYTES)?;
        check_len("title", &req.title, limits::MAX_STEP_BYTES)?;
        check_len("alias prompt", &req.alias_prompt, limits::MAX_PROMPT_BYTES)?;
        check_len("workdir", &req.workdir, limits::MAX_PATH_BYTES)?;
        if prompt_text.trim().is_empty()
            && req.plan_markdown.trim().is_empty()
            && req.steps.is_empty()
        {
            return Err(CoordinatorError::Invalid(
                "the prompt is empty: say what the worker should do, or give a plan with --plan or --step".into(),
            ));
        }
        if req.steps.len() > limits::MAX_PLAN_ITEMS {
            return Err(CoordinatorError::Invalid(format!(
                "{} steps given; the limit is {}",
                req.steps.len(),
                limits::MAX_PLAN_ITEMS
            )));
        }
        for (i, s) in req.steps.iter().enumerate() {
            check_len(&format!("step {}", i + 1), s, limits::MAX_STEP_BYTES)?;
            if s.trim().is_empty() {
                return Err(CoordinatorError::Invalid(format!(
                    "step {} is empty",
                    i + 1
                )));
            }
        }
        if !req.id.is_empty() {
            task_id::validate(&req.id)?;
        }
        if !req.model.is_empty() {
            check_name("model", &req.model)?;
        }
        if !req.workdir.is_empty() && !req.workdir.starts_with('/') {
            return Err(CoordinatorError::Invalid(format!(
                "workdir `{}` is not an absolute path; give the full path of the directory on the node",
                req.workdir
            )));
        }
        let mut pool = std::collections::BTreeMap::new();
        for (k, v) in &req.pool {
            check_name("--pool label", k)?;
            check_len(&format!("--pool label `{k}`"), v, limits::MAX_VALUE_BYTES)?;
            pool.insert(k.clone(), v.clone());
        }
        let repo = match &req.repo {
            Some(r) if !r.url.is_empty() => {
                check_len("repository URL", &r.url, limits::MAX_PATH_BYTES)?;
                check_len("branch", &r.branch, limits::MAX_VALUE_BYTES)?;
                if !(r.commit.len() == 40 || r.commit.len() == 64)
                    || !r.commit.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(CoordinatorError::Invalid(format!(
                        "`{}` is not a full commit id",
                        r.commit
                    )));
                }
                if r.url.starts_with('-') {
                    return Err(CoordinatorError::Invalid(format!(
                        "`{}` is not a repository URL",
                        r.url
                    )));
                }
                (r.url.clone(), r.branch.clone(), r.commit.clone())
            }
            _ => Default::default(),
        };
        let probe = TaskRecord {
            remote: req.remote.clone(),
            backend: req.backend.clone(),
            model: req.model.clone(),
            pool: pool.clone(),
            ..Default::default()
        };
        self.check_placement(&probe).await?;
        if !req.after.is_empty() {
            task_id::validate(&req.after)?;
            if !self.store.task_exists(&req.after).await? {
                return Err(CoordinatorError::NotFound(format!(
                    "--after names task `{}`, which does not exist; see `dispatch status`",
                    req.after
                )));
            }
        }

        let id = if req.id.is_empty() {
            let base = task_id::derive(&prompt_text);
            let mut candidate = base.clone();
            let mut n = 1;
            while self.store.task_exists(&candidate).await? {
                n += 1;
                candidate = task_id::with_suffix(&base, n);
            }
            candidate
        } else {
            if self.store.task_exists(&req.id).await? {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "task id `{}` already exists; choose another with --id, or see it with `dispatch status {}`",
                    req.id, req.id
                )));
            }
            req.id.clone()
        };

        let (plan_md, plan_title) = if !req.plan_markdown.trim().is_empty() {
            let p = Plan::parse(&req.plan_markdown);
            if p.items().is_empty() {
                return Err(CoordinatorError::Invalid(
                    "the plan has no checklist items; write items as `- [ ] step` lines".into(),
                ));
            }
            if p.items().len() > limits::MAX_PLAN_ITEMS {
                return Err(CoordinatorError::Invalid(format!(
                    "the plan has {} items; the limit is {}",
                    p.items().len(),
                    limits::MAX_PLAN_ITEMS
                )));
            }
            (req.plan_markdown.clone(), p.title().map(str::to_string))
        } else {
            let mut items: Vec<String> = if !req.steps.is_empty() {
                req.steps.iter().map(|s| s.trim().to_string()).collect()
            } else {
                let listed = plan::list_in_text(&prompt_text);
                if listed.is_empty() {
                    vec![truncate_chars(
                        first_line(&prompt_text),
                        limits::MAX_STEP_BYTES / 4,
                    )]
                } else {
                    listed
                }
            };
            if items.len() >= limits::MAX_PLAN_ITEMS {
                items.truncate(limits::MAX_PLAN_ITEMS - 1);
            }
            items.push(prompt::summary_item(&id));
            let title = self.title_for(&req, &prompt_text, &id);
            (plan::render_new(&title, &items), Some(title))
        };
        let title = if !req.title.trim().is_empty() {
            req.title.trim().to_string()
        } else {
            plan_title.unwrap_or_else(|| self.title_for(&req, &prompt_text, &id))
        };

        let now = now_ms();
        let record = TaskRecord {
            id: id.clone(),
            state: TaskState::Queued,
            title,
            worker_prompt: prompt::worker_prompt(
                &id,
                &prompt_text,
                Some(req.alias_prompt.as_str()).filter(|p| !p.trim().is_empty()),
            ),
            prompt: prompt_text,
            plan_md,
            remote: req.remote.clone(),
            backend: req.backend.clone(),
            model: req.model.clone(),
            workdir: req.workdir.clone(),
            after: req.after.clone(),
            priority: req.priority,
            created_ms: now,
            updated_ms: now,
            attempt: 1,
            worktree: req.worktree || prompt::wants_worktree(&req.prompt),
            pool,
            repo,
            ..Default::default()
        };
        self.store.insert_task(&record).await?;
        tracing::info!(task = %id, remote = %record.remote, backend = %record.backend, "submitted");
        self.publish(&record, "state", 0).await;
        self.scheduler.pass().await;
        Ok(self.store.get_task(&id).await?.unwrap_or(record))
    }

    fn title_for(&self, req: &v1::SubmitRequest, prompt_text: &str, id: &str) -> String {
        if !req.title.trim().is_empty() {
            return req.title.trim().to_string();
        }
        let line = first_line(prompt_text)
            .trim_start_matches(['-', '*', '+', ' '])
            .trim_end_matches(':')
            .trim();
        if line.is_empty() {
            id.to_string()
        } else {
            truncate_chars(line, MAX_TITLE_CHARS)
        }
    }

    /// Refuses a task that no connected node can ever run (pinned node, pool labels, backend,
    /// model), saying what the connected nodes have.
    pub(crate) async fn check_placement(&self, probe: &TaskRecord) -> Result<()> {
        let remote = probe.remote.as_str();
        let known = self.store.list_nodes().await?;
        if !remote.is_empty() {
            check_name("--remote node name", remote)?;
            if !known.iter().any(|n| n.name == remote) {
                let names: Vec<String> = known
                    .iter()
                    .map(|n| {
                        format!(
                            "{} ({})",
                            n.name,
                            if self.registry.is_connected(&n.name) {
                                "connected"
                            } else {
                                "offline"
                            }
                        )
                    })
                    .collect();
                return Err(CoordinatorError::NotFound(if names.is_empty() {
                    format!(
                        "no node named `{remote}`: no node has connected to this coordinator yet; start `dispatch-agent --name {remote} --coordinator URL` on that machine"
                    )
                } else {
                    format!(
                        "no node named `{remote}`; known nodes: {}",
                        names.join(", ")
                    )
                }));
            }
        }
        let slots: Vec<NodeSlot> = self
            .registry
            .slots()
            .into_iter()
            .filter(|s| remote.is_empty() || s.name == remote)
            .collect();
        if slots.is_empty() {
            return Err(CoordinatorError::FailedPrecondition(if remote.is_empty() {
                "no node is connected to this coordinator; start `dispatch-agent --coordinator URL` on a machine, then dispatch again".to_string()
            } else {
                format!(
                    "node `{remote}` is not connected; start its agent (`dispatch nodes` shows when it was last seen)"
                )
            }));
        }
        if slots.iter().any(|s| can_run(probe, s)) {
            return Ok(());
        }
        let records: Vec<NodeRecord> = known
            .into_iter()
            .filter(|n| slots.iter().any(|s| s.name == n.name))
            .collect();
        let where_ = if remote.is_empty() {
            "no connected node".to_string()
        } else {
            format!("node `{remote}`")
        };
        let pooled: Vec<&NodeSlot> = slots.iter().filter(|s| in_pool(probe, &s.labels)).collect();
        if pooled.is_empty() {
            let want: Vec<String> = probe.pool.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let have: Vec<String> = slots
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.name,
                        if s.labels.is_empty() {
                            "no labels".to_string()
                        } else {
                            s.labels
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        }
                    )
                })
                .collect();
            return Err(CoordinatorError::Invalid(format!(
                "{where_} has the labels {}; nodes and their labels: {}",
                want.join(","),
                have.join("; ")
            )));
        }
        let backend = probe.backend.as_str();
        if !backend.is_empty() {
            check_name("backend", backend)?;
            if !pooled
                .iter()
                .any(|s| s.backends.iter().any(|b| b == backend))
            {
                return Err(CoordinatorError::Invalid(format!(
                    "{where_} has backend `{backend}`; nodes and their backends: {}",
                    describe_backends(&records)
                )));
            }
        } else if !pooled
            .iter()
            .any(|s| preferred_backend(&s.backends).is_some())
        {
            return Err(CoordinatorError::Invalid(format!(
                "{where_} has an agent CLI (claude, agent, codex) installed; nodes and their backends: {}. \
                 Install one on a node, or pass --backend sim to run the scripted sim worker",
                describe_backends(&records)
            )));
        }
        let lists: Vec<String> = pooled
            .iter()
            .filter_map(|s| {
                backend_on(probe, &s.backends).map(|b| {
                    format!(
                        "{} ({b}): {}",
                        s.name,
                        s.models.get(&b).map(|m| m.join(", ")).unwrap_or_default()
                    )
                })
            })
            .collect();
        Err(CoordinatorError::Invalid(format!(
            "{where_} offers model `{}`; models by node: {}",
            probe.model,
            lists.join("; ")
        )))
    }

    /// Where a task that could not start on `node` could run instead, as advice.
    async fn alternatives(&self, node: &str, task: &str) -> Result<String> {
        let others: Vec<String> = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.name != node && self.registry.is_connected(&n.name))
            .map(|n| {
                format!(
                    "{}: {}",
                    n.name,
                    n.backends
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        Ok(if others.is_empty() {
            format!(
                "No other node is connected; install or fix the CLI (or its login) on `{node}`, or pick another backend, then `dispatch retry {task} [--backend B]`"
            )
        } else {
            format!(
                "Other nodes offer: {}. Run it there with `dispatch retry {task} --remote NODE [--backend B]`",
                others.join("; ")
            )
        })
    }

    /// A task by id, or a not-found error that says how to list tasks.
    pub async fn task(&self, id: &str) -> Result<TaskRecord> {
        task_id::validate(id)?;
        self.store.get_task(id).await?.ok_or_else(|| {
            CoordinatorError::NotFound(format!(
                "no task `{id}`; `dispatch status` lists every task"
            ))
        })
    }

    /// The wire view of a task: with its questions and, while queued, its queue position.
    pub async fn task_view(&self, t: &TaskRecord) -> Result<v1::Task> {
        Ok(self
            .views(std::slice::from_ref(t), task_to_proto)
            .await?
            .remove(0))
    }

    /// [`Coordinator::task_view`] of many tasks, with two store reads however many there are.
    pub async fn task_views(&self, records: &[TaskRecord]) -> Result<Vec<v1::Task>> {
        self.views(records, task_to_proto).await
    }

    /// [`Coordinator::task_view`] as a watch event after a change carries it (no prompt).
    async fn change_view(&self, t: &TaskRecord) -> Result<v1::Task> {
        Ok(self
            .views(std::slice::from_ref(t), task_change_to_proto)
            .await?
            .remove(0))
    }

    async fn views(
        &self,
        records: &[TaskRecord],
        build: fn(&TaskRecord, &[QuestionRecord], u32) -> v1::Task,
    ) -> Result<Vec<v1::Task>> {
        let queued = if records.iter().any(|t| t.state == TaskState::Queued) {
            self.store.queued_ids().await?
        } else {
            Vec::new()
        };
        let ids: Vec<&str> = records.iter().map(|t| t.id.as_str()).collect();
        let questions = self.store.questions_of(&ids).await?;
        Ok(records
            .iter()
            .map(|t| {
                let position = queued
                    .iter()
                    .position(|q| *q == t.id)
                    .map_or(0, |p| p as u32 + 1);
                let asked = questions.get(&t.id).map(Vec::as_slice).unwrap_or_default();
                build(t, asked, position)
            })
            .collect())
    }

    /// Tells the configured notifications that a task ended (once per worker run and state).
    fn notify_if_ended(&self, t: &TaskRecord, change: &str) {
        if change == "state" && t.state.is_terminal() {
            let n = crate::notify::Notification::ended(
                &t.id,
                &t.title,
                &t.node,
                t.state.as_str(),
                &t.reason,
                t.attempt,
            );
            self.notifier.send(n);
        }
    }

    /// Sends a task's new state to watchers (and, for a question or an ended task, to the
    /// configured notifications).
    pub async fn publish(&self, t: &TaskRecord, change: &str, seq: u64) {
        self.notify_if_ended(t, change);
        if self.watch_tx.receiver_count() == 0 {
            return;
        }
        match self.change_view(t).await {
            Ok(task) => {
                let _ = self.watch_tx.send(v1::WatchEvent {
                    task: Some(task),
                    change: change.to_string(),
                    seq,
                });
            }
            Err(e) => tracing::warn!(task = %t.id, error = %e, "could not build the watch view"),
        }
    }

    /// Ends a task that holds no node slot (queued, or its dependency failed).
    pub(crate) async fn finish_without_node(
        &self,
        t: &mut TaskRecord,
        state: TaskState,
        reason: String,
    ) -> Result<()> {
        let now = now_ms();
        t.state = state;
        t.reason = reason;
        t.updated_ms = now;
        t.ended_ms = now;
        self.store.update_task(t).await?;
        tracing::info!(task = %t.id, state = %state, reason = %t.reason, "task ended");
        self.publish(t, "state", 0).await;
        Ok(())
    }

    /// Cancels a task: a queued one at once; a running one by telling its node to kill the
    /// worker's process group (the slot frees when the node reports the exit).
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord> {
        let mut t = self.task(id).await?;
        if t.state.is_terminal() {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "task `{id}` already ended ({}); there is nothing to cancel",
                t.state
            )));
        }
        if t.state == TaskState::Queued {
            self.finish_without_node(
                &mut t,
                TaskState::Cancelled,
                "cancelled before it started".into(),
            )
            .await?;
        } else {
            let now = now_ms();
            t.state = TaskState::Cancelled;
            t.reason = format!(
                "cancelled; the worker on node `{}` is being stopped",
                t.node
            );
            t.updated_ms = now;
            t.ended_ms = now;
            self.command_node(
                &t,
                v1::command::Kind::Cancel(v1::CancelTask {
                    task_id: t.id.clone(),
                }),
            )
            .await?;
            tracing::info!(task = %t.id, node = %t.node, "cancel sent");
            self.publish(&t, "state", 0).await;
        }
        self.scheduler.kick();
        Ok(t)
    }

    /// Records one event from `node` exactly once and returns the seq to ack.
    pub async fn record_agent_event(&self, node: &str, ev: v1::TaskEvent) -> Result<u64> {
        let acks = self.record_agent_events(node, vec![ev]).await?;
        Ok(acks.first().map_or(0, |a| a.1))
    }

    /// Records a batch of events from `node` in one transaction (group commit), then tells
    /// watchers, followers and notifications. Returns, per task in the batch, the seq to ack.
    pub async fn record_agent_events(
        &self,
        node: &str,
        evs: Vec<v1::TaskEvent>,
    ) -> Result<Vec<(String, u64)>> {
        struct Prepared {
            ev: v1::TaskEvent,
            kind_name: &'static str,
            change: &'static str,
            rejected: bool,
            at: i64,
            open_others: usize,
            elsewhere: String,
        }
        let mut prepared = Vec::with_capacity(evs.len());
        for ev in evs {
            task_id::validate(&ev.task_id)?;
            let Some(kind) = &ev.kind else {
                return Err(CoordinatorError::Invalid(format!(
                    "event {} of task `{}` has no kind",
                    ev.seq, ev.task_id
                )));
            };
            let (kind_name, change) = match kind {
                EventKind::Started(_) => ("started", "state"),
                EventKind::Plan(_) => ("plan", "plan"),
                EventKind::Log(_) => ("log", "log"),
                EventKind::Exited(_) => ("exited", "state"),
                EventKind::StartFailed(_) => ("start_failed", "state"),
                EventKind::Question(_) => ("question", "question"),
                EventKind::AnswerDelivered(_) => ("answer_delivered", "answer"),
            };
            // An event over a limit is still recorded (as rejected, with no effect) so the
            // node's sequence stays gap free and it does not resend it forever.
            let rejected = match kind {
                EventKind::Plan(p) => {
                    check_len("plan snapshot", &p.markdown, limits::MAX_PLAN_BYTES).err()
                }
                EventKind::Exited(x) => {
                    check_len("final plan", &x.markdown, limits::MAX_PLAN_BYTES).err()
                }
                EventKind::Question(q) => {
                    check_len("question", &q.text, limits::MAX_MESSAGE_BYTES).err()
                }
                EventKind::Log(l) if l.data.len() > limits::MAX_LOG_CHUNK_BYTES => {
                    Some(limits::InvalidInput::new(
                        "log chunk",
                        format!("is {} bytes, over the limit", l.data.len()),
                    ))
                }
                _ => None,
            };
            let (kind_name, change) = match &rejected {
                Some(e) => {
                    tracing::warn!(task = %ev.task_id, node, seq = ev.seq, error = %e, "rejected an event from a node");
                    ("rejected", "rejected")
                }
                None => (kind_name, change),
            };
            let at = if ev.at_ms > 0 { ev.at_ms } else { now_ms() };
            // Proactive recovery: say where else the task could run.
            let elsewhere = match kind {
                EventKind::StartFailed(_) => self.alternatives(node, &ev.task_id).await?,
                _ => String::new(),
            };
            // Questions other than the acknowledged one that still wait for an answer.
            let open_others = match kind {
                EventKind::AnswerDelivered(a) => self
                    .store
                    .questions(&ev.task_id)
                    .await?
                    .iter()
                    .filter(|q| q.answer.is_none() && q.seq != a.seq)
                    .count(),
                _ => 0,
            };
            prepared.push(Prepared {
                ev,
                kind_name,
                change,
                rejected: rejected.is_some(),
                at,
                open_others,
                elsewhere,
            });
        }
        // The effects borrow the prepared events (no copy of a plan per event).
        let items = prepared
            .iter()
            .map(|p| EventItem {
                task_id: p.ev.task_id.clone(),
                seq: p.ev.seq,
                kind: p.kind_name,
                at_ms: p.at,
                body: prost::Message::encode_to_vec(&p.ev),
                apply: Box::new(move |t: &mut TaskRecord| match (&p.ev.kind, p.rejected) {
                    (Some(kind), false) => {
                        apply_event(t, kind, node, p.at, p.open_others, &p.elsewhere)
                    }
                    _ => None,
                }),
            })
            .collect();
        let outcomes = self.store.record_events(node, items).await?;

        // Side effects, in order. The watchers' views are built with one questions read for
        // the whole batch (after the commit, so they include the batch's own questions).
        let questions = if self.watch_tx.receiver_count() > 0 {
            let mut ids: Vec<&str> = Vec::new();
            for o in &outcomes {
                if let EventOutcome::Applied(t) = o
                    && !ids.contains(&t.id.as_str())
                {
                    ids.push(&t.id);
                }
            }
            self.store.questions_of(&ids).await?
        } else {
            HashMap::new()
        };
        let mut acks: Vec<(String, u64)> = Vec::new();
        let mut ack = |task: &str, seq: u64| match acks.iter_mut().find(|a| a.0 == task) {
            Some(a) => a.1 = seq,
            None => acks.push((task.to_string(), seq)),
        };
        for (p, outcome) in prepared.into_iter().zip(outcomes) {
            let ev = p.ev;
            match outcome {
                EventOutcome::Applied(t) => {
                    ack(&t.id, t.last_seq);
                    if p.rejected {
                        continue;
                    }
                    let kind = ev.kind.as_ref().expect("checked above");
                    match kind {
                        EventKind::Log(l) => {
                            let _ = self.log_tx.send(LogLine {
                                task_id: t.id.clone(),
                                seq: ev.seq,
                                data: l.data.clone().into(),
                            });
                            continue;
                        }
                        EventKind::Exited(_) | EventKind::StartFailed(_) => {
                            self.registry.release(node, &t.id);
                            tracing::info!(task = %t.id, node, state = %t.state, reason = %t.reason, "worker ended");
                            self.scheduler.kick();
                        }
                        EventKind::Question(q) => {
                            self.notifier.send(crate::notify::Notification::question(
                                &t.id, &t.title, node, q.seq, &q.text,
                            ));
                        }
                        _ => {}
                    }
                    self.notify_if_ended(&t, p.change);
                    if self.watch_tx.receiver_count() > 0 {
                        let asked = questions.get(&t.id).map(Vec::as_slice).unwrap_or_default();
                        let view = task_change_to_proto(&t, asked, 0);
                        let _ = self.watch_tx.send(v1::WatchEvent {
                            task: Some(view),
                            change: p.change.to_string(),
                            seq: ev.seq,
                        });
                    }
                }
                EventOutcome::Duplicate { committed } => ack(&ev.task_id, committed),
                EventOutcome::Gap { expected } => {
                    tracing::error!(task = %ev.task_id, node, seq = ev.seq, expected, "event gap; the node will resend on reconnect");
                    ack(&ev.task_id, expected - 1);
                }
                EventOutcome::UnknownTask => {
                    tracing::warn!(task = %ev.task_id, node, "event for an unknown task; acking so the node drops it");
                    ack(&ev.task_id, ev.seq);
                }
                EventOutcome::NotOwner { owner } => {
                    tracing::warn!(task = %ev.task_id, node, %owner, "event from a node that does not own the task; dropped");
                    ack(&ev.task_id, ev.seq);
                }
            }
        }
        Ok(acks)
    }
}

/// How one agent event changes the stored task.
fn apply_event(
    t: &mut TaskRecord,
    kind: &EventKind,
    node: &str,
    at: i64,
    open_others: usize,
    elsewhere: &str,
) -> Option<QuestionRecord> {
    t.updated_ms = now_ms();
    match kind {
        EventKind::Started(st) => {
            if t.state == TaskState::Assigned {
                t.state = TaskState::Running;
            }
            if !st.branch.is_empty() {
                t.branch = st.branch.clone();
                t.cleaned = false;
            }
            t.started_ms = at;
        }
        EventKind::Plan(p) => t.plan_md = p.markdown.clone(),
        EventKind::Log(_) => {}
        EventKind::Exited(x) => {
            if !x.markdown.is_empty() {
                t.plan_md = x.markdown.clone();
            }
            t.exit_code = x.exit_code;
            // A task marked lost whose real exit arrives later gets its real outcome.
            if !t.state.is_terminal() || t.state == TaskState::Lost {
                let (state, reason) = if x.cancelled {
                    (TaskState::Cancelled, "cancelled".to_string())
                } else {
                    task::outcome(
                        &Plan::parse(&t.plan_md),
                        x.done_marker,
                        x.exit_code,
                        x.signal,
                    )
                };
                let reason = if x.detail.is_empty() || state == TaskState::Completed {
                    reason
                } else {
                    format!("{reason} ({})", x.detail)
                };
                t.state = state;
                t.reason = reason;
            } else if t.state == TaskState::Cancelled {
                t.reason = format!("cancelled; the worker on node `{node}` was stopped");
            }
            if t.ended_ms == 0 {
                t.ended_ms = at;
            }
        }
        EventKind::StartFailed(f) => {
            if !t.state.is_terminal() {
                t.state = TaskState::Failed;
                t.reason = format!(
                    "the worker could not start on node `{node}`: {}. {elsewhere}",
                    f.error
                );
                t.ended_ms = at;
            }
        }
        EventKind::Question(q) => {
            if matches!(t.state, TaskState::Running | TaskState::Assigned) {
                t.state = TaskState::Waiting;
            }
            return Some(QuestionRecord {
                task_id: t.id.clone(),
                seq: q.seq,
                text: q.text.clone(),
                asked_ms: at,
                answer: None,
                answered_ms: 0,
            });
        }
        EventKind::AnswerDelivered(_) => {
            if t.state == TaskState::Waiting && open_others == 0 {
                t.state = TaskState::Running;
            }
        }
    }
    None
}
