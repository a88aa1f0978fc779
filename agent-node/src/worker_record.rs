//! Workers outlive their agent (each has its own session). A running worker is recorded in
//! `<data-dir>/running/<task>.run`; an agent that restarts re-attaches to every recorded worker
//! whose process is still the same one (pid and start time), and watches for its exit through
//! a pidfd.

use dispatch_core::process::alive;
use std::path::{Path, PathBuf};

/// One running worker, as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Task id.
    pub task_id: String,
    /// Worker run of the task.
    pub attempt: u32,
    /// Process id (also its process group and session id).
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (from /proc), against pid reuse.
    pub start_time: u64,
    /// `<workdir>/.dispatch/tasks/<id>`.
    pub task_dir: PathBuf,
    /// The worker's log file.
    pub log: PathBuf,
    /// Where its changes are, for a worktree or workspace task.
    pub changes: Option<crate::changes::Spec>,
    /// The structured stream its output is, when its backend has one.
    pub stream: Option<dispatch_core::stream::StreamFormat>,
    /// The CLI it runs, when dispatch reads that CLI's signals.
    pub cli: Option<dispatch_core::signals::Cli>,
    /// It runs under tool approvals: its hook asks this agent (after a restart too).
    pub approvals: bool,
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

impl RunRecord {
    fn path(dir: &Path, task: &str) -> PathBuf {
        dir.join(format!("{task}.run"))
    }

    /// Writes the record (atomically).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        dispatch_core::fs::private_dir(dir)?;
        let mut body = format!(
            "task={}\nattempt={}\npid={}\nstart_time={}\ntask_dir={}\nlog={}\n",
            self.task_id,
            self.attempt,
            self.pid,
            self.start_time,
            self.task_dir.display(),
            self.log.display()
        );
        if let Some(c) = &self.changes {
            body.push_str(&format!(
                "changes={}\n",
                serde_json::to_string(c).map_err(std::io::Error::other)?
            ));
        }
        if let Some(s) = self.stream {
            body.push_str(&format!("stream={}\n", s.name()));
        }
        if let Some(c) = self.cli {
            body.push_str(&format!("cli={}\n", c.name()));
        }
        if self.approvals {
            body.push_str("approvals=1\n");
        }
        dispatch_core::fs::write_private(&Self::path(dir, &self.task_id), body.as_bytes())
    }

    /// Forgets the record of `task`.
    pub fn remove(dir: &Path, task: &str) {
        let _ = std::fs::remove_file(Self::path(dir, task));
    }

    fn parse(text: &str) -> Option<RunRecord> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
        };
        let task_id = get("task")?.to_string();
        dispatch_core::task_id::validate(&task_id).ok()?;
        Some(RunRecord {
            task_id,
            attempt: get("attempt")?.parse().ok()?,
            pid: get("pid")?.parse().ok()?,
            start_time: get("start_time")?.parse().ok()?,
            task_dir: PathBuf::from(get("task_dir")?),
            log: PathBuf::from(get("log")?),
            changes: get("changes").and_then(|c| serde_json::from_str(c).ok()),
            stream: get("stream").and_then(dispatch_core::stream::StreamFormat::parse),
            cli: match get("cli") {
                Some("claude") => Some(dispatch_core::signals::Cli::Claude),
                Some("codex") => Some(dispatch_core::signals::Cli::Codex),
                _ => None,
            },
            approvals: get("approvals") == Some("1"),
        })
    }

    /// Every record in `dir`, split into workers still running (same process) and records of
    /// workers that are gone (those files are removed).
    pub fn load_all(dir: &Path) -> (Vec<RunRecord>, Vec<RunRecord>) {
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (live, gone);
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("run") {
                continue;
            }
            let Some(r) = std::fs::read_to_string(&path)
                .ok()
                .as_deref()
                .and_then(RunRecord::parse)
            else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if alive(r.pid) && start_time(r.pid) == Some(r.start_time) {
                live.push(r);
            } else {
                let _ = std::fs::remove_file(&path);
                gone.push(r);
            }
        }
        (live, gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_dead_workers_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let live = RunRecord {
            task_id: "t1".into(),
            attempt: 2,
            pid: me,
            start_time: start_time(me).unwrap(),
            task_dir: "/w/.dispatch/tasks/t1".into(),
            log: "/d/logs/t1.log".into(),
            changes: Some(crate::changes::Spec {
                dir: "/w/.dispatch/worktrees/t1".into(),
                base: String::new(),
                root: "/w".into(),
                title: "fix it\nnow".into(),
                deliver: crate::changes::Deliver::Push,
            }),
            stream: Some(dispatch_core::stream::StreamFormat::CodexJson),
            cli: Some(dispatch_core::signals::Cli::Codex),
            approvals: true,
        };
        live.save(dir.path()).unwrap();
        let dead = RunRecord {
            task_id: "t2".into(),
            pid: me,
            start_time: 1,
            ..live.clone()
        };
        dead.save(dir.path()).unwrap();
        let (l, g) = RunRecord::load_all(dir.path());
        assert_eq!(l, vec![live]);
        assert_eq!(g.len(), 1, "a reused pid is not our worker");
        assert!(!dir.path().join("t2.run").exists());
    }
}
