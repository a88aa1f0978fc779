//! Conversions between wire (`dispatch.v1`) and domain (`dispatch-core`) types.

use crate::v1;
use dispatch_core::{ItemStatus, Plan, TaskState};

/// Domain task state → wire enum.
pub fn state_to_proto(s: TaskState) -> v1::TaskState {
    match s {
        TaskState::Queued => v1::TaskState::Queued,
        TaskState::Assigned => v1::TaskState::Assigned,
        TaskState::Running => v1::TaskState::Running,
        TaskState::Waiting => v1::TaskState::Waiting,
        TaskState::Completed => v1::TaskState::Completed,
        TaskState::Failed => v1::TaskState::Failed,
        TaskState::Blocked => v1::TaskState::Blocked,
        TaskState::Cancelled => v1::TaskState::Cancelled,
        TaskState::Lost => v1::TaskState::Lost,
        TaskState::Unreachable => v1::TaskState::Unreachable,
    }
}

/// Wire enum value → domain task state; `None` for unspecified or unknown values.
pub fn state_from_proto(v: i32) -> Option<TaskState> {
    Some(match v1::TaskState::try_from(v).ok()? {
        v1::TaskState::Unspecified => return None,
        v1::TaskState::Queued => TaskState::Queued,
        v1::TaskState::Assigned => TaskState::Assigned,
        v1::TaskState::Running => TaskState::Running,
        v1::TaskState::Waiting => TaskState::Waiting,
        v1::TaskState::Completed => TaskState::Completed,
        v1::TaskState::Failed => TaskState::Failed,
        v1::TaskState::Blocked => TaskState::Blocked,
        v1::TaskState::Cancelled => TaskState::Cancelled,
        v1::TaskState::Lost => TaskState::Lost,
        v1::TaskState::Unreachable => TaskState::Unreachable,
    })
}

/// Domain item status → wire enum.
pub fn item_status_to_proto(s: ItemStatus) -> v1::ItemStatus {
    match s {
        ItemStatus::Pending => v1::ItemStatus::Pending,
        ItemStatus::Done => v1::ItemStatus::Done,
        ItemStatus::Blocked => v1::ItemStatus::Blocked,
        ItemStatus::Error => v1::ItemStatus::Error,
    }
}

/// Wire enum value → domain item status (unknown values read as pending).
pub fn item_status_from_proto(v: i32) -> ItemStatus {
    match v1::ItemStatus::try_from(v) {
        Ok(v1::ItemStatus::Done) => ItemStatus::Done,
        Ok(v1::ItemStatus::Blocked) => ItemStatus::Blocked,
        Ok(v1::ItemStatus::Error) => ItemStatus::Error,
        _ => ItemStatus::Pending,
    }
}

/// A node's state in a word or two: `connected`, `cordoned` (an admin's `nodes drain`, until
/// `uncordon`), `draining` (its agent is stopping, or a drain's timeout runs), `offline`.
pub fn node_state(n: &v1::Node) -> &'static str {
    match (n.connected, n.draining && !n.cordoned, n.cordoned) {
        (true, true, _) => "draining",
        (true, false, true) => "cordoned",
        (true, false, false) => "connected",
        (false, _, true) => "offline, cordoned",
        (false, _, false) => "offline",
    }
}

/// plan.md text → wire plan (title, items, and the markdown itself).
pub fn plan_to_proto(markdown: &str) -> v1::Plan {
    let plan = Plan::parse(markdown);
    v1::Plan {
        title: plan.title().unwrap_or_default().to_string(),
        items: plan
            .items()
            .iter()
            .map(|i| v1::PlanItem {
                text: i.text.clone(),
                status: item_status_to_proto(i.status) as i32,
                note: i.note.clone(),
                depth: i.depth,
            })
            .collect(),
        markdown: markdown.to_string(),
    }
}

impl v1::Task {
    /// The task's state as a domain value (queued when the wire value is unknown).
    pub fn task_state(&self) -> TaskState {
        state_from_proto(self.state).unwrap_or(TaskState::Queued)
    }
}

/// The task a watcher holds after a watch event: a snapshot replaces what it had; a change
/// carries neither the prompt nor the questions answered before it, so those are kept from
/// `prev` (questions merged by seq).
pub fn apply_watch_event(prev: Option<&v1::Task>, ev: &v1::WatchEvent) -> Option<v1::Task> {
    let mut t = ev.task.clone()?;
    if ev.change == "snapshot" {
        return Some(t);
    }
    if let Some(prev) = prev.filter(|p| p.id == t.id) {
        if t.prompt.is_empty() {
            t.prompt = prev.prompt.clone();
        }
        for q in &prev.questions {
            if !t.questions.iter().any(|n| n.seq == q.seq) {
                t.questions.push(q.clone());
            }
        }
        t.questions.sort_by_key(|q| q.seq);
    }
    Some(t)
}

/// A structured stream's totals → wire.
pub fn usage_to_proto(u: &dispatch_core::stream::Usage) -> v1::Usage {
    v1::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd: u.cost_usd.unwrap_or(0.0),
        cost_known: u.cost_usd.is_some(),
        turns: u.turns,
        model: u.model.clone(),
        unknown_events: u.unknown_events,
        garbled_lines: u.garbled_lines,
    }
}

/// The largest cost one run reports that is kept (a larger one is cut to it), so sums over
/// runs and nodes stay finite.
pub const MAX_RUN_COST_USD: f64 = 1e9;

/// Wire totals → domain (a cost that is not a finite, non-negative number is dropped; one
/// above [`MAX_RUN_COST_USD`] is cut to it).
pub fn usage_from_proto(u: &v1::Usage) -> dispatch_core::stream::Usage {
    dispatch_core::stream::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd: (u.cost_known && u.cost_usd.is_finite() && u.cost_usd >= 0.0)
            .then_some(u.cost_usd.min(MAX_RUN_COST_USD)),
        turns: u.turns,
        model: u.model.clone(),
        unknown_events: u.unknown_events,
        garbled_lines: u.garbled_lines,
    }
}

/// A worker CLI's failure → wire.
pub fn failure_to_proto(f: &dispatch_core::signals::Failure) -> v1::CliFailure {
    v1::CliFailure {
        trouble: f.trouble.as_str().to_string(),
        message: f.message.clone(),
        status: f.status.map_or(0, u32::from),
        resets_at_ms: f.resets_at_ms.unwrap_or(0),
        retries: f.retries,
        stopped: f.stopped,
    }
}

/// Wire → domain: None for an empty one; an unknown kind of trouble reads as `error`, the
/// message is cut to [`dispatch_core::signals::MAX_MESSAGE_CHARS`] (a peer's text).
pub fn failure_from_proto(f: Option<&v1::CliFailure>) -> Option<dispatch_core::signals::Failure> {
    use dispatch_core::signals::{Failure, MAX_MESSAGE_CHARS, Trouble};
    let f = f?;
    if f.trouble.is_empty() && f.message.is_empty() {
        return None;
    }
    Some(Failure {
        trouble: Trouble::parse(&f.trouble).unwrap_or(Trouble::Error),
        message: f.message.chars().take(MAX_MESSAGE_CHARS).collect(),
        status: u16::try_from(f.status).ok().filter(|s| *s != 0),
        resets_at_ms: (f.resets_at_ms > 0).then_some(f.resets_at_ms),
        retries: f.retries,
        stopped: f.stopped,
    })
}

/// A wire budget in domain terms.
pub fn budget_from_proto(b: &v1::Budget) -> dispatch_core::budget::Budget {
    dispatch_core::budget::Budget {
        usd_micros: b.usd_micros,
        tokens: b.tokens,
    }
}

/// A task's spend in domain terms (none: nothing spent).
pub fn spend_from_proto(s: Option<&v1::Spend>) -> dispatch_core::budget::Spend {
    s.map(|s| dispatch_core::budget::Spend {
        usd_micros: s.usd_micros,
        tokens: s.tokens,
        estimated: s.estimated,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_cost_is_kept_only_when_it_is_a_sane_number() {
        let cost = |c: f64, known: bool| {
            usage_from_proto(&v1::Usage {
                cost_usd: c,
                cost_known: known,
                ..Default::default()
            })
            .cost_usd
        };
        assert_eq!(cost(0.25, true), Some(0.25));
        assert_eq!(cost(0.25, false), None);
        assert_eq!(cost(f64::NAN, true), None);
        assert_eq!(cost(f64::INFINITY, true), None);
        assert_eq!(cost(-1.0, true), None);
        assert_eq!(cost(1e308, true), Some(MAX_RUN_COST_USD));
    }

    #[test]
    fn states_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(state_from_proto(state_to_proto(s) as i32), Some(s));
        }
        assert_eq!(state_from_proto(0), None);
        assert_eq!(state_from_proto(99), None);
        for s in [
            ItemStatus::Pending,
            ItemStatus::Done,
            ItemStatus::Blocked,
            ItemStatus::Error,
        ] {
            assert_eq!(item_status_from_proto(item_status_to_proto(s) as i32), s);
        }
        let p = plan_to_proto("# T\n- [x] a\n  n\n");
        assert_eq!(p.title, "T");
        assert_eq!(p.items[0].note, "n");
    }
}
