//! Wire (`dispatch.v1`) ↔ domain. The only module besides `service/` that names `v1::` types.

use crate::domain::SubmitSpec;
use crate::model::{
    Assignment, BackendRecord, ChangesMeta, EventKind, NodeCommand, NodeHello, NodeRecord,
    OpenQuestion, QuestionRecord, Repo, TaskChange, TaskCursor, TaskEvent, TaskRecord, WorkerExit,
};
use crate::registry::Liveness;
use dispatch_proto::convert::{plan_to_proto, state_to_proto};
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind as K;

/// A stored task (and its questions) as the wire `Task`; `with_prompt` false leaves the prompt
/// out (change events: it never changes, and repeating it to every watcher limited fan-out).
pub fn task_to_proto(
    t: &TaskRecord,
    questions: &[QuestionRecord],
    queue_position: u32,
    with_prompt: bool,
    prices: &dispatch_core::budget::Prices,
) -> v1::Task {
    let spend = prices.task_spend(t.usage.values(), &t.model);
    let budget = |b: dispatch_core::budget::Budget| v1::Budget {
        usd_micros: b.usd_micros,
        tokens: b.tokens,
    };
    v1::Task {
        budget: t.budget.map(|b| budget(b.limit)),
        budget_step: t.budget.map(|b| budget(b.step)),
        spend: (!t.usage.is_empty()).then_some(v1::Spend {
            usd_micros: spend.usd_micros,
            tokens: spend.tokens,
            estimated: spend.estimated,
        }),
        id: t.id.clone(),
        state: state_to_proto(t.state) as i32,
        title: t.title.clone(),
        prompt: if with_prompt {
            t.prompt.clone()
        } else {
            String::new()
        },
        node: t.node.clone(),
        remote: t.remote.clone(),
        backend: t.backend.clone(),
        model: t.model.clone(),
        workdir: t.workdir.clone(),
        after: t.after.clone(),
        plan: Some(plan_to_proto(&t.plan_md)),
        questions: questions.iter().map(question_to_proto).collect(),
        reason: t.reason.clone(),
        exit_code: t.exit_code,
        created_at_ms: t.created_ms,
        updated_at_ms: t.updated_ms,
        started_at_ms: t.started_ms,
        ended_at_ms: t.ended_ms,
        queue_position,
        priority: t.priority,
        branch: t.branch.clone(),
        worktree: t.worktree,
        cleaned: t.cleaned,
        pool: t.pool.clone().into_iter().collect(),
        repo: (!t.repo.0.is_empty()).then(|| v1::Repo {
            url: t.repo.0.clone(),
            branch: t.repo.1.clone(),
            commit: t.repo.2.clone(),
        }),
        attempt: t.attempt,
        owner: t.owner.clone(),
        summary: false,
        signer: t.signer.clone(),
        output_bytes: t.output_bytes,
        output_truncated: t.output_truncated,
        changes: t.changes.as_ref().map(changes_to_proto),
        deliver: t.deliver.clone(),
        usage: (!t.usage.is_empty()).then(|| {
            dispatch_proto::convert::usage_to_proto(&dispatch_core::stream::total(t.usage.values()))
        }),
        activity: t.activity.clone(),
        trouble: t.trouble.clone(),
        limit_until_ms: t.limit_until_ms,
        fallback: t
            .fallback
            .as_ref()
            .map(|f| f.note.clone())
            .unwrap_or_default(),
        waiting: String::new(),
        notes: t
            .notes
            .iter()
            .map(|n| v1::Note {
                text: n.text.clone(),
                author: n.author.clone(),
                at_ms: n.at_ms,
            })
            .collect(),
    }
}

/// What a task queued for node `remote` waits for, for people; "" when the node could take
/// it now (the scheduler is about to) or when nothing is known of it.
pub fn waiting_for(remote: &str, node: Option<&(NodeRecord, Option<Liveness>)>) -> String {
    let name = dispatch_core::text::printable_line(remote);
    let Some((n, live)) = node else {
        return format!("node `{name}` has never connected");
    };
    match live {
        _ if n.cordoned => format!(
            "node `{name}` is cordoned; `dispatch nodes uncordon {name}` lets it take tasks again"
        ),
        None => format!("node `{name}` is offline; it runs the task when it reconnects"),
        Some(l) if l.draining => format!(
            "node `{name}` is draining (its agent is stopping); it runs the task when an agent of that name reconnects"
        ),
        Some(l) if l.running >= n.capacity => format!(
            "node `{name}` has no free slot ({}/{} running)",
            l.running, n.capacity
        ),
        Some(_) => String::new(),
    }
}

/// What a task changed, on the wire.
pub fn changes_to_proto(c: &ChangesMeta) -> v1::ChangesInfo {
    v1::ChangesInfo {
        branch: c.branch.clone(),
        base: c.base.clone(),
        head: c.head.clone(),
        commits: c.commits,
        files: c.files,
        insertions: c.insertions,
        deletions: c.deletions,
        delivery: c.delivery.clone(),
        pushed_to: c.pushed_to.clone(),
        bundle_bytes: c.bundle_bytes,
        bundle_stored: c.bundle_stored,
        error: c.error.clone(),
        diff_truncated: c.diff_truncated,
    }
}

fn question_to_proto(q: &QuestionRecord) -> v1::Question {
    v1::Question {
        seq: q.seq,
        text: q.text.clone(),
        answer: q.answer.clone(),
        asked_at_ms: q.asked_ms,
        answered_at_ms: q.answered_ms,
        kind: q.kind().to_string(),
    }
}

/// A committed change as the watch event every watcher gets.
pub fn change_to_proto(c: &TaskChange, prices: &dispatch_core::budget::Prices) -> v1::WatchEvent {
    v1::WatchEvent {
        task: Some(task_to_proto(&c.task, &c.questions, 0, false, prices)),
        change: c.kind.as_str().to_string(),
        seq: c.seq,
    }
}

/// An unanswered question as the inbox lists it.
pub fn open_question_to_proto(o: OpenQuestion) -> v1::PendingQuestion {
    v1::PendingQuestion {
        kind: o.question.kind().to_string(),
        task_id: o.question.task_id,
        node: o.node,
        seq: o.question.seq,
        text: o.question.text,
        asked_at_ms: o.question.asked_ms,
        title: o.title,
        state: state_to_proto(o.state) as i32,
    }
}

/// A stored node as the wire `Node`, with its live session when it has one.
pub fn node_to_proto(n: &NodeRecord, live: Option<&Liveness>) -> v1::Node {
    v1::Node {
        name: n.name.clone(),
        labels: n.labels.clone().into_iter().collect(),
        backends: n
            .backends
            .iter()
            .map(|b| v1::Backend {
                name: b.name.clone(),
                command: b.command.clone(),
                models: b.models.clone(),
                max_tasks: b.max_tasks,
                version: b.version.clone(),
                error: b.error.clone(),
            })
            .collect(),
        running: live.map_or(0, |l| l.running),
        capacity: n.capacity,
        connected: live.is_some(),
        last_seen_ms: live.map_or(n.last_seen_ms, |l| l.last_seen_ms),
        version: n.version.clone(),
        hostname: n.hostname.clone(),
        session_address: live.map(|l| l.addr.clone()).unwrap_or_default(),
        session_started_ms: live.map_or(0, |l| l.started_ms),
        epoch: live.map_or(n.epoch, |l| l.epoch),
        draining: live.is_some_and(|l| l.draining) || n.cordoned,
        cordoned: n.cordoned,
        ephemeral: n.ephemeral,
    }
}

/// A node's Hello in domain terms.
pub fn hello_from_proto(h: v1::Hello) -> NodeHello {
    NodeHello {
        node: NodeRecord {
            name: h.name,
            labels: h.labels.into_iter().collect(),
            backends: h
                .backends
                .into_iter()
                .map(|b| BackendRecord {
                    name: b.name,
                    command: b.command,
                    models: b.models,
                    max_tasks: b.max_tasks,
                    version: b.version,
                    error: b.error,
                })
                .collect(),
            capacity: h.capacity,
            version: h.version,
            hostname: h.hostname,
            ephemeral: h.ephemeral,
            ..Default::default()
        },
        cursors: h
            .tasks
            .into_iter()
            .map(|c| TaskCursor {
                task_id: c.task_id,
                seq: c.seq,
                running: c.running,
            })
            .collect(),
    }
}

/// An agent event in domain terms; an event without a kind is an error.
pub fn event_from_proto(ev: v1::TaskEvent) -> Result<TaskEvent, String> {
    let kind = match ev.kind {
        None => {
            return Err(format!(
                "event {} of task `{}` has no kind",
                ev.seq, ev.task_id
            ));
        }
        Some(K::Started(s)) => EventKind::Started {
            pid: s.pid,
            command: s.command,
            workdir: s.workdir,
            branch: s.branch,
        },
        Some(K::Plan(p)) => EventKind::Plan {
            markdown: p.markdown,
        },
        Some(K::Log(l)) => EventKind::Log { data: l.data },
        Some(K::Exited(x)) => EventKind::Exited(WorkerExit {
            exit_code: x.exit_code,
            signal: x.signal,
            markdown: x.markdown,
            done_marker: x.done_marker,
            cancelled: x.cancelled,
            detail: x.detail,
            fault: x.fault,
            drained: x.drained,
            cli: dispatch_proto::convert::failure_from_proto(x.cli.as_ref()),
        }),
        Some(K::StartFailed(f)) => EventKind::StartFailed {
            cli: dispatch_proto::convert::failure_from_proto(f.cli.as_ref()),
            error: f.error,
        },
        Some(K::Question(q)) => EventKind::Question {
            seq: q.seq,
            text: q.text,
        },
        Some(K::AnswerDelivered(a)) => EventKind::AnswerDelivered { seq: a.seq },
        Some(K::Changes(c)) => EventKind::Changes(Box::new(ChangesMeta {
            branch: c.branch,
            base: c.base,
            head: c.head,
            commits: c.commits,
            files: c.files,
            insertions: c.insertions,
            deletions: c.deletions,
            diff: c.diff,
            diff_truncated: c.diff_truncated,
            delivery: c.delivery,
            pushed_to: c.pushed_to,
            bundle_bytes: c.bundle_bytes,
            bundle_stored: 0,
            error: c.error,
        })),
        Some(K::Bundle(b)) => EventKind::BundleChunk {
            offset: b.offset,
            data: b.data,
        },
        Some(K::Activity(a)) => EventKind::Activity {
            lines: a.lines,
            usage: a
                .usage
                .as_ref()
                .map(dispatch_proto::convert::usage_from_proto),
        },
        Some(K::ToolCall(c)) => EventKind::ToolCall {
            call: c.call,
            tool: c.tool,
            input_json: c.input_json,
            cwd: c.cwd,
        },
        Some(K::Output(o)) => EventKind::Output {
            markdown: o.markdown,
            bytes: o.bytes,
            truncated: o.truncated,
        },
    };
    Ok(TaskEvent {
        task_id: ev.task_id,
        seq: ev.seq,
        at_ms: ev.at_ms,
        attempt: ev.attempt,
        kind,
    })
}

/// A stored command as the wire `Command` with its id.
pub fn command_to_proto(id: u64, c: &NodeCommand) -> v1::Command {
    use v1::command::Kind as C;
    let kind = match c {
        NodeCommand::Assign(a) => C::Assign(v1::Assign {
            task_id: a.task_id.clone(),
            backend: a.backend.clone(),
            model: a.model.clone(),
            worker_prompt: a.worker_prompt.clone(),
            plan_markdown: a.plan_markdown.clone(),
            workdir: a.workdir.clone(),
            last_seq: a.last_seq,
            attempt: a.attempt,
            worktree: a.worktree,
            repo: a.repo.as_ref().map(|r| v1::Repo {
                url: r.url.clone(),
                branch: r.branch.clone(),
                commit: r.commit.clone(),
            }),
            signed_spec: a.signed_spec.clone().into_bytes(),
            signature: a.signature.clone(),
            deliver: a.deliver.clone(),
            traceparent: a.trace.clone(),
            approvals: a.approvals,
            tool_hook: a.tool_hook,
        }),
        NodeCommand::Cancel { task_id, attempt } => C::Cancel(v1::CancelTask {
            task_id: task_id.clone(),
            attempt: *attempt,
        }),
        NodeCommand::Answer { task_id, seq, text } => C::Answer(v1::DeliverAnswer {
            task_id: task_id.clone(),
            seq: *seq,
            text: text.clone(),
        }),
        NodeCommand::Note { task_id, text } => C::Note(v1::AppendNote {
            task_id: task_id.clone(),
            text: text.clone(),
        }),
        NodeCommand::RemoveWorktree { task_id, path } => C::RemoveWorktree(v1::RemoveWorktree {
            task_id: task_id.clone(),
            path: path.clone(),
        }),
        NodeCommand::Drain {
            draining,
            timeout_ms,
        } => C::Drain(v1::NodeDrain {
            draining: *draining,
            timeout_ms: *timeout_ms,
        }),
        NodeCommand::ToolDecision {
            task_id,
            attempt,
            call,
            allow,
            reason,
            seq,
        } => C::ToolDecision(v1::ToolDecision {
            task_id: task_id.clone(),
            attempt: *attempt,
            call: *call,
            decision: if *allow { "allow" } else { "deny" }.into(),
            reason: reason.clone(),
            seq: *seq,
        }),
    };
    v1::Command {
        id,
        kind: Some(kind),
    }
}

/// A wire command in domain terms (stores before schema 8 kept them encoded).
pub fn command_from_proto(c: v1::Command) -> Result<NodeCommand, String> {
    use v1::command::Kind as C;
    Ok(match c.kind.ok_or("a command without a kind")? {
        C::Assign(a) => NodeCommand::Assign(Box::new(Assignment {
            task_id: a.task_id,
            backend: a.backend,
            model: a.model,
            worker_prompt: a.worker_prompt,
            plan_markdown: a.plan_markdown,
            workdir: a.workdir,
            last_seq: a.last_seq,
            attempt: a.attempt,
            worktree: a.worktree,
            repo: a.repo.map(|r| Repo {
                url: r.url,
                branch: r.branch,
                commit: r.commit,
            }),
            signed_spec: String::from_utf8(a.signed_spec).unwrap_or_default(),
            signature: a.signature,
            deliver: a.deliver,
            trace: a.traceparent,
            approvals: a.approvals,
            tool_hook: a.tool_hook,
        })),
        C::Cancel(x) => NodeCommand::Cancel {
            task_id: x.task_id,
            attempt: x.attempt,
        },
        C::Answer(a) => NodeCommand::Answer {
            task_id: a.task_id,
            seq: a.seq,
            text: a.text,
        },
        C::Note(n) => NodeCommand::Note {
            task_id: n.task_id,
            text: n.text,
        },
        C::RemoveWorktree(r) => NodeCommand::RemoveWorktree {
            task_id: r.task_id,
            path: r.path,
        },
        C::Drain(d) => NodeCommand::Drain {
            draining: d.draining,
            timeout_ms: d.timeout_ms,
        },
        C::ToolDecision(d) => NodeCommand::ToolDecision {
            task_id: d.task_id,
            attempt: d.attempt,
            call: d.call,
            allow: d.decision == "allow",
            reason: d.reason,
            seq: d.seq,
        },
    })
}

/// A submit request in domain terms.
pub fn submit_from_proto(r: v1::SubmitRequest) -> SubmitSpec {
    SubmitSpec {
        id: r.id,
        prompt: r.prompt,
        steps: r.steps,
        plan_markdown: r.plan_markdown,
        remote: r.remote,
        backend: r.backend,
        model: r.model,
        after: r.after,
        workdir: r.workdir,
        priority: r.priority,
        title: r.title,
        worktree: r.worktree,
        alias_prompt: r.alias_prompt,
        pool: r.pool.into_iter().collect(),
        repo: r.repo.filter(|r| !r.url.is_empty()).map(|r| Repo {
            url: r.url,
            branch: r.branch,
            commit: r.commit,
        }),
        request_id: r.request_id,
        signed_spec: r.signed_spec,
        signature: r.signature,
        deliver: r.deliver,
        fallback: r
            .fallback
            .into_iter()
            .map(|f| (f.backend, f.model))
            .collect(),
        fallback_on: r.fallback_on,
        budget: r.budget,
    }
}

/// The tool policy as the wire carries it (YAML).
pub fn policy_to_proto(p: &crate::domain::policy::PolicyView) -> v1::Policy {
    v1::Policy {
        config_yaml: p.config.to_yaml(),
        stored_yaml: p.stored.to_yaml(),
        effective_yaml: p.effective.to_yaml(),
        updated_ms: p.updated_ms,
        updated_by: p.updated_by.clone(),
    }
}
