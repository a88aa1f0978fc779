//! What a committed write changed: the one input of [`crate::Coordinator::committed`].

use super::{LogStream, QuestionRecord, TaskRecord};
use dispatch_core::TaskState;
use std::sync::Arc;

/// What about a task changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Its state (or node, reason, exit).
    State,
    /// Its plan.
    Plan,
    /// A new question.
    Question,
    /// An answer (given, or taken by the worker).
    Answer,
    /// Its output.md.
    Output,
    /// What it changed in its repository.
    Changes,
    /// Its structured stream's activity and totals.
    Activity,
}

impl ChangeKind {
    /// Name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::State => "state",
            ChangeKind::Plan => "plan",
            ChangeKind::Question => "question",
            ChangeKind::Answer => "answer",
            ChangeKind::Output => "output",
            ChangeKind::Changes => "changes",
            ChangeKind::Activity => "activity",
        }
    }
}

/// A task after a committed change.
#[derive(Debug, Clone)]
pub struct TaskChange {
    /// The task now, without its texts (prompt, worker prompt).
    pub task: TaskRecord,
    /// Its state before.
    pub before: TaskState,
    /// What changed.
    pub kind: ChangeKind,
    /// The agent event that changed it (0 for a change made by the coordinator).
    pub seq: u64,
    /// Its unanswered questions, and the question the change is about.
    pub questions: Vec<QuestionRecord>,
    /// The question the change is about, when there is one.
    pub question: Option<u32>,
    /// The node whose slot the task gave back (its worker ended there).
    pub freed_slot: Option<String>,
}

impl TaskChange {
    /// True when this change ended the task.
    pub fn ended(&self) -> bool {
        self.task.state.is_terminal() && self.task.state != self.before
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A task changed.
    Task(Box<TaskChange>),
    /// Worker output (or the activity lines read from it) was stored.
    Log {
        /// The task.
        task_id: String,
        /// Its event seq.
        seq: u64,
        /// Raw output, or activity lines.
        stream: LogStream,
        /// The bytes.
        data: Arc<[u8]>,
    },
}

/// What a write committed: every change goes to [`crate::Coordinator::committed`], the one
/// place that tells watchers, followers, notifications, slots and the scheduler.
#[must_use = "committed changes must be handed to Coordinator::committed"]
#[derive(Debug, Default)]
pub struct Changes(pub Vec<Change>);

impl Changes {
    /// No change.
    pub fn none() -> Changes {
        Changes(Vec::new())
    }

    /// Adds `other`'s changes after these.
    pub fn extend(&mut self, other: Changes) {
        self.0.extend(other.0);
    }

    /// The last task change of `id`, if any.
    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.0.iter().rev().find_map(|c| match c {
            Change::Task(t) if t.task.id == id => Some(&t.task),
            _ => None,
        })
    }
}
