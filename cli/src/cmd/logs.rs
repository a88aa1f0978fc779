//! `dispatch logs`: a task's worker output.

use crate::client::{Target, connect};
use crate::render;
use crate::settings::Settings;
use crate::watching;
use anyhow::{Result, anyhow};
use dispatch_core::task_id;
use dispatch_proto::v1;
use std::io::{IsTerminal, Write};

pub(super) async fn logs(
    g: &Settings,
    id: &str,
    follow: bool,
    activity: bool,
) -> Result<crate::exit::Exit> {
    task_id::validate(id)?;
    let open = |mut t: Target, after_seq: u64| {
        let id = id.to_string();
        async move {
            Ok::<_, tonic::Status>(
                t.client
                    .logs(v1::LogsRequest {
                        id,
                        follow,
                        activity,
                        after_seq,
                    })
                    .await?
                    .into_inner(),
            )
        }
    };
    let mut stream = open(connect(g).await?, 0).await?;
    // Piped: exactly the bytes the worker wrote. On a terminal: its colours, but no escape
    // sequence that could set the reader's clipboard, title or cursor.
    let terminal = std::io::stdout().is_terminal();
    // The last chunk written: a broken stream resumes after it, so no byte is shown twice
    // (unless a chunk came unnumbered, from an older coordinator: then it cannot).
    let (mut last, mut unnumbered) = (0, false);
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(s) if watching::resumable(&s) && !unnumbered => {
                let broke = format!("the log stream broke: {}", render::status_text(&s));
                stream = watching::reopen(g, &broke, "following", |t| open(t, last)).await?;
                continue;
            }
            Err(s) => return Err(anyhow!(render::status_text(&s))),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            out.write_all(&dispatch_core::text::terminal_output(&chunk.data))?;
        } else {
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        last = last.max(chunk.seq);
        unnumbered |= chunk.seq == 0;
    }
    Ok(crate::exit::Exit::Success)
}
