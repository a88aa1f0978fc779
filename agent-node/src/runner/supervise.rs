//! Supervising a running worker: file notifications wake a scan of its task directory
//! (plan, questions, log), a cancel or a broken rule kills its process tree, and its end is
//! reported with what it did — or as a start failure when it never started.

use super::{NotStarted, RunContext, TaskHandle, event, task_dir};
use crate::watched::{Target, Watched, workdir_of};
use crate::worker_record::RunRecord;
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use nix::sys::signal::Signal;
use notify::Watcher;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How long a cancelled (or faulted) worker gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A worker that fails within this long without touching its plan counts as not started.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// Safety re-scan interval in case a file notification is missed.
const RESCAN: Duration = Duration::from_secs(2);

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

/// What to do when a worker ends, besides reporting its exit.
pub(super) struct AfterExit {
    /// The assigned plan and the backend of a worker this agent started (to recognise a
    /// command that was not found).
    pub(super) fresh: Option<(Vec<u8>, String)>,
    /// Where a worktree or workspace task's changes are, to commit and deliver them.
    pub(super) changes: Option<crate::changes::Spec>,
    /// Set when a cancel stops it because the node drains.
    pub(super) drained: Arc<std::sync::atomic::AtomicBool>,
    /// A worker under tool approvals whose CLI lets a call through when its hook does not
    /// run (Codex): the run's hook calls, to stop it if it acts without asking.
    pub(super) hook_guard: Option<Arc<crate::approvals::Pending>>,
}

/// Why a worker under approvals is stopped: it changed its plan — which only a tool call can
/// do — while its hook had asked about no call at all, so its CLI runs tools without it.
fn unhooked(
    guard: Option<&crate::approvals::Pending>,
    before: &[u8],
    after: &[u8],
) -> Option<String> {
    let guard = guard?;
    (before != after && guard.calls() == 0).then(|| {
        "its CLI ran a tool without dispatch's approval hook (Codex skips a hook that an administrator's requirements.toml turns off, or that fails to start); run the task on claude, or without a policy, or let the node's Codex run hooks".to_string()
    })
}

/// How a supervised worker's end is observed.
pub(super) enum Exit {
    /// Our own child: its exit status is known.
    Child(tokio::process::Child),
    /// A worker of an earlier agent run: only that it ended is known.
    Adopted(dispatch_core::process::ProcessExit),
}

/// Starts supervising a worker left running by an earlier run of this agent.
pub fn reattach(ctx: RunContext, record: RunRecord, log_offset: u64) -> TaskHandle {
    let handle = TaskHandle::new(workdir_of(&record.task_dir), record.attempt);
    let (cancel, notes, drained) = handle.shared();
    let approvals = Arc::clone(&handle.approvals);
    tokio::spawn(async move {
        let exit = Exit::Adopted(dispatch_core::process::ProcessExit::new(record.pid));
        // Its hook asks through the same socket name as before the restart.
        let _approval_server = if record.approvals {
            let socket =
                crate::approvals::socket_name(&ctx.run_dir, &record.task_id, record.attempt);
            match crate::approvals::serve(
                &socket,
                &record.task_id,
                record.attempt,
                ctx.events.clone(),
                approvals,
            ) {
                Ok(s) => Some(super::AbortOnDrop(s)),
                Err(e) => {
                    tracing::warn!(task = %record.task_id, error = %e, "cannot reopen the tool-approval socket: the worker's tool calls will be denied");
                    None
                }
            }
        } else {
            None
        };
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
                // The calls a re-attached run made before the restart are not counted here.
                hook_guard: None,
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

/// How a supervised worker ended.
struct Ended {
    /// Its exit status and signal.
    status: std::io::Result<(Option<i32>, Option<i32>)>,
    /// Its task directory as last read.
    w: Watched,
    /// Cancelled by the coordinator (or a drain).
    cancelled: bool,
    /// The rule its task directory broke, when the agent stopped it for that.
    fault: Option<String>,
    /// The CLI kept retrying its API past the node's limit: stopped, and this is why.
    cli_stop: Option<dispatch_core::signals::Failure>,
}

/// Watches a worker until it exits (reporting plan, questions and logs as they change), kills
/// its process group on cancel or when its task directory breaks a rule, then reports the
/// exit. `fresh` holds the assigned plan and the backend name for a worker this agent started
/// (to recognise a command that was not found).
pub(super) async fn supervise(
    ctx: RunContext,
    w: Watched,
    attempt: u32,
    exit: Exit,
    pid: u32,
    cancel: Arc<Notify>,
    after: AfterExit,
) -> Result<(), NotStarted> {
    let began = std::time::Instant::now();
    let Ended {
        status,
        mut w,
        cancelled,
        mut fault,
        cli_stop,
    } = watch_to_end(
        &ctx,
        w,
        attempt,
        exit,
        pid,
        &cancel,
        after.hook_guard.as_deref(),
    )
    .await;
    if fault.is_none() {
        w.exited = true;
        let before = w.last_plan.clone();
        let (next, f) = scan(&ctx, w, attempt, None).await;
        w = next;
        fault = f.or_else(|| unhooked(after.hook_guard.as_deref(), &before, &w.last_plan));
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
    if let Some((initial_plan, backend)) = &after.fresh
        && !cancelled
        && fault.is_none()
        && let Some(error) = not_started(
            &ctx,
            &w,
            initial_plan,
            backend,
            (exit_code, signal),
            cli.as_ref(),
            began.elapsed(),
        )
    {
        return Err(NotStarted { error, cli });
    }
    let (w, done_marker) = tokio::task::spawn_blocking(move || {
        let done = w.done_marker();
        (w, done)
    })
    .await
    .map_err(|e| e.to_string())?;
    // The work comes home before the exit is reported: an ended task has its changes.
    if let Some(spec) = after.changes
        && fault.is_none()
    {
        send_changes(&ctx, &w.task, attempt, spec).await;
    }
    let exited = exited(
        &ctx,
        &w,
        (exit_code, signal),
        done_marker,
        cancelled,
        fault,
        (after.fresh.is_none(), &after.drained),
        cli.as_ref(),
    );
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

/// The Exited event of a worker: how it ended, its plan as it left it, and who stopped it.
#[allow(clippy::too_many_arguments)]
fn exited(
    ctx: &RunContext,
    w: &Watched,
    (exit_code, signal): (Option<i32>, Option<i32>),
    done_marker: bool,
    cancelled: bool,
    fault: Option<String>,
    (adopted, drained): (bool, &std::sync::atomic::AtomicBool),
    cli: Option<&dispatch_core::signals::Failure>,
) -> v1::WorkerExited {
    v1::WorkerExited {
        exit_code,
        signal,
        markdown: String::from_utf8_lossy(&w.last_plan).into_owned(),
        done_marker,
        cancelled,
        detail: if adopted {
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
        cli: cli.map(dispatch_proto::convert::failure_to_proto),
    }
}

/// The supervision loop: scans the task directory when woken (or every [`RESCAN`]), stops the
/// worker's process tree (SIGTERM, SIGKILL after [`KILL_GRACE`]) on cancel, on a broken rule,
/// or when its CLI retries past the node's limit; returns when the worker exits. Over 80 lines
/// on purpose: one `select!` whose arms share the kill deadline and the three reasons to stop,
/// which a split would pass around as a struct of `&mut`s.
async fn watch_to_end(
    ctx: &RunContext,
    mut w: Watched,
    attempt: u32,
    mut exit: Exit,
    pid: u32,
    cancel: &Notify,
    hook_guard: Option<&crate::approvals::Pending>,
) -> Ended {
    let (wake_tx, mut wake_rx) = mpsc::channel(1);
    let dir = dispatch_core::fs::TaskDir::open(&w.workdir, &w.task, false)
        .map(|d| d.path().to_path_buf())
        .unwrap_or_else(|_| task_dir(&w.workdir, &w.task));
    let ipc = dir.join("ipc");
    let woken = Arc::new(std::sync::Mutex::new(Woken::default()));
    let _watcher = watch(&dir, &ipc, &w.log, Arc::clone(&woken), wake_tx);
    let mut rescan = tokio::time::interval(RESCAN);
    let (mut cancelled, mut fault, mut cli_stop) = (false, None, None);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let task = w.task.clone();
    // Everything the worker started, its own sessions included (found while it lives).
    let tree = std::sync::Mutex::new(crate::process_tree::Tree::of(pid));
    let stop = |why: &str, kill_at: &mut Option<tokio::time::Instant>| {
        if kill_at.is_none() {
            tracing::info!(%task, pid, "{why}: SIGTERM to the worker's process tree");
            tree.lock().unwrap().signal(Signal::SIGTERM);
            *kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
        }
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
                stop("cancelling", &mut kill_at);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                tree.lock().unwrap().signal(Signal::SIGKILL);
                kill_at = None;
            }
        }
        if let Some(targets) = scan_now
            && fault.is_none()
        {
            let before = w.last_plan.clone();
            let (next, f) = scan(ctx, w, attempt, targets).await;
            w = next;
            if let Some(f) = f.or_else(|| unhooked(hook_guard, &before, &w.last_plan)) {
                tracing::warn!(task = %w.task, fault = %f, "the task directory broke a rule; stopping the worker");
                stop("stopping it", &mut kill_at);
                fault = Some(f);
            } else if cli_stop.is_none()
                && let Some(f) = w.signals().and_then(|s| s.stop(ctx.api_retries))
            {
                tracing::warn!(task = %w.task, retries = f.retries, trouble = f.trouble.as_str(), "the worker's CLI keeps retrying its API ({}); stopping it", f.message);
                stop("API retries past the node's limit", &mut kill_at);
                cli_stop = Some(f);
            }
        }
    };
    if cancelled || fault.is_some() || cli_stop.is_some() {
        // Whatever of the tree outlived the worker goes too.
        tree.lock().unwrap().signal(Signal::SIGKILL);
    }
    Ended {
        status,
        w,
        cancelled,
        fault,
        cli_stop,
    }
}

/// Why a worker this agent started did not start, if it did not: it failed without ever
/// touching its plan — a missing CLI (status 127), one that refuses to run (not logged in, a
/// usage limit, an API it cannot reach: whatever the time it took, when its CLI says so), or
/// one that exits at once with an error. Not a resumed plan, though: its worker may fail fast
/// on the next item, having started.
fn not_started(
    ctx: &RunContext,
    w: &Watched,
    initial_plan: &[u8],
    backend: &str,
    (exit_code, signal): (Option<i32>, Option<i32>),
    cli: Option<&dispatch_core::signals::Failure>,
    took: Duration,
) -> Option<String> {
    let stuck = cli.is_some_and(|f| f.trouble.stops_the_cli());
    let untouched = w.last_plan == initial_plan
        && dispatch_core::Plan::parse_bytes(initial_plan).progress().0 == 0;
    if !untouched
        || !(exit_code == Some(127) || (exit_code != Some(0) && (stuck || took < QUICK_EXIT)))
    {
        return None;
    }
    let status = exit_code.map_or_else(
        || format!("signal {}", signal.unwrap_or(0)),
        |c| format!("status {c}"),
    );
    Some(if exit_code == Some(127) {
        format!(
            "the `{backend}` backend command was not found on node `{}` (exit status 127): {}",
            ctx.node,
            cli.map_or_else(|| log_tail(&w.log), |f| f.message.clone())
        )
    } else if let Some(f) = cli {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Codex run under approvals that changes its plan before its hook asked about any call
    /// is stopped; once the hook has asked, plan changes are the worker's approved work; a run
    /// with no guard (Claude, or no approvals) is never stopped for it.
    #[test]
    fn a_plan_changed_by_an_unhooked_tool_stops_the_run() {
        let guard = crate::approvals::Pending::default();
        assert!(unhooked(Some(&guard), b"- [ ] a", b"- [ ] a").is_none());
        let why = unhooked(Some(&guard), b"- [ ] a", b"- [x] a").unwrap();
        assert!(why.contains("without dispatch's approval hook"), "{why}");
        assert!(unhooked(None, b"- [ ] a", b"- [x] a").is_none());
        let _waiting = guard.wait_for_test();
        assert_eq!(guard.calls(), 1);
        assert!(unhooked(Some(&guard), b"- [ ] a", b"- [x] a").is_none());
    }
}
