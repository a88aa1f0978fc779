//! `dispatch "<prompt>"` / `dispatch run`: validate, build and submit a task.

use crate::args::RunArgs;
use crate::client::{Target, connect};
use crate::cmd::watch::follow;
use crate::render;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::{TaskState, limits, task_id};
use dispatch_proto::v1;
use std::io::{IsTerminal, Read};

pub(super) fn read_source(what: &str, path: &str) -> Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} from {path}"))
    }
}

/// Validates a run's arguments without contacting anyone, then builds the request.
pub(super) fn build_request(args: &RunArgs, local: bool) -> Result<v1::SubmitRequest> {
    let mut prompt = args.prompt.join(" ");
    if prompt == "-" {
        prompt = read_source("prompt", "-")?;
    }
    limits::check_len("prompt", &prompt, limits::MAX_PROMPT_BYTES)?;
    if let Some(id) = &args.id {
        task_id::validate(id)?;
    }
    if let Some(after) = &args.after {
        task_id::validate(after).map_err(|e| anyhow!("--after: {e}"))?;
    }
    let plan_markdown = match &args.plan {
        Some(p) => {
            let md = read_source("plan", p)?;
            limits::check_len("plan", &md, limits::MAX_PLAN_BYTES)?;
            // An empty file and a file without items are the same mistake.
            if dispatch_core::Plan::parse(&md).items().is_empty() {
                bail!("the plan in {p} has no checklist items; write items as `- [ ] step` lines");
            }
            md
        }
        None => String::new(),
    };
    if prompt.trim().is_empty() && plan_markdown.trim().is_empty() && args.steps.is_empty() {
        bail!("the prompt is empty: say what the worker should do");
    }
    let workdir = match &args.workdir {
        Some(w) if local => std::fs::canonicalize(w)
            .with_context(|| format!("--workdir {}", w.display()))?
            .display()
            .to_string(),
        Some(w) if w.is_absolute() => w.display().to_string(),
        Some(w) => bail!(
            "--workdir {} is relative; with a remote coordinator give the absolute path on the node",
            w.display()
        ),
        None if local => match &args.repo_dir {
            Some(d) => std::fs::canonicalize(d)
                .with_context(|| format!("the repository {}", d.display()))?,
            None => std::env::current_dir().context("cannot read the current directory")?,
        }
        .display()
        .to_string(),
        None => String::new(),
    };
    Ok(v1::SubmitRequest {
        id: args.id.clone().unwrap_or_default(),
        prompt,
        steps: args.steps.clone(),
        plan_markdown,
        remote: args.remote.clone().unwrap_or_default(),
        backend: args.backend.clone().unwrap_or_default(),
        model: args.model.clone().unwrap_or_default(),
        after: args.after.clone().unwrap_or_default(),
        workdir,
        priority: args.priority,
        title: args.title.clone().unwrap_or_default(),
        worktree: args.worktree,
        alias_prompt: String::new(),
        pool: args.pool.clone().unwrap_or_default().into_iter().collect(),
        // With a remote coordinator and no --workdir, the node works on this repository at
        // this commit.
        repo: if local || args.workdir.is_some() {
            None
        } else {
            current_repo(args.repo_dir.as_deref())?
        },
        // The same id on every attempt: a retried submit never makes a second task.
        request_id: crate::retry::request_id(),
        signed_spec: Vec::new(),
        signature: Vec::new(),
        deliver: args.deliver.clone().unwrap_or_default(),
        fallback: Vec::new(),
        fallback_on: Vec::new(),
        budget: args.budget.clone().unwrap_or_default(),
    })
}

/// `git ARGS` in `dir` (None: the current directory): its output, None on failure or when
/// empty.
pub(super) fn git_out(dir: Option<&std::path::Path>, args: &[&str]) -> Option<String> {
    dispatch_core::git::Git::local()
        .run(dir.unwrap_or(std::path::Path::new(".")), args)
        .ok()
        .filter(|s| !s.is_empty())
}

/// The repository in `dir` (None: the one `dispatch` runs in): origin URL, branch, commit
/// (None outside a git checkout with an origin). Refused when the commit is on no branch of
/// origin this checkout knows of: the node fetches from origin and could not find it — said
/// here, before anything is stored.
pub(super) fn current_repo(dir: Option<&std::path::Path>) -> Result<Option<v1::Repo>> {
    if let Some(d) = dir
        && !d.is_dir()
    {
        bail!("the repository {} is not a directory", d.display());
    }
    let git_out = |args: &[&str]| git_out(dir, args);
    // Credentials in the origin URL never leave this machine: the node clones with its own.
    let Some(origin) = git_out(&["remote", "get-url", "origin"]) else {
        return Ok(None);
    };
    let url = dispatch_core::repo_url::redact(&origin);
    let Some(commit) = git_out(&["rev-parse", "HEAD"]) else {
        return Ok(None);
    };
    let branch = git_out(&["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default();
    // What origin has, as this checkout last heard (a push updates it): no remote branch at
    // all (never fetched) cannot tell, and is let through.
    let knows_origin = git_out(&[
        "for-each-ref",
        "--count=1",
        "--format=%(refname)",
        "refs/remotes/origin",
    ])
    .is_some();
    let pushed = git_out(&[
        "for-each-ref",
        "--count=1",
        "--format=%(refname)",
        "--contains",
        &commit,
        "refs/remotes/origin",
    ])
    .is_some();
    if knows_origin && !pushed {
        bail!(
            "commit {} ({}) is on no branch of origin ({url}), so the node, which fetches from origin, cannot check it out. Push it first (`git push`), or give --workdir DIR to run in a directory on the node instead",
            &commit[..commit.len().min(12)],
            if branch.is_empty() || branch == "HEAD" {
                "a detached HEAD".to_string()
            } else {
                format!("HEAD of `{branch}`")
            }
        );
    }
    if git_out(&["status", "--porcelain"]).is_some() {
        eprintln!(
            "note: the node works on commit {} of {url}; your uncommitted changes stay here (commit and push them first if it needs them)",
            &commit[..commit.len().min(12)]
        );
    }
    Ok(Some(v1::Repo {
        url,
        branch,
        commit,
    }))
}

/// The seed's one-liner: "Dispatched `id` using opus on build-box. Plan: 1) … 2) …".
pub(super) fn dispatched_line(t: &v1::Task) -> String {
    let using = [t.model.as_str(), t.backend.as_str()]
        .into_iter()
        .find(|s| !s.is_empty());
    use dispatch_core::text::printable_line as l;
    let mut line = format!("Dispatched `{}`", t.id);
    if let Some(u) = using {
        line.push_str(&format!(" using {}", l(u)));
    }
    match t.task_state() {
        TaskState::Queued if !t.after.is_empty() => {
            line.push_str(&format!("; it starts when `{}` completes", t.after))
        }
        TaskState::Queued if !t.waiting.is_empty() => line.push_str(&format!(
            "; queued (#{}): {}",
            t.queue_position.max(1),
            l(&t.waiting)
        )),
        TaskState::Queued => line.push_str(&format!(
            "; queued (#{}) until a node has a free slot",
            t.queue_position.max(1)
        )),
        _ if !t.node.is_empty() => line.push_str(&format!(" on {}", l(&t.node))),
        _ => {}
    }
    line.push_str(". Plan:");
    if let Some(p) = &t.plan {
        for (i, item) in p.items.iter().enumerate() {
            line.push_str(&format!(" {}) {}", i + 1, l(&item.text)));
        }
    }
    line
}

/// A submitted task, and what the CLI or a tool tells about it.
pub(super) struct Sent {
    /// The task as the coordinator stored it.
    pub(super) task: v1::Task,
    /// The connection it went through.
    pub(super) target: Target,
    /// The default model, when it was used because nothing named one.
    pub(super) default_used: Option<String>,
}

/// Validates, resolves the model (asking on a terminal unless `args.yes`), signs and submits
/// a task; prints nothing on stdout. `plan`: a whole plan.md given as text (the MCP tool's),
/// replacing `args.plan`. None when the user declined the default model.
pub(super) async fn send(
    g: &Settings,
    args: &RunArgs,
    plan: Option<String>,
) -> Result<Option<Sent>> {
    let local = g.coordinator.is_none();
    let mut req = build_request(args, local)?;
    if let Some(plan) = plan {
        limits::check_len("plan", &plan, limits::MAX_PLAN_BYTES)?;
        req.plan_markdown = plan;
    }
    let mut target = connect(g).await?;
    let mut resolved = None;
    if args.backend.is_none() {
        match crate::cmd::config::resolve_for_submit(
            g,
            &mut target,
            &mut req,
            args.alias.as_deref(),
            args.yes,
            !args.no_fallback,
        )
        .await?
        {
            Some(r) => resolved = Some(r),
            None => return Ok(None),
        }
    }
    // With --backend the config was not read for the model: read it for the fallback.
    if args.backend.is_some()
        && !args.no_fallback
        && let Some(cfg) = g.config()?
    {
        (req.fallback, req.fallback_on) = crate::cmd::config::fallback_targets(&cfg)?;
    }
    let client = target.client.clone();
    // With a signing key the task is signed: its id, plan and worker prompt are fixed here.
    let key = crate::cmd::keys::load(g)?;
    let derived_id = req.id.is_empty();
    let mut attempt = 1;
    // The task's trace starts here (exported only with OTEL_EXPORTER_OTLP_ENDPOINT set).
    let span = tracing::info_span!("dispatch.submit", task_id = tracing::field::Empty);
    let task = loop {
        if let Some(k) = &key {
            crate::cmd::keys::sign(k, &mut req, derived_id.then_some(attempt))?;
        }
        let sent = crate::retry::idempotent(
            "submit",
            client.clone(),
            || crate::retry::reconnect(g),
            |mut c| {
                let mut r = tonic::Request::new(req.clone());
                dispatch_telemetry::inject(&span, r.metadata_mut());
                async move { c.submit(r).await }
            },
        )
        .await;
        match sent {
            // A derived id taken already: a signed task picks the next one itself.
            Err(s)
                if key.is_some()
                    && derived_id
                    && attempt < 50
                    && s.code() == tonic::Code::AlreadyExists =>
            {
                attempt += 1;
                req.request_id = crate::retry::request_id();
            }
            r => break r?,
        }
    }
    .into_inner()
    .task
    .ok_or_else(|| anyhow!("the coordinator returned no task"))?;
    span.record("task_id", task.id.as_str());
    drop(span);
    let (new_model, default_used) = match resolved {
        Some(r) => (r.new_model, r.default_used),
        None => (None, None),
    };
    // Only an accepted task's model goes into the config.
    if let Some(m) = new_model {
        m.save(g)?;
    }
    Ok(Some(Sent {
        task,
        target,
        default_used,
    }))
}

pub(super) async fn submit(g: &Settings, args: RunArgs) -> Result<crate::exit::Exit> {
    let Some(Sent {
        task, mut target, ..
    }) = send(g, &args, None).await?
    else {
        println!("Not dispatched.");
        return Ok(crate::exit::Exit::Failure);
    };
    if g.json && !args.wait {
        println!("{}", render::task_json(&task));
        return Ok(crate::exit::Exit::Success);
    }
    if !g.json {
        println!("{}", dispatched_line(&task));
        if !args.wait && std::io::stdout().is_terminal() {
            println!("Follow it with `dispatch watch {}`.", task.id);
        }
    }
    if args.wait {
        return follow(g, &mut target, &[task.id], g.json).await;
    }
    Ok(crate::exit::Exit::Success)
}
