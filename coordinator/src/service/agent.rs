//! `AgentService`: one bidirectional stream per node.

use crate::Coordinator;
use dispatch_proto::v1;
use dispatch_proto::v1::agent_message::Kind;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// How long a node may take to send Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered per node before the node counts as stuck.
const NODE_QUEUE: usize = 1024;

/// Most events recorded in one transaction.
const MAX_BATCH: usize = 512;

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

/// Records `batch` (emptying it) and acks it; false when the stream must end.
async fn record_batch(
    c: &Coordinator,
    name: &str,
    batch: &mut Vec<v1::TaskEvent>,
    tx: &crate::registry::NodeSender,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    let events = std::mem::take(batch);
    let n = events.len();
    match c.record_agent_events(name, events).await {
        Ok(acks) => {
            for (task_id, seq) in acks {
                let ack = v1::CoordinatorMessage {
                    kind: Some(v1::coordinator_message::Kind::EventAck(v1::EventAck {
                        task_id,
                        seq,
                    })),
                };
                if tx.send(Ok(Box::new(ack))).await.is_err() {
                    return false;
                }
            }
            true
        }
        Err(e) => {
            // Not acked: the node keeps them spooled and resends after reconnecting.
            tracing::error!(node = %name, events = n, error = %e, "could not record events");
            let _ = tx.send(Err(Box::new(Status::from(e)))).await;
            false
        }
    }
}

/// Everything on a node's stream but events.
async fn handle_other(c: &Coordinator, name: &str, kind: Option<Kind>) {
    match kind {
        Some(Kind::Heartbeat(_)) | None | Some(Kind::Event(_)) => {}
        Some(Kind::Hello(_)) => {
            tracing::warn!(node = %name, "ignoring a second Hello on the same stream")
        }
        Some(Kind::CommandAck(ack)) => {
            if !ack.error.is_empty() {
                tracing::warn!(node = %name, command = ack.command_id, error = %ack.error, "node could not apply a command");
            }
            if let Err(e) = c.command_acked(ack.command_id, ack.error.clone()).await {
                tracing::error!(node = %name, error = %e, "could not record a command ack");
            }
        }
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
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let c = Arc::clone(&self.0);
        let conn = c.node_hello(&hello, &tx).await?;
        let name = hello.name.clone();
        // A node that sends nothing (not even heartbeats) for three intervals is gone.
        let silence = c.config.heartbeat_interval * 3;
        let stopping = c.stopping();
        tokio::spawn(async move {
            tokio::pin!(stopping);
            loop {
                let next = tokio::select! {
                    _ = &mut stopping => break,
                    m = tokio::time::timeout(silence, inbound.message()) => m,
                };
                let msg = match next {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(node = %name, error = %e, "node stream error");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(node = %name, "no heartbeat for {:?}; dropping the connection", silence);
                        break;
                    }
                };
                c.registry.touch(&name, crate::now_ms());
                // Group commit: take every event already waiting on the stream (up to a bound)
                // and record them in one transaction.
                let mut batch = Vec::new();
                let mut alive = true;
                let mut pending = Some(msg);
                while let Some(m) = pending.take() {
                    match m.kind {
                        Some(Kind::Event(ev)) => {
                            batch.push(ev);
                            if batch.len() < MAX_BATCH
                                && let Some(Ok(more)) = ready_message(&mut inbound).await
                            {
                                pending = Some(more);
                            }
                        }
                        other => {
                            // Events before this message are recorded before it is handled.
                            if !record_batch(&c, &name, &mut batch, &tx).await {
                                alive = false;
                                break;
                            }
                            handle_other(&c, &name, other).await;
                        }
                    }
                }
                if !alive || !record_batch(&c, &name, &mut batch, &tx).await {
                    break;
                }
            }
            c.node_gone(&name, conn).await;
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| m.map(|b| *b).map_err(|e| *e)),
        )))
    }
}
