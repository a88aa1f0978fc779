//! The event spool: every task event is appended to a per-task file before it is sent and
//! dropped only once the coordinator acks it, so nothing is lost across reconnects and agent
//! restarts.
//!
//! File format: `spool/<task-id>.events`, a sequence of `u32` little-endian length + encoded
//! `TaskEvent`. Appends are not fsynced (they survive a process crash, not an OS crash, like
//! the coordinator's WAL with synchronous=NORMAL). A file whose acked part passes 1 MiB (and
//! half the file) is rewritten with only the unacked events, so a long task's spool stays the
//! size of what is in flight.

use dispatch_proto::v1;
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Default)]
struct TaskSpool {
    next_seq: u64,
    acked: u64,
    /// Unacked events with their size in the file.
    unacked: VecDeque<(v1::TaskEvent, u64)>,
    finished: bool,
    workdir: String,
    /// Bytes in the file, and of them those of unacked events.
    file_bytes: u64,
    live_bytes: u64,
}

/// A spool file is rewritten once its acked part passes this (and half the file).
const COMPACT_AFTER: u64 = 1024 * 1024;

fn record(ev: &v1::TaskEvent) -> Vec<u8> {
    let body = ev.encode_to_vec();
    let mut rec = Vec::with_capacity(body.len() + 4);
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

/// How many forgotten tasks' last seqs are remembered (see [`EventSpool::begin`]).
const REMEMBER_FORGOTTEN: usize = 4096;

/// Unacked events of every task, backed by files.
pub struct EventSpool {
    dir: PathBuf,
    tasks: BTreeMap<String, TaskSpool>,
    /// The last seq of tasks forgotten (finished, all acked), oldest first: a next run's
    /// Assign may carry a `last_seq` the coordinator read before it committed the last
    /// events of the run before (a retry made while that run was still being stopped), and
    /// a seq must never be used twice for a task (the coordinator would drop the second as a
    /// duplicate: the new run's Started was lost that way).
    forgotten: VecDeque<(String, u64)>,
}

fn is_final(ev: &v1::TaskEvent) -> bool {
    matches!(
        ev.kind,
        Some(v1::task_event::Kind::Exited(_)) | Some(v1::task_event::Kind::StartFailed(_))
    )
}

impl EventSpool {
    /// Opens the spool directory, loading every event left by an earlier run.
    pub fn open(dir: &Path) -> std::io::Result<EventSpool> {
        dispatch_core::fs::private_dir(dir)?;
        let mut tasks = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".events"))
            else {
                continue;
            };
            if dispatch_core::task_id::validate(id).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            std::fs::File::open(&path)?.read_to_end(&mut bytes)?;
            let mut spool = TaskSpool::default();
            let mut at = 0;
            // A torn last record (crash mid-write) is ignored.
            while at + 4 <= bytes.len() {
                let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                if at + 4 + len > bytes.len() {
                    break;
                }
                if let Ok(ev) = v1::TaskEvent::decode(&bytes[at + 4..at + 4 + len]) {
                    spool.next_seq = spool.next_seq.max(ev.seq);
                    spool.finished |= is_final(&ev);
                    if let Some(v1::task_event::Kind::Started(st)) = &ev.kind {
                        spool.workdir = st.workdir.clone();
                    }
                    spool.live_bytes += 4 + len as u64;
                    spool.unacked.push_back((ev, 4 + len as u64));
                }
                at += 4 + len;
            }
            spool.file_bytes = at as u64;
            tasks.insert(id.to_string(), spool);
        }
        Ok(EventSpool {
            dir: dir.to_path_buf(),
            tasks,
            forgotten: VecDeque::new(),
        })
    }

    fn path(&self, task: &str) -> PathBuf {
        self.dir.join(format!("{task}.events"))
    }

    /// Assigns the next seq to `ev`, appends it to the task's file and keeps it until acked.
    pub fn append(&mut self, mut ev: v1::TaskEvent) -> std::io::Result<v1::TaskEvent> {
        let path = self.path(&ev.task_id);
        let spool = self.tasks.entry(ev.task_id.clone()).or_default();
        spool.next_seq += 1;
        ev.seq = spool.next_seq;
        spool.finished |= is_final(&ev);
        let rec = record(&ev);
        let mut f = dispatch_core::fs::private_append(&path)?;
        f.write_all(&rec)?;
        spool.file_bytes += rec.len() as u64;
        spool.live_bytes += rec.len() as u64;
        spool.unacked.push_back((ev.clone(), rec.len() as u64));
        Ok(ev)
    }

    /// Prepares for a new worker run of `task` whose events continue after `last_seq` (the
    /// coordinator's highest committed seq of the task).
    pub fn begin(&mut self, task: &str, last_seq: u64) {
        let mut last_seq = last_seq;
        if let Some(at) = self.forgotten.iter().position(|(t, _)| t == task) {
            let (_, seq) = self.forgotten.remove(at).expect("found above");
            last_seq = last_seq.max(seq);
        }
        let spool = self.tasks.entry(task.to_string()).or_default();
        spool.next_seq = spool.next_seq.max(last_seq);
        spool.acked = spool.acked.max(last_seq);
        spool.finished = false;
    }

    /// Bytes of worker output spooled for `task` (right after [`EventSpool::open`], before any
    /// ack, that is all the output of its current worker run: where to resume reading its log).
    pub fn log_bytes(&self, task: &str) -> u64 {
        self.tasks.get(task).map_or(0, |s| {
            s.unacked
                .iter()
                .filter_map(|(e, _)| match &e.kind {
                    Some(v1::task_event::Kind::Log(l)) => Some(l.data.len() as u64),
                    _ => None,
                })
                .sum()
        })
    }

    /// Drops every event of `task` up to `seq`. A finished task with nothing left unacked is
    /// forgotten and its file removed.
    pub fn ack(&mut self, task: &str, seq: u64) {
        let Some(spool) = self.tasks.get_mut(task) else {
            return;
        };
        spool.acked = spool.acked.max(seq);
        // The coordinator may know more than we did (after our restart): continue after it.
        spool.next_seq = spool.next_seq.max(seq);
        while let Some((_, size)) = spool.unacked.front().filter(|(e, _)| e.seq <= seq) {
            spool.live_bytes -= size;
            spool.unacked.pop_front();
        }
        if spool.finished && spool.unacked.is_empty() {
            let next_seq = spool.next_seq;
            self.tasks.remove(task);
            let _ = std::fs::remove_file(self.path(task));
            if self.forgotten.len() == REMEMBER_FORGOTTEN {
                self.forgotten.pop_front();
            }
            self.forgotten.push_back((task.to_string(), next_seq));
            return;
        }
        let dead = spool.file_bytes - spool.live_bytes;
        if dead > COMPACT_AFTER && dead > spool.live_bytes {
            let path = self.path(task);
            let spool = self.tasks.get_mut(task).expect("looked up above");
            let mut bytes = Vec::with_capacity(spool.live_bytes as usize);
            for (e, _) in &spool.unacked {
                bytes.extend(record(e));
            }
            match dispatch_core::fs::write_private(&path, &bytes) {
                Ok(()) => spool.file_bytes = bytes.len() as u64,
                Err(e) => {
                    tracing::warn!(task, error = %e, "cannot compact the event spool; it keeps growing until the task ends")
                }
            }
        }
    }

    /// Events not yet acked, every task in order.
    pub fn unacked(&self) -> impl Iterator<Item = &v1::TaskEvent> {
        self.tasks
            .values()
            .flat_map(|s| s.unacked.iter().map(|(e, _)| e))
    }

    /// The unacked events of `task` from seq `from` on, for a coordinator that is missing
    /// them; `Err(next)` when the spool no longer has event `from`: it has nothing before
    /// `next` (`next == from` when it knows nothing of the task at all).
    pub fn resend_from(&self, task: &str, from: u64) -> Result<Vec<v1::TaskEvent>, u64> {
        let Some(spool) = self.tasks.get(task) else {
            return Err(from);
        };
        match spool.unacked.front() {
            Some((first, _)) if first.seq <= from => Ok(spool
                .unacked
                .iter()
                .filter(|(e, _)| e.seq >= from)
                .map(|(e, _)| e.clone())
                .collect()),
            Some((first, _)) => Err(first.seq),
            // Everything up to next_seq was sent and acked: what was asked for is gone, unless
            // it was never made.
            None if spool.next_seq >= from => Err(spool.next_seq + 1),
            None => Err(from),
        }
    }

    /// Bytes of the spool file of `task` (for tests and diagnostics).
    pub fn file_bytes(&self, task: &str) -> u64 {
        self.tasks.get(task).map_or(0, |s| s.file_bytes)
    }

    /// (task, highest seq) of every task the spool knows.
    pub fn cursors(&self) -> Vec<(String, u64)> {
        self.tasks
            .iter()
            .map(|(id, s)| (id.clone(), s.next_seq))
            .collect()
    }

    /// Tasks with spooled events whose worker end was never recorded: (task, workdir the
    /// worker started in, or "" when it never started).
    pub fn unfinished(&self) -> Vec<(String, String)> {
        self.tasks
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(id, s)| (id.clone(), s.workdir.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(task: &str, kind: v1::task_event::Kind) -> v1::TaskEvent {
        v1::TaskEvent {
            task_id: task.into(),
            seq: 0,
            at_ms: 0,
            attempt: 1,
            kind: Some(kind),
        }
    }

    #[test]
    fn survives_reopen_and_forgets_finished_tasks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = EventSpool::open(dir.path()).unwrap();
            let a = s
                .append(ev(
                    "t",
                    v1::task_event::Kind::Log(v1::LogChunk {
                        data: b"1".to_vec(),
                    }),
                ))
                .unwrap();
            let b = s
                .append(ev(
                    "t",
                    v1::task_event::Kind::Log(v1::LogChunk {
                        data: b"2".to_vec(),
                    }),
                ))
                .unwrap();
            assert_eq!((a.seq, b.seq), (1, 2));
            s.ack("t", 1);
            assert_eq!(s.unacked().count(), 1);
        }
        let mut s = EventSpool::open(dir.path()).unwrap();
        // Acks are not persisted: the coordinator's Welcome says what it has.
        assert_eq!(s.unacked().count(), 2);
        s.ack("t", 1);
        assert_eq!(s.unfinished(), vec![("t".to_string(), String::new())]);
        let c = s
            .append(ev(
                "t",
                v1::task_event::Kind::Exited(v1::WorkerExited::default()),
            ))
            .unwrap();
        assert_eq!(c.seq, 3);
        s.ack("t", 3);
        assert!(s.cursors().is_empty(), "the finished task is forgotten");
        assert!(!dir.path().join("t.events").exists());
    }

    fn log(n: usize) -> v1::task_event::Kind {
        v1::task_event::Kind::Log(v1::LogChunk {
            data: vec![b'x'; n],
        })
    }

    /// A retry made while the run before was still being stopped carries the seq the
    /// coordinator had then; the spool forgot that run (all acked) before the Assign came.
    /// The new run still continues after the old run's last seq, never reusing one.
    #[test]
    fn a_next_run_never_reuses_a_forgotten_runs_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = EventSpool::open(dir.path()).unwrap();
        s.begin("t", 0);
        for _ in 0..2 {
            s.append(ev("t", log(1))).unwrap();
        }
        let exited = v1::task_event::Kind::Exited(v1::WorkerExited::default());
        assert_eq!(s.append(ev("t", exited)).unwrap().seq, 3);
        s.ack("t", 3);
        assert!(
            s.cursors().is_empty(),
            "a finished, acked task is forgotten"
        );
        // The Assign of run 2 says the coordinator had seq 2.
        s.begin("t", 2);
        assert_eq!(s.append(ev("t", log(1))).unwrap().seq, 4);
        // Once remembered, a coordinator that knows more still wins.
        let exited = v1::task_event::Kind::Exited(v1::WorkerExited::default());
        s.append(ev("t", exited)).unwrap();
        s.ack("t", 5);
        s.begin("t", 9);
        assert_eq!(s.append(ev("t", log(1))).unwrap().seq, 10);
    }

    #[test]
    fn resends_what_it_has_and_says_what_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = EventSpool::open(dir.path()).unwrap();
        for _ in 0..5 {
            s.append(ev("t", log(1))).unwrap();
        }
        let seqs = |r: Result<Vec<v1::TaskEvent>, u64>| -> Vec<u64> {
            r.unwrap().iter().map(|e| e.seq).collect()
        };
        assert_eq!(seqs(s.resend_from("t", 3)), vec![3, 4, 5]);
        s.ack("t", 3);
        assert_eq!(
            s.resend_from("t", 2).unwrap_err(),
            4,
            "1..3 were acked and dropped"
        );
        assert_eq!(seqs(s.resend_from("t", 4)), vec![4, 5]);
        s.ack("t", 5);
        assert_eq!(s.resend_from("t", 6).unwrap_err(), 6);
        assert_eq!(s.resend_from("nope", 2).unwrap_err(), 2);
    }

    #[test]
    fn a_long_task_keeps_only_what_is_in_flight_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = EventSpool::open(dir.path()).unwrap();
        for i in 1..=200u64 {
            s.append(ev("t", log(60 * 1024))).unwrap();
            s.ack("t", i);
        }
        assert!(
            s.file_bytes("t") < 2 * 1024 * 1024,
            "12 MB written, all acked: the file is compacted ({} bytes)",
            s.file_bytes("t")
        );
        let on_disk = std::fs::metadata(dir.path().join("t.events"))
            .unwrap()
            .len();
        assert_eq!(on_disk, s.file_bytes("t"));
        s.append(ev("t", log(10))).unwrap();
        drop(s);
        let s = EventSpool::open(dir.path()).unwrap();
        assert_eq!(
            s.unacked().map(|e| e.seq).max(),
            Some(201),
            "after a reopen the unacked events are all there"
        );
    }
}
