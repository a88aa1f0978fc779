//! What each command does.

use crate::args::{Cli, Command, DaemonAction, Global, NodesAction, RunArgs};
use crate::client::{Target, connect};
use crate::render::{self, fancy};
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::{TaskState, limits, task_id};
use dispatch_proto::v1;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};

/// Runs the parsed command line; returns the exit status.
pub(crate) async fn run(cli: Cli) -> Result<u8> {
    let mut g = cli.global;
    // The config's `coordinator:` applies when neither --coordinator nor DISPATCH_COORDINATOR
    // is given (a broken config is reported by the commands that read it).
    let file = crate::config_cmd::path(&g)
        .ok()
        .and_then(|p| dispatch_core::config::Config::load(&p).ok().flatten());
    if g.coordinator.is_none() {
        g.coordinator = file.as_ref().and_then(|c| c.coordinator.clone());
    }
    // The token: a file named on the command line, the environment, the config.
    g.token = match &g.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read --token-file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("DISPATCH_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| file.as_ref().and_then(|c| c.token.clone())),
    };
    if g.ca.is_none() {
        g.ca = file
            .as_ref()
            .and_then(|c| c.tls.as_ref())
            .map(std::path::PathBuf::from);
    }
    let default_remote = file.and_then(|c| c.remote);
    let with_remote = |mut a: RunArgs| {
        if a.remote.is_none() && g.coordinator.is_some() {
            a.remote = default_remote.clone();
        }
        a
    };
    match cli.command {
        None => {
            if cli.run.prompt.is_empty() && cli.run.plan.is_none() && cli.run.steps.is_empty() {
                bail!("say what to dispatch: dispatch \"<prompt>\" (see `dispatch --help`)");
            }
            if let Some(meant) = mistyped_command(&cli.run) {
                eprintln!(
                    "error: `{word}` is not a dispatch command; did you mean `dispatch {meant}`?\n(To dispatch it as a prompt: `dispatch run {word}`.)",
                    word = cli.run.prompt[0]
                );
                return Ok(crate::exit::Exit::Usage.into());
            }
            submit(&g, with_remote(cli.run)).await
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "dispatch", &mut out);
            print_all(&out)
        }
        Some(Command::Man) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("cannot render the manual page")?;
            print_all(&out)
        }
        Some(Command::Run(args)) => submit(&g, with_remote(*args)).await,
        Some(Command::Status { id, limit, all }) => status(&g, id, limit, all).await,
        Some(Command::Watch { id: Some(id), .. }) => {
            task_id::validate(&id)?;
            let mut t = connect(&g).await?;
            follow(&g, &mut t, &[id], g.json).await
        }
        Some(Command::Watch { id: None, .. }) => watch_all(&g).await,
        Some(Command::Logs {
            id,
            follow,
            activity,
        }) => logs(&g, &id, follow, activity).await,
        Some(Command::Output { id, follow }) => output(&g, &id, follow).await,
        Some(Command::Diff { id }) => crate::changes::diff(&g, &id).await,
        Some(Command::Fetch { id }) => crate::changes::fetch_cmd(&g, &id).await,
        Some(Command::Apply { id, cherry_pick }) => {
            crate::changes::apply(&g, &id, cherry_pick).await
        }
        Some(Command::Cancel { id }) => cancel(&g, &id).await,
        Some(Command::Nodes { action: None }) => nodes(&g).await,
        Some(Command::Nodes {
            action: Some(NodesAction::Drain { name, timeout }),
        }) => cordon(&g, &name, true, timeout).await,
        Some(Command::Nodes {
            action: Some(NodesAction::Uncordon { name }),
        }) => cordon(&g, &name, false, None).await,
        Some(Command::Config { action }) => crate::config_cmd::run(&g, action).await,
        Some(Command::Clean { id }) => clean(&g, &id).await,
        Some(Command::Retry {
            id,
            model,
            backend,
            remote,
        }) => retry(&g, &id, model, backend, remote).await,
        Some(Command::Answer { id, seq, text }) => crate::ask::answer(&g, &id, seq, text).await,
        Some(Command::Note { id, text }) => crate::ask::note(&g, &id, &text.join(" ")).await,
        Some(Command::Inbox { list }) => crate::ask::inbox(&g, list).await,
        Some(Command::Wait { ids, timeout }) => crate::ask::wait(&g, &ids, timeout).await,
        Some(Command::Demo) => demo(&g).await,
        Some(Command::Doctor) => crate::doctor::doctor(&g).await,
        Some(Command::Dashboard { no_open }) => crate::daemon::dashboard(&g, no_open).await,
        Some(Command::Token { action }) => crate::admin::token(&g, action).await,
        Some(Command::Keys { action }) => crate::keys::run(&g, action),
        Some(Command::Audit { task, limit }) => crate::admin::audit(&g, task, limit).await,
        Some(Command::Daemon {
            action: DaemonAction::Status,
        }) => crate::daemon::status(&g).await,
        Some(Command::Daemon {
            action: DaemonAction::Stop { force },
        }) => crate::daemon::stop(&g, force).await,
        Some(Command::Daemon {
            action: DaemonAction::Run { .. },
        })
        | Some(Command::SimWorker { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// `dispatch watch --all`: every active task in one live view, and each task submitted
/// meanwhile, until all of them have ended.
async fn watch_all(g: &Global) -> Result<u8> {
    let mut t = connect(g).await?;
    let active = [
        v1::TaskState::Queued,
        v1::TaskState::Assigned,
        v1::TaskState::Running,
        v1::TaskState::Waiting,
        v1::TaskState::Unreachable,
    ];
    let page = t
        .client
        .list_tasks(v1::ListTasksRequest {
            states: active.iter().map(|s| *s as i32).collect(),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut ids: Vec<String> = page.tasks.into_iter().map(|t| t.id).collect();
    ids.reverse();
    if ids.is_empty() && !g.json {
        println!("No task is active; waiting for one (Ctrl-C to stop).");
    }
    follow_tasks(g, &mut t, ids, true, g.json).await
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(crate::exit::Exit::Success.into()),
    }
}

/// The command a lone word was probably meant as (`dispatch stauts`): a subcommand within two
/// edits of it (one, for words under five letters). A prompt of one word that is not close to
/// any command is dispatched as usual.
fn mistyped_command(run: &RunArgs) -> Option<String> {
    let [word] = run.prompt.as_slice() else {
        return None;
    };
    if !run.steps.is_empty() || run.plan.is_some() || word.len() < 3 {
        return None;
    }
    if !word.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return None;
    }
    let word = word.to_ascii_lowercase();
    let most = if word.len() < 5 { 1 } else { 2 };
    <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .map(|name| (edit_distance(&word, &name), name))
        .filter(|(d, _)| *d <= most)
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance (with adjacent swaps counting one), over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn read_source(what: &str, path: &str) -> Result<String> {
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
fn build_request(args: &RunArgs, local: bool) -> Result<v1::SubmitRequest> {
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
        None if local => std::env::current_dir()
            .context("cannot read the current directory")?
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
            current_repo()
        },
        // The same id on every attempt: a retried submit never makes a second task.
        request_id: crate::retry::request_id(),
        signed_spec: Vec::new(),
        signature: Vec::new(),
        deliver: args.deliver.clone().unwrap_or_default(),
        fallback: Vec::new(),
        fallback_on: Vec::new(),
    })
}

fn git_out(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The repository `dispatch` runs in: origin URL, branch, commit.
fn current_repo() -> Option<v1::Repo> {
    // Credentials in the origin URL never leave this machine: the node clones with its own.
    let url = dispatch_core::repo_url::redact(&git_out(&["remote", "get-url", "origin"])?);
    let commit = git_out(&["rev-parse", "HEAD"])?;
    let branch = git_out(&["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default();
    if git_out(&["status", "--porcelain"]).is_some() {
        eprintln!(
            "note: the node works on commit {} of {url}; your uncommitted changes stay here (commit and push them first if it needs them)",
            &commit[..commit.len().min(12)]
        );
    }
    Some(v1::Repo {
        url,
        branch,
        commit,
    })
}

/// The seed's one-liner: "Dispatched `id` using opus on build-box. Plan: 1) … 2) …".
fn dispatched_line(t: &v1::Task) -> String {
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

async fn submit(g: &Global, args: RunArgs) -> Result<u8> {
    let local = g.coordinator.is_none();
    let mut req = build_request(&args, local)?;
    let mut target = connect(g).await?;
    let mut new_model = None;
    if args.backend.is_none() {
        match crate::config_cmd::resolve_for_submit(
            g,
            &mut target,
            &mut req,
            args.alias.as_deref(),
            args.yes,
            !args.no_fallback,
        )
        .await?
        {
            Some(m) => new_model = m,
            None => {
                println!("Not dispatched.");
                return Ok(crate::exit::Exit::Failure.into());
            }
        }
    }
    // With --backend the config was not read for the model: read it for the fallback.
    if args.backend.is_some()
        && !args.no_fallback
        && let Some(cfg) = crate::config_cmd::load(g)?
    {
        (req.fallback, req.fallback_on) = crate::config_cmd::fallback_targets(&cfg)?;
    }
    let client = target.client.clone();
    // With a signing key the task is signed: its id, plan and worker prompt are fixed here.
    let key = crate::keys::load(g)?;
    let derived_id = req.id.is_empty();
    let mut attempt = 1;
    // The task's trace starts here (exported only with OTEL_EXPORTER_OTLP_ENDPOINT set).
    let span = tracing::info_span!("dispatch.submit", task_id = tracing::field::Empty);
    let task = loop {
        if let Some(k) = &key {
            crate::keys::sign(k, &mut req, derived_id.then_some(attempt))?;
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
    // Only an accepted task's model goes into the config.
    if let Some(m) = new_model {
        m.save(g)?;
    }
    if g.json && !args.wait {
        println!("{}", render::task_json(&task));
        return Ok(crate::exit::Exit::Success.into());
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
    Ok(crate::exit::Exit::Success.into())
}

/// Tasks newest first, page by page, until `limit` of them (0: all) are read; with the number
/// of tasks that match in all.
pub(crate) async fn list_tasks(
    client: &mut crate::client::Client,
    states: Vec<i32>,
    limit: u32,
) -> Result<(Vec<v1::Task>, u64)> {
    let mut tasks = Vec::new();
    let mut total = 0;
    let mut token = String::new();
    loop {
        let want = if limit == 0 {
            1000
        } else {
            (limit as usize - tasks.len()).min(1000) as u32
        };
        let page = client
            .list_tasks(v1::ListTasksRequest {
                states: states.clone(),
                limit: want,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        if token.is_empty() {
            total = page.total;
        }
        tasks.extend(page.tasks);
        token = page.next_page_token;
        if token.is_empty() || (limit > 0 && tasks.len() >= limit as usize) {
            return Ok((tasks, total));
        }
    }
}

async fn status(g: &Global, id: Option<String>, limit: u32, all: bool) -> Result<u8> {
    if let Some(id) = &id {
        task_id::validate(id)?;
    }
    let mut t = connect(g).await?;
    match id {
        Some(id) => {
            let task = t
                .client
                .get_task(v1::GetTaskRequest { id })
                .await?
                .into_inner();
            if g.json {
                println!("{}", render::task_json(&task));
            } else {
                for line in render::task_detail(&task, fancy()) {
                    println!("{line}");
                }
            }
        }
        None => {
            let (mut tasks, total) =
                list_tasks(&mut t.client, vec![], if all { 0 } else { limit.max(1) }).await?;
            // Oldest first, the newest at the bottom where the eye ends.
            tasks.reverse();
            if g.json {
                println!(
                    "{}",
                    serde_json::Value::Array(tasks.iter().map(render::task_json).collect())
                );
            } else if tasks.is_empty() {
                println!("no tasks yet; dispatch one with `dispatch \"<prompt>\"`");
            } else {
                println!("{:<28} {:<22} {:>5}  TITLE", "ID", "STATE", "DONE");
                for task in &tasks {
                    println!("{}", render::task_row(task));
                }
                if (tasks.len() as u64) < total {
                    println!(
                        "(the {} most recent of {total} tasks; `dispatch status --all` lists every one)",
                        tasks.len()
                    );
                }
            }
        }
    }
    Ok(crate::exit::Exit::Success.into())
}

/// Shows `ids` live until every one has ended; returns the watch exit status (the worst).
pub(crate) async fn follow(
    g: &Global,
    target: &mut Target,
    ids: &[String],
    json: bool,
) -> Result<u8> {
    follow_tasks(g, target, ids.to_vec(), false, json).await
}

/// [`follow`]; with `grow`, a task submitted meanwhile joins the view (`watch --all`).
async fn follow_tasks(
    g: &Global,
    target: &mut Target,
    mut ids: Vec<String>,
    grow: bool,
    json: bool,
) -> Result<u8> {
    let one = if ids.len() == 1 && !grow {
        ids[0].clone()
    } else {
        String::new()
    };
    let mut watching = crate::watching::Watching::start(target, one).await?;
    let mut tasks: BTreeMap<String, v1::Task> = BTreeMap::new();
    for id in &ids {
        let t = target
            .client
            .get_task(v1::GetTaskRequest { id: id.clone() })
            .await?
            .into_inner();
        tasks.insert(id.clone(), t);
    }
    let mut view = LiveView::new(json);
    view.show(&ids, &tasks, None);
    while (grow && tasks.is_empty()) || !tasks.values().all(|t| t.task_state().is_terminal()) {
        let ev = match watching.next(g, target, &mut tasks).await? {
            crate::watching::Next::Event(ev) => ev,
            crate::watching::Next::Refreshed => {
                view.show(&ids, &tasks, None);
                continue;
            }
        };
        let Some(id) = ev.task.as_ref().map(|t| t.id.clone()) else {
            continue;
        };
        if grow
            && !tasks.contains_key(&id)
            && let Some(t) = dispatch_proto::convert::apply_watch_event(None, &ev)
            && !t.task_state().is_terminal()
        {
            ids.push(id.clone());
            tasks.insert(id.clone(), t);
            view.show(&ids, &tasks, Some(&id));
            continue;
        }
        let Some(old) = tasks.get(&id) else {
            continue;
        };
        let Some(t) = dispatch_proto::convert::apply_watch_event(Some(old), &ev) else {
            continue;
        };
        // Never go back to an older view (a snapshot can race a change).
        if !crate::watching::newer(old, &t) {
            continue;
        }
        let changed = t.id.clone();
        tasks.insert(t.id.clone(), t);
        view.show(&ids, &tasks, Some(&changed));
    }
    view.finish(&ids, &tasks);
    Ok(tasks
        .values()
        .map(|t| render::exit_code_for(t.task_state()))
        .max()
        .unwrap_or(0))
}

/// Live rendering: redrawn in place on a terminal, one line per change otherwise, JSON lines
/// with --json.
struct LiveView {
    json: bool,
    fancy: bool,
    drawn: usize,
    last_rows: BTreeMap<String, String>,
}

impl LiveView {
    fn new(json: bool) -> Self {
        LiveView {
            json,
            fancy: !json && fancy() && std::io::stdout().is_terminal(),
            drawn: 0,
            last_rows: BTreeMap::new(),
        }
    }

    fn show(&mut self, ids: &[String], tasks: &BTreeMap<String, v1::Task>, changed: Option<&str>) {
        let mut out = std::io::stdout().lock();
        if self.json {
            for id in ids {
                if changed.is_none_or(|c| c == id) {
                    let _ = writeln!(out, "{}", render::task_json(&tasks[id]));
                }
            }
        } else if self.fancy {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            }
            let lines: Vec<String> = ids
                .iter()
                .flat_map(|id| render::task_detail(&tasks[id], true))
                .collect();
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
            self.drawn = lines.len();
        } else {
            for id in ids {
                let t = &tasks[id];
                let current = t
                    .plan
                    .as_ref()
                    .and_then(|p| {
                        p.items.iter().find(|i| {
                            dispatch_proto::convert::item_status_from_proto(i.status)
                                != dispatch_core::ItemStatus::Done
                        })
                    })
                    .map(|i| dispatch_core::text::printable_line(&i.text).into_owned())
                    .unwrap_or_default();
                let row = format!(
                    "{}: {} {} {}",
                    t.id,
                    render::whereabouts(t),
                    render::progress(t),
                    current
                );
                if self.last_rows.get(id) != Some(&row) {
                    let _ = writeln!(out, "{row}");
                    self.last_rows.insert(id.clone(), row);
                }
            }
        }
        let _ = out.flush();
    }

    fn finish(&mut self, ids: &[String], tasks: &BTreeMap<String, v1::Task>) {
        if self.json || self.fancy {
            return;
        }
        for id in ids {
            for line in render::task_detail(&tasks[id], false) {
                println!("{line}");
            }
        }
    }
}

async fn logs(g: &Global, id: &str, follow: bool, activity: bool) -> Result<u8> {
    task_id::validate(id)?;
    let mut t = connect(g).await?;
    let mut stream = t
        .client
        .logs(v1::LogsRequest {
            id: id.to_string(),
            follow,
            activity,
        })
        .await?
        .into_inner();
    // Piped: exactly the bytes the worker wrote. On a terminal: its colours, but no escape
    // sequence that could set the reader's clipboard, title or cursor.
    let terminal = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow!(render::status_text(&s)))?
    {
        if terminal {
            out.write_all(&dispatch_core::text::terminal_output(&chunk.data))?;
        } else {
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
    }
    Ok(crate::exit::Exit::Success.into())
}

async fn output(g: &Global, id: &str, follow: bool) -> Result<u8> {
    task_id::validate(id)?;
    let mut t = connect(g).await?;
    let mut stream = t
        .client
        .get_output(v1::GetOutputRequest {
            id: id.to_string(),
            follow,
        })
        .await?
        .into_inner();
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0;
    while let Some(o) = stream
        .message()
        .await
        .map_err(|s| anyhow!(render::status_text(&s)))?
    {
        if g.json {
            println!(
                "{}",
                serde_json::json!({"task": id, "markdown": o.markdown, "bytes": o.bytes, "truncated": o.truncated, "node": o.node, "path": o.path})
            );
        } else {
            let mut out = std::io::stdout().lock();
            if shown > 0 {
                writeln!(
                    out,
                    "\n--- output.md rewritten ({}) ---",
                    dispatch_core::fs::human_bytes(o.bytes)
                )?;
            }
            // It is the worker's text: on a terminal no escape sequence takes effect.
            if terminal {
                out.write_all(dispatch_core::text::printable(&o.markdown).as_bytes())?;
            } else {
                out.write_all(o.markdown.as_bytes())?;
            }
            if !o.markdown.ends_with('\n') {
                writeln!(out)?;
            }
            out.flush()?;
            if o.truncated {
                eprintln!(
                    "(output.md is {} on node `{}`; the coordinator keeps its first {}. The whole file is at {} there.)",
                    dispatch_core::fs::human_bytes(o.bytes),
                    dispatch_core::text::printable_line(&o.node),
                    dispatch_core::fs::human_bytes(dispatch_core::limits::MAX_OUTPUT_BYTES as u64),
                    dispatch_core::text::printable_line(&o.path)
                );
            }
        }
        shown += 1;
    }
    if shown == 0 {
        bail!(
            "`{id}` has no output.md yet: the worker writes it for the plan's last item (`dispatch watch {id}` shows how far it is)"
        );
    }
    Ok(crate::exit::Exit::Success.into())
}

async fn cancel(g: &Global, id: &str) -> Result<u8> {
    task_id::validate(id)?;
    let mut t = connect(g).await?;
    let task = t
        .client
        .cancel(v1::CancelRequest { id: id.to_string() })
        .await?
        .into_inner();
    render::report(
        g.json,
        &task,
        format!(
            "Cancelled `{}`: {}",
            task.id,
            dispatch_core::text::printable(&task.reason)
        ),
    );
    Ok(crate::exit::Exit::Success.into())
}

async fn retry(
    g: &Global,
    id: &str,
    model: Option<String>,
    backend: Option<String>,
    remote: Option<String>,
) -> Result<u8> {
    task_id::validate(id)?;
    let mut t = connect(g).await?;
    let req = v1::RetryRequest {
        id: id.into(),
        model: model.unwrap_or_default(),
        backend: backend.unwrap_or_default(),
        remote: remote.unwrap_or_default(),
    };
    let task = t.client.retry(req).await?.into_inner();
    render::report(
        g.json,
        &task,
        format!(
            "Retrying: {}",
            dispatched_line(&task).trim_start_matches("Dispatched ")
        ),
    );
    Ok(crate::exit::Exit::Success.into())
}

async fn clean(g: &Global, id: &str) -> Result<u8> {
    task_id::validate(id)?;
    let mut t = connect(g).await?;
    let task = t
        .client
        .clean(v1::CleanRequest { id: id.into() })
        .await?
        .into_inner();
    render::report(
        g.json,
        &task,
        format!(
            "Removed the worktree of `{}` on {}; branch `{}` keeps its work.",
            task.id, task.node, task.branch
        ),
    );
    Ok(crate::exit::Exit::Success.into())
}

async fn cordon(
    g: &Global,
    name: &str,
    draining: bool,
    timeout: Option<std::time::Duration>,
) -> Result<u8> {
    limits::check_name("node name", name)?;
    let mut t = connect(g).await?;
    let n = t
        .client
        .set_node_draining(v1::SetNodeDrainingRequest {
            name: name.to_string(),
            draining,
            stop_after_ms: timeout.map_or(0, |t| t.as_millis().max(1) as u64),
        })
        .await?
        .into_inner();
    if g.json {
        println!("{}", render::node_json(&n));
    } else if let (true, Some(t)) = (draining, timeout) {
        println!(
            "Node `{}` is draining: no new task goes there; its {} running task{} get {} to finish, then the rest are stopped (lost, retryable). `dispatch nodes uncordon {}` undoes it.",
            n.name,
            n.running,
            if n.running == 1 { "" } else { "s" },
            dispatch_core::duration::format(t),
            n.name
        );
    } else if draining {
        println!(
            "Node `{}` is cordoned: no new task goes there; its {} running task{} go on. `dispatch nodes uncordon {}` undoes it.",
            n.name,
            n.running,
            if n.running == 1 { "" } else { "s" },
            n.name
        );
    } else {
        println!("Node `{}` takes tasks again.", n.name);
    }
    Ok(crate::exit::Exit::Success.into())
}

async fn nodes(g: &Global) -> Result<u8> {
    let mut t = connect(g).await?;
    let nodes = t
        .client
        .list_nodes(v1::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    if g.json {
        println!(
            "{}",
            serde_json::Value::Array(nodes.iter().map(render::node_json).collect())
        );
        return Ok(crate::exit::Exit::Success.into());
    }
    if nodes.is_empty() {
        println!(
            "no node has connected to {} yet; start one with `dispatch-agent --coordinator {} --name NAME`",
            t.url, t.url
        );
        return Ok(crate::exit::Exit::Success.into());
    }
    println!(
        "{:<20} {:<10} {:>7}  {:<28} {:<20} LAST HEARD FROM",
        "NAME", "STATUS", "RUNNING", "BACKENDS", "LABELS"
    );
    for n in &nodes {
        // `cursor(12)`: a backend and how many models it lists.
        let backends: Vec<String> = n
            .backends
            .iter()
            .map(|b| {
                if b.models.is_empty() {
                    b.name.clone()
                } else {
                    format!("{}({})", b.name, b.models.len())
                }
            })
            .collect();
        let mut labels: Vec<String> = n
            .labels
            .iter()
            .map(|(k, v)| dispatch_core::text::printable_line(&format!("{k}={v}")).into_owned())
            .collect();
        labels.sort();
        println!(
            "{:<20} {:<10} {:>7}  {:<28} {:<20} {}",
            n.name,
            match (n.connected, n.draining) {
                (true, true) => "draining",
                (true, false) => "connected",
                (false, _) => "offline",
            },
            format!("{}/{}", n.running, n.capacity),
            backends.join(","),
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            render::ago(n.last_seen_ms)
        );
    }
    Ok(crate::exit::Exit::Success.into())
}

async fn demo(g: &Global) -> Result<u8> {
    let mut target = connect(g).await?;
    let workdir = if target.local {
        let dir = crate::client::home(g)?.join("demo");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        dir.display().to_string()
    } else {
        String::new()
    };
    let steps = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let plans = [
        (
            "Demo: security review",
            steps(&[
                "Scan for hardcoded secrets (sleep 700ms)",
                "Review auth logic (sleep 900ms)",
                "Check dependencies (sleep 600ms)",
            ]),
        ),
        (
            "Demo: update the README",
            steps(&[
                "Outline the new sections (sleep 800ms)",
                "Draft the quick start (sleep 1s)",
            ]),
        ),
        (
            "Demo: add tests after the README",
            steps(&[
                "Write tests for the examples (sleep 600ms)",
                "Run them (sleep 500ms)",
            ]),
        ),
    ];
    let mut ids: Vec<String> = Vec::new();
    println!(
        "Dispatching {} sim tasks to {}…",
        plans.len(),
        if target.local {
            "the local daemon".to_string()
        } else {
            target.url.clone()
        }
    );
    for (i, (prompt, steps)) in plans.into_iter().enumerate() {
        let req = v1::SubmitRequest {
            prompt: prompt.to_string(),
            steps,
            backend: dispatch_core::backend::SIM.into(),
            workdir: workdir.clone(),
            after: if i == 2 {
                ids[1].clone()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let task = target
            .client
            .submit(req)
            .await?
            .into_inner()
            .task
            .ok_or_else(|| anyhow!("the coordinator returned no task"))?;
        println!("{}", dispatched_line(&task));
        ids.push(task.id);
    }
    println!();
    let code = follow(g, &mut target, &ids, g.json).await?;
    if !g.json {
        println!();
        if code == 0 {
            println!("All {} demo tasks completed.", ids.len());
        }
        if !workdir.is_empty() {
            println!("Their plans and output.md files are under {workdir}/.dispatch/tasks/");
        }
        println!(
            "Try `dispatch status`, `dispatch logs {}` or `dispatch nodes`.",
            ids[0]
        );
    }
    Ok(code)
}
