//! Runs one task: prepares the seed's task directory, spawns the worker in its own session
//! (own process group), and reports plan snapshots, questions, log output and the exit.
//!
//! The worker is untrusted: its task directory is read through [`crate::watched`], off the
//! async runtime; a file that breaks a rule stops the worker and fails the task with the
//! reason. File notifications wake a scan only for writes and renames, never for reads, so a
//! sleeping worker costs its agent nothing.

mod supervise;

pub use supervise::reattach;
use supervise::{AfterExit, Exit, supervise};

use crate::assignment::{Assignment, Place};
use crate::backends::{BackendSpec, on_path};
use crate::watched::{Watched, workdir_of};
use crate::worker_record::RunRecord;
use dispatch_core::fs::TaskDir;
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{Notify, mpsc};

/// Longest error text a start failure carries (it quotes the worker's last output).
const MAX_START_ERROR: usize = 4096;

/// What every runner of a node shares.
#[derive(Clone)]
pub struct RunContext {
    /// Node name (for error messages).
    pub node: String,
    /// Where worker logs go (`<data-dir>/logs/<task>.log`).
    pub log_dir: PathBuf,
    /// Workdir for tasks that name none.
    pub default_workdir: PathBuf,
    /// Backends this node offers.
    pub backends: Arc<Vec<BackendSpec>>,
    /// Unsequenced events to the node's connection loop.
    pub events: mpsc::Sender<v1::TaskEvent>,
    /// Where running workers are recorded for re-attaching after an agent restart.
    pub run_dir: PathBuf,
    /// A task's own workdir must be under one of these (empty: any).
    pub workspace_roots: Arc<Vec<PathBuf>>,
    /// Clones of remote repositories (`<data-dir>/repos`).
    pub repo_cache: PathBuf,
    /// Worktrees of remote-workspace tasks (`<data-dir>/workspaces`).
    pub workspaces: PathBuf,
    /// Worker output sent per task at most (the coordinator's cap, from its Welcome).
    pub max_log_bytes: Arc<AtomicU64>,
    /// Which repositories tasks may name.
    pub repositories: Arc<dispatch_core::repo_url::RepoPolicy>,
    /// Public keys whose signed tasks this node runs (empty: any task).
    pub trusted_keys: Arc<Vec<String>>,
    /// How a worktree or workspace task's changes come home.
    pub changes: Arc<crate::changes::Policy>,
    /// API retries in a row after which a worker is stopped.
    pub api_retries: u32,
    /// Only these variables of the node's environment reach a worker (None: all but the
    /// agent's own).
    pub worker_env: Arc<Option<Vec<String>>>,
    /// The signed specs run here (a completed one is not run again).
    pub signed_runs: Arc<crate::signed_runs::SignedRuns>,
}

/// Why a worker did not start: the error for the task's reason, and what its CLI said, when
/// the node could read it.
#[derive(Debug)]
struct NotStarted {
    error: String,
    cli: Option<dispatch_core::signals::Failure>,
}

impl From<String> for NotStarted {
    fn from(error: String) -> NotStarted {
        NotStarted { error, cli: None }
    }
}

/// Variables every worker gets from the node's environment, whatever its `worker_env:`.
const ALWAYS_PASSED: [&str; 6] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM"];

/// What of the node's environment `vars` a worker gets: everything but the agent's own
/// variables (`DISPATCH_*`: its token, token file, TLS files, coordinator, config), or, with an
/// allow-list, only [`ALWAYS_PASSED`] and the names it lists (`NAME`, or `PREFIX*`).
pub fn worker_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    allow: &Option<Vec<String>>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.into_iter()
        .filter(|(k, _)| {
            let Some(k) = k.to_str() else {
                return allow.is_none();
            };
            if k.starts_with("DISPATCH_") {
                return false;
            }
            match allow {
                None => true,
                Some(list) => {
                    ALWAYS_PASSED.contains(&k)
                        || list.iter().any(|p| match p.strip_suffix('*') {
                            Some(prefix) => k.starts_with(prefix),
                            None => k == p,
                        })
                }
            }
        })
        .collect()
}

/// True when `dir` is inside a git working tree: a repository's `.git` (a directory with a
/// HEAD, or a worktree's `gitdir:` file) in it or above it. Not any `.git`: Codex's sandbox
/// puts an empty one in its writable roots while a command runs there.
fn in_git_repo(dir: &Path) -> bool {
    dir.ancestors().any(|d| {
        let git = d.join(".git");
        git.join("HEAD").is_file()
            || (git.is_file() && std::fs::read(&git).is_ok_and(|b| b.starts_with(b"gitdir:")))
    })
}

/// With trusted keys, a task runs only when it is signed by one of them and its assignment is
/// what was signed; the reason it may not otherwise.
fn check_signature(ctx: &RunContext, a: &Assignment) -> Result<(), String> {
    if ctx.trusted_keys.is_empty() {
        return Ok(());
    }
    let node = &ctx.node;
    let Some(signed) = &a.signed else {
        return Err(format!(
            "node `{node}` runs only signed tasks and this one is not signed; make a key with `dispatch keys init`, add its public key to the node's trusted_keys, and dispatch again"
        ));
    };
    let spec = dispatch_core::signing::verify(&signed.spec, &signed.signature, &ctx.trusted_keys)
        .map_err(|e| format!("node `{node}` refused the task: {e}"))?;
    dispatch_core::signing::check(&spec, &a.assigned(node, now_ms()))
        .map_err(|e| format!("node `{node}` refused the task: {e}"))?;
    ctx.signed_runs
        .start(
            &crate::signed_runs::spec_hash(&signed.spec),
            &a.task,
            spec.expires_ms,
        )
        .map_err(|e| format!("node `{node}` refused the task: {e}"))
}

/// A running task, as the connection loop sees it.
pub struct TaskHandle {
    /// Wakes the runner to kill the worker's process group.
    pub cancel: Arc<Notify>,
    /// Where its `.dispatch/tasks/<id>` lives.
    pub workdir: PathBuf,
    /// Which worker run of the task this is.
    pub attempt: u32,
    /// A cancel was sent already.
    pub cancelling: bool,
    /// Notes appended to its plan, which the runner keeps there.
    pub notes: crate::watched::Notes,
    /// Set before a cancel that stops it because its node drains.
    pub drained: Arc<std::sync::atomic::AtomicBool>,
    /// Its tool calls waiting for a decision (a run under approvals).
    pub approvals: Arc<crate::approvals::Pending>,
}

impl TaskHandle {
    /// A handle of worker run `attempt` whose task directory is under `workdir`.
    pub(crate) fn new(workdir: PathBuf, attempt: u32) -> TaskHandle {
        TaskHandle {
            cancel: Arc::new(Notify::new()),
            workdir,
            attempt,
            cancelling: false,
            notes: Default::default(),
            drained: Default::default(),
            approvals: Default::default(),
        }
    }

    /// What the runner shares with the connection loop: the cancel, the notes and the
    /// drained flag.
    pub(crate) fn shared(
        &self,
    ) -> (
        Arc<Notify>,
        crate::watched::Notes,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        (
            Arc::clone(&self.cancel),
            Arc::clone(&self.notes),
            Arc::clone(&self.drained),
        )
    }
}

pub use dispatch_core::process::now_ms;

/// Aborts a task when dropped (a run's approval server ends with its run).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A fresh (unsequenced) event of worker run `attempt` of `task`.
pub fn event(task: &str, attempt: u32, kind: Kind) -> v1::TaskEvent {
    v1::TaskEvent {
        task_id: task.to_string(),
        seq: 0,
        at_ms: now_ms(),
        attempt,
        kind: Some(kind),
    }
}

/// The task directory of `task` under `workdir`.
pub fn task_dir(workdir: &Path, task: &str) -> PathBuf {
    workdir.join(".dispatch").join("tasks").join(task)
}

/// Starts running `assign`; returns at once.
pub fn start(ctx: RunContext, assign: Assignment) -> TaskHandle {
    let workdir = assign
        .workdir
        .clone()
        .unwrap_or_else(|| ctx.default_workdir.clone());
    // A worktree or remote-workspace task runs (and keeps its task directory) in its worktree,
    // made in run().
    let cwd = match assign.place() {
        Place::Repo => ctx.workspaces.join(&assign.task),
        Place::Worktree => {
            crate::worktree::path(&workdir, &assign.task).unwrap_or_else(|_| workdir.clone())
        }
        Place::Dir => workdir.clone(),
    };
    let handle = TaskHandle::new(cwd, assign.attempt);
    let (cancel, notes, drained) = handle.shared();
    let approvals = Arc::clone(&handle.approvals);
    tokio::spawn(async move {
        let (id, attempt) = (assign.task.clone(), assign.attempt);
        let events = ctx.events.clone();
        // This run's span joins the task's trace (the coordinator's assignment span).
        let span = tracing::info_span!("agent.run", task_id = %id, attempt, node = %ctx.node);
        dispatch_telemetry::set_parent(&span, &assign.traceparent);
        let ran = tracing::Instrument::instrument(
            run(ctx, assign, workdir, (cancel, notes, drained), approvals),
            span,
        )
        .await;
        if let Err(NotStarted { mut error, cli }) = ran {
            tracing::warn!(task = %id, %error, "worker could not start");
            if error.len() > MAX_START_ERROR {
                let mut cut = MAX_START_ERROR;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
                error.push('…');
            }
            let _ = events
                .send(event(
                    &id,
                    attempt,
                    Kind::StartFailed(v1::WorkerStartFailed {
                        error,
                        cli: cli.as_ref().map(dispatch_proto::convert::failure_to_proto),
                    }),
                ))
                .await;
        }
    });
    handle
}

fn prepare(
    ctx: &RunContext,
    assign: &Assignment,
    workdir: &Path,
) -> Result<(PathBuf, BackendSpec), String> {
    let node = &ctx.node;
    if !workdir.is_dir() {
        return Err(format!(
            "workdir {} does not exist on node `{node}`",
            workdir.display()
        ));
    }
    let backend = ctx
        .backends
        .iter()
        .find(|b| b.name == assign.backend)
        .cloned()
        .ok_or_else(|| {
            let have: Vec<&str> = ctx.backends.iter().map(|b| b.name.as_str()).collect();
            format!(
                "backend `{}` is not available on node `{node}` (it has: {})",
                assign.backend,
                have.join(", ")
            )
        })?;
    if !backend.error.is_empty() {
        return Err(format!(
            "backend `{}` cannot run on node `{node}`: {}",
            backend.name, backend.error
        ));
    }
    // The sim worker makes no tool calls: nothing to approve.
    if assign.approvals && !backend.hooks && backend.name != "sim" {
        return Err(match backend.cli {
            Some(dispatch_core::signals::Cli::Codex) => format!(
                "backend `{}` on node `{node}` cannot run under tool approvals: {} has no hook dispatch can set up for one run (Codex 0.124 and later with `exec --dangerously-bypass-hook-trust` have); update it (npm install -g @openai/codex), run the task on claude, or without a policy",
                backend.name,
                if backend.version.is_empty() {
                    "its command is not one the node could check as the real Codex CLI".to_string()
                } else {
                    format!("codex-cli {}", backend.version)
                }
            ),
            _ => format!(
                "backend `{}` on node `{node}` cannot run under tool approvals: its CLI has no tool hook dispatch drives (Claude Code and Codex 0.124+ have; Cursor's `agent -p` has none); run the task on claude or codex, or without a policy",
                backend.name
            ),
        });
    }
    // A budget needs the CLI's token counts: a built-in CLI streams them for this task; a
    // command that prints none cannot run one.
    let mut backend = backend;
    if assign.tool_hook && backend.stream.is_none() {
        match (
            dispatch_core::stream::StreamFormat::of_builtin(&backend.name),
            backend.stream_flags,
        ) {
            (Some((format, _)), Some(flags)) => {
                backend.command = format!("{} {flags}", backend.command.trim_end());
                backend.stream = Some(format);
            }
            _ => {
                return Err(format!(
                    "backend `{}` on node `{node}` reports no token counts, so the task's budget could not be kept; give it `structured:` in the node's config (claude and codex: `structured: true`; another command: the format it prints), or submit the task without a budget",
                    backend.name
                ));
            }
        }
    }
    if let Some(program) = &backend.program
        && on_path(program).is_none()
    {
        return Err(format!(
            "`{program}` (backend `{}`) is not on PATH on node `{node}`; install it or fix PATH",
            backend.name
        ));
    }
    // The checkout may carry a `.dispatch/` of its own: nothing in it is followed.
    let dir = TaskDir::open(workdir, &assign.task, true)
        .and_then(|d| {
            d.ensure_dir("ipc")?;
            d.write_atomic("plan.md", assign.plan.as_bytes())?;
            Ok(d)
        })
        .map_err(|e| format!("cannot prepare the task directory on node `{node}`: {e}"))?;
    Ok((dir.path().to_path_buf(), backend))
}

/// Whether the worker's tool calls go through this node to the coordinator: under tool
/// approvals, or with a budget on a CLI that has a hook for it (Claude Code).
fn hooked(assign: &Assignment, backend: &BackendSpec) -> bool {
    assign.approvals
        || (assign.tool_hook && backend.cli == Some(dispatch_core::signals::Cli::Claude))
}

/// Runs an assigned worker: checks it may run here, makes its workspace, writes its task
/// directory, starts it in its own session and supervises it to its end.
async fn run(
    ctx: RunContext,
    assign: Assignment,
    workdir: PathBuf,
    (cancel, notes, drained): (
        Arc<Notify>,
        crate::watched::Notes,
        Arc<std::sync::atomic::AtomicBool>,
    ),
    approvals: Arc<crate::approvals::Pending>,
) -> Result<(), NotStarted> {
    check_signature(&ctx, &assign)?;
    check_roots(&ctx, &assign, &workdir)?;
    let (workdir, changes, branch) = workspace(&ctx, &assign, workdir).await?;
    let (dir, backend) = {
        let (ctx, assign, workdir) = (ctx.clone(), assign.clone(), workdir.clone());
        tokio::task::spawn_blocking(move || prepare(&ctx, &assign, &workdir))
            .await
            .map_err(|e| e.to_string())??
    };
    dispatch_core::fs::private_dir(&ctx.log_dir)
        .map_err(|e| format!("cannot create {}: {e}", ctx.log_dir.display()))?;
    let log = ctx.log_dir.join(format!("{}.log", assign.task));
    let log_file = dispatch_core::fs::private_create(&log)
        .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    // Under approvals (or a budget, on a CLI with a hook) the hook asks through a socket of
    // this run's own, up before the worker.
    let socket = crate::approvals::socket_name(&ctx.run_dir, &assign.task, assign.attempt);
    let hooked = hooked(&assign, &backend);
    let _approval_server = if hooked {
        let server = crate::approvals::serve(
            &socket,
            &assign.task,
            assign.attempt,
            ctx.events.clone(),
            Arc::clone(&approvals),
        )
        .map_err(|e| {
            format!(
                "cannot open the tool-approval socket on node `{}`: {e}",
                ctx.node
            )
        })?;
        Some(AbortOnDrop(server))
    } else {
        None
    };
    let (mut cmd, shown) = worker_command(&ctx, &backend, &assign, &workdir, &dir, &socket);
    cmd.stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);
    let child = {
        // The worker's start: a short span of its own (the run's lasts as long as the worker).
        let _start = tracing::info_span!("agent.start_worker", task_id = %assign.task, backend = %backend.name).entered();
        cmd.spawn()
            .map_err(|e| format!("cannot run `sh` on node `{}`: {e}", ctx.node))?
    };
    let pid = child.id().unwrap_or(0);
    tracing::info!(task = %assign.task, pid, backend = %backend.name, workdir = %workdir.display(), "worker started");
    let attempt = assign.attempt;
    let started = v1::WorkerStarted {
        pid,
        command: format!("{shown} <prompt>"),
        workdir: workdir.display().to_string(),
        branch,
    };
    let _ = ctx
        .events
        .send(event(&assign.task, attempt, Kind::Started(started)))
        .await;
    let record = RunRecord {
        task_id: assign.task.clone(),
        attempt,
        pid,
        start_time: crate::worker_record::start_time(pid).unwrap_or(0),
        task_dir: dir.clone(),
        log: log.clone(),
        changes: changes.clone(),
        stream: backend.stream,
        cli: backend.cli,
        approvals: hooked,
    };
    if let Err(e) = record.save(&ctx.run_dir) {
        tracing::warn!(task = %assign.task, error = %e, "cannot record the worker for re-attaching after an agent restart");
    }
    let initial_plan = assign.plan.into_bytes();
    let w = Watched::new(
        &assign.task,
        workdir_of(&dir),
        log,
        0,
        initial_plan.clone(),
        Arc::clone(&ctx.max_log_bytes),
    )
    .with_notes(notes)
    .with_stream(backend.stream, backend.cli);
    // Codex runs a tool whose hook failed or never loaded (hooks forced off by a managed
    // requirements.toml): a plan this run changed while its hook asked about nothing was
    // changed by a tool nobody approved.
    let hook_guard = (assign.approvals && backend.cli == Some(dispatch_core::signals::Cli::Codex))
        .then(|| Arc::clone(&approvals));
    let after = AfterExit {
        fresh: Some((initial_plan, backend.name)),
        changes,
        drained,
        hook_guard,
    };
    supervise(ctx, w, attempt, Exit::Child(child), pid, cancel, after).await
}

/// A task's own workdir must be under one of the node's workspace roots, when it lists any.
fn check_roots(ctx: &RunContext, assign: &Assignment, workdir: &Path) -> Result<(), String> {
    if assign.workdir.is_none() || ctx.workspace_roots.is_empty() {
        return Ok(());
    }
    let real = std::fs::canonicalize(workdir)
        .map_err(|e| format!("workdir {} on node `{}`: {e}", workdir.display(), ctx.node))?;
    if ctx.workspace_roots.iter().any(|r| real.starts_with(r)) {
        return Ok(());
    }
    let roots: Vec<String> = ctx
        .workspace_roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    Err(format!(
        "workdir {} is not under the workspace roots node `{}` allows ({})",
        real.display(),
        ctx.node,
        roots.join(", ")
    ))
}

/// Where the worker runs, what of it comes home, and its branch: the workdir itself, a
/// worktree of it on `dispatch/<task>`, or a workspace made from the task's repository.
async fn workspace(
    ctx: &RunContext,
    assign: &Assignment,
    workdir: PathBuf,
) -> Result<(PathBuf, Option<crate::changes::Spec>, String), String> {
    let deliver = assign.deliver.unwrap_or(ctx.changes.deliver);
    let title = dispatch_core::Plan::parse(&assign.plan)
        .title()
        .map(str::to_string)
        .unwrap_or_else(|| assign.task.clone());
    let on_node = |e: String| format!("{e} (on node `{}`)", ctx.node);
    match (assign.place(), &assign.repo) {
        (Place::Repo, Some(r)) => {
            let mut checkouts = vec![ctx.default_workdir.clone()];
            checkouts.extend(ctx.workspace_roots.iter().cloned());
            let (cache, spaces, url, commit, task, policy) = (
                ctx.repo_cache.clone(),
                ctx.workspaces.clone(),
                r.url.clone(),
                r.commit.clone(),
                assign.task.clone(),
                Arc::clone(&ctx.repositories),
            );
            let dir = tokio::task::spawn_blocking(move || {
                let dir = crate::worktree::repo_workspace(
                    &checkouts, &cache, &spaces, &policy, &url, &commit, &task,
                )?;
                // The worker's commits land on the task's branch.
                crate::changes::start_branch(&dir, &task)?;
                Ok::<_, String>(dir)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(on_node)?;
            let spec = crate::changes::Spec {
                dir: dir.clone(),
                base: r.commit.clone(),
                root: PathBuf::new(),
                title: title.clone(),
                deliver,
            };
            // A worktree of the workspace when asked, as for a workdir.
            if !assign.worktree {
                return Ok((dir, Some(spec), String::new()));
            }
            worktree_of(ctx, assign, dir, title, deliver)
        }
        (Place::Worktree, _) => worktree_of(ctx, assign, workdir, title, deliver),
        _ => Ok((workdir, None, String::new())),
    }
}

/// A worktree of `workdir`'s repository for the task, on its branch.
fn worktree_of(
    ctx: &RunContext,
    assign: &Assignment,
    workdir: PathBuf,
    title: String,
    deliver: crate::changes::Deliver,
) -> Result<(PathBuf, Option<crate::changes::Spec>, String), String> {
    let on_node = |e: String| format!("{e} (on node `{}`)", ctx.node);
    if !workdir.is_dir() {
        return Err(format!(
            "workdir {} does not exist on node `{}`",
            workdir.display(),
            ctx.node
        ));
    }
    let tree = crate::worktree::ensure(&workdir, &assign.task).map_err(on_node)?;
    let spec = crate::changes::Spec {
        dir: tree.clone(),
        base: String::new(),
        root: crate::worktree::repo_root(&workdir).map_err(on_node)?,
        title,
        deliver,
    };
    Ok((tree, Some(spec), crate::worktree::branch(&assign.task)))
}

/// The worker's command: `sh -c '<backend command> "$@"' dispatch-worker [flags] <prompt>` in
/// its workdir, in its own session, with the worker's environment; and how it is shown.
fn worker_command(
    ctx: &RunContext,
    backend: &BackendSpec,
    assign: &Assignment,
    workdir: &Path,
    dir: &Path,
    socket: &str,
) -> (tokio::process::Command, String) {
    // The prompt is its own argv element ("$@"), never spliced into shell text.
    let mut cmd = tokio::process::Command::new("sh");
    // A worker's environment is the model's: none of the node's own settings and credentials
    // (its token, token file, TLS key, coordinator) reaches it; with `worker_env:` only what
    // the node lists does.
    cmd.env_clear()
        .envs(worker_env(std::env::vars_os(), &ctx.worker_env));
    // Under approvals, Claude Code runs with its permission checks on and a hook that asks
    // this node before every tool call; with a budget only, the hook and its permission mode
    // as without approvals. (The sim worker makes no tool calls: it runs as it always does.)
    let claude = backend.cli == Some(dispatch_core::signals::Cli::Claude);
    let codex = backend.cli == Some(dispatch_core::signals::Cli::Codex) && backend.hooks;
    let approvals = assign.approvals && claude;
    let hook = hooked(assign, backend) && claude;
    let command = if approvals {
        backend
            .command
            .replace(" --dangerously-skip-permissions", "")
    } else {
        backend.command.clone()
    };
    cmd.arg("-c")
        .arg(format!("{command} \"$@\""))
        .arg("dispatch-worker");
    let mut shown = command;
    if hook {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "dispatch-agent".into());
        cmd.arg("--settings")
            .arg(crate::approvals::claude_settings(&exe, socket));
        shown.push_str(" --settings <tool-approval hook>");
    }
    // Codex under approvals: the run's own PreToolUse hook, in force without the trust a
    // person gives a hook in Codex's UI (the node wrote it; nothing of the user's changes).
    if assign.approvals && codex {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "dispatch-agent".into());
        cmd.args(crate::approvals::codex_args(&exe, socket));
        shown.push_str(" --dangerously-bypass-hook-trust -c hooks.PreToolUse=<tool-approval hook>");
    }
    // Codex refuses to run outside a git repository unless told it may.
    if !backend.outside_git.is_empty() && !in_git_repo(workdir) {
        cmd.args(&backend.outside_git);
        shown.push_str(&format!(" {}", backend.outside_git.join(" ")));
    }
    if backend.pass_model
        && let Some(model) = &assign.model
    {
        cmd.arg("--model").arg(model);
        shown.push_str(&format!(" --model {model}"));
    }
    // Claude Code retries a rate limit for minutes by default: it gets the node's limit, so
    // it stops and says why while a fallback can still help.
    if backend.cli == Some(dispatch_core::signals::Cli::Claude) {
        cmd.env("CLAUDE_CODE_MAX_RETRIES", ctx.api_retries.to_string());
    }
    cmd.arg(&assign.prompt)
        .current_dir(workdir)
        .env("DISPATCH_TASK_ID", &assign.task)
        .env("DISPATCH_TASK_DIR", dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    // Its own session and process group: cancel kills the whole tree, and the worker
    // survives the agent.
    dispatch_core::process::in_new_session(cmd.as_std_mut());
    (cmd, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_never_gets_the_nodes_own_variables() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
        };
        let node = vars(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/n"),
            ("DISPATCH_AGENT_TOKEN", "dsp_secret"),
            ("DISPATCH_TOKEN", "dsp_user"),
            ("DISPATCH_AGENT_TOKEN_FILE", "/etc/dispatch/token"),
            ("DISPATCH_AGENT_TLS_KEY", "/etc/dispatch/node.key"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
        ]);
        let names = |v: Vec<(std::ffi::OsString, std::ffi::OsString)>| -> Vec<String> {
            v.into_iter()
                .map(|(k, _)| k.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            names(worker_env(node.clone(), &None)),
            ["PATH", "HOME", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY"]
        );
        let allow = Some(vec![
            "ANTHROPIC_*".to_string(),
            "DISPATCH_TOKEN".to_string(),
        ]);
        assert_eq!(
            names(worker_env(node, &allow)),
            ["PATH", "HOME", "ANTHROPIC_API_KEY"],
            "an allow-list cannot let the node's own variables through"
        );
    }
}
