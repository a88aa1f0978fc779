//! Starting a node: its spool and run context, re-attaching to the workers that outlived the
//! last agent, and the health and metrics servers.

use super::{DEFAULT_MAX_LOG, Node};
use crate::AgentConfig;
use crate::runner::{self, RunContext, event};
use crate::spool::EventSpool;
use crate::worker_record::RunRecord;
use dispatch_proto::v1;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::mpsc;

/// The node's own health: SERVING while it has a session with a coordinator and is not
/// draining.
pub(super) struct Health {
    reporter: tonic_health::server::HealthReporter,
    serving: bool,
}

impl Health {
    /// Says SERVING or NOT_SERVING when that changed.
    pub(super) async fn set(&mut self, serving: bool) {
        if serving != self.serving {
            self.serving = serving;
            let status = if serving {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            self.reporter.set_service_status("", status).await;
        }
    }
}

impl Node {
    /// The node with its spool open and nothing running yet; the receiver takes the runners'
    /// events.
    pub(super) fn open(cfg: AgentConfig) -> anyhow::Result<(Node, mpsc::Receiver<v1::TaskEvent>)> {
        let spool = EventSpool::open(&cfg.data_dir.join("spool")).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the event spool in {}: {e}",
                cfg.data_dir.display()
            )
        })?;
        let (events_tx, events_rx) = mpsc::channel(1024);
        let ctx = RunContext {
            node: cfg.name.clone(),
            log_dir: cfg.data_dir.join("logs"),
            default_workdir: cfg.workdir.clone(),
            backends: Arc::new(cfg.backends.clone()),
            events: events_tx,
            run_dir: cfg.data_dir.join("running"),
            workspace_roots: Arc::new(cfg.workspace_roots.clone()),
            repo_cache: cfg.data_dir.join("repos"),
            workspaces: cfg.data_dir.join("workspaces"),
            max_log_bytes: Arc::new(AtomicU64::new(DEFAULT_MAX_LOG)),
            repositories: Arc::new(cfg.repositories.clone()),
            trusted_keys: Arc::new(cfg.trusted_keys.clone()),
            changes: Arc::new(cfg.changes.clone()),
            api_retries: cfg.api_retries,
            worker_env: Arc::new(cfg.worker_env.clone()),
            signed_runs: Arc::new(crate::signed_runs::SignedRuns::open(
                &cfg.data_dir.join("signed-runs"),
                dispatch_core::process::now_ms(),
            )),
        };
        let node = Node {
            cfg,
            spool,
            tasks: HashMap::new(),
            next_runs: HashMap::new(),
            ctx,
            finished: Default::default(),
            drain: None,
            metrics: Default::default(),
            backends: HashMap::new(),
        };
        Ok((node, events_rx))
    }

    /// Workers outlive the agent: re-attaches to those still running, and reports how the
    /// others ended (the seed's startup reconciliation; their questions are reported again by
    /// the scan).
    pub(super) async fn reattach(&mut self) {
        let (live, _gone) = RunRecord::load_all(&self.ctx.run_dir);
        for record in live {
            let offset = self.spool.log_bytes(&record.task_id);
            let id = record.task_id.clone();
            self.spool.begin(&id, 0);
            let handle = runner::reattach(self.ctx.clone(), record, offset);
            self.tasks.insert(id, handle);
        }
        for (id, workdir) in self.spool.unfinished() {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let (markdown, done_marker) = if workdir.is_empty() {
                (String::new(), false)
            } else {
                let (w, t) = (PathBuf::from(&workdir), id.clone());
                tokio::task::spawn_blocking(move || crate::watched::read_plan(&w, &t))
                    .await
                    .unwrap_or_default()
            };
            let exited = v1::WorkerExited {
                exit_code: None,
                signal: None,
                markdown,
                done_marker,
                cancelled: false,
                detail: format!(
                    "the worker ended while the agent on node `{}` was down; its exit status is unknown",
                    self.cfg.name
                ),
                fault: String::new(),
                drained: false,
                cli: None,
            };
            self.spool_event(event(&id, 0, v1::task_event::Kind::Exited(exited)));
        }
    }

    /// Serves the gRPC health check on `--health-listen` (NOT_SERVING until connected).
    pub(super) async fn serve_health(&self) -> anyhow::Result<Option<Health>> {
        let Some(addr) = &self.cfg.health_listen else {
            return Ok(None);
        };
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for health checks on {addr}: {e}"))?;
        tracing::info!(addr = %l.local_addr()?, "gRPC health check on {}", l.local_addr()?);
        let (reporter, svc) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
        );
        Ok(Some(Health {
            reporter,
            serving: false,
        }))
    }

    /// Serves Prometheus metrics on `--metrics-listen`, and writes where to DATA_DIR/metrics.addr.
    pub(super) async fn serve_metrics(&self) -> anyhow::Result<()> {
        let Some(addr) = &self.cfg.metrics_listen else {
            return Ok(());
        };
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        let bound = l.local_addr()?;
        let file = self.cfg.data_dir.join("metrics.addr");
        std::fs::write(&file, format!("http://{bound}/metrics\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
        let m = Arc::clone(&self.metrics);
        let render: dispatch_telemetry::Render = Arc::new(move || {
            let m = Arc::clone(&m);
            Box::pin(async move { m.render() })
        });
        tokio::spawn(dispatch_telemetry::serve_metrics(
            l,
            render,
            std::future::pending::<()>(),
        ));
        Ok(())
    }
}
