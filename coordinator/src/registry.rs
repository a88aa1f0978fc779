//! Live node sessions: at most one per node name, each with its epoch, its outbound channel,
//! the wake-up of its command pump, and the tasks holding its slots.
//!
//! One std mutex with short critical sections; nothing awaits while holding it.

use crate::model::NodeRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// A Hello that has not finished registering blocks another for the same name this long.
const JOINING_TIMEOUT: Duration = Duration::from_secs(30);

struct Session {
    record: NodeRecord,
    conn_id: u64,
    epoch: u64,
    addr: String,
    started_ms: i64,
    last_seen_ms: i64,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    /// Task → backend of every task holding a slot.
    running: HashMap<String, String>,
    /// The node said it is draining.
    draining: bool,
}

enum Entry {
    /// A Hello is registering this name.
    Joining(Instant),
    Live(Box<Session>),
}

/// What the router needs to know about one connected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSlot {
    /// Node name.
    pub name: String,
    /// Its live session's epoch.
    pub epoch: u64,
    /// Backend names it offers.
    pub backends: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Max concurrent tasks.
    pub capacity: u32,
    /// Tasks holding a slot now.
    pub running: u32,
    /// Per-backend caps (absent or 0: none).
    pub backend_caps: BTreeMap<String, u32>,
    /// Tasks holding a slot, per backend.
    pub backend_running: BTreeMap<String, u32>,
    /// Models each backend lists (empty: unknown, any).
    pub models: BTreeMap<String, Vec<String>>,
    /// Draining: takes no new task.
    pub draining: bool,
}

/// A live session as `dispatch nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Tasks holding a slot.
    pub running: u32,
    /// Last heard from, ms since the epoch.
    pub last_seen_ms: i64,
    /// Peer address.
    pub addr: String,
    /// Session start.
    pub started_ms: i64,
    /// Session epoch.
    pub epoch: u64,
    /// The node said it is draining.
    pub draining: bool,
}

/// Why a Hello cannot take a node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A live session holds it.
    Live(Liveness),
    /// Another Hello is registering it right now.
    Joining,
}

/// A registered session as its stream's tasks hold it.
#[derive(Debug)]
pub struct Granted {
    /// Connection id (to end exactly this session).
    pub conn_id: u64,
    /// Becomes true when the session must end (superseded, or coordinator stopping).
    pub stop: watch::Receiver<bool>,
    /// Wakes the session's command pump.
    pub wake: Arc<Notify>,
}

/// The sessions live right now.
#[derive(Default)]
pub struct NodeRegistry {
    nodes: Mutex<HashMap<String, Entry>>,
    next_conn: AtomicU64,
    /// Nodes an admin cordoned (a copy of the store's, loaded at start).
    cordoned: Mutex<std::collections::HashSet<String>>,
}

/// The right to register `name`, held while its Hello is processed; dropped without
/// [`Claim::activate`], it frees the name again.
pub struct Claim<'a> {
    registry: &'a NodeRegistry,
    name: String,
    done: bool,
    superseded: Option<u64>,
}

impl Claim<'_> {
    /// The epoch of the silent session this claim replaced, if it replaced one: should the
    /// new session fail to open, that one's tasks still need their silence handled.
    pub fn superseded(&self) -> Option<u64> {
        self.superseded
    }

    /// Makes the session live.
    #[allow(clippy::too_many_arguments)]
    pub fn activate(
        mut self,
        record: NodeRecord,
        epoch: u64,
        addr: String,
        now_ms: i64,
        running: HashMap<String, String>,
    ) -> Granted {
        let conn_id = self.registry.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let session = Session {
            record,
            conn_id,
            epoch,
            addr,
            started_ms: now_ms,
            last_seen_ms: now_ms,
            wake: Arc::clone(&wake),
            stop,
            running,
            draining: false,
        };
        self.registry
            .nodes
            .lock()
            .unwrap()
            .insert(self.name.clone(), Entry::Live(Box::new(session)));
        self.done = true;
        Granted {
            conn_id,
            stop: stop_rx,
            wake,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut nodes = self.registry.nodes.lock().unwrap();
            if matches!(nodes.get(&self.name), Some(Entry::Joining(_))) {
                nodes.remove(&self.name);
            }
        }
    }
}

impl NodeRegistry {
    /// Claims `name` for a new session. A live session that has been heard from within
    /// `silent_after` keeps the name; a silent one is superseded (told to stop).
    pub fn claim(
        &self,
        name: &str,
        now_ms: i64,
        silent_after: Duration,
    ) -> Result<Claim<'_>, Refused> {
        let mut nodes = self.nodes.lock().unwrap();
        let mut superseded = None;
        match nodes.get(name) {
            Some(Entry::Live(s)) if now_ms - s.last_seen_ms <= silent_after.as_millis() as i64 => {
                return Err(Refused::Live(liveness(s)));
            }
            Some(Entry::Live(s)) => {
                tracing::warn!(node = name, epoch = s.epoch, "superseding a silent session");
                let _ = s.stop.send(true);
                superseded = Some(s.epoch);
            }
            Some(Entry::Joining(since)) if since.elapsed() < JOINING_TIMEOUT => {
                return Err(Refused::Joining);
            }
            _ => {}
        }
        nodes.insert(name.to_string(), Entry::Joining(Instant::now()));
        Ok(Claim {
            registry: self,
            name: name.to_string(),
            done: false,
            superseded,
        })
    }

    /// Forgets session `conn_id` of `name`, unless another replaced it. Returns its epoch when
    /// it was the live session (the caller then starts the node's silence handling).
    pub fn disconnect(&self, name: &str, conn_id: u64) -> Option<u64> {
        let mut nodes = self.nodes.lock().unwrap();
        match nodes.get(name) {
            Some(Entry::Live(s)) if s.conn_id == conn_id => {
                let epoch = s.epoch;
                let _ = s.stop.send(true);
                nodes.remove(name);
                Some(epoch)
            }
            _ => None,
        }
    }

    fn with_live<R>(&self, name: &str, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        match self.nodes.lock().unwrap().get_mut(name) {
            Some(Entry::Live(s)) => Some(f(s)),
            _ => None,
        }
    }

    /// True when the node has a live session.
    pub fn is_connected(&self, name: &str) -> bool {
        self.with_live(name, |_| ()).is_some()
    }

    /// Number of live sessions.
    pub fn connected_count(&self) -> usize {
        self.nodes
            .lock()
            .unwrap()
            .values()
            .filter(|e| matches!(e, Entry::Live(_)))
            .count()
    }

    /// Marks node `name` cordoned (or not): it takes no new task, whatever its sessions.
    pub fn set_cordoned(&self, name: &str, cordoned: bool) {
        let mut c = self.cordoned.lock().unwrap();
        if cordoned {
            c.insert(name.to_string());
        } else {
            c.remove(name);
        }
    }

    /// True when an admin cordoned node `name`.
    pub fn is_cordoned(&self, name: &str) -> bool {
        self.cordoned.lock().unwrap().contains(name)
    }

    /// Capacity view of every connected node, by name.
    pub fn slots(&self) -> Vec<NodeSlot> {
        // Read under its lock, never copied: the scheduler asks for slots on every pass.
        let cordoned = self.cordoned.lock().unwrap();
        let nodes = self.nodes.lock().unwrap();
        let mut out: Vec<NodeSlot> = nodes
            .values()
            .filter_map(|e| match e {
                Entry::Live(c) => Some(c),
                Entry::Joining(_) => None,
            })
            .map(|c| NodeSlot {
                name: c.record.name.clone(),
                epoch: c.epoch,
                // A backend its node cannot drive (a CLI too old, root) is never routed to.
                backends: c
                    .record
                    .backends
                    .iter()
                    .filter(|b| b.error.is_empty())
                    .map(|b| b.name.clone())
                    .collect(),
                labels: c.record.labels.clone(),
                capacity: c.record.capacity,
                running: c.running.len() as u32,
                backend_caps: c
                    .record
                    .backends
                    .iter()
                    .filter(|b| b.max_tasks > 0)
                    .map(|b| (b.name.clone(), b.max_tasks))
                    .collect(),
                backend_running: c.running.values().fold(BTreeMap::new(), |mut m, b| {
                    *m.entry(b.clone()).or_insert(0) += 1;
                    m
                }),
                models: c
                    .record
                    .backends
                    .iter()
                    .map(|b| (b.name.clone(), b.models.clone()))
                    .collect(),
                draining: c.draining || cordoned.contains(&c.record.name),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Records whether session `conn_id` of `name` says it is draining; true when it just
    /// stopped (it takes tasks again: the caller runs a scheduling pass).
    pub fn set_draining(&self, name: &str, conn_id: u64, draining: bool) -> bool {
        self.with_live(name, |s| {
            if s.conn_id == conn_id && s.draining != draining {
                tracing::info!(node = name, draining, "node drain state");
                s.draining = draining;
                return !draining;
            }
            false
        })
        .unwrap_or(false)
    }

    /// Records that session `conn_id` of `name` was heard from now.
    pub fn touch(&self, name: &str, conn_id: u64, now_ms: i64) {
        self.with_live(name, |s| {
            if s.conn_id == conn_id {
                s.last_seen_ms = now_ms;
            }
        });
    }

    /// The live session of a node, as `dispatch nodes` shows it.
    pub fn liveness(&self, name: &str) -> Option<Liveness> {
        self.with_live(name, |s| liveness(s))
    }

    /// Marks a slot of `name` taken by `task` (running on `backend`).
    pub fn reserve(&self, name: &str, task: &str, backend: &str) {
        self.with_live(name, |s| {
            s.running.insert(task.to_string(), backend.to_string());
        });
    }

    /// Frees the slot `task` held on `name`. Returns true when it held one.
    pub fn release(&self, name: &str, task: &str) -> bool {
        self.with_live(name, |s| s.running.remove(task).is_some())
            .unwrap_or(false)
    }

    /// Wakes the command pump of `name`'s live session (new commands are stored for it).
    pub fn wake(&self, name: &str) {
        self.with_live(name, |s| s.wake.notify_one());
    }
}

fn liveness(s: &Session) -> Liveness {
    Liveness {
        running: s.running.len() as u32,
        last_seen_ms: s.last_seen_ms,
        addr: s.addr.clone(),
        started_ms: s.started_ms,
        epoch: s.epoch,
        draining: s.draining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            capacity: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_live_name_is_refused_and_a_silent_one_superseded() {
        let r = NodeRegistry::default();
        let silent_after = Duration::from_secs(9);
        let g = r.claim("a", 1_000, silent_after).unwrap().activate(
            record("a"),
            1,
            "10.0.0.1:5".into(),
            1_000,
            HashMap::new(),
        );
        match r.claim("a", 5_000, silent_after) {
            Err(Refused::Live(l)) => assert_eq!((l.addr.as_str(), l.epoch), ("10.0.0.1:5", 1)),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Heard from at 8 s: still live at 16 s; silent at 18 s.
        r.touch("a", g.conn_id, 8_000);
        assert!(r.claim("a", 16_000, silent_after).is_err());
        let claim = r.claim("a", 18_000, silent_after).unwrap();
        assert!(*g.stop.borrow(), "the silent session is told to stop");
        assert!(matches!(
            r.claim("a", 18_000, silent_after),
            Err(Refused::Joining)
        ));
        drop(claim);
        assert!(!r.is_connected("a"));
        assert_eq!(r.disconnect("a", g.conn_id), None, "it was replaced");
        assert!(r.claim("a", 18_000, silent_after).is_ok());
    }
}
