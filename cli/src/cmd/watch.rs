//! `dispatch watch` (and `run --wait`): the live checklist of one task, several, or every
//! active one, on the resumable watch `wait` shares (`crate::watching`).

use crate::client::{Target, connect};
use crate::render::{self, fancy};
use crate::settings::Settings;
use anyhow::Result;
use dispatch_proto::v1;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

/// `dispatch watch --all`: every active task in one live view, and each task submitted
/// meanwhile, until all of them have ended.
pub(super) async fn watch_all(g: &Settings) -> Result<crate::exit::Exit> {
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

/// Shows `ids` live until every one has ended; returns the watch exit status (the worst).
pub(crate) async fn follow(
    g: &Settings,
    target: &mut Target,
    ids: &[String],
    json: bool,
) -> Result<crate::exit::Exit> {
    follow_tasks(g, target, ids.to_vec(), false, json).await
}

/// [`follow`]; with `grow`, a task submitted meanwhile joins the view (`watch --all`).
pub(super) async fn follow_tasks(
    g: &Settings,
    target: &mut Target,
    mut ids: Vec<String>,
    grow: bool,
    json: bool,
) -> Result<crate::exit::Exit> {
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
        // Never back to an older view (a snapshot can race a change).
        if let Some(changed) = crate::watching::apply(&mut tasks, &ev) {
            view.show(&ids, &tasks, Some(&changed));
        }
    }
    view.finish(&ids, &tasks);
    Ok(tasks
        .values()
        .map(|t| crate::exit::Exit::of(t.task_state()))
        .max()
        .unwrap_or(crate::exit::Exit::Success))
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
