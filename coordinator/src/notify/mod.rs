//! Notifications: a command and/or a webhook (https with rustls, or http; signed with
//! HMAC-SHA256 when a secret is set), and receivers people read (Slack, Discord, Teams, ntfy:
//! [`formats`]) with a one-time answer link ([`crate::links`]), run when a question arrives or
//! a task ends. They run on their own task with bounded retries and never hold up the event
//! path.

pub mod formats;
mod mail;

use dispatch_core::notify::NotifyConfig;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts per notification (the first and two retries).
const ATTEMPTS: u32 = 3;
/// Queued notifications before new ones are dropped (with a log line).
const QUEUE: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One thing worth telling a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    /// `question` or `task_ended`.
    pub event: &'static str,
    /// Task id.
    pub task: String,
    /// Task title.
    pub title: String,
    /// Node running the task.
    pub node: String,
    /// Task state.
    pub state: String,
    /// Why it ended, for `task_ended`.
    pub reason: String,
    /// Question number, for `question`.
    pub seq: u32,
    /// Question text, for `question`.
    pub question: String,
    /// What the question asks: "" (a worker's question), "approval" or "budget".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Who owns the task.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Its plan's items done, and in all.
    pub items_done: u32,
    /// See `items_done`.
    pub items: u32,
    #[serde(skip)]
    attempt: u32,
}

impl Notification {
    /// A question arrived.
    pub fn question(task: &str, title: &str, node: &str, seq: u32, text: &str) -> Self {
        Notification {
            event: "question",
            task: task.into(),
            title: title.into(),
            node: node.into(),
            state: "waiting".into(),
            reason: String::new(),
            seq,
            question: text.into(),
            attempt: 0,
            ..Default::default()
        }
    }

    /// A task reached a terminal state.
    pub fn ended(
        task: &str,
        title: &str,
        node: &str,
        state: &str,
        reason: &str,
        attempt: u32,
    ) -> Self {
        Notification {
            event: "task_ended",
            task: task.into(),
            title: title.into(),
            node: node.into(),
            state: state.into(),
            reason: reason.into(),
            seq: 0,
            question: String::new(),
            attempt,
            ..Default::default()
        }
    }
}

/// Sends notifications in the background.
pub struct Notifier {
    tx: Option<mpsc::Sender<Notification>>,
    sent: std::sync::Mutex<HashSet<(String, &'static str, u32, String)>>,
}

impl Notifier {
    /// A notifier for `config` (doing nothing when it is empty), with answer links from
    /// `links`; an error when a receiver cannot be used (a bad URL, an unreadable CA or token
    /// file).
    pub fn start(
        config: NotifyConfig,
        links: Option<std::sync::Arc<crate::links::Links>>,
    ) -> Result<Notifier, String> {
        if config.is_empty() {
            return Ok(Notifier {
                tx: None,
                sent: Default::default(),
            });
        }
        let webhook = config
            .webhook
            .as_deref()
            .map(|url| Webhook::new(url, &config))
            .transpose()?;
        let mut targets = Vec::new();
        let smtp = config.smtp.as_ref().map(mail::Mailer::new).transpose()?;
        for (i, t) in config.targets.iter().enumerate() {
            targets.push((t.clone(), start_target(i, t, smtp.as_ref())?));
        }
        // The command and the webhook: one worker, in order, as before.
        let plain = if config.command.is_some() || webhook.is_some() {
            let (ptx, mut prx) = mpsc::channel::<Notification>(QUEUE);
            let command = config.command.clone();
            tokio::spawn(async move {
                while let Some(n) = prx.recv().await {
                    if let Some(cmd) = &command {
                        retry("notify command", &n, || run_command(cmd, &n)).await;
                    }
                    if let Some(w) = &webhook {
                        retry("notify webhook", &n, || w.post(&n)).await;
                    }
                }
            });
            Some(ptx)
        } else {
            None
        };
        let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                if let Some(p) = &plain
                    && p.try_send(n.clone()).is_err()
                {
                    tracing::warn!(task = %n.task, "notification queue full; the command and webhook miss one");
                }
                let wanted: Vec<&mpsc::Sender<std::sync::Arc<formats::Message>>> = targets
                    .iter()
                    .filter(|(t, _)| t.wants(n.event, &n.owner))
                    .map(|(_, q)| q)
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                // One link per question, whatever the number of receivers.
                let answer_link = match &links {
                    Some(l) if n.event == "question" => match l.make(&n.task, n.seq).await {
                        Ok(url) => Some(url),
                        Err(e) => {
                            tracing::warn!(task = %n.task, error = %e, "cannot make an answer link; the notification goes without one");
                            None
                        }
                    },
                    _ => None,
                };
                let task_link = links.as_ref().map(|l| l.task_url(&n.task));
                let m = std::sync::Arc::new(formats::Message {
                    n,
                    answer_link,
                    task_link,
                });
                for q in wanted {
                    if q.try_send(std::sync::Arc::clone(&m)).is_err() {
                        tracing::warn!(task = %m.n.task, "a receiver's queue is full; it misses a notification");
                    }
                }
            }
        });
        Ok(Notifier {
            tx: Some(tx),
            sent: Default::default(),
        })
    }

    /// Whether anything is told at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `n` (once per task, event, question or worker run, and state).
    pub fn send(&self, n: Notification) {
        let Some(tx) = &self.tx else { return };
        let key = (
            n.task.clone(),
            n.event,
            if n.event == "question" {
                n.seq
            } else {
                n.attempt
            },
            n.state.clone(),
        );
        if !self.sent.lock().unwrap().insert(key) {
            return;
        }
        if tx.try_send(n).is_err() {
            tracing::warn!("notification queue full; a notification was dropped");
        }
    }
}

/// Starts the worker that posts to target `i` in its format: its own queue, so a slow
/// receiver holds up no other.
fn start_target(
    i: usize,
    t: &dispatch_core::notify::Target,
    smtp: Option<&mail::Mailer>,
) -> Result<mpsc::Sender<std::sync::Arc<formats::Message>>, String> {
    let Some((kind, url)) = t.endpoint() else {
        return Err(format!("notify.targets[{i}] names no receiver"));
    };
    if kind == "email" {
        let Some(smtp) = smtp else {
            return Err(format!(
                "notify.targets[{i}].email needs notify.smtp to send through"
            ));
        };
        let to = mail::Mailer::address(url)
            .map_err(|e| format!("notify.targets[{i}].email `{url}`: {e}"))?;
        let smtp = smtp.clone();
        let (tx, rx) = mpsc::channel::<std::sync::Arc<formats::Message>>(QUEUE);
        let post = move |m: std::sync::Arc<formats::Message>| {
            let (smtp, to) = (smtp.clone(), to.clone());
            async move { retry("notify email", &m.n, || smtp.send(&to, &m)).await }
        };
        tokio::spawn(pace(t.clone(), rx, post));
        return Ok(tx);
    }
    let what = format!("notify.targets[{i}].{kind}");
    let (post_url, topic) = if kind == "ntfy" {
        let (root, topic) = dispatch_core::notify::ntfy_parts(url)
            .ok_or_else(|| format!("{what} `{url}` is not a topic URL"))?;
        (root, topic)
    } else {
        (url.to_string(), String::new())
    };
    let hook = std::sync::Arc::new(Webhook::to(&post_url, &what, t.ca.as_deref(), None)?);
    let token = match &t.token_file {
        Some(f) => {
            let token = std::fs::read_to_string(f)
                .map_err(|e| format!("notify.targets[{i}].token_file {f}: {e}"))?;
            let token = token.trim().to_string();
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(format!(
                    "notify.targets[{i}].token_file {f} holds no token (one line, no spaces)"
                ));
            }
            Some(token)
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel::<std::sync::Arc<formats::Message>>(QUEUE);
    let label = format!("notify {kind}");
    let post = move |m: std::sync::Arc<formats::Message>| {
        let hook = std::sync::Arc::clone(&hook);
        let (topic, token, label) = (topic.clone(), token.clone(), label.clone());
        async move {
            let body = match kind {
                "slack" => formats::slack(&m),
                "discord" => formats::discord(&m),
                "teams" => formats::teams(&m),
                _ => formats::ntfy(&m, &topic),
            };
            let body = serde_json::to_vec(&body).unwrap_or_default();
            retry(&label, &m.n, || {
                hook.post_json(&hook.path, &body, token.as_deref())
            })
            .await;
        }
    };
    tokio::spawn(pace(t.clone(), rx, post));
    Ok(tx)
}

/// Feeds one receiver: each message at once, except in its quiet hours and, after a post,
/// within its digest window — what comes then is held and sent as one digest when they end.
async fn pace<F, Fut>(
    t: dispatch_core::notify::Target,
    mut rx: mpsc::Receiver<std::sync::Arc<formats::Message>>,
    post: F,
) where
    F: Fn(std::sync::Arc<formats::Message>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let digest = t.digest();
    let mut held: Vec<std::sync::Arc<formats::Message>> = Vec::new();
    // When what is held goes (ms since the epoch), and when the last post went.
    let mut flush_at: Option<i64> = None;
    let mut last_post: Option<i64> = None;
    loop {
        let wait = flush_at.map(|at| Duration::from_millis((at - crate::now_ms()).max(0) as u64));
        let next = match wait {
            Some(w) => match tokio::time::timeout(w, rx.recv()).await {
                Ok(m) => m.map(Some),
                Err(_) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        let Some(next) = next else {
            return;
        };
        let now = crate::now_ms();
        if let Some(m) = next {
            let quiet = t.quiet_until(now);
            let window = digest
                .zip(last_post)
                .map(|(d, at)| at + d.as_millis() as i64)
                .filter(|end| *end > now);
            if let Some(until) = quiet.or(window) {
                flush_at = Some(flush_at.map_or(until, |f| f.max(until)));
                held.push(m);
                continue;
            }
            last_post = Some(now);
            post(m).await;
            continue;
        }
        // Time to send what is held (unless quiet hours began meanwhile).
        if let Some(until) = t.quiet_until(now) {
            flush_at = Some(until);
            continue;
        }
        flush_at = None;
        let inbox = held.first().and_then(|m| {
            m.task_link
                .as_deref()
                .and_then(|l| l.rsplit_once("/task/"))
                .map(|(base, _)| format!("{base}/inbox"))
        });
        let out = match held.len() {
            0 => continue,
            1 => held.pop().unwrap_or_default(),
            _ => std::sync::Arc::new(formats::digest(&held, inbox)),
        };
        held.clear();
        last_post = Some(now);
        post(out).await;
    }
}

async fn retry<F, Fut>(what: &str, n: &Notification, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(TIMEOUT, f()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(task = %n.task, event = n.event, attempt, "{what} failed: {e}")
            }
            Err(_) => {
                tracing::warn!(task = %n.task, event = n.event, attempt, "{what} timed out after {TIMEOUT:?}")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
    tracing::error!(task = %n.task, event = n.event, "{what} gave up after {ATTEMPTS} attempts");
}

async fn run_command(cmd: &str, n: &Notification) -> Result<(), String> {
    // The event's details travel in the environment only: nothing is spliced into `cmd`.
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("DISPATCH_EVENT", n.event)
        .env("DISPATCH_TASK_ID", &n.task)
        .env("DISPATCH_TITLE", &n.title)
        .env("DISPATCH_NODE", &n.node)
        .env("DISPATCH_STATE", &n.state)
        .env("DISPATCH_REASON", &n.reason)
        .env(
            "DISPATCH_QUESTION_SEQ",
            if n.seq > 0 {
                format!("{:03}", n.seq)
            } else {
                String::new()
            },
        )
        .env("DISPATCH_QUESTION", &n.question)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run `sh`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Dispatch-Signature-256";

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`): what a receiver recomputes and compares.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The Standard Webhooks headers (<https://www.standardwebhooks.com/>): the delivery's id (the
/// same on every retry of it, so a receiver can drop a second copy), when this attempt was
/// sent (seconds since the epoch; a receiver refuses old ones), and
/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub const WEBHOOK_ID: &str = "webhook-id";
/// See [`WEBHOOK_ID`].
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// See [`WEBHOOK_ID`].
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The key a secret stands for: a Standard Webhooks secret (`whsec_<base64>`) is its decoded
/// bytes; any other secret is its own bytes.
fn webhook_key(secret: &str) -> Vec<u8> {
    use base64::Engine;
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64>` of HMAC-SHA256 over `id.timestamp.body`, the Standard Webhooks signature.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&webhook_key(secret)).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

impl Notification {
    /// The delivery's id: the same for every retry, and for the same event sent again after a
    /// restart (the task, the event, and its question or worker run).
    pub fn delivery_id(&self) -> String {
        let n = if self.event == "question" {
            self.seq
        } else {
            self.attempt
        };
        format!("msg_{}_{}_{n}", self.task, self.event)
    }
}

/// A webhook ready to post to.
struct Webhook {
    url: String,
    /// host:port to connect to.
    addr: String,
    /// `Host:` header.
    authority: String,
    host: String,
    path: String,
    tls: Option<tokio_rustls::TlsConnector>,
    secret: Option<String>,
}

impl Webhook {
    fn new(url: &str, config: &NotifyConfig) -> Result<Webhook, String> {
        Webhook::to(
            url,
            "notify.webhook",
            config.ca.as_deref(),
            config.secret.clone(),
        )
    }

    /// A receiver at `url` (`what` names it in errors), trusting `ca` when given (else the
    /// system roots), signing posts with `secret` when given.
    fn to(
        url: &str,
        what: &str,
        ca: Option<&str>,
        secret: Option<String>,
    ) -> Result<Webhook, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{what} `{url}` is not an https:// or http:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{what} `{url}` has no host, or has credentials in it (use notify.secret to sign posts)"
            ));
        }
        let default_port = if https { 443 } else { 80 };
        let bad_port = |p: &str| format!("{what} `{url}`: `{p}` is not a port");
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{what} `{url}`: an IPv6 host needs its closing `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad_port(p))?,
                None if after.is_empty() => default_port,
                None => return Err(bad_port(after)),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad_port(p))?),
                None => (authority.to_string(), default_port),
            }
        };
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let tls = if https {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            match ca {
                Some(ca) => {
                    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
                    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                        .and_then(|i| i.collect::<Result<_, _>>())
                        .map_err(|e| format!("notify.ca {ca}: {e}"))?;
                    if certs.is_empty() {
                        return Err(format!("notify.ca {ca} holds no certificate"));
                    }
                    for c in certs {
                        roots.add(c).map_err(|e| format!("notify.ca {ca}: {e}"))?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                }
            }
            let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(
                std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
            )
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)))
        } else {
            if secret.is_some() {
                tracing::warn!(%url, "the webhook is plain http: its signature proves who sent a post, but anyone on the path can read it");
            }
            None
        };
        Ok(Webhook {
            url: url.to_string(),
            addr,
            authority: authority.to_string(),
            host,
            path,
            tls,
            secret,
        })
    }

    /// One HTTP/1.1 POST of the notification as JSON; any 2xx status is success.
    async fn post(&self, n: &Notification) -> Result<(), String> {
        let body = serde_json::to_vec(n).map_err(|e| e.to_string())?;
        let id = n.delivery_id();
        self.deliver(&self.path, Some(&id), &body, None).await
    }

    /// One HTTP/1.1 POST of `body` (JSON) in a receiver's own format, with a bearer token
    /// when given; any 2xx status is success.
    async fn post_json(&self, path: &str, body: &[u8], bearer: Option<&str>) -> Result<(), String> {
        let bearer = bearer.map(|b| format!("Bearer {b}"));
        let extra = bearer.as_deref().map(|b| ("authorization", b));
        self.deliver(path, None, body, extra).await
    }

    /// Connects (TCP, then TLS for an https:// receiver) and sends one POST.
    async fn deliver(
        &self,
        path: &str,
        id: Option<&str>,
        body: &[u8],
        extra: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        match &self.tls {
            Some(connector) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("`{}` is not a TLS server name: {e}", self.host))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.addr))?;
                self.send(stream, path, id, body, extra).await
            }
            None => self.send(tcp, path, id, body, extra).await,
        }
    }

    /// A POST of `body` to `path`: as a signed delivery when `id` is given, with one more
    /// header when `extra` is.
    async fn send<S>(
        &self,
        stream: S,
        path: &str,
        id: Option<&str>,
        body: &[u8],
        extra: Option<(&str, &str)>,
    ) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let timestamp = crate::now_ms() / 1000;
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                format!("dispatch/{}", crate::VERSION),
            )
            .header(hyper::header::CONNECTION, "close");
        if let Some((name, value)) = extra {
            req = req.header(name, value);
        }
        if let Some(id) = id {
            req = req
                .header(WEBHOOK_ID, id)
                .header(WEBHOOK_TIMESTAMP, timestamp.to_string());
        }
        if let (Some(secret), Some(id)) = (&self.secret, id) {
            req = req
                .header(
                    WEBHOOK_SIGNATURE,
                    standard_signature(secret, id, timestamp, body),
                )
                // The older signature of the body alone, for receivers not yet moved: it
                // proves who sent a post, not when (a captured post can be replayed to such a
                // receiver).
                .header(SIGNATURE_HEADER, signature(secret, body));
        }
        let req = req
            .body(http_body_util::Full::new(
                hyper::body::Bytes::copy_from_slice(body),
            ))
            .map_err(|e| format!("cannot form the request to {}: {e}", self.url))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP with {}: {e}", self.url))?;
        // The connection is driven until the response is in (it closes after it).
        tokio::spawn(conn);
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("no HTTP answer from {}: {e}", self.url))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{} answered HTTP {status}", self.url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_standard_signature_covers_id_timestamp_and_body() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // print(base64.b64encode(hmac.new(base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        // b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}", hashlib.sha256).digest()))'
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = standard_signature(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // Another id, time or body, another signature.
        assert_ne!(
            sig,
            standard_signature(secret, "msg_other", 1614265330, br#"{"test": 2432232314}"#)
        );
        assert_ne!(
            sig,
            standard_signature(
                secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265331,
                br#"{"test": 2432232314}"#
            )
        );
        // A plain secret is used as it is.
        assert_eq!(webhook_key("plain"), b"plain");
        let n = Notification::question("t-1", "T", "box", 3, "why?");
        assert_eq!(n.delivery_id(), "msg_t-1_question_3");
    }

    #[test]
    fn webhook_urls_are_checked() {
        let cfg = NotifyConfig::default();
        let w = Webhook::new("https://hooks.example:8443/x?y=1", &cfg).unwrap();
        assert_eq!(
            (w.addr.as_str(), w.path.as_str(), w.host.as_str()),
            ("hooks.example:8443", "/x?y=1", "hooks.example")
        );
        let w = Webhook::new("http://[::1]:9000", &cfg).unwrap();
        assert_eq!((w.addr.as_str(), w.path.as_str()), ("[::1]:9000", "/"));
        let w = Webhook::new("https://hooks.example", &cfg).unwrap();
        assert_eq!(w.addr, "hooks.example:443");
        assert!(Webhook::new("https://u:p@hooks.example/", &cfg).is_err());
        assert!(Webhook::new("https://hooks.example:http/", &cfg).is_err());
        assert!(Webhook::new("ftp://x", &cfg).is_err());
    }
}

#[cfg(test)]
mod pacing {
    use super::*;
    use std::sync::Arc;

    fn question(task: &str, seq: u32) -> Arc<formats::Message> {
        Arc::new(formats::Message {
            n: Notification::question(task, "", "box", seq, "which one?"),
            answer_link: Some(format!("https://d.example/a/{task}{seq}")),
            task_link: Some(format!("https://d.example/task/{task}")),
        })
    }

    /// Runs `pace` for `t`, collecting what it posts.
    fn paced(
        t: dispatch_core::notify::Target,
    ) -> (
        mpsc::Sender<Arc<formats::Message>>,
        mpsc::UnboundedReceiver<Arc<formats::Message>>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(pace(t, rx, move |m| {
            let out = out_tx.clone();
            async move {
                let _ = out.send(m);
            }
        }));
        (tx, out_rx)
    }

    #[tokio::test]
    async fn repeats_within_the_digest_window_go_as_one_digest() {
        let (tx, mut posted) = paced(dispatch_core::notify::Target {
            slack: Some("https://x".into()),
            digest: Some("400ms".into()),
            ..Default::default()
        });
        tx.send(question("a", 1)).await.unwrap();
        let first = posted.recv().await.unwrap();
        assert_eq!(first.n.task, "a", "the first goes at once");
        tx.send(question("b", 1)).await.unwrap();
        tx.send(question("c", 2)).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(10), posted.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.n.event, "digest");
        assert_eq!(d.n.title, "2 questions while you were away");
        assert!(
            d.n.question.contains("`b` asks (question 001): which one?"),
            "{}",
            d.n.question
        );
        assert!(
            d.n.question.contains("`c` asks (question 002)"),
            "{}",
            d.n.question
        );
        assert_eq!(d.task_link.as_deref(), Some("https://d.example/inbox"));
        assert!(d.answer_link.is_none());
        let slack = formats::slack(&d);
        assert_eq!(
            slack["blocks"][0]["text"]["text"],
            "2 questions while you were away"
        );
    }

    #[tokio::test]
    async fn nothing_goes_in_quiet_hours() {
        // Quiet from a minute ago to the same time tomorrow less a minute.
        let now_min = (crate::now_ms().rem_euclid(86_400_000) / 60_000 + 1439) % 1440;
        let hhmm = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
        let (tx, mut posted) = paced(dispatch_core::notify::Target {
            slack: Some("https://x".into()),
            quiet: Some(format!(
                "{}-{}",
                hhmm(now_min),
                hhmm((now_min + 1438) % 1440)
            )),
            ..Default::default()
        });
        tx.send(question("a", 1)).await.unwrap();
        tx.send(question("b", 1)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), posted.recv())
                .await
                .is_err(),
            "held while quiet"
        );
    }
}
