//! The node's connection loop: one owner of the spool and the running tasks, fed by the
//! coordinator's stream and by the runners' events. Reconnects with exponential backoff;
//! events keep being spooled while disconnected and are resent after reconnecting.
//!
//! Every wait is bounded and sits in one `select!` with the shutdown signal: connecting
//! (10 s), a coordinator that stops talking (2.5 of its heartbeats), a stream that stops
//! taking messages. SIGTERM is honoured in each of them.

mod commands;
mod link;
mod startup;

use crate::runner::{RunContext, TaskHandle};
use crate::spool::EventSpool;
use crate::{AgentConfig, OnSigterm};
use dispatch_proto::v1;
use dispatch_proto::v1::coordinator_message::Kind as In;
use link::{CONNECT_TIMEOUT, Change, ConnectError, FromSession, Link};
use startup::Health;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// SIGTERM's future, polled until it resolves once.
type Shutdown<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Worker output sent per task until a coordinator says its own cap.
const DEFAULT_MAX_LOG: u64 = 64 * 1024 * 1024;

fn msg(kind: v1::agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

struct Node {
    cfg: AgentConfig,
    spool: EventSpool,
    tasks: HashMap<String, TaskHandle>,
    /// Assigns of a newer worker run of a task whose older run is still stopping.
    next_runs: HashMap<String, crate::assignment::Assignment>,
    ctx: RunContext,
    /// (task, attempt) of workers that ended in this run, so a resent Assign never runs one twice.
    finished: std::collections::VecDeque<(String, u32)>,
    /// A drain in progress: from SIGTERM (`--on-sigterm drain`) or from the coordinator
    /// (`dispatch nodes drain NAME --timeout D`).
    drain: Option<Drain>,
    /// Prometheus metrics.
    metrics: Arc<crate::metrics::AgentMetrics>,
    /// The backend of each task this agent started (for the metrics' labels).
    backends: HashMap<String, String>,
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Running workers may go on until then.
    until: Instant,
    /// The rest were stopped.
    stopped: bool,
    /// The agent exits once drained (SIGTERM); a drain the coordinator asked for leaves it
    /// connected.
    exit: bool,
}

/// How many ended tasks a node remembers for de-duplicating Assign.
const REMEMBER_FINISHED: usize = 4096;

impl Node {
    /// The heartbeat this node sends: its running workers, and whether it drains. The one
    /// place it is built (on its interval, when a session opens while draining, when a drain
    /// starts).
    fn heartbeat(&self) -> v1::AgentMessage {
        msg(v1::agent_message::Kind::Heartbeat(v1::Heartbeat {
            running: self.tasks.len() as u32,
            draining: self.drain.is_some(),
        }))
    }

    /// Spools a runner's event (assigning its seq) and forgets tasks whose worker ended.
    fn spool_event(&mut self, ev: v1::TaskEvent) -> Option<v1::TaskEvent> {
        let ended = matches!(
            ev.kind,
            Some(v1::task_event::Kind::Exited(_)) | Some(v1::task_event::Kind::StartFailed(_))
        );
        let id = ev.task_id.clone();
        let attempt = ev.attempt;
        match &ev.kind {
            Some(v1::task_event::Kind::Started(_)) => {
                self.metrics.starts.inc();
            }
            Some(v1::task_event::Kind::Activity(a)) => {
                if let Some(u) = &a.usage {
                    let backend = self.backends.get(&id).map_or("unknown", String::as_str);
                    self.metrics.usage(&id, attempt, backend, u);
                }
            }
            _ => {}
        }
        if ended {
            self.metrics.ended(&id);
        }
        let ev = match self.spool.append(ev) {
            Ok(ev) => Some(ev),
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cannot spool an event; it is lost");
                None
            }
        };
        if ended && self.tasks.get(&id).is_some_and(|t| t.attempt == attempt) {
            let t = self.tasks.remove(&id).expect("checked above");
            self.backends.remove(&id);
            if self.finished.len() == REMEMBER_FINISHED {
                self.finished.pop_front();
            }
            self.finished.push_back((id.clone(), t.attempt));
            if let Some(next) = self.next_runs.remove(&id) {
                self.start(next);
            }
        }
        ev
    }

    /// Answers a coordinator's Resend: the spooled events from `from` on, or what is gone.
    fn resend(&self, task: &str, from: u64) -> Vec<v1::AgentMessage> {
        match self.spool.resend_from(task, from) {
            Ok(events) => {
                tracing::warn!(
                    task,
                    from,
                    events = events.len(),
                    "the coordinator missed events; resending"
                );
                events
                    .into_iter()
                    .map(|e| msg(v1::agent_message::Kind::Event(e)))
                    .collect()
            }
            Err(next) if next > from => {
                tracing::error!(
                    task,
                    from,
                    next,
                    "events the coordinator asks for were already dropped; telling it"
                );
                vec![msg(v1::agent_message::Kind::Unavailable(
                    v1::EventsUnavailable {
                        task_id: task.to_string(),
                        from_seq: from,
                        next_seq: next,
                    },
                ))]
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Runs the node until `shutdown` resolves. Shutting down flushes spooled events (best effort,
/// 3 s) and leaves workers running: the next start of the agent re-attaches to them.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (mut node, mut events) = Node::open(cfg)?;
    node.reattach().await;
    let mut health = node.serve_health().await?;
    node.serve_metrics().await?;
    let mut link = Link::start();
    // SIGTERM, until it is taken (its future must not be polled again).
    let mut shutdown: Option<Shutdown<'_>> = Some(Box::pin(shutdown));
    loop {
        node.report(&link, health.as_mut()).await;
        let change =
            if node.drain.is_some_and(|d| d.exit) && !link.is_stopping() && node.tasks.is_empty() {
                tracing::info!("drained: no worker left; flushing events and exiting");
                Some(Change::Stop {
                    grace: Duration::from_secs(5),
                })
            } else if let Link::Stopping { deadline, .. } = &link
                && (node.spool.unacked().next().is_none() || Instant::now() >= *deadline)
            {
                break;
            } else if let Link::Connecting { at, .. } = &link
                && Instant::now() >= *at
            {
                Some(node.attempt(&mut shutdown).await)
            } else {
                node.wait(&mut link, &mut events, &mut shutdown).await
            };
        if let Some(c) = change {
            match link.on(c, &node.cfg)? {
                Some(next) => link = next,
                None => break,
            }
        }
    }
    Ok(())
}

impl Node {
    /// Reports the link in the health check and the metrics.
    async fn report(&self, link: &Link, health: Option<&mut Health>) {
        let connected = link.session().is_some();
        if let Some(h) = health {
            h.set(connected && self.drain.is_none()).await;
        }
        self.metrics.connected.set(i64::from(connected));
        self.metrics.draining.set(i64::from(self.drain.is_some()));
        self.metrics.workers.set(self.tasks.len() as i64);
    }

    /// One connection attempt, bounded by [`CONNECT_TIMEOUT`] and by SIGTERM.
    async fn attempt(&mut self, shutdown: &mut Option<Shutdown<'_>>) -> Change {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => r,
            _ = async { shutdown.as_mut().expect("guarded").await }, if shutdown.is_some() => {
                tracing::info!(
                    running = self.tasks.len(),
                    "shutting down while connecting; running workers continue and are re-attached on the next start"
                );
                return Change::Quit;
            }
        };
        match attempt {
            Ok(Ok(s)) => {
                tracing::info!(coordinator = %self.cfg.coordinator, node = %self.cfg.name, "connected");
                // A node that drains says so at once on its new session.
                if self.drain.is_some() && !s.send(self.heartbeat()).await {
                    return Change::Failed(
                        "the coordinator stopped taking messages as the session opened".into(),
                    );
                }
                Change::Opened(Box::new(s))
            }
            Ok(Err(e)) => Change::Failed(e),
            Err(_) => Change::Failed(ConnectError::from(format!(
                "no answer from the coordinator at {} within {CONNECT_TIMEOUT:?}",
                self.cfg.coordinator
            ))),
        }
    }

    /// Waits for the next thing to do — a runner's event, a coordinator message, a heartbeat,
    /// a deadline, SIGTERM — and does it; returns what happened to the link, if anything.
    async fn wait(
        &mut self,
        link: &mut Link,
        events: &mut mpsc::Receiver<v1::TaskEvent>,
        shutdown: &mut Option<Shutdown<'_>>,
    ) -> Option<Change> {
        let reconnect_at = match link {
            Link::Connecting { at, .. } => Some(*at),
            _ => None,
        };
        let stop_at = match link {
            Link::Stopping { deadline, .. } => Some(*deadline),
            _ => None,
        };
        let drain_at = self.drain.filter(|d| !d.stopped).map(|d| d.until);
        let stopping = link.is_stopping();
        tokio::select! {
            Some(ev) = events.recv() => {
                let ev = self.spool_event(ev)?;
                let s = link.session()?;
                self.metrics.events.inc();
                if !s.send(msg(v1::agent_message::Kind::Event(ev))).await {
                    tracing::warn!("the coordinator stopped taking events; reconnecting");
                    return Some(Change::Lost { at_once: false });
                }
                None
            }
            from = async { link.session_mut().expect("guarded").next().await }, if link.session().is_some() => {
                let out = match from {
                    FromSession::Message(m) => self.on_message(*m).await?,
                    FromSession::HeartbeatDue => vec![self.heartbeat()],
                    FromSession::Silent => {
                        tracing::warn!(coordinator = %self.cfg.coordinator, "no heartbeat from the coordinator for 2.5 intervals; reconnecting");
                        return Some(Change::Lost { at_once: true });
                    }
                };
                let s = link.session().expect("guarded");
                for m in out {
                    if !s.send(m).await {
                        return Some(Change::Lost { at_once: false });
                    }
                }
                None
            }
            _ = tokio::time::sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => None,
            _ = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => None,
            _ = tokio::time::sleep_until(drain_at.unwrap_or_else(Instant::now)), if drain_at.is_some() => {
                self.drain_timeout();
                None
            }
            _ = async { shutdown.as_mut().expect("guarded").await }, if shutdown.is_some() && !stopping => {
                *shutdown = None;
                self.on_sigterm(link).await
            }
        }
    }

    /// A coordinator message handled; what to send back, or None when the session is gone.
    async fn on_message(
        &mut self,
        m: Result<Option<v1::CoordinatorMessage>, tonic::Status>,
    ) -> Option<Vec<v1::AgentMessage>> {
        let kind = match m {
            Ok(Some(m)) => m.kind,
            Ok(None) | Err(_) => {
                tracing::warn!("lost the connection to the coordinator; reconnecting");
                return None;
            }
        };
        Some(match kind {
            Some(In::EventAck(a)) => {
                self.spool.ack(&a.task_id, a.seq);
                Vec::new()
            }
            Some(In::Command(cmd)) => {
                let command_id = cmd.id;
                let was_draining = self.drain.is_some();
                let error = self.apply(cmd).await;
                if !error.is_empty() {
                    tracing::warn!(command = command_id, %error, "command not applied");
                }
                let mut out = vec![msg(v1::agent_message::Kind::CommandAck(v1::CommandAck {
                    command_id,
                    error,
                }))];
                // A drain started or ended: said at once.
                if self.drain.is_some() != was_draining {
                    out.push(self.heartbeat());
                }
                out
            }
            Some(In::Resend(r)) => self.resend(&r.task_id, r.from_seq),
            Some(In::Reject(r)) => {
                tracing::error!(reason = %r.reason, "the coordinator dropped this node");
                return None;
            }
            Some(_) | None => Vec::new(),
        })
    }

    /// The drain's time is up: the workers still running are stopped (reported drained).
    fn drain_timeout(&mut self) {
        if let Some(d) = &mut self.drain {
            d.stopped = true;
        }
        tracing::warn!(
            running = self.tasks.len(),
            "drain timeout: stopping the workers still running (reported drained)"
        );
        for t in self.tasks.values_mut() {
            t.drained.store(true, std::sync::atomic::Ordering::SeqCst);
            t.cancelling = true;
            t.cancel.notify_one();
        }
    }

    /// SIGTERM: drain (then exit) or detach from the workers and exit.
    async fn on_sigterm(&mut self, link: &Link) -> Option<Change> {
        match self.cfg.on_sigterm {
            OnSigterm::Drain(timeout) => {
                tracing::info!(
                    running = self.tasks.len(),
                    ?timeout,
                    "draining: no new tasks; running workers may finish within the timeout"
                );
                // A drain already under way keeps its (earlier) deadline.
                let until = Instant::now() + timeout.min(dispatch_core::limits::MAX_DRAIN);
                self.drain = Some(match self.drain {
                    Some(d) => Drain {
                        until: d.until.min(until),
                        exit: true,
                        ..d
                    },
                    None => Drain {
                        until,
                        stopped: false,
                        exit: true,
                    },
                });
                // Said at once, not at the next heartbeat: no task is assigned here now.
                let s = link.session()?;
                (!s.send(self.heartbeat()).await).then_some(Change::Lost { at_once: true })
            }
            OnSigterm::Detach => {
                // Workers keep running in their own sessions; the next start of this agent
                // re-attaches to them.
                tracing::info!(
                    running = self.tasks.len(),
                    "shutting down; running workers continue and are re-attached on the next start"
                );
                Some(Change::Stop {
                    grace: Duration::from_secs(3),
                })
            }
        }
    }
}
