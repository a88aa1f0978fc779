//! Prometheus metrics (`--metrics-listen`, at `/metrics`: OpenMetrics to a scraper that asks for
//! it, the classic text format otherwise — see `dispatch_telemetry::exposition`), with the
//! `prometheus-client` crate. Counters and histograms are updated where things happen; gauges
//! (tasks by state, queue depth, nodes, slots, questions) are read from the store and the node
//! registry when a scrape asks, so they cost nothing between scrapes.

use crate::Coordinator;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// A label set with one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    pool: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// `dispatch_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    version: String,
}

impl BuildLabels {
    fn coordinator() -> BuildLabels {
        BuildLabels {
            component: "coordinator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

const BUILD_HELP: &str = "Which program and version serves (dispatch_build_info, always 1)";

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    tasks: Family<StateLabel, Gauge>,
    queue: Family<QueueLabels, Gauge>,
    nodes_connected: Gauge,
    free_slots: Family<PoolLabel, Gauge>,
    questions_waiting: Gauge,
    oldest_question: FGauge,
    heartbeat_age: Family<NodeLabel, FGauge>,
    node_up: Family<NodeLabel, Gauge>,
    /// Queued (its last change) to assigned.
    pub assign_latency: Histogram,
    /// A question's ask on the node to its publication to watchers.
    pub question_latency: Histogram,
    /// Agent events committed to the store.
    pub events_committed: Counter,
    /// One event batch's store transaction.
    pub store_commit: Histogram,
    /// Scrapes served.
    scrapes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            tasks: Family::default(),
            queue: Family::default(),
            nodes_connected: Gauge::default(),
            free_slots: Family::default(),
            questions_waiting: Gauge::default(),
            oldest_question: FGauge::default(),
            heartbeat_age: Family::default(),
            node_up: Family::default(),
            // 1 ms … ~65 s.
            assign_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 0.1 ms … ~3 s.
            question_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            events_committed: Counter::default(),
            store_commit: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            scrapes: Counter::default(),
        };
        registry.register("dispatch_tasks", "Tasks by state", m.tasks.clone());
        registry.register(
            "dispatch_queue_depth",
            "Queued tasks by pool (their --pool selector) and backend",
            m.queue.clone(),
        );
        registry.register(
            "dispatch_nodes_connected",
            "Nodes with a live session",
            m.nodes_connected.clone(),
        );
        registry.register(
            "dispatch_free_slots",
            "Free task slots of connected nodes, by their `pool` label",
            m.free_slots.clone(),
        );
        registry.register(
            "dispatch_questions_waiting",
            "Questions asked and not yet answered",
            m.questions_waiting.clone(),
        );
        registry.register(
            "dispatch_oldest_question_age_seconds",
            "Age of the oldest unanswered question",
            m.oldest_question.clone(),
        );
        registry.register(
            "dispatch_node_heartbeat_age_seconds",
            "Time since each node was last heard from: connected ones, and ones gone silent or disconnected that are not cordoned (a node taken out of service on purpose is cordoned first)",
            m.heartbeat_age.clone(),
        );
        registry.register(
            "dispatch_node_up",
            "1 for each known node with a live session, 0 for one that is known and away (kept until `dispatch nodes forget`)",
            m.node_up.clone(),
        );
        registry.register(
            "dispatch_assign_latency_seconds",
            "From queued to assigned to a node",
            m.assign_latency.clone(),
        );
        registry.register(
            "dispatch_question_to_watcher_seconds",
            "From a worker's question on its node to its publication to watchers",
            m.question_latency.clone(),
        );
        registry.register(
            "dispatch_events_committed",
            "Agent events committed to the store",
            m.events_committed.clone(),
        );
        registry.register(
            "dispatch_store_commit_seconds",
            "One batch of agent events' store transaction",
            m.store_commit.clone(),
        );
        registry.register(
            "dispatch_metrics_scrapes",
            "Scrapes of this endpoint",
            m.scrapes.clone(),
        );
        // A coordinator with metrics serves: it leads (a standby renders STANDBY_METRICS).
        let leader = Gauge::<i64>::default();
        leader.set(1);
        registry.register("dispatch_coordinator_leader", LEADER_HELP, leader);
        registry.register(
            "dispatch_build",
            BUILD_HELP,
            prometheus_client::metrics::info::Info::new(BuildLabels::coordinator()),
        );
        Metrics { registry, ..m }
    }

    /// Reads the gauges and renders every metric in the Prometheus text format.
    pub async fn render(&self, c: &Coordinator) -> crate::error::Result<String> {
        self.scrapes.inc();
        let now = crate::now_ms();
        let g = c.store.task_gauges().await?;
        self.tasks.clear();
        for state in dispatch_core::TaskState::ALL {
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(0);
        }
        for (state, n) in g.by_state {
            self.tasks
                .get_or_create(&StateLabel { state })
                .set(n as i64);
        }
        self.queue.clear();
        for (backend, pool, n) in g.queued {
            self.queue
                .get_or_create(&QueueLabels { pool, backend })
                .inc_by(n as i64);
        }
        let slots = c.registry.slots();
        self.nodes_connected.set(slots.len() as i64);
        self.free_slots.clear();
        self.heartbeat_age.clear();
        self.node_up.clear();
        for s in &slots {
            let pool = s.labels.get("pool").cloned().unwrap_or_default();
            self.free_slots
                .get_or_create(&PoolLabel { pool })
                .inc_by(i64::from(s.capacity.saturating_sub(s.running)));
            if let Some(l) = c.registry.liveness(&s.name) {
                self.heartbeat_age
                    .get_or_create(&NodeLabel {
                        node: s.name.clone(),
                    })
                    .set((now - l.last_seen_ms).max(0) as f64 / 1000.0);
            }
        }
        // A node that went silent loses its session, and with it its slots: its age is still
        // reported (from when it was last seen), so an alert on it can fire. Cordoned nodes
        // were taken out on purpose.
        for n in c.store.list_nodes().await? {
            let up = slots.iter().any(|s| s.name == n.name);
            self.node_up
                .get_or_create(&NodeLabel {
                    node: n.name.clone(),
                })
                .set(i64::from(up));
            if n.cordoned || up {
                continue;
            }
            self.heartbeat_age
                .get_or_create(&NodeLabel { node: n.name })
                .set((now - n.last_seen_ms).max(0) as f64 / 1000.0);
        }
        let open = c.store.open_questions().await?;
        self.questions_waiting.set(open.len() as i64);
        let oldest = open.iter().map(|q| q.question.asked_ms).min();
        self.oldest_question
            .set(oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| crate::error::CoordinatorError::Corrupt(format!("metrics: {e}")))?;
        Ok(out)
    }
}

const LEADER_HELP: &str = "1 when this coordinator serves (the only one, or the leading replica); 0 for a standby replica";

/// What a standby replica's /metrics says (it has no store open, so nothing else).
pub fn standby_metrics() -> String {
    let mut registry = Registry::default();
    registry.register(
        "dispatch_coordinator_leader",
        LEADER_HELP,
        Gauge::<i64>::default(),
    );
    registry.register(
        "dispatch_build",
        BUILD_HELP,
        prometheus_client::metrics::info::Info::new(BuildLabels::coordinator()),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("encoding to a String does not fail");
    out
}

/// Serves `/metrics` on `listener` until `stop` resolves: a standby replica's one gauge until
/// `leading` holds the coordinator (at once for a coordinator alone), then everything.
pub async fn serve(
    leading: Arc<std::sync::OnceLock<Arc<Coordinator>>>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let render: dispatch_telemetry::Render = Arc::new(move || {
        let c = leading.get().cloned();
        Box::pin(async move {
            match c {
                Some(c) => c.metrics.render(&c).await.map_err(|e| e.to_string()),
                None => Ok(standby_metrics()),
            }
        })
    });
    dispatch_telemetry::serve_metrics(listener, render, stop).await;
}
