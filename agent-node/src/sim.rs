//! The `sim` worker: a scripted worker that follows the seed's worker prompt exactly, so the
//! whole system can be exercised where no `claude`/`agent`/`codex` is installed.
//!
//! It finds its plan from the prompt, works through the items top to bottom, checks each off
//! with an atomic rewrite, writes output.md for the summary item and touches `ipc/.done`.
//! Directives in an item's text steer it:
//!
//! - `(sleep 500ms)`: take that long over the item;
//! - `(fail: reason)`: mark the item `[!]` with the reason and stop;
//! - `(ask: question)` or `(ask: question; timeout 2s)`: ask through `ipc/NNN.question`, wait
//!   for `NNN.answer`, write `NNN.done` and note the answer; on timeout write context.md, mark
//!   the item `[?]` and stop (the seed's legacy fallback);
//! - `(child-sleep 30s)`: run `sleep` as a child process for that long (a process tree);
//! - `(exit N)`: exit at once with status N, leaving the item unchecked.

use dispatch_core::fs::write_atomic;
use dispatch_core::plan::{ItemStatus, Plan};
use dispatch_core::prompt::plan_path_in;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The seed's question timeout.
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, PartialEq)]
enum Directive {
    Sleep(Duration),
    Fail(String),
    Ask(String, Duration),
    ChildSleep(Duration),
    Exit(i32),
}

fn directives(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        let inner = rest[open + 1..open + close].trim();
        rest = &rest[open + close + 1..];
        let d = if let Some(v) = inner.strip_prefix("sleep ") {
            dispatch_core::duration::parse(v).ok().map(Directive::Sleep)
        } else if let Some(v) = inner.strip_prefix("child-sleep ") {
            dispatch_core::duration::parse(v)
                .ok()
                .map(Directive::ChildSleep)
        } else if let Some(v) = inner.strip_prefix("fail:") {
            Some(Directive::Fail(v.trim().to_string()))
        } else if let Some(v) = inner.strip_prefix("ask:") {
            let (q, timeout) = match v.rsplit_once("; timeout ") {
                Some((q, t)) => (
                    q,
                    dispatch_core::duration::parse(t).unwrap_or(DEFAULT_ASK_TIMEOUT),
                ),
                None => (v, DEFAULT_ASK_TIMEOUT),
            };
            Some(Directive::Ask(q.trim().to_string(), timeout))
        } else if let Some(v) = inner.strip_prefix("exit ") {
            v.trim().parse().ok().map(Directive::Exit)
        } else {
            None
        };
        out.extend(d);
    }
    out
}

struct Sim {
    plan_path: PathBuf,
    task_dir: PathBuf,
    prompt: String,
    done: Vec<String>,
}

impl Sim {
    fn read_plan(&self) -> Result<Plan, String> {
        std::fs::read(&self.plan_path)
            .map(|b| Plan::parse_bytes(&b))
            .map_err(|e| format!("cannot read {}: {e}", self.plan_path.display()))
    }

    /// Re-reads the plan (a dispatcher note may have landed) and rewrites one item.
    fn mark(&self, index: usize, status: ItemStatus, note: Option<&str>) -> Result<(), String> {
        let mut plan = self.read_plan()?;
        plan.set_status(index, status);
        if let Some(n) = note {
            plan.set_note(index, n);
        }
        write_atomic(&self.plan_path, plan.render().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.plan_path.display()))
    }

    fn ask(&self, question: &str, timeout: Duration) -> Result<Option<String>, String> {
        let ipc = self.task_dir.join("ipc");
        std::fs::create_dir_all(&ipc)
            .map_err(|e| format!("cannot create {}: {e}", ipc.display()))?;
        // The seed's numbering: count of *.question files plus one, zero-padded to 3.
        let count = std::fs::read_dir(&ipc)
            .map_err(|e| format!("cannot list {}: {e}", ipc.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".question"))
            .count();
        let seq = format!("{:03}", count + 1);
        write_atomic(&ipc.join(format!("{seq}.question")), question.as_bytes())
            .map_err(|e| format!("cannot ask: {e}"))?;
        println!("sim: asked question {seq}: {question}");
        let answer_path = ipc.join(format!("{seq}.answer"));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(answer) = std::fs::read_to_string(&answer_path) {
                std::fs::write(ipc.join(format!("{seq}.done")), b"")
                    .map_err(|e| format!("cannot write {seq}.done: {e}"))?;
                println!("sim: got answer {seq}: {}", answer.trim());
                return Ok(Some(answer.trim().to_string()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// A worker started after a blocked question was answered finds the answer in its prompt
    /// (the seed's legacy fallback) instead of asking again.
    fn resumed_answer(&self, question: &str) -> Option<Option<String>> {
        let marker = format!("The question was: \"{question}\". The answer is: \"");
        let start = self.prompt.find(&marker)? + marker.len();
        let end = self.prompt[start..].find("\". Continue from the blocked item.")?;
        let answer = self.prompt[start..start + end].to_string();
        let context = std::fs::read_to_string(self.task_dir.join("context.md")).unwrap_or_default();
        println!(
            "sim: resuming with the answer to {question:?}: {answer} (context.md: {} bytes)",
            context.len()
        );
        Some(Some(answer))
    }

    fn write_output(&self) -> Result<(), String> {
        let mut out = String::from("# Summary\n\nThe sim worker completed these items:\n\n");
        for d in &self.done {
            out.push_str(&format!("- {d}\n"));
        }
        out.push_str("\n## Prompt as received\n\n");
        out.push_str(&self.prompt);
        out.push('\n');
        let path = self.task_dir.join("output.md");
        write_atomic(&path, out.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn run(mut self) -> Result<i32, String> {
        loop {
            let plan = self.read_plan()?;
            let Some(index) = plan
                .items()
                .iter()
                .position(|i| i.status == ItemStatus::Pending)
            else {
                break;
            };
            let item = plan.items()[index].clone();
            println!("sim: working on item {}: {}", index + 1, item.text);
            let mut note = None;
            for d in directives(&item.text) {
                match d {
                    Directive::Sleep(t) => std::thread::sleep(t),
                    Directive::ChildSleep(t) => {
                        let mut child = std::process::Command::new("sleep")
                            .arg(format!("{:.3}", t.as_secs_f64()))
                            .spawn()
                            .map_err(|e| format!("cannot start sleep: {e}"))?;
                        // Record the child's pid so a test can check the whole tree dies.
                        self.mark(
                            index,
                            ItemStatus::Pending,
                            Some(&format!("child pid {}", child.id())),
                        )?;
                        child.wait().map_err(|e| format!("sleep child: {e}"))?;
                    }
                    Directive::Exit(code) => {
                        println!("sim: exiting with status {code} as directed");
                        return Ok(code);
                    }
                    Directive::Fail(reason) => {
                        self.mark(index, ItemStatus::Error, Some(&reason))?;
                        println!("sim: item failed: {reason}");
                        return Ok(1);
                    }
                    Directive::Ask(question, timeout) => match self
                        .resumed_answer(&question)
                        .map(Ok)
                        .unwrap_or_else(|| self.ask(&question, timeout))?
                    {
                        Some(answer) => note = Some(format!("answer: {answer}")),
                        None => {
                            let context = format!(
                                "# Context\n\nI was working on item {}: {}\n\nDone so far: {}\n\nI asked: {question}\nNo answer arrived within {:?}.\n",
                                index + 1,
                                item.text,
                                if self.done.is_empty() {
                                    "nothing".to_string()
                                } else {
                                    self.done.join("; ")
                                },
                                timeout
                            );
                            write_atomic(&self.task_dir.join("context.md"), context.as_bytes())
                                .map_err(|e| format!("cannot write context.md: {e}"))?;
                            self.mark(index, ItemStatus::Blocked, Some(&question))?;
                            println!(
                                "sim: no answer within {timeout:?}; marked the item [?] and stopped"
                            );
                            return Ok(0);
                        }
                    },
                }
            }
            if item.text.contains("output.md") {
                self.done.push(item.text.clone());
                self.write_output()?;
            } else {
                self.done.push(item.text.clone());
            }
            self.mark(index, ItemStatus::Done, note.as_deref())?;
        }
        let ipc = self.task_dir.join("ipc");
        std::fs::create_dir_all(&ipc)
            .map_err(|e| format!("cannot create {}: {e}", ipc.display()))?;
        std::fs::write(ipc.join(".done"), b"")
            .map_err(|e| format!("cannot write ipc/.done: {e}"))?;
        println!("sim: all items checked");
        Ok(0)
    }
}

/// Runs the sim worker on `args` (`[--model M] PROMPT`) in the current directory and returns
/// its exit status.
pub fn main(args: &[String]) -> i32 {
    let mut rest: &[String] = args;
    if rest.first().map(String::as_str) == Some("--model") && rest.len() >= 2 {
        rest = &rest[2..];
    }
    let Some(prompt) = rest.last() else {
        eprintln!("sim-worker: usage: sim-worker [--model M] PROMPT");
        return 2;
    };
    let Some(plan) = plan_path_in(prompt) else {
        eprintln!(
            "sim-worker: the prompt names no plan file (expected \"You have a plan file at .dispatch/tasks/<id>/plan.md\")"
        );
        return 2;
    };
    let plan_path = PathBuf::from(plan);
    let task_dir = plan_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let sim = Sim {
        plan_path,
        task_dir,
        prompt: prompt.clone(),
        done: Vec::new(),
    };
    match sim.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sim-worker: {e}");
            3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives() {
        assert_eq!(
            directives(
                "step (sleep 500ms) then (fail: disk full) (ask: which db?; timeout 2s) (child-sleep 1m) (exit 3) (nothing)"
            ),
            vec![
                Directive::Sleep(Duration::from_millis(500)),
                Directive::Fail("disk full".into()),
                Directive::Ask("which db?".into(), Duration::from_secs(2)),
                Directive::ChildSleep(Duration::from_secs(60)),
                Directive::Exit(3),
            ]
        );
        assert_eq!(
            directives("(ask: plain)"),
            vec![Directive::Ask("plain".into(), DEFAULT_ASK_TIMEOUT)]
        );
    }

    #[test]
    fn works_a_plan_to_done() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join(".dispatch/tasks/t1");
        std::fs::create_dir_all(task.join("ipc")).unwrap();
        std::fs::write(
            task.join("plan.md"),
            "# T\n\n- [ ] a (sleep 1ms)\n- [ ] Write summary to .dispatch/tasks/t1/output.md\n",
        )
        .unwrap();
        let prompt = dispatch_core::prompt::worker_prompt("t1", "ctx $(x)", None);
        let sim = Sim {
            plan_path: task.join("plan.md"),
            task_dir: task.clone(),
            prompt: prompt.clone(),
            done: vec![],
        };
        assert_eq!(sim.run().unwrap(), 0);
        let plan = Plan::parse(&std::fs::read_to_string(task.join("plan.md")).unwrap());
        assert_eq!(plan.progress(), (2, 2));
        assert!(task.join("ipc/.done").exists());
        assert!(
            std::fs::read_to_string(task.join("output.md"))
                .unwrap()
                .contains(&prompt)
        );
    }
}
