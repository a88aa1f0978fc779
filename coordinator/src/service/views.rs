//! Tasks as the CLI sees them: each with its questions and, while queued, its queue position.

use crate::Coordinator;
use crate::convert::task_to_proto;
use crate::error::Result;
use crate::model::TaskRecord;
use dispatch_core::TaskState;
use dispatch_proto::v1;

/// The wire view of one task.
pub(crate) async fn task_view(c: &Coordinator, t: &TaskRecord) -> Result<v1::Task> {
    Ok(task_views(c, std::slice::from_ref(t)).await?.remove(0))
}

/// The wire views of many tasks, with two store reads however many there are.
pub(crate) async fn task_views(c: &Coordinator, records: &[TaskRecord]) -> Result<Vec<v1::Task>> {
    let queued = if records.iter().any(|t| t.state == TaskState::Queued) {
        c.store.queued_ids().await?
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
            task_to_proto(t, asked, position, true)
        })
        .collect())
}
