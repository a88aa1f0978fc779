//! Runs one task: prepares the seed's task directory, spawns the worker in its own session
//! (own process group), and reports plan snapshots, questions, log output and the exit.
//!
//! The worker is untrusted: its task directory is read through [`crate::watched`], off the
//! async runtime; a file that breaks a rule stops the worker and fails the task with the
//! reason. File notifications wake a scan only for writes and renames, never for reads, so a
//! sleeping worker costs its agent nothing.

use crate::backends::{BackendSpec, on_path};
use crate::watched::{Target, Watched, workdir_of};
use crate::worker_record::RunRecord;
use dispatch_core::fs::TaskDir;
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use nix::sys::signal::Signal;
use notify::Watcher;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How long a cancelled (or faulted) worker gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A worker that fails within this long without touching its plan counts as not started.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// Safety re-scan interval in case a file notification is missed.
const RESCAN: Duration = Duration::from_secs(2);
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
fn check_signature(ctx: &RunContext, a: &v1::Assign) -> Result<(), String> {
    if ctx.trusted_keys.is_empty() {
        return Ok(());
    }
    let node = &ctx.node;
    if a.signed_spec.is_empty() {
        return Err(format!(
            "node `{node}` runs only signed tasks and this one is not signed; make a key with `dispatch keys init`, add its public key to the node's trusted_keys, and dispatch again"
        ));
    }
    let spec = dispatch_core::signing::verify(&a.signed_spec, &a.signature, &ctx.trusted_keys)
        .map_err(|e| format!("node `{node}` refused the task: {e}"))?;
    let repo = a.repo.clone().unwrap_or_default();
    dispatch_core::signing::check(
        &spec,
        &dispatch_core::signing::Assigned {
            task_id: &a.task_id,
            attempt: a.attempt.max(1),
            worker_prompt: &a.worker_prompt,
            plan: &a.plan_markdown,
            backend: &a.backend,
            model: &a.model,
            workdir: &a.workdir,
            worktree: a.worktree,
            repo_url: &repo.url,
            commit: &repo.commit,
            node,
            now_ms: now_ms(),
        },
    )
    .map_err(|e| format!("node `{node}` refused the task: {e}"))?;
    ctx.signed_runs
        .start(
            &crate::signed_runs::spec_hash(&a.signed_spec),
            &a.task_id,
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
}

pub use dispatch_core::process::now_ms;

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
pub fn start(ctx: RunContext, assign: v1::Assign) -> TaskHandle {
    let workdir = if assign.workdir.is_empty() {
        ctx.default_workdir.clone()
    } else {
        PathBuf::from(&assign.workdir)
    };
    // A worktree or remote-workspace task runs (and keeps its task directory) in its worktree,
    // made in run().
    let from_repo =
        assign.workdir.is_empty() && assign.repo.as_ref().is_some_and(|r| !r.url.is_empty());
    let cwd = if from_repo {
        ctx.workspaces.join(&assign.task_id)
    } else if assign.worktree {
        crate::worktree::path(&workdir, &assign.task_id).unwrap_or_else(|_| workdir.clone())
    } else {
        workdir.clone()
    };
    let handle = TaskHandle {
        cancel: Arc::new(Notify::new()),
        workdir: cwd,
        attempt: assign.attempt.max(1),
        cancelling: false,
        notes: Default::default(),
        drained: Default::default(),
    };
    let cancel = Arc::clone(&handle.cancel);
    let notes = Arc::clone(&handle.notes);
    let drained = Arc::clone(&handle.drained);
    tokio::spawn(async move {
        let id = assign.task_id.clone();
        let attempt = assign.attempt.max(1);
        let events = ctx.events.clone();
        // This run's span joins the task's trace (the coordinator's assignment span).
        let span = tracing::info_span!("agent.run", task_id = %id, attempt, node = %ctx.node);
        dispatch_telemetry::set_parent(&span, &assign.traceparent);
        let ran = tracing::Instrument::instrument(
            run(ctx, assign, workdir, cancel, notes, drained),
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
    assign: &v1::Assign,
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
    if let Some(program) = &backend.program
        && on_path(program).is_none()
    {
        return Err(format!(
            "`{program}` (backend `{}`) is not on PATH on node `{node}`; install it or fix PATH",
            backend.name
        ));
    }
    // The checkout may carry a `.dispatch/` of its own: nothing in it is followed.
    let dir = TaskDir::open(workdir, &assign.task_id, true)
        .and_then(|d| {
            d.ensure_dir("ipc")?;
            d.write_atomic("plan.md", assign.plan_markdown.as_bytes())?;
            Ok(d)
        })
        .map_err(|e| format!("cannot prepare the task directory on node `{node}`: {e}"))?;
    Ok((dir.path().to_path_buf(), backend))
}

/// Watches the task directory, its ipc/ and the log file; falls back to polling where the
/// filesystem has no inotify.
/// Files notifications named since the last scan, or "look at everything".
#[derive(Default)]
struct Woken {
    targets: std::collections::BTreeSet<Target>,
    everything: bool,
}

/// Names that pile up past this make the next scan a full one.
const MAX_TARGETS: usize = 256;

/// What a notification for `path` asks to look at (None: a file that does not matter, such
/// as a `.tmp` before its rename).
fn target(path: &Path, dir: &Path, ipc: &Path, log: &Path) -> Option<Target> {
    if path == log {
        return Some(Target::Log);
    }
    let parent = path.parent()?;
    let name = path.file_name()?.to_str()?;
    if parent == dir && name == "plan.md" {
        Some(Target::Plan)
    } else if parent == dir && name == "output.md" {
        Some(Target::Output)
    } else if parent == ipc && !name.ends_with(".tmp") && name != ".done" {
        Some(Target::Ipc(name.to_string()))
    } else {
        None
    }
}

fn watch(
    dir: &Path,
    ipc: &Path,
    log: &Path,
    woken: Arc<std::sync::Mutex<Woken>>,
    wake: mpsc::Sender<()>,
) -> Option<Box<dyn Watcher + Send>> {
    use notify::EventKind as E;
    let (d, i, l) = (dir.to_path_buf(), ipc.to_path_buf(), log.to_path_buf());
    // Only writes, creations, removals and renames matter. Opens and reads are ignored: each
    // scan opens these files, and waking on that kept a core busy per sleeping worker. The
    // files an event names are noted, so a scan reads just those.
    let handler = move |res: notify::Result<notify::Event>| {
        let mut w = woken.lock().unwrap();
        match res {
            Ok(ev) if matches!(ev.kind, E::Access(_) | E::Other) => return,
            Ok(ev) if !ev.paths.is_empty() && !ev.need_rescan() => {
                let found: Vec<Target> = ev
                    .paths
                    .iter()
                    .filter_map(|p| target(p, &d, &i, &l))
                    .collect();
                if found.is_empty() {
                    return;
                }
                w.targets.extend(found);
                if w.targets.len() > MAX_TARGETS {
                    w.everything = true;
                }
            }
            _ => w.everything = true,
        }
        drop(w);
        let _ = wake.try_send(());
    };
    let paths = [dir, ipc, log];
    let watch_all = |w: &mut dyn Watcher| {
        paths
            .iter()
            .all(|p| w.watch(p, notify::RecursiveMode::NonRecursive).is_ok())
    };
    if let Ok(mut w) = notify::recommended_watcher(handler.clone())
        && watch_all(&mut w)
    {
        return Some(Box::new(w));
    }
    tracing::info!("inotify unavailable here; polling the task directory every 250 ms");
    let config = notify::Config::default().with_poll_interval(Duration::from_millis(250));
    let mut w = notify::PollWatcher::new(handler, config).ok()?;
    watch_all(&mut w).then(|| Box::new(w) as Box<dyn Watcher + Send>)
}

async fn run(
    ctx: RunContext,
    assign: v1::Assign,
    workdir: PathBuf,
    cancel: Arc<Notify>,
    notes: crate::watched::Notes,
    drained: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), NotStarted> {
    check_signature(&ctx, &assign)?;
    if !assign.workdir.is_empty() && !ctx.workspace_roots.is_empty() {
        let real = std::fs::canonicalize(&workdir)
            .map_err(|e| format!("workdir {} on node `{}`: {e}", workdir.display(), ctx.node))?;
        if !ctx.workspace_roots.iter().any(|r| real.starts_with(r)) {
            let roots: Vec<String> = ctx
                .workspace_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(format!(
                "workdir {} is not under the workspace roots node `{}` allows ({})",
                real.display(),
                ctx.node,
                roots.join(", ")
            )
            .into());
        }
    }
    let deliver = match assign.deliver.as_str() {
        "" => ctx.changes.deliver,
        d => crate::changes::Deliver::parse(d)?,
    };
    let title = dispatch_core::Plan::parse(&assign.plan_markdown)
        .title()
        .map(str::to_string)
        .unwrap_or_else(|| assign.task_id.clone());
    let mut changes = None;
    let workdir = match &assign.repo {
        Some(r) if assign.workdir.is_empty() && !r.url.is_empty() => {
            let mut checkouts = vec![ctx.default_workdir.clone()];
            checkouts.extend(ctx.workspace_roots.iter().cloned());
            let (cache, spaces, url, commit, task, policy) = (
                ctx.repo_cache.clone(),
                ctx.workspaces.clone(),
                r.url.clone(),
                r.commit.clone(),
                assign.task_id.clone(),
                Arc::clone(&ctx.repositories),
            );
            let base = commit.clone();
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
            .map_err(|e| format!("{e} (on node `{}`)", ctx.node))?;
            changes = Some(crate::changes::Spec {
                dir: dir.clone(),
                base,
                root: PathBuf::new(),
                title: title.clone(),
                deliver,
            });
            dir
        }
        _ => workdir,
    };
    let branch = if assign.worktree {
        crate::worktree::branch(&assign.task_id)
    } else {
        String::new()
    };
    let workdir = if assign.worktree {
        if !workdir.is_dir() {
            return Err(format!(
                "workdir {} does not exist on node `{}`",
                workdir.display(),
                ctx.node
            )
            .into());
        }
        let tree = crate::worktree::ensure(&workdir, &assign.task_id)
            .map_err(|e| format!("{e} (on node `{}`)", ctx.node))?;
        changes = Some(crate::changes::Spec {
            dir: tree.clone(),
            base: String::new(),
            root: crate::worktree::repo_root(&workdir)
                .map_err(|e| format!("{e} (on node `{}`)", ctx.node))?,
            title: title.clone(),
            deliver,
        });
        tree
    } else {
        workdir
    };
    let (dir, backend) = {
        let (ctx, assign, workdir) = (ctx.clone(), assign.clone(), workdir.clone());
        tokio::task::spawn_blocking(move || prepare(&ctx, &assign, &workdir))
            .await
            .map_err(|e| e.to_string())??
    };
    dispatch_core::fs::private_dir(&ctx.log_dir)
        .map_err(|e| format!("cannot create {}: {e}", ctx.log_dir.display()))?;
    let log = ctx.log_dir.join(format!("{}.log", assign.task_id));
    let log_file = dispatch_core::fs::private_create(&log)
        .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;

    // The prompt is its own argv element ("$@"), never spliced into shell text.
    let mut cmd = tokio::process::Command::new("sh");
    // A worker's environment is the model's: none of the node's own settings and credentials
    // (its token, token file, TLS key, coordinator) reaches it; with `worker_env:` only what
    // the node lists does.
    cmd.env_clear()
        .envs(worker_env(std::env::vars_os(), &ctx.worker_env));
    cmd.arg("-c")
        .arg(format!("{} \"$@\"", backend.command))
        .arg("dispatch-worker");
    let mut shown = backend.command.clone();
    // Codex refuses to run outside a git repository unless told it may.
    if !backend.outside_git.is_empty() && !in_git_repo(&workdir) {
        cmd.args(&backend.outside_git);
        shown.push_str(&format!(" {}", backend.outside_git.join(" ")));
    }
    if backend.pass_model && !assign.model.is_empty() {
        cmd.arg("--model").arg(&assign.model);
        shown.push_str(&format!(" --model {}", assign.model));
    }
    // Claude Code retries a rate limit for minutes by default: it gets the node's limit, so
    // it stops and says why while a fallback can still help.
    if backend.cli == Some(dispatch_core::signals::Cli::Claude) {
        cmd.env("CLAUDE_CODE_MAX_RETRIES", ctx.api_retries.to_string());
    }
    cmd.arg(&assign.worker_prompt)
        .current_dir(&workdir)
        .env("DISPATCH_TASK_ID", &assign.task_id)
        .env("DISPATCH_TASK_DIR", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(false);
    // Its own session and process group: cancel kills the whole tree, and the worker
    // survives the agent.
    dispatch_core::process::in_new_session(cmd.as_std_mut());
    let child = {
        // The worker's start: a short span of its own (the run's lasts as long as the worker).
        let _start = tracing::info_span!("agent.start_worker", task_id = %assign.task_id, backend = %backend.name).entered();
        cmd.spawn()
            .map_err(|e| format!("cannot run `sh` on node `{}`: {e}", ctx.node))?
    };
    let pid = child.id().unwrap_or(0);
    tracing::info!(task = %assign.task_id, pid, backend = %backend.name, workdir = %workdir.display(), "worker started");
    let attempt = assign.attempt.max(1);
    let _ = ctx
        .events
        .send(event(
            &assign.task_id,
            attempt,
            Kind::Started(v1::WorkerStarted {
                pid,
                command: format!("{shown} <prompt>"),
                workdir: workdir.display().to_string(),
                branch,
            }),
        ))
        .await;

    let record = RunRecord {
        task_id: assign.task_id.clone(),
        attempt: assign.attempt.max(1),
        pid,
        start_time: crate::worker_record::start_time(pid).unwrap_or(0),
        task_dir: dir.clone(),
        log: log.clone(),
        changes: changes.clone(),
        stream: backend.stream,
        cli: backend.cli,
    };
    if let Err(e) = record.save(&ctx.run_dir) {
        tracing::warn!(task = %assign.task_id, error = %e, "cannot record the worker for re-attaching after an agent restart");
    }
    let w = Watched::new(
        &assign.task_id,
        workdir_of(&dir),
        log,
        0,
        assign.plan_markdown.clone().into_bytes(),
        Arc::clone(&ctx.max_log_bytes),
    )
    .with_notes(notes)
    .with_stream(backend.stream, backend.cli);
    let initial_plan = assign.plan_markdown.into_bytes();
    supervise(
        ctx,
        w,
        attempt,
        Exit::Child(child),
        pid,
        cancel,
        AfterExit {
            fresh: Some((initial_plan, backend.name)),
            changes,
            drained,
        },
    )
    .await
}

/// What to do when a worker ends, besides reporting its exit.
struct AfterExit {
    /// The assigned plan and the backend of a worker this agent started (to recognise a
    /// command that was not found).
    fresh: Option<(Vec<u8>, String)>,
    /// Where a worktree or workspace task's changes are, to commit and deliver them.
    changes: Option<crate::changes::Spec>,
    /// Set when a cancel stops it because the node drains.
    drained: Arc<std::sync::atomic::AtomicBool>,
}

/// How a supervised worker's end is observed.
enum Exit {
    /// Our own child: its exit status is known.
    Child(tokio::process::Child),
    /// A worker of an earlier agent run: only that it ended is known.
    Adopted(crate::worker_record::ProcessExit),
}

/// Starts supervising a worker left running by an earlier run of this agent.
pub fn reattach(ctx: RunContext, record: RunRecord, log_offset: u64) -> TaskHandle {
    let handle = TaskHandle {
        cancel: Arc::new(Notify::new()),
        workdir: workdir_of(&record.task_dir),
        attempt: record.attempt,
        cancelling: false,
        notes: Default::default(),
        drained: Default::default(),
    };
    let cancel = Arc::clone(&handle.cancel);
    let notes = Arc::clone(&handle.notes);
    let drained = Arc::clone(&handle.drained);
    tokio::spawn(async move {
        let exit = Exit::Adopted(crate::worker_record::ProcessExit::new(record.pid));
        // An empty last plan makes the first scan report the plan as it is now.
        let w = Watched::new(
            &record.task_id,
            workdir_of(&record.task_dir),
            record.log.clone(),
            log_offset,
            Vec::new(),
            Arc::clone(&ctx.max_log_bytes),
        )
        .with_notes(notes)
        .with_stream(record.stream, record.cli);
        tracing::info!(task = %record.task_id, pid = record.pid, "re-attached to a running worker");
        let id = record.task_id.clone();
        let changes = record.changes.clone();
        if let Err(e) = supervise(
            ctx,
            w,
            record.attempt,
            exit,
            record.pid,
            cancel,
            AfterExit {
                fresh: None,
                changes,
                drained,
            },
        )
        .await
        {
            tracing::warn!(task = %id, error = %e.error, "lost the re-attached worker");
        }
    });
    handle
}

/// Bundle bytes per event.
const BUNDLE_CHUNK: usize = 1024 * 1024;
/// The diff kept for `dispatch diff`.
const MAX_DIFF: usize = dispatch_core::limits::MAX_DIFF_BYTES;

/// Commits and delivers a worktree or workspace task's work (off the runtime), then reports
/// it: a ChangesReady and, for a bundle, its bytes in chunks.
async fn send_changes(ctx: &RunContext, task: &str, attempt: u32, spec: crate::changes::Spec) {
    let (id, policy, repos) = (
        task.to_string(),
        Arc::clone(&ctx.changes),
        Arc::clone(&ctx.repositories),
    );
    let c = match tokio::task::spawn_blocking(move || {
        crate::changes::collect(&spec, &id, &policy, &repos, MAX_DIFF)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(task, error = %e, "collecting the task's changes failed");
            return;
        }
    };
    if !c.error.is_empty() {
        tracing::warn!(task, error = %c.error, "the task's changes did not come home");
    } else if c.commits > 0 {
        tracing::info!(task, commits = c.commits, files = c.files, delivery = %c.delivery, "changes committed on {}", c.branch);
    }
    let bundle = c.bundle;
    let ready = Kind::Changes(v1::ChangesReady {
        branch: c.branch,
        base: c.base,
        head: c.head,
        commits: c.commits,
        files: c.files,
        insertions: c.insertions,
        deletions: c.deletions,
        diff: c.diff,
        diff_truncated: c.diff_truncated,
        delivery: c.delivery,
        pushed_to: c.pushed_to,
        bundle_bytes: bundle.len() as u64,
        error: c.error,
    });
    let _ = ctx.events.send(event(task, attempt, ready)).await;
    for (i, chunk) in bundle.chunks(BUNDLE_CHUNK).enumerate() {
        let piece = Kind::Bundle(v1::BundleChunk {
            offset: (i * BUNDLE_CHUNK) as u64,
            data: chunk.to_vec(),
        });
        let _ = ctx.events.send(event(task, attempt, piece)).await;
    }
}

/// Scans the task directory (all of it, or only `targets`) off the runtime and sends what
/// changed; returns the watcher and the fault, if the directory broke a rule.
async fn scan(
    ctx: &RunContext,
    mut w: Watched,
    attempt: u32,
    targets: Option<Vec<Target>>,
) -> (Watched, Option<String>) {
    let (w, events, fault) = match tokio::task::spawn_blocking(move || {
        let (events, fault) = match targets {
            Some(t) => w.scan_targets(&t),
            None => w.scan(),
        };
        (w, events, fault)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => panic!("a task-directory scan panicked: {e}"),
    };
    for kind in events {
        let _ = ctx.events.send(event(&w.task, attempt, kind)).await;
    }
    (w, fault)
}

/// `rate limit, after 3 API retries, exit status 1`: what kind of trouble, for a reason.
fn trouble_note(f: &dispatch_core::signals::Failure, status: &str) -> String {
    if f.stopped {
        f.note()
    } else {
        format!("{}, exit {status}", f.note())
    }
}

/// The last lines of a worker's output (read from the end: the log may be large).
fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let _ = f.take(8192).read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    last[last.len().saturating_sub(3)..].join(" | ")
}

/// Watches a worker until it exits (reporting plan, questions and logs as they change), kills
/// its process group on cancel or when its task directory breaks a rule, then reports the
/// exit. `fresh` holds the assigned plan and the backend name for a worker this agent started
/// (to recognise a command that was not found).
async fn supervise(
    ctx: RunContext,
    mut w: Watched,
    attempt: u32,
    mut exit: Exit,
    pid: u32,
    cancel: Arc<Notify>,
    after: AfterExit,
) -> Result<(), NotStarted> {
    let AfterExit {
        fresh,
        changes,
        drained,
    } = after;
    let began = std::time::Instant::now();
    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    let dir = dispatch_core::fs::TaskDir::open(&w.workdir, &w.task, false)
        .map(|d| d.path().to_path_buf())
        .unwrap_or_else(|_| task_dir(&w.workdir, &w.task));
    let ipc = dir.join("ipc");
    let woken = Arc::new(std::sync::Mutex::new(Woken::default()));
    let _watcher = watch(&dir, &ipc, &w.log, Arc::clone(&woken), wake_tx);
    let mut rescan = tokio::time::interval(RESCAN);
    let mut cancelled = false;
    let mut fault: Option<String> = None;
    // The CLI kept retrying its API past the node's limit: stopped, and this is why.
    let mut cli_stop: Option<dispatch_core::signals::Failure> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let task = w.task.clone();
    // Everything the worker started, its own sessions included (found while it lives).
    let tree = std::sync::Mutex::new(crate::process_tree::Tree::of(pid));
    let stop = |why: &str, kill_at: &mut Option<tokio::time::Instant>| {
        tracing::info!(%task, pid, "{why}: SIGTERM to the worker's process tree");
        tree.lock().unwrap().signal(Signal::SIGTERM);
        *kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
    };
    let status = loop {
        let ended = async {
            match &mut exit {
                Exit::Child(child) => child.wait().await.map(|s| (s.code(), s.signal())),
                Exit::Adopted(p) => {
                    p.wait().await;
                    Ok((None, None))
                }
            }
        };
        // None: nothing to look at; Some(None): everything; Some(Some(t)): only `t`.
        let mut scan_now: Option<Option<Vec<Target>>> = None;
        tokio::select! {
            status = ended => break status,
            _ = wake_rx.recv() => {
                let taken = std::mem::take(&mut *woken.lock().unwrap());
                scan_now = Some((!taken.everything).then(|| taken.targets.into_iter().collect()));
            }
            // The safety net for a missed notification.
            _ = rescan.tick() => scan_now = Some(None),
            _ = cancel.notified(), if !cancelled => {
                cancelled = true;
                if kill_at.is_none() {
                    stop("cancelling", &mut kill_at);
                }
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                tree.lock().unwrap().signal(Signal::SIGKILL);
                kill_at = None;
            }
        }
        if let Some(targets) = scan_now
            && fault.is_none()
        {
            let (next, f) = scan(&ctx, w, attempt, targets).await;
            w = next;
            if let Some(f) = f {
                tracing::warn!(task = %w.task, fault = %f, "the task directory broke a rule; stopping the worker");
                if kill_at.is_none() {
                    stop("stopping it", &mut kill_at);
                }
                fault = Some(f);
            } else if cli_stop.is_none()
                && let Some(f) = w.signals().and_then(|s| s.stop(ctx.api_retries))
            {
                tracing::warn!(task = %w.task, retries = f.retries, trouble = f.trouble.as_str(), "the worker's CLI keeps retrying its API ({}); stopping it", f.message);
                if kill_at.is_none() {
                    stop("API retries past the node's limit", &mut kill_at);
                }
                cli_stop = Some(f);
            }
        }
    };
    if cancelled || fault.is_some() || cli_stop.is_some() {
        // Whatever of the tree outlived the worker goes too.
        tree.lock().unwrap().signal(Signal::SIGKILL);
    }
    if fault.is_none() {
        w.exited = true;
        let (next, f) = scan(&ctx, w, attempt, None).await;
        w = next;
        fault = f;
    }
    RunRecord::remove(&ctx.run_dir, &w.task);
    let (exit_code, signal) = status.map_err(|e| format!("lost track of the worker: {e}"))?;
    // What the CLI said went wrong (never for a worker the node stopped for its own reasons).
    let cli = if cancelled || fault.is_some() {
        None
    } else {
        cli_stop
            .clone()
            .or_else(|| w.signals().and_then(|s| s.failure(exit_code)))
    };
    // A worker that fails without ever touching its plan did not start: a missing CLI
    // (status 127), one that refuses to run (not logged in, a usage limit, an API it cannot
    // reach: whatever the time it took, when its CLI says so), or one that exits at once
    // with an error. Not a resumed plan, though: its worker may fail fast on the next item,
    // having started.
    let stuck = cli.as_ref().is_some_and(|f| f.trouble.stops_the_cli());
    if let Some((initial_plan, backend)) = &fresh
        && !cancelled
        && fault.is_none()
        && w.last_plan == *initial_plan
        && dispatch_core::Plan::parse_bytes(initial_plan).progress().0 == 0
        && (exit_code == Some(127)
            || (exit_code != Some(0) && (stuck || began.elapsed() < QUICK_EXIT)))
    {
        let status = exit_code.map_or_else(
            || format!("signal {}", signal.unwrap_or(0)),
            |c| format!("status {c}"),
        );
        let error = if exit_code == Some(127) {
            format!(
                "the `{backend}` backend command was not found on node `{}` (exit status 127): {}",
                ctx.node,
                cli.as_ref()
                    .map_or_else(|| log_tail(&w.log), |f| f.message.clone())
            )
        } else if let Some(f) = &cli {
            format!(
                "`{backend}` said: \"{}\" ({})",
                f.message,
                trouble_note(f, &status)
            )
        } else if w.signals().is_some() {
            format!(
                "the `{backend}` worker exited at once ({status}) without touching its plan, and printed no error line"
            )
        } else {
            format!(
                "the `{backend}` worker exited at once ({status}) without touching its plan; its last output: {}",
                log_tail(&w.log)
            )
        };
        return Err(NotStarted { error, cli });
    }
    let (w, done_marker) = tokio::task::spawn_blocking(move || {
        let done = w.done_marker();
        (w, done)
    })
    .await
    .map_err(|e| e.to_string())?;
    // The work comes home before the exit is reported: an ended task has its changes.
    if let Some(spec) = changes
        && fault.is_none()
    {
        send_changes(&ctx, &w.task, attempt, spec).await;
    }
    let exited = v1::WorkerExited {
        exit_code,
        signal,
        markdown: String::from_utf8_lossy(&w.last_plan).into_owned(),
        done_marker,
        cancelled,
        detail: if fresh.is_none() {
            format!(
                "the agent on node `{}` restarted while the worker ran, so its exit status is unknown",
                ctx.node
            )
        } else {
            String::new()
        },
        fault: fault
            .map(|f| format!("stopped by the agent on node `{}`: {f}", ctx.node))
            .unwrap_or_default(),
        drained: cancelled && drained.load(std::sync::atomic::Ordering::SeqCst),
        cli: cli.as_ref().map(dispatch_proto::convert::failure_to_proto),
    };
    tracing::info!(task = %w.task, ?exit_code, ?signal, cancelled, fault = %exited.fault, "worker exited");
    if done_marker && exited.fault.is_empty() && !cancelled {
        ctx.signed_runs.completed(&w.task);
    }
    let _ = ctx
        .events
        .send(event(&w.task, attempt, Kind::Exited(exited)))
        .await;
    Ok(())
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
