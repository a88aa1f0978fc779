//! `dispatch mcp`: dispatch as Model Context Protocol tools, over stdio, for any agent host
//! (Claude Code, Codex, Cursor). It talks to the configured coordinator, or the local daemon,
//! like every other command; every tool is one or two of the CLI's calls, with its checks and
//! its messages. stdout carries the protocol: nothing else is printed there.

use crate::args::RunArgs;
use crate::client::connect;
use crate::render;
use crate::settings::Settings;
use anyhow::{Result, anyhow, bail};
use dispatch_proto::v1;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResourceContents, ResourceUpdatedNotificationParam, ServerCapabilities, SubscribeRequestParams,
    SubscriptionFilter, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod resources;
mod schemas;

/// Longest a `wait_for_task` call blocks (a host may call it again).
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Serves the tools on stdin/stdout until the host closes them.
pub(crate) async fn serve(g: &Settings) -> Result<crate::exit::Exit> {
    let subscribed: Subscribed = Default::default();
    let server = Dispatch {
        g: g.clone(),
        subscribed: Arc::clone(&subscribed),
    }
    .serve(rmcp::transport::stdio())
    .await
    .map_err(|e| anyhow!("MCP: {e}"))?;
    let ended = server.waiting().await;
    for (_, follower) in subscribed.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        follower.abort();
    }
    ended.map_err(|e| anyhow!("MCP: {e}"))?;
    Ok(crate::exit::Exit::Success)
}

#[derive(Clone)]
struct Dispatch {
    g: Settings,
    /// The resources followed through `resources/subscribe`, each by its own task.
    subscribed: Subscribed,
}

/// Each resource followed through `resources/subscribe`, by URI: the task that follows it.
type Subscribed = Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>;

/// A JSON schema object for a tool's input.
fn schema(properties: Value, required: &[&str]) -> std::sync::Arc<Map<String, Value>> {
    let v = json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    match v {
        Value::Object(m) => std::sync::Arc::new(m),
        _ => unreachable!("an object literal"),
    }
}

fn id_only(what: &str) -> std::sync::Arc<Map<String, Value>> {
    schema(
        json!({"id": {"type": "string", "description": what}}),
        &["id"],
    )
}

/// `t`, saying its result has the shape of `schema` (its `outputSchema`).
fn returns(schema: Value, mut t: Tool) -> Tool {
    if let Value::Object(m) = schema {
        t.output_schema = Some(std::sync::Arc::new(m));
    }
    t
}

/// What a tool does to the world, for a host deciding whether to ask its user first.
#[derive(Clone, Copy)]
enum Effect {
    /// Reads only.
    Reads,
    /// Adds (a task, an answer, a note, a fetched branch); `idempotent` when calling it again
    /// with the same arguments changes nothing more.
    Adds { idempotent: bool },
    /// Stops or overwrites something (a worker, the current branch).
    Destroys { idempotent: bool },
}

/// A tool: its name, title, effect and world (MCP annotations: a worker acts on more than
/// dispatch knows — it runs an agent CLI with a model — so starting one is open-world), what it
/// does, its input schema and the schema of its result.
fn tool(
    name: &'static str,
    title: &str,
    effect: Effect,
    open_world: bool,
    description: impl Into<std::borrow::Cow<'static, str>>,
    input: std::sync::Arc<Map<String, Value>>,
    output: Value,
) -> Tool {
    let t = returns(output, Tool::new(name, description, input));
    let a = ToolAnnotations::with_title(title).open_world(open_world);
    let a = match effect {
        Effect::Reads => a.read_only(true),
        Effect::Adds { idempotent } => a.read_only(false).destructive(false).idempotent(idempotent),
        Effect::Destroys { idempotent } => {
            a.read_only(false).destructive(true).idempotent(idempotent)
        }
    };
    t.annotate(a)
}

/// The directory `dispatch mcp` runs in (where the host started it: its project), as tools
/// describe their default repository.
fn started_in() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the directory the server was started in".into())
}

fn tools() -> Vec<Tool> {
    use Effect::*;
    let here = started_in();
    let repository = format!(
        "A git checkout on this machine. A remote task works on its origin at its current commit (which must be pushed); a local one runs in it. Default: {here}, where this server was started."
    );
    vec![
        tool(
            "dispatch_task",
            "Dispatch a task",
            Adds { idempotent: false },
            true,
            "Dispatch a task to a worker (Claude Code, Codex, Cursor or any configured CLI) on a node. Its checklist is the steps given, or the plan, or taken from the prompt. It works on `repository` (default: where this server was started) or in `workdir`. Returns the task's id, node, backend, model, plan and the repository it works on, and a notice when your default model was used.",
            schema(
                json!({
                    "prompt": {"type": "string", "description": "What the worker should do."},
                    "steps": {"type": "array", "items": {"type": "string"}, "description": "Checklist items (replace those taken from the prompt)."},
                    "plan": {"type": "string", "description": "A whole plan.md, used as is."},
                    "id": {"type": "string", "description": "Task id (kebab-case); derived from the prompt when absent."},
                    "model": {"type": "string", "description": "Model to use (a model id from the user's dispatch config, or one the seed's rules map to a backend, e.g. opus, gpt-5.3-codex). Default: the last configured model named in the prompt, else the user's default."},
                    "alias": {"type": "string", "description": "A configured alias (its model and prompt addition)."},
                    "backend": {"type": "string", "description": "claude, cursor, codex, sim, or one a node configures."},
                    "remote": {"type": "string", "description": "Run on this node only."},
                    "pool": {"type": "string", "description": "Run on nodes with these labels: k=v[,k=v]."},
                    "after": {"type": "string", "description": "Start after this task completes."},
                    "worktree": {"type": "boolean", "description": "Run in a git worktree on branch dispatch/<id>."},
                    "title": {"type": "string", "description": "Title of the plan. Default: the prompt's first line."},
                    "repository": {"type": "string", "description": repository},
                    "workdir": {"type": "string", "description": "Run in this directory instead of a repository checkout: with the local daemon a directory here, with a shared coordinator an absolute path on the node (then `repository` is not used)."}
                }),
                &["prompt"],
            ),
            schemas::task(),
        ),
        tool(
            "task_status",
            "Task status",
            Reads,
            false,
            "One task in full (with its checklist and questions), or the most recent tasks when no id is given.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task to show in full. Absent: the most recent tasks."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Without id: how many of the most recent tasks to list (default 50)."}
                }),
                &[],
            ),
            schemas::status(),
        ),
        tool(
            "wait_for_task",
            "Wait for a task",
            Reads,
            false,
            "Block until the task needs you — a question is waiting, or it ended — or the timeout passes. Returns why (`question`, `completed`, `blocked`, `failed`, `cancelled`, `timeout`), the message `dispatch wait` prints, and the task.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task to wait for."},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 600, "description": "Default 300."}
                }),
                &["id"],
            ),
            schemas::waited(),
        ),
        tool(
            "answer_question",
            "Answer a worker's question",
            Adds { idempotent: false },
            false,
            "Answer a worker's question (the oldest open one, or question `seq`); the worker continues with its context. A tool approval (\"Allow Bash: git push …?\", seq above 1000000000) takes yes, no or always, and should be decided by the person, not by you.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task whose worker asked."},
                    "text": {"type": "string", "description": "The answer, as the worker will read it."},
                    "seq": {"type": "integer", "minimum": 1, "description": "Which question (its number in task_status). Default: the oldest open one."}
                }),
                &["id", "text"],
            ),
            schemas::task(),
        ),
        tool(
            "add_note",
            "Add a note for the worker",
            Adds { idempotent: false },
            false,
            "Append a note for the worker to the task's plan.md.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task; its worker must be running."},
                    "text": {"type": "string", "description": "The note, one line; the worker reads it in its plan.md."}
                }),
                &["id", "text"],
            ),
            schemas::task(),
        ),
        tool(
            "cancel_task",
            "Cancel a task",
            Destroys { idempotent: true },
            false,
            "Cancel a task; its worker is stopped.",
            id_only("The task."),
            schemas::task(),
        ),
        tool(
            "retry_task",
            "Retry a task",
            Adds { idempotent: false },
            true,
            "Run an ended task's unchecked items again, optionally with another backend, model or node.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The ended task (failed, lost, cancelled or blocked)."},
                    "backend": {"type": "string", "description": "Run it with this backend instead (claude, cursor, codex, sim, or one a node configures)."},
                    "model": {"type": "string", "description": "Run it with this model instead."},
                    "remote": {"type": "string", "description": "Run it on this node instead."}
                }),
                &["id"],
            ),
            schemas::task(),
        ),
        tool(
            "task_output",
            "A task's output",
            Reads,
            false,
            "The task's output.md: the summary its worker wrote.",
            id_only("The task."),
            schemas::output(),
        ),
        tool(
            "task_diff",
            "A task's changes as a patch",
            Reads,
            false,
            "What a worktree or remote-workspace task changed, as a patch.",
            id_only("The task."),
            schemas::diff(),
        ),
        tool(
            "list_nodes",
            "Agent nodes",
            Reads,
            false,
            "The agent nodes: connected or not, load, backends, labels.",
            schema(json!({}), &[]),
            schemas::nodes(),
        ),
        tool(
            "inbox",
            "Questions waiting",
            Reads,
            false,
            "Every question a worker is waiting on, across tasks and nodes.",
            schema(json!({}), &[]),
            schemas::inbox(),
        ),
        tool(
            "fetch_changes",
            "Fetch a task's branch",
            Adds { idempotent: true },
            false,
            "Bring a worktree or remote task's branch into a repository here as dispatch/<id> (from the bundle its node sent, or from origin when it pushed). The repository's current branch and files are not touched.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task (ended, with commits: task_status shows `changes`)."},
                    "repository": {"type": "string", "description": repository}
                }),
                &["id"],
            ),
            schemas::changes(),
        ),
        tool(
            "apply_changes",
            "Apply a task's changes",
            Destroys { idempotent: false },
            false,
            "Fetch a task's branch into a repository here and merge it (or cherry-pick its commits) into that repository's current branch, which must have no uncommitted changes. A conflict is undone and reported; nothing is left half-merged.",
            schema(
                json!({
                    "id": {"type": "string", "description": "The task (ended, with commits: task_status shows `changes`)."},
                    "repository": {"type": "string", "description": repository},
                    "cherry_pick": {"type": "boolean", "description": "Cherry-pick the task's commits instead of merging its branch (default false)."}
                }),
                &["id"],
            ),
            schemas::changes(),
        ),
    ]
}

/// The `repository` argument: a directory here (None: where the server was started).
fn repository_arg(args: &Map<String, Value>) -> Result<Option<std::path::PathBuf>> {
    let Some(dir) = text(args, "repository")? else {
        return Ok(None);
    };
    let dir = std::path::PathBuf::from(dir);
    if !dir.is_dir() {
        bail!(
            "`repository` {} is not a directory here (it is a git checkout on the machine this server runs on)",
            dir.display()
        );
    }
    Ok(Some(dir))
}

impl ServerHandler for Dispatch {
    fn get_info(&self) -> InitializeResult {
        let mut info = InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        );
        info.server_info = Implementation::new("dispatch", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Dispatch coding tasks to agent CLIs on any machine. Typical flow: dispatch_task, then wait_for_task; when it returns `question`, answer_question and wait again; at the end read task_output (and task_diff; fetch_changes or apply_changes bring a task's branch into a repository here). To show a checklist as it ticks, subscribe to the resource dispatch://tasks/ID/plan (and dispatch://tasks/ID/output for the result)."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        if !tools().iter().any(|t| t.name == name) {
            return Err(McpError::invalid_params(
                format!("no tool `{name}`; tools/list names them"),
                None,
            ));
        }
        let done = call(&self.g, name, &args).await;
        Ok(match done {
            Ok(v) => CallToolResult::structured(v),
            // The CLI's message, as the tool's error (what the host shows the model).
            Err(e) => CallToolResult::error(vec![ContentBlock::text(render::error_text(&e))]),
        }
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let all = resources::list(&self.g)
            .await
            .map_err(|e| resources::error(&e))?;
        Ok(ListResourcesResult::with_all_items(all))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let (id, part) = resources::parse(&request.uri)
            .map_err(|e| McpError::invalid_params(render::error_text(&e), None))?;
        let text = resources::read(&self.g, &id, part)
            .await
            .map_err(|e| resources::error(&e))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, request.uri).with_mime_type("text/markdown"),
        ])
        .into())
    }

    // Hosts on the 2025 protocol versions (all of them, today) subscribe this way; the SDK
    // calls it legacy next to `subscriptions/listen` (below), which 2026-07-28 hosts use.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        let (id, part) = resources::parse(&uri)
            .map_err(|e| McpError::invalid_params(render::error_text(&e), None))?;
        {
            let subscribed = self.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            if subscribed.contains_key(&uri) {
                return Ok(());
            }
            if subscribed.len() >= resources::MAX_FOLLOWED {
                return Err(McpError::invalid_request(
                    format!(
                        "{} resources are followed already, the most one host may; unsubscribe from one first",
                        resources::MAX_FOLLOWED
                    ),
                    None,
                ));
            }
        }
        let follower = resources::Follower::start(&self.g, &id)
            .await
            .map_err(|e| resources::error(&e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let follower = follower.run(vec![part], tx);
        let peer = context.peer.clone();
        let shown = uri.clone();
        let task = tokio::spawn(async move {
            let tell = async {
                while let Some(u) = rx.recv().await {
                    let updated = ResourceUpdatedNotificationParam::new(u);
                    if peer.notify_resource_updated(updated).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                followed = follower => if let Err(e) = followed {
                    // stderr: stdout carries the protocol.
                    eprintln!("dispatch mcp: stopped following {shown}: {}", render::error_text(&e));
                },
                _ = tell => {}
            }
        });
        self.subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uri, task.abort_handle());
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(follower) = self
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri)
        {
            follower.abort();
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Every dispatch resource asked for, up to the limit; whether each task exists and may
        // be read is checked when the subscription starts (listen).
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|u| resources::parse(u).is_ok())
            .take(resources::MAX_FOLLOWED)
            .cloned()
            .collect();
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = (!uris.is_empty()).then_some(uris);
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let tasks = resources::by_task(&uris)
            .map_err(|e| McpError::invalid_params(render::error_text(&e), None))?;
        let mut started = Vec::with_capacity(tasks.len());
        for (id, parts) in tasks {
            let follower = resources::Follower::start(&self.g, &id)
                .await
                .map_err(|e| resources::error(&e))?;
            started.push((follower, parts));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut followers = tokio::task::JoinSet::new();
        for (follower, parts) in started {
            followers.spawn(follower.run(parts, tx.clone()));
        }
        drop(tx);
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                uri = rx.recv() => match uri {
                    Some(u) => {
                        if context.sink().notify_resource_updated(u).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                },
                Some(Ok(Err(e))) = followers.join_next() => {
                    return Err(McpError::internal_error(
                        format!("stopped following: {}", render::error_text(&e)),
                        None,
                    ));
                }
            }
        }
    }
}

fn text(args: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("`{key}` must be a string, not {other}"),
    }
}

fn need(args: &Map<String, Value>, key: &str) -> Result<String> {
    text(args, key)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| anyhow!("`{key}` is required"))
}

fn number(args: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| anyhow!("`{key}` must be a whole number, not {v}")),
    }
}

async fn call(g: &Settings, name: &str, args: &Map<String, Value>) -> Result<Value> {
    match name {
        "dispatch_task" => dispatch_task(g, args).await,
        "task_status" => {
            let mut t = connect(g).await?;
            match text(args, "id")? {
                Some(id) => {
                    dispatch_core::task_id::validate(&id)?;
                    let task = t
                        .client
                        .get_task(v1::GetTaskRequest { id })
                        .await?
                        .into_inner();
                    Ok(render::task_json(&task))
                }
                None => {
                    let limit = number(args, "limit")?.unwrap_or(50).clamp(1, 1000) as u32;
                    let page = t
                        .client
                        .list_tasks(v1::ListTasksRequest {
                            limit,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok(
                        json!({"tasks": page.tasks.iter().map(render::task_json).collect::<Vec<_>>()}),
                    )
                }
            }
        }
        "wait_for_task" => {
            let id = need(args, "id")?;
            dispatch_core::task_id::validate(&id)?;
            let timeout =
                Duration::from_secs(number(args, "timeout_seconds")?.unwrap_or(300)).min(MAX_WAIT);
            wait_for(g, &id, timeout).await
        }
        "answer_question" => {
            let id = need(args, "id")?;
            let text = need(args, "text")?;
            let seq = number(args, "seq")?.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
            let t = connect(g).await?;
            let task = super::ask::send_answer(g, &t, &id, seq, text).await?;
            Ok(render::task_json(&task))
        }
        "add_note" => {
            let (id, text) = (need(args, "id")?, need(args, "text")?);
            let mut t = connect(g).await?;
            let task = t
                .client
                .add_note(v1::AddNoteRequest { id, text })
                .await?
                .into_inner();
            Ok(render::task_json(&task))
        }
        "cancel_task" => {
            let id = need(args, "id")?;
            let mut t = connect(g).await?;
            let task = t
                .client
                .cancel(v1::CancelRequest { id })
                .await?
                .into_inner();
            Ok(render::task_json(&task))
        }
        "retry_task" => {
            let id = need(args, "id")?;
            let mut t = connect(g).await?;
            let task = t
                .client
                .retry(v1::RetryRequest {
                    id,
                    backend: text(args, "backend")?.unwrap_or_default(),
                    model: text(args, "model")?.unwrap_or_default(),
                    remote: text(args, "remote")?.unwrap_or_default(),
                })
                .await?
                .into_inner();
            Ok(render::task_json(&task))
        }
        "task_output" => {
            let id = need(args, "id")?;
            let o = resources::output(g, &id).await?;
            Ok(json!({
                "id": id, "markdown": o.markdown, "bytes": o.bytes, "truncated": o.truncated
            }))
        }
        "task_diff" => {
            let id = need(args, "id")?;
            let mut t = connect(g).await?;
            let c = t
                .client
                .get_changes(v1::GetChangesRequest { id: id.clone() })
                .await?
                .into_inner();
            Ok(json!({"id": id, "diff": c.diff, "none": c.none}))
        }
        "list_nodes" => {
            let mut t = connect(g).await?;
            let nodes = t
                .client
                .list_nodes(v1::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            Ok(json!({"nodes": nodes.iter().map(render::node_json).collect::<Vec<_>>()}))
        }
        "fetch_changes" => {
            let id = need(args, "id")?;
            dispatch_core::task_id::validate(&id)?;
            let dir = repository_arg(args)?;
            let (info, repo) = super::changes::fetch(g, &id, dir.as_deref()).await?;
            Ok(super::changes::changes_json(&id, &info, &repo))
        }
        "apply_changes" => {
            let id = need(args, "id")?;
            dispatch_core::task_id::validate(&id)?;
            let dir = repository_arg(args)?;
            let cherry_pick = match args.get("cherry_pick") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => bail!("`cherry_pick` must be true or false, not {other}"),
            };
            let (info, repo) =
                super::changes::apply_in(g, &id, dir.as_deref(), cherry_pick).await?;
            let mut out = super::changes::changes_json(&id, &info, &repo);
            out["applied"] =
                Value::String(if cherry_pick { "cherry-pick" } else { "merge" }.into());
            Ok(out)
        }
        "inbox" => {
            let qs = super::ask::waiting_questions(&mut connect(g).await?).await?;
            Ok(json!({"questions": qs.iter().map(super::ask::question_json).collect::<Vec<_>>()}))
        }
        other => bail!("no tool `{other}`"),
    }
}

/// `dispatch_task`: the CLI's checks and model rules; the default-model confirmation is a
/// returned notice (a host cannot be prompted on the protocol's stdin).
async fn dispatch_task(g: &Settings, args: &Map<String, Value>) -> Result<Value> {
    let steps = match args.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("`steps` must be strings"))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("`steps` must be a list of strings"),
    };
    let pool = text(args, "pool")?
        .map(|p| crate::args::parse_pool(&p).map_err(|e| anyhow!("`pool`: {e}")))
        .transpose()?;
    let run = RunArgs {
        prompt: vec![need(args, "prompt")?],
        steps,
        id: text(args, "id")?,
        model: text(args, "model")?,
        alias: text(args, "alias")?,
        backend: text(args, "backend")?,
        remote: text(args, "remote")?,
        pool,
        after: text(args, "after")?,
        title: text(args, "title")?,
        workdir: text(args, "workdir")?.map(std::path::PathBuf::from),
        repo_dir: repository_arg(args)?,
        worktree: args
            .get("worktree")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        yes: true,
        ..Default::default()
    };
    let plan = text(args, "plan")?;
    if run.backend.is_none() && g.config()?.is_none() {
        bail!(
            "no config yet to choose a model from: give `backend` (and `model`), or run `dispatch config init` once"
        );
    }
    let Some(sent) = super::run::send(g, &run, plan).await? else {
        bail!("not dispatched");
    };
    let mut out = render::task_json(&sent.task);
    if let (Value::Object(m), Some(model)) = (&mut out, sent.default_used) {
        m.insert(
            "notice".into(),
            Value::String(format!(
                "Dispatched with {model} (the default model); say which model to use next time if that is not what you want."
            )),
        );
    }
    Ok(out)
}

/// `wait_for_task`: `dispatch wait` for one task, returning instead of exiting.
async fn wait_for(g: &Settings, id: &str, timeout: Duration) -> Result<Value> {
    let mut target = connect(g).await?;
    let mut watching = crate::watching::Watching::start(&mut target, id.to_string()).await?;
    let mut tasks = BTreeMap::new();
    let t = target
        .client
        .get_task(v1::GetTaskRequest { id: id.into() })
        .await?
        .into_inner();
    tasks.insert(id.to_string(), t);
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = super::ask::until_needed(
        g,
        &mut target,
        &mut watching,
        &mut tasks,
        Some(deadline),
        super::ask::Voice::Mcp,
    )
    .await?;
    let (code, msg) = outcome.unwrap_or_else(|| {
        (
            crate::exit::Exit::TimedOut,
            "timed out; nothing needs you yet".to_string(),
        )
    });
    Ok(json!({
        "why": code.reason(), "exit_code": u8::from(code), "message": msg,
        "task": render::task_json(&tasks[id]),
    }))
}

#[cfg(test)]
mod tests {
    /// Issue 23: several parameters had no description, so an agent host guessed them.
    #[test]
    fn every_tool_and_parameter_is_described() {
        for t in super::tools() {
            assert!(
                t.description.as_deref().is_some_and(|d| !d.is_empty()),
                "{}",
                t.name
            );
            let a = t.annotations.as_ref().expect("annotated");
            assert!(
                a.title.as_deref().is_some_and(|s| !s.is_empty()),
                "{}",
                t.name
            );
            assert!(
                a.read_only_hint.is_some() && a.open_world_hint.is_some(),
                "{}",
                t.name
            );
            if a.read_only_hint == Some(false) {
                assert!(
                    a.destructive_hint.is_some() && a.idempotent_hint.is_some(),
                    "{}",
                    t.name
                );
            }
            let props = t.input_schema["properties"].as_object().unwrap();
            for (name, p) in props {
                assert!(
                    p["description"].as_str().is_some_and(|d| d.len() > 3),
                    "tool {}: parameter `{name}` has no description",
                    t.name
                );
            }
        }
    }
}
