//! The live resources of `dispatch mcp`: a task's plan — its checklist, as it ticks — at
//! `dispatch://tasks/ID/plan`, and its output.md at `dispatch://tasks/ID/output`, with change
//! notifications from the task's watch stream (the one `dispatch watch` reads), in both of the
//! protocol's styles: `resources/subscribe` (2025 protocol versions, what hosts speak today)
//! and `subscriptions/listen` (2026-07-28).

use crate::client::{Target, connect};
use crate::render;
use crate::settings::Settings;
use crate::watching::{Next, Watching, apply};
use anyhow::{Result, anyhow, bail};
use dispatch_proto::v1;
use rmcp::ErrorData as McpError;
use rmcp::model::{Resource, ResourceTemplate};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// Most resources one host may follow at once (each is one watch stream to the coordinator).
pub(super) const MAX_FOLLOWED: usize = 64;

/// Longest URI looked at (a task id is at most 64 characters).
const MAX_URI: usize = 512;

/// What part of a task a resource is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// plan.md: the checklist, with notes.
    Plan,
    /// output.md: the result.
    Output,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Plan => "plan",
            Part::Output => "output",
        }
    }
}

/// The URI of a task's part.
pub(super) fn uri(id: &str, part: Part) -> String {
    format!("dispatch://tasks/{id}/{}", part.as_str())
}

/// The task and part a URI names; an error saying what the URIs are for anything else.
pub(super) fn parse(uri: &str) -> Result<(String, Part)> {
    let not_ours = || {
        let shown: String = uri.chars().take(80).collect();
        let more = if uri.chars().count() > 80 { "…" } else { "" };
        anyhow!(
            "`{shown}{more}` is not a dispatch resource; they are dispatch://tasks/ID/plan (the checklist) and dispatch://tasks/ID/output (output.md)"
        )
    };
    if uri.len() > MAX_URI {
        return Err(not_ours());
    }
    let (id, part) = uri
        .strip_prefix("dispatch://tasks/")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(not_ours)?;
    let part = match part {
        "plan" => Part::Plan,
        "output" => Part::Output,
        _ => return Err(not_ours()),
    };
    dispatch_core::task_id::validate(id)?;
    Ok((id.to_string(), part))
}

/// The two URI templates.
pub(super) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("dispatch://tasks/{id}/plan", "task plan")
            .with_title("A task's plan")
            .with_description(
                "The task's plan.md as it is on its node: the checklist, ticking as the worker works ([x] done, [?] blocked on a question it stopped at, [!] failed), with notes. Subscribe to follow it.",
            )
            .with_mime_type("text/markdown"),
        ResourceTemplate::new("dispatch://tasks/{id}/output", "task output")
            .with_title("A task's output")
            .with_description(
                "The task's output.md: what the worker wrote for the plan's last item. Subscribe to hear when it is written.",
            )
            .with_mime_type("text/markdown"),
    ]
}

/// The plan of every recent task the caller may read, and the output of those that have one.
pub(super) async fn list(g: &Settings) -> Result<Vec<Resource>> {
    let mut t = connect(g).await?;
    let page = t
        .client
        .list_tasks(v1::ListTasksRequest {
            limit: 100,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    for task in page.tasks.iter().filter(|t| !t.summary) {
        let state = task.task_state().as_str();
        out.push(
            Resource::new(uri(&task.id, Part::Plan), format!("{} plan", task.id))
                .with_title(format!("{} — {}", task.id, task.title))
                .with_description(format!("The checklist of `{}` ({state})", task.id))
                .with_mime_type("text/markdown"),
        );
        if task.output_bytes > 0 {
            out.push(
                Resource::new(uri(&task.id, Part::Output), format!("{} output", task.id))
                    .with_title(format!("{} — output.md", task.id))
                    .with_description(format!("What `{}` wrote ({state})", task.id))
                    .with_mime_type("text/markdown")
                    .with_size(task.output_bytes),
            );
        }
    }
    Ok(out)
}

/// A task's output.md as the coordinator keeps it; an error when it has none yet.
pub(super) async fn output(g: &Settings, id: &str) -> Result<v1::OutputResponse> {
    let mut t = connect(g).await?;
    let mut s = t
        .client
        .get_output(v1::GetOutputRequest {
            id: id.to_string(),
            follow: false,
        })
        .await?
        .into_inner();
    match s.message().await? {
        Some(o) if !o.markdown.is_empty() => Ok(o),
        _ => bail!("`{id}` has no output.md yet: the worker writes it for the plan's last item"),
    }
}

/// The text of a resource.
pub(super) async fn read(g: &Settings, id: &str, part: Part) -> Result<String> {
    match part {
        Part::Plan => {
            let task = task(g, id).await?;
            if task.summary {
                bail!("you may see only a summary of `{id}`: its plan is for its owner and admins");
            }
            match task.plan {
                Some(p) if !p.markdown.is_empty() => Ok(p.markdown),
                _ => bail!("`{id}` has no plan yet"),
            }
        }
        Part::Output => Ok(output(g, id).await?.markdown),
    }
}

async fn task(g: &Settings, id: &str) -> Result<v1::Task> {
    let mut t = connect(g).await?;
    Ok(t.client
        .get_task(v1::GetTaskRequest { id: id.to_string() })
        .await?
        .into_inner())
}

/// A resource's error for the host: the CLI's message; "not found" for an unknown task or a
/// part not written yet, "internal" when the coordinator could not be asked.
pub(super) fn error(e: &anyhow::Error) -> McpError {
    let text = render::error_text(e);
    match e.downcast_ref::<tonic::Status>() {
        Some(s) if s.code() == tonic::Code::NotFound => McpError::resource_not_found(text, None),
        Some(s) if s.code() == tonic::Code::PermissionDenied => {
            McpError::invalid_request(text, None)
        }
        Some(_) => McpError::internal_error(text, None),
        None => McpError::resource_not_found(text, None),
    }
}

/// A task followed on its watch stream, for its resources' change notifications.
pub(super) struct Follower {
    g: Settings,
    id: String,
    target: Target,
    watching: Watching,
    tasks: BTreeMap<String, v1::Task>,
}

impl Follower {
    /// Subscribes to task `id`'s changes, once it is known that the caller may see it in full
    /// (it exists and is not a summary to them): the error comes now, not from the follow.
    pub(super) async fn start(g: &Settings, id: &str) -> Result<Follower> {
        let mut target = connect(g).await?;
        let watching = Watching::start(&mut target, id.to_string()).await?;
        let task = target
            .client
            .get_task(v1::GetTaskRequest { id: id.to_string() })
            .await?
            .into_inner();
        if task.summary {
            bail!(
                "you may see only a summary of `{id}`: its plan and output are for its owner and admins"
            );
        }
        Ok(Follower {
            g: g.clone(),
            id: id.to_string(),
            target,
            watching,
            tasks: BTreeMap::from([(id.to_string(), task)]),
        })
    }

    /// Sends the URI of each of `parts` that changes: the plan when the checklist or its
    /// notes change, the output when output.md is written. Survives the coordinator's restart
    /// or a replica's takeover (the watch resumes, and then every part is said to have
    /// changed: it may have while the stream was down). Ends when the receiver is gone.
    pub(super) async fn run(self, parts: Vec<Part>, tx: mpsc::Sender<String>) -> Result<()> {
        let Follower {
            g,
            id,
            mut target,
            mut watching,
            mut tasks,
        } = self;
        loop {
            let changed = tokio::select! {
                next = watching.next(&g, &mut target, &mut tasks) => next?,
                _ = tx.closed() => return Ok(()),
            };
            let changed = match changed {
                Next::Event(ev) => {
                    if apply(&mut tasks, &ev).is_none() {
                        continue;
                    }
                    match ev.change.as_str() {
                        "plan" => vec![Part::Plan],
                        "output" => vec![Part::Output],
                        _ => continue,
                    }
                }
                Next::Refreshed => parts.clone(),
            };
            for p in changed.into_iter().filter(|p| parts.contains(p)) {
                if tx.send(uri(&id, p)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The tasks (each with its parts) that `uris` name, in order; the first bad URI's error.
pub(super) fn by_task(uris: &[String]) -> Result<Vec<(String, Vec<Part>)>> {
    let mut out: Vec<(String, Vec<Part>)> = Vec::new();
    for u in uris {
        let (id, part) = parse(u)?;
        match out.iter_mut().find(|(i, _)| *i == id) {
            Some((_, parts)) if !parts.contains(&part) => parts.push(part),
            Some(_) => {}
            None => out.push((id, vec![part])),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_task_and_a_part_and_nothing_else() {
        assert_eq!(
            parse("dispatch://tasks/fix-tests/plan").unwrap(),
            ("fix-tests".to_string(), Part::Plan)
        );
        assert_eq!(
            parse(&uri("a-b", Part::Output)).unwrap(),
            ("a-b".to_string(), Part::Output)
        );
        for bad in [
            "dispatch://tasks/fix-tests",
            "dispatch://tasks/fix-tests/log",
            "dispatch://tasks//plan",
            "dispatch://tasks/../etc/plan",
            "dispatch://tasks/a/b/plan",
            "file:///etc/passwd",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = format!("dispatch://tasks/{}/plan", "a".repeat(600));
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.contains("…` is not a dispatch resource"), "{e}");
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn uris_group_by_task() {
        let g = by_task(&[
            uri("a", Part::Plan),
            uri("b", Part::Output),
            uri("a", Part::Output),
            uri("a", Part::Plan),
        ])
        .unwrap();
        assert_eq!(
            g,
            vec![
                ("a".to_string(), vec![Part::Plan, Part::Output]),
                ("b".to_string(), vec![Part::Output]),
            ]
        );
    }
}
