//! Picks the node for a task: pinned node, backend, free capacity, least loaded first.

use crate::model::TaskRecord;
use crate::registry::NodeSlot;
use dispatch_core::backend::{BUILTIN, SIM};

/// The backend a node would use for a task that named none: the seed's CLIs in order of
/// preference, then any custom backend; never the scripted `sim` worker.
pub fn preferred_backend(backends: &[String]) -> Option<&str> {
    for b in BUILTIN {
        if backends.iter().any(|n| n == b.name) {
            return Some(b.name);
        }
    }
    backends.iter().map(String::as_str).find(|b| *b != SIM)
}

/// The backend `task` would run with on a node offering `backends`, if it can run there.
pub fn backend_on(task: &TaskRecord, backends: &[String]) -> Option<String> {
    if task.backend.is_empty() {
        preferred_backend(backends).map(str::to_string)
    } else {
        backends
            .contains(&task.backend)
            .then(|| task.backend.clone())
    }
}

/// True when a node with `labels` matches the task's `--pool` selector.
pub fn in_pool(task: &TaskRecord, labels: &std::collections::BTreeMap<String, String>) -> bool {
    task.pool.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// True when `backend` on a node that lists `models` can run the task's model. Only backends
/// that get `--model` care; a node that lists no models accepts any.
pub fn runs_model(task: &TaskRecord, backend: &str, models: Option<&Vec<String>>) -> bool {
    task.model.is_empty()
        || !dispatch_core::backend::appends_model(backend)
        || models.is_none_or(|m| m.is_empty() || m.contains(&task.model))
}

/// True when a node could ever run `task` (ignoring how busy it is).
pub fn can_run(task: &TaskRecord, s: &NodeSlot) -> bool {
    (task.remote.is_empty() || s.name == task.remote)
        && task
            .fallback
            .as_ref()
            .is_none_or(|f| f.avoid_node.is_empty() || f.avoid_node != s.name)
        && crate::model::node_allowed(&task.allowed_nodes, &s.name)
        && in_pool(task, &s.labels)
        && backend_on(task, &s.backends).is_some_and(|b| runs_model(task, &b, s.models.get(&b)))
}

/// Chooses a node with a free slot for `task`: (index into `slots`, backend).
/// Among eligible nodes the least loaded (running / capacity) wins; ties go by name.
pub fn route(task: &TaskRecord, slots: &[NodeSlot]) -> Option<(usize, String)> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.draining && s.running < s.capacity && can_run(task, s))
        .filter_map(|(i, s)| backend_on(task, &s.backends).map(|b| (i, b)))
        .filter(|(i, b)| {
            let s = &slots[*i];
            s.backend_caps
                .get(b)
                .is_none_or(|cap| s.backend_running.get(b).copied().unwrap_or(0) < *cap)
        })
        .min_by(|(a, _), (b, _)| {
            let (sa, sb) = (&slots[*a], &slots[*b]);
            // Compare running/capacity without floats: ra/ca < rb/cb  <=>  ra*cb < rb*ca.
            let la = u64::from(sa.running) * u64::from(sb.capacity.max(1));
            let lb = u64::from(sb.running) * u64::from(sa.capacity.max(1));
            la.cmp(&lb)
                .then(sa.running.cmp(&sb.running))
                .then(sa.name.cmp(&sb.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, backends: &[&str], capacity: u32, running: u32) -> NodeSlot {
        NodeSlot {
            name: name.into(),
            epoch: 1,
            backends: backends.iter().map(|s| s.to_string()).collect(),
            labels: Default::default(),
            capacity,
            running,
            backend_caps: Default::default(),
            backend_running: Default::default(),
            models: Default::default(),
            draining: false,
        }
    }

    fn task(remote: &str, backend: &str) -> TaskRecord {
        TaskRecord {
            remote: remote.into(),
            backend: backend.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pinned_backend_capacity_and_load() {
        let slots = vec![
            slot("a", &["sim", "claude"], 2, 1),
            slot("b", &["sim"], 4, 1),
            slot("c", &["codex", "sim"], 1, 1),
        ];
        assert_eq!(route(&task("", "sim"), &slots), Some((1, "sim".into())));
        assert_eq!(route(&task("a", "sim"), &slots), Some((0, "sim".into())));
        assert_eq!(route(&task("c", "sim"), &slots), None, "c is full");
        assert_eq!(
            route(&task("", ""), &slots),
            Some((0, "claude".into())),
            "only a has a real CLI with room"
        );
        assert_eq!(route(&task("", "cursor"), &slots), None);
        assert_eq!(route(&task("zz", "sim"), &slots), None);
        let tie = vec![slot("y", &["sim"], 1, 0), slot("x", &["sim"], 1, 0)];
        assert_eq!(
            route(&task("", "sim"), &tie).unwrap().0,
            1,
            "ties go by name"
        );
    }

    #[test]
    fn pools_caps_and_models() {
        let mut gpu = slot("gpu", &["sim", "codex"], 4, 1);
        gpu.labels = [
            ("gpu".to_string(), "a100".to_string()),
            ("zone".to_string(), "eu".to_string()),
        ]
        .into();
        gpu.backend_caps = [("codex".to_string(), 1)].into();
        gpu.backend_running = [("codex".to_string(), 1)].into();
        gpu.models = [("codex".to_string(), vec!["gpt-5.2".to_string()])].into();
        let cpu = slot("cpu", &["sim", "codex"], 4, 0);
        let slots = vec![gpu, cpu];
        let mut t = task("", "sim");
        t.pool = [("gpu".to_string(), "a100".to_string())].into();
        assert_eq!(route(&t, &slots).unwrap().0, 0, "only gpu is in the pool");
        t.pool = [("gpu".to_string(), "h100".to_string())].into();
        assert_eq!(route(&t, &slots), None);
        let mut t = task("gpu", "codex");
        assert_eq!(
            route(&t, &slots),
            None,
            "codex is at its per-backend cap on gpu"
        );
        t.remote = String::new();
        assert_eq!(route(&t, &slots).unwrap().0, 1);
        t.model = "gpt-9".into();
        assert!(
            !can_run(&t, &slots[0]),
            "gpu's codex lists its models and gpt-9 is not one"
        );
        assert!(can_run(&t, &slots[1]), "cpu lists none: any model");
    }

    #[test]
    fn preference() {
        let b = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            preferred_backend(&b(&["sim", "codex", "claude"])),
            Some("claude")
        );
        assert_eq!(preferred_backend(&b(&["sim", "mine"])), Some("mine"));
        assert_eq!(preferred_backend(&b(&["sim"])), None);
    }
}
