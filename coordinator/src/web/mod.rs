//! The web dashboard (`--http-listen ADDR`): every task's checklist live, one task's page
//! (plan, questions with an answer box, notes, logs, output.md, diff), the inbox of waiting
//! questions, and the nodes.
//!
//! Server-rendered HTML over the same calls as gRPC: each handler calls [`DispatchSvc`] in
//! process as the logged-in [`Principal`], so the access policy, summaries and errors are the
//! CLI's. Live updates are server-sent events from the same `Watch` stream `dispatch watch`
//! reads (no polling); the page works without JavaScript, read-only views included. Login is a
//! token (the CLI's), kept in an HttpOnly, SameSite=Strict cookie. Assets are compiled in.

mod html;

use crate::Coordinator;
use crate::model::Principal;
use crate::service::auth::{Rpc, permit};
use crate::service::dispatch::DispatchSvc;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use dispatch_proto::v1;
use dispatch_proto::v1::dispatch_service_server::DispatchService;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// The cookie that carries the token.
const COOKIE: &str = "dispatch_token";
/// Worker output shown on a task's page: its last part.
const LOG_TAIL: usize = 16 * 1024;
/// Output read to find that tail, at most (the rest: `dispatch logs ID`).
const LOG_SCAN: usize = 4 * 1024 * 1024;

#[derive(Clone)]
struct App {
    c: Arc<Coordinator>,
    /// Cookies only over TLS.
    secure: bool,
    /// The local daemon's one-time login (no tokens there).
    local: Option<Arc<LocalLogin>>,
}

/// How the local daemon's owner logs in: `dispatch dashboard` writes a one-time secret to a
/// file only they can read and opens `/login?once=SECRET`; the first use deletes the file and
/// gives the browser this session's cookie.
pub struct LocalLogin {
    /// Where `dispatch dashboard` puts the one-time secret (0600).
    pub once_file: std::path::PathBuf,
    /// The session cookie's value (random, per daemon run).
    pub session: String,
}

/// The cookie of a local session.
const LOCAL_COOKIE: &str = "dispatch_local";

impl App {
    fn svc(&self) -> DispatchSvc {
        DispatchSvc(Arc::clone(&self.c))
    }

    /// The logged-in caller, from the cookie.
    fn who(&self, headers: &HeaderMap) -> Option<Principal> {
        if let Some(l) = &self.local {
            return (cookie(headers, LOCAL_COOKIE).as_deref() == Some(l.session.as_str()))
                .then_some(Principal::Local);
        }
        let token = cookie(headers, COOKIE)?;
        self.c.tokens.principal(&token).ok()
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A request as `who` makes it (what the gRPC interceptor would have put there).
fn as_who<T>(who: &Principal, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(who.clone());
    r
}

/// May `who` answer (and add notes to) task `t`?
fn can_act(who: &Principal, t: &v1::Task) -> bool {
    permit(who, Rpc::Act).is_ok() && !t.summary && who.owns(&t.owner)
}

/// A refused or failed call as a page that says why.
fn failed(who: Option<&Principal>, s: &tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back to the tasks</a></p>",
        html::esc(s.message())
    );
    (code, Html(html::page("Error", who, None, &body))).into_response()
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The dashboard's routes.
pub fn router(c: Arc<Coordinator>, secure: bool) -> axum::Router {
    routes(App {
        c,
        secure,
        local: None,
    })
}

/// The local daemon's dashboard: its owner logs in with a one-time URL (`dispatch dashboard`).
pub fn local_router(c: Arc<Coordinator>, login: LocalLogin) -> axum::Router {
    routes(App {
        c,
        secure: false,
        local: Some(Arc::new(login)),
    })
}

fn routes(app: App) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/task/{id}", get(task_page))
        .route("/task/{id}/answer", post(answer))
        .route("/task/{id}/note", post(note))
        .route("/inbox", get(inbox))
        .route("/nodes", get(nodes))
        .route("/events", get(events))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .with_state(app)
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("app.js"),
    )
}

#[derive(serde::Deserialize)]
struct Once {
    once: Option<String>,
}

async fn login_form(State(app): State<App>, Query(q): Query<Once>) -> Response {
    if let Some(l) = &app.local {
        // The secret is good once: the file is removed before the cookie is given.
        let given = q.once.unwrap_or_default();
        let kept = std::fs::read_to_string(&l.once_file).unwrap_or_default();
        if !given.is_empty() && given == kept.trim() && std::fs::remove_file(&l.once_file).is_ok() {
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{LOCAL_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                l.session
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
        let body = "<section class=\"login\"><h2>Log in</h2><p>Run <code>dispatch dashboard</code>: it prints a link that logs you in once.</p></section>";
        return (
            StatusCode::UNAUTHORIZED,
            Html(html::page("Log in", None, None, body)),
        )
            .into_response();
    }
    Html(html::page("Log in", None, None, &html::login(None))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(app): State<App>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    match app.c.tokens.principal(token) {
        Ok(Principal::Node { .. }) => Html(html::page(
            "Log in",
            None,
            None,
            &html::login(Some("that is a node's token; log in with a user token")),
        ))
        .into_response(),
        Ok(_) if token.bytes().all(|b| b.is_ascii_graphic() && b != b';') => {
            let secure = if app.secure { "; Secure" } else { "" };
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(_) => Html(html::page(
            "Log in",
            None,
            None,
            &html::login(Some("that token holds characters a cookie cannot carry")),
        ))
        .into_response(),
        Err(e) => (
            StatusCode::UNAUTHORIZED,
            Html(html::page(
                "Log in",
                None,
                None,
                &html::login(Some(&e.to_string())),
            )),
        )
            .into_response(),
    }
}

async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    for gone in [
        "dispatch_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
        "dispatch_local=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
    ] {
        r.headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static(gone));
    }
    r
}

async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    let page = app
        .svc()
        .list_tasks(as_who(
            &who,
            v1::ListTasksRequest {
                limit: 200,
                ..Default::default()
            },
        ))
        .await;
    match page {
        Ok(r) => {
            let tasks = r.into_inner().tasks;
            let body = html::task_list(&tasks, |t| can_act(&who, t));
            Html(html::page("Tasks", Some(&who), Some(""), &body)).into_response()
        }
        Err(s) => failed(Some(&who), &s),
    }
}

async fn task_page(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    let svc = app.svc();
    let t = match svc
        .get_task(as_who(&who, v1::GetTaskRequest { id: id.clone() }))
        .await
    {
        Ok(t) => t.into_inner(),
        Err(s) => return failed(Some(&who), &s),
    };
    let act = can_act(&who, &t);
    let mut body = format!("<div id=\"live\">{}</div>", html::task_card(&t, act, true));
    if act {
        body.push_str(&format!(
            r#"<form method="post" action="/task/{id}/note" class="note"><label for="note-text">Add a note for the worker</label>
<textarea id="note-text" name="text" rows="2" required></textarea><button type="submit">Add note</button></form>"#,
            id = html::esc(&t.id)
        ));
    }
    if !t.summary {
        if let Ok(out) = svc
            .get_output(as_who(
                &who,
                v1::GetOutputRequest {
                    id: id.clone(),
                    follow: false,
                },
            ))
            .await
        {
            let mut s = out.into_inner();
            if let Some(Ok(o)) = s.next().await
                && !o.markdown.is_empty()
            {
                body.push_str(&format!(
                    "<section><h2>output.md</h2><pre class=\"output\">{}</pre></section>",
                    html::esc(&o.markdown)
                ));
            }
        }
        if t.changes.is_some()
            && let Ok(ch) = svc
                .get_changes(as_who(&who, v1::GetChangesRequest { id: id.clone() }))
                .await
        {
            let ch = ch.into_inner();
            if !ch.diff.is_empty() {
                body.push_str(&format!(
                    "<section><h2>Changes</h2><pre class=\"diff\">{}</pre></section>",
                    html::esc(&ch.diff)
                ));
            }
        }
        if let Ok(logs) = svc
            .logs(as_who(
                &who,
                v1::LogsRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
        {
            let mut s = logs.into_inner();
            let mut tail: Vec<u8> = Vec::new();
            let mut read = 0usize;
            while let Some(Ok(chunk)) = s.next().await {
                read += chunk.data.len();
                tail.extend_from_slice(&chunk.data);
                if tail.len() > 2 * LOG_TAIL {
                    tail.drain(..tail.len() - LOG_TAIL);
                }
                if read > LOG_SCAN {
                    break;
                }
            }
            if tail.len() > LOG_TAIL {
                tail.drain(..tail.len() - LOG_TAIL);
            }
            if !tail.is_empty() {
                body.push_str(&format!(
                    "<section><h2>Worker output (the end)</h2><pre class=\"logs\">{}</pre><p class=\"note\">All of it: <code>dispatch logs {}</code></p></section>",
                    html::esc(&String::from_utf8_lossy(&tail)),
                    html::esc(&t.id)
                ));
            }
        }
    }
    Html(html::page(&t.id, Some(&who), Some(&t.id), &body)).into_response()
}

#[derive(serde::Deserialize)]
struct AnswerForm {
    seq: u32,
    text: String,
}

async fn answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AnswerForm>,
) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    let req = v1::AnswerRequest {
        id: id.clone(),
        seq: f.seq,
        text: f.text,
        request_id: String::new(),
    };
    match app.svc().answer(as_who(&who, req)).await {
        Ok(_) => Redirect::to(&format!("/task/{}", urlencode(&id))).into_response(),
        Err(s) => failed(Some(&who), &s),
    }
}

#[derive(serde::Deserialize)]
struct NoteForm {
    text: String,
}

async fn note(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    let req = v1::AddNoteRequest {
        id: id.clone(),
        text: f.text,
    };
    match app.svc().add_note(as_who(&who, req)).await {
        Ok(_) => Redirect::to(&format!("/task/{}", urlencode(&id))).into_response(),
        Err(s) => failed(Some(&who), &s),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn inbox(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    match app
        .svc()
        .list_questions(as_who(&who, v1::ListQuestionsRequest {}))
        .await
    {
        Ok(r) => {
            let qs = r.into_inner().questions;
            let body = format!(
                "<h2>Waiting for an answer</h2>{}",
                html::inbox(&qs, permit(&who, Rpc::Act).is_ok())
            );
            Html(html::page("Inbox", Some(&who), None, &body)).into_response()
        }
        Err(s) => failed(Some(&who), &s),
    }
}

async fn nodes(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(who) = app.who(&headers) else {
        return to_login();
    };
    match app
        .svc()
        .list_nodes(as_who(&who, v1::ListNodesRequest {}))
        .await
    {
        Ok(r) => {
            let body = html::nodes(&r.into_inner().nodes);
            Html(html::page("Nodes", Some(&who), None, &body)).into_response()
        }
        Err(s) => failed(Some(&who), &s),
    }
}

#[derive(serde::Deserialize)]
struct Follow {
    task: Option<String>,
}

/// Server-sent events: each change of a followed task as its re-rendered card
/// (`event: task`, data `{"id", "state", "html"}`), from the Watch stream.
async fn events(State(app): State<App>, headers: HeaderMap, Query(f): Query<Follow>) -> Response {
    let Some(who) = app.who(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let one = f.task.unwrap_or_default();
    let full = !one.is_empty();
    let stream = match app
        .svc()
        .watch(as_who(&who, v1::WatchRequest { task_id: one }))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return failed(Some(&who), &s),
    };
    let mut seen: HashMap<String, v1::Task> = HashMap::new();
    let events = stream.take_while(|ev| ev.is_ok()).filter_map(move |ev| {
        let ev = ev.ok()?;
        let id = ev.task.as_ref()?.id.clone();
        let t = dispatch_proto::convert::apply_watch_event(seen.get(&id), &ev)?;
        seen.insert(id.clone(), t.clone());
        let data = serde_json::json!({
            "id": t.id,
            "state": t.task_state().as_str(),
            "html": html::task_card(&t, can_act(&who, &t), full),
        });
        Some(Ok::<_, std::convert::Infallible>(
            Event::default().event("task").data(data.to_string()),
        ))
    });
    // The Watch stream ends when the coordinator stops, and with it this one.
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Serves the dashboard (`router` or `local_router`) on `listener` until `stop` resolves:
/// HTTPS with `tls` (the coordinator's certificate), else plain HTTP (the caller refuses a
/// non-loopback address without TLS, as for gRPC).
pub async fn serve(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(cfg) => {
            let l = TlsListener::new(listener, tokio_rustls::TlsAcceptor::from(cfg))?;
            axum::serve(l, app).with_graceful_shutdown(stop).await
        }
    }
}

/// TLS connections of a TCP listener. Handshakes run on their own tasks (a slow or silent
/// client holds up no one) and are cut after 10 s.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    addr: std::net::SocketAddr,
}

impl TlsListener {
    fn new(
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "dashboard: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    match shake {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "dashboard: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "dashboard: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone (it never ends while this listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
