//! The link to the coordinator: one session (a bidirectional stream), how it is opened
//! (Hello → Welcome, the node's own token kept, spooled events resent), and the state machine
//! that says whether the node is connecting, connected or stopping.

use super::{Node, msg};
use crate::config::NODE_TOKEN_FILE;
use dispatch_proto::v1;
use dispatch_proto::v1::coordinator_message::Kind as In;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a connection attempt (TCP, HTTP/2, Hello → Welcome) may take. The addresses of a
/// list are tried side by side after a short head start (`channel::connect_first`), so a hung
/// one does not use it up.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered for the stream.
pub(super) const OUT_QUEUE: usize = 1024;

pub(super) struct Session {
    out: mpsc::Sender<v1::AgentMessage>,
    inbound: Streaming<v1::CoordinatorMessage>,
    heartbeat: tokio::time::Interval,
    /// Silence after which the coordinator counts as gone (None: it sends no heartbeats).
    silence: Option<Duration>,
    last_heard: Instant,
}

pub(super) enum FromSession {
    Message(Box<Result<Option<v1::CoordinatorMessage>, tonic::Status>>),
    HeartbeatDue,
    Silent,
}

impl Session {
    pub(super) async fn next(&mut self) -> FromSession {
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
    pub(super) async fn send(&self, m: v1::AgentMessage) -> bool {
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

/// A small jitter (0–25 %) from the clock, so many nodes do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// A failed connection attempt: what happened, and whether the coordinator refused this node
/// (its token or name) rather than failing to answer.
pub(super) struct ConnectError {
    pub(super) text: String,
    pub(super) refused: bool,
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

impl Node {
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

    pub(super) async fn connect(&mut self) -> Result<Session, ConnectError> {
        let (channel, _) = dispatch_connect::connect_first(&self.cfg.coordinator, &self.cfg.tls)
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
}

/// The link to the coordinator. Its one writer is the node's loop, through [`Link::on`].
///
/// A drain is not a link state: a draining node may be connected or reconnecting, and keeps
/// draining across both (it is `Node::drain`).
pub(super) enum Link {
    /// No session. The next attempt is due at `at`; a failed one waits `backoff` more (doubled
    /// each time, up to the node's `max_backoff`). `refusals` counts attempts in a row the
    /// coordinator refused (token or name), since `refused_since`.
    Connecting {
        at: Instant,
        backoff: Duration,
        refusals: u32,
        refused_since: Instant,
    },
    /// A session is open: events go out as they come.
    Connected(Session),
    /// Shutting down: spooled events are flushed on the session until they are acknowledged or
    /// `deadline` passes.
    Stopping { session: Session, deadline: Instant },
}

/// What happened to the link.
pub(super) enum Change {
    /// A connection attempt opened a session.
    Opened(Box<Session>),
    /// A connection attempt failed.
    Failed(ConnectError),
    /// The session is gone; reconnect at once or after the shortest backoff.
    Lost { at_once: bool },
    /// Flush the spooled events within `grace`, then exit.
    Stop { grace: Duration },
    /// Exit now.
    Quit,
}

impl Link {
    /// No session yet: connect at once.
    pub(super) fn start() -> Link {
        Link::Connecting {
            at: Instant::now(),
            backoff: MIN_BACKOFF,
            refusals: 0,
            refused_since: Instant::now(),
        }
    }

    /// The open session, if any.
    pub(super) fn session(&self) -> Option<&Session> {
        match self {
            Link::Connecting { .. } => None,
            Link::Connected(s) | Link::Stopping { session: s, .. } => Some(s),
        }
    }

    pub(super) fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Link::Connecting { .. } => None,
            Link::Connected(s) | Link::Stopping { session: s, .. } => Some(s),
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        matches!(self, Link::Stopping { .. })
    }

    /// The one transition function. `Ok(None)`: the node exits; `Err`: the coordinator refused
    /// this node for longer than `give_up_after` (zero: never give up).
    pub(super) fn on(
        self,
        change: Change,
        cfg: &crate::AgentConfig,
    ) -> Result<Option<Link>, crate::RefusedForGood> {
        let lost = |at_once: bool| Link::Connecting {
            at: if at_once {
                Instant::now()
            } else {
                Instant::now() + jitter(MIN_BACKOFF)
            },
            backoff: MIN_BACKOFF,
            refusals: 0,
            refused_since: Instant::now(),
        };
        Ok(Some(match (self, change) {
            (_, Change::Quit) => return Ok(None),
            (Link::Connected(_) | Link::Connecting { .. }, Change::Opened(s)) => {
                Link::Connected(*s)
            }
            (
                Link::Connecting {
                    backoff,
                    refusals,
                    refused_since,
                    ..
                },
                Change::Failed(e),
            ) => {
                let (refusals, refused_since) = match (e.refused, refusals) {
                    (false, _) => (0, Instant::now()),
                    (true, 0) => (1, Instant::now()),
                    (true, n) => (n + 1, refused_since),
                };
                let limit = cfg.give_up_after;
                if !limit.is_zero()
                    && refusals >= crate::MIN_REFUSALS
                    && refused_since.elapsed() >= limit
                {
                    tracing::error!(coordinator = %cfg.coordinator, tries = refusals, "{}; giving up (exit status {})", e.text, crate::EXIT_REFUSED);
                    return Err(crate::RefusedForGood {
                        reason: e.text,
                        tries: refusals,
                    });
                }
                tracing::warn!(coordinator = %cfg.coordinator, "{}; retrying in {backoff:?}", e.text);
                Link::Connecting {
                    at: Instant::now() + jitter(backoff),
                    backoff: (backoff * 2).min(cfg.max_backoff),
                    refusals,
                    refused_since,
                }
            }
            (Link::Connected(_), Change::Lost { at_once }) => lost(at_once),
            // Stopping and the session is gone: nothing more can be flushed.
            (Link::Stopping { .. }, Change::Lost { .. }) => return Ok(None),
            (Link::Connected(session), Change::Stop { grace }) => Link::Stopping {
                session,
                deadline: Instant::now() + grace,
            },
            // No session to flush on.
            (Link::Connecting { .. }, Change::Stop { .. }) => return Ok(None),
            // Changes that do not apply to the state (a late Lost, an Opened while stopping)
            // leave it as it is; an unexpected session is dropped.
            (link, _) => link,
        }))
    }
}
