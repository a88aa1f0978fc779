//! `dispatch clean`: remove an ended worktree task's worktree.

use crate::client::connect;
use crate::render;
use crate::settings::Settings;
use anyhow::Result;
use dispatch_core::task_id;
use dispatch_proto::v1;

pub(super) async fn clean(g: &Settings, id: &str) -> Result<crate::exit::Exit> {
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
    Ok(crate::exit::Exit::Success)
}
