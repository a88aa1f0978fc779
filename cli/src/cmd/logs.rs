//! `dispatch logs`: a task's worker output.

use crate::args::Global;
use crate::client::connect;
use crate::render;
use anyhow::{Result, anyhow};
use dispatch_core::task_id;
use dispatch_proto::v1;
use std::io::{IsTerminal, Write};

pub(super) async fn logs(g: &Global, id: &str, follow: bool, activity: bool) -> Result<u8> {
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
