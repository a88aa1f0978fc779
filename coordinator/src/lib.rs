//! The dispatch coordinator: stores every task, plan, question and answer durably, routes
//! tasks to agent nodes, and streams progress to any number of watchers.
//!
//! A question's path, top to bottom: `service/agent.rs` (the node's stream) →
//! `domain/events.rs` (the rules) → `store` (one transaction, returns the committed changes) →
//! [`Coordinator::committed`] → `publish.rs` → `service/dispatch.rs` (`Watch`). Wire types stay
//! in `service/` and `convert.rs`.

pub mod certs;
pub mod conn;
pub mod convert;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod links;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod publish;
pub mod registry;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod web;

use model::{Change, Changes};
use registry::NodeRegistry;
use scheduler::SchedulerHandle;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;

pub use server::{Listener, serve};

/// Version reported to nodes and clients.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tunables of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// How often nodes and the coordinator send heartbeats; a side that hears nothing for
    /// two and a half intervals counts the other as gone.
    pub heartbeat_interval: Duration,
    /// How long a silent node's tasks stay `unreachable` before they are `lost`.
    pub node_timeout: Duration,
    /// Worker output stored per task; past it, a marker (the node keeps the whole log).
    pub max_log_bytes: u64,
    /// Plan history stored per task; past it the plan is kept current and its history ends
    /// with a marker.
    pub max_plan_history_bytes: u64,
    /// How long an ended task keeps its event history (its plan, questions and logs stay).
    pub history_retention: Duration,
    /// Where to send notifications of questions and ended tasks.
    pub notify: dispatch_core::notify::NotifyConfig,
    /// Where the first admin token comes from on an empty store.
    pub bootstrap: domain::access::Bootstrap,
    /// Limits of each token that has none of its own.
    pub quota: domain::access::Quota,
    /// The gate of the gRPC listeners (an authenticated call tells it so).
    pub gate: Arc<conn::Gate>,
    /// Long-lived streams one user token may hold open at once (0: no limit).
    pub max_streams_per_token: u32,
    /// Tool approvals: the rules a task's tool calls are decided by (empty: none, and workers
    /// run with their CLI's permission checks off, as before).
    pub policy: Arc<dispatch_core::policy::PolicyConfig>,
    /// Budgets: every task's default, users' daily budgets, and the prices that turn tokens
    /// into dollars.
    pub budgets: Arc<dispatch_core::budget::BudgetConfig>,
}

impl CoordinatorConfig {
    /// Defaults for `data_dir`: heartbeats every 3 s (a silent node is noticed within 7.5 s),
    /// tasks lost after 60 s without their node, 64 MiB of output per task, 7 days of history.
    pub fn new(data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            data_dir,
            heartbeat_interval: Duration::from_secs(3),
            node_timeout: Duration::from_secs(60),
            max_log_bytes: 64 * 1024 * 1024,
            max_plan_history_bytes: 8 * 1024 * 1024,
            history_retention: Duration::from_secs(7 * 24 * 3600),
            notify: Default::default(),
            bootstrap: Default::default(),
            quota: Default::default(),
            gate: conn::Gate::new(conn::Limits::for_process()),
            max_streams_per_token: 64,
            policy: Default::default(),
            budgets: Default::default(),
        }
    }

    /// How long a side may stay silent before it counts as gone: two and a half heartbeats
    /// (two missed, and half an interval for a slow network).
    pub fn silence(&self) -> Duration {
        self.heartbeat_interval * 5 / 2
    }
}

/// Streams open per user token id, and how many closed since memory was last given back.
#[derive(Default)]
struct Streams {
    open: Mutex<HashMap<String, u32>>,
    closed: std::sync::atomic::AtomicU64,
}

type OpenStreams = Arc<Streams>;

/// Gives freed memory back to the system every 10 s once many streams have closed: a burst of
/// thousands of watchers otherwise leaves the allocator holding their buffers (glibc keeps
/// freed memory in its arenas).
fn spawn_memory_return(streams: std::sync::Weak<Streams>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            let Some(s) = streams.upgrade() else { return };
            if s.closed.swap(0, std::sync::atomic::Ordering::Relaxed) >= 100 {
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                // SAFETY: malloc_trim only returns free memory to the system.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        }
    });
}

/// One open stream of a token; gives its place back when dropped.
pub struct StreamPermit(Option<(OpenStreams, String)>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some((streams, token)) = self.0.take() {
            let mut open = streams.open.lock().unwrap();
            if let Some(n) = open.get_mut(&token) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&token);
                }
            }
            streams
                .closed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Shared coordinator state.
pub struct Coordinator {
    /// Durable store.
    pub store: Arc<dyn Store>,
    /// Connected nodes.
    pub registry: NodeRegistry,
    /// Watchers, log followers and notifications.
    pub publisher: publish::Publisher,
    /// Wakes the scheduler.
    pub scheduler: SchedulerHandle,
    /// Tunables.
    pub config: CoordinatorConfig,
    /// When this process started, ms since the epoch.
    pub started_ms: i64,
    /// The valid tokens.
    pub tokens: domain::access::TokenCache,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    stop_tx: tokio::sync::watch::Sender<bool>,
    /// Streams open per user token (Watch, followed logs and output).
    streams: OpenStreams,
    /// Callers waiting for a node to ack a command: command id → the ack's error text.
    ack_waiters: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    /// The tool policy tasks run under: the config file's and the one admins set, together.
    policy: std::sync::RwLock<Arc<dispatch_core::policy::PolicyConfig>>,
    /// One-time answer links (None without `notify.public_url`).
    pub links: Option<Arc<links::Links>>,
}

impl Coordinator {
    /// Opens the SQLite store under `config.data_dir`, starts the scheduler and the timers of
    /// the sessions the last run left open.
    pub async fn start(config: CoordinatorConfig) -> anyhow::Result<Arc<Coordinator>> {
        dispatch_core::fs::private_dir(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
        let db = config.data_dir.join("dispatch.db");
        let store = store::SqliteStore::open(&db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", db.display()))?;
        Coordinator::with_store(config, Arc::new(store)).await
    }

    /// Starts a coordinator on `store`.
    pub async fn with_store(
        config: CoordinatorConfig,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Arc<Coordinator>> {
        let (scheduler, rx) = SchedulerHandle::new();
        let links = match &config.notify.public_url {
            Some(url) => Some(Arc::new(
                links::Links::load(Arc::clone(&store), url, config.notify.link_ttl()).await?,
            )),
            None => None,
        };
        let notifier = notify::Notifier::start(config.notify.clone(), links.clone())
            .map_err(anyhow::Error::msg)?;
        let c = Arc::new(Coordinator {
            store,
            registry: NodeRegistry::default(),
            publisher: publish::Publisher::new(notifier),
            scheduler,
            config,
            started_ms: now_ms(),
            tokens: Default::default(),
            metrics: metrics::Metrics::new(),
            stop_tx: tokio::sync::watch::channel(false).0,
            streams: Default::default(),
            ack_waiters: Default::default(),
            policy: Default::default(),
            links,
        });
        c.load_policy().await?;
        scheduler::spawn(Arc::downgrade(&c), rx);
        spawn_memory_return(Arc::downgrade(&c.streams));
        c.load_tokens().await?;
        c.spawn_token_use_writer();
        for n in c.store.list_nodes().await? {
            c.registry.set_cordoned(&n.name, n.cordoned);
        }
        c.recover_sessions().await?;
        domain::retention::spawn(Arc::downgrade(&c));
        c.scheduler.kick();
        Ok(c)
    }

    /// Hands what a write committed to everything that follows from it: slots freed on the
    /// nodes, a scheduling pass when one was, then watchers, followers and notifications.
    /// Every write's [`Changes`] come here; nothing else publishes.
    pub fn committed(&self, changes: Changes) {
        let mut kick = false;
        for c in &changes.0 {
            if let Change::Task(t) = c {
                if let Some(node) = &t.freed_slot {
                    self.registry.release(node, &t.task.id);
                    kick = true;
                }
                if t.task.state != t.before && !t.task.state.holds_slot() {
                    kick = true;
                }
            }
        }
        self.publisher.publish(changes.0);
        if kick {
            self.scheduler.kick();
        }
    }

    /// A place for one more long-lived stream (`what`: watch, logs, output) of `who`'s token, or
    /// `ResourceExhausted` naming the limit. The place is given back when the permit drops.
    /// Only user tokens are counted: the local user and nodes are not limited.
    pub fn open_stream(&self, who: &model::Principal, what: &str) -> error::Result<StreamPermit> {
        let model::Principal::User { token, name, .. } = who else {
            return Ok(StreamPermit(None));
        };
        let max = self.config.max_streams_per_token;
        let mut open = self.streams.open.lock().unwrap();
        let n = open.entry(token.clone()).or_default();
        if max > 0 && *n >= max {
            return Err(error::CoordinatorError::ResourceExhausted(format!(
                "{name}'s token already has {n} streams open (watch, logs --follow, output --follow, dashboard pages), the most one token may; close some, or ask an admin to raise --max-streams-per-token (a {what} was refused)"
            )));
        }
        *n += 1;
        Ok(StreamPermit(Some((
            Arc::clone(&self.streams),
            token.clone(),
        ))))
    }

    /// Records a node's ack of a command and wakes whoever waits for it.
    pub fn command_acked(&self, id: u64, error: String) {
        if let Some(w) = self.ack_waiters.lock().unwrap().remove(&id) {
            let _ = w.send(error);
        }
    }

    /// Registers interest in the ack of command `id` (before it can be sent).
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

    /// True once [`Coordinator::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }

    /// Resolves once [`Coordinator::begin_shutdown`] was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

pub use dispatch_core::process::now_ms;
