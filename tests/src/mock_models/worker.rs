//! The mock's "model": a scripted dispatch worker that acts only through the CLI's own shell
//! tool, the way a real model would. It is a pure function of the conversation the CLI sends
//! (the prompt and the tool results so far), so it needs no state between requests, and it
//! works the same behind either vendor's API.
//!
//! It reads its plan with `cat`, then for each unchecked item runs one shell command: tick the
//! item with a temp-file rename, ask `ipc/NNN.question` and wait for the answer (directive
//! `(ask: question; timeout 2s)`), mark it `[!]` (`(fail: reason)`), sleep (`(sleep 1s)`), or
//! write output.md (the summary item). It ends with `touch ipc/.done`. Each command prints a
//! marker when it finishes, so a command the CLI left running (Codex yields after 30 s) is
//! polled until it prints one.

/// What the model does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Run a shell command (tool call), with how long it may take.
    Shell {
        /// The command.
        command: String,
        /// A short description (Claude's Bash tool shows it).
        description: String,
        /// How long the command may run, in ms.
        timeout_ms: u64,
    },
    /// Poll a command the CLI left running (Codex's `write_stdin` with no input).
    Poll {
        /// The CLI's session id of the running command.
        session: u64,
    },
    /// Say something and end the turn.
    Say(String),
}

/// One tool result the CLI sent back, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The output (for Codex, with its header lines).
    pub output: String,
}

/// The marker the `n`th step prints when it is done.
fn marker(n: usize) -> String {
    format!("@@dispatch-step-{n}-done@@")
}

const TIMEOUT_MARK: &str = "@@dispatch-question-timed-out@@";
const FAILED_MARK: &str = "@@dispatch-item-failed@@";
const ANSWER_MARK: &str = "@@answer:";
/// What a tool call refused by dispatch's tool approvals says (the reasons the coordinator
/// and the hook give, as the CLI passes them to the model).
const REFUSALS: [&str; 3] = [
    "tool policy denies this call",
    "denied this tool call",
    "could not have this tool call approved",
];

/// An item of the plan as the model read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    mark: char,
    text: String,
}

fn items_of(plan: &str) -> Vec<Item> {
    plan.lines()
        .filter_map(|l| {
            let l = l.trim_end();
            let rest = l.strip_prefix("- [")?;
            let mut chars = rest.chars();
            let mark = chars.next()?;
            let text = chars.as_str().strip_prefix("] ")?;
            Some(Item {
                mark,
                text: text.to_string(),
            })
        })
        .collect()
}

/// The plan path the prompt names (the seed's worker prompt template).
pub fn plan_path(prompt: &str) -> Option<&str> {
    dispatch_core::prompt::plan_path_in(prompt)
}

/// Quotes `s` for a POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A directive in an item's text: `(name: value)` or `(name value)`.
fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("({name}"))? + 1 + name.len();
    let rest = &text[start..];
    let end = rest.find(')')?;
    Some(rest[..end].trim_start_matches(':').trim())
}

/// The shell command that rewrites `plan` with `- [?] text` or `- [ ] text` (the first match)
/// turned into `- [new] text`, through a temp file and a rename (the seed's rule).
fn set_mark(plan: &str, text: &str, new: char, note: Option<&str>) -> String {
    // awk compares whole lines, so the item's text needs no escaping for a regex.
    let (note_var, note_print) = match note {
        Some(n) => (format!("-v note={} ", q(n)), "print \"  \" note; "),
        None => (String::new(), ""),
    };
    format!(
        "awk -v item={item} -v mark={mark} {note_var}'{{ if (!done && ($0 == \"- [ ] \" item || $0 == \"- [?] \" item)) {{ print \"- [\" mark \"] \" item; {note_print}done = 1; next }} print }}' {plan} > {plan}.tmp && mv {plan}.tmp {plan}\n",
        item = q(text),
        mark = q(&new.to_string()),
        plan = q(plan),
    )
}

/// The answers the worker received so far (from its tool results).
fn answers(results: &[ToolResult]) -> Vec<String> {
    results
        .iter()
        .flat_map(|r| {
            r.output.lines().filter_map(|l| {
                let i = l.find(ANSWER_MARK)?;
                let rest = &l[i + ANSWER_MARK.len()..];
                Some(rest.trim_end_matches("@@").to_string())
            })
        })
        .collect()
}

/// The answer a resumed worker's prompt carries (`The answer is: "..."`).
fn resumed_answer(prompt: &str) -> Option<String> {
    let start = prompt.find("The answer is: \"")? + "The answer is: \"".len();
    let rest = &prompt[start..];
    let end = rest.find("\". ")?;
    Some(rest[..end].to_string())
}

/// What the model does next, given the prompt and the tool results so far.
pub fn next(prompt: &str, results: &[ToolResult]) -> Turn {
    let Some(plan) = plan_path(prompt) else {
        return Turn::Say("I have no dispatch plan to work on.".into());
    };
    let dir = plan.trim_end_matches("/plan.md").to_string();
    if results.is_empty() {
        return Turn::Shell {
            command: format!("cat {}; printf '@@dispatch-step-%s-done@@\\n' 0", q(plan)),
            description: "Read the plan".into(),
            timeout_ms: 30_000,
        };
    }
    // A command still running (no marker yet): poll it.
    let last = &results[results.len() - 1].output;
    if !last.contains("@@dispatch-step-")
        && let Some(session) = running_session(last)
    {
        return Turn::Poll { session };
    }
    let done: Vec<usize> = (0..=results.len() + 1)
        .filter(|n| results.iter().any(|r| r.output.contains(&marker(*n))))
        .collect();
    let Some(plan_text) = results.iter().find(|r| r.output.contains(&marker(0))) else {
        return Turn::Say("I could not read the plan.".into());
    };
    if results.iter().any(|r| r.output.contains(TIMEOUT_MARK)) {
        return Turn::Say(
            "No answer came in time: I saved my context and marked the item [?]. Stopping.".into(),
        );
    }
    if results.iter().any(|r| r.output.contains(FAILED_MARK)) {
        return Turn::Say("An item failed; I marked it [!] and stopped.".into());
    }
    let steps = steps(
        &dir,
        plan,
        &items_of(&plan_text.output),
        resumed_answer(prompt),
    );
    let next_step = done.iter().max().map_or(0, |m| m + 1);
    // Its last command was refused by the tool approvals: as the refusal says, the item is
    // marked [!] with the reason.
    if let Some(refusal) = REFUSALS.iter().find(|r| last.contains(*r))
        && let Some(s) = steps.get(next_step - 1)
        && let StepKind::Run { text, .. } = &s.kind
    {
        let reason = format!("the tool call was refused ({refusal})");
        return Turn::Shell {
            command: format!(
                "{}echo {FAILED_MARK}\n",
                set_mark(plan, text, '!', Some(&reason))
            ),
            description: "Mark the item failed".into(),
            timeout_ms: 30_000,
        };
    }
    match steps.get(next_step - 1) {
        Some(s) => {
            let mut command = s.command(results);
            // Printed, not quoted: a CLI that refuses the command and quotes it back must not
            // read as done.
            command.push_str(&format!(
                "printf '@@dispatch-step-%s-done@@\\n' {next_step}\n"
            ));
            Turn::Shell {
                command,
                description: s.description.clone(),
                timeout_ms: s.timeout_ms,
            }
        }
        None => Turn::Say("All items are done and the completion marker is written.".into()),
    }
}

/// Codex's answer for a command still running: `Process running with session ID 3`.
fn running_session(output: &str) -> Option<u64> {
    let i = output.find("session ID ")? + "session ID ".len();
    let digits: String = output[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[derive(Debug, Clone)]
enum StepKind {
    Tick {
        text: String,
        note: Option<String>,
    },
    Ask {
        text: String,
        question: String,
        timeout_s: u64,
    },
    Fail {
        text: String,
        reason: String,
    },
    Sleep {
        secs: f64,
    },
    /// Run a command of the item's own (`(run: git push origin main)`), then check the item.
    Run {
        text: String,
        command: String,
    },
    Output {
        text: String,
    },
    Done,
}

#[derive(Debug, Clone)]
struct Step {
    kind: StepKind,
    plan: String,
    dir: String,
    description: String,
    timeout_ms: u64,
}

fn steps(dir: &str, plan: &str, items: &[Item], mut resumed: Option<String>) -> Vec<Step> {
    let mk = |kind: StepKind, description: String, timeout_ms: u64| Step {
        kind,
        plan: plan.to_string(),
        dir: dir.to_string(),
        description,
        timeout_ms,
    };
    let mut out = Vec::new();
    for it in items {
        match it.mark {
            ' ' => {}
            // A resumed worker continues from the blocked item with the answer it was given.
            '?' => {
                out.push(mk(
                    StepKind::Tick {
                        text: it.text.clone(),
                        note: resumed.take().map(|a| format!("answer: {a}")),
                    },
                    format!("Check off: {}", it.text),
                    30_000,
                ));
                continue;
            }
            _ => continue,
        }
        if it.text.starts_with("Write summary") {
            out.push(mk(
                StepKind::Output {
                    text: it.text.clone(),
                },
                "Write output.md".into(),
                30_000,
            ));
            continue;
        }
        if let Some(reason) = directive(&it.text, "fail") {
            out.push(mk(
                StepKind::Fail {
                    text: it.text.clone(),
                    reason: reason.to_string(),
                },
                "Mark the item failed".into(),
                30_000,
            ));
            continue;
        }
        if let Some(command) = directive(&it.text, "run") {
            out.push(mk(
                StepKind::Run {
                    text: it.text.clone(),
                    command: command.to_string(),
                },
                format!("Run: {command}"),
                30_000,
            ));
        }
        if let Some(secs) = directive(&it.text, "sleep").and_then(seconds) {
            out.push(mk(
                StepKind::Sleep { secs },
                format!("Work on: {}", it.text),
                (secs * 1000.0) as u64 + 30_000,
            ));
        }
        // The item it was blocked on (reset to unchecked for the new worker): the answer is
        // in its prompt, so it is not asked again.
        if directive(&it.text, "ask").is_some()
            && let Some(a) = resumed.take()
        {
            out.push(mk(
                StepKind::Tick {
                    text: it.text.clone(),
                    note: Some(format!("answer: {a}")),
                },
                format!("Check off: {}", it.text),
                30_000,
            ));
            continue;
        }
        if let Some(ask) = directive(&it.text, "ask") {
            let (question, timeout_s) = match ask.rsplit_once("; timeout ") {
                Some((q, t)) => (q.to_string(), seconds(t).map_or(180, |s| s.ceil() as u64)),
                None => (ask.to_string(), 180),
            };
            out.push(mk(
                StepKind::Ask {
                    text: it.text.clone(),
                    question,
                    timeout_s,
                },
                "Ask the user and wait for the answer".into(),
                timeout_s * 1000 + 30_000,
            ));
        }
        out.push(mk(
            StepKind::Tick {
                text: it.text.clone(),
                note: None,
            },
            format!("Check off: {}", it.text),
            30_000,
        ));
    }
    out.push(mk(
        StepKind::Done,
        "Write the completion marker".into(),
        30_000,
    ));
    out
}

fn seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.trim().parse::<f64>().ok().map(|v| v / 1000.0);
    }
    s.strip_suffix('s').unwrap_or(s).trim().parse::<f64>().ok()
}

impl Step {
    fn command(&self, results: &[ToolResult]) -> String {
        let (plan, dir) = (self.plan.as_str(), self.dir.as_str());
        match &self.kind {
            StepKind::Tick { text, note } => set_mark(plan, text, 'x', note.as_deref()),
            StepKind::Run { command, .. } => format!("{command}\n"),
            StepKind::Fail { text, reason } => format!(
                "{}echo {FAILED_MARK}\n",
                set_mark(plan, text, '!', Some(reason))
            ),
            // Claude Code refuses a bare long `sleep` and tells the model to wait on a
            // condition instead; so the model does.
            StepKind::Sleep { secs } => format!(
                "waited=0; while [ ! -f {stop} ] && [ $waited -lt {tenths} ]; do sleep 0.1; waited=$((waited + 1)); done\n",
                stop = q(&format!("{dir}/ipc/.stop-waiting")),
                tenths = (secs * 10.0) as u64,
            ),
            StepKind::Ask {
                text,
                question,
                timeout_s,
            } => {
                let ipc = format!("{dir}/ipc");
                format!(
                    "n=$(ls {ipc}/ 2>/dev/null | grep -c '\\.question$'); n=$(printf '%03d' $((n + 1)))\n\
                     printf '%s\\n' {question} > {ipc}/$n.question.tmp && mv {ipc}/$n.question.tmp {ipc}/$n.question\n\
                     waited=0\n\
                     while [ ! -f {ipc}/$n.answer ] && [ $waited -lt {tenths} ]; do sleep 0.1; waited=$((waited + 1)); done\n\
                     if [ -f {ipc}/$n.answer ]; then\n\
                       touch {ipc}/$n.done\n\
                       echo \"{ANSWER_MARK}$(tr '\\n' ' ' < {ipc}/$n.answer | sed 's/ *$//')@@\"\n\
                     else\n\
                       printf 'Waiting for the answer to %s: %s\\n' $n {question} > {dir}/context.md.tmp && mv {dir}/context.md.tmp {dir}/context.md\n\
                       {mark}\
                       echo {TIMEOUT_MARK}\n\
                     fi\n",
                    question = q(question),
                    tenths = timeout_s * 10,
                    ipc = q(&ipc),
                    dir = q(dir),
                    mark = set_mark(plan, text, '?', Some(question)),
                )
            }
            StepKind::Output { text } => {
                let answers = answers(results);
                let mut body =
                    String::from("# Summary\n\nThe scripted model worked through the plan.\n");
                for a in &answers {
                    body.push_str(&format!("\nThe user answered: {a}\n"));
                }
                format!(
                    "printf '%s' {body} > {dir}/output.md.tmp && mv {dir}/output.md.tmp {dir}/output.md\n{}",
                    set_mark(plan, text, 'x', None),
                    body = q(&body),
                    dir = q(dir),
                )
            }
            StepKind::Done => format!("touch {}/ipc/.done\n", q(dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt() -> String {
        dispatch_core::prompt::worker_prompt("t1", "do it", None)
    }

    fn run(cmd: &str, cwd: &std::path::Path) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Plays the model against a real shell until it says something.
    fn play(
        cwd: &std::path::Path,
        prompt: &str,
        answer: Option<&str>,
    ) -> (Vec<ToolResult>, String) {
        let mut results = Vec::new();
        loop {
            match next(prompt, &results) {
                Turn::Shell { command, .. } => {
                    if command.contains(".question")
                        && let Some(a) = answer
                    {
                        let ipc = cwd.join(".dispatch/tasks/t1/ipc");
                        let a = a.to_string();
                        std::thread::spawn(move || {
                            for _ in 0..100 {
                                if ipc.join("001.question").exists() {
                                    std::fs::write(ipc.join("001.answer"), format!("{a}\n"))
                                        .unwrap();
                                    return;
                                }
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                        });
                    }
                    results.push(ToolResult {
                        output: run(&command, cwd),
                    })
                }
                Turn::Poll { .. } => panic!("a shell run is never left running"),
                Turn::Say(s) => return (results, s),
            }
        }
    }

    #[test]
    fn works_through_a_plan_with_a_question_like_a_worker() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join(".dispatch/tasks/t1");
        std::fs::create_dir_all(task.join("ipc")).unwrap();
        std::fs::write(
            task.join("plan.md"),
            "# T\n\n- [ ] first\n- [ ] pick a db (ask: which database?)\n  - a note's line\n- [ ] Write summary of findings/changes to .dispatch/tasks/t1/output.md\n",
        )
        .unwrap();
        let (results, said) = play(dir.path(), &prompt(), Some("postgres"));
        assert!(said.starts_with("All items are done"), "{said}");
        assert_eq!(results.len(), 6, "read, tick, ask, tick, output, done");
        let plan = std::fs::read_to_string(task.join("plan.md")).unwrap();
        assert_eq!(
            plan,
            "# T\n\n- [x] first\n- [x] pick a db (ask: which database?)\n  - a note's line\n- [x] Write summary of findings/changes to .dispatch/tasks/t1/output.md\n"
        );
        assert_eq!(
            std::fs::read_to_string(task.join("ipc/001.question")).unwrap(),
            "which database?\n"
        );
        assert!(task.join("ipc/001.done").exists() && task.join("ipc/.done").exists());
        let out = std::fs::read_to_string(task.join("output.md")).unwrap();
        assert!(out.contains("The user answered: postgres"), "{out}");
    }

    #[test]
    fn a_question_that_times_out_blocks_and_a_resumed_worker_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join(".dispatch/tasks/t1");
        std::fs::create_dir_all(task.join("ipc")).unwrap();
        std::fs::write(
            task.join("plan.md"),
            "- [ ] ask it (ask: which one?; timeout 200ms)\n- [ ] then this\n",
        )
        .unwrap();
        let (_, said) = play(dir.path(), &prompt(), None);
        assert!(said.starts_with("No answer came in time"), "{said}");
        let plan = std::fs::read_to_string(task.join("plan.md")).unwrap();
        assert_eq!(
            plan,
            "- [?] ask it (ask: which one?; timeout 200ms)\n  which one?\n- [ ] then this\n"
        );
        assert!(task.join("context.md").exists());
        let resumed = dispatch_core::prompt::worker_prompt(
            "t1",
            &dispatch_core::prompt::resume_context(
                "t1",
                "do it",
                "which one?",
                "the blue one",
                false,
            ),
            None,
        );
        let (_, said) = play(dir.path(), &resumed, None);
        assert!(said.starts_with("All items are done"), "{said}");
        let plan = std::fs::read_to_string(task.join("plan.md")).unwrap();
        assert!(plan.starts_with("- [x] ask it"), "{plan}");
        assert!(
            plan.contains("answer: the blue one") && plan.contains("- [x] then this"),
            "{plan}"
        );
    }

    #[test]
    fn a_failing_item_is_marked_and_the_model_stops() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join(".dispatch/tasks/t1");
        std::fs::create_dir_all(task.join("ipc")).unwrap();
        std::fs::write(
            task.join("plan.md"),
            "- [ ] build (fail: no compiler)\n- [ ] ship\n",
        )
        .unwrap();
        let (_, said) = play(dir.path(), &prompt(), None);
        assert!(said.contains("failed"), "{said}");
        assert_eq!(
            std::fs::read_to_string(task.join("plan.md")).unwrap(),
            "- [!] build (fail: no compiler)\n  no compiler\n- [ ] ship\n"
        );
    }

    #[test]
    fn a_command_left_running_is_polled_and_side_requests_get_text() {
        let results = vec![ToolResult {
            output: "Chunk ID: 1\nProcess running with session ID 7\nOutput:\n".into(),
        }];
        assert_eq!(next(&prompt(), &results), Turn::Poll { session: 7 });
        assert!(matches!(
            next("write a title for this chat", &[]),
            Turn::Say(_)
        ));
    }
}
