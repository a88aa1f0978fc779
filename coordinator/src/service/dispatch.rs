//! `DispatchService`: what the CLI calls. Thin: check the input, call the domain, convert.

use super::auth::{Rpc, Sight, caller, permit, sees_all, summarize, summarize_node};
use super::views::{Viewer, task_view, task_views};
use crate::Coordinator;
use crate::convert;
use crate::domain::access::NewToken;
use crate::error::CoordinatorError;
use crate::model::{LogStream, Principal};
use crate::publish::Published;
use crate::store::TaskQuery;
use dispatch_core::TaskState;
use dispatch_proto::convert::state_from_proto;
use dispatch_proto::v1;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Serves the CLI.
pub struct DispatchSvc(pub Arc<Coordinator>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Watchers and log followers buffer this many messages before the sender waits.
const CLIENT_QUEUE: usize = 256;
/// Tasks per ListTasks page unless the caller asks for fewer (or more, up to the maximum).
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// A ListTasks page stops before it would pass this many encoded bytes.
const PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Stored output sent per read by `Logs`.
const LOG_PAGE_BYTES: usize = 1024 * 1024;

async fn snapshots(
    c: &Coordinator,
    task_id: &str,
    viewer: Viewer<'_>,
) -> Result<Vec<v1::Task>, CoordinatorError> {
    let records = if task_id.is_empty() {
        c.store.active_tasks().await?
    } else {
        vec![c.task(task_id).await?]
    };
    task_views(c, &records, viewer).await
}

fn token_info(t: &crate::model::TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: t.id.clone(),
        kind: t.kind.clone(),
        name: t.name.clone(),
        role: t.role.clone(),
        nodes: t.nodes.clone(),
        created_at_ms: t.created_ms,
        created_by: t.created_by.clone(),
        revoked_at_ms: t.revoked_ms.unwrap_or(0),
        submits_per_minute: t.submits_per_minute,
        max_active: t.max_active,
        expires_at_ms: t.expires_ms,
        last_used_at_ms: t.last_used_ms,
        uses_max: t.uses_max,
        uses: t.uses,
        task_budget: t.budgets.task.map(|b| v1::Budget {
            usd_micros: b.usd_micros,
            tokens: b.tokens,
        }),
        day_budget: t.budgets.day.map(|b| v1::Budget {
            usd_micros: b.usd_micros,
            tokens: b.tokens,
        }),
    }
}

/// The caller, if it may make a call of kind `rpc`, and what it sees.
fn who<T>(req: &Request<T>, rpc: Rpc) -> Result<(Principal, Sight), Status> {
    let who = caller(req)?;
    let sight = permit(&who, rpc)?;
    Ok((who, sight))
}

#[tonic::async_trait]
impl v1::dispatch_service_server::DispatchService for DispatchSvc {
    async fn submit(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let (who, sight) = who(&req, Rpc::Submit)?;
        // The caller's trace, when it sent one; the task keeps this span's context.
        let span = tracing::info_span!("coordinator.submit", task_id = tracing::field::Empty);
        dispatch_telemetry::extract(&span, req.metadata());
        let t = tracing::Instrument::instrument(
            self.0
                .submit(convert::submit_from_proto(req.into_inner()), &who),
            span.clone(),
        )
        .await?;
        span.record("task_id", t.id.as_str());
        Ok(Response::new(v1::SubmitResponse {
            task: Some(task_view(&self.0, &t, (&who, sight)).await?),
        }))
    }

    async fn get_task(
        &self,
        req: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Read)?;
        let t = self.0.task(&req.into_inner().id).await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn list_tasks(
        &self,
        req: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let (who, sight) = who(&req, Rpc::Read)?;
        let req = req.into_inner();
        let mut states = Vec::new();
        for s in req.states {
            states.push(
                state_from_proto(s)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown task state {s}")))?,
            );
        }
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<i64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "page token `{}` is not one this coordinator gave out; start again without it",
                    req.page_token
                ))
            })?)
        };
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let page = self
            .0
            .store
            .list_tasks(&TaskQuery {
                states,
                limit,
                before,
                count: before.is_none(),
            })
            .await
            .map_err(Status::from)?;
        let views = task_views(&self.0, &page.tasks, (&who, sight)).await?;
        // A page stops before it would pass PAGE_BYTES (one task always fits a message).
        let mut bytes = 0;
        let mut tasks = Vec::with_capacity(views.len());
        let mut next = page.next;
        for (i, t) in views.into_iter().enumerate() {
            bytes += t.encoded_len();
            if i > 0 && bytes > PAGE_BYTES {
                next = Some(page.positions[i - 1]);
                break;
            }
            tasks.push(t);
        }
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            total: page.total,
        }))
    }

    type WatchStream = BoxStream<v1::WatchEvent>;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (who, sight) = who(&req, Rpc::Read)?;
        let permit = self.0.open_stream(&who, "watch")?;
        let task_id = req.into_inner().task_id;
        let c = Arc::clone(&self.0);
        // Subscribe before reading the snapshot so no change falls between them.
        let rx = c.publisher.watch();
        let initial = snapshots(&c, &task_id, (&who, sight)).await?;
        let (tx, out) = mpsc::channel(CLIENT_QUEUE);
        let stopping = c.stopping();
        let gone = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stopping => {}
                // The client went away: its place is free at once, not at the next change.
                _ = gone.closed() => {}
                _ = pump_watch(&c, &task_id, (&who, sight), rx, initial, tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel(&self, req: Request<v1::CancelRequest>) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Act)?;
        let t = self.0.cancel(&req.into_inner().id, &who).await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn list_nodes(
        &self,
        req: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let (_, sight) = who(&req, Rpc::Nodes)?;
        let nodes = self.0.list_nodes().await?;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes
                .iter()
                .map(|(n, live)| {
                    let mut n = convert::node_to_proto(n, live.as_ref());
                    if sight == Sight::Summaries {
                        summarize_node(&mut n);
                    }
                    n
                })
                .collect(),
        }))
    }

    type GetOutputStream = BoxStream<v1::OutputResponse>;

    async fn get_output(
        &self,
        req: Request<v1::GetOutputRequest>,
    ) -> Result<Response<Self::GetOutputStream>, Status> {
        let (who, _) = who(&req, Rpc::Logs)?;
        let req = req.into_inner();
        let c = Arc::clone(&self.0);
        let task = c.task(&req.id).await?;
        crate::domain::must_own(&who, &task)?;
        let permit = if req.follow {
            Some(c.open_stream(&who, "output --follow")?)
        } else {
            None
        };
        // Subscribe before the first read so no change falls between them.
        let watch_rx = c.publisher.watch();
        let (tx, out) = mpsc::channel(4);
        let stopping = c.stopping();
        tokio::spawn(async move {
            let _permit = permit;
            let told = tx.clone();
            tokio::select! {
                _ = stopping => stopping_error(&told).await,
                _ = told.closed() => {}
                _ = pump_output(&c, task, req.follow, watch_rx, tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_changes(
        &self,
        req: Request<v1::GetChangesRequest>,
    ) -> Result<Response<v1::ChangesResponse>, Status> {
        let (who, _) = who(&req, Rpc::Logs)?;
        let t = self.0.task(&req.into_inner().id).await?;
        crate::domain::must_own(&who, &t)?;
        let Some(info) = &t.changes else {
            return Ok(Response::new(v1::ChangesResponse {
                info: None,
                diff: String::new(),
                none: no_changes(&t),
            }));
        };
        let diff = self.0.store.diff(&t.id).await?.unwrap_or_default();
        Ok(Response::new(v1::ChangesResponse {
            info: Some(convert::changes_to_proto(info)),
            diff,
            none: String::new(),
        }))
    }

    type GetBundleStream = BoxStream<v1::BundleResponse>;

    async fn get_bundle(
        &self,
        req: Request<v1::GetBundleRequest>,
    ) -> Result<Response<Self::GetBundleStream>, Status> {
        let (who, _) = who(&req, Rpc::Logs)?;
        let t = self.0.task(&req.into_inner().id).await?;
        crate::domain::must_own(&who, &t)?;
        let Some(info) = t.changes.clone() else {
            return Err(Status::not_found(no_changes(&t)));
        };
        if info.delivery != "bundle" || info.bundle_bytes == 0 {
            return Err(Status::failed_precondition(if info.error.is_empty() {
                format!(
                    "`{}` came home by {}, not as a bundle",
                    t.id,
                    if info.delivery.is_empty() {
                        "nothing (it changed nothing)"
                    } else {
                        &info.delivery
                    }
                )
            } else {
                format!("`{}` has no bundle: {}", t.id, info.error)
            }));
        }
        if info.bundle_stored < info.bundle_bytes {
            return Err(Status::unavailable(format!(
                "the bundle of `{}` is still arriving from node `{}` ({} of {} bytes); try again shortly",
                t.id, t.node, info.bundle_stored, info.bundle_bytes
            )));
        }
        let c = Arc::clone(&self.0);
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0;
            loop {
                let page = match c.store.bundle_page(&t.id, offset, LOG_PAGE_BYTES).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                if page.is_empty() {
                    return;
                }
                for (at, data) in page {
                    offset = at + data.len() as u64;
                    if tx.send(Ok(v1::BundleResponse { data })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type LogsStream = BoxStream<v1::LogsResponse>;

    async fn logs(
        &self,
        req: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let (who, _) = who(&req, Rpc::Logs)?;
        let req = req.into_inner();
        let c = Arc::clone(&self.0);
        let task = c.task(&req.id).await?;
        crate::domain::must_own(&who, &task)?;
        let permit = if req.follow {
            Some(c.open_stream(&who, "logs --follow")?)
        } else {
            None
        };
        let log_rx = c.publisher.logs();
        let watch_rx = c.publisher.watch();
        let (tx, out) = mpsc::channel(CLIENT_QUEUE);
        let stopping = c.stopping();
        tokio::spawn(async move {
            let _permit = permit;
            let told = tx.clone();
            tokio::select! {
                _ = stopping => stopping_error(&told).await,
                _ = told.closed() => {}
                _ = pump_logs(&c, &task.id, &req, log_rx, watch_rx, tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn answer(&self, req: Request<v1::AnswerRequest>) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Act)?;
        let req = req.into_inner();
        let t = self
            .0
            .answer(&req.id, req.seq, &req.text, &req.request_id, &who)
            .await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn add_note(
        &self,
        req: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Act)?;
        let req = req.into_inner();
        let t = self.0.add_note(&req.id, &req.text, &who).await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn list_questions(
        &self,
        req: Request<v1::ListQuestionsRequest>,
    ) -> Result<Response<v1::ListQuestionsResponse>, Status> {
        let (who, sight) = who(&req, Rpc::Read)?;
        Ok(Response::new(v1::ListQuestionsResponse {
            questions: self
                .0
                .pending_questions()
                .await?
                .into_iter()
                .map(|o| {
                    let full = sees_all(&who, sight, &o.owner);
                    let mut q = convert::open_question_to_proto(o);
                    if !full {
                        q.text.clear();
                        q.title.clear();
                    }
                    q
                })
                .collect(),
        }))
    }

    async fn retry(&self, req: Request<v1::RetryRequest>) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Act)?;
        let req = req.into_inner();
        let t = self
            .0
            .retry(&req.id, &req.backend, &req.model, &req.remote, &who)
            .await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn clean(&self, req: Request<v1::CleanRequest>) -> Result<Response<v1::Task>, Status> {
        let (who, sight) = who(&req, Rpc::Act)?;
        let t = self.0.clean(&req.into_inner().id, &who).await?;
        Ok(Response::new(task_view(&self.0, &t, (&who, sight)).await?))
    }

    async fn info(
        &self,
        req: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoResponse>, Status> {
        let (_, sight) = who(&req, Rpc::Nodes)?;
        let c = &self.0;
        Ok(Response::new(v1::InfoResponse {
            version: crate::VERSION.to_string(),
            pid: std::process::id(),
            started_at_ms: c.started_ms,
            active_tasks: c.store.count_active().await?,
            connected_nodes: c.registry.connected_count() as u32,
            data_dir: if sight == Sight::Summaries {
                String::new()
            } else {
                c.config.data_dir.display().to_string()
            },
        }))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let (who, _) = who(&req, Rpc::Admin)?;
        let r = req.into_inner();
        let spec = NewToken {
            user: r.user,
            role: r.role,
            node: r.node,
            nodes: r.nodes,
            submits_per_minute: r.submits_per_minute,
            max_active: r.max_active,
            expires_in: (r.expires_in_ms > 0)
                .then(|| std::time::Duration::from_millis(r.expires_in_ms)),
            uses: r.uses,
            task_budget: r.task_budget,
            day_budget: r.day_budget,
        };
        let (t, token) = self.0.create_token(&spec, &who).await?;
        Ok(Response::new(v1::CreateTokenResponse {
            info: Some(token_info(&t)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        who(&req, Rpc::Admin)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: self.0.list_tokens().await?.iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::TokenInfo>, Status> {
        let (who, _) = who(&req, Rpc::Admin)?;
        let t = self.0.revoke_token(&req.into_inner().id, &who).await?;
        Ok(Response::new(token_info(&t)))
    }

    async fn set_node_draining(
        &self,
        req: Request<v1::SetNodeDrainingRequest>,
    ) -> Result<Response<v1::Node>, Status> {
        let (who, _) = who(&req, Rpc::Admin)?;
        let r = req.into_inner();
        let stop_after =
            (r.stop_after_ms > 0).then(|| std::time::Duration::from_millis(r.stop_after_ms));
        let (n, live) = self
            .0
            .set_cordoned(&r.name, r.draining, stop_after, &who)
            .await?;
        Ok(Response::new(convert::node_to_proto(&n, live.as_ref())))
    }

    async fn get_policy(
        &self,
        req: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::Policy>, Status> {
        let _ = who(&req, Rpc::Nodes)?;
        let p = self.0.get_policy().await?;
        Ok(Response::new(convert::policy_to_proto(&p)))
    }

    async fn set_policy(
        &self,
        req: Request<v1::SetPolicyRequest>,
    ) -> Result<Response<v1::Policy>, Status> {
        let (who, _) = who(&req, Rpc::Admin)?;
        let r = req.into_inner();
        let yaml = (!r.clear).then_some(r.yaml.as_str());
        let p = self.0.set_policy(yaml, &who).await?;
        Ok(Response::new(convert::policy_to_proto(&p)))
    }

    async fn forget_node(
        &self,
        req: Request<v1::ForgetNodeRequest>,
    ) -> Result<Response<v1::ForgetNodeResponse>, Status> {
        let (who, _) = who(&req, Rpc::Admin)?;
        self.0.forget_node(&req.into_inner().name, &who).await?;
        Ok(Response::new(v1::ForgetNodeResponse {}))
    }

    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        who(&req, Rpc::Admin)?;
        let r = req.into_inner();
        let records = self
            .0
            .audit_records(
                Some(r.task_id.as_str()).filter(|t| !t.is_empty()),
                (r.before_id > 0).then_some(r.before_id),
                if r.limit == 0 { 100 } else { r.limit },
            )
            .await?;
        Ok(Response::new(v1::ListAuditResponse {
            records: records
                .into_iter()
                .map(|a| v1::AuditRecord {
                    id: a.id,
                    at_ms: a.at_ms,
                    who: a.entry.who,
                    action: a.entry.action,
                    task_id: a.entry.task_id,
                    detail: a.entry.detail,
                })
                .collect(),
        }))
    }
}

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Sends `tasks` as snapshot events; false when the client has gone.
async fn send_snapshots(tx: &Sender<v1::WatchEvent>, tasks: Vec<v1::Task>) -> bool {
    for t in tasks {
        let ev = v1::WatchEvent {
            task: Some(t),
            change: "snapshot".into(),
            seq: 0,
        };
        if tx.send(Ok(ev)).await.is_err() {
            return false;
        }
    }
    true
}

/// Feeds one watcher: the snapshot, then every change of its task (or of all tasks); a
/// watcher too slow to see every change gets the current state again instead.
async fn pump_watch(
    c: &Coordinator,
    task_id: &str,
    viewer: Viewer<'_>,
    mut rx: broadcast::Receiver<Arc<Published>>,
    initial: Vec<v1::Task>,
    tx: Sender<v1::WatchEvent>,
) {
    if !send_snapshots(&tx, initial).await {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(p) => {
                if !task_id.is_empty() && p.change.task.id != task_id {
                    continue;
                }
                let mut ev = p
                    .wire(|change| convert::change_to_proto(change, &c.config.budgets.prices))
                    .clone();
                if !sees_all(viewer.0, viewer.1, &p.change.task.owner)
                    && let Some(t) = &mut ev.task
                {
                    summarize(t);
                }
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "watcher lagged; resending snapshots");
                let Ok(now) = snapshots(c, task_id, viewer).await else {
                    return;
                };
                if !send_snapshots(&tx, now).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Why task `t` has no changes to show.
fn no_changes(t: &crate::model::TaskRecord) -> String {
    if !t.worktree && t.repo.0.is_empty() {
        format!(
            "`{}` ran in its node's directory, not in a worktree or a copy of your repository, so its changes are in place there; dispatch with --worktree (or from a git checkout with a remote coordinator) to get them back as a branch",
            t.id
        )
    } else if !t.state.is_terminal() {
        format!(
            "`{}` is {}: its changes come home when it ends",
            t.id, t.state
        )
    } else {
        format!("`{}` reported no changes (its worker did not start)", t.id)
    }
}

/// Sends task `t`'s output.md as stored (nothing when there is none yet); false when the
/// client has gone or the store failed (the client is told).
async fn send_output(
    c: &Coordinator,
    t: &crate::model::TaskRecord,
    tx: &Sender<v1::OutputResponse>,
) -> bool {
    match c.store.output(&t.id).await {
        Ok(Some(o)) => {
            let path = if t.workdir.is_empty() {
                format!(
                    ".dispatch/tasks/{}/output.md (in the task's workspace)",
                    t.id
                )
            } else {
                format!("{}/.dispatch/tasks/{}/output.md", t.workdir, t.id)
            };
            tx.send(Ok(v1::OutputResponse {
                markdown: o.markdown,
                bytes: o.bytes,
                truncated: o.truncated,
                node: t.node.clone(),
                path,
            }))
            .await
            .is_ok()
        }
        Ok(None) => true,
        Err(e) => {
            let _ = tx.send(Err(Status::from(e))).await;
            false
        }
    }
}

/// Feeds one `output` client: what is stored, then (with `follow`) every new version until the
/// task ends.
async fn pump_output(
    c: &Coordinator,
    task: crate::model::TaskRecord,
    follow: bool,
    mut watch_rx: broadcast::Receiver<Arc<Published>>,
    tx: Sender<v1::OutputResponse>,
) {
    if !send_output(c, &task, &tx).await || !follow || task.state.is_terminal() {
        return;
    }
    loop {
        match watch_rx.recv().await {
            Ok(p) if p.change.task.id == task.id => {
                let t = &p.change.task;
                if p.change.kind == crate::model::ChangeKind::Output
                    && !send_output(c, t, &tx).await
                {
                    return;
                }
                if t.state.is_terminal() {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let Ok(Some(now)) = c.store.get_task(&task.id).await else {
                    return;
                };
                if !send_output(c, &now, &tx).await || now.state.is_terminal() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the stored output of `task` after event `after`, a page (about 1 MiB) at a time so
/// memory stays flat however much is stored; returns the last seq sent, or None when the
/// client has gone or the store failed (the client is told).
async fn send_stored_logs(
    c: &Coordinator,
    task: &str,
    stream: LogStream,
    after: u64,
    tx: &Sender<v1::LogsResponse>,
) -> Option<u64> {
    let mut last = after;
    loop {
        let page = match c.store.log_page(task, stream, last, LOG_PAGE_BYTES).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(Status::from(e))).await;
                return None;
            }
        };
        if page.is_empty() {
            return Some(last);
        }
        for (seq, data) in page {
            last = seq;
            tx.send(Ok(v1::LogsResponse { data, seq })).await.ok()?;
        }
    }
}

/// Ends a stream cut by the coordinator's stop with an error, so a follower knows the end it
/// saw is not the task's (and follows again on the next coordinator); a watch ends cleanly and
/// is re-subscribed either way.
async fn stopping_error<T>(tx: &Sender<T>) {
    let _ = tx
        .send(Err(Status::unavailable(
            "the coordinator is stopping; follow again when it (or another replica) is back",
        )))
        .await;
}

/// Feeds one `logs` client: what is stored after chunk `after_seq`, then (with `follow`) new
/// output until the task ends.
async fn pump_logs(
    c: &Coordinator,
    task: &str,
    req: &v1::LogsRequest,
    mut log_rx: broadcast::Receiver<crate::publish::LogLine>,
    mut watch_rx: broadcast::Receiver<Arc<Published>>,
    tx: Sender<v1::LogsResponse>,
) {
    let stream = if req.activity {
        LogStream::Activity
    } else {
        LogStream::Raw
    };
    let (follow, after) = (req.follow, req.after_seq);
    let Some(mut last) = send_stored_logs(c, task, stream, after, &tx).await else {
        return;
    };
    let ended = c
        .store
        .get_task(task)
        .await
        .ok()
        .flatten()
        .is_none_or(|t| t.state.is_terminal() && t.ended_ms > 0);
    if !follow || ended {
        return;
    }
    loop {
        tokio::select! {
            line = log_rx.recv() => match line {
                Ok(l) if l.task_id == task && l.stream == stream && l.seq > last => {
                    last = l.seq;
                    if tx.send(Ok(v1::LogsResponse { data: l.data.to_vec(), seq: l.seq })).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let Some(l) = send_stored_logs(c, task, stream, last, &tx).await else { return };
                    last = l;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            ev = watch_rx.recv() => {
                let done = match &ev {
                    Ok(p) => {
                        let (t, seq) = (&p.change.task, p.change.seq);
                        t.id == task && t.state.is_terminal() && (seq > 0 || t.node.is_empty() || t.state == TaskState::Lost)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => false,
                    Err(broadcast::error::RecvError::Closed) => true,
                };
                if done {
                    // The exit is the node's last event; every log chunk before it is stored.
                    let _ = send_stored_logs(c, task, stream, last, &tx).await;
                    return;
                }
            }
        }
    }
}
