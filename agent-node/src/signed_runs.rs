//! The signed tasks this node has run, so a coordinator cannot run a completed one again. A
//! signed spec says what may run, not how often: a compromised coordinator could send a
//! finished task's spec back (as a "retry") until it expires. The node keeps, per spec (by the
//! SHA-256 of its signed bytes), which task it was and whether a run of it completed, in an
//! append-only file in its data dir; a spec whose run completed here is refused. A user who
//! wants it run again dispatches it again (a new signature, a new spec).
//!
//! One writer: the runner, through this struct's lock; entries end with their spec's expiry.

use sha2::Digest;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Entry {
    task: String,
    expires_ms: i64,
    completed: bool,
}

#[derive(Debug, Default)]
struct State {
    by_hash: HashMap<String, Entry>,
    /// The spec of each task's latest run here.
    by_task: HashMap<String, String>,
}

/// The ledger (see the module docs).
#[derive(Debug)]
pub struct SignedRuns {
    path: PathBuf,
    state: Mutex<State>,
}

/// The SHA-256 of a spec's signed bytes, in hex.
pub fn spec_hash(spec: &[u8]) -> String {
    sha2::Sha256::digest(spec)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SignedRuns {
    /// Reads the ledger at `path` (none yet: empty), dropping expired entries.
    pub fn open(path: &Path, now_ms: i64) -> SignedRuns {
        let mut st = State::default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["start", hash, task, expires] => {
                    let expires_ms = expires.parse().unwrap_or(0);
                    let completed = st.by_hash.get(*hash).is_some_and(|e| e.completed);
                    st.by_hash.insert(
                        hash.to_string(),
                        Entry {
                            task: task.to_string(),
                            expires_ms,
                            completed,
                        },
                    );
                    st.by_task.insert(task.to_string(), hash.to_string());
                }
                ["done", hash] => {
                    if let Some(e) = st.by_hash.get_mut(*hash) {
                        e.completed = true;
                    }
                }
                _ => {}
            }
        }
        st.by_hash.retain(|_, e| e.expires_ms > now_ms);
        let live: std::collections::HashSet<String> = st.by_hash.keys().cloned().collect();
        st.by_task.retain(|_, h| live.contains(h));
        let runs = SignedRuns {
            path: path.to_path_buf(),
            state: Mutex::new(st),
        };
        runs.rewrite();
        runs
    }

    /// Writes the live entries afresh (at open: the file does not grow past what is live).
    fn rewrite(&self) {
        let st = self.state.lock().unwrap();
        let mut out = String::new();
        for (hash, e) in &st.by_hash {
            out.push_str(&format!("start {hash} {} {}\n", e.task, e.expires_ms));
            if e.completed {
                out.push_str(&format!("done {hash}\n"));
            }
        }
        if let Err(e) = dispatch_core::fs::write_private(&self.path, out.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the signed-runs ledger");
        }
    }

    fn append(&self, line: &str) -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Notes that a run of task `task` from the spec `hash` (good until `expires_ms`) starts;
    /// an error when a run of that spec already completed on this node.
    pub fn start(&self, hash: &str, task: &str, expires_ms: i64) -> Result<(), String> {
        let mut st = self.state.lock().unwrap();
        if st.by_hash.get(hash).is_some_and(|e| e.completed) {
            return Err(format!(
                "task `{task}` already completed on this node from this very signed spec; a signed task runs to completion once (the coordinator asked for it again — a retry, or a coordinator that is not to be trusted). Dispatch it again to sign a new run"
            ));
        }
        // Task ids are checked names (no spaces), so the line reads back as written.
        self.append(&format!("start {hash} {task} {expires_ms}\n"))?;
        st.by_hash.insert(
            hash.to_string(),
            Entry {
                task: task.to_string(),
                expires_ms,
                completed: false,
            },
        );
        st.by_task.insert(task.to_string(), hash.to_string());
        Ok(())
    }

    /// Notes that task `task`'s run here completed (when it ran from a signed spec).
    pub fn completed(&self, task: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(hash) = st.by_task.get(task).cloned() else {
            return;
        };
        if let Some(e) = st.by_hash.get_mut(&hash) {
            e.completed = true;
        }
        drop(st);
        if let Err(e) = self.append(&format!("done {hash}\n")) {
            tracing::warn!(%task, error = %e, "cannot note a completed signed run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_spec_is_refused_here_for_as_long_as_it_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signed-runs");
        let r = SignedRuns::open(&path, 0);
        let (a, b) = (spec_hash(b"spec a"), spec_hash(b"spec b"));
        r.start(&a, "t-a", 1000).unwrap();
        // Not completed: it may run again (a retry of a failed run).
        r.start(&a, "t-a", 1000).unwrap();
        r.completed("t-a");
        let e = r.start(&a, "t-a", 1000).unwrap_err();
        assert!(e.contains("already completed") && e.contains("t-a"), "{e}");
        r.start(&b, "t-b", 1000).unwrap();
        // Across a restart of the agent.
        let again = SignedRuns::open(&path, 10);
        assert!(again.start(&a, "t-a", 1000).is_err());
        again.start(&b, "t-b", 1000).unwrap();
        // Past its expiry the spec is refused anyway (by its signature check); the entry goes.
        let later = SignedRuns::open(&path, 2000);
        assert!(later.state.lock().unwrap().by_hash.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
