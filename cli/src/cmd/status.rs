//! `dispatch status`: one task in detail, or the most recent tasks.

use crate::client::connect;
use crate::render::{self, fancy};
use crate::settings::Settings;
use anyhow::Result;
use dispatch_core::task_id;
use dispatch_proto::v1;

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

pub(super) async fn status(
    g: &Settings,
    id: Option<String>,
    limit: u32,
    all: bool,
) -> Result<crate::exit::Exit> {
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
                let rows = tasks.iter().map(render::task_row).collect();
                println!(
                    "{}",
                    render::table(&["ID", "STATE", "DONE", "TITLE"], rows, &[2])
                );
                if (tasks.len() as u64) < total {
                    println!(
                        "(the {} most recent of {total} tasks; `dispatch status --all` lists every one)",
                        tasks.len()
                    );
                }
            }
        }
    }
    Ok(crate::exit::Exit::Success)
}
