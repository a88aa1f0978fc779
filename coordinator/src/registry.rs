//! Connected nodes: their outbound channel, capabilities and the tasks holding their slots.
//!
//! One std mutex with short critical sections; nothing awaits while holding it.

use crate::store::NodeRecord;
use dispatch_proto::v1;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Messages to one node's stream.
/// What goes down a node's stream. Boxed because a channel allocates its slots a block (32) at a
/// time: unboxed, that first block is ~7.5 KiB per connected node (75 MiB at 10,000 nodes).
pub type NodeMessage = Result<Box<v1::CoordinatorMessage>, Box<tonic::Status>>;
/// The sending half of a node's stream.
pub type NodeSender = mpsc::Sender<NodeMessage>;

struct Connected {
    record: NodeRecord,
    tx: NodeSender,
    conn_id: u64,
    /// Task → backend of every task holding a slot.
    running: HashMap<String, String>,
}

/// What the router needs to know about one connected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSlot {
    /// Node name.
    pub name: String,
    /// Backend names it offers.
    pub backends: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Max concurrent tasks.
    pub capacity: u32,
    /// Tasks holding a slot now.
    pub running: u32,
    /// Per-backend caps (absent or 0: none).
    pub backend_caps: BTreeMap<String, u32>,
    /// Tasks holding a slot, per backend.
    pub backend_running: BTreeMap<String, u32>,
    /// Models each backend lists (empty: unknown, any).
    pub models: BTreeMap<String, Vec<String>>,
}

/// The set of nodes connected right now.
#[derive(Default)]
pub struct NodeRegistry {
    nodes: Mutex<HashMap<String, Connected>>,
    next_conn: AtomicU64,
}

impl NodeRegistry {
    /// Registers a node's new connection (replacing an older one of the same name, whose
    /// stream then ends). Returns the connection id to pass to [`NodeRegistry::disconnect`].
    pub fn connect(
        &self,
        record: NodeRecord,
        tx: NodeSender,
        running: HashMap<String, String>,
    ) -> u64 {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let name = record.name.clone();
        self.nodes.lock().unwrap().insert(
            name,
            Connected {
                record,
                tx,
                conn_id,
                running,
            },
        );
        conn_id
    }

    /// Forgets a connection, unless a newer connection of the node replaced it.
    /// Returns true when the node is now disconnected.
    pub fn disconnect(&self, name: &str, conn_id: u64) -> bool {
        let mut nodes = self.nodes.lock().unwrap();
        if nodes.get(name).is_some_and(|c| c.conn_id == conn_id) {
            nodes.remove(name);
            true
        } else {
            false
        }
    }

    /// True when the node has a live connection.
    pub fn is_connected(&self, name: &str) -> bool {
        self.nodes.lock().unwrap().contains_key(name)
    }

    /// Number of connected nodes.
    pub fn connected_count(&self) -> usize {
        self.nodes.lock().unwrap().len()
    }

    /// Capacity view of every connected node.
    pub fn slots(&self) -> Vec<NodeSlot> {
        let nodes = self.nodes.lock().unwrap();
        let mut out: Vec<NodeSlot> = nodes
            .values()
            .map(|c| NodeSlot {
                name: c.record.name.clone(),
                backends: c.record.backends.iter().map(|b| b.name.clone()).collect(),
                labels: c.record.labels.clone(),
                capacity: c.record.capacity,
                running: c.running.len() as u32,
                backend_caps: c
                    .record
                    .backends
                    .iter()
                    .filter(|b| b.max_tasks > 0)
                    .map(|b| (b.name.clone(), b.max_tasks))
                    .collect(),
                backend_running: c.running.values().fold(BTreeMap::new(), |mut m, b| {
                    *m.entry(b.clone()).or_insert(0) += 1;
                    m
                }),
                models: c
                    .record
                    .backends
                    .iter()
                    .map(|b| (b.name.clone(), b.models.clone()))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Records that `name` was heard from now (any message, heartbeats included).
    pub fn touch(&self, name: &str, now_ms: i64) {
        if let Some(c) = self.nodes.lock().unwrap().get_mut(name) {
            c.record.last_seen_ms = now_ms;
        }
    }

    /// (running count, last heard from) of a node, when connected.
    pub fn liveness(&self, name: &str) -> Option<(u32, i64)> {
        self.nodes
            .lock()
            .unwrap()
            .get(name)
            .map(|c| (c.running.len() as u32, c.record.last_seen_ms))
    }

    /// Marks a slot of `name` taken by `task` (running on `backend`).
    pub fn reserve(&self, name: &str, task: &str, backend: &str) {
        if let Some(c) = self.nodes.lock().unwrap().get_mut(name) {
            c.running.insert(task.to_string(), backend.to_string());
        }
    }

    /// Frees the slot `task` held on `name`. Returns true when it held one.
    pub fn release(&self, name: &str, task: &str) -> bool {
        self.nodes
            .lock()
            .unwrap()
            .get_mut(name)
            .is_some_and(|c| c.running.remove(task).is_some())
    }

    /// Queues a message to a node without waiting. A node whose channel is full is
    /// disconnected (it will reconnect and get every unacked command again).
    pub fn send(&self, name: &str, msg: v1::CoordinatorMessage) -> bool {
        let mut nodes = self.nodes.lock().unwrap();
        let Some(c) = nodes.get(name) else {
            return false;
        };
        match c.tx.try_send(Ok(Box::new(msg))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    node = name,
                    "node is not reading its stream; dropping the connection"
                );
                nodes.remove(name);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
