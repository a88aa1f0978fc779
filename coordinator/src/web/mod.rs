//! The web dashboard (`--http-listen ADDR`): every task's checklist live, one task's page
//! (plan, questions with an answer box, notes, worker output, output.md and diff, all live;
//! Cancel and Retry), the inbox of waiting questions, and the nodes.
//!
//! Server-rendered HTML over the same calls as gRPC: each handler calls [`DispatchSvc`] in
//! process as the logged-in [`Principal`], so the access policy, summaries and errors are the
//! CLI's. Live updates are server-sent events from the same `Watch` stream `dispatch watch`
//! reads (no polling); the page works without JavaScript, read-only views included. Login is a
//! token (the CLI's), kept in an HttpOnly, SameSite=Strict cookie. Assets are compiled in.

mod answer_link;
mod html;
mod session;

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

/// The cookie that carries the session id over TLS (`__Host-`: Secure, Path=/, this host only).
const COOKIE_TLS: &str = "__Host-dispatch_session";
/// The cookie that carries the session id over plain HTTP (loopback).
const COOKIE: &str = "dispatch_session";
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
    /// Who is logged in, by session id.
    sessions: Arc<session::Sessions>,
}

/// A logged-in caller: who, and the CSRF token of their session.
struct Viewer {
    p: Principal,
    csrf: String,
}

impl Viewer {
    /// A page of this session: every post form carries its CSRF token.
    fn html(&self, page: String) -> Response {
        Html(session::with_csrf(&page, &self.csrf)).into_response()
    }
}

/// The peer of a dashboard connection (put there by the server).
#[derive(Clone, Copy, Debug)]
struct Peer(std::net::SocketAddr);

/// How the local daemon's owner logs in: `dispatch dashboard` writes a one-time secret to a
/// file only they can read and opens `/login?once=SECRET`; the first use deletes the file and
/// gives the browser a session.
pub struct LocalLogin {
    /// Where `dispatch dashboard` puts the one-time secret (0600).
    pub once_file: std::path::PathBuf,
}

/// The cookie of a local session.
const LOCAL_COOKIE: &str = "dispatch_local";

impl App {
    fn svc(&self) -> DispatchSvc {
        DispatchSvc(Arc::clone(&self.c))
    }

    /// The session cookie's name.
    fn cookie_name(&self) -> &'static str {
        if self.local.is_some() {
            LOCAL_COOKIE
        } else if self.secure {
            COOKIE_TLS
        } else {
            COOKIE
        }
    }

    /// The logged-in caller, from the session its cookie names (its token checked now).
    fn who(&self, headers: &HeaderMap) -> Option<Viewer> {
        let id = cookie(headers, self.cookie_name())?;
        let (p, csrf) =
            self.sessions
                .who(&id, crate::now_ms(), |t| match self.c.tokens.principal(t) {
                    Ok(Principal::Node { .. }) | Err(_) => None,
                    Ok(p) => Some(p),
                })?;
        // A local session is only the local daemon's.
        if matches!(p, Principal::Local) != self.local.is_some() {
            return None;
        }
        Some(Viewer { p, csrf })
    }

    /// The `Set-Cookie` value that gives the browser session `id` (or ends it, with `None`).
    fn set_cookie(&self, id: Option<&str>) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = match id {
            Some(id) => format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}",
                self.cookie_name()
            ),
            None => format!(
                "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
                self.cookie_name()
            ),
        };
        HeaderValue::from_str(&v).ok()
    }

    /// The refusal of a post that did not come from this session's own pages (none: it did).
    fn check_post(&self, v: &Viewer, headers: &HeaderMap, csrf: &str) -> Option<Response> {
        let why = session::cross_site(headers, self.secure).or_else(|| {
            (!crate::domain::access::same(csrf.as_bytes(), v.csrf.as_bytes()))
                .then_some("the form is not from this session's page")
        });
        why.map(|why| {
            tracing::warn!(who = %v.p.name(), why, "dashboard: refused a post");
            forbidden(Some(v), why)
        })
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

/// A post refused before it was read (cross-site, or without its session's CSRF token).
fn forbidden(v: Option<&Viewer>, why: &str) -> Response {
    let body = format!(
        "<p class=\"error\" role=\"alert\">Refused: {}. Nothing was changed; open the page again and retry.</p><p><a href=\"/\">Back to the tasks</a></p>",
        html::esc(why)
    );
    let page = html::page("Refused", v.map(|v| &v.p), None, &body);
    let mut r = match v {
        Some(v) => v.html(page),
        None => Html(page).into_response(),
    };
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// A refused or failed call as a page that says why.
fn failed(v: Option<&Viewer>, s: &tonic::Status) -> Response {
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
    let page = html::page("Error", v.map(|v| &v.p), None, &body);
    let mut r = match v {
        Some(v) => v.html(page),
        None => Html(page).into_response(),
    };
    *r.status_mut() = code;
    r
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
        sessions: Default::default(),
    })
}

/// The local daemon's dashboard: its owner logs in with a one-time URL (`dispatch dashboard`).
pub fn local_router(c: Arc<Coordinator>, login: LocalLogin) -> axum::Router {
    routes(App {
        c,
        secure: false,
        local: Some(Arc::new(login)),
        sessions: Default::default(),
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
        .route("/task/{id}/cancel", post(cancel))
        .route("/task/{id}/retry", post(retry))
        .route("/inbox", get(inbox))
        .route(
            "/a/{token}",
            get(answer_link::page).post(answer_link::answer),
        )
        .route("/nodes", get(nodes))
        .route("/events", get(events))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// What every dashboard response says to the browser: run only the dashboard's own script and
/// style, in no frame, sniffing no types, caching nothing, sending no referrer elsewhere.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        // Same-origin requests keep their Origin (a form post's is `null` under no-referrer).
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
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
        if !given.is_empty()
            && crate::domain::access::same(given.as_bytes(), kept.trim().as_bytes())
            && std::fs::remove_file(&l.once_file).is_ok()
        {
            let id = match app.sessions.start(None, crate::now_ms()) {
                Ok(id) => id,
                Err(e) => return failed(None, &tonic::Status::from(e)),
            };
            let mut r = Redirect::to("/").into_response();
            if let Some(v) = app.set_cookie(Some(&id)) {
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

async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    peer: Option<axum::Extension<Peer>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let page = |status: StatusCode, error: &str| {
        (
            status,
            Html(html::page("Log in", None, None, &html::login(Some(error)))),
        )
            .into_response()
    };
    if let Some(why) = session::cross_site(&headers, app.secure) {
        return forbidden(None, why);
    }
    let now = crate::now_ms();
    let ip = peer.map(|p| p.0.0.ip());
    if let Some(ip) = ip {
        let wait = app.sessions.login_wait(ip, now);
        if wait > 0 {
            tracing::warn!(%ip, "dashboard: too many failed logins from this address");
            let mut r = page(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed logins from your address; try again in {wait} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    let token = f.token.trim();
    let failed_login = |why: &str| {
        // Who tried, by address and the token's id (never its secret).
        let shown_id = token
            .strip_prefix("dsp_")
            .and_then(|r| r.split('_').next())
            .filter(|id| id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("?");
        let who = ip.map_or("dashboard".to_string(), |ip| format!("dashboard@{ip}"));
        let entry = crate::model::AuditEntry {
            who,
            action: "login-failed".into(),
            task_id: String::new(),
            detail: format!("token id {shown_id}: {why}"),
        };
        let c = Arc::clone(&app.c);
        tokio::spawn(async move {
            if let Err(e) = c.store.audit(&entry, crate::now_ms()).await {
                tracing::warn!(error = %e, "cannot audit a failed login");
            }
        });
        if let Some(ip) = ip {
            app.sessions.login_failed(ip, now);
        }
    };
    match app.c.tokens.principal(token) {
        Ok(Principal::Node { .. }) => {
            failed_login("a node's token");
            page(
                StatusCode::UNAUTHORIZED,
                "that is a node's token; log in with a user token",
            )
        }
        Ok(_) => {
            if let Some(ip) = ip {
                app.sessions.login_ok(ip);
            }
            // The browser gets a session id; the token stays here.
            let id = match app.sessions.start(Some(token.to_string()), now) {
                Ok(id) => id,
                Err(e) => return failed(None, &tonic::Status::from(e)),
            };
            let mut r = Redirect::to("/").into_response();
            if let Some(v) = app.set_cookie(Some(&id)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            failed_login("not a valid token");
            page(StatusCode::UNAUTHORIZED, &e.to_string())
        }
    }
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(app): State<App>, headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    if let Some(v) = app.who(&headers) {
        if let Some(r) = app.check_post(&v, &headers, &f.csrf) {
            return r;
        }
        if let Some(id) = cookie(&headers, app.cookie_name()) {
            app.sessions.end(&id);
        }
    }
    let mut r = Redirect::to("/login").into_response();
    if let Some(v) = app.set_cookie(None) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(v) = app.who(&headers) else {
        return to_login();
    };
    let who = v.p.clone();
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
            v.html(html::page("Tasks", Some(&who), Some(""), &body))
        }
        Err(s) => failed(Some(&v), &s),
    }
}

async fn task_page(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(v) = app.who(&headers) else {
        return to_login();
    };
    let who = v.p.clone();
    let svc = app.svc();
    let t = match svc
        .get_task(as_who(&who, v1::GetTaskRequest { id: id.clone() }))
        .await
    {
        Ok(t) => t.into_inner(),
        Err(s) => return failed(Some(&v), &s),
    };
    let act = can_act(&who, &t);
    let mut body = format!("<div id=\"live\">{}</div>", html::task_card(&t, act, true));
    // A note reaches only a worker that runs (the RPC refuses the rest): no form for others.
    if act && t.task_state().holds_slot() {
        body.push_str(&format!(
            r#"<form method="post" action="/task/{id}/note" class="note"><label for="note-text">Add a note for the worker</label>
<textarea id="note-text" name="text" rows="2" required></textarea><button type="submit">Add note</button></form>"#,
            id = html::esc(&t.id)
        ));
    }
    if !t.summary {
        let d = Details::read(&svc, &who, &t).await;
        body.push_str(&html::details(
            &t.id,
            &d.output,
            &d.diff,
            &d.tail_text(),
            d.log_seq,
        ));
    }
    v.html(html::page(&t.id, Some(&who), Some(&t.id), &body))
}

/// What a task's page shows below its card: output.md, the diff, and the end of the worker's
/// output — read once for the page, then kept current by its live updates.
#[derive(Default)]
struct Details {
    output: String,
    diff: String,
    tail: Vec<u8>,
    /// The last log chunk read (live updates follow from after it).
    log_seq: u64,
    /// What output and diff were read at: output.md's size, and the branch head.
    output_bytes: u64,
    head: String,
}

impl Details {
    async fn read(svc: &DispatchSvc, who: &Principal, t: &v1::Task) -> Details {
        let mut d = Details::default();
        d.refresh_output(svc, who, t).await;
        d.refresh_diff(svc, who, t).await;
        if let Ok(logs) = svc
            .logs(as_who(
                who,
                v1::LogsRequest {
                    id: t.id.clone(),
                    ..Default::default()
                },
            ))
            .await
        {
            let mut s = logs.into_inner();
            let mut read = 0usize;
            while let Some(Ok(chunk)) = s.next().await {
                read += chunk.data.len();
                d.log(&chunk);
                if read > LOG_SCAN {
                    break;
                }
            }
        }
        d
    }

    /// Reads output.md again when its size changed; true when it did.
    async fn refresh_output(&mut self, svc: &DispatchSvc, who: &Principal, t: &v1::Task) -> bool {
        if t.output_bytes == self.output_bytes {
            return false;
        }
        self.output_bytes = t.output_bytes;
        let Ok(out) = svc
            .get_output(as_who(
                who,
                v1::GetOutputRequest {
                    id: t.id.clone(),
                    follow: false,
                },
            ))
            .await
        else {
            return false;
        };
        let mut s = out.into_inner();
        match s.next().await {
            Some(Ok(o)) if o.markdown != self.output => {
                self.output = o.markdown;
                true
            }
            _ => false,
        }
    }

    /// Reads the diff again when the task's branch moved; true when it did.
    async fn refresh_diff(&mut self, svc: &DispatchSvc, who: &Principal, t: &v1::Task) -> bool {
        let Some(head) = t.changes.as_ref().map(|c| c.head.clone()) else {
            return false;
        };
        if head == self.head {
            return false;
        }
        self.head = head;
        match svc
            .get_changes(as_who(who, v1::GetChangesRequest { id: t.id.clone() }))
            .await
        {
            Ok(ch) => {
                self.diff = ch.into_inner().diff;
                true
            }
            Err(_) => false,
        }
    }

    /// Takes a log chunk: the tail keeps the last [`LOG_TAIL`] bytes.
    fn log(&mut self, chunk: &v1::LogsResponse) {
        self.tail.extend_from_slice(&chunk.data);
        if self.tail.len() > LOG_TAIL {
            self.tail.drain(..self.tail.len() - LOG_TAIL);
        }
        self.log_seq = self.log_seq.max(chunk.seq);
    }

    fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

#[derive(serde::Deserialize)]
struct AnswerForm {
    seq: u32,
    text: String,
    #[serde(default)]
    csrf: String,
}

/// A post from a task's page: the session and its CSRF token checked, then `call` as the
/// logged-in user (the RPC's own role and ownership checks), then back to the task's page — or
/// the refusal, naming what was refused.
async fn act_on_task<T, Fut>(
    app: &App,
    headers: &HeaderMap,
    id: &str,
    csrf: &str,
    call: impl FnOnce(DispatchSvc, Principal) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let Some(v) = app.who(headers) else {
        return to_login();
    };
    if let Some(r) = app.check_post(&v, headers, csrf) {
        return r;
    }
    match call(app.svc(), v.p.clone()).await {
        Ok(_) => Redirect::to(&format!("/task/{}", urlencode(id))).into_response(),
        Err(s) => failed(Some(&v), &s),
    }
}

async fn answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AnswerForm>,
) -> Response {
    let req = v1::AnswerRequest {
        id: id.clone(),
        seq: f.seq,
        text: f.text,
        request_id: String::new(),
    };
    act_on_task(&app, &headers, &id, &f.csrf, |svc, who| async move {
        svc.answer(as_who(&who, req)).await
    })
    .await
}

#[derive(serde::Deserialize)]
struct NoteForm {
    text: String,
    #[serde(default)]
    csrf: String,
}

async fn note(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Response {
    let req = v1::AddNoteRequest {
        id: id.clone(),
        text: f.text,
    };
    act_on_task(&app, &headers, &id, &f.csrf, |svc, who| async move {
        svc.add_note(as_who(&who, req)).await
    })
    .await
}

#[derive(serde::Deserialize)]
struct ActForm {
    #[serde(default)]
    csrf: String,
}

/// The Cancel button: the Cancel RPC as the logged-in user.
async fn cancel(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Response {
    let req = v1::CancelRequest { id: id.clone() };
    act_on_task(&app, &headers, &id, &f.csrf, |svc, who| async move {
        svc.cancel(as_who(&who, req)).await
    })
    .await
}

/// The Retry button: the Retry RPC as the logged-in user (same backend, model and node).
async fn retry(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Response {
    let req = v1::RetryRequest {
        id: id.clone(),
        ..Default::default()
    };
    act_on_task(&app, &headers, &id, &f.csrf, |svc, who| async move {
        svc.retry(as_who(&who, req)).await
    })
    .await
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
    let Some(v) = app.who(&headers) else {
        return to_login();
    };
    let who = v.p.clone();
    match app
        .svc()
        .list_questions(as_who(&who, v1::ListQuestionsRequest {}))
        .await
    {
        Ok(r) => {
            let qs = r.into_inner().questions;
            let body = format!(
                "<h2>Waiting for an answer</h2>{}",
                html::inbox(&qs, permit(&who, Rpc::Act).is_ok(), crate::now_ms())
            );
            v.html(html::page("Inbox", Some(&who), None, &body))
        }
        Err(s) => failed(Some(&v), &s),
    }
}

async fn nodes(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(v) = app.who(&headers) else {
        return to_login();
    };
    let who = v.p.clone();
    match app
        .svc()
        .list_nodes(as_who(&who, v1::ListNodesRequest {}))
        .await
    {
        Ok(r) => {
            let body = html::nodes(&r.into_inner().nodes);
            v.html(html::page("Nodes", Some(&who), None, &body))
        }
        Err(s) => failed(Some(&v), &s),
    }
}

#[derive(serde::Deserialize)]
struct Follow {
    task: Option<String>,
    /// One task's page: the last log chunk it shows (its worker output follows from there).
    log_seq: Option<u64>,
}

/// Server-sent events: each change of a followed task as its re-rendered card
/// (`event: task`, data `{"id", "state", "html"}`), from the Watch stream. One task's page
/// also gets its output.md, diff and worker output as they change (`event: output`, `diff`,
/// `logs`, data `{"text"}`: set as text, never as markup), from the same calls the CLI makes.
async fn events(State(app): State<App>, headers: HeaderMap, Query(f): Query<Follow>) -> Response {
    let Some(v) = app.who(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let (who, csrf) = (v.p.clone(), v.csrf.clone());
    let one = f.task.unwrap_or_default();
    let full = !one.is_empty();
    let svc = app.svc();
    let watch = match svc
        .watch(as_who(
            &who,
            v1::WatchRequest {
                task_id: one.clone(),
            },
        ))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return failed(Some(&v), &s),
    };
    // The worker's output, followed (one task's page only, and only when the caller may read
    // it: a summary's reader gets nothing).
    let logs = if full {
        svc.logs(as_who(
            &who,
            v1::LogsRequest {
                id: one.clone(),
                follow: true,
                activity: false,
                after_seq: f.log_seq.unwrap_or(0),
            },
        ))
        .await
        .ok()
        .map(|r| r.into_inner())
    } else {
        None
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut watch = watch;
        let mut logs = logs;
        let mut seen: HashMap<String, v1::Task> = HashMap::new();
        let mut d: Option<Details> = None;
        let send = |name: &'static str, data: serde_json::Value| {
            let tx = tx.clone();
            async move {
                tx.send(Event::default().event(name).data(data.to_string()))
                    .await
                    .is_ok()
            }
        };
        loop {
            tokio::select! {
                ev = watch.next() => {
                    // The Watch stream ends when the coordinator stops, and with it this one.
                    let Some(Ok(ev)) = ev else { return };
                    let Some(id) = ev.task.as_ref().map(|t| t.id.clone()) else { continue };
                    let Some(t) = dispatch_proto::convert::apply_watch_event(seen.get(&id), &ev) else {
                        continue;
                    };
                    seen.insert(id, t.clone());
                    let mut card = serde_json::json!({
                        "id": t.id,
                        "state": t.task_state().as_str(),
                        "html": session::with_csrf(&html::task_card(&t, can_act(&who, &t), full), &csrf),
                    });
                    // A question that just arrived: the page may show a browser notification
                    // (never for a summary: a viewer does not see the question's text).
                    if ev.change == "question"
                        && !t.summary
                        && let Some(q) = t
                            .questions
                            .iter()
                            .filter(|q| q.answer.is_none())
                            .max_by_key(|q| q.seq)
                    {
                        card["asked"] = serde_json::json!({
                            "seq": q.seq,
                            "label": dispatch_core::policy::label_of(q.seq, &q.kind),
                            "text": q.text,
                        });
                    }
                    if !send("task", card).await {
                        return;
                    }
                    if full && !t.summary {
                        // What the page showed is where the details start from.
                        let d = d.get_or_insert_with(|| Details {
                            output_bytes: t.output_bytes,
                            head: t.changes.as_ref().map(|c| c.head.clone()).unwrap_or_default(),
                            ..Default::default()
                        });
                        if d.refresh_output(&svc, &who, &t).await
                            && !send("output", serde_json::json!({"text": d.output})).await
                        {
                            return;
                        }
                        if d.refresh_diff(&svc, &who, &t).await
                            && !send("diff", serde_json::json!({"text": d.diff})).await
                        {
                            return;
                        }
                    }
                }
                chunk = async { logs.as_mut()?.next().await }, if logs.is_some() => {
                    match chunk {
                        Some(Ok(chunk)) => {
                            let d = d.get_or_insert_with(Details::default);
                            d.log(&chunk);
                            if !send("logs", serde_json::json!({"chunk": String::from_utf8_lossy(&chunk.data)})).await {
                                return;
                            }
                        }
                        _ => logs = None,
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let events =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// How long a client may take, by default, for a TLS handshake and for a request's headers,
/// and how long a kept-alive connection may sit idle before its next request.
pub const SLOW_CLIENT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the dashboard (`router` or `local_router`) on `listener` until `stop` resolves:
/// HTTPS with `tls` (the coordinator's certificate), else plain HTTP (the caller refuses a
/// non-loopback address without TLS, as for gRPC). Every connection passes a gate (at most
/// 1,024 at once, 64 from one address; the oldest makes room when full); a TLS handshake not
/// done within `slow` ([`SLOW_CLIENT`] by default), headers trickled slower than that, or a
/// kept-alive connection idle that long, closes the connection. Open requests finish (up to
/// 10 s) after `stop`.
pub async fn serve(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    slow: std::time::Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = crate::conn::Gate::new(crate::conn::Limits {
        max_connections: crate::conn::fd_budget().min(1024),
        unauthenticated_per_address: 64,
        deadline: None,
    });
    serve_gated(app, listener, tls, gate, slow, stop).await
}

/// Answers one plain-HTTP request on the HTTPS port with a permanent redirect to the same
/// path over https:// (the host as the browser named it, when it is a plain host[:port]).
async fn redirect_to_https<IO>(conn: IO, slow: std::time::Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service =
        hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.len() <= 255
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
                })
                .map(str::to_string);
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let response = match host {
            Some(h) => hyper::Response::builder()
                .status(hyper::StatusCode::PERMANENT_REDIRECT)
                .header(hyper::header::LOCATION, format!("https://{h}{path}"))
                .header(hyper::header::CONNECTION, "close")
                .body(axum::body::Body::from(format!(
                    "This dashboard is served over HTTPS: https://{h}{path}\n"
                ))),
            None => hyper::Response::builder()
                .status(hyper::StatusCode::BAD_REQUEST)
                .header(hyper::header::CONNECTION, "close")
                .body(axum::body::Body::from(
                    "This dashboard is served over HTTPS: use https:// with this host and port\n",
                )),
        };
            Ok::<_, std::convert::Infallible>(response.expect("a valid response"))
        });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(slow)
        .keep_alive(false);
    let _ = http.serve_connection(TokioIo::new(conn), service).await;
}

/// [`serve`] through `gate`.
async fn serve_gated(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    gate: Arc<crate::conn::Gate>,
    slow: std::time::Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(slow)
        .keep_alive(true);
    let stop = std::pin::pin!(stop);
    let mut stop = stop;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    tracing::debug!(error = %e, "dashboard: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Some(conn) = gate.admit(tcp, peer) else {
            continue;
        };
        let (watcher, http, acceptor) = (graceful.watcher(), http.clone(), acceptor.clone());
        // Each request knows its connection's peer (login throttling is per address).
        let inner = service.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                hyper::service::Service::call(&inner, req)
            });
        tokio::spawn(async move {
            let served = match acceptor {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(conn), service))
                        .await
                }
                Some(a) => {
                    // `http://` typed for this HTTPS port: plain HTTP where a TLS handshake
                    // (0x16) belongs. Answered with a redirect to https://, not a reset the
                    // browser shows as an unreadable error.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(slow, conn.get_ref().peek(&mut first)).await {
                        Ok(Ok(1)) if first[0] != 0x16 => {
                            redirect_to_https(conn, slow).await;
                            return;
                        }
                        Ok(Ok(1)) => {}
                        _ => return,
                    }
                    match tokio::time::timeout(slow, a.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(tls), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "dashboard: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "dashboard: TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "dashboard: connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("dashboard: connections still open 10 s after stop; leaving them");
    }
    Ok(())
}
