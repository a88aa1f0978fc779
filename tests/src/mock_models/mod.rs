//! Mock model servers for the real agent CLIs: the Anthropic Messages API (what `claude`
//! speaks) and the OpenAI Responses API (what `codex` speaks), both streaming server-sent
//! events, on one loopback port. A CLI is pointed at it the way a user points it at a gateway
//! (`ANTHROPIC_BASE_URL`; a model provider in `CODEX_HOME/config.toml`), never patched.
//!
//! The "model" behind both is [`worker`]: a scripted dispatch worker that acts only through the
//! CLI's own shell tool. Faults make either API answer every request (or the next few) with an
//! error, in the vendor's own shape (status, body, `retry-after`), so a test sees what the real
//! CLI does with a 401, a 429 storm or a usage limit.
//!
//! The mock records every request (which API, model, task, status, when) and the usage it sent
//! per task, so a test can compare a task's reported usage with what the "model" said.

pub mod anthropic;
pub mod openai;
pub mod worker;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which API a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Api {
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`).
    OpenAi,
}

/// What the mock does instead of answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The vendor's error for this HTTP status (401, 403, 429, 500, 529 or 503).
    Status(u16),
    /// A usage limit that resets at this time (seconds since the Unix epoch).
    UsageLimit(i64),
}

/// A fault for the next `times` requests of one API (None: every request).
#[derive(Debug, Clone)]
struct Armed {
    fault: Fault,
    times: Option<u32>,
}

/// One request the mock answered.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which API.
    pub api: Api,
    /// The model it asked for.
    pub model: String,
    /// The dispatch task its prompt names ("" for a request with no dispatch plan).
    pub task: String,
    /// The HTTP status the mock answered with.
    pub status: u16,
    /// When it arrived, in ms since the Unix epoch.
    pub at_ms: i64,
    /// Tool results the conversation carried.
    pub results: usize,
}

/// Token counts the mock sent, summed (per task).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Input tokens (not counting cache reads).
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the cache.
    pub cache_read: u64,
    /// Input tokens written to the cache.
    pub cache_write: u64,
    /// Answers with usage.
    pub responses: u32,
}

#[derive(Default)]
struct Shared {
    /// By API and task ("" for every task).
    faults: BTreeMap<(Api, String), Armed>,
    seen: Vec<Seen>,
    sent: BTreeMap<(Api, String), Sent>,
    next_id: u64,
}

/// A running mock model server (stops when dropped).
pub struct MockModels {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    _rt: tokio::runtime::Runtime,
}

pub use dispatch_core::process::now_ms;

impl MockModels {
    /// Starts the server on a random loopback port.
    pub fn start() -> MockModels {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the mock's runtime");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the mock model server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockModels {
            url,
            shared,
            _rt: rt,
        }
    }

    /// Makes every request of `api` fail with `fault` (`times`: only the next that many).
    pub fn fail(&self, api: Api, fault: Fault, times: Option<u32>) {
        self.fail_task(api, "", fault, times);
    }

    /// Makes the requests of `api` for dispatch task `task` fail with `fault` (`times`: only
    /// the next that many); other tasks are answered as before.
    pub fn fail_task(&self, api: Api, task: &str, fault: Fault, times: Option<u32>) {
        self.shared
            .lock()
            .unwrap()
            .faults
            .insert((api, task.to_string()), Armed { fault, times });
    }

    /// Answers `api` normally again (for every task).
    pub fn heal(&self, api: Api) {
        self.shared
            .lock()
            .unwrap()
            .faults
            .retain(|(a, _), _| *a != api);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// The requests of `api` for task `task`.
    pub fn seen_for(&self, api: Api, task: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.api == api && s.task == task)
            .collect()
    }

    /// What the mock sent for task `task` over `api`.
    pub fn sent(&self, api: Api, task: &str) -> Sent {
        self.shared
            .lock()
            .unwrap()
            .sent
            .get(&(api, task.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits up to `limit` for a request for task `task`; its arrival time.
    pub fn wait_first_request(&self, task: &str, limit: Duration) -> Option<i64> {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.seen().iter().find(|s| s.task == task) {
                return Some(s.at_ms);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What a vendor module takes out of a request.
pub(crate) struct Conversation {
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) results: Vec<worker::ToolResult>,
    pub(crate) stream: bool,
}

/// The usage the mock reports for the `n`th answer of a conversation with `results` tool
/// results: plain numbers that differ per answer, so sums can be checked.
pub(crate) fn usage_for(results: usize, command_len: usize) -> Sent {
    Sent {
        input: 40 + 3 * results as u64,
        output: 20 + command_len as u64 / 10,
        cache_read: if results == 0 {
            0
        } else {
            2000 + 100 * results as u64
        },
        cache_write: if results == 0 { 1500 } else { 0 },
        responses: 1,
    }
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = match (method.as_str(), uri.path()) {
        ("POST", "/v1/messages") => Api::Anthropic,
        ("POST", "/v1/responses") => Api::OpenAi,
        // Claude Code's connectivity check.
        ("HEAD", _) => return StatusCode::OK.into_response(),
        ("POST", "/v1/messages/count_tokens") => {
            return (
                [("content-type", "application/json")],
                "{\"input_tokens\":42}",
            )
                .into_response();
        }
        _ => return (StatusCode::NOT_FOUND, "not a mocked endpoint").into_response(),
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    let conv = match api {
        Api::Anthropic => anthropic::conversation(&json),
        Api::OpenAi => openai::conversation(&json),
    };
    let task = worker::plan_path(&conv.prompt)
        .and_then(|p| p.strip_prefix(".dispatch/tasks/"))
        .and_then(|p| p.strip_suffix("/plan.md"))
        .unwrap_or("")
        .to_string();
    let (fault, id) = {
        let mut s = shared.lock().unwrap();
        let key = [(api, task.clone()), (api, String::new())]
            .into_iter()
            .find(|k| s.faults.contains_key(k));
        let fault = match key.as_ref().and_then(|k| s.faults.get_mut(k)) {
            Some(a) => {
                let f = a.fault.clone();
                if let Some(t) = &mut a.times {
                    *t = t.saturating_sub(1);
                    if *t == 0 {
                        s.faults.remove(key.as_ref().unwrap());
                    }
                }
                Some(f)
            }
            None => None,
        };
        s.next_id += 1;
        (fault, s.next_id)
    };
    let _ = headers;
    let seen = |status: u16| Seen {
        api,
        model: conv.model.clone(),
        task: task.clone(),
        status,
        at_ms: now_ms(),
        results: conv.results.len(),
    };
    if let Some(f) = fault {
        let (status, extra, body) = match api {
            Api::Anthropic => anthropic::error(&f, id),
            Api::OpenAi => openai::error(&f, id),
        };
        shared.lock().unwrap().seen.push(seen(status));
        let mut r = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        for (k, v) in extra {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        return r;
    }
    let turn = worker::next(&conv.prompt, &conv.results);
    let command_len = match &turn {
        worker::Turn::Shell { command, .. } => command.len(),
        _ => 0,
    };
    let usage = usage_for(conv.results.len(), command_len);
    {
        let mut s = shared.lock().unwrap();
        s.seen.push(seen(200));
        let t = s.sent.entry((api, task.clone())).or_default();
        t.input += usage.input;
        t.output += usage.output;
        t.cache_read += usage.cache_read;
        t.cache_write += usage.cache_write;
        t.responses += 1;
    }
    let (content_type, chunks) = match api {
        Api::Anthropic => anthropic::answer(&conv, &turn, &usage, id),
        Api::OpenAi => openai::answer(&conv, &turn, &usage, id),
    };
    let stream = tokio_stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let mut r = Response::new(axum::body::Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r.headers_mut()
        .insert("request-id", format!("req_mock{id:06}").parse().unwrap());
    r
}
