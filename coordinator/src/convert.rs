//! Store records → wire messages.

use crate::store::{NodeRecord, QuestionRecord, TaskRecord};
use dispatch_proto::convert::{plan_to_proto, state_to_proto};
use dispatch_proto::v1;

/// A stored task (and its questions) as the wire `Task`.
pub fn task_to_proto(
    t: &TaskRecord,
    questions: &[QuestionRecord],
    queue_position: u32,
) -> v1::Task {
    build_task(t, questions, queue_position, t.prompt.clone())
}

/// The task as a watch event after a change carries it: everything but the prompt, which never
/// changes after submit (watchers have it from their snapshot). Each change goes to every
/// watcher, so a 16 KiB prompt repeated in each plan snapshot cut the fan-out rate tenfold.
pub fn task_change_to_proto(
    t: &TaskRecord,
    questions: &[QuestionRecord],
    queue_position: u32,
) -> v1::Task {
    build_task(t, questions, queue_position, String::new())
}

fn build_task(
    t: &TaskRecord,
    questions: &[QuestionRecord],
    queue_position: u32,
    prompt: String,
) -> v1::Task {
    v1::Task {
        id: t.id.clone(),
        state: state_to_proto(t.state) as i32,
        title: t.title.clone(),
        prompt,
        node: t.node.clone(),
        remote: t.remote.clone(),
        backend: t.backend.clone(),
        model: t.model.clone(),
        workdir: t.workdir.clone(),
        after: t.after.clone(),
        plan: Some(plan_to_proto(&t.plan_md)),
        questions: questions
            .iter()
            .map(|q| v1::Question {
                seq: q.seq,
                text: q.text.clone(),
                answer: q.answer.clone(),
                asked_at_ms: q.asked_ms,
                answered_at_ms: q.answered_ms,
            })
            .collect(),
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
    }
}

/// A stored node as the wire `Node`.
/// `live` is (running, last heard from) for a connected node.
pub fn node_to_proto(n: &NodeRecord, live: Option<(u32, i64)>) -> v1::Node {
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
            })
            .collect(),
        running: live.map_or(0, |l| l.0),
        capacity: n.capacity,
        connected: live.is_some(),
        last_seen_ms: live.map_or(n.last_seen_ms, |l| l.1),
        version: n.version.clone(),
        hostname: n.hostname.clone(),
    }
}
