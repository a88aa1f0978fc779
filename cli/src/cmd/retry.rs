//! `dispatch retry`: run an ended task's unchecked items again.

use crate::client::connect;
use crate::cmd::run::dispatched_line;
use crate::render;
use crate::settings::Settings;
use anyhow::Result;
use dispatch_core::task_id;
use dispatch_proto::v1;

pub(super) async fn retry(
    g: &Settings,
    id: &str,
    model: Option<String>,
    backend: Option<String>,
    remote: Option<String>,
) -> Result<crate::exit::Exit> {
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
    Ok(crate::exit::Exit::Success)
}
