//! `dispatch cancel`.

use crate::client::connect;
use crate::render;
use crate::settings::Settings;
use anyhow::Result;
use dispatch_core::task_id;
use dispatch_proto::v1;

pub(super) async fn cancel(g: &Settings, id: &str) -> Result<crate::exit::Exit> {
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
    Ok(crate::exit::Exit::Success)
}
