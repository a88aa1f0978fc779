//! The rules of the coordinator, on its own types: submitting, what agent events do, questions
//! and answers, cancel/retry/clean, node sessions, and history retention. Each operation
//! decides inside one store transaction and hands the committed changes to
//! [`crate::Coordinator::committed`].

pub mod access;
pub mod events;
pub mod lifecycle;
pub mod policy;
pub mod questions;
pub mod retention;
pub mod sessions;
pub mod submit;

pub use submit::SubmitSpec;

use crate::Coordinator;
use crate::error::{CoordinatorError, Result};
use crate::model::{Principal, TaskRecord};
use crate::store::Transitioned;

/// Refuses `who` acting on task `t` unless it is theirs (or they are an admin or the local
/// owner).
pub(crate) fn must_own(who: &Principal, t: &TaskRecord) -> Result<()> {
    if who.owns(&t.owner) {
        return Ok(());
    }
    Err(CoordinatorError::PermissionDenied(format!(
        "task `{}` belongs to {}; {} may act only on their own tasks (an admin may act on any)",
        t.id,
        if t.owner.is_empty() {
            "nobody you can name"
        } else {
            &t.owner
        },
        who.name()
    )))
}

impl Coordinator {
    /// Publishes a committed transition and wakes the command pumps of the nodes it stored
    /// commands for; returns the task as it is now.
    pub(crate) fn finish(&self, done: Transitioned) -> TaskRecord {
        self.committed(done.changes);
        for node in &done.command_nodes {
            self.registry.wake(node);
        }
        done.task
    }
}
