//! The coordinator's commands applied to this node: assign, cancel, answer, note, drain,
//! remove a worktree.

use super::{Drain, Node};
use crate::assignment::Assignment;
use crate::runner;
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Node {
    /// Applies a command; the returned string is empty on success. File work runs off the
    /// async runtime.
    pub(super) async fn apply(&mut self, cmd: v1::Command) -> String {
        use v1::command::Kind as C;
        match cmd.kind {
            Some(C::Assign(a)) => self.assign(a),
            Some(C::Cancel(c)) => {
                self.cancel(&c);
                String::new()
            }
            Some(C::Answer(a)) => match self.tasks.get(&a.task_id) {
                Some(t) => {
                    let workdir = t.workdir.clone();
                    blocking(move || {
                        crate::watched::deliver_answer(&workdir, &a.task_id, a.seq, &a.text)
                    })
                    .await
                }
                None => self.not_running(&a.task_id),
            },
            Some(C::Note(n)) => match self.tasks.get(&n.task_id) {
                Some(t) => {
                    let (workdir, notes) = (t.workdir.clone(), Arc::clone(&t.notes));
                    blocking(move || {
                        crate::watched::append_note(&workdir, &n.task_id, &n.text, Some(&notes))
                    })
                    .await
                }
                None => self.not_running(&n.task_id),
            },
            Some(C::Drain(d)) => {
                self.set_drain(&d);
                String::new()
            }
            Some(C::RemoveWorktree(r)) => self.remove_worktree(r).await,
            Some(C::ToolDecision(d)) => {
                self.decide(d);
                String::new()
            }
            None => "empty command".into(),
        }
    }

    /// Hands a tool call its decision. One whose hook gave up, or that was decided already
    /// (a decision resent after a reconnect), is dropped: the command is applied all the same.
    fn decide(&mut self, d: v1::ToolDecision) {
        let Some(t) = self
            .tasks
            .get(&d.task_id)
            .filter(|t| t.attempt == d.attempt)
        else {
            return;
        };
        let decided = t.approvals.decide(
            d.call,
            crate::approvals::Decision {
                allow: d.decision == "allow",
                reason: d.reason,
                seq: d.seq,
            },
        );
        if !decided {
            tracing::info!(task = %d.task_id, call = d.call, "a tool decision found no call waiting for it");
        }
    }

    fn not_running(&self, task: &str) -> String {
        format!("task `{task}` is not running on node `{}`", self.cfg.name)
    }

    /// Stops the task's worker run the cancel names (0: whichever runs), and forgets a run of
    /// it that waits to start.
    fn cancel(&mut self, c: &v1::CancelTask) {
        if let Some(t) = self.tasks.get_mut(&c.task_id)
            && (c.attempt == 0 || c.attempt == t.attempt)
        {
            t.cancelling = true;
            t.cancel.notify_one();
        }
        if self
            .next_runs
            .get(&c.task_id)
            .is_some_and(|a| c.attempt == 0 || c.attempt == a.attempt)
        {
            self.next_runs.remove(&c.task_id);
        }
    }

    /// The coordinator starts or ends a drain of this node. A drain it starts can only get
    /// shorter; a drain SIGTERM began (the agent exits after it) is not the coordinator's to end.
    fn set_drain(&mut self, d: &v1::NodeDrain) {
        if d.draining {
            let timeout = Duration::from_millis(d.timeout_ms).min(dispatch_core::limits::MAX_DRAIN);
            let until = Instant::now() + timeout;
            tracing::info!(
                running = self.tasks.len(),
                timeout_ms = d.timeout_ms,
                "the coordinator drains this node: no new tasks; running workers may finish within the timeout"
            );
            self.drain = Some(match self.drain {
                Some(old) => Drain {
                    until: old.until.min(until),
                    ..old
                },
                None => Drain {
                    until,
                    stopped: false,
                    exit: false,
                },
            });
        } else if self.drain.is_some_and(|d| !d.exit) {
            tracing::info!("the coordinator ended this node's drain");
            self.drain = None;
        }
    }

    async fn remove_worktree(&self, r: v1::RemoveWorktree) -> String {
        let workdir = if r.path.is_empty() {
            self.cfg.workdir.clone()
        } else {
            PathBuf::from(&r.path)
        };
        let node = self.cfg.name.clone();
        blocking(
            move || match crate::worktree::remove(&workdir, &r.task_id) {
                Ok(()) => {
                    tracing::info!(task = %r.task_id, "worktree removed");
                    Ok(())
                }
                Err(e) => Err(format!("{e} (on node `{node}`)")),
            },
        )
        .await
    }

    /// Starts an assigned worker run, unless it ran or runs already; a newer run of a task
    /// whose older run still stops waits for it.
    fn assign(&mut self, a: v1::Assign) -> String {
        let last_seq = a.last_seq;
        let a = match Assignment::try_from(a) {
            Ok(a) => a,
            Err(bad) if bad.task_ok => {
                // Said as the task's start failure, as a worker that cannot start is.
                self.spool.begin(&bad.task, last_seq);
                let failed = v1::WorkerStartFailed {
                    error: bad.reason,
                    cli: None,
                };
                let ev = runner::event(&bad.task, bad.attempt, Kind::StartFailed(failed));
                if self.ctx.events.try_send(ev).is_err() {
                    tracing::warn!(task = %bad.task, "cannot report a bad assignment: the event queue is full");
                }
                return String::new();
            }
            Err(bad) => return bad.reason,
        };
        if self.finished.contains(&(a.task.clone(), a.attempt)) {
            return String::new();
        }
        if let Some(running) = self.tasks.get_mut(&a.task) {
            if a.attempt <= running.attempt {
                // A resent Assign of this run (or of an older one).
                return String::new();
            }
            // A newer run: the older one is fenced. Stop it; the new one starts when it exits.
            if !running.cancelling {
                running.cancelling = true;
                running.cancel.notify_one();
            }
            tracing::info!(task = %a.task, attempt = a.attempt, "a newer worker run waits for the older one to stop");
            self.next_runs.insert(a.task.clone(), a);
            return String::new();
        }
        self.start(a);
        String::new()
    }

    pub(super) fn start(&mut self, a: Assignment) {
        self.spool.begin(&a.task, a.last_seq);
        tracing::info!(task = %a.task, backend = %a.backend, attempt = a.attempt, "assigned");
        let id = a.task.clone();
        self.backends.insert(id.clone(), a.backend.clone());
        let handle = runner::start(self.ctx.clone(), a);
        self.tasks.insert(id, handle);
    }
}

/// Runs blocking file work off the runtime; an empty string on success.
async fn blocking(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> String {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => String::new(),
        Ok(Err(e)) => e,
        Err(e) => format!("the command failed: {e}"),
    }
}
