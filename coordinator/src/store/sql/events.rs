//! The event path: a batch of one node session's events recorded in one transaction (group
//! commit). It is the only writer of `last_seq`, and of the plan while a task is active.
//!
//! Event history is stored as changes: a plan event holds the edit from the previous plan, a log
//! event the raw bytes (until the task's cap), every other event its fields as JSON.

use super::store::{ENDED_SQL, TASKS_PER_STATEMENT, push_in_list};
use super::tasks::{insert_command, task_change};
use super::{Backend, Db, rows};
use crate::error::Result;
use crate::model::{
    APPROVAL_SEQ_BASE, BudgetAsk, Change, EventKind, IncomingEvent, NodeCommand, QuestionRecord,
    TaskEvent, TaskRecord, ToolCallRecord, WorkerExit,
};
use crate::store::fence::{Fence, Held, fence};
use crate::store::patch::{self, Patch};
use crate::store::{Compacted, EventBatch, EventFacts, EventRules, HistoryCaps, SessionKey};
use dispatch_core::TaskState;
use std::collections::HashMap;
use std::sync::Arc;

/// Event rows per insert (5 values each).
const EVENTS_PER_STATEMENT: usize = 400;
/// Task rows per update (26 values each; well under either database's parameter limit).
const TASKS_PER_UPDATE: usize = 400;
/// Rows deleted per statement when compacting (short write transactions).
const COMPACT_BATCH: i64 = 5000;

/// An exit as stored: its plan as the edit from the plan before it.
#[derive(serde::Serialize)]
struct StoredExit<'a> {
    exit_code: Option<i32>,
    signal: Option<i32>,
    done_marker: bool,
    cancelled: bool,
    detail: &'a str,
    fault: &'a str,
    drained: bool,
    plan: Option<Patch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cli: Option<&'a dispatch_core::signals::Failure>,
}

/// An event kept as history only.
#[derive(serde::Serialize)]
struct LateEvent {
    kind: &'static str,
    attempt: u32,
    why: &'static str,
}

/// The stored body of an applied event (`old_plan`: the task's plan before it).
pub(super) fn body(ev: &TaskEvent, old_plan: &str) -> (&'static str, Vec<u8>) {
    fn json(v: &impl serde::Serialize) -> Vec<u8> {
        serde_json::to_vec(v).unwrap_or_default()
    }
    match &ev.kind {
        EventKind::Plan { markdown } => ("plan", json(&patch::diff(old_plan, markdown))),
        EventKind::Exited(WorkerExit {
            exit_code,
            signal,
            markdown,
            done_marker,
            cancelled,
            detail,
            fault,
            drained,
            cli,
        }) => (
            "exited",
            json(&StoredExit {
                exit_code: *exit_code,
                signal: *signal,
                done_marker: *done_marker,
                cancelled: *cancelled,
                detail,
                fault,
                drained: *drained,
                plan: (!markdown.is_empty()).then(|| patch::diff(old_plan, markdown)),
                cli: cli.as_ref(),
            }),
        ),
        EventKind::Log { data } => ("log", data.clone()),
        // Its lines, as `dispatch logs --activity` prints them.
        EventKind::Activity { lines, .. } => (
            "activity",
            lines
                .iter()
                .flat_map(|l| [l.as_bytes(), b"\n"])
                .flatten()
                .copied()
                .collect(),
        ),
        other => (other.name(), json(other)),
    }
}

/// The marker stored once a task's output passes the cap.
fn log_marker(task: &str, cap: u64) -> Vec<u8> {
    format!(
        "\n[dispatch: the coordinator keeps the first {} of this task's output; the rest is only on its node, in the agent's data directory (logs/{task}.log)]\n",
        dispatch_core::fs::human_bytes(cap)
    )
    .into_bytes()
}

/// What the history keeps of a plan edit: the edit while the task's plan history is under
/// `cap`, a marker once when it would pass it, nothing after (the plan itself stays current).
fn keep_plan_edit(
    task: &mut TaskRecord,
    edit: Vec<u8>,
    cap: u64,
) -> Option<(&'static str, Vec<u8>)> {
    if task.plan_bytes > cap {
        return None;
    }
    let len = edit.len() as u64;
    if task.plan_bytes + len <= cap {
        task.plan_bytes += len;
        return Some(("plan", edit));
    }
    let marker = serde_json::json!({
        "kept_bytes": task.plan_bytes,
        "cap": cap,
        "note": format!(
            "the coordinator keeps the first {} of this task's plan history; later edits of plan.md are not kept, the plan itself is",
            dispatch_core::fs::human_bytes(cap)
        ),
    });
    task.plan_bytes = cap + 1;
    Some(("plan-truncated", marker.to_string().into_bytes()))
}

struct Acks(Vec<(String, u64)>);

impl Acks {
    fn ack(&mut self, task: &str, seq: u64) {
        match self.0.iter_mut().find(|a| a.0 == task) {
            Some(a) => a.1 = a.1.max(seq),
            None => self.0.push((task.to_string(), seq)),
        }
    }
}

type Tx<'a> = sqlx::Transaction<'a, Db>;

/// The number of `task`'s next approval (or budget) question: after its last one, from
/// [`APPROVAL_SEQ_BASE`] + 1.
async fn next_approval_seq(tx: &mut Tx<'_>, task: &str) -> Result<u32> {
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT MAX(seq) FROM questions WHERE task_id = $1 AND seq > $2")
            .bind(task)
            .bind(i64::from(APPROVAL_SEQ_BASE))
            .fetch_one(&mut **tx)
            .await?;
    Ok(seq.map_or(APPROVAL_SEQ_BASE + 1, |s| s as u32 + 1))
}

/// What a person allowed "always" for `task`: the exact rules of its approvals answered so.
async fn granted_rules(tx: &mut Tx<'_>, task: &str) -> Result<Vec<String>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT tool_call, answer FROM questions WHERE task_id = $1 AND tool_call <> '' AND answer IS NOT NULL",
    )
    .bind(task)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, a)| {
            a.as_deref()
                .and_then(crate::model::approval_answer)
                .is_some_and(|(_, always)| always)
        })
        .filter_map(|(c, _)| serde_json::from_str::<ToolCallRecord>(&c).ok())
        .flat_map(|c| c.rules)
        .collect())
}

/// One history row: task, seq, kind, time, body.
type HistoryRow = (String, u64, &'static str, i64, Vec<u8>);

/// The tasks a batch names (by id) and their open questions, as stored.
async fn held_tasks(
    tx: &mut Tx<'_>,
    events: &[IncomingEvent],
) -> Result<(
    HashMap<String, TaskRecord>,
    HashMap<String, Vec<QuestionRecord>>,
)> {
    let mut ids: Vec<&str> = Vec::new();
    for e in events {
        if !ids.contains(&e.event.task_id.as_str()) {
            ids.push(&e.event.task_id);
        }
    }
    let mut tasks: HashMap<String, TaskRecord> = HashMap::with_capacity(ids.len());
    let mut open: HashMap<String, Vec<QuestionRecord>> = HashMap::new();
    for chunk in ids.chunks(TASKS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Db>::new("SELECT * FROM tasks WHERE id IN ");
        push_in_list(&mut q, chunk);
        for row in q.build().persistent(false).fetch_all(&mut **tx).await? {
            let t = rows::task_from_row(&row)?;
            tasks.insert(t.id.clone(), t);
        }
        let mut q = sqlx::QueryBuilder::<Db>::new(format!(
            "SELECT {} FROM questions WHERE answer IS NULL AND task_id IN ",
            rows::QUESTION_COLUMNS
        ));
        push_in_list(&mut q, chunk);
        q.push(" ORDER BY task_id, seq");
        for row in q.build().persistent(false).fetch_all(&mut **tx).await? {
            let question = rows::question_from_row(&row)?;
            open.entry(question.task_id.clone())
                .or_default()
                .push(question);
        }
    }
    Ok((tasks, open))
}

/// The working state of one batch inside its transaction: the tasks as they become, what
/// the batch acks and publishes, and the history rows to insert.
struct Recording<'r> {
    session: &'r SessionKey,
    rules: &'r dyn EventRules,
    caps: HistoryCaps,
    tasks: HashMap<String, TaskRecord>,
    open: HashMap<String, Vec<QuestionRecord>>,
    batch: EventBatch,
    acks: Acks,
    history: Vec<HistoryRow>,
    /// Tasks whose row is written back (a seq of theirs was committed).
    touched: Vec<String>,
    /// Events for tasks the store does not know (warned about once per batch).
    unknown: usize,
    /// What the batch's usage added to each owner's spend today.
    spent: Vec<(String, dispatch_core::budget::Spend)>,
}

impl Recording<'_> {
    /// Fences `ev`: None when it is not recorded (unknown task, another node's, a superseded
    /// session's, a duplicate, after a gap); else its seq is committed from here on, and
    /// whether the task's run has ended (the event is history then).
    fn admit(&mut self, ev: &TaskEvent) -> Option<bool> {
        let held = self.tasks.get(&ev.task_id).map(|t| Held {
            node: &t.node,
            state: t.state,
            epoch: t.epoch,
            last_seq: t.last_seq,
        });
        let ended = match fence(held, self.session, ev.seq) {
            Fence::Unknown => {
                self.unknown += 1;
                self.acks.ack(&ev.task_id, ev.seq);
                return None;
            }
            Fence::OtherNode => {
                self.acks.ack(&ev.task_id, ev.seq);
                self.batch.fenced.push((
                    ev.task_id.clone(),
                    ev.seq,
                    "the task runs on another node",
                ));
                return None;
            }
            // Its own session will resend it: neither acked nor recorded.
            Fence::Superseded => {
                self.batch
                    .fenced
                    .push((ev.task_id.clone(), ev.seq, "from a superseded session"));
                return None;
            }
            Fence::Duplicate { ack } => {
                self.acks.ack(&ev.task_id, ack);
                return None;
            }
            Fence::Gap { from, to } => {
                self.batch.gaps.push((ev.task_id.clone(), from, to));
                self.acks.ack(&ev.task_id, from - 1);
                return None;
            }
            Fence::Take { current } => !current,
        };
        let task = self.tasks.get_mut(&ev.task_id).expect("fenced as known");
        task.last_seq = ev.seq;
        if !self.touched.contains(&ev.task_id) {
            self.touched.push(ev.task_id.clone());
        }
        Some(ended)
    }

    /// Keeps an admitted event that does not change its task as history only — a node's
    /// rejection, an event of an ended run or an earlier worker run — or a log chunk (up to
    /// the cap). True when it was set aside.
    fn set_aside(&mut self, ev: &TaskEvent, ended: bool) -> bool {
        let task = &self.tasks[&ev.task_id];
        let stale_run = ev.attempt != 0 && ev.attempt != task.attempt;
        let cancelled_exit = task.state == TaskState::Cancelled
            && !stale_run
            && matches!(
                ev.kind,
                EventKind::Exited(_) | EventKind::StartFailed { .. }
            );
        let why = match &ev.kind {
            EventKind::Rejected { reason } => {
                let row = (
                    ev.task_id.clone(),
                    ev.seq,
                    "rejected",
                    ev.at_ms,
                    reason.as_bytes().to_vec(),
                );
                self.history.push(row);
                return true;
            }
            _ if ended && !cancelled_exit => {
                if task.state.is_terminal() {
                    "the task has ended"
                } else {
                    "the task is queued for another worker run"
                }
            }
            _ if stale_run => "from an earlier worker run",
            EventKind::Log { data } => {
                self.keep_log(ev, data);
                return true;
            }
            _ => return false,
        };
        if !matches!(ev.kind, EventKind::Log { .. }) {
            let late = LateEvent {
                kind: ev.kind.name(),
                attempt: ev.attempt,
                why,
            };
            self.history.push((
                ev.task_id.clone(),
                ev.seq,
                "late",
                ev.at_ms,
                serde_json::to_vec(&late).unwrap_or_default(),
            ));
        }
        self.batch.fenced.push((ev.task_id.clone(), ev.seq, why));
        true
    }

    /// Worker output of the current run: stored up to the task's cap, then a marker once,
    /// nothing after it.
    fn keep_log(&mut self, ev: &TaskEvent, data: &[u8]) {
        let cap = self.caps.log_bytes;
        let task = self.tasks.get_mut(&ev.task_id).expect("admitted");
        let room = cap.saturating_sub(task.log_bytes) as usize;
        let stored: Vec<u8> = if task.log_bytes > cap {
            return;
        } else if data.len() <= room {
            task.log_bytes += data.len() as u64;
            data.to_vec()
        } else {
            let mut cut = data[..room].to_vec();
            cut.extend(log_marker(&task.id, cap));
            task.log_bytes = cap + 1;
            cut
        };
        let published: Arc<[u8]> = stored.clone().into();
        self.history
            .push((ev.task_id.clone(), ev.seq, "log", ev.at_ms, stored));
        self.batch.changes.0.push(Change::Log {
            task_id: ev.task_id.clone(),
            seq: ev.seq,
            stream: crate::model::LogStream::Raw,
            data: published,
        });
    }

    /// Applies an event of the task's current run: its side tables (question, output,
    /// changes), its history row, the task's rules, and the change to publish.
    async fn apply(&mut self, tx: &mut Tx<'_>, ev: TaskEvent) -> Result<()> {
        // A tool call is decided here, by the policy (a command back to the node), or asked
        // of a person: then it goes on as a question that carries the call.
        let (ev, tool_call) = match self.tool_call(tx, ev).await? {
            None => return Ok(()),
            Some(asked) => asked,
        };
        let new_question = match &ev.kind {
            EventKind::Question { seq, text } => {
                self.insert_question(tx, &ev, *seq, text, &tool_call)
                    .await?
            }
            _ => false,
        };
        write_side_tables(tx, &ev).await?;
        let task = self.tasks.get_mut(&ev.task_id).expect("admitted");
        let open_now = self.open.get(&ev.task_id).map_or(&[][..], Vec::as_slice);
        let (kind_name, stored) = body(&ev, &task.plan_md);
        let kept = if kind_name == "plan" {
            keep_plan_edit(task, stored, self.caps.plan_bytes)
        } else {
            Some((kind_name, stored))
        };
        if let EventKind::Activity { lines, .. } = &ev.kind
            && !lines.is_empty()
        {
            self.batch.changes.0.push(Change::Log {
                task_id: ev.task_id.clone(),
                seq: ev.seq,
                stream: crate::model::LogStream::Activity,
                data: kept
                    .as_ref()
                    .map(|k| k.1.clone())
                    .unwrap_or_default()
                    .into(),
            });
        }
        if let Some((kind_name, stored)) = kept {
            self.history
                .push((ev.task_id.clone(), ev.seq, kind_name, ev.at_ms, stored));
        }
        let before = task.state;
        let facts = EventFacts {
            node: &self.session.node,
            new_question,
            open_questions: open_now.len(),
        };
        // What the task had spent, and the items it had done, before the event.
        let prices = self.rules.prices();
        let spent_before = matches!(&ev.kind, EventKind::Activity { usage: Some(_), .. })
            .then(|| prices.task_spend(task.usage.values(), &task.model));
        let done_before = (task.budget.is_some() && matches!(&ev.kind, EventKind::Plan { .. }))
            .then(|| dispatch_core::Plan::parse(&task.plan_md).progress().0);
        let applied = self.rules.apply(task, &ev, &facts);
        if let Some(before) = spent_before {
            let more = prices
                .task_spend(task.usage.values(), &task.model)
                .since(before);
            if more.usd_micros > 0 || more.tokens > 0 {
                match self.spent.iter_mut().find(|(o, _)| *o == task.owner) {
                    Some((_, s)) => *s = s.plus(more),
                    None => self.spent.push((task.owner.clone(), more)),
                }
            }
        }
        let stop = done_before.and_then(|done| {
            let spent = prices.task_spend(task.usage.values(), &task.model);
            let b = task.budget?;
            // After an item, with items left (a worker that checked its last one is left
            // to finish).
            let (now_done, total) = dispatch_core::Plan::parse(&task.plan_md).progress();
            (task.state == TaskState::Running
                && now_done > done
                && now_done < total
                && b.limit.reached_by(&spent))
            .then_some(BudgetAsk {
                spent,
                limit: b.limit,
                step: b.step,
            })
        });
        if let Some(kind) = applied.kind {
            let question = match &ev.kind {
                EventKind::Question { seq, .. } | EventKind::AnswerDelivered { seq } => Some(*seq),
                _ => None,
            };
            let mut change = task_change(task, before, kind, open_now.to_vec(), question);
            if let Change::Task(c) = &mut change {
                c.seq = ev.seq;
                c.freed_slot = applied.freed_slot.then(|| self.session.node.clone());
            }
            self.batch.changes.0.push(change);
        }
        if let Some(ask) = stop {
            self.stop_for_budget(tx, &ev, ask).await?;
        }
        Ok(())
    }

    /// A worker that reached its task's budget and cannot be paused at a tool call (its CLI
    /// has no hook): stopped now that it checked an item off, the task blocked with a budget
    /// question (a "yes" resumes it on the same node with a new worker).
    async fn stop_for_budget(
        &mut self,
        tx: &mut Tx<'_>,
        ev: &TaskEvent,
        ask: BudgetAsk,
    ) -> Result<()> {
        let seq = next_approval_seq(tx, &ev.task_id).await?;
        let node = self.session.node.clone();
        let (id, plan, attempt) = {
            let t = &self.tasks[&ev.task_id];
            (t.id.clone(), t.plan_md.clone(), t.attempt)
        };
        let (done, total) = dispatch_core::Plan::parse(&plan).progress();
        let text = format!(
            "`{id}` has used {} — continue with {} more? Its worker was stopped after item {done} of {total}; yes resumes the task on node `{node}` with a new worker. Answer yes, or no to leave it blocked.",
            ask.limit.against(&ask.spent),
            ask.step
        );
        let record = ToolCallRecord {
            attempt: ev.attempt.max(attempt),
            call: 0,
            tool: String::new(),
            input_json: String::new(),
            cwd: String::new(),
            rules: Vec::new(),
            budget: Some(ask),
            asked: false,
        };
        let json = serde_json::to_string(&record).unwrap_or_default();
        self.insert_question(tx, ev, seq, &text, &json).await?;
        let command = NodeCommand::Cancel {
            task_id: id.clone(),
            attempt,
        };
        insert_command(tx, &node, &command, crate::now_ms()).await?;
        if !self.batch.command_nodes.contains(&node) {
            self.batch.command_nodes.push(node.clone());
        }
        let task = self.tasks.get_mut(&ev.task_id).expect("admitted");
        let before = task.state;
        task.state = TaskState::Blocked;
        task.ended_ms = ev.at_ms;
        task.reason = format!(
            "budget: used {} after item {done} of {total}; its worker was stopped — `dispatch answer {id} yes` resumes it with {} more, `no` leaves it blocked",
            ask.limit.against(&ask.spent),
            ask.step
        );
        let open_now = self.open.get(&ev.task_id).cloned().unwrap_or_default();
        let mut change = task_change(
            task,
            before,
            crate::model::ChangeKind::Question,
            open_now,
            Some(seq),
        );
        if let Change::Task(c) = &mut change {
            c.seq = ev.seq;
            c.freed_slot = Some(node);
        }
        self.batch.changes.0.push(change);
        Ok(())
    }

    /// A worker's tool call: decided by the policy (the decision stored as a command for the
    /// node, and the call kept as history: None), or to be asked (the event becomes an
    /// approval question, with the call as JSON). Any other event passes as it is.
    async fn tool_call(
        &mut self,
        tx: &mut Tx<'_>,
        ev: TaskEvent,
    ) -> Result<Option<(TaskEvent, String)>> {
        let EventKind::ToolCall {
            call,
            tool,
            input_json,
            cwd,
        } = &ev.kind
        else {
            return Ok(Some((ev, String::new())));
        };
        let task = self.tasks.get(&ev.task_id).expect("admitted");
        let input: serde_json::Value =
            serde_json::from_str(input_json).unwrap_or(serde_json::Value::Null);
        let granted = granted_rules(tx, &ev.task_id).await?;
        let verdict = self.rules.decide_tool(
            task,
            &dispatch_core::policy::ToolCall {
                tool,
                input: &input,
                cwd: std::path::Path::new(cwd),
            },
            &granted,
        );
        use dispatch_core::policy::Decision;
        // A task that reached its budget asks whether to go on before this call runs (a call
        // the policy refuses is refused all the same).
        let budget = task.budget.and_then(|b| {
            let spent = self
                .rules
                .prices()
                .task_spend(task.usage.values(), &task.model);
            b.limit.reached_by(&spent).then_some(BudgetAsk {
                spent,
                limit: b.limit,
                step: b.step,
            })
        });
        let record = ToolCallRecord {
            attempt: ev.attempt,
            call: *call,
            tool: tool.clone(),
            input_json: input_json.clone(),
            cwd: cwd.clone(),
            rules: dispatch_core::policy::exact_rules(tool, &input),
            budget: budget.filter(|_| verdict.decision != Decision::Deny),
            asked: verdict.decision == Decision::Ask,
        };
        if verdict.decision == Decision::Ask || record.budget.is_some() {
            let seq = next_approval_seq(tx, &ev.task_id).await?;
            let call_text = format!(
                "{}{}",
                dispatch_core::policy::describe(tool, &input),
                if cwd.is_empty() {
                    String::new()
                } else {
                    format!(" (in {cwd})")
                },
            );
            let text = match &record.budget {
                None => format!(
                    "Allow {call_text}? {}. Answer yes, no, or always (for the rest of this task).",
                    verdict.explain()
                ),
                Some(b) if verdict.decision == Decision::Ask => format!(
                    "Allow {call_text}? {}. `{}` has also reached its budget ({}): yes or always gives it {} more. Answer yes, no (this blocks the task), or always (for the rest of this task).",
                    verdict.explain(),
                    task.id,
                    b.limit.against(&b.spent),
                    b.step
                ),
                Some(b) => format!(
                    "`{}` has used {} — continue with {} more? Its worker waits before its next tool call ({call_text}). Answer yes, or no to block the task.",
                    task.id,
                    b.limit.against(&b.spent),
                    b.step
                ),
            };
            let json = serde_json::to_string(&record).unwrap_or_default();
            let question = TaskEvent {
                kind: EventKind::Question { seq, text },
                ..ev
            };
            return Ok(Some((question, json)));
        }
        let allow = verdict.decision == Decision::Allow;
        let reason = if allow {
            format!("allowed by dispatch's tool policy: {}", verdict.explain())
        } else {
            format!(
                "dispatch's tool policy denies this call ({}); do not try to reach the same end another way — if an item needs it, mark the item [!] and say why",
                verdict.explain()
            )
        };
        let node = self.session.node.clone();
        let command = NodeCommand::ToolDecision {
            task_id: ev.task_id.clone(),
            attempt: ev.attempt,
            call: *call,
            allow,
            reason: reason.clone(),
            seq: 0,
        };
        insert_command(tx, &node, &command, crate::now_ms()).await?;
        if !self.batch.command_nodes.contains(&node) {
            self.batch.command_nodes.push(node);
        }
        #[derive(serde::Serialize)]
        struct Decided<'a> {
            #[serde(flatten)]
            call: &'a ToolCallRecord,
            decision: &'a str,
            reason: &'a str,
        }
        let body = serde_json::to_vec(&Decided {
            call: &record,
            decision: verdict.decision.as_str(),
            reason: &reason,
        })
        .unwrap_or_default();
        self.history
            .push((ev.task_id.clone(), ev.seq, "tool_call", ev.at_ms, body));
        Ok(None)
    }

    /// Stores a question (once: a resent one changes nothing); true when it is new.
    async fn insert_question(
        &mut self,
        tx: &mut Tx<'_>,
        ev: &TaskEvent,
        seq: u32,
        text: &str,
        tool_call: &str,
    ) -> Result<bool> {
        let r = sqlx::query("INSERT INTO questions (task_id, seq, text, asked_ms, tool_call) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .bind(&ev.task_id)
            .bind(i64::from(seq))
            .bind(text)
            .bind(ev.at_ms)
            .bind(tool_call)
            .execute(&mut **tx)
            .await?;
        let new = r.rows_affected() == 1;
        if new {
            self.open
                .entry(ev.task_id.clone())
                .or_default()
                .push(QuestionRecord {
                    task_id: ev.task_id.clone(),
                    seq,
                    text: text.to_string(),
                    asked_ms: ev.at_ms,
                    answer: None,
                    answered_ms: 0,
                    tool_call: tool_call.to_string(),
                });
        }
        Ok(new)
    }

    /// What the batch acks (each touched task up to its last committed seq) and publishes;
    /// the history rows and tasks to write.
    fn finish(
        mut self,
    ) -> (
        EventBatch,
        Vec<HistoryRow>,
        HashMap<String, TaskRecord>,
        Vec<String>,
    ) {
        if self.unknown > 0 {
            // Once per batch: a node cannot flood the log.
            tracing::warn!(node = %self.session.node, events = self.unknown, "events for unknown tasks; acked so the node drops them");
        }
        for (id, t) in &self.tasks {
            if self.touched.contains(id) {
                self.acks.ack(id, t.last_seq);
            }
        }
        self.batch.acks = self.acks.0;
        (self.batch, self.history, self.tasks, self.touched)
    }
}

/// The tables an event of the current run fills besides its history: the task's output, its
/// diff and the bundle of its changes.
async fn write_side_tables(tx: &mut Tx<'_>, ev: &TaskEvent) -> Result<()> {
    match &ev.kind {
        EventKind::Output {
            markdown,
            bytes,
            truncated,
        } => {
            sqlx::query("INSERT INTO task_outputs (task_id, body, bytes, truncated, updated_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (task_id) DO UPDATE SET body = excluded.body, bytes = excluded.bytes, truncated = excluded.truncated, updated_ms = excluded.updated_ms")
                .bind(&ev.task_id)
                .bind(markdown)
                .bind(*bytes as i64)
                .bind(*truncated)
                .bind(ev.at_ms)
                .execute(&mut **tx)
                .await?;
        }
        EventKind::Changes(c) => {
            sqlx::query("INSERT INTO task_diffs (task_id, diff) VALUES ($1, $2) ON CONFLICT (task_id) DO UPDATE SET diff = excluded.diff")
                .bind(&ev.task_id)
                .bind(&c.diff)
                .execute(&mut **tx)
                .await?;
            // A resent ChangesReady starts the bundle again.
            sqlx::query("DELETE FROM task_bundles WHERE task_id = $1")
                .bind(&ev.task_id)
                .execute(&mut **tx)
                .await?;
        }
        EventKind::BundleChunk { offset, data } => {
            sqlx::query("INSERT INTO task_bundles (task_id, \"offset\", data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&ev.task_id)
                .bind(*offset as i64)
                .bind(data)
                .execute(&mut **tx)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Adds what owners spent to their spend of today (UTC).
async fn add_spend(
    tx: &mut Tx<'_>,
    spent: &[(String, dispatch_core::budget::Spend)],
    now_ms: i64,
) -> Result<()> {
    let day = dispatch_core::budget::day_of(now_ms);
    for (owner, s) in spent {
        sqlx::query(
            "INSERT INTO spend_days (owner, day, usd_micros, tokens) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner, day) DO UPDATE SET usd_micros = spend_days.usd_micros + excluded.usd_micros, \
             tokens = spend_days.tokens + excluded.tokens",
        )
        .bind(owner)
        .bind(day)
        .bind(s.usd_micros.min(i64::MAX as u64) as i64)
        .bind(s.tokens.min(i64::MAX as u64) as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts history rows, many per statement.
async fn insert_history(tx: &mut Tx<'_>, history: Vec<HistoryRow>) -> Result<()> {
    let mut history = history.into_iter().peekable();
    while history.peek().is_some() {
        let mut q =
            sqlx::QueryBuilder::<Db>::new("INSERT INTO events (task_id, seq, kind, at_ms, body) ");
        q.push_values(
            history.by_ref().take(EVENTS_PER_STATEMENT),
            |mut row, (task_id, seq, kind, at_ms, body)| {
                row.push_bind(task_id)
                    .push_bind(seq as i64)
                    .push_bind(kind)
                    .push_bind(at_ms)
                    .push_bind(body);
            },
        );
        q.push(" ON CONFLICT DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes back the touched tasks: only the columns the event path owns.
async fn update_tasks(
    tx: &mut Tx<'_>,
    tasks: &HashMap<String, TaskRecord>,
    touched: &[String],
) -> Result<()> {
    for chunk in touched.chunks(TASKS_PER_UPDATE) {
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "UPDATE tasks SET state = v.column2, reason = v.column3, plan_md = v.column4, \
             exit_code = v.column5, started_ms = v.column6, ended_ms = v.column7, \
             updated_ms = v.column8, last_seq = v.column9, branch = v.column10, \
             cleaned = v.column11, log_bytes = v.column12, output_bytes = v.column13, \
             output_truncated = v.column14, changes = v.column15, usage = v.column16, \
             activity = v.column17, backend = v.column18, model = v.column19, \
             attempt = v.column20, fallback = v.column21, trouble = v.column22, \
             limit_until_ms = v.column23, plan_bytes = v.column24, remote = v.column25, \
             reset_resumes = v.column26 FROM (",
        );
        q.push_values(chunk, |mut row, id| {
            let t = &tasks[id];
            row.push_bind(t.id.clone())
                .push_bind(t.state.as_str())
                .push_bind(t.reason.clone())
                .push_bind(t.plan_md.clone())
                .push_bind(t.exit_code)
                .push_bind(t.started_ms)
                .push_bind(t.ended_ms)
                .push_bind(t.updated_ms)
                .push_bind(t.last_seq as i64)
                .push_bind(t.branch.clone())
                .push_bind(t.cleaned)
                .push_bind(t.log_bytes as i64)
                .push_bind(t.output_bytes as i64)
                .push_bind(t.output_truncated)
                .push_bind(rows::changes_json(&t.changes))
                .push_bind(rows::usage_json(&t.usage))
                .push_bind(t.activity.clone())
                .push_bind(t.backend.clone())
                .push_bind(t.model.clone())
                .push_bind(i64::from(t.attempt.max(1)))
                .push_bind(rows::fallback_json(&t.fallback))
                .push_bind(t.trouble.clone())
                .push_bind(t.limit_until_ms)
                .push_bind(t.plan_bytes as i64)
                .push_bind(t.remote.clone())
                .push_bind(i64::from(t.reset_resumes));
        });
        q.push(") AS v WHERE tasks.id = v.column1");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Backend {
    /// Records one session's batch in one transaction: the tasks it touches and their open
    /// questions are read, each event is fenced ([`fence`]) and either set aside as history
    /// or applied ([`Recording::apply`]), then the history rows and the touched tasks are
    /// written and the whole commits at once.
    pub(super) async fn record_events_impl(
        &self,
        session: &SessionKey,
        events: Vec<IncomingEvent>,
        rules: &dyn EventRules,
        caps: HistoryCaps,
    ) -> Result<EventBatch> {
        let mut tx = self.write().await?;
        let (tasks, open) = held_tasks(&mut tx, &events).await?;
        let mut r = Recording {
            session,
            rules,
            caps,
            tasks,
            open,
            batch: EventBatch::default(),
            acks: Acks(Vec::new()),
            history: Vec::with_capacity(events.len()),
            touched: Vec::new(),
            unknown: 0,
            spent: Vec::new(),
        };
        for IncomingEvent { event: ev } in events {
            let Some(ended) = r.admit(&ev) else {
                continue;
            };
            if r.set_aside(&ev, ended) {
                continue;
            }
            r.apply(&mut tx, ev).await?;
        }
        let spent = std::mem::take(&mut r.spent);
        let (batch, history, tasks, touched) = r.finish();
        add_spend(&mut tx, &spent, crate::now_ms()).await?;
        insert_history(&mut tx, history).await?;
        update_tasks(&mut tx, &tasks, &touched).await?;
        tx.commit().await?;
        Ok(batch)
    }

    pub(super) async fn log_page_impl(
        &self,
        task: &str,
        stream: crate::model::LogStream,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        use sqlx::Row;
        // Chunks are at most 64 KiB: this many rows stays near max_bytes.
        let rows_wanted = (max_bytes / (64 * 1024)).clamp(1, 256) as i64;
        let rows = sqlx::query("SELECT seq, body FROM events WHERE task_id = $1 AND kind = $4 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(task)
            .bind(after_seq as i64)
            .bind(rows_wanted)
            .bind(stream.kind())
            .fetch_all(&self.reader)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for r in rows {
            let data: Vec<u8> = r.try_get(1)?;
            bytes += data.len();
            out.push((r.try_get::<i64, _>(0)? as u64, data));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn compact_impl(&self, ended_before_ms: i64) -> Result<Compacted> {
        let mut done = Compacted::default();
        loop {
            let mut tx = self.write().await?;
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM events WHERE (task_id, seq) IN (SELECT e.task_id, e.seq FROM events e \
                 JOIN tasks t ON t.id = e.task_id WHERE e.kind NOT IN ('log', 'activity') AND t.ended_ms > 0 \
                 AND t.ended_ms < $1 AND t.state IN {ENDED_SQL} LIMIT $2)"
            )))
            .bind(ended_before_ms)
            .bind(COMPACT_BATCH)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            done.events += r.rows_affected();
            if (r.rows_affected() as i64) < COMPACT_BATCH {
                break;
            }
        }
        loop {
            let mut tx = self.write().await?;
            let r = sqlx::query("DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE acked_ms IS NOT NULL AND acked_ms < $1 LIMIT $2)")
                .bind(ended_before_ms)
                .bind(COMPACT_BATCH)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            done.commands += r.rows_affected();
            if (r.rows_affected() as i64) < COMPACT_BATCH {
                break;
            }
        }
        let mut tx = self.write().await?;
        let r = sqlx::query("DELETE FROM requests WHERE created_ms < $1")
            .bind(ended_before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        done.requests = r.rows_affected();
        Ok(done)
    }
}
