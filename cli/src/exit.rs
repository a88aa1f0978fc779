//! Every exit status `dispatch` uses, in one place (`--help` of `wait` and `watch` lists the
//! task ones).

use dispatch_core::TaskState;

/// An exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Exit {
    /// Done; for a task, it completed.
    Success = 0,
    /// An error (printed on stderr), or nothing to show (`output` before there is one).
    Failure = 1,
    /// A request that cannot be right: a bad id, an unknown task for `wait`, a mistyped
    /// command.
    Usage = 2,
    /// A task asks a question (`wait`).
    Question = 10,
    /// A task is blocked.
    Blocked = 11,
    /// A task failed, or was lost with its node.
    Failed = 12,
    /// A task was cancelled.
    Cancelled = 13,
    /// `wait --timeout` ran out with nothing to report.
    TimedOut = 124,
}

impl Exit {
    /// The status for a task that ended in (or is in) `s`.
    pub(crate) fn of(s: TaskState) -> Exit {
        match s {
            TaskState::Completed => Exit::Success,
            TaskState::Blocked => Exit::Blocked,
            TaskState::Failed | TaskState::Lost => Exit::Failed,
            TaskState::Cancelled => Exit::Cancelled,
            _ => Exit::Failure,
        }
    }

    /// What a task-waiting exit status means, as one word (the MCP `wait_for_task` tool's
    /// `why`).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Exit::Success => "completed",
            Exit::Question => "question",
            Exit::Blocked => "blocked",
            Exit::Failed => "failed",
            Exit::Cancelled => "cancelled",
            Exit::TimedOut => "timeout",
            Exit::Failure | Exit::Usage => "ended",
        }
    }
}

impl From<Exit> for u8 {
    fn from(e: Exit) -> u8 {
        e as u8
    }
}
