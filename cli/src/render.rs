//! Human and JSON output.

use dispatch_core::text::{printable, printable_line};
use dispatch_core::{ItemStatus, TaskState};
use dispatch_proto::convert::item_status_from_proto;
use dispatch_proto::v1;
use serde_json::{Value, json};
use std::io::IsTerminal;

/// The message of an error, with gRPC statuses shown as their message (not their debug form).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return status_text(s);
    }
    format!("{e:#}")
}

/// Set when the command talks to a coordinator over plain `http://`: a connection cut at once
/// there is most likely a TLS port, and the error says so.
pub(crate) static PLAIN_HTTP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A gRPC status as a user-facing sentence.
pub(crate) fn status_text(s: &tonic::Status) -> String {
    let text = status_sentence(s);
    let cut = matches!(
        s.code(),
        tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Unavailable
            | tonic::Code::Internal
    ) && [
        "h2 protocol error",
        "operation was canceled",
        "connection reset",
        "broken pipe",
        "transport error",
    ]
    .iter()
    .any(|m| s.message().contains(m));
    match PLAIN_HTTP.get() {
        Some(url) if cut => format!(
            "{text}\nThe connection to {url} was cut. If the coordinator serves TLS, its URL starts with https:// (and --ca names its CA)"
        ),
        _ => text,
    }
}

fn status_sentence(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable if s.message().is_empty() || s.message().contains("transport") => {
            format!("the coordinator is unreachable ({})", s.message())
        }
        // An error may quote what a worker or another user wrote.
        _ => printable(s.message()).into_owned(),
    }
}

/// True when colour and cursor movement are wanted on stdout.
/// `--color`: `auto`, `always` or `never` (set once at start).
pub(crate) static COLOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Whether to colour output: `--color always`/`never`, else only on a terminal, unless
/// NO_COLOR is set or TERM is dumb.
pub(crate) fn fancy() -> bool {
    match COLOR.get().map(String::as_str) {
        Some("always") => true,
        Some("never") => false,
        _ => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none()
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}

fn paint(code: &str, s: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub(crate) use dispatch_core::duration::human_secs;

/// Age of a timestamp in ms, as `5s ago`.
pub(crate) fn ago(ms: i64) -> String {
    dispatch_core::duration::ago(ms, dispatch_coordinator::now_ms())
}

/// A task as the stable JSON object of `--json`.
pub(crate) fn task_json(t: &v1::Task) -> Value {
    let items: Vec<Value> = t
        .plan
        .as_ref()
        .map(|p| {
            p.items
                .iter()
                .map(|i| json!({"text": i.text, "status": item_status_from_proto(i.status).as_str(), "note": i.note}))
                .collect()
        })
        .unwrap_or_default();
    let questions: Vec<Value> = t
        .questions
        .iter()
        .map(|q| json!({"seq": q.seq, "text": q.text, "answer": q.answer, "kind": q.kind}))
        .collect();
    let budget = t.budget.as_ref().map(|b| json!({"usd_micros": b.usd_micros, "tokens": b.tokens, "text": budget_of(b).to_string(), "step": t.budget_step.as_ref().map(|s| budget_of(s).to_string())}));
    let spend = t
        .spend
        .as_ref()
        .map(|s| json!({"usd_micros": s.usd_micros, "tokens": s.tokens, "estimated": s.estimated}));
    let mut v = json!({
        "id": t.id,
        "state": t.task_state().as_str(),
        "title": t.title,
        "owner": t.owner,
        "summary": t.summary,
        "signer": t.signer,
        "output": (t.output_bytes > 0).then(|| json!({"bytes": t.output_bytes, "truncated": t.output_truncated})),
        "usage": t.usage.as_ref().map(|u| json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens, "cost_usd": u.cost_known.then_some(u.cost_usd), "turns": u.turns, "model": u.model, "unknown_events": u.unknown_events, "garbled_lines": u.garbled_lines})),
        "activity": t.activity,
        "fallback": t.fallback,
        "trouble": t.trouble,
        "limit_until_ms": (t.limit_until_ms > 0).then_some(t.limit_until_ms),
        "changes": t.changes.as_ref().map(|c| json!({"branch": c.branch, "base": c.base, "head": c.head, "commits": c.commits, "files": c.files, "insertions": c.insertions, "deletions": c.deletions, "delivery": c.delivery, "pushed_to": c.pushed_to, "bundle_bytes": c.bundle_bytes, "error": c.error})),
        "node": t.node,
        "remote": t.remote,
        "backend": t.backend,
        "model": t.model,
        "workdir": t.workdir,
        "repository": t.repo.as_ref().map(|r| json!({"url": r.url, "branch": r.branch, "commit": r.commit})),
        "after": t.after,
        "priority": t.priority,
        "queue_position": t.queue_position,
        "waiting": t.waiting,
        "reason": t.reason,
        "exit_code": t.exit_code,
        "created_at_ms": t.created_at_ms,
        "updated_at_ms": t.updated_at_ms,
        "started_at_ms": t.started_at_ms,
        "ended_at_ms": t.ended_at_ms,
        "pool": t.pool.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "worktree": t.worktree,
        "branch": t.branch,
        "cleaned": t.cleaned,
        "attempt": t.attempt,
        "items": items,
        "questions": questions,
        "notes": t.notes.iter().map(|n| json!({"text": n.text, "author": n.author, "at_ms": n.at_ms})).collect::<Vec<_>>(),
    });
    v["budget"] = json!(budget);
    v["spend"] = json!(spend);
    v
}

/// Prints a task after a command changed it: its JSON object with --json, else `line`.
pub(crate) fn report(json: bool, task: &v1::Task, line: String) {
    if json {
        println!("{}", task_json(task));
    } else {
        println!("{line}");
    }
}

/// A node as the stable JSON object of `nodes --json`.
pub(crate) fn node_json(n: &v1::Node) -> Value {
    json!({
        "name": n.name,
        "labels": n.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "backends": n.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        "models": n.backends.iter().map(|b| (b.name.clone(), b.models.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "backend_caps": n.backends.iter().filter(|b| b.max_tasks > 0).map(|b| (b.name.clone(), b.max_tasks)).collect::<std::collections::BTreeMap<_, _>>(),
        "backend_versions": n.backends.iter().filter(|b| !b.version.is_empty()).map(|b| (b.name.clone(), b.version.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "backend_errors": n.backends.iter().filter(|b| !b.error.is_empty()).map(|b| (b.name.clone(), b.error.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "running": n.running,
        "capacity": n.capacity,
        "connected": n.connected,
        "draining": n.draining,
        "cordoned": n.cordoned,
        "ephemeral": n.ephemeral,
        "last_seen_ms": n.last_seen_ms,
        "hostname": n.hostname,
        "version": n.version,
        "session_address": n.session_address,
        "session_started_ms": n.session_started_ms,
        "epoch": n.epoch,
    })
}

fn state_colour(s: TaskState) -> &'static str {
    match s {
        TaskState::Completed => "32",
        TaskState::Failed | TaskState::Lost => "31",
        TaskState::Blocked | TaskState::Waiting | TaskState::Unreachable => "33",
        TaskState::Cancelled => "90",
        _ => "36",
    }
}

/// `running 2/4` etc.
pub(crate) fn progress(t: &v1::Task) -> String {
    let (done, total) = t.plan.as_ref().map_or((0, 0), |p| {
        (
            p.items
                .iter()
                .filter(|i| item_status_from_proto(i.status) == ItemStatus::Done)
                .count(),
            p.items.len(),
        )
    });
    format!("{done}/{total}")
}

/// Where a task is, in a few words: `running on build-box`, `queued (#2)`, `queued (#1): node
/// `box` is cordoned; …`.
pub(crate) fn whereabouts(t: &v1::Task) -> String {
    let s = t.task_state();
    match s {
        TaskState::Queued if !t.after.is_empty() => {
            format!("queued (waits for `{}`)", printable_line(&t.after))
        }
        TaskState::Queued if !t.waiting.is_empty() => format!(
            "queued (#{}): {}",
            t.queue_position.max(1),
            printable_line(&t.waiting)
        ),
        TaskState::Queued if t.queue_position > 0 => format!("queued (#{})", t.queue_position),
        TaskState::Queued => "queued".into(),
        _ if !t.node.is_empty() => format!("{s} on {}", printable_line(&t.node)),
        _ => s.to_string(),
    }
}

/// The checklist of a task as lines (with markers in colour when `fancy`).
pub(crate) fn checklist(t: &v1::Task, fancy: bool) -> Vec<String> {
    let mut out = Vec::new();
    let Some(plan) = &t.plan else { return out };
    let first_open = plan
        .items
        .iter()
        .position(|i| item_status_from_proto(i.status) != ItemStatus::Done);
    let running = matches!(t.task_state(), TaskState::Running | TaskState::Waiting);
    for (n, item) in plan.items.iter().enumerate() {
        let indent = "  ".repeat(item.depth as usize + 1);
        let marker = match item_status_from_proto(item.status) {
            ItemStatus::Done => paint("32", "[x]", fancy),
            ItemStatus::Error => paint("31", "[!]", fancy),
            ItemStatus::Blocked => paint("33", "[?]", fancy),
            ItemStatus::Pending if running && Some(n) == first_open => paint("36", "[>]", fancy),
            ItemStatus::Pending => "[ ]".to_string(),
        };
        out.push(format!("{indent}{marker} {}", printable_line(&item.text)));
        for line in item.note.lines() {
            out.push(format!(
                "{indent}    {}",
                paint("90", &printable_line(line), fancy)
            ));
        }
    }
    out
}

fn budget_of(b: &v1::Budget) -> dispatch_core::budget::Budget {
    dispatch_proto::convert::budget_from_proto(b)
}

/// `spend: $0.42 (estimated) of $5.00 budget` (or what it spent, with no budget).
pub(crate) fn spend_line(t: &v1::Task) -> Option<String> {
    let spent = dispatch_proto::convert::spend_from_proto(t.spend.as_ref());
    match &t.budget {
        Some(b) => {
            let b = budget_of(b);
            Some(format!(
                "budget: {}{}",
                b.against(&spent),
                if b.reached_by(&spent) {
                    " — reached"
                } else {
                    ""
                }
            ))
        }
        None => t
            .spend
            .as_ref()
            .map(|_| format!("spent: {}", spent.describe())),
    }
}

/// The detailed view of one task.
pub(crate) fn task_detail(t: &v1::Task, fancy: bool) -> Vec<String> {
    let s = t.task_state();
    let mut out = Vec::new();
    let mut head = format!(
        "{} — {}",
        paint("1", &t.id, fancy),
        paint(state_colour(s), &whereabouts(t), fancy)
    );
    // The model the CLI says it ran, next to the one asked for when they differ.
    let ran = t
        .usage
        .as_ref()
        .map(|u| u.model.as_str())
        .filter(|m| !m.is_empty() && *m != t.model);
    let asked = match (t.model.as_str(), ran) {
        ("", _) => String::new(),
        (m, Some(_)) => format!("asked {m}"),
        (m, None) => m.to_string(),
    };
    let ran = ran.map(|m| format!("ran {m}")).unwrap_or_default();
    let runs_with: Vec<String> = [t.backend.as_str(), asked.as_str(), ran.as_str()]
        .into_iter()
        .filter(|x| !x.is_empty())
        .map(|x| printable_line(x).into_owned())
        .collect();
    if !runs_with.is_empty() {
        head.push_str(&format!(" ({})", runs_with.join(", ")));
    }
    out.push(head);
    if t.summary {
        out.push(format!("  {}", hidden(t)));
    } else if !t.title.is_empty() {
        out.push(format!("  {}", printable_line(&t.title)));
    }
    if !t.fallback.is_empty() {
        out.push(format!("  fallback: {}", printable_line(&t.fallback)));
    }
    if let Some(u) = &t.usage {
        let u = dispatch_proto::convert::usage_from_proto(u);
        out.push(format!("  usage: {}", printable_line(&u.summary())));
    }
    if let Some(line) = spend_line(t) {
        out.push(format!("  {line}"));
    }
    if !t.activity.is_empty() && !t.task_state().is_terminal() {
        out.push(format!(
            "  doing: {} — `dispatch logs {} --activity`",
            printable_line(&t.activity),
            t.id
        ));
    }
    if t.output_bytes > 0 {
        out.push(format!(
            "  output.md: {}{} — `dispatch output {}`",
            dispatch_core::fs::human_bytes(t.output_bytes),
            if t.output_truncated {
                " (the coordinator keeps its first 1 MiB)"
            } else {
                ""
            },
            t.id
        ));
    }
    if let Some(c) = &t.changes {
        if c.commits == 0 && c.error.is_empty() {
            out.push("  changes: none".to_string());
        } else if c.commits > 0 {
            let how = match c.delivery.as_str() {
                "push" => format!("pushed to {}", printable_line(&c.pushed_to)),
                "bundle" if c.bundle_stored < c.bundle_bytes => "a bundle, still arriving".into(),
                "bundle" => "a bundle".into(),
                _ => "kept on the node".into(),
            };
            out.push(format!(
                "  changes: {} commit{}, {} file{} (+{} −{}) on {}, {how} — `dispatch diff {}`, `dispatch apply {}`",
                c.commits,
                if c.commits == 1 { "" } else { "s" },
                c.files,
                if c.files == 1 { "" } else { "s" },
                c.insertions,
                c.deletions,
                printable_line(&c.branch),
                t.id,
                t.id
            ));
        }
        if !c.error.is_empty() {
            out.push(format!("  changes: {}", printable(&c.error)));
        }
    }
    if !t.signer.is_empty() {
        out.push(format!("  signed by {}", printable_line(&t.signer)));
    }
    if !t.branch.is_empty() {
        let note = if t.cleaned {
            "worktree removed"
        } else {
            "worktree kept for review; `dispatch clean` removes it"
        };
        out.push(format!("  branch {} ({note})", printable_line(&t.branch)));
    }
    out.extend(checklist(t, fancy));
    for q in &t.questions {
        match &q.answer {
            Some(a) => out.push(format!(
                "  {}: {} → {}",
                dispatch_core::policy::label_of(q.seq, &q.kind),
                printable(&q.text),
                printable(a)
            )),
            None => out.push(paint(
                "33",
                &format!(
                    "  {} (unanswered): {}",
                    dispatch_core::policy::label_of(q.seq, &q.kind),
                    printable(&q.text)
                ),
                fancy,
            )),
        }
    }
    for n in &t.notes {
        out.push(format!(
            "  note from {} ({}): {}",
            printable_line(&n.author),
            ago(n.at_ms),
            printable_line(&n.text)
        ));
    }
    if !t.reason.is_empty() {
        out.push(format!(
            "  {}",
            paint(state_colour(s), &printable(&t.reason), fancy)
        ));
    }
    if t.limit_until_ms > 0 && s.is_terminal() {
        out.push(format!(
            "  blocked until {} — usage limit; `dispatch retry {}` then",
            local_time(t.limit_until_ms),
            t.id
        ));
    }
    out
}

/// A time as a person reads it here: `15:00` today, `Dec 4 15:00` another day (local time).
pub(crate) fn local_time(ms: i64) -> String {
    let at = |ms: i64| {
        let secs = (ms / 1000) as libc::time_t;
        // SAFETY: localtime_r writes only into the tm it is given.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&secs, &mut tm) };
        tm
    };
    let (then, now) = (at(ms), at(dispatch_coordinator::now_ms()));
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if (then.tm_year, then.tm_yday) == (now.tm_year, now.tm_yday) {
        format!("{:02}:{:02}", then.tm_hour, then.tm_min)
    } else {
        format!(
            "{} {} {:02}:{:02}",
            MONTHS[then.tm_mon.clamp(0, 11) as usize],
            then.tm_mday,
            then.tm_hour,
            then.tm_min
        )
    }
}

/// What stands for the content of a task the caller may see only as a summary.
fn hidden(t: &v1::Task) -> String {
    format!(
        "({}'s task: its content is for its owner and admins)",
        printable_line(&t.owner)
    )
}

/// One-line summary for lists.
pub(crate) fn task_row(t: &v1::Task) -> Vec<String> {
    let title = if t.summary {
        hidden(t)
    } else {
        printable_line(&t.title).into_owned()
    };
    vec![t.id.clone(), whereabouts(t), progress(t), title]
}

/// A plain table: a header, columns two spaces apart, widths from their widest cell
/// (Unicode-aware), the columns in `right` right-aligned, no borders, no trailing spaces.
/// Cells are shown as given: callers pass text through `printable_line` first.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    let last = header.len().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
