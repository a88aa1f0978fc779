//! Tasks as the CLI sees them: each with its questions and, while queued, its queue position.

use super::auth::{Sight, sees_all, summarize};
use crate::Coordinator;
use crate::convert::{task_to_proto, waiting_for};
use crate::error::Result;
use crate::model::{Principal, TaskRecord};
use dispatch_core::TaskState;
use dispatch_proto::v1;

/// A caller and how much of tasks it may see.
pub(crate) type Viewer<'a> = (&'a Principal, Sight);

/// The wire view of one task, as `viewer` may see it.
pub(crate) async fn task_view(
    c: &Coordinator,
    t: &TaskRecord,
    viewer: Viewer<'_>,
) -> Result<v1::Task> {
    Ok(task_views(c, std::slice::from_ref(t), viewer)
        .await?
        .remove(0))
}

/// The wire views of many tasks, as `viewer` may see them, with two store reads however many
/// there are.
pub(crate) async fn task_views(
    c: &Coordinator,
    records: &[TaskRecord],
    (who, sight): Viewer<'_>,
) -> Result<Vec<v1::Task>> {
    let queued = if records.iter().any(|t| t.state == TaskState::Queued) {
        c.store.queued_ids().await?
    } else {
        Vec::new()
    };
    // A task queued for a node of its own says what that node is doing.
    let nodes = if records
        .iter()
        .any(|t| t.state == TaskState::Queued && !t.remote.is_empty())
    {
        c.list_nodes().await?
    } else {
        Vec::new()
    };
    let ids: Vec<&str> = records.iter().map(|t| t.id.as_str()).collect();
    let questions = c.store.questions_of(&ids).await?;
    Ok(records
        .iter()
        .map(|t| {
            let position = queued
                .iter()
                .position(|q| *q == t.id)
                .map_or(0, |p| p as u32 + 1);
            let asked = questions.get(&t.id).map(Vec::as_slice).unwrap_or_default();
            let mut view = task_to_proto(t, asked, position, true, &c.config.budgets.prices);
            if t.state == TaskState::Queued && t.limit_until_ms > crate::now_ms() {
                view.waiting = format!(
                    "its CLI's usage limit resets at {}; it resumes then on node `{}`",
                    dispatch_core::signals::utc_text(t.limit_until_ms),
                    dispatch_core::text::printable_line(&t.remote)
                );
            } else if t.state == TaskState::Queued && !t.remote.is_empty() {
                let node = nodes.iter().find(|(n, _)| n.name == t.remote);
                view.waiting = waiting_for(&t.remote, node);
            }
            if !sees_all(who, sight, &t.owner) {
                summarize(&mut view);
            }
            view
        })
        .collect())
}
