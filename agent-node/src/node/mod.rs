//! The node's connection loop: one owner of the spool and the running tasks, fed by the
//! coordinator's stream and by the runners' events. Reconnects with exponential backoff;
//! events keep being spooled while disconnected and are resent after reconnecting.
//!
//! Every wait is bounded and sits in one `select!` with the shutdown signal: connecting
//! (10 s), a coordinator that stops talking (2.5 of its heartbeats), a stream that stops
//! taking messages. SIGTERM is honoured in each of them.

use crate::backends::BackendSpec;
use crate::runner::{self, RunContext, TaskHandle, event};
use crate::spool::EventSpool;
use crate::worker_record::RunRecord;
use dispatch_proto::v1;
use dispatch_proto::v1::coordinator_message::Kind as In;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` or `unix:/path`.
    pub coordinator: String,
    /// Unique node name.
    pub name: String,
    /// Labels for pool selection.
    pub labels: BTreeMap<String, String>,
    /// Max concurrent tasks.
    pub max_tasks: u32,
    /// Default workdir for tasks that name none.
    pub workdir: PathBuf,
    /// Spool and logs live here.
    pub data_dir: PathBuf,
    /// Backends offered.
    pub backends: Vec<BackendSpec>,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// API retries in a row after which a worker is stopped (Claude Code is told the same).
    pub api_retries: u32,
    /// Only these variables of the agent's environment reach a worker (None: all but its own).
    pub worker_env: Option<Vec<String>>,
    /// A task's own workdir must be under one of these (empty: any).
    pub workspace_roots: Vec<PathBuf>,
    /// Which repositories tasks may name.
    pub repositories: dispatch_core::repo_url::RepoPolicy,
    /// The node token for a coordinator that needs one (none over the local socket).
    pub token: Option<String>,
    /// How an `https://` coordinator is verified, and this node's certificate for mTLS.
    pub tls: crate::channel::ClientTls,
    /// Public keys whose signed tasks this node runs; when any are listed, nothing else runs.
    pub trusted_keys: Vec<String>,
    /// How a worktree or workspace task's changes come home.
    pub changes: crate::changes::Policy,
    /// What SIGTERM does.
    pub on_sigterm: OnSigterm,
    /// Serve the gRPC health check here (SERVING while connected to a coordinator).
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics here (`/metrics`).
    pub metrics_listen: Option<String>,
    /// Give up (exit with [`EXIT_REFUSED`]) once the coordinator has refused every connection
    /// attempt for this long (and at least [`MIN_REFUSALS`] of them) for a reason retrying does
    /// not fix: the token (missing, bogus, revoked, another node's) or the name (another live
    /// agent holds it). Zero: never give up.
    pub give_up_after: Duration,
    /// The node is ephemeral (a pod): the coordinator forgets it once it has gone and its
    /// tasks are settled.
    pub ephemeral: bool,
}

/// The file in the agent's data dir that holds the node's own token, given by the coordinator
/// when the node first connected with a registration token; it is presented from then on.
pub const NODE_TOKEN_FILE: &str = "node.token";

/// The agent's exit status when the coordinator refused it for good (sysexits' EX_CONFIG:
/// systemd's unit says `RestartPreventExitStatus=78`).
pub const EXIT_REFUSED: i32 = 78;

/// Refusals in a row before the agent may give up, however long they took.
pub const MIN_REFUSALS: u32 = 3;

/// Why the agent stopped trying: the coordinator's last refusal, and how many in a row.
#[derive(Debug)]
pub struct RefusedForGood {
    /// The last refusal, with what to do.
    pub reason: String,
    /// Attempts refused in a row.
    pub tries: u32,
}

impl std::fmt::Display for RefusedForGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the coordinator refused this node {} times in a row, and retrying does not fix it: {}",
            self.tries, self.reason
        )
    }
}

impl std::error::Error for RefusedForGood {}

/// A failed connection attempt: what happened, and whether the coordinator refused this node
/// (its token or name) rather than failing to answer.
struct ConnectError {
    text: String,
    refused: bool,
}

impl From<String> for ConnectError {
    fn from(text: String) -> Self {
        ConnectError {
            text,
            refused: false,
        }
    }
}

impl From<&str> for ConnectError {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

/// What the agent does on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSigterm {
    /// Leave the workers running (the next start re-attaches to them).
    Detach,
    /// Take no new task, let running workers finish within the timeout, stop the rest (each
    /// reported drained: lost, retryable), flush the events, exit.
    Drain(Duration),
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a connection attempt (TCP, HTTP/2, Hello → Welcome) may take. The addresses of a
/// list are tried side by side after a short head start (`channel::connect_first`), so a hung
/// one does not use it up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered for the stream.
const OUT_QUEUE: usize = 1024;
/// Worker output sent per task until a coordinator says its own cap.
const DEFAULT_MAX_LOG: u64 = 64 * 1024 * 1024;

struct Session {
    out: mpsc::Sender<v1::AgentMessage>,
    inbound: Streaming<v1::CoordinatorMessage>,
    heartbeat: tokio::time::Interval,
    /// Silence after which the coordinator counts as gone (None: it sends no heartbeats).
    silence: Option<Duration>,
    last_heard: Instant,
}

enum FromSession {
    Message(Box<Result<Option<v1::CoordinatorMessage>, tonic::Status>>),
    HeartbeatDue,
    Silent,
}

impl Session {
    async fn next(&mut self) -> FromSession {
        let deadline = self.last_heard + self.silence.unwrap_or(Duration::from_secs(86400));
        tokio::select! {
            m = self.inbound.message() => {
                self.last_heard = Instant::now();
                FromSession::Message(Box::new(m))
            }
            _ = self.heartbeat.tick() => FromSession::HeartbeatDue,
            _ = tokio::time::sleep_until(deadline), if self.silence.is_some() => FromSession::Silent,
        }
    }

    /// Queues `m` for the coordinator, waiting at most the silence time; false when the
    /// stream does not take it (the session is then dropped and everything is resent).
    async fn send(&self, m: v1::AgentMessage) -> bool {
        let wait = self.silence.unwrap_or(Duration::from_secs(30));
        matches!(
            tokio::time::timeout(wait, self.out.send(m)).await,
            Ok(Ok(()))
        )
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

fn msg(kind: v1::agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage { kind: Some(kind) }
}

/// A small jitter (0–25 %) from the clock, so many nodes do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

struct Node {
    cfg: AgentConfig,
    spool: EventSpool,
    tasks: HashMap<String, TaskHandle>,
    /// Assigns of a newer worker run of a task whose older run is still stopping.
    next_runs: HashMap<String, v1::Assign>,
    ctx: RunContext,
    /// (task, attempt) of workers that ended in this run, so a resent Assign never runs one twice.
    finished: std::collections::VecDeque<(String, u32)>,
    /// A drain in progress: from SIGTERM (`--on-sigterm drain`) or from the coordinator
    /// (`dispatch nodes drain NAME --timeout D`).
    drain: Option<Drain>,
    /// Prometheus metrics.
    metrics: Arc<crate::metrics::AgentMetrics>,
    /// The backend of each task this agent started (for the metrics' labels).
    backends: HashMap<String, String>,
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Running workers may go on until then.
    until: Instant,
    /// The rest were stopped.
    stopped: bool,
    /// The agent exits once drained (SIGTERM); a drain the coordinator asked for leaves it
    /// connected.
    exit: bool,
}

/// How many ended tasks a node remembers for de-duplicating Assign.
const REMEMBER_FINISHED: usize = 4096;

impl Node {
    /// The heartbeat this node sends: its running workers, and whether it drains. The one
    /// place it is built (on its interval, when a session opens while draining, when a drain
    /// starts).
    fn heartbeat(&self) -> v1::AgentMessage {
        msg(v1::agent_message::Kind::Heartbeat(v1::Heartbeat {
            running: self.tasks.len() as u32,
            draining: self.drain.is_some(),
        }))
    }

    fn hello(&self) -> v1::Hello {
        let mut cursors: BTreeMap<String, v1::TaskCursor> = self
            .spool
            .cursors()
            .into_iter()
            .map(|(id, seq)| {
                (
                    id.clone(),
                    v1::TaskCursor {
                        task_id: id,
                        seq,
                        running: false,
                    },
                )
            })
            .collect();
        for id in self.tasks.keys() {
            cursors
                .entry(id.clone())
                .or_insert_with(|| v1::TaskCursor {
                    task_id: id.clone(),
                    seq: 0,
                    running: true,
                })
                .running = true;
        }
        v1::Hello {
            name: self.cfg.name.clone(),
            labels: self.cfg.labels.clone().into_iter().collect(),
            backends: self
                .cfg
                .backends
                .iter()
                .map(|b| v1::Backend {
                    name: b.name.clone(),
                    command: b.command.clone(),
                    models: b.models.clone(),
                    max_tasks: b.max_tasks,
                    version: b.version.clone(),
                    error: b.error.clone(),
                })
                .collect(),
            capacity: self.cfg.max_tasks,
            version: crate::VERSION.to_string(),
            hostname: hostname(),
            tasks: cursors.into_values().collect(),
            ephemeral: self.cfg.ephemeral,
        }
    }

    /// What a refusal by status means for this node, with what to do: the coordinator's words
    /// are for CLIs and agents alike; an agent's token comes from DISPATCH_AGENT_TOKEN.
    fn refusal(&self, doing: &str, s: &tonic::Status) -> ConnectError {
        use tonic::Code;
        let refused = matches!(
            s.code(),
            Code::Unauthenticated | Code::PermissionDenied | Code::AlreadyExists
        );
        let text = match (s.code(), &self.cfg.token) {
            (Code::Unauthenticated, None) => format!(
                "the coordinator {doing}: it needs a node token and this agent has none; set DISPATCH_AGENT_TOKEN, or pass --token-file FILE (or `token:` in --config); an admin makes one with `dispatch token create --node {}`",
                self.cfg.name
            ),
            (Code::Unauthenticated, Some(_)) if self.own_token().exists() => format!(
                "the coordinator {doing}: {} — that is this node's own token, in {}, given at its registration; if an admin revoked it, delete that file and start the agent with a new token (`dispatch token create --node {} --uses 1`)",
                s.message(),
                self.own_token().display(),
                self.cfg.name
            ),
            (Code::Unauthenticated, Some(_)) => format!(
                "the coordinator {doing}: {} (for this node: `dispatch token create --node {}`)",
                s.message(),
                self.cfg.name
            ),
            _ => format!("the coordinator {doing}: {}", s.message()),
        };
        ConnectError { text, refused }
    }

    fn own_token(&self) -> std::path::PathBuf {
        self.cfg.data_dir.join(NODE_TOKEN_FILE)
    }

    /// Keeps the token the coordinator gave this node at its registration (0600) and presents
    /// it from now on. Not kept, it would be lost with the registration's use: the session is
    /// dropped, and the next attempt registers again (the coordinator replaces a minted token
    /// that was never used).
    fn keep_own_token(&mut self, token: &str) -> Result<(), ConnectError> {
        let path = self.own_token();
        dispatch_core::fs::write_private(&path, format!("{}\n", token.trim()).as_bytes()).map_err(
            |e| {
                ConnectError::from(format!(
                    "the coordinator registered this node and gave it a token of its own, but it cannot be kept in {}: {e}; make the data dir writable",
                    path.display()
                ))
            },
        )?;
        tracing::info!(file = %path.display(), "registered: this node has a token of its own now and presents it from here on");
        self.cfg.token = Some(token.trim().to_string());
        Ok(())
    }

    async fn connect(&mut self) -> Result<Session, ConnectError> {
        let (channel, _) = crate::channel::connect_first(&self.cfg.coordinator, &self.cfg.tls)
            .await
            .map_err(ConnectError::from)?;
        let mut client = v1::agent_service_client::AgentServiceClient::new(channel)
            .max_decoding_message_size(8 * 1024 * 1024);
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        out.send(msg(v1::agent_message::Kind::Hello(self.hello())))
            .await
            .map_err(|_| "stream closed".to_string())?;
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = &self.cfg.token {
            let v = format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| ConnectError {
                    text: "the node token holds characters a header cannot carry; check DISPATCH_AGENT_TOKEN or --token-file".into(),
                    refused: true,
                })?;
            req.metadata_mut().insert("authorization", v);
        }
        let mut inbound = client
            .session(req)
            .await
            .map_err(|s| self.refusal("refused the session", &s))?
            .into_inner();
        let welcome = match inbound.message().await {
            Ok(Some(v1::CoordinatorMessage {
                kind: Some(In::Welcome(w)),
            })) => w,
            Ok(Some(v1::CoordinatorMessage {
                kind: Some(In::Reject(r)),
            })) => {
                return Err(format!("the coordinator rejected this node: {}", r.reason).into());
            }
            Ok(_) => return Err("the coordinator did not answer Hello with Welcome".into()),
            Err(s) => return Err(self.refusal("refused this node", &s)),
        };
        if !welcome.node_token.is_empty() {
            self.keep_own_token(&welcome.node_token)?;
        }
        for c in &welcome.committed {
            self.spool.ack(&c.task_id, c.seq);
        }
        if welcome.max_log_bytes > 0 {
            self.ctx
                .max_log_bytes
                .store(welcome.max_log_bytes, Ordering::Relaxed);
        }
        let every = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(100, 60_000));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let session = Session {
            out,
            inbound,
            heartbeat,
            silence: welcome.coordinator_heartbeats.then_some(every * 5 / 2),
            last_heard: Instant::now(),
        };
        let resend: Vec<v1::TaskEvent> = self.spool.unacked().cloned().collect();
        if !resend.is_empty() {
            tracing::info!(events = resend.len(), "resending spooled events");
        }
        for ev in resend {
            if !session.send(msg(v1::agent_message::Kind::Event(ev))).await {
                return Err("the coordinator stopped taking events while they were resent".into());
            }
        }
        tracing::info!(epoch = welcome.epoch, "session open");
        Ok(session)
    }

    /// Applies a command; the returned string is empty on success. File work runs off the
    /// async runtime.
    async fn apply(&mut self, cmd: v1::Command) -> String {
        use v1::command::Kind as C;
        match cmd.kind {
            Some(C::Assign(a)) => self.assign(a),
            Some(C::Cancel(c)) => {
                if let Some(t) = self.tasks.get_mut(&c.task_id)
                    && (c.attempt == 0 || c.attempt == t.attempt)
                {
                    t.cancelling = true;
                    t.cancel.notify_one();
                }
                if self
                    .next_runs
                    .get(&c.task_id)
                    .is_some_and(|a| c.attempt == 0 || c.attempt == a.attempt)
                {
                    self.next_runs.remove(&c.task_id);
                }
                String::new()
            }
            Some(C::Answer(a)) => match self.tasks.get(&a.task_id) {
                Some(t) => {
                    let workdir = t.workdir.clone();
                    blocking(move || {
                        crate::watched::deliver_answer(&workdir, &a.task_id, a.seq, &a.text)
                    })
                    .await
                }
                None => format!(
                    "task `{}` is not running on node `{}`",
                    a.task_id, self.cfg.name
                ),
            },
            Some(C::Note(n)) => match self.tasks.get(&n.task_id) {
                Some(t) => {
                    let (workdir, notes) = (t.workdir.clone(), Arc::clone(&t.notes));
                    blocking(move || {
                        crate::watched::append_note(&workdir, &n.task_id, &n.text, Some(&notes))
                    })
                    .await
                }
                None => format!(
                    "task `{}` is not running on node `{}`",
                    n.task_id, self.cfg.name
                ),
            },
            Some(C::Drain(d)) => {
                if d.draining {
                    let timeout =
                        Duration::from_millis(d.timeout_ms).min(dispatch_core::limits::MAX_DRAIN);
                    let until = Instant::now() + timeout;
                    tracing::info!(
                        running = self.tasks.len(),
                        timeout_ms = d.timeout_ms,
                        "the coordinator drains this node: no new tasks; running workers may finish within the timeout"
                    );
                    self.drain = Some(match self.drain {
                        Some(old) => Drain {
                            until: old.until.min(until),
                            ..old
                        },
                        None => Drain {
                            until,
                            stopped: false,
                            exit: false,
                        },
                    });
                } else if self.drain.is_some_and(|d| !d.exit) {
                    tracing::info!("the coordinator ended this node's drain");
                    self.drain = None;
                }
                String::new()
            }
            Some(C::RemoveWorktree(r)) => {
                let workdir = if r.path.is_empty() {
                    self.cfg.workdir.clone()
                } else {
                    PathBuf::from(&r.path)
                };
                let node = self.cfg.name.clone();
                blocking(
                    move || match crate::worktree::remove(&workdir, &r.task_id) {
                        Ok(()) => {
                            tracing::info!(task = %r.task_id, "worktree removed");
                            Ok(())
                        }
                        Err(e) => Err(format!("{e} (on node `{node}`)")),
                    },
                )
                .await
            }
            None => "empty command".into(),
        }
    }

    fn assign(&mut self, a: v1::Assign) -> String {
        if let Err(e) = dispatch_core::task_id::validate(&a.task_id) {
            return e.to_string();
        }
        let attempt = a.attempt.max(1);
        if self.finished.contains(&(a.task_id.clone(), attempt)) {
            return String::new();
        }
        if let Some(running) = self.tasks.get_mut(&a.task_id) {
            if attempt <= running.attempt {
                // A resent Assign of this run (or of an older one).
                return String::new();
            }
            // A newer run: the older one is fenced. Stop it; the new one starts when it exits.
            if !running.cancelling {
                running.cancelling = true;
                running.cancel.notify_one();
            }
            tracing::info!(task = %a.task_id, attempt, "a newer worker run waits for the older one to stop");
            self.next_runs.insert(a.task_id.clone(), a);
            return String::new();
        }
        self.start(a);
        String::new()
    }

    fn start(&mut self, a: v1::Assign) {
        self.spool.begin(&a.task_id, a.last_seq);
        tracing::info!(task = %a.task_id, backend = %a.backend, attempt = a.attempt, "assigned");
        let id = a.task_id.clone();
        self.backends.insert(id.clone(), a.backend.clone());
        let handle = runner::start(self.ctx.clone(), a);
        self.tasks.insert(id, handle);
    }

    /// Spools a runner's event (assigning its seq) and forgets tasks whose worker ended.
    fn spool_event(&mut self, ev: v1::TaskEvent) -> Option<v1::TaskEvent> {
        let ended = matches!(
            ev.kind,
            Some(v1::task_event::Kind::Exited(_)) | Some(v1::task_event::Kind::StartFailed(_))
        );
        let id = ev.task_id.clone();
        let attempt = ev.attempt;
        match &ev.kind {
            Some(v1::task_event::Kind::Started(_)) => {
                self.metrics.starts.inc();
            }
            Some(v1::task_event::Kind::Activity(a)) => {
                if let Some(u) = &a.usage {
                    let backend = self.backends.get(&id).map_or("unknown", String::as_str);
                    self.metrics.usage(&id, attempt, backend, u);
                }
            }
            _ => {}
        }
        if ended {
            self.metrics.ended(&id);
        }
        let ev = match self.spool.append(ev) {
            Ok(ev) => Some(ev),
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cannot spool an event; it is lost");
                None
            }
        };
        if ended && self.tasks.get(&id).is_some_and(|t| t.attempt == attempt) {
            let t = self.tasks.remove(&id).expect("checked above");
            self.backends.remove(&id);
            if self.finished.len() == REMEMBER_FINISHED {
                self.finished.pop_front();
            }
            self.finished.push_back((id.clone(), t.attempt));
            if let Some(next) = self.next_runs.remove(&id) {
                self.start(next);
            }
        }
        ev
    }

    /// Answers a coordinator's Resend: the spooled events from `from` on, or what is gone.
    fn resend(&self, task: &str, from: u64) -> Vec<v1::AgentMessage> {
        match self.spool.resend_from(task, from) {
            Ok(events) => {
                tracing::warn!(
                    task,
                    from,
                    events = events.len(),
                    "the coordinator missed events; resending"
                );
                events
                    .into_iter()
                    .map(|e| msg(v1::agent_message::Kind::Event(e)))
                    .collect()
            }
            Err(next) if next > from => {
                tracing::error!(
                    task,
                    from,
                    next,
                    "events the coordinator asks for were already dropped; telling it"
                );
                vec![msg(v1::agent_message::Kind::Unavailable(
                    v1::EventsUnavailable {
                        task_id: task.to_string(),
                        from_seq: from,
                        next_seq: next,
                    },
                ))]
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Runs blocking file work off the runtime; an empty string on success.
async fn blocking(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> String {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => String::new(),
        Ok(Err(e)) => e,
        Err(e) => format!("the command failed: {e}"),
    }
}

/// Runs the node until `shutdown` resolves. Shutting down flushes spooled events (best effort,
/// 3 s) and leaves workers running: the next start of the agent re-attaches to them.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let spool = EventSpool::open(&cfg.data_dir.join("spool")).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the event spool in {}: {e}",
            cfg.data_dir.display()
        )
    })?;
    let (events_tx, mut events_rx) = mpsc::channel(1024);
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
            crate::runner::now_ms(),
        )),
    };
    let mut node = Node {
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

    // Workers outlive the agent: re-attach to those still running, and report how the others
    // ended (the seed's startup reconciliation; their questions are reported again by the scan).
    let (live, _gone) = RunRecord::load_all(&node.ctx.run_dir);
    for record in live {
        let offset = node.spool.log_bytes(&record.task_id);
        let id = record.task_id.clone();
        node.spool.begin(&id, 0);
        let handle = runner::reattach(node.ctx.clone(), record, offset);
        node.tasks.insert(id, handle);
    }
    for (id, workdir) in node.spool.unfinished() {
        if node.tasks.contains_key(&id) {
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
                node.cfg.name
            ),
            fault: String::new(),
            drained: false,
            cli: None,
        };
        node.spool_event(event(&id, 0, v1::task_event::Kind::Exited(exited)));
    }

    // The node's own health: SERVING while it has a session with a coordinator.
    let health = match &node.cfg.health_listen {
        Some(addr) => {
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
            Some(reporter)
        }
        None => None,
    };
    if let Some(addr) = &node.cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        let bound = l.local_addr()?;
        let file = node.cfg.data_dir.join("metrics.addr");
        std::fs::write(&file, format!("http://{bound}/metrics\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
        let m = Arc::clone(&node.metrics);
        let render: dispatch_telemetry::Render = Arc::new(move || {
            let m = Arc::clone(&m);
            Box::pin(async move { m.render() })
        });
        tokio::spawn(dispatch_telemetry::serve_metrics(
            l,
            render,
            std::future::pending::<()>(),
        ));
    }
    let mut healthy = false;
    let mut session: Option<Session> = None;
    let mut backoff = MIN_BACKOFF;
    let mut next_attempt = Instant::now();
    // Attempts in a row the coordinator refused (token or name), since when: past the
    // limit, give up.
    let mut refusals = (0u32, Instant::now());
    let mut stopping: Option<Instant> = None;
    // Draining: until when running workers may finish, and whether the rest were stopped.
    // SIGTERM was taken (its future must not be polled again).
    let mut sigterm_taken = false;
    tokio::pin!(shutdown);
    loop {
        if let Some(h) = &health
            && healthy != (session.is_some() && node.drain.is_none())
        {
            healthy = !healthy;
            let status = if healthy {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            h.set_service_status("", status).await;
        }
        node.metrics.connected.set(i64::from(session.is_some()));
        node.metrics.draining.set(i64::from(node.drain.is_some()));
        node.metrics.workers.set(node.tasks.len() as i64);
        if node.drain.is_some_and(|d| d.exit) && stopping.is_none() && node.tasks.is_empty() {
            tracing::info!("drained: no worker left; flushing events and exiting");
            stopping = Some(Instant::now() + Duration::from_secs(5));
        }
        if let Some(deadline) = stopping {
            let flushed = node.spool.unacked().next().is_none();
            if flushed || Instant::now() >= deadline || session.is_none() {
                break;
            }
        }
        if session.is_none() && stopping.is_none() && Instant::now() >= next_attempt {
            let attempt = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, node.connect()) => Some(r),
                // Once drained-for, SIGTERM was taken already.
                _ = &mut shutdown, if !sigterm_taken => None,
            };
            match attempt {
                None => {
                    tracing::info!(
                        running = node.tasks.len(),
                        "shutting down while connecting; running workers continue and are re-attached on the next start"
                    );
                    break;
                }
                Some(Ok(Ok(s))) => {
                    tracing::info!(coordinator = %node.cfg.coordinator, node = %node.cfg.name, "connected");
                    // A node that drains says so at once on its new session.
                    if node.drain.is_some() && !s.send(node.heartbeat()).await {
                        next_attempt = Instant::now() + jitter(backoff);
                        continue;
                    }
                    session = Some(s);
                    backoff = MIN_BACKOFF;
                    refusals.0 = 0;
                }
                Some(result) => {
                    let e = match result {
                        Ok(Err(e)) => e,
                        _ => ConnectError::from(format!(
                            "no answer from the coordinator at {} within {CONNECT_TIMEOUT:?}",
                            node.cfg.coordinator
                        )),
                    };
                    refusals = match (e.refused, refusals.0) {
                        (false, _) => (0, Instant::now()),
                        (true, 0) => (1, Instant::now()),
                        (true, n) => (n + 1, refusals.1),
                    };
                    let limit = node.cfg.give_up_after;
                    if !limit.is_zero()
                        && refusals.0 >= MIN_REFUSALS
                        && refusals.1.elapsed() >= limit
                    {
                        tracing::error!(coordinator = %node.cfg.coordinator, tries = refusals.0, "{}; giving up (exit status {EXIT_REFUSED})", e.text);
                        return Err(RefusedForGood {
                            reason: e.text,
                            tries: refusals.0,
                        }
                        .into());
                    }
                    let e = e.text;
                    tracing::warn!(coordinator = %node.cfg.coordinator, "{e}; retrying in {:?}", backoff);
                    next_attempt = Instant::now() + jitter(backoff);
                    backoff = (backoff * 2).min(node.cfg.max_backoff);
                }
            }
            continue;
        }
        let stop_at = stopping.unwrap_or_else(Instant::now);
        let drain_at = node.drain.filter(|d| !d.stopped).map(|d| d.until);
        tokio::select! {
            Some(ev) = events_rx.recv() => {
                if let Some(ev) = node.spool_event(ev)
                    && let Some(s) = &session
                {
                    node.metrics.events.inc();
                    if !s.send(msg(v1::agent_message::Kind::Event(ev))).await {
                        tracing::warn!("the coordinator stopped taking events; reconnecting");
                        session = None;
                    }
                }
            }
            from = async { session.as_mut().expect("guarded by the branch condition").next().await }, if session.is_some() => {
                let m = match from {
                    FromSession::Message(m) => *m,
                    FromSession::HeartbeatDue => {
                        let hb = node.heartbeat();
                        if !session.as_ref().expect("connected").send(hb).await {
                            session = None;
                        }
                        if session.is_none() {
                            next_attempt = Instant::now() + jitter(backoff);
                        }
                        continue;
                    }
                    FromSession::Silent => {
                        tracing::warn!(coordinator = %node.cfg.coordinator, "no heartbeat from the coordinator for 2.5 intervals; reconnecting");
                        session = None;
                        next_attempt = Instant::now();
                        continue;
                    }
                };
                match m {
                    Ok(Some(v1::CoordinatorMessage { kind: Some(In::EventAck(a)) })) => node.spool.ack(&a.task_id, a.seq),
                    Ok(Some(v1::CoordinatorMessage { kind: Some(In::Command(cmd)) })) => {
                        let command_id = cmd.id;
                        let was_draining = node.drain.is_some();
                        let error = node.apply(cmd).await;
                        if !error.is_empty() {
                            tracing::warn!(command = command_id, %error, "command not applied");
                        }
                        let ack = msg(v1::agent_message::Kind::CommandAck(v1::CommandAck { command_id, error }));
                        if !session.as_ref().expect("connected").send(ack).await {
                            session = None;
                        }
                        // A drain started or ended: said at once.
                        if let Some(s) = &session
                            && node.drain.is_some() != was_draining
                        {
                            let hb = node.heartbeat();
                            if !s.send(hb).await {
                                session = None;
                            }
                        }
                    }
                    Ok(Some(v1::CoordinatorMessage { kind: Some(In::Resend(r)) })) => {
                        for m in node.resend(&r.task_id, r.from_seq) {
                            if !session.as_ref().expect("connected").send(m).await {
                                session = None;
                                break;
                            }
                        }
                    }
                    Ok(Some(v1::CoordinatorMessage { kind: Some(In::Reject(r)) })) => {
                        tracing::error!(reason = %r.reason, "the coordinator dropped this node");
                        session = None;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        tracing::warn!("lost the connection to the coordinator; reconnecting");
                        session = None;
                    }
                }
                if session.is_none() {
                    next_attempt = Instant::now() + jitter(backoff);
                }
            }
            _ = tokio::time::sleep_until(next_attempt), if session.is_none() && stopping.is_none() => {}
            _ = tokio::time::sleep_until(stop_at), if stopping.is_some() => {}
            _ = tokio::time::sleep_until(drain_at.unwrap_or_else(Instant::now)), if drain_at.is_some() => {
                if let Some(d) = &mut node.drain {
                    d.stopped = true;
                }
                tracing::warn!(running = node.tasks.len(), "drain timeout: stopping the workers still running (reported drained)");
                for t in node.tasks.values_mut() {
                    t.drained.store(true, std::sync::atomic::Ordering::SeqCst);
                    t.cancelling = true;
                    t.cancel.notify_one();
                }
            }
            _ = &mut shutdown, if stopping.is_none() && !sigterm_taken => {
                sigterm_taken = true;
                match node.cfg.on_sigterm {
                    OnSigterm::Drain(timeout) => {
                        tracing::info!(running = node.tasks.len(), ?timeout, "draining: no new tasks; running workers may finish within the timeout");
                        // A drain already under way keeps its (earlier) deadline.
                        let until = Instant::now() + timeout.min(dispatch_core::limits::MAX_DRAIN);
                        node.drain = Some(match node.drain {
                            Some(d) => Drain { until: d.until.min(until), exit: true, ..d },
                            None => Drain { until, stopped: false, exit: true },
                        });
                        // Said at once, not at the next heartbeat: no task is assigned here now.
                        if let Some(s) = &session {
                            let hb = node.heartbeat();
                            if !s.send(hb).await {
                                session = None;
                                next_attempt = Instant::now();
                            }
                        }
                    }
                    OnSigterm::Detach => {
                        // Workers keep running in their own sessions; the next start of this
                        // agent re-attaches to them.
                        tracing::info!(running = node.tasks.len(), "shutting down; running workers continue and are re-attached on the next start");
                        stopping = Some(Instant::now() + Duration::from_secs(3));
                    }
                }
            }
        }
    }
    Ok(())
}
