//! The one fan-out of committed changes: to watchers (`Watch`), to log followers (`Logs -f`)
//! and to the configured notifications. Nothing else sends to them.

use crate::model::{Change, TaskChange};
use crate::notify::{Notification, Notifier};
use std::any::Any;
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// Changes buffered per watcher before a slow one is told it lagged (and re-reads snapshots).
const WATCH_BUFFER: usize = 4096;

/// A committed task change as every watcher receives it. Its wire form is built once, by the
/// first watcher that needs it, and shared by the rest.
pub struct Published {
    /// The change.
    pub change: TaskChange,
    wire: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Published {
    /// The change in the form `build` makes (built once per change, whatever the watchers).
    pub fn wire<T: Any + Send + Sync>(&self, build: impl FnOnce(&TaskChange) -> T) -> &T {
        self.wire
            .get_or_init(|| Box::new(build(&self.change)))
            .downcast_ref()
            .expect("one wire form per change")
    }
}

/// Worker output as fanned out to `dispatch logs -f` followers.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Task the output belongs to.
    pub task_id: String,
    /// Event seq of the chunk.
    pub seq: u64,
    /// Raw output or activity lines.
    pub stream: crate::model::LogStream,
    /// Raw bytes.
    pub data: Arc<[u8]>,
}

/// Watchers, followers and notifications.
pub struct Publisher {
    watch_tx: broadcast::Sender<Arc<Published>>,
    log_tx: broadcast::Sender<LogLine>,
    notifier: Notifier,
}

impl Publisher {
    /// A publisher sending notifications through `notifier`.
    pub fn new(notifier: Notifier) -> Publisher {
        Publisher {
            watch_tx: broadcast::channel(WATCH_BUFFER).0,
            log_tx: broadcast::channel(WATCH_BUFFER).0,
            notifier,
        }
    }

    /// Every task change from now on.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Published>> {
        self.watch_tx.subscribe()
    }

    /// Every stored chunk of worker output from now on.
    pub fn logs(&self) -> broadcast::Receiver<LogLine> {
        self.log_tx.subscribe()
    }

    /// Fans `changes` out, in order.
    pub fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Log {
                    task_id,
                    seq,
                    stream,
                    data,
                } => {
                    if self.log_tx.receiver_count() > 0 {
                        let _ = self.log_tx.send(LogLine {
                            task_id,
                            seq,
                            stream,
                            data,
                        });
                    }
                }
                Change::Task(c) => {
                    self.notify(&c);
                    if self.watch_tx.receiver_count() > 0 {
                        let _ = self.watch_tx.send(Arc::new(Published {
                            change: *c,
                            wire: OnceLock::new(),
                        }));
                    }
                }
            }
        }
    }

    fn notify(&self, c: &TaskChange) {
        if !self.notifier.enabled() {
            return;
        }
        let t = &c.task;
        let around = |mut n: Notification| {
            n.owner = t.owner.clone();
            let (done, all) = dispatch_core::Plan::parse(&t.plan_md).progress();
            n.items_done = done as u32;
            n.items = all as u32;
            n
        };
        if c.kind == crate::model::ChangeKind::Question
            && let Some(q) = c
                .question
                .and_then(|seq| c.questions.iter().find(|q| q.seq == seq))
        {
            let mut n = around(Notification::question(
                &t.id, &t.title, &t.node, q.seq, &q.text,
            ));
            n.kind = q.kind().to_string();
            self.notifier.send(n);
        }
        if c.ended() {
            self.notifier.send(around(Notification::ended(
                &t.id,
                &t.title,
                &t.node,
                t.state.as_str(),
                &t.reason,
                t.attempt,
            )));
        }
    }
}
