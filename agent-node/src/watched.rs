//! What a running task's directory says: plan snapshots, questions, answers taken, worker
//! output. Everything here is blocking file work on hostile input (the worker wrote it): it runs
//! off the async runtime, reads through [`TaskDir`] (no links followed, regular files only,
//! capped), and a file that breaks a rule is a *fault* that ends the task with a clear reason.

use dispatch_core::fs::{Rewritten, TaskDir, TaskFileError};
use dispatch_core::limits::{
    MAX_ACTIVITY_LINES, MAX_LOG_CHUNK_BYTES, MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_PLAN_BYTES,
    MAX_QUESTIONS,
};
use dispatch_core::signals::{Cli, Clock};
use dispatch_core::stream::{StreamFormat, StreamParser, Usage};
use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most entries a task's `ipc/` may hold before the task is stopped (each scan lists it).
const MAX_IPC_ENTRIES: usize = 4 * MAX_QUESTIONS + 16;

/// The workdir a task directory (`<workdir>/.dispatch/tasks/<id>`) belongs to.
pub fn workdir_of(task_dir: &Path) -> PathBuf {
    task_dir
        .ancestors()
        .nth(3)
        .map_or_else(|| task_dir.to_path_buf(), Path::to_path_buf)
}

/// The node's clock and its offset from UTC (CLIs write reset times in local time).
pub fn local_clock() -> Clock {
    let mut c = Clock::utc();
    let now = (c.now_ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes only into the tm it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if !unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        c.utc_offset_s = tm.tm_gmtoff as i32;
    }
    c
}

/// Notes appended to a running task's plan. A worker that rewrites plan.md from a copy it read
/// just before a note landed drops it (the seed's protocol has two writers of plan.md); the
/// node puts such a note back, a few times at most.
pub type Notes = Arc<std::sync::Mutex<Vec<PendingNote>>>;

/// A note the node appended, and how often it had to put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNote {
    line: String,
    restored: u32,
}

/// Times a dropped note is put back before the node lets the worker have its way.
const MAX_NOTE_RESTORES: u32 = 5;

/// One file a notification named: what a targeted scan looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The worker's output file.
    Log,
    /// plan.md.
    Plan,
    /// output.md.
    Output,
    /// An entry of `ipc/`, by name.
    Ipc(String),
}

/// Plan changes sent in a burst before they are paced.
const PLAN_BURST: f64 = 20.0;
/// Plan changes sent a second once the burst is spent: a worker that rewrites plan.md in a loop
/// is coalesced to its latest version, which a later scan sends (the periodic rescan at the
/// latest); the last plan of a run always goes.
const PLAN_PER_SECOND: f64 = 5.0;

/// A token bucket for plan changes.
#[derive(Debug, Clone, Copy)]
struct PlanPace {
    tokens: f64,
    at: std::time::Instant,
}

impl PlanPace {
    fn new() -> Self {
        PlanPace {
            tokens: PLAN_BURST,
            at: std::time::Instant::now(),
        }
    }

    /// Takes a token if there is one (refilled for the time since the last call).
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * PLAN_PER_SECOND;
        self.tokens = (self.tokens + refill).min(PLAN_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A task's files as last seen.
pub struct Watched {
    /// Task id.
    pub task: String,
    /// Where its `.dispatch/` lives.
    pub workdir: PathBuf,
    dir: Option<TaskDir>,
    /// The worker's output file (in the agent's data dir).
    pub log: PathBuf,
    log_offset: u64,
    /// Stop sending output past this (the coordinator stores no more).
    max_log: Arc<AtomicU64>,
    /// plan.md as last reported.
    pub last_plan: Vec<u8>,
    /// output.md as last reported (its kept part, and its size).
    last_output: Option<(Vec<u8>, u64)>,
    /// Notes appended to the plan, kept there.
    notes: Notes,
    /// The reader of a structured worker stream, and the totals last sent.
    stream: Option<(StreamParser, Option<Usage>)>,
    /// The worker exited: a last line without a newline counts too.
    pub exited: bool,
    /// Paces plan changes (a rewrite loop is coalesced).
    plan_pace: PlanPace,
    questions: BTreeSet<u32>,
    acked: BTreeSet<u32>,
}

impl Watched {
    /// Starts watching; `last_plan` is what the node wrote (an empty one reports the plan as it
    /// is at the first scan), `log_offset` where output reading resumes.
    pub fn new(
        task: &str,
        workdir: PathBuf,
        log: PathBuf,
        log_offset: u64,
        last_plan: Vec<u8>,
        max_log: Arc<AtomicU64>,
    ) -> Watched {
        Watched {
            task: task.to_string(),
            workdir,
            dir: None,
            log,
            log_offset,
            max_log,
            last_plan,
            last_output: None,
            notes: Notes::default(),
            stream: None,
            exited: false,
            plan_pace: PlanPace::new(),
            questions: BTreeSet::new(),
            acked: BTreeSet::new(),
        }
    }

    /// Shares the task's notes with whoever appends them.
    pub fn with_notes(mut self, notes: Notes) -> Watched {
        self.notes = notes;
        self
    }

    /// Reads the worker's output as a structured stream in `format`, or as a plain run of
    /// `cli` (for its signals: retries, its error line); with neither, only the log is kept.
    /// A watch that resumes (an agent restarted) reads the part of the log already sent again,
    /// quietly, so the totals are the whole run's.
    pub fn with_stream(mut self, format: Option<StreamFormat>, cli: Option<Cli>) -> Watched {
        if format.is_none() && cli.is_none() {
            return self;
        }
        let mut parser = StreamParser::reading(format, cli, local_clock());
        if self.log_offset > 0
            && let Ok(f) = std::fs::File::open(&self.log)
        {
            let mut f = f.take(self.log_offset);
            let mut buf = vec![0u8; MAX_LOG_CHUNK_BYTES];
            while let Ok(n @ 1..) = f.read(&mut buf) {
                parser.feed(&buf[..n]);
            }
        }
        self.stream = Some((parser, None));
        self
    }

    /// What the worker's CLI said about its trouble so far (None: its output is not read).
    pub fn signals(&self) -> Option<&dispatch_core::signals::Signals> {
        self.stream.as_ref().map(|(p, _)| p.signals())
    }

    fn dir(&mut self) -> Result<&TaskDir, TaskFileError> {
        if self.dir.is_none() {
            self.dir = Some(TaskDir::open(&self.workdir, &self.task, false)?);
        }
        Ok(self.dir.as_ref().expect("opened above"))
    }

    /// Reports what changed since the last look; the second value is a fault that must stop
    /// the worker (what was found before it is still reported).
    pub fn scan(&mut self) -> (Vec<Kind>, Option<String>) {
        let mut out = Vec::new();
        self.scan_log(&mut out);
        let fault = self.scan_files(&mut out).err();
        (out, fault)
    }

    /// True when the worker wrote `ipc/.done`.
    pub fn done_marker(&mut self) -> bool {
        self.dir().is_ok_and(|d| d.is_file("ipc/.done"))
    }

    fn scan_log(&mut self, out: &mut Vec<Kind>) {
        let cap = self.max_log.load(Ordering::Relaxed);
        // Up to the cap and one chunk past it, so the coordinator sees the output was cut.
        if self.log_offset > cap && self.stream.is_none() {
            return;
        }
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.log_offset)).is_err() {
            return;
        }
        let mut buf = vec![0u8; MAX_LOG_CHUNK_BYTES];
        let mut lines = Vec::new();
        // A structured stream is read to its end (its totals come last), past the cap too.
        while self.log_offset <= cap || self.stream.is_some() {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if self.log_offset <= cap {
                        out.push(Kind::Log(v1::LogChunk {
                            data: buf[..n].to_vec(),
                        }));
                    }
                    self.log_offset += n as u64;
                    if let Some((p, _)) = &mut self.stream {
                        lines.extend(p.feed(&buf[..n]));
                    }
                }
            }
        }
        self.activity(lines, out);
    }

    /// Activity events for `lines` (at most [`MAX_ACTIVITY_LINES`] each), with the totals when
    /// they changed.
    fn activity(&mut self, mut lines: Vec<String>, out: &mut Vec<Kind>) {
        let exited = self.exited;
        let Some((p, sent)) = &mut self.stream else {
            return;
        };
        if exited {
            lines.extend(p.finish());
        }
        let usage = p.usage().clone();
        let changed = sent.as_ref() != Some(&usage) && !usage.is_empty();
        if lines.is_empty() && !changed {
            return;
        }
        *sent = Some(usage.clone());
        let mut chunks: Vec<Vec<String>> = lines
            .chunks(MAX_ACTIVITY_LINES)
            .map(<[String]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let last = chunks.len() - 1;
        for (i, lines) in chunks.into_iter().enumerate() {
            out.push(Kind::Activity(v1::WorkerActivity {
                lines,
                // The totals ride on the last event, after the lines that made them.
                usage: (i == last).then(|| dispatch_proto::convert::usage_to_proto(&usage)),
            }));
        }
    }

    /// Looks only at the files a notification named (what a write costs then does not grow
    /// with the number of questions the task asked).
    pub fn scan_targets(&mut self, targets: &[Target]) -> (Vec<Kind>, Option<String>) {
        let mut out = Vec::new();
        let mut fault = None;
        for t in targets {
            let r = match t {
                Target::Log => {
                    self.scan_log(&mut out);
                    Ok(())
                }
                Target::Plan => self.opened().and_then(|open| {
                    if open {
                        self.scan_plan(&mut out)
                    } else {
                        Ok(())
                    }
                }),
                Target::Output => self.opened().and_then(|open| {
                    if open {
                        self.scan_output(&mut out)
                    } else {
                        Ok(())
                    }
                }),
                Target::Ipc(name) => self.opened().and_then(|open| {
                    if open {
                        self.scan_ipc_entry(name, &mut out)
                    } else {
                        Ok(())
                    }
                }),
            };
            if let Err(f) = r {
                fault = Some(f);
                break;
            }
        }
        (out, fault)
    }

    /// Opens the task directory if it is not yet; false while it is not there.
    fn opened(&mut self) -> Result<bool, String> {
        match self.dir() {
            Ok(_) => Ok(true),
            Err(e) if e.is_violation() => Err(e.to_string()),
            // Not there (yet, or any more): nothing to report.
            Err(_) => Ok(false),
        }
    }

    fn scan_files(&mut self, out: &mut Vec<Kind>) -> Result<(), String> {
        if !self.opened()? {
            return Ok(());
        }
        self.scan_plan(out)?;
        self.scan_output(out)?;
        self.scan_ipc(out)
    }

    /// Puts back the notes a worker's rewrite of plan.md dropped; the plan as it is after,
    /// when it was read again. Node-side writes of plan.md (notes, and this) hold the notes'
    /// lock, so they never undo each other; only the worker writes without it.
    fn restore_notes(&self) -> Option<Vec<u8>> {
        let mut notes = self.notes.lock().unwrap();
        if notes.is_empty() {
            return None;
        }
        let dir = self.dir.as_ref()?;
        let mut dropped = 0;
        let result = dir.rewrite("plan.md", MAX_PLAN_BYTES as u64, |plan| {
            // The plan's note lines, read once: the check costs no more with many notes.
            let text = String::from_utf8_lossy(plan);
            let present: std::collections::HashSet<&str> = text
                .lines()
                .filter(|l| l.contains("Note from dispatcher:"))
                .map(str::trim_end)
                .collect();
            let mut seen = std::collections::HashSet::new();
            let gone: Vec<usize> = (0..notes.len())
                .filter(|&i| {
                    let n = &notes[i];
                    let gone = if n.line.contains('\n') {
                        !text.contains(&n.line)
                    } else {
                        !present.contains(n.line.as_str())
                    };
                    // The same note sent twice goes back once.
                    gone && n.restored < MAX_NOTE_RESTORES && seen.insert(n.line.clone())
                })
                .collect();
            if gone.is_empty() {
                return Ok::<_, TaskFileError>(None);
            }
            let mut p = dispatch_core::Plan::parse_bytes(plan);
            for &i in &gone {
                p.append_line(&notes[i].line);
            }
            let rendered = p.render().into_bytes();
            if rendered.len() > MAX_PLAN_BYTES {
                return Ok(None);
            }
            dropped = gone.len();
            for &i in &gone {
                notes[i].restored += 1;
            }
            Ok(Some(rendered))
        });
        match result {
            Ok(Rewritten::Wrote(now)) => {
                tracing::info!(task = %self.task, notes = dropped, "the worker's rewrite of plan.md dropped a note; put it back");
                Some(now)
            }
            Ok(Rewritten::Kept(now)) => Some(now),
            Ok(Rewritten::Missing) | Err(_) => None,
        }
    }

    /// output.md, the seed's summary: its first [`MAX_OUTPUT_BYTES`] whenever it changes (a
    /// larger file is cut, not a fault: the whole file stays here).
    fn scan_output(&mut self, out: &mut Vec<Kind>) -> Result<(), String> {
        let dir = self.dir.as_ref().expect("opened by the caller");
        match dir.read_prefix("output.md", MAX_OUTPUT_BYTES as u64) {
            Ok(Some((kept, size))) => {
                if self
                    .last_output
                    .as_ref()
                    .is_some_and(|(k, s)| *s == size && *k == kept)
                {
                    return Ok(());
                }
                // A multi-byte character cut at the limit is dropped, not mangled.
                let markdown = match std::str::from_utf8(&kept) {
                    Ok(s) => s.to_string(),
                    Err(e) if size > kept.len() as u64 && e.error_len().is_none() => {
                        String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned()
                    }
                    Err(_) => String::from_utf8_lossy(&kept).into_owned(),
                };
                out.push(Kind::Output(v1::OutputUpdated {
                    markdown,
                    bytes: size,
                    truncated: size > kept.len() as u64,
                }));
                self.last_output = Some((kept, size));
            }
            Ok(None) => {}
            Err(e) if e.is_violation() => return Err(e.to_string()),
            Err(e) => tracing::debug!(task = %self.task, error = %e, "cannot read output.md"),
        }
        Ok(())
    }

    fn scan_plan(&mut self, out: &mut Vec<Kind>) -> Result<(), String> {
        let dir = self.dir.as_ref().expect("opened by the caller");
        match dir.read("plan.md", MAX_PLAN_BYTES as u64) {
            Ok(Some(mut plan)) if plan != self.last_plan => {
                if let Some(now) = self.restore_notes() {
                    plan = now;
                }
                // Over the pace, the change waits for a later scan, which sends the plan as it
                // is then; the last scan of a run sends it whatever the pace.
                if !self.exited && !self.plan_pace.take() {
                    tracing::debug!(task = %self.task, "plan.md changes faster than the node reports them; coalescing");
                    return Ok(());
                }
                let markdown = String::from_utf8_lossy(&plan).into_owned();
                self.last_plan = plan;
                out.push(Kind::Plan(v1::PlanUpdated { markdown }));
            }
            Ok(_) => {}
            Err(e) if e.is_violation() => return Err(e.to_string()),
            Err(e) => tracing::debug!(task = %self.task, error = %e, "cannot read plan.md"),
        }
        Ok(())
    }

    /// The seed's IPC: `NNN.question` once renamed into place (never `.tmp`), `NNN.done` once
    /// the worker took the answer.
    fn scan_ipc(&mut self, out: &mut Vec<Kind>) -> Result<(), String> {
        let dir = self.dir.as_ref().expect("opened by scan_files");
        let entries = match dir.list("ipc") {
            Ok(e) => e,
            Err(e) if e.is_violation() => return Err(e.to_string()),
            Err(_) => return Ok(()),
        };
        if entries.len() > MAX_IPC_ENTRIES {
            return Err(format!(
                "{}/ipc holds {} entries, over the limit of {MAX_IPC_ENTRIES}",
                dir.path().display(),
                entries.len()
            ));
        }
        for (name, _) in entries {
            self.scan_ipc_entry(&name, out)?;
        }
        Ok(())
    }

    /// One `ipc/` entry: a question not seen yet, or the worker's `NNN.done`.
    fn scan_ipc_entry(&mut self, name: &str, out: &mut Vec<Kind>) -> Result<(), String> {
        let Some((num, ext)) = name.split_once('.') else {
            return Ok(());
        };
        if num.len() < 3 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(());
        }
        let Ok(seq) = num.parse::<u32>() else {
            return Ok(());
        };
        if seq == 0 || seq as usize > MAX_QUESTIONS {
            return Ok(());
        }
        let dir = self.dir.as_ref().expect("opened by the caller");
        match ext {
            "question" if !self.questions.contains(&seq) => {
                let text = match dir.read(&format!("ipc/{name}"), MAX_MESSAGE_BYTES as u64) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Ok(()),
                    Err(e) if e.is_violation() => return Err(e.to_string()),
                    Err(_) => return Ok(()),
                };
                self.questions.insert(seq);
                let text = String::from_utf8_lossy(&text).trim_end().to_string();
                out.push(Kind::Question(v1::QuestionAsked { seq, text }));
            }
            "done"
                if self.questions.contains(&seq)
                    && !self.acked.contains(&seq)
                    && dir.is_file(&format!("ipc/{name}")) =>
            {
                self.acked.insert(seq);
                out.push(Kind::AnswerDelivered(v1::AnswerDelivered { seq }));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes the answer to `NNN.answer` the seed's way (temp file, fsync, rename). Writing the
/// same answer again is a no-op; a different answer to an answered question is an error. An
/// entry the worker planted under that name (a link, a FIFO) is replaced, never followed.
pub fn deliver_answer(workdir: &Path, task: &str, seq: u32, text: &str) -> Result<(), String> {
    let dir = TaskDir::open(workdir, task, false).map_err(|e| e.to_string())?;
    let name = format!("ipc/{seq:03}.answer");
    match dir.read(&name, MAX_MESSAGE_BYTES as u64) {
        Ok(Some(existing)) => {
            if String::from_utf8_lossy(&existing).trim_end() == text.trim_end() {
                return Ok(());
            }
            return Err(format!(
                "{}/{name} already holds a different answer",
                dir.path().display()
            ));
        }
        Ok(None) => {}
        Err(e) if e.is_violation() => {
            tracing::warn!(task, error = %e, "replacing what the worker left at the answer's name");
        }
        Err(e) => return Err(e.to_string()),
    }
    let mut body = text.trim_end().to_string();
    body.push('\n');
    dir.write_atomic(&name, body.as_bytes())
        .map_err(|e| e.to_string())
}

/// Appends `> **Note from dispatcher:** text` to plan.md with an atomic rewrite that keeps
/// whatever the worker wrote.
pub fn append_note(
    workdir: &Path,
    task: &str,
    text: &str,
    notes: Option<&Notes>,
) -> Result<(), String> {
    // Held for the whole read-modify-write: the runner's note restoring waits for it.
    let mut pending = notes.map(|n| n.lock().unwrap());
    let dir = TaskDir::open(workdir, task, false).map_err(|e| e.to_string())?;
    let line = format!("> **Note from dispatcher:** {}", text.trim());
    if let Some(p) = pending.as_mut() {
        p.push(PendingNote {
            line: line.clone(),
            restored: 0,
        });
    }
    let mut too_large = false;
    // A rewrite that keeps a check the worker makes meanwhile (its own rewrite wins, and the
    // note is appended to it).
    let result = dir.rewrite("plan.md", MAX_PLAN_BYTES as u64, |bytes| {
        if String::from_utf8_lossy(bytes).contains(&line) {
            return Ok::<_, TaskFileError>(None);
        }
        let mut plan = dispatch_core::Plan::parse_bytes(bytes);
        plan.append_line(&line);
        let rendered = plan.render();
        too_large = rendered.len() > MAX_PLAN_BYTES;
        Ok((!too_large).then(|| rendered.into_bytes()))
    });
    match result.map_err(|e| e.to_string())? {
        Rewritten::Missing => Err(format!("{}/plan.md is missing", dir.path().display())),
        Rewritten::Kept(_) if too_large => Err(format!(
            "the note would make {}/plan.md larger than the {} limit",
            dir.path().display(),
            dispatch_core::fs::human_bytes(MAX_PLAN_BYTES as u64)
        )),
        Rewritten::Kept(_) | Rewritten::Wrote(_) => Ok(()),
    }
}

/// plan.md of a task as it is on disk (empty when missing or unreadable), for an exit
/// reported after an agent restart.
pub fn read_plan(workdir: &Path, task: &str) -> (String, bool) {
    match TaskDir::open(workdir, task, false) {
        Ok(d) => (
            d.read("plan.md", MAX_PLAN_BYTES as u64)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            d.is_file("ipc/.done"),
        ),
        Err(_) => (String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Watched, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let td = TaskDir::open(d.path(), "t", true).unwrap();
        td.ensure_dir("ipc").unwrap();
        td.write_atomic("plan.md", b"- [ ] a\n").unwrap();
        let path = td.path().to_path_buf();
        let w = Watched::new(
            "t",
            d.path().to_path_buf(),
            d.path().join("t.log"),
            0,
            b"- [ ] a\n".to_vec(),
            Arc::new(AtomicU64::new(1 << 20)),
        );
        (d, w, path)
    }

    #[test]
    fn a_resumed_watch_reads_the_sent_part_of_a_stream_again_for_whole_totals() {
        let d = tempfile::tempdir().unwrap();
        let td = TaskDir::open(d.path(), "t", true).unwrap();
        td.write_atomic("plan.md", b"- [ ] a\n").unwrap();
        let stream = include_bytes!("../../tests/fixtures/codex-exec-json.jsonl");
        let log = d.path().join("t.log");
        std::fs::write(&log, stream).unwrap();
        // The agent restarted after sending the first half (cut mid-line).
        let half = (stream.len() / 2) as u64;
        let mut w = Watched::new(
            "t",
            d.path().to_path_buf(),
            log,
            half,
            b"- [ ] a\n".to_vec(),
            Arc::new(AtomicU64::new(1 << 20)),
        )
        .with_stream(Some(StreamFormat::CodexJson), None);
        w.exited = true;
        let (events, fault) = w.scan();
        assert_eq!(fault, None);
        let acts: Vec<&v1::WorkerActivity> = events
            .iter()
            .filter_map(|k| match k {
                Kind::Activity(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(acts.len(), 1);
        let u = acts[0].usage.as_ref().unwrap();
        assert_eq!(
            (u.turns, u.output_tokens),
            (2, 122 + 845),
            "the whole run's totals"
        );
        assert!(
            !acts[0]
                .lines
                .iter()
                .any(|l| l.starts_with("session started")),
            "lines already sent are not sent again: {:?}",
            acts[0].lines
        );
        assert!(acts[0].lines.iter().any(|l| l.starts_with("says: Fixed")));
        // Nothing new: no event.
        let (events, _) = w.scan();
        assert!(!events.iter().any(|k| matches!(k, Kind::Activity(_))));
    }

    #[test]
    fn a_note_a_workers_rewrite_dropped_is_put_back_a_few_times() {
        let (d, w, dir) = setup();
        let notes = Notes::default();
        let mut w = w.with_notes(Arc::clone(&notes));
        append_note(d.path(), "t", "use the staging db", Some(&notes)).unwrap();
        let line = "> **Note from dispatcher:** use the staging db";
        // The worker rewrites plan.md from the copy it read before the note.
        std::fs::write(dir.join("plan.md"), "- [x] a\n").unwrap();
        let (events, _) = w.scan();
        assert!(
            matches!(&events[0], Kind::Plan(p) if p.markdown.contains("- [x] a") && p.markdown.contains(line)),
            "{events:?}"
        );
        assert!(
            std::fs::read_to_string(dir.join("plan.md"))
                .unwrap()
                .contains(line)
        );
        // A worker that keeps removing it wins in the end.
        for i in 0..8 {
            std::fs::write(dir.join("plan.md"), format!("- [x] a\n<!-- {i} -->\n")).unwrap();
            w.scan();
        }
        assert!(
            !std::fs::read_to_string(dir.join("plan.md"))
                .unwrap()
                .contains(line)
        );
    }

    #[test]
    fn a_plan_rewritten_in_a_loop_is_coalesced_and_the_last_one_always_goes() {
        let (_d, mut w, dir) = setup();
        let mut sent = 0;
        for i in 0..500 {
            std::fs::write(dir.join("plan.md"), format!("- [ ] a\n<!-- {i} -->\n")).unwrap();
            sent += w
                .scan()
                .0
                .iter()
                .filter(|k| matches!(k, Kind::Plan(_)))
                .count();
        }
        // The burst, and what the pace allows for the time the loop took.
        assert!(
            (PLAN_BURST as usize..PLAN_BURST as usize + 20).contains(&sent),
            "500 rewrites sent {sent} plans"
        );
        w.exited = true;
        let (events, _) = w.scan();
        assert!(
            matches!(&events[..], [Kind::Plan(p)] if p.markdown.contains("<!-- 499 -->")),
            "the last plan goes: {events:?}"
        );
    }

    #[test]
    fn reports_changes_once() {
        let (_d, mut w, dir) = setup();
        assert!(w.scan().0.is_empty());
        std::fs::write(dir.join("plan.md"), "- [x] a\n").unwrap();
        std::fs::write(dir.join("ipc/001.question"), "why?\n").unwrap();
        let (events, fault) = w.scan();
        assert!(fault.is_none());
        assert!(matches!(&events[0], Kind::Plan(p) if p.markdown == "- [x] a\n"));
        assert!(matches!(&events[1], Kind::Question(q) if q.seq == 1 && q.text == "why?"));
        std::fs::write(dir.join("ipc/001.done"), "").unwrap();
        let (events, _) = w.scan();
        assert!(matches!(&events[..], [Kind::AnswerDelivered(a)] if a.seq == 1));
        assert!(w.scan().0.is_empty());
    }

    #[test]
    fn an_oversize_plan_a_fifo_or_a_link_is_a_fault() {
        let (d, mut w, dir) = setup();
        std::fs::write(dir.join("plan.md"), vec![b'x'; MAX_PLAN_BYTES + 1]).unwrap();
        let (events, fault) = w.scan();
        assert!(events.is_empty());
        let fault = fault.unwrap();
        assert!(
            fault.contains("plan.md is 256.0 KiB, over the 256 KiB limit"),
            "{fault}"
        );

        let (_d2, mut w, dir) = setup();
        nix::unistd::mkfifo(
            &dir.join("ipc/001.question"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let fault = w.scan().1.unwrap();
        assert!(fault.contains("FIFO"), "{fault}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "never blocks"
        );

        let secret = d.path().join("secret");
        std::fs::write(&secret, "key").unwrap();
        let (_d3, mut w, dir) = setup();
        std::os::unix::fs::symlink(&secret, dir.join("ipc/002.question")).unwrap();
        let fault = w.scan().1.unwrap();
        assert!(fault.contains("symbolic link"), "{fault}");
    }

    #[test]
    fn answers_and_notes_never_follow_a_planted_link() {
        let (d, _w, dir) = setup();
        let target = d.path().join("authorized_keys");
        std::fs::write(&target, "mine").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("ipc/001.answer")).unwrap();
        deliver_answer(d.path(), "t", 1, "yes").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        assert_eq!(
            std::fs::read_to_string(dir.join("ipc/001.answer")).unwrap(),
            "yes\n"
        );
        deliver_answer(d.path(), "t", 1, "yes").unwrap();
        assert!(deliver_answer(d.path(), "t", 1, "no").is_err());

        std::fs::remove_file(dir.join("plan.md")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("plan.md")).unwrap();
        let e = append_note(d.path(), "t", "hi", None).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    }
}
