//! A watch that outlives its connection: when the coordinator restarts, or a standby replica
//! takes over from a leader that died, `watch` and `wait` reconnect (to the next address of
//! `--coordinator URL1,URL2`), subscribe again and refresh every task they follow from a
//! snapshot — never showing an older state than one already shown.

use crate::client::{Target, connect};
use crate::render;
use crate::settings::Settings;
use anyhow::{Result, anyhow};
use dispatch_proto::v1;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long to keep trying to reach a coordinator again before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// The watch stream of one task (or of every task: an empty id).
pub(crate) struct Watching {
    one: String,
    stream: tonic::Streaming<v1::WatchEvent>,
}

/// What the watch brought.
pub(crate) enum Next {
    /// A change.
    Event(Box<v1::WatchEvent>),
    /// The connection broke and is back: the followed tasks were refreshed.
    Refreshed,
}

impl Watching {
    /// Subscribes (before the caller reads its snapshots, so no change falls between).
    pub(crate) async fn start(target: &mut Target, one: String) -> Result<Watching, tonic::Status> {
        let stream = target
            .client
            .watch(v1::WatchRequest {
                task_id: one.clone(),
            })
            .await?
            .into_inner();
        Ok(Watching { one, stream })
    }

    /// The next change. A broken stream is re-subscribed on a new connection and `tasks` are
    /// refreshed from snapshots (a snapshot older than what is shown is ignored).
    pub(crate) async fn next(
        &mut self,
        g: &Settings,
        target: &mut Target,
        tasks: &mut BTreeMap<String, v1::Task>,
    ) -> Result<Next> {
        let broke = match self.stream.message().await {
            Ok(Some(ev)) => return Ok(Next::Event(Box::new(ev))),
            Ok(None) => "the coordinator closed the watch stream".to_string(),
            Err(s) if resumable(&s) => {
                format!("the watch stream broke: {}", render::status_text(&s))
            }
            Err(s) => {
                return Err(anyhow!(
                    "the watch stream broke: {}",
                    render::status_text(&s)
                ));
            }
        };
        // Subscribe again, then read every followed task afresh (its snapshot, in case a
        // change fell in the gap); an older snapshot than what is shown is ignored.
        let (one, ids): (String, Vec<String>) = (self.one.clone(), tasks.keys().cloned().collect());
        let (t, w, fresh) = reopen(g, &broke, "watching", |mut t: Target| {
            let (one, ids) = (one.clone(), ids.clone());
            async move {
                let w = Watching::start(&mut t, one).await?;
                let mut fresh = Vec::with_capacity(ids.len());
                for id in ids {
                    let now = t.client.get_task(v1::GetTaskRequest { id }).await?;
                    fresh.push(now.into_inner());
                }
                Ok((t, w, fresh))
            }
        })
        .await?;
        for now in fresh {
            if let Some(old) = tasks.get_mut(&now.id)
                && newer(old, &now)
            {
                *old = now;
            }
        }
        *target = t;
        *self = w;
        Ok(Next::Refreshed)
    }
}

/// Applies a watch event to the task of `tasks` it is about (never showing an older state);
/// the id of the task it changed.
pub(crate) fn apply(tasks: &mut BTreeMap<String, v1::Task>, ev: &v1::WatchEvent) -> Option<String> {
    let old = tasks.get(&ev.task.as_ref()?.id)?;
    let t = dispatch_proto::convert::apply_watch_event(Some(old), ev)?;
    if !newer(old, &t) {
        return None;
    }
    let id = t.id.clone();
    tasks.insert(id.clone(), t);
    Some(id)
}

/// True when `now` may replace `old` in a view: never an older state, never back from an end.
pub(crate) fn newer(old: &v1::Task, now: &v1::Task) -> bool {
    let back_from_an_end = old.task_state().is_terminal() && !now.task_state().is_terminal();
    now.updated_at_ms >= old.updated_at_ms && !back_from_an_end
}

/// Opens a stream again after it broke (`broke` says how): `open` on a new connection each
/// try, for up to a minute, so a follower outlives a coordinator's restart or a replica's
/// takeover. An error no new connection can mend (an unknown task) ends it at once.
/// It says so on stderr (so --json output on stdout stays one object per line), as
/// "(BROKE; AGAIN again through URL)".
pub(crate) async fn reopen<T, F, Fut>(
    g: &Settings,
    broke: &str,
    again: &str,
    mut open: F,
) -> Result<T>
where
    F: FnMut(Target) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let why = match connect(g).await {
            Ok(t) => {
                let url = t.url.clone();
                match open(t).await {
                    Ok(v) => {
                        eprintln!("({broke}; {again} again through {url})");
                        return Ok(v);
                    }
                    Err(s) if !resumable(&s) => {
                        return Err(anyhow!("{broke}: {}", render::status_text(&s)));
                    }
                    Err(s) => render::status_text(&s),
                }
            }
            Err(e) => render::error_text(&e),
        };
        if started.elapsed() >= RECONNECT_FOR {
            return Err(anyhow!(
                "{broke}, and no coordinator answered for {}s: {why}; run the command again when it is back",
                RECONNECT_FOR.as_secs()
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A break a new connection can mend (the coordinator went away, or is stopping).
pub(crate) fn resumable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}
