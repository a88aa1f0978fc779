//! Node sessions: registration (Hello → Welcome), reconciliation, acks, and what happens
//! when a node goes away.

use crate::convert::node_to_proto;
use crate::error::{CoordinatorError, Result};
use crate::registry::NodeSender;
use crate::store::{BackendRecord, NodeRecord};
use crate::{Coordinator, now_ms};
use dispatch_core::TaskState;
use dispatch_core::limits::{self, check_len, check_name};
use dispatch_proto::v1;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn command_message(id: u64, body: &[u8]) -> Option<v1::CoordinatorMessage> {
    let mut cmd: v1::Command = prost::Message::decode(body).ok()?;
    cmd.id = id;
    Some(v1::CoordinatorMessage {
        kind: Some(v1::coordinator_message::Kind::Command(cmd)),
    })
}

fn validate_hello(h: &v1::Hello) -> Result<()> {
    check_name("node name", &h.name)?;
    if h.labels.len() > limits::MAX_LABELS {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` has {} labels; the limit is {}",
            h.name,
            h.labels.len(),
            limits::MAX_LABELS
        )));
    }
    for (k, v) in &h.labels {
        check_name("label key", k)?;
        check_len(&format!("label `{k}`"), v, limits::MAX_VALUE_BYTES)?;
    }
    for b in &h.backends {
        check_name("backend name", &b.name)?;
        check_len(
            &format!("backend `{}` command", b.name),
            &b.command,
            limits::MAX_VALUE_BYTES,
        )?;
    }
    if h.capacity == 0 {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` reports capacity 0; set --max-tasks to 1 or more",
            h.name
        )));
    }
    Ok(())
}

impl Coordinator {
    /// Registers a node from its Hello: stores it, reconciles the tasks the store has on it
    /// with those it still runs, queues Welcome and every unacked command on `tx`, and makes
    /// the node available to the scheduler. Returns the connection id.
    pub async fn node_hello(&self, hello: &v1::Hello, tx: &NodeSender) -> Result<u64> {
        validate_hello(hello)?;
        let now = now_ms();
        let record = NodeRecord {
            name: hello.name.clone(),
            labels: hello.labels.clone().into_iter().collect(),
            backends: hello
                .backends
                .iter()
                .map(|b| BackendRecord {
                    name: b.name.clone(),
                    command: b.command.clone(),
                    models: b.models.clone(),
                    max_tasks: b.max_tasks,
                })
                .collect(),
            capacity: hello.capacity,
            version: hello.version.clone(),
            hostname: hello.hostname.clone(),
            last_seen_ms: now,
        };
        self.store.upsert_node(&record).await?;

        let agent_tasks: HashMap<&str, &v1::TaskCursor> = hello
            .tasks
            .iter()
            .map(|t| (t.task_id.as_str(), t))
            .collect();
        let pending = self.store.pending_commands(&hello.name).await?;
        let pending_assign: HashSet<String> = pending
            .iter()
            .filter(|(_, _, body)| {
                matches!(
                    prost::Message::decode(body.as_slice()),
                    Ok(v1::Command {
                        kind: Some(v1::command::Kind::Assign(_)),
                        ..
                    })
                )
            })
            .map(|(_, task, _)| task.clone())
            .collect();
        let mut running: HashSet<String> = hello
            .tasks
            .iter()
            .filter(|t| t.running)
            .map(|t| t.task_id.clone())
            .chain(pending_assign.iter().cloned())
            .collect();
        for mut t in self.store.active_tasks_on(&hello.name).await? {
            if !running.contains(&t.id) && !agent_tasks.contains_key(t.id.as_str()) {
                let reason = format!(
                    "node `{}` reconnected without this task (it restarted and lost it)",
                    hello.name
                );
                t.state = TaskState::Lost;
                t.reason = reason;
                t.updated_ms = now;
                t.ended_ms = now;
                self.store.update_task(&t).await?;
                tracing::warn!(task = %t.id, node = %hello.name, "task lost: the node no longer knows it");
                self.publish(&t, "state", 0).await;
            }
        }
        // Only tasks the store knows on this node hold its slots.
        let mut running_on: HashMap<String, String> = HashMap::new();
        for id in running.drain() {
            if let Some(t) = self.store.get_task(&id).await?
                && t.node == hello.name
            {
                running_on.insert(id, t.backend);
            }
        }

        let mut committed = Vec::with_capacity(hello.tasks.len());
        for t in &hello.tasks {
            committed.push(v1::TaskCursor {
                task_id: t.task_id.clone(),
                seq: self.store.committed_seq(&t.task_id).await?,
                running: t.running,
            });
        }
        let welcome = v1::Welcome {
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            committed,
        };
        let mut out = vec![v1::CoordinatorMessage {
            kind: Some(v1::coordinator_message::Kind::Welcome(welcome)),
        }];
        out.extend(
            pending
                .iter()
                .filter_map(|(id, _, body)| command_message(*id, body)),
        );
        for m in out {
            if tx.send(Ok(Box::new(m))).await.is_err() {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "node `{}` went away during registration",
                    hello.name
                )));
            }
        }
        let conn = self.registry.connect(record, tx.clone(), running_on);
        tracing::info!(node = %hello.name, capacity = hello.capacity, backends = hello.backends.len(), resent = pending.len(), "node connected");
        self.scheduler.kick();
        Ok(conn)
    }

    /// A node's stream ended. When it has not reconnected within the node timeout, its
    /// active tasks become `lost`.
    pub async fn node_gone(self: &Arc<Self>, name: &str, conn_id: u64) {
        if !self.registry.disconnect(name, conn_id) {
            return;
        }
        tracing::warn!(node = name, "node disconnected");
        let _ = self.store.touch_node(name, now_ms()).await;
        let c = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(c.config.node_timeout).await;
            if c.registry.is_connected(&name) {
                return;
            }
            let Ok(tasks) = c.store.active_tasks_on(&name).await else {
                return;
            };
            for mut t in tasks {
                let reason = format!(
                    "node `{name}` went away and did not come back within {:?}",
                    c.config.node_timeout
                );
                if let Err(e) = c.finish_without_node(&mut t, TaskState::Lost, reason).await {
                    tracing::error!(task = %t.id, error = %e, "could not mark the task lost");
                }
            }
            c.scheduler.kick();
        });
    }

    /// Every node that ever connected, with live running counts for connected ones.
    pub async fn list_nodes(&self) -> Result<Vec<v1::Node>> {
        let nodes = self.store.list_nodes().await?;
        Ok(nodes
            .iter()
            .map(|n| node_to_proto(n, self.registry.liveness(&n.name)))
            .collect())
    }
}
