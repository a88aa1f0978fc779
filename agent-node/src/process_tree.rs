//! A worker's whole process tree, for stopping it. A worker runs in its own session and
//! process group, but the CLIs it runs do not keep to it: Claude Code starts every shell command
//! in a session of its own (`setsid`), so signalling the worker's process group misses them,
//! and once the CLI exits they are orphans. The tree is therefore found by parent links in
//! /proc while the CLI is alive, remembered (with each process's start time, against pid
//! reuse), and each member's own process group is signalled too.

use dispatch_core::process::signal_group;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap};

/// A process: pid and start time (clock ticks since boot).
type Proc = (u32, u64);

/// Every process now below `root` (not `root` itself), by parent links.
pub fn descendants(root: u32) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(ppid), Some(start)) = (
            fields.get(1).and_then(|p| p.parse::<u32>().ok()),
            fields.get(19).and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        children.entry(ppid).or_default().push((pid, start));
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut seen = BTreeSet::from([root]);
    while let Some(p) = todo.pop() {
        for &(c, start) in children.get(&p).into_iter().flatten() {
            if seen.insert(c) {
                out.push((c, start));
                todo.push(c);
            }
        }
    }
    out
}

/// The tree of one worker, as far as it has been seen.
#[derive(Debug, Default)]
pub struct Tree {
    root: u32,
    known: Vec<Proc>,
}

impl Tree {
    /// The tree below worker `root` (its session and process group leader).
    pub fn of(root: u32) -> Tree {
        Tree {
            root,
            known: Vec::new(),
        }
    }

    /// Looks for members again (they are kept after they are orphaned) and sends `sig` to the
    /// worker's process group and to each member still the same process, and its group.
    pub fn signal(&mut self, sig: Signal) {
        for p in descendants(self.root) {
            if !self.known.iter().any(|k| k.0 == p.0) {
                self.known.push(p);
            }
        }
        signal_group(self.root, sig);
        for &(pid, start) in &self.known {
            if crate::worker_record::start_time(pid) != Some(start) {
                continue;
            }
            let _ = kill(Pid::from_raw(pid as i32), sig);
            // What the member started in its own group goes too (its group, not ours).
            if let Ok(pg) = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32)))
                && pg.as_raw() as u32 == pid
            {
                signal_group(pid, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_in_its_own_session_is_found_and_stopped_after_its_parent_is_gone() {
        // A worker (own session) whose child starts a grandchild in a session of its own, as
        // Claude Code starts its shell commands.
        let mut worker = std::process::Command::new("sh");
        worker.arg("-c").arg("setsid sh -c 'sleep 300' & sleep 300");
        dispatch_core::process::in_new_session(&mut worker);
        let mut worker = worker.spawn().unwrap();
        let root = worker.id();
        let found = (0..200)
            .find_map(|_| {
                let d = descendants(root);
                if d.len() >= 3 {
                    return Some(d);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            })
            .expect("the tree");
        let mut tree = Tree::of(root);
        tree.signal(Signal::SIGKILL);
        let _ = worker.wait();
        std::thread::sleep(std::time::Duration::from_millis(100));
        for (pid, start) in found {
            assert!(
                !(dispatch_core::process::alive(pid)
                    && crate::worker_record::start_time(pid) == Some(start)),
                "process {pid} of the tree survived"
            );
        }
    }
}
