//! `dispatch output`: a task's output.md.

use crate::client::{Target, connect};
use crate::render;
use crate::settings::Settings;
use crate::watching;
use anyhow::{Result, anyhow, bail};
use dispatch_core::task_id;
use dispatch_proto::v1;
use std::io::{IsTerminal, Write};

pub(super) async fn output(g: &Settings, id: &str, follow: bool) -> Result<crate::exit::Exit> {
    task_id::validate(id)?;
    let open = |mut t: Target| {
        let id = id.to_string();
        async move {
            Ok::<_, tonic::Status>(
                t.client
                    .get_output(v1::GetOutputRequest { id, follow })
                    .await?
                    .into_inner(),
            )
        }
    };
    let mut stream = open(connect(g).await?).await?;
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0;
    // What was shown last: a stream opened again starts with the current output.md, which is
    // not shown a second time when it is the same.
    let (mut last, mut reopened): (Option<v1::OutputResponse>, bool) = (None, false);
    loop {
        let o = match stream.message().await {
            Ok(Some(o)) => o,
            Ok(None) => break,
            Err(s) if watching::resumable(&s) => {
                let broke = format!("the output stream broke: {}", render::status_text(&s));
                stream = watching::reopen(g, &broke, "following", open).await?;
                reopened = true;
                continue;
            }
            Err(s) => return Err(anyhow!(render::status_text(&s))),
        };
        if std::mem::take(&mut reopened) && last.as_ref() == Some(&o) {
            continue;
        }
        show(g, id, &o, shown, terminal)?;
        shown += 1;
        last = Some(o);
    }
    if shown == 0 {
        bail!(
            "`{id}` has no output.md yet: the worker writes it for the plan's last item (`dispatch watch {id}` shows how far it is)"
        );
    }
    Ok(crate::exit::Exit::Success)
}

/// Prints one version of output.md (`shown` before it).
fn show(
    g: &Settings,
    id: &str,
    o: &v1::OutputResponse,
    shown: usize,
    terminal: bool,
) -> Result<()> {
    {
        if g.json {
            println!(
                "{}",
                serde_json::json!({"task": id, "markdown": o.markdown, "bytes": o.bytes, "truncated": o.truncated, "node": o.node, "path": o.path})
            );
        } else {
            let mut out = std::io::stdout().lock();
            if shown > 0 {
                writeln!(
                    out,
                    "\n--- output.md rewritten ({}) ---",
                    dispatch_core::fs::human_bytes(o.bytes)
                )?;
            }
            // It is the worker's text: on a terminal no escape sequence takes effect.
            if terminal {
                out.write_all(dispatch_core::text::printable(&o.markdown).as_bytes())?;
            } else {
                out.write_all(o.markdown.as_bytes())?;
            }
            if !o.markdown.ends_with('\n') {
                writeln!(out)?;
            }
            out.flush()?;
            if o.truncated {
                eprintln!(
                    "(output.md is {} on node `{}`; the coordinator keeps its first {}. The whole file is at {} there.)",
                    dispatch_core::fs::human_bytes(o.bytes),
                    dispatch_core::text::printable_line(&o.node),
                    dispatch_core::fs::human_bytes(dispatch_core::limits::MAX_OUTPUT_BYTES as u64),
                    dispatch_core::text::printable_line(&o.path)
                );
            }
        }
    }
    Ok(())
}
