//! Migration 8 in code: stores before it kept every event and command as the encoded wire
//! message. Events become history as changes (a log its raw bytes — what `dispatch logs` must
//! print —, a plan the edit from the previous plan, the rest JSON) and commands become the
//! domain's JSON. Done in pages, so a large store is converted in bounded memory.

use super::events::body;
use crate::convert;
use crate::error::Result;
use dispatch_proto::v1;
use prost::Message;
use sqlx::{Row, Sqlite, Transaction};

const PAGE: i64 = 1000;

pub(super) async fn convert_bodies(tx: &mut Transaction<'_, Sqlite>) -> Result<()> {
    let mut after = (String::new(), -1i64);
    let mut plan = (String::new(), String::new()); // (task, its plan so far)
    let mut events = 0u64;
    loop {
        let rows = sqlx::query("SELECT task_id, seq, kind, body FROM events WHERE (task_id, seq) > (?1, ?2) ORDER BY task_id, seq LIMIT ?3")
            .bind(&after.0)
            .bind(after.1)
            .bind(PAGE)
            .fetch_all(&mut **tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get(0)?, last.try_get(1)?);
        for r in &rows {
            let (task, seq, kind, old): (String, i64, String, Vec<u8>) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            if plan.0 != task {
                plan = (task.clone(), String::new());
            }
            let (new_kind, new_body) = if kind == "rejected" {
                (
                    "rejected",
                    b"over a limit (recorded before schema version 8)".to_vec(),
                )
            } else {
                match v1::TaskEvent::decode(old.as_slice())
                    .ok()
                    .and_then(|ev| convert::event_from_proto(ev).ok())
                {
                    Some(ev) => {
                        let out = body(&ev, &plan.1);
                        match ev.kind {
                            crate::model::EventKind::Plan { markdown } => plan.1 = markdown,
                            crate::model::EventKind::Exited(x) if !x.markdown.is_empty() => {
                                plan.1 = x.markdown
                            }
                            _ => {}
                        }
                        out
                    }
                    None => continue,
                }
            };
            sqlx::query("UPDATE events SET kind = ?3, body = ?4 WHERE task_id = ?1 AND seq = ?2")
                .bind(&task)
                .bind(seq)
                .bind(new_kind)
                .bind(new_body)
                .execute(&mut **tx)
                .await?;
            events += 1;
        }
    }
    let mut commands = 0u64;
    let mut after_id = 0i64;
    loop {
        let rows = sqlx::query("SELECT id, body FROM commands WHERE id > ?1 ORDER BY id LIMIT ?2")
            .bind(after_id)
            .bind(PAGE)
            .fetch_all(&mut **tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after_id = last.try_get(0)?;
        for r in &rows {
            let (id, old): (i64, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
            let decoded = v1::Command::decode(old.as_slice())
                .ok()
                .and_then(|c| convert::command_from_proto(c).ok());
            match decoded {
                Some(cmd) => {
                    sqlx::query("UPDATE commands SET kind = ?2, body = ?3 WHERE id = ?1")
                        .bind(id)
                        .bind(cmd.name())
                        .bind(serde_json::to_vec(&cmd).unwrap_or_default())
                        .execute(&mut **tx)
                        .await?;
                    commands += 1;
                }
                None => {
                    sqlx::query(
                        "UPDATE commands SET acked_ms = 0 WHERE id = ?1 AND acked_ms IS NULL",
                    )
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
    }
    tracing::info!(events, commands, "converted stored events and commands");
    Ok(())
}
