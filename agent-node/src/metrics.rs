//! The agent's Prometheus metrics (`dispatch-agent --metrics-listen`): its connection, its
//! workers, and what structured worker streams report — tokens and cost per backend, as
//! counters (each run's totals turned into increments).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    backend: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Registry,
    /// 1 while connected to a coordinator.
    pub connected: Gauge,
    /// 1 while draining.
    pub draining: Gauge,
    /// Workers running.
    pub workers: Gauge,
    /// Workers started.
    pub starts: Counter,
    /// Events sent to the coordinator (resends included).
    pub events: Counter,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<BackendLabel, Counter<f64, AtomicU64>>,
    /// Each run's totals as last counted: (task, attempt) → (input, output, cache read, cache
    /// write, cost).
    counted: Mutex<HashMap<(String, u32), [f64; 5]>>,
}

/// `dispatch_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    component: String,
    version: String,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    /// The metrics, registered.
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::default();
        let m = AgentMetrics {
            registry: Registry::default(),
            connected: Gauge::default(),
            draining: Gauge::default(),
            workers: Gauge::default(),
            starts: Counter::default(),
            events: Counter::default(),
            tokens: Family::default(),
            cost: Family::default(),
            counted: Mutex::new(HashMap::new()),
        };
        registry.register(
            "dispatch_agent_connected",
            "1 while the agent has a session with a coordinator",
            m.connected.clone(),
        );
        registry.register(
            "dispatch_agent_draining",
            "1 while the node drains",
            m.draining.clone(),
        );
        registry.register(
            "dispatch_agent_workers",
            "Workers running on this node",
            m.workers.clone(),
        );
        registry.register(
            "dispatch_agent_worker_starts",
            "Workers started",
            m.starts.clone(),
        );
        registry.register(
            "dispatch_agent_events_sent",
            "Task events sent to the coordinator",
            m.events.clone(),
        );
        registry.register(
            "dispatch_agent_tokens",
            "Tokens structured worker streams reported, by backend and kind (input, output, cache_read, cache_write)",
            m.tokens.clone(),
        );
        registry.register(
            "dispatch_agent_cost_usd",
            "Cost in US dollars structured worker streams reported, by backend",
            m.cost.clone(),
        );
        registry.register(
            "dispatch_build",
            "Which program and version serves (dispatch_build_info, always 1)",
            prometheus_client::metrics::info::Info::new(BuildLabels {
                component: "agent".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        );
        AgentMetrics { registry, ..m }
    }

    /// Counts what a run's new totals add to the ones counted before.
    pub fn usage(&self, task: &str, attempt: u32, backend: &str, u: &dispatch_proto::v1::Usage) {
        let now = [
            u.input_tokens as f64,
            u.output_tokens as f64,
            u.cache_read_tokens as f64,
            u.cache_write_tokens as f64,
            if u.cost_known && u.cost_usd.is_finite() {
                u.cost_usd.max(0.0)
            } else {
                0.0
            },
        ];
        let mut counted = self.counted.lock().unwrap();
        let before = counted
            .insert((task.to_string(), attempt), now)
            .unwrap_or_default();
        for (i, kind) in ["input", "output", "cache_read", "cache_write"]
            .into_iter()
            .enumerate()
        {
            let add = (now[i] - before[i]).max(0.0) as u64;
            if add > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        backend: backend.to_string(),
                        kind: kind.to_string(),
                    })
                    .inc_by(add);
            }
        }
        let add = (now[4] - before[4]).max(0.0);
        if add > 0.0 {
            self.cost
                .get_or_create(&BackendLabel {
                    backend: backend.to_string(),
                })
                .inc_by(add);
        }
    }

    /// Forgets a run that ended (its counters stay).
    pub fn ended(&self, task: &str) {
        self.counted.lock().unwrap().retain(|(t, _), _| t != task);
    }

    /// The Prometheus text.
    pub fn render(&self) -> Result<String, String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_totals_become_increments_per_backend() {
        let m = AgentMetrics::new();
        let u = |input, output, cost| dispatch_proto::v1::Usage {
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost,
            cost_known: cost > 0.0,
            ..Default::default()
        };
        m.usage("a", 1, "claude", &u(10, 100, 0.5));
        m.usage("a", 1, "claude", &u(30, 150, 0.75));
        m.usage("b", 1, "codex", &u(5, 7, 0.0));
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"dispatch_agent_tokens_total{backend="claude",kind="input"} 30"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dispatch_agent_tokens_total{backend="claude",kind="output"} 150"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dispatch_agent_cost_usd_total{backend="claude"} 0.75"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dispatch_agent_tokens_total{backend="codex",kind="output"} 7"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"dispatch_agent_cost_usd_total{backend="codex"}"#),
            "{text}"
        );
        // A retried run starts from zero: its totals add on.
        m.ended("a");
        m.usage("a", 2, "claude", &u(1, 1, 0.25));
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"dispatch_agent_tokens_total{backend="claude",kind="input"} 31"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dispatch_agent_cost_usd_total{backend="claude"} 1.0"#),
            "{text}"
        );
    }
}
