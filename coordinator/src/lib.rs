//! The dispatch coordinator: stores every task, plan, question and answer durably, routes
//! tasks to agent nodes, and streams progress to any number of watchers.
//!
//! [`Coordinator`] is the shared state; [`serve`] runs the gRPC services on TCP and/or a Unix
//! socket until a shutdown signal.

pub mod convert;
pub mod error;
pub mod nodes;
pub mod notify;
pub mod questions;
pub mod registry;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod tasks;

use dispatch_proto::v1;
use registry::NodeRegistry;
use scheduler::SchedulerHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{Store, TaskRecord};
use tokio::sync::broadcast;

pub use server::{Listener, serve};

/// Version reported to nodes and clients.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tunables of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// How often nodes send heartbeats.
    pub heartbeat_interval: Duration,
    /// How long a node may stay away before its running tasks are marked `lost`.
    pub node_timeout: Duration,
    /// Where to send notifications of questions and ended tasks.
    pub notify: dispatch_core::notify::NotifyConfig,
}

impl CoordinatorConfig {
    /// Defaults for `data_dir`: heartbeats every 5 s, tasks lost after 60 s without their node.
    pub fn new(data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            data_dir,
            heartbeat_interval: Duration::from_secs(5),
            node_timeout: Duration::from_secs(60),
            notify: Default::default(),
        }
    }
}

/// A log chunk as fanned out to `dispatch logs -f` followers.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Task the output belongs to.
    pub task_id: String,
    /// Event seq of the chunk.
    pub seq: u64,
    /// Raw bytes.
    pub data: Arc<[u8]>,
}

/// Shared coordinator state.
pub struct Coordinator {
    /// Durable store.
    pub store: Store,
    /// Connected nodes.
    pub registry: NodeRegistry,
    /// Task changes for watchers.
    pub watch_tx: broadcast::Sender<v1::WatchEvent>,
    /// Log output for followers.
    pub log_tx: broadcast::Sender<LogLine>,
    /// Wakes the scheduler.
    pub scheduler: SchedulerHandle,
    /// Tunables.
    pub config: CoordinatorConfig,
    /// Question and task-end notifications.
    pub notifier: notify::Notifier,
    /// When this process started, ms since the epoch.
    pub started_ms: i64,
    stop_tx: tokio::sync::watch::Sender<bool>,
    /// Callers waiting for a node to ack a command: command id → the ack's error text.
    ack_waiters:
        std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
}

impl Coordinator {
    /// Opens the store under `config.data_dir` and starts the scheduler.
    pub async fn start(config: CoordinatorConfig) -> anyhow::Result<Arc<Coordinator>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
        let db = config.data_dir.join("dispatch.db");
        let store = Store::open(&db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", db.display()))?;
        let (watch_tx, _) = broadcast::channel(4096);
        let (log_tx, _) = broadcast::channel(4096);
        let (scheduler, rx) = SchedulerHandle::new();
        let c = Arc::new(Coordinator {
            store,
            registry: NodeRegistry::default(),
            watch_tx,
            log_tx,
            scheduler,
            notifier: notify::Notifier::start(config.notify.clone()),
            config,
            started_ms: now_ms(),
            stop_tx: tokio::sync::watch::channel(false).0,
            ack_waiters: Default::default(),
        });
        scheduler::spawn(Arc::downgrade(&c), rx);
        c.scheduler.kick();
        Ok(c)
    }
}

impl Coordinator {
    /// Records a node's ack of a command and wakes whoever waits for it.
    pub async fn command_acked(&self, id: u64, error: String) -> error::Result<()> {
        self.store.ack_command(id, now_ms()).await?;
        if let Some(w) = self.ack_waiters.lock().unwrap().remove(&id) {
            let _ = w.send(error);
        }
        Ok(())
    }

    /// Sends a stored command to `node` (a node that is away gets it when it reconnects).
    pub(crate) fn send_command(&self, node: &str, cmd: v1::Command) {
        self.registry.send(
            node,
            v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Command(cmd)),
            },
        );
    }

    /// Stores `t` together with a command for its node in one transaction (so the command is
    /// resent on every reconnect until the node acks it), then sends it. Returns its id.
    pub(crate) async fn command_node(
        &self,
        t: &TaskRecord,
        kind: v1::command::Kind,
    ) -> error::Result<u64> {
        Ok(self.store_and_send(t, kind, |_| ()).await?.0)
    }

    /// [`Coordinator::command_node`], with the node's ack to wait for (registered before the
    /// command goes out, so a fast ack is not missed).
    pub(crate) async fn command_node_acked(
        &self,
        t: &TaskRecord,
        kind: v1::command::Kind,
    ) -> error::Result<(u64, tokio::sync::oneshot::Receiver<String>)> {
        self.store_and_send(t, kind, |id| self.await_ack(id)).await
    }

    async fn store_and_send<R>(
        &self,
        t: &TaskRecord,
        kind: v1::command::Kind,
        before_send: impl FnOnce(u64) -> R,
    ) -> error::Result<(u64, R)> {
        let mut cmd = v1::Command {
            id: 0,
            kind: Some(kind),
        };
        cmd.id = self
            .store
            .update_with_command(t, &t.node, &prost::Message::encode_to_vec(&cmd))
            .await?;
        let id = cmd.id;
        let r = before_send(id);
        self.send_command(&t.node, cmd);
        Ok((id, r))
    }

    /// Registers interest in the ack of command `id`.
    pub(crate) fn await_ack(&self, id: u64) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ack_waiters.lock().unwrap().insert(id, tx);
        rx
    }

    /// Stops waiting for the ack of command `id`.
    pub(crate) fn forget_ack(&self, id: u64) {
        self.ack_waiters.lock().unwrap().remove(&id);
    }

    /// Ends every long-lived stream (node sessions, watches, log follows) so a graceful
    /// server shutdown does not wait for clients that never hang up.
    pub fn begin_shutdown(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// Resolves once [`Coordinator::begin_shutdown`] was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
