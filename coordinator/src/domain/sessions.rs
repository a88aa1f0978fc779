//! Node sessions: one live session per node name, each with an epoch. A Hello for a name whose
//! session is alive is refused; a silent session is superseded, and its tasks move to the new
//! one only when the new Hello claims them. A session that ends or falls silent makes its
//! tasks `unreachable`; after the grace (`--node-timeout`) they are `lost`, their worker is
//! fenced (told to stop should the node return) and their slot is free.

use crate::error::{CoordinatorError, Result};
use crate::model::{NodeHello, NodeRecord};
use crate::registry::{Granted, Liveness, Refused};
use crate::store::SessionKey;
use crate::{Coordinator, now_ms};
use dispatch_core::limits::{self, check_len, check_name};
use std::sync::Arc;

/// A session the coordinator accepted.
#[derive(Debug)]
pub struct OpenSession {
    /// Node and epoch.
    pub key: SessionKey,
    /// Highest committed seq of every task the Hello mentioned.
    pub committed: Vec<(String, u64)>,
    /// The registry's grant (stop signal, pump wake-up).
    pub granted: Granted,
}

/// Checks a Hello against the limits; what is wrong, naming the field, otherwise.
pub fn validate_hello(h: &NodeHello) -> Result<()> {
    let n = &h.node;
    check_name("node name", &n.name)?;
    check_len("version", &n.version, limits::MAX_NAME_BYTES)?;
    check_len("hostname", &n.hostname, limits::MAX_VALUE_BYTES)?;
    if n.labels.len() > limits::MAX_LABELS {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` has {} labels; the limit is {}",
            n.name,
            n.labels.len(),
            limits::MAX_LABELS
        )));
    }
    for (k, v) in &n.labels {
        check_name("label key", k)?;
        check_len(&format!("label `{k}`"), v, limits::MAX_VALUE_BYTES)?;
    }
    if n.backends.len() > limits::MAX_LABELS {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` offers {} backends; the limit is {}",
            n.name,
            n.backends.len(),
            limits::MAX_LABELS
        )));
    }
    for b in &n.backends {
        check_name("backend name", &b.name)?;
        check_len(
            &format!("backend `{}` command", b.name),
            &b.command,
            limits::MAX_VALUE_BYTES,
        )?;
        if b.models.len() > 1024 {
            return Err(CoordinatorError::Invalid(format!(
                "backend `{}` lists {} models; the limit is 1024",
                b.name,
                b.models.len()
            )));
        }
        for m in &b.models {
            check_name("model", m)?;
        }
    }
    if n.capacity == 0 || n.capacity > limits::MAX_NODE_CAPACITY {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` reports capacity {}; set --max-tasks between 1 and {}",
            n.name,
            n.capacity,
            limits::MAX_NODE_CAPACITY
        )));
    }
    if h.cursors.len() > 100_000 {
        return Err(CoordinatorError::Invalid(format!(
            "node `{}` reports {} tasks in Hello; the limit is 100000",
            n.name,
            h.cursors.len()
        )));
    }
    for c in &h.cursors {
        dispatch_core::task_id::validate(&c.task_id)?;
    }
    Ok(())
}

fn when(ms: i64) -> String {
    dispatch_core::duration::ago(ms, now_ms())
}

impl Coordinator {
    /// Opens a session for a node's Hello from `addr`.
    pub async fn open_session(
        self: &Arc<Self>,
        hello: &NodeHello,
        addr: &str,
    ) -> Result<OpenSession> {
        validate_hello(hello)?;
        let name = &hello.node.name;
        let now = now_ms();
        let claim = match self.registry.claim(name, now, self.config.silence()) {
            Ok(c) => c,
            Err(Refused::Live(Liveness {
                addr: live,
                started_ms,
                epoch,
                ..
            })) => {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "node `{name}` is already connected from {live} (session {epoch}, started {}); \
                     a second agent cannot take over a live node. Stop the other agent, or give this one \
                     another --name",
                    when(started_ms)
                )));
            }
            Err(Refused::Joining) => {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "another agent is registering as node `{name}` right now; give this one another --name"
                )));
            }
        };
        let superseded = claim.superseded();
        let opened = match self.store.open_session(hello, addr, now).await {
            Ok(o) => o,
            Err(e) => {
                drop(claim);
                if let Some(epoch) = superseded {
                    self.node_silent(name, epoch).await;
                }
                return Err(e);
            }
        };
        let record = NodeRecord {
            epoch: opened.epoch,
            session_addr: addr.to_string(),
            session_started_ms: now,
            last_seen_ms: now,
            ..hello.node.clone()
        };
        let granted = claim.activate(record, opened.epoch, addr.to_string(), now, opened.holding);
        tracing::info!(node = %name, epoch = opened.epoch, %addr, capacity = hello.node.capacity, "node connected");
        self.committed(opened.changes);
        self.scheduler.kick();
        Ok(OpenSession {
            key: SessionKey {
                node: name.clone(),
                epoch: opened.epoch,
            },
            committed: opened.committed,
            granted,
        })
    }

    /// A session's stream ended (or fell silent, or stopped reading). When it was the node's
    /// live session, its tasks become `unreachable`, and `lost` after the grace.
    pub async fn session_ended(self: &Arc<Self>, key: &SessionKey, conn_id: u64) {
        if self.registry.disconnect(&key.node, conn_id).is_none() {
            return;
        }
        if self.is_stopping() {
            // The coordinator is going away, not the node: the next start gives every node the
            // detection time to come back before its tasks turn unreachable.
            return;
        }
        tracing::warn!(node = %key.node, epoch = key.epoch, "node disconnected");
        let _ = self.store.touch_node(&key.node, now_ms()).await;
        self.node_silent(&key.node, key.epoch).await;
    }

    /// Session `epoch` of `node` is gone: its tasks are `unreachable` now and `lost` once the
    /// grace ends without the node back (a new session's epoch makes that a no-op).
    async fn node_silent(self: &Arc<Self>, node: &str, epoch: u64) {
        match self.store.session_silent(node, epoch, now_ms()).await {
            Ok(changes) => self.committed(changes),
            Err(e) => {
                tracing::error!(node, error = %e, "could not mark the node's tasks unreachable")
            }
        }
        let grace = self.config.node_timeout;
        let node = node.to_string();
        let store = Arc::clone(&self.store);
        // The grace timer holds the store, not the coordinator: what it commits it hands back
        // through a weak reference (a coordinator that stopped has no one to tell).
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let reason = format!(
                "node `{node}` went away and did not come back within {}",
                dispatch_core::duration::format(grace)
            );
            match store.session_expired(&node, epoch, &reason, now_ms()).await {
                Ok(changes) => {
                    if !changes.0.is_empty() {
                        tracing::warn!(node = %node, tasks = changes.0.len(), "tasks lost: the node did not come back in time");
                    }
                    match me.upgrade() {
                        Some(c) => {
                            c.committed(changes);
                            c.scheduler.kick();
                            c.forget_if_ephemeral(&node).await;
                        }
                        None => drop(changes),
                    }
                }
                Err(e) => {
                    tracing::error!(node = %node, error = %e, "could not mark the node's tasks lost")
                }
            }
        });
    }

    /// An ephemeral node (a pod) whose grace ran out without it back, and whose tasks have all
    /// ended, is forgotten (audited as the coordinator's doing).
    async fn forget_if_ephemeral(&self, node: &str) {
        if self.registry.liveness(node).is_some() {
            return;
        }
        let ephemeral = match self.store.list_nodes().await {
            Ok(nodes) => nodes.iter().any(|n| n.name == node && n.ephemeral),
            Err(_) => false,
        };
        if !ephemeral {
            return;
        }
        let audit = crate::model::AuditEntry {
            who: "coordinator".into(),
            action: "node-forget".into(),
            task_id: String::new(),
            detail: format!("{node} (ephemeral, gone)"),
        };
        match self.store.forget_node(node, &audit, now_ms()).await {
            Ok(crate::model::Forgot::Forgotten) => {
                tracing::info!(node, "ephemeral node gone: forgotten");
            }
            Ok(crate::model::Forgot::Busy(tasks)) => {
                tracing::info!(
                    node,
                    ?tasks,
                    "ephemeral node gone; kept while tasks name it"
                );
            }
            Ok(crate::model::Forgot::Unknown) => {}
            Err(e) => tracing::warn!(node, error = %e, "could not forget an ephemeral node"),
        }
    }

    /// A heartbeat of session `conn_id` of `node`: whether it drains. A node whose drain just
    /// ended (an uncordon reached it) takes its queued tasks now, not at the next unrelated
    /// scheduling pass.
    pub fn heartbeat(&self, node: &str, conn_id: u64, draining: bool) {
        if self.registry.set_draining(node, conn_id, draining) {
            self.scheduler.kick();
        }
    }

    /// Forgets node `name` for an admin (`dispatch nodes forget`): refused while it is
    /// connected or a task that has not ended names it.
    pub async fn forget_node(&self, name: &str, who: &crate::model::Principal) -> Result<()> {
        dispatch_core::limits::check_name("node name", name)?;
        if let Some(l) = self.registry.liveness(name) {
            return Err(crate::error::CoordinatorError::FailedPrecondition(format!(
                "node `{name}` is connected (from {}); stop its agent first — `dispatch nodes drain {name}` lets its tasks end",
                l.addr
            )));
        }
        let audit = crate::model::AuditEntry::new(who, "node-forget", "", name);
        match self.store.forget_node(name, &audit, now_ms()).await? {
            crate::model::Forgot::Forgotten => {
                tracing::info!(node = name, who = %who.name(), "node forgotten");
                Ok(())
            }
            crate::model::Forgot::Unknown => Err(crate::error::CoordinatorError::NotFound(
                format!("no node named `{name}`; `dispatch nodes` lists them"),
            )),
            crate::model::Forgot::Busy(tasks) => {
                Err(crate::error::CoordinatorError::FailedPrecondition(format!(
                    "tasks that have not ended name node `{name}`: {}; cancel them (`dispatch cancel ID`) or let them end, then forget it",
                    tasks.join(", ")
                )))
            }
        }
    }

    /// At start no session is live: nodes that had tasks get the detection time to come back
    /// before their tasks turn `unreachable` (and then the grace).
    pub(crate) async fn recover_sessions(self: &Arc<Self>) -> Result<()> {
        let open = self.store.reset_sessions().await?;
        if open.is_empty() {
            return Ok(());
        }
        tracing::info!(
            nodes = open.len(),
            "waiting for the nodes that ran tasks to reconnect"
        );
        let me = Arc::downgrade(self);
        let wait = self.config.silence();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(c) = me.upgrade() else { return };
            for (node, epoch) in open {
                if !c.registry.is_connected(&node) {
                    c.node_silent(&node, epoch).await;
                }
            }
        });
        Ok(())
    }

    /// A node said events of a task are gone (answer to a resend): continue after them.
    pub async fn events_unavailable(
        &self,
        key: &SessionKey,
        task: &str,
        from_seq: u64,
        next_seq: u64,
    ) -> Result<()> {
        dispatch_core::task_id::validate(task)?;
        if self
            .store
            .skip_events(key, task, from_seq, next_seq)
            .await?
        {
            tracing::error!(node = %key.node, task, from_seq, next_seq, "the node lost events {from_seq}..{}; continuing after them", next_seq - 1);
        }
        Ok(())
    }

    /// Cordons node `name` (no new task goes there; its running tasks go on) or uncordons it,
    /// with an audit record. Survives a restart of the coordinator and of the node.
    pub async fn set_cordoned(
        &self,
        name: &str,
        cordoned: bool,
        stop_after: Option<std::time::Duration>,
        who: &crate::model::Principal,
    ) -> Result<(NodeRecord, Option<Liveness>)> {
        dispatch_core::limits::check_name("node name", name)?;
        if stop_after.is_some_and(|d| d > dispatch_core::limits::MAX_DRAIN) {
            return Err(crate::error::CoordinatorError::Invalid(format!(
                "a drain's timeout is at most {}",
                dispatch_core::duration::format(dispatch_core::limits::MAX_DRAIN)
            )));
        }
        let action = if cordoned {
            "node-drain"
        } else {
            "node-uncordon"
        };
        let detail = match stop_after {
            Some(d) if cordoned => format!("{name}, stopping what runs after {}s", d.as_secs()),
            _ => name.to_string(),
        };
        let audit = crate::model::AuditEntry::new(who, action, "", detail);
        // The node itself drains (stops what still runs after the timeout) only when asked;
        // uncordoning always ends a drain it runs.
        let command = match (cordoned, stop_after) {
            (true, Some(d)) => Some(crate::model::NodeCommand::Drain {
                draining: true,
                timeout_ms: d.as_millis().min(u128::from(u64::MAX)) as u64,
            }),
            (true, None) => None,
            (false, _) => Some(crate::model::NodeCommand::Drain {
                draining: false,
                timeout_ms: 0,
            }),
        };
        if !self
            .store
            .set_cordoned(name, cordoned, command.as_ref(), &audit, crate::now_ms())
            .await?
        {
            return Err(crate::error::CoordinatorError::NotFound(format!(
                "no node `{name}`; `dispatch nodes` lists them"
            )));
        }
        self.registry.set_cordoned(name, cordoned);
        if command.is_some() {
            self.registry.wake(name);
        }
        tracing::info!(node = name, cordoned, by = %who.name(), "node cordon changed");
        if !cordoned {
            self.scheduler.kick();
        }
        self.list_nodes()
            .await?
            .into_iter()
            .find(|(n, _)| n.name == name)
            .ok_or_else(|| crate::error::CoordinatorError::NotFound(format!("no node `{name}`")))
    }

    /// Every node that ever connected, with its live session when it has one.
    pub async fn list_nodes(&self) -> Result<Vec<(NodeRecord, Option<Liveness>)>> {
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| {
                let live = self.registry.liveness(&n.name);
                (n, live)
            })
            .collect())
    }
}
