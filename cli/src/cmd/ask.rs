//! The question-and-answer side: answer, note, inbox, wait.

use crate::client::{Target, connect};
use crate::render;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::text::{printable, printable_line};
use dispatch_core::{TaskState, task_id};
use dispatch_proto::v1;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

/// Reads an answer from $VISUAL/$EDITOR, showing the question as comment lines.
fn answer_from_editor(question: &str) -> Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let file = tempfile::Builder::new()
        .prefix("dispatch-answer-")
        .suffix(".md")
        .tempfile()?;
    let mut header =
        String::from("\n# Write your answer above. Lines starting with '#' are ignored.\n#\n");
    for l in question.lines() {
        header.push_str(&format!("# {l}\n"));
    }
    std::fs::write(file.path(), header)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("editor")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot run the editor `{editor}`"))?;
    if !status.success() {
        bail!("the editor `{editor}` exited with {status}; nothing was sent");
    }
    let text = std::fs::read_to_string(file.path())?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string())
}

pub(crate) async fn answer(
    g: &Settings,
    id: &str,
    seq: Option<u32>,
    words: Vec<String>,
) -> Result<crate::exit::Exit> {
    task_id::validate(id)?;
    let mut target = connect(g).await?;
    let mut text = words.join(" ");
    if text.trim().is_empty() {
        if !std::io::stdin().is_terminal() {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the answer from stdin")?;
        } else {
            let task = target
                .client
                .get_task(v1::GetTaskRequest { id: id.into() })
                .await?
                .into_inner();
            let q = task
                .questions
                .iter()
                .find(|q| seq.map_or(q.answer.is_none(), |s| q.seq == s))
                .ok_or_else(|| anyhow!("task `{id}` has no unanswered question"))?;
            text = answer_from_editor(&format!("Question {:03} from `{id}`:\n{}", q.seq, q.text))?;
        }
    }
    if text.trim().is_empty() {
        bail!("the answer is empty; nothing was sent");
    }
    let task = send_answer(g, &target, id, seq.unwrap_or(0), text).await?;
    if g.json {
        println!("{}", render::task_json(&task));
    } else if task.reason.starts_with("answered; a new worker") {
        println!(
            "Answered `{}`; a new worker continues from the blocked item ({}).",
            task.id,
            render::whereabouts(&task)
        );
    } else {
        println!(
            "Answered `{}`; the worker on {} picks it up.",
            task.id,
            printable_line(&task.node)
        );
    }
    Ok(crate::exit::Exit::Success)
}

pub(crate) async fn note(g: &Settings, id: &str, text: &str) -> Result<crate::exit::Exit> {
    task_id::validate(id)?;
    let mut target = connect(g).await?;
    let task = target
        .client
        .add_note(v1::AddNoteRequest {
            id: id.into(),
            text: text.into(),
        })
        .await?
        .into_inner();
    render::report(
        g.json,
        &task,
        format!(
            "Noted on `{}` (node {}): > **Note from dispatcher:** {}",
            task.id,
            task.node,
            text.trim()
        ),
    );
    Ok(crate::exit::Exit::Success)
}

/// The questions waiting on the caller, oldest first. Another user's come without their text
/// (only their owner and admins see it, and only they may answer): they are not the caller's
/// to show.
pub(crate) async fn waiting_questions(target: &mut Target) -> Result<Vec<v1::PendingQuestion>> {
    let questions = target
        .client
        .list_questions(v1::ListQuestionsRequest {})
        .await?
        .into_inner()
        .questions;
    Ok(questions
        .into_iter()
        .filter(|q| !q.text.is_empty())
        .collect())
}

/// A waiting question as `dispatch inbox --json` (and the MCP `inbox` tool) gives it.
pub(crate) fn question_json(q: &v1::PendingQuestion) -> serde_json::Value {
    serde_json::json!({"task": q.task_id, "node": q.node, "seq": q.seq, "text": q.text, "asked_at_ms": q.asked_at_ms, "title": q.title, "kind": q.kind})
}

pub(crate) async fn inbox(g: &Settings, list_only: bool) -> Result<crate::exit::Exit> {
    let mut target = connect(g).await?;
    let questions = waiting_questions(&mut target).await?;
    if g.json {
        let v: Vec<serde_json::Value> = questions.iter().map(question_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(crate::exit::Exit::Success);
    }
    if questions.is_empty() {
        println!("No question is waiting for you.");
        return Ok(crate::exit::Exit::Success);
    }
    let interactive =
        !list_only && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !interactive {
        let rows = questions
            .iter()
            .map(|q| {
                vec![
                    q.task_id.clone(),
                    printable_line(&q.node).into_owned(),
                    dispatch_core::policy::label_of(q.seq, &q.kind),
                    render::ago(q.asked_at_ms),
                    printable_line(&q.text).into_owned(),
                ]
            })
            .collect();
        println!(
            "{}",
            render::table(&["TASK", "NODE", "WHICH", "AGE", "QUESTION"], rows, &[2, 3])
        );
        return Ok(crate::exit::Exit::Success);
    }
    let stdin = std::io::stdin();
    let mut answered = 0;
    for (n, q) in questions.iter().enumerate() {
        println!(
            "\n[{}/{}] `{}` on {} asks ({}, {}):",
            n + 1,
            questions.len(),
            q.task_id,
            printable_line(&q.node),
            dispatch_core::policy::label_of(q.seq, &q.kind),
            render::ago(q.asked_at_ms)
        );
        for l in q.text.lines() {
            println!("    {}", printable_line(l));
        }
        print!("answer (empty to skip, q to stop): ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim() == "q" {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        match target
            .client
            .answer(v1::AnswerRequest {
                id: q.task_id.clone(),
                seq: q.seq,
                text: line.trim().into(),
                request_id: crate::retry::request_id(),
            })
            .await
        {
            Ok(_) => {
                answered += 1;
                println!("sent.");
            }
            Err(s) => println!("not sent: {}", render::status_text(&s)),
        }
    }
    println!("\nAnswered {answered} of {} question(s).", questions.len());
    Ok(crate::exit::Exit::Success)
}

/// Answers question `seq` (0: the oldest open one) of task `id`, with one request id for every
/// retry (through the next replica, with several), so it is answered once.
pub(crate) async fn send_answer(
    g: &Settings,
    target: &crate::client::Target,
    id: &str,
    seq: u32,
    text: String,
) -> Result<v1::Task> {
    let req = v1::AnswerRequest {
        id: id.into(),
        seq,
        text,
        request_id: crate::retry::request_id(),
    };
    let task = crate::retry::idempotent(
        "answer",
        target.client.clone(),
        || crate::retry::reconnect(g),
        |mut c| {
            let r = req.clone();
            async move { c.answer(r).await }
        },
    )
    .await?
    .into_inner();
    Ok(task)
}

/// Who reads what `wait` says next: a person at the CLI (commands), or an MCP host (tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Voice {
    /// `dispatch answer …`, `dispatch output …`.
    Cli,
    /// `answer_question`, `task_output`.
    Mcp,
}

impl Voice {
    fn answer_with(self, id: &str, kind: &str) -> String {
        match (self, kind) {
            (Voice::Cli, "budget") => format!("Answer with: dispatch answer {id} yes|no"),
            (Voice::Cli, "approval") => format!("Answer with: dispatch answer {id} yes|no|always"),
            (Voice::Cli, _) => format!("Answer with: dispatch answer {id} \"…\""),
            (Voice::Mcp, _) => format!("Answer with the answer_question tool (id `{id}`)."),
        }
    }

    fn read_output(self, id: &str, ended: bool) -> String {
        match (self, ended) {
            (Voice::Cli, false) => format!("Read its summary: dispatch output {id}"),
            (Voice::Cli, true) => format!("Read what `{id}` wrote: dispatch output {id}"),
            (Voice::Mcp, _) => format!("Read what `{id}` wrote with the task_output tool."),
        }
    }

    fn take_changes(self, id: &str) -> String {
        match self {
            Voice::Cli => format!("Its changes: dispatch diff {id}, then dispatch apply {id}"),
            Voice::Mcp => format!(
                "Its changes: task_diff, then apply_changes (or fetch_changes) with id `{id}`."
            ),
        }
    }
}

fn has_changes(t: &v1::Task) -> bool {
    t.changes.as_ref().is_some_and(|c| c.commits > 0)
}

/// Exit status of `wait` for a set of tasks, or None while none needs the user yet.
pub(super) fn wait_outcome(
    tasks: &BTreeMap<String, v1::Task>,
    voice: Voice,
) -> Option<(crate::exit::Exit, String)> {
    let mut worst: Option<(crate::exit::Exit, String)> = None;
    let mut consider = |code: crate::exit::Exit, msg: String| {
        // A question first (10), then blocked (11), failed (12), cancelled (13).
        if worst.as_ref().is_none_or(|(c, _)| code < *c) {
            worst = Some((code, msg));
        }
    };
    for t in tasks.values() {
        let s = t.task_state();
        if s == TaskState::Waiting
            && let Some(q) = t.questions.iter().find(|q| q.answer.is_none())
        {
            consider(
                crate::exit::Exit::Question,
                format!(
                    "`{}` asks ({}): {}\n{}",
                    t.id,
                    dispatch_core::policy::label_of(q.seq, &q.kind),
                    printable(&q.text),
                    voice.answer_with(&t.id, &q.kind)
                ),
            );
            continue;
        }
        match s {
            TaskState::Blocked => consider(
                crate::exit::Exit::Blocked,
                format!("`{}` is blocked: {}", t.id, printable(&t.reason)),
            ),
            TaskState::Failed | TaskState::Lost => consider(
                crate::exit::Exit::Failed,
                format!("`{}` {}: {}", t.id, s, printable(&t.reason)),
            ),
            TaskState::Cancelled => consider(
                crate::exit::Exit::Cancelled,
                format!("`{}` was cancelled", t.id),
            ),
            _ => {}
        }
    }
    if worst.is_none()
        && tasks
            .values()
            .all(|t| t.task_state() == TaskState::Completed)
    {
        let ids: Vec<&str> = tasks.keys().map(String::as_str).collect();
        let mut msg = format!("completed: {}", ids.join(", "));
        for t in tasks.values() {
            if t.output_bytes > 0 {
                msg.push_str(&format!("\n{}", voice.read_output(&t.id, false)));
            }
            if has_changes(t) {
                msg.push_str(&format!("\n{}", voice.take_changes(&t.id)));
            }
        }
        return Some((crate::exit::Exit::Success, msg));
    }
    if let Some((_, msg)) = &mut worst {
        for t in tasks
            .values()
            .filter(|t| t.output_bytes > 0 && t.task_state().is_terminal())
        {
            msg.push_str(&format!("\n{}", voice.read_output(&t.id, true)));
        }
    }
    worst
}

pub(crate) async fn wait(
    g: &Settings,
    ids: &[String],
    timeout: Option<Duration>,
) -> Result<crate::exit::Exit> {
    for id in ids {
        if let Err(e) = task_id::validate(id) {
            eprintln!("error: {e}");
            return Ok(crate::exit::Exit::Usage);
        }
    }
    let mut target = connect(g).await?;
    let one = if ids.len() == 1 {
        ids[0].clone()
    } else {
        String::new()
    };
    let mut watching = match crate::watching::Watching::start(&mut target, one).await {
        Ok(w) => w,
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprintln!("error: {}", s.message());
            return Ok(crate::exit::Exit::Usage);
        }
        Err(s) => return Err(s.into()),
    };
    let mut tasks = BTreeMap::new();
    for id in ids {
        match target
            .client
            .get_task(v1::GetTaskRequest { id: id.clone() })
            .await
        {
            Ok(t) => {
                tasks.insert(id.clone(), t.into_inner());
            }
            Err(s)
                if s.code() == tonic::Code::NotFound
                    || s.code() == tonic::Code::InvalidArgument =>
            {
                eprintln!("error: {}", s.message());
                return Ok(crate::exit::Exit::Usage);
            }
            Err(s) => return Err(s.into()),
        }
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    match until_needed(
        g,
        &mut target,
        &mut watching,
        &mut tasks,
        deadline,
        Voice::Cli,
    )
    .await?
    {
        Some((code, msg)) => {
            if g.json {
                let v: Vec<serde_json::Value> = tasks.values().map(render::task_json).collect();
                println!(
                    "{}",
                    serde_json::json!({"exit": u8::from(code), "message": msg, "tasks": v})
                );
            } else {
                println!("{msg}");
            }
            Ok(code)
        }
        None => {
            eprintln!("timed out; nothing needs you yet");
            Ok(crate::exit::Exit::TimedOut)
        }
    }
}

/// Follows `tasks` on `watching` until one needs the user — `Some((exit status, message))`,
/// as [`wait_outcome`] says — or `deadline` passes (None). What `dispatch wait` and the MCP
/// `wait_for_task` tool share.
pub(super) async fn until_needed(
    g: &Settings,
    target: &mut crate::client::Target,
    watching: &mut crate::watching::Watching,
    tasks: &mut BTreeMap<String, v1::Task>,
    deadline: Option<tokio::time::Instant>,
    voice: Voice,
) -> Result<Option<(crate::exit::Exit, String)>> {
    loop {
        if let Some(outcome) = wait_outcome(tasks, voice) {
            return Ok(Some(outcome));
        }
        let next = watching.next(g, target, tasks);
        let ev = match deadline {
            Some(d) => match tokio::time::timeout_at(d, next).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            },
            None => next.await?,
        };
        if let crate::watching::Next::Event(ev) = ev {
            crate::watching::apply(tasks, &ev);
        }
    }
}
