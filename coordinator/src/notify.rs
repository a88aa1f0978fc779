//! Notifications: a command and/or an http webhook, run when a question arrives or a task
//! ends. They run on their own task with bounded retries and never hold up the event path.

use dispatch_core::notify::NotifyConfig;
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Attempts per notification (the first and two retries).
const ATTEMPTS: u32 = 3;
/// Queued notifications before new ones are dropped (with a log line).
const QUEUE: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One thing worth telling a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
        }
    }
}

/// Sends notifications in the background.
pub struct Notifier {
    tx: Option<mpsc::Sender<Notification>>,
    sent: std::sync::Mutex<HashSet<(String, &'static str, u32, String)>>,
}

impl Notifier {
    /// A notifier for `config` (doing nothing when it is empty).
    pub fn start(config: NotifyConfig) -> Notifier {
        if config.is_empty() {
            return Notifier {
                tx: None,
                sent: Default::default(),
            };
        }
        let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                deliver(&config, &n).await;
            }
        });
        Notifier {
            tx: Some(tx),
            sent: Default::default(),
        }
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

async fn deliver(config: &NotifyConfig, n: &Notification) {
    if let Some(cmd) = &config.command {
        retry("notify command", n, || run_command(cmd, n)).await;
    }
    if let Some(url) = &config.webhook {
        retry("notify webhook", n, || post(url, n)).await;
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

/// A minimal HTTP/1.1 POST of the notification as JSON; any 2xx status is success.
async fn post(url: &str, n: &Notification) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let body = serde_json::to_vec(n).map_err(|e| e.to_string())?;
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: dispatch/{}\r\nConnection: close\r\n\r\n",
        body.len(),
        crate::VERSION
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(&body).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all we need.
    while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 8192 {
        let k = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        response.extend_from_slice(&buf[..k]);
    }
    let status_line = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {url}"))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("{url} answered {status_line}"))
    }
}
