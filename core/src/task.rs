//! Task states and how a worker's exit maps to one.

use crate::plan::{ItemStatus, Plan};
use std::fmt;
use std::str::FromStr;

/// Where a task is in its life:
/// `queued → assigned → running ⇄ waiting → completed | failed | blocked | cancelled | lost`,
/// and `unreachable` while the node of an active task is silent (back to where it was if the
/// node returns within the grace, else `lost`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for a node with a free slot (or for its `--after` dependency).
    #[default]
    Queued,
    /// Sent to a node that has not started the worker yet.
    Assigned,
    /// The worker is running.
    Running,
    /// The worker asked a question that has no answer yet.
    Waiting,
    /// The worker exited with every item checked (or wrote `ipc/.done`).
    Completed,
    /// A `[!]` item, an exit with unchecked items, or a worker that could not start.
    Failed,
    /// The worker exited on a `[?]` item (its question timed out).
    Blocked,
    /// Cancelled by a user.
    Cancelled,
    /// The node running it went away and did not come back in time.
    Lost,
    /// The node running it fell silent; the task is `lost` unless the node comes back within
    /// the grace (`--node-timeout`).
    Unreachable,
}

impl TaskState {
    /// All states, in lifecycle order.
    pub const ALL: [TaskState; 10] = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Waiting,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Blocked,
        TaskState::Cancelled,
        TaskState::Lost,
        TaskState::Unreachable,
    ];

    /// True when the task will not change state again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed
                | TaskState::Failed
                | TaskState::Blocked
                | TaskState::Cancelled
                | TaskState::Lost
        )
    }

    /// True while a node holds a slot for the task.
    pub fn holds_slot(self) -> bool {
        matches!(
            self,
            TaskState::Assigned | TaskState::Running | TaskState::Waiting | TaskState::Unreachable
        )
    }

    /// Stable lower-case name (CLI, JSON, store).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Waiting => "waiting",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Blocked => "blocked",
            TaskState::Cancelled => "cancelled",
            TaskState::Lost => "lost",
            TaskState::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = TaskState::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown task state `{s}`; expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// How a worker's exit ends a task, with the reason shown to the user.
pub fn outcome(
    plan: &Plan,
    done_marker: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
) -> (TaskState, String) {
    let items = plan.items();
    if let Some(item) = items.iter().find(|i| i.status == ItemStatus::Error) {
        let mut reason = format!("item failed: {}", item.text);
        if !item.note.is_empty() {
            reason.push_str(&format!(" — {}", item.note));
        }
        return (TaskState::Failed, reason);
    }
    if let Some(item) = items.iter().find(|i| i.status == ItemStatus::Blocked) {
        let mut reason = format!("blocked on: {}", item.text);
        if !item.note.is_empty() {
            reason.push_str(&format!(" — {}", item.note));
        }
        return (TaskState::Blocked, reason);
    }
    let (done, total) = plan.progress();
    if done_marker || done == total && total > 0 {
        return (TaskState::Completed, String::new());
    }
    let how = match (exit_code, signal) {
        (_, Some(sig)) => format!("worker was killed by signal {sig}"),
        (Some(0), _) => "worker exited (status 0)".to_string(),
        (Some(code), _) => format!("worker exited with status {code}"),
        (None, None) => "worker exited".to_string(),
    };
    let done_items: Vec<&str> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Done)
        .map(|i| i.text.as_str())
        .collect();
    let undone: Vec<&str> = items
        .iter()
        .filter(|i| i.status != ItemStatus::Done)
        .map(|i| i.text.as_str())
        .collect();
    let mut reason = format!("{how} with {} of {total} items unchecked", total - done);
    if !done_items.is_empty() {
        reason.push_str(&format!("; done: {}", done_items.join("; ")));
    }
    if !undone.is_empty() {
        reason.push_str(&format!("; not done: {}", undone.join("; ")));
    }
    (TaskState::Failed, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let p = Plan::parse("- [x] a\n- [x] b\n");
        assert_eq!(outcome(&p, false, Some(0), None).0, TaskState::Completed);
        let p = Plan::parse("- [x] a\n- [!] b\n  disk full\n");
        assert_eq!(
            outcome(&p, false, Some(1), None),
            (TaskState::Failed, "item failed: b — disk full".into())
        );
        let p = Plan::parse("- [x] a\n- [?] b\n  which db?\n");
        assert_eq!(outcome(&p, false, Some(0), None).0, TaskState::Blocked);
        let p = Plan::parse("- [x] a\n- [ ] b\n");
        let (s, r) = outcome(&p, false, Some(3), None);
        assert_eq!(s, TaskState::Failed);
        assert_eq!(
            r,
            "worker exited with status 3 with 1 of 2 items unchecked; done: a; not done: b"
        );
        assert_eq!(outcome(&p, true, Some(0), None).0, TaskState::Completed);
        assert!(outcome(&p, false, None, Some(9)).1.contains("signal 9"));
        assert_eq!("waiting".parse::<TaskState>(), Ok(TaskState::Waiting));
        assert!("nope".parse::<TaskState>().is_err());
    }
}
