//! `AgentService`: one bidirectional stream per node.

use crate::Coordinator;
use dispatch_proto::v1;
use dispatch_proto::v1::agent_message::Kind;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a node may take to send Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered per node before the node counts as stuck.
const NODE_QUEUE: usize = 1024;

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
                match msg.kind {
                    Some(Kind::Heartbeat(_)) | None => {}
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
                    Some(Kind::Event(ev)) => {
                        let task_id = ev.task_id.clone();
                        match c.record_agent_event(&name, ev).await {
                            Ok(seq) => {
                                let ack = v1::CoordinatorMessage {
                                    kind: Some(v1::coordinator_message::Kind::EventAck(
                                        v1::EventAck { task_id, seq },
                                    )),
                                };
                                if tx.send(Ok(ack)).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                // Not acked: the node keeps it spooled and resends after reconnecting.
                                tracing::error!(node = %name, task = %task_id, error = %e, "could not record an event");
                                let _ = tx.send(Err(Status::from(e))).await;
                                break;
                            }
                        }
                    }
                }
            }
            c.node_gone(&name, conn).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
