//! What a node reports about a task: its events, as they enter the store, and how a worker ended.

use super::ChangesMeta;
use serde::{Deserialize, Serialize};

/// One event an agent reported for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The task.
    pub task_id: String,
    /// The agent's per-task sequence number.
    pub seq: u64,
    /// When it happened on the node.
    pub at_ms: i64,
    /// The worker run it comes from (0: not said).
    pub attempt: u32,
    /// What happened.
    pub kind: EventKind,
}

/// What an agent event says happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The worker started.
    Started {
        /// Its pid.
        pid: u32,
        /// The command line (prompt elided).
        command: String,
        /// Where it runs.
        workdir: String,
        /// Its worktree branch, for a worktree task.
        branch: String,
    },
    /// plan.md changed.
    Plan {
        /// plan.md as it is now.
        markdown: String,
    },
    /// Worker output.
    Log {
        /// The bytes (stored raw, never in an event body).
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// The worker exited.
    Exited(WorkerExit),
    /// The worker could not start.
    StartFailed {
        /// Why.
        error: String,
        /// What its CLI said, when the node could read it.
        #[serde(default)]
        cli: Option<dispatch_core::signals::Failure>,
    },
    /// `ipc/NNN.question` appeared.
    Question {
        /// NNN.
        seq: u32,
        /// Its text.
        text: String,
    },
    /// output.md changed (its first part; kept in its own table, never in an event body).
    Output {
        /// Its text (the first `MAX_OUTPUT_BYTES`).
        #[serde(skip)]
        markdown: String,
        /// Its whole size on the node.
        bytes: u64,
        /// Whether `markdown` is only its first part.
        truncated: bool,
    },
    /// A worktree or workspace task's work, committed on its branch.
    Changes(Box<ChangesMeta>),
    /// A piece of the bundle of its branch.
    BundleChunk {
        /// Where it goes.
        offset: u64,
        /// Its bytes (stored in their own table, never in an event body).
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// Activity lines of a structured worker stream and the run's totals so far (the lines
    /// are stored as the event's body, the totals on the task).
    Activity {
        /// One per tool use, message or command.
        lines: Vec<String>,
        /// The run's totals.
        usage: Option<dispatch_core::stream::Usage>,
    },
    /// The worker took the answer to question `seq` (`NNN.done`).
    AnswerDelivered {
        /// NNN.
        seq: u32,
    },
    /// An event the coordinator does not take (it could not be read, or breaks a limit): its
    /// seq counts, so the node's sequence stays whole, and it is kept as history only, with
    /// why.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The worker's CLI is about to make a tool call (a run under tool approvals): decided by
    /// the policy, or asked of a person.
    ToolCall {
        /// Numbers the calls of one worker run, from 1.
        call: u64,
        /// The tool (`Bash`, `Edit`, …).
        tool: String,
        /// Its input (JSON, possibly cut).
        input_json: String,
        /// The worker's working directory.
        cwd: String,
    },
}

impl TaskEvent {
    /// Replaces every NUL in the event's text with U+FFFD. A worker may write anything into
    /// its files; no text a store keeps may hold a NUL (PostgreSQL's text refuses it, and both
    /// stores must hold the same), so an event is never refused, or its batch failed, for one.
    pub fn scrub_nul(&mut self) {
        fn scrub(s: &mut String) {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        scrub(&mut self.task_id);
        match &mut self.kind {
            EventKind::Started {
                command,
                workdir,
                branch,
                ..
            } => {
                scrub(command);
                scrub(workdir);
                scrub(branch);
            }
            EventKind::Plan { markdown } | EventKind::Output { markdown, .. } => scrub(markdown),
            EventKind::Exited(x) => {
                scrub(&mut x.markdown);
                scrub(&mut x.detail);
                scrub(&mut x.fault);
                if let Some(f) = &mut x.cli {
                    scrub(&mut f.message);
                }
            }
            EventKind::StartFailed { error, cli } => {
                scrub(error);
                if let Some(f) = cli {
                    scrub(&mut f.message);
                }
            }
            EventKind::Question { text, .. } => scrub(text),
            EventKind::Rejected { reason } => scrub(reason),
            EventKind::ToolCall {
                tool,
                input_json,
                cwd,
                ..
            } => {
                scrub(tool);
                scrub(input_json);
                scrub(cwd);
            }
            EventKind::Changes(c) => {
                for s in [
                    &mut c.branch,
                    &mut c.base,
                    &mut c.head,
                    &mut c.diff,
                    &mut c.delivery,
                    &mut c.pushed_to,
                    &mut c.error,
                ] {
                    scrub(s);
                }
            }
            EventKind::Activity { lines, usage } => {
                lines.iter_mut().for_each(scrub);
                if let Some(u) = usage {
                    scrub(&mut u.model);
                }
            }
            EventKind::Log { .. }
            | EventKind::BundleChunk { .. }
            | EventKind::AnswerDelivered { .. } => {}
        }
    }
}

impl EventKind {
    /// Stable name (stored with the event).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::Plan { .. } => "plan",
            EventKind::Log { .. } => "log",
            EventKind::Exited(_) => "exited",
            EventKind::StartFailed { .. } => "start_failed",
            EventKind::Question { .. } => "question",
            EventKind::AnswerDelivered { .. } => "answer_delivered",
            EventKind::Output { .. } => "output",
            EventKind::Changes(_) => "changes",
            EventKind::BundleChunk { .. } => "bundle",
            EventKind::Activity { .. } => "activity",
            EventKind::Rejected { .. } => "rejected",
            EventKind::ToolCall { .. } => "tool_call",
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerExit {
    /// Exit status, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal, when one killed it.
    pub signal: Option<i32>,
    /// plan.md as the worker left it.
    pub markdown: String,
    /// `ipc/.done` existed.
    pub done_marker: bool,
    /// The node stopped it on a cancel.
    pub cancelled: bool,
    /// Extra context for the reason.
    pub detail: String,
    /// The agent stopped it because its task directory broke a rule.
    pub fault: String,
    /// Its node drained and stopped it.
    #[serde(default)]
    pub drained: bool,
    /// What its CLI said went wrong, when it did.
    #[serde(default)]
    pub cli: Option<dispatch_core::signals::Failure>,
}

/// An event as it enters the store: checked against the limits first (one that breaks one is
/// [`EventKind::Rejected`] by then).
#[derive(Debug)]
pub struct IncomingEvent {
    /// The event.
    pub event: TaskEvent,
}

/// Which of a task's two outputs: what the worker printed, or the activity lines a structured
/// stream was read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Bytes as the worker wrote them (events of kind `log`).
    Raw,
    /// One line per tool use, message or command (events of kind `activity`).
    Activity,
}

impl LogStream {
    /// The kind its events are stored under.
    pub fn kind(self) -> &'static str {
        match self {
            LogStream::Raw => "log",
            LogStream::Activity => "activity",
        }
    }
}
