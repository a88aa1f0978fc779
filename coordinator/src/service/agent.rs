//! `AgentService`: one bidirectional stream per node session.
//!
//! Four tasks share a session: the reader (events, acks, heartbeats from the node, recorded in
//! batches), the command pump (stored commands, streamed in pages with backpressure after
//! Welcome), the heartbeat (so the node notices a hung coordinator), and the stream itself.
//! Every send waits at most the silence time: a node that stops reading ends its session —
//! and its tasks' timers start — instead of being dropped quietly.

use crate::convert;
use crate::model::{IncomingEvent, TaskEvent};
use crate::store::SessionKey;
use crate::{Coordinator, now_ms};
use dispatch_proto::v1;
use dispatch_proto::v1::agent_message::Kind;
use dispatch_proto::v1::coordinator_message::Kind as Out;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// What goes down a node's stream. Boxed because a channel allocates its slots a block (32) at
/// a time: unboxed, that first block is ~7.5 KiB per connected node (75 MiB at 10,000 nodes).
type NodeMessage = Result<Box<v1::CoordinatorMessage>, Box<tonic::Status>>;
/// The sending half of a node's stream.
type NodeSender = mpsc::Sender<NodeMessage>;

/// How long a node may take to send Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered per node.
const NODE_QUEUE: usize = 1024;
/// Most events recorded in one transaction.
const MAX_BATCH: usize = 512;
/// Stored commands read per page by the pump.
const COMMAND_PAGE: u32 = 256;
/// A gap is asked about again after this long without the missing event.
const RESEND_AGAIN: Duration = Duration::from_secs(2);

fn out(kind: Out) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage { kind: Some(kind) }
}

/// The next message if one is already decoded or buffered, without waiting (and without the
/// timer a zero timeout would register per event).
async fn ready_message(
    inbound: &mut Streaming<v1::AgentMessage>,
) -> Option<Result<v1::AgentMessage, Status>> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match Pin::new(&mut *inbound).poll_next(cx) {
            std::task::Poll::Ready(m) => m,
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// What one session's tasks share.
struct Link {
    c: Arc<Coordinator>,
    key: SessionKey,
    tx: NodeSender,
    /// Set by whichever task finds the session broken; ends them all.
    end: watch::Sender<bool>,
    silence: Duration,
}

impl Link {
    /// Sends `msg`, waiting at most the silence time; false (and the session ends) when the
    /// node does not take it.
    async fn send(&self, msg: v1::CoordinatorMessage) -> bool {
        match tokio::time::timeout(self.silence, self.tx.send(Ok(Box::new(msg)))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                let _ = self.end.send(true);
                false
            }
            Err(_) => {
                tracing::warn!(node = %self.key.node, "the node has not read its stream for {:?}; ending the session", self.silence);
                let _ = self.end.send(true);
                false
            }
        }
    }

    async fn ended(&self) {
        let mut rx = self.end.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }
}

/// Streams the node's stored commands, oldest first, and new ones as they are stored.
async fn pump(link: Arc<Link>, wake: Arc<Notify>) {
    let mut after = 0;
    loop {
        let page = match link
            .c
            .store
            .pending_commands(&link.key.node, after, COMMAND_PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(node = %link.key.node, error = %e, "cannot read the node's commands; ending the session");
                let _ = link.end.send(true);
                return;
            }
        };
        if page.is_empty() {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = link.ended() => return,
            }
        }
        for cmd in page {
            after = cmd.id;
            let msg = out(Out::Command(convert::command_to_proto(
                cmd.id,
                &cmd.command,
            )));
            if !link.send(msg).await {
                return;
            }
        }
    }
}

/// Tells the node the coordinator is alive, every heartbeat interval.
async fn heartbeat(link: Arc<Link>) {
    let every = link.c.config.heartbeat_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                if !link.send(out(Out::Heartbeat(v1::Heartbeat {
                    running: 0,
                    draining: false,
                }))).await {
                    return;
                }
            }
            _ = link.ended() => return,
        }
    }
}

/// What the reader has gathered and not yet handled.
#[derive(Default)]
struct Batch {
    events: Vec<IncomingEvent>,
    acks: Vec<(u64, String)>,
}

/// Reads the node's stream until it ends, falls silent, or the session is told to stop.
struct Reader {
    link: Arc<Link>,
    conn_id: u64,
    /// Gaps asked about: task → (seq asked from, when).
    resends: HashMap<String, (u64, Instant)>,
}

impl Reader {
    async fn flush(&mut self, batch: &mut Batch) -> bool {
        let link = Arc::clone(&self.link);
        if !batch.events.is_empty() {
            let events = std::mem::take(&mut batch.events);
            let n = events.len();
            match link.c.record_agent_events(&link.key, events).await {
                Ok(done) => {
                    for (task, expected, got) in done.gaps {
                        let asked = self.resends.get(&task);
                        if asked
                            .is_some_and(|(s, at)| *s == expected && at.elapsed() < RESEND_AGAIN)
                        {
                            continue;
                        }
                        tracing::error!(node = %link.key.node, %task, expected, got, "event gap: asking the node to resend from {expected}");
                        self.resends
                            .insert(task.clone(), (expected, Instant::now()));
                        let msg = out(Out::Resend(v1::Resend {
                            task_id: task,
                            from_seq: expected,
                        }));
                        if !link.send(msg).await {
                            return false;
                        }
                    }
                    for (task_id, seq) in done.acks {
                        if self.resends.get(&task_id).is_some_and(|(s, _)| seq >= *s) {
                            self.resends.remove(&task_id);
                        }
                        if !link
                            .send(out(Out::EventAck(v1::EventAck { task_id, seq })))
                            .await
                        {
                            return false;
                        }
                    }
                }
                Err(e) => {
                    // Not acked: the node keeps them spooled and resends after reconnecting.
                    tracing::error!(node = %link.key.node, events = n, error = %e, "could not record events; ending the session");
                    let _ = link.tx.try_send(Err(Box::new(Status::from(e))));
                    return false;
                }
            }
        }
        if !batch.acks.is_empty() {
            let acks = std::mem::take(&mut batch.acks);
            let ids: Vec<u64> = acks.iter().map(|a| a.0).collect();
            if let Err(e) = link
                .c
                .store
                .ack_commands(&link.key.node, &ids, now_ms())
                .await
            {
                tracing::error!(node = %link.key.node, error = %e, "could not record command acks; ending the session");
                return false;
            }
            for (id, error) in acks {
                if !error.is_empty() {
                    tracing::warn!(node = %link.key.node, command = id, %error, "node could not apply a command");
                }
                link.c.command_acked(id, error);
            }
        }
        true
    }

    /// Handles one message; false when the session must end.
    async fn take(&mut self, m: v1::AgentMessage, batch: &mut Batch) -> bool {
        match m.kind {
            Some(Kind::Event(ev)) => {
                let (task, seq, at) = (ev.task_id.clone(), ev.seq, ev.at_ms);
                let attempt = ev.attempt;
                batch.events.push(match convert::event_from_proto(ev) {
                    Ok(event) => IncomingEvent { event },
                    // Kept as history only, so the node's sequence stays whole.
                    Err(why) => IncomingEvent {
                        event: TaskEvent {
                            task_id: task,
                            seq,
                            at_ms: at,
                            attempt,
                            kind: crate::model::EventKind::Rejected { reason: why },
                        },
                    },
                });
                true
            }
            Some(Kind::CommandAck(a)) => {
                batch.acks.push((a.command_id, a.error));
                true
            }
            Some(Kind::Heartbeat(h)) => {
                self.link
                    .c
                    .heartbeat(&self.link.key.node, self.conn_id, h.draining);
                true
            }
            None => true,
            Some(Kind::Hello(_)) => {
                tracing::warn!(node = %self.link.key.node, "ignoring a second Hello on the same stream");
                true
            }
            Some(Kind::Unavailable(u)) => {
                if !self.flush(batch).await {
                    return false;
                }
                if let Err(e) = self
                    .link
                    .c
                    .events_unavailable(&self.link.key, &u.task_id, u.from_seq, u.next_seq)
                    .await
                {
                    tracing::warn!(node = %self.link.key.node, error = %e, "bad EventsUnavailable");
                }
                self.resends.remove(&u.task_id);
                true
            }
        }
    }

    async fn run(
        mut self,
        mut inbound: Streaming<v1::AgentMessage>,
        mut stop: watch::Receiver<bool>,
    ) {
        let link = Arc::clone(&self.link);
        let stopping = link.c.stopping();
        tokio::pin!(stopping);
        loop {
            let next = tokio::select! {
                _ = &mut stopping => break,
                _ = stop.wait_for(|s| *s) => break,
                _ = link.ended() => break,
                m = tokio::time::timeout(link.silence, inbound.message()) => m,
            };
            let msg = match next {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::debug!(node = %link.key.node, error = %e, "node stream error");
                    break;
                }
                Err(_) => {
                    tracing::warn!(node = %link.key.node, "nothing from the node for {:?}; ending its session", link.silence);
                    break;
                }
            };
            link.c
                .registry
                .touch(&link.key.node, self.conn_id, now_ms());
            // Group commit: take every message already waiting on the stream (up to a bound)
            // and record its events in one transaction.
            let mut batch = Batch::default();
            let mut alive = self.take(msg, &mut batch).await;
            while alive && batch.events.len() < MAX_BATCH {
                match ready_message(&mut inbound).await {
                    Some(Ok(m)) => alive = self.take(m, &mut batch).await,
                    _ => break,
                }
            }
            if !alive || !self.flush(&mut batch).await {
                break;
            }
        }
        let _ = link.end.send(true);
        link.c.session_ended(&link.key, self.conn_id).await;
    }
}

/// Serves agent nodes.
pub struct AgentSvc(pub Arc<Coordinator>);

type OutStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::agent_service_server::AgentService for AgentSvc {
    type SessionStream = OutStream;

    async fn session(
        &self,
        req: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let who = super::auth::caller(&req)?;
        super::auth::permit(&who, super::auth::Rpc::Session)?;
        let cert = req.extensions().get::<super::auth::CertName>().cloned();
        let addr = req
            .remote_addr()
            .map_or_else(|| "the local socket".to_string(), |a| a.to_string());
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(v1::AgentMessage {
                kind: Some(Kind::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message on an agent stream must be Hello",
                ));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no Hello within 10 s of opening the stream",
                ));
            }
        };
        // A client certificate names its node, whatever token came with it.
        if let Some(super::auth::CertName(name)) = &cert
            && *name != hello.name
        {
            return Err(Status::permission_denied(format!(
                "this connection's certificate is for node `{}`; it cannot connect as `{}` (make a certificate for that node: `dispatch-coordinator certs node DIR {}`)",
                dispatch_core::text::printable_line(name),
                dispatch_core::text::printable_line(&hello.name),
                dispatch_core::text::printable_line(&hello.name)
            )));
        }
        // A node token connects only as its own name.
        if let crate::model::Principal::Node { pattern, .. } = &who
            && !crate::model::node_matches(pattern, &hello.name)
        {
            return Err(Status::permission_denied(format!(
                "this node token is for `{pattern}`; it cannot connect as `{}` (ask an admin for a token for that name: `dispatch token create --node {}`)",
                dispatch_core::text::printable_line(&hello.name),
                dispatch_core::text::printable_line(&hello.name)
            )));
        }
        let c = Arc::clone(&self.0);
        // A registration token's node gets a token of its own, in its Welcome.
        let node_token = match &who {
            crate::model::Principal::Node {
                register: Some(id), ..
            } => c.register_node(id, &hello.name).await?,
            _ => String::new(),
        };
        let session = c
            .open_session(&convert::hello_from_proto(hello), &addr)
            .await?;
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let welcome = out(Out::Welcome(v1::Welcome {
            heartbeat_interval_ms: c.config.heartbeat_interval.as_millis() as u64,
            committed: session
                .committed
                .iter()
                .map(|(task_id, seq)| v1::TaskCursor {
                    task_id: task_id.clone(),
                    seq: *seq,
                    running: false,
                })
                .collect(),
            coordinator_heartbeats: true,
            epoch: session.key.epoch,
            max_log_bytes: c.config.max_log_bytes,
            node_token,
        }));
        // The queue is empty: Welcome goes first, before any command.
        let _ = tx.try_send(Ok(Box::new(welcome)));
        let link = Arc::new(Link {
            silence: c.config.silence(),
            c,
            key: session.key,
            tx,
            end: watch::channel(false).0,
        });
        tokio::spawn(pump(Arc::clone(&link), session.granted.wake));
        tokio::spawn(heartbeat(Arc::clone(&link)));
        let reader = Reader {
            link,
            conn_id: session.granted.conn_id,
            resends: HashMap::new(),
        };
        tokio::spawn(reader.run(inbound, session.granted.stop));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| m.map(|b| *b).map_err(|e| *e)),
        )))
    }
}
