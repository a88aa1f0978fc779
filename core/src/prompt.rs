//! The seed's "Worker Prompt Template", filled in for one task.

/// Path of a task's directory relative to the workdir, as the seed writes it.
pub fn task_dir(task_id: &str) -> String {
    format!(".dispatch/tasks/{task_id}")
}

/// The output.md item the seed appends to every plan.
pub fn summary_item(task_id: &str) -> String {
    format!(
        "Write summary of findings/changes to {}/output.md",
        task_dir(task_id)
    )
}

/// Builds the worker prompt: the optional alias prompt first, then the seed's template with
/// the task id filled in and a `Context:` block (the user's request) before the closing line.
pub fn worker_prompt(task_id: &str, context: &str, alias_prompt: Option<&str>) -> String {
    let dir = task_dir(task_id);
    let mut out = String::new();
    if let Some(extra) = alias_prompt.map(str::trim).filter(|p| !p.is_empty()) {
        out.push_str(extra);
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "You have a plan file at {dir}/plan.md containing a checklist.\n\
         Work through it top to bottom. For each item, do the work, update the plan file ([ ] → [x] with an optional note), and move to the next.\n\
         If you need to ask the user a question, write it to {dir}/ipc/<NNN>.question (atomic write via temp file + mv; sequence from 001). Poll for a matching .answer file. When you receive the answer, write a .done marker and continue. If no answer arrives within 3 minutes, write your context to {dir}/context.md, mark the item [?] with the question, and stop.\n\
         If you hit an unresolvable error, mark the item [!] with a description and stop.\n"
    ));
    let context = context.trim();
    if !context.is_empty() {
        out.push_str("\nContext:\n");
        out.push_str(context);
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "When all items are checked, write a completion marker: touch {dir}/ipc/.done — then your work is done.\n"
    ));
    out
}

/// The `Context:` of a worker that continues a blocked task (the seed's legacy fallback): the
/// user's request, then where the previous worker left off and the answer it was waiting for.
pub fn resume_context(task_id: &str, request: &str, question: &str, answer: &str) -> String {
    let dir = task_dir(task_id);
    format!(
        "{}\n\nThis task was blocked on a question and a previous worker stopped. Read the plan file, then {dir}/context.md \
         (the previous worker's context, if it exists). The question was: \"{}\". The answer is: \"{}\". \
         Continue from the blocked item.",
        request.trim(),
        question.trim(),
        answer.trim()
    )
}

/// The `Context:` of a worker that retries a task whose previous worker stopped early.
pub fn retry_context(request: &str, previous: &str) -> String {
    format!(
        "{}\n\nA previous worker stopped before finishing ({}). Items already checked in the plan are done; \
         continue with the unchecked items.",
        request.trim(),
        previous.trim()
    )
}

/// The seed's worktree directive: a prompt that says "in a worktree" or "use a worktree".
pub fn wants_worktree(prompt: &str) -> bool {
    let p = prompt.to_lowercase();
    [
        "in a worktree",
        "use a worktree",
        "using a worktree",
        "in a git worktree",
        "use a git worktree",
    ]
    .iter()
    .any(|d| p.contains(d))
}

/// Finds the plan path a worker prompt points at (`.dispatch/tasks/<id>/plan.md`), as a
/// worker written for the seed would.
pub fn plan_path_in(prompt: &str) -> Option<&str> {
    let marker = "You have a plan file at ";
    let start = prompt.find(marker)? + marker.len();
    let rest = &prompt[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let path = &rest[..end];
    path.ends_with("plan.md").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template() {
        let p = worker_prompt(
            "security-review",
            "review auth",
            Some("You are a security reviewer."),
        );
        assert!(p.starts_with("You are a security reviewer.\n\nYou have a plan file at .dispatch/tasks/security-review/plan.md"));
        let ctx = p.find("Context:\nreview auth").unwrap();
        let closing = p.find("When all items are checked").unwrap();
        assert!(ctx < closing);
        assert!(p.ends_with(
            "touch .dispatch/tasks/security-review/ipc/.done — then your work is done.\n"
        ));
        assert_eq!(
            plan_path_in(&p),
            Some(".dispatch/tasks/security-review/plan.md")
        );
        assert_eq!(plan_path_in("no plan here"), None);
        assert!(!worker_prompt("x", "", None).contains("Context:"));
        assert!(wants_worktree("Fix the bug in a worktree please"));
        assert!(wants_worktree("Use a worktree for this"));
        assert!(!wants_worktree("work on the tree"));
        let r = resume_context("t", "do it", "which db?", "postgres");
        assert!(r.starts_with("do it\n\nThis task was blocked"));
        assert!(
            r.contains(".dispatch/tasks/t/context.md") && r.contains("The answer is: \"postgres\"")
        );
    }
}
