//! The dashboard's HTML: server-rendered, escaped, readable without JavaScript. Worker and
//! user text is shown with terminal escapes and control characters removed.

use crate::model::Principal;
use dispatch_proto::v1;
use std::fmt::Write;

/// Text for an HTML body or attribute: escaped, and stripped of control characters.
pub(super) fn esc(s: &str) -> String {
    let clean = dispatch_core::text::printable(s);
    let mut out = String::with_capacity(clean.len());
    for c in clean.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page.
pub(super) fn page(title: &str, who: Option<&Principal>, live: Option<&str>, body: &str) -> String {
    let nav = match who {
        Some(w) => format!(
            r#"<nav aria-label="Main"><a href="/">Tasks</a> <a href="/inbox">Inbox</a> <a href="/nodes">Nodes</a>
<button type="button" id="notify" class="link" hidden>Notify me of questions</button>
<span class="who">{}</span>
<form method="post" action="/logout" class="inline"><button type="submit">Log out</button></form></nav>"#,
            esc(&w.name())
        ),
        None => String::new(),
    };
    // `data-live`: what the page's live updates follow ("" for every task).
    let live = live
        .map(|l| format!(r#" data-live="{}""#, esc(l)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · dispatch</title><link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>
<body{live}><header><h1><a href="/">dispatch</a></h1>{nav}</header><main>{body}</main></body></html>"#,
        esc(title)
    )
}

fn state_name(t: &v1::Task) -> &'static str {
    t.task_state().as_str()
}

fn icon(s: v1::ItemStatus) -> (&'static str, &'static str) {
    match s {
        v1::ItemStatus::Done => ("☑", "done"),
        v1::ItemStatus::Blocked => ("?", "blocked"),
        v1::ItemStatus::Error => ("✗", "failed"),
        _ => ("☐", "open"),
    }
}

/// One task as a card: its state, where it runs, its checklist and its open questions (with
/// an answer box when `can_answer`). `id="task-ID"`: what live updates replace.
pub(super) fn task_card(t: &v1::Task, can_answer: bool, full: bool) -> String {
    let state = state_name(t);
    let items = t.plan.as_ref().map(|p| p.items.as_slice()).unwrap_or(&[]);
    let done = items
        .iter()
        .filter(|i| i.status() == v1::ItemStatus::Done)
        .count();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<article class="task state-{state}" id="task-{id}" data-state="{state}" aria-labelledby="title-{id}">
<h3 id="title-{id}"><a href="/task/{id}">{id}</a> <span class="badge">{state}</span> <span class="progress" aria-label="{done} of {all} items done">{done}/{all}</span></h3>
<p class="meta">{title}{node}{using}{owner}{times}</p>"#,
        id = esc(&t.id),
        all = items.len(),
        title = if t.title.is_empty() {
            String::new()
        } else {
            format!("<span class=\"title\">{}</span>", esc(&t.title))
        },
        node = if t.node.is_empty() {
            String::new()
        } else {
            format!(" · on <b>{}</b>", esc(&t.node))
        },
        owner = if t.owner.is_empty() {
            String::new()
        } else {
            format!(" · by {}", esc(&t.owner))
        },
        using = match (t.backend.as_str(), t.model.as_str()) {
            ("", _) => String::new(),
            (b, "") => format!(" · {}", esc(b)),
            (b, m) => format!(" · {} ({})", esc(m), esc(b)),
        },
        times = times(t),
    );
    if t.summary {
        out.push_str("<p class=\"note\">(a summary: your token sees only how far it is)</p>");
    } else if !items.is_empty() {
        out.push_str("<ul class=\"checklist\">");
        for i in items {
            let (mark, class) = icon(i.status());
            let _ = write!(
                out,
                r#"<li class="{class} depth-{}"><span aria-hidden="true">{mark}</span> <span class="sr">{class}:</span> {}{}</li>"#,
                i.depth.min(8),
                esc(&i.text),
                if i.note.is_empty() {
                    String::new()
                } else {
                    format!(" <i>— {}</i>", esc(&i.note))
                }
            );
        }
        out.push_str("</ul>");
    }
    if !t.reason.is_empty() && (full || t.task_state().is_terminal()) {
        let _ = write!(out, "<p class=\"reason\">{}</p>", esc(&t.reason));
    }
    if !t.activity.is_empty() && !t.task_state().is_terminal() {
        let _ = write!(out, "<p class=\"doing\">doing: {}</p>", esc(&t.activity));
    }
    if let Some(b) = &t.budget {
        let limit = dispatch_proto::convert::budget_from_proto(b);
        let spent = dispatch_proto::convert::spend_from_proto(t.spend.as_ref());
        let _ = write!(
            out,
            "<p class=\"budget{}\">budget: {}</p>",
            if limit.reached_by(&spent) {
                " reached"
            } else {
                ""
            },
            esc(&limit.against(&spent))
        );
    }
    for q in t.questions.iter().filter(|q| q.answer.is_none()) {
        out.push_str(&question_block(&t.id, q.seq, &q.kind, &q.text, can_answer));
    }
    if full && can_answer {
        out.push_str(&actions(t));
    }
    if full {
        let answered: Vec<&v1::Question> =
            t.questions.iter().filter(|q| q.answer.is_some()).collect();
        if !answered.is_empty() {
            out.push_str("<details><summary>Answered questions</summary><dl>");
            for q in answered {
                let _ = write!(
                    out,
                    "<dt>{}: {}</dt><dd>{}</dd>",
                    dispatch_core::policy::label_of(q.seq, &q.kind),
                    esc(&q.text),
                    esc(q.answer.as_deref().unwrap_or_default())
                );
            }
            out.push_str("</dl></details>");
        }
        if !t.notes.is_empty() {
            out.push_str("<section class=\"notes\"><h3>Notes to the worker</h3><ul>");
            for n in &t.notes {
                let _ = write!(
                    out,
                    "<li><b>{}</b> <time datetime=\"{}\">{}</time>: {}</li>",
                    esc(&n.author),
                    n.at_ms,
                    esc(&dispatch_core::duration::ago(n.at_ms, crate::now_ms())),
                    esc(&n.text)
                );
            }
            out.push_str("</ul></section>");
        }
    }
    out.push_str("</article>");
    out
}

/// A task's output.md, diff and the end of its worker output, below its card: each section is
/// there from the start (hidden while empty) so live updates fill it in as text.
pub(super) fn details(id: &str, output: &str, diff: &str, tail: &str, log_seq: u64) -> String {
    let hidden = |s: &str| if s.is_empty() { " hidden" } else { "" };
    format!(
        r#"<section id="output-section"{}><h2>output.md</h2><pre class="output" id="output-text">{}</pre></section>
<section id="diff-section"{}><h2>Changes</h2><pre class="diff" id="diff-text">{}</pre></section>
<section id="logs-section"{}><h2>Worker output (the end)</h2><pre class="logs" id="log-text" data-log-seq="{log_seq}">{}</pre><p class="note">All of it: <code>dispatch logs {}</code></p></section>"#,
        hidden(output),
        esc(output),
        hidden(diff),
        esc(diff),
        hidden(tail),
        esc(tail),
        esc(id)
    )
}

/// Cancel (while it runs or waits) and Retry (once it ended other than completed) for one
/// who may act on the task; the RPCs check again.
fn actions(t: &v1::Task) -> String {
    use dispatch_core::TaskState;
    let id = esc(&t.id);
    match t.task_state() {
        s if !s.is_terminal() => format!(
            r#"<form method="post" action="/task/{id}/cancel" class="actions"><button type="submit" class="danger">Cancel task</button></form>"#
        ),
        TaskState::Completed => String::new(),
        _ => format!(
            r#"<form method="post" action="/task/{id}/retry" class="actions"><button type="submit">Retry task</button></form>"#
        ),
    }
}

/// A waiting question, with its answer form when the viewer may answer.
pub(super) fn question_block(
    task: &str,
    seq: u32,
    kind: &str,
    text: &str,
    can_answer: bool,
) -> String {
    let form = if can_answer && kind == "budget" {
        // Whether to go on past the budget: two buttons.
        format!(
            r#"<form method="post" action="/task/{t}/answer" class="answer approval">
<input type="hidden" name="seq" value="{seq}">
<button type="submit" name="text" value="yes">Continue</button>
<button type="submit" name="text" value="no" class="danger">Stop the task</button></form>"#,
            t = esc(task)
        )
    } else if can_answer && seq > dispatch_core::policy::APPROVAL_SEQ_BASE {
        // A tool approval is decided, not written: three buttons (the one pressed is the answer).
        format!(
            r#"<form method="post" action="/task/{t}/answer" class="answer approval">
<input type="hidden" name="seq" value="{seq}">
<button type="submit" name="text" value="yes">Allow</button>
<button type="submit" name="text" value="always">Always allow for this task</button>
<button type="submit" name="text" value="no" class="danger">Deny</button></form>"#,
            t = esc(task)
        )
    } else if can_answer {
        format!(
            r#"<form method="post" action="/task/{t}/answer" class="answer">
<input type="hidden" name="seq" value="{seq}">
<label for="answer-{t}-{seq}">Your answer</label>
<textarea id="answer-{t}-{seq}" name="text" rows="2" required data-keep="answer-{t}-{seq}"></textarea>
<button type="submit">Answer</button></form>"#,
            t = esc(task)
        )
    } else {
        String::new()
    };
    let label = dispatch_core::policy::label_of(seq, kind);
    let label = format!("{}{}", label[..1].to_uppercase(), &label[1..]);
    format!(
        r#"<div class="question" role="group" aria-label="{label} of {t}"><p><b>{label}:</b> {q}</p>{form}</div>"#,
        t = esc(task),
        q = esc(text)
    )
}

/// A list of task cards, active ones first.
pub(super) fn task_list(tasks: &[v1::Task], can_answer: impl Fn(&v1::Task) -> bool) -> String {
    let (active, ended): (Vec<&v1::Task>, Vec<&v1::Task>) =
        tasks.iter().partition(|t| !t.task_state().is_terminal());
    let mut out = String::from(
        "<section aria-labelledby=\"active-h\"><h2 id=\"active-h\">Active</h2><div id=\"active\" class=\"cards\">",
    );
    if active.is_empty() {
        out.push_str("<p class=\"empty\">Nothing is running. Dispatch with <code>dispatch \"&lt;prompt&gt;\"</code>.</p>");
    }
    for t in &active {
        out.push_str(&task_card(t, can_answer(t), false));
    }
    out.push_str("</div></section><section aria-labelledby=\"ended-h\"><h2 id=\"ended-h\">Ended</h2><div id=\"ended\" class=\"cards\">");
    for t in &ended {
        out.push_str(&task_card(t, false, false));
    }
    out.push_str("</div></section>");
    out
}

/// When a task was submitted, and how long it has run (or ran), for people; `<time>`
/// elements carry the instant for machines.
fn times(t: &v1::Task) -> String {
    let now = crate::now_ms();
    let mut out = String::new();
    if t.created_at_ms > 0 {
        let _ = write!(
            out,
            " · submitted <time datetime=\"{}\">{}</time>",
            t.created_at_ms,
            dispatch_core::duration::ago(t.created_at_ms, now)
        );
    }
    if t.started_at_ms > 0 {
        let end = if t.ended_at_ms > 0 {
            t.ended_at_ms
        } else {
            now
        };
        let _ = write!(
            out,
            " · {} {}",
            if t.ended_at_ms > 0 {
                "ran"
            } else {
                "running for"
            },
            dispatch_core::duration::human_secs((end - t.started_at_ms).max(0) / 1000)
        );
    }
    out
}

/// The nodes table.
pub(super) fn nodes(nodes: &[v1::Node]) -> String {
    let mut out = String::from(
        "<table><caption>Agent nodes</caption><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">State</th><th scope=\"col\">Load</th><th scope=\"col\">Backends</th><th scope=\"col\">Labels</th><th scope=\"col\">Version</th><th scope=\"col\">Last seen</th></tr></thead><tbody>",
    );
    for n in nodes {
        let state = dispatch_proto::convert::node_state(n);
        let labels: Vec<String> = n
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
        let backends: Vec<String> = n.backends.iter().map(|b| esc(&b.name)).collect();
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"{}\">{state}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td><time datetime=\"{}\">{}</time></td></tr>",
            esc(&n.name),
            state.replace(", ", " "),
            n.running,
            n.capacity,
            backends.join(", "),
            labels.join(", "),
            esc(&n.version),
            n.last_seen_ms,
            dispatch_core::duration::ago(n.last_seen_ms, crate::now_ms())
        );
    }
    if nodes.is_empty() {
        out.push_str("<tr><td colspan=\"7\">No node has connected yet: start <code>dispatch-agent --coordinator URL</code>.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The inbox: every waiting question, the one waiting longest first, with how long it has
/// waited.
pub(super) fn inbox(questions: &[v1::PendingQuestion], can_answer: bool, now_ms: i64) -> String {
    if questions.is_empty() {
        return "<p class=\"empty\">No worker is waiting for an answer.</p>".into();
    }
    let mut sorted: Vec<&v1::PendingQuestion> = questions.iter().collect();
    sorted.sort_by_key(|q| (q.asked_at_ms, q.task_id.clone(), q.seq));
    let mut out = String::from("<div class=\"cards\">");
    for q in sorted {
        let _ = write!(
            out,
            r#"<article class="task state-waiting" id="inbox-{id}-{seq}"><h3><a href="/task/{id}">{id}</a> <span class="meta">{title} · on {node} · <span class="waited" title="asked at {at} ms since the epoch">waiting {waited}</span></span></h3>{block}</article>"#,
            id = esc(&q.task_id),
            seq = q.seq,
            title = esc(&q.title),
            node = esc(&q.node),
            at = q.asked_at_ms,
            waited =
                esc(dispatch_core::duration::ago(q.asked_at_ms, now_ms).trim_end_matches(" ago")),
            block = question_block(&q.task_id, q.seq, &q.kind, &q.text, can_answer)
        );
    }
    out.push_str("</div>");
    out
}

/// The login form.
pub(super) fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        r#"<section class="login"><h2>Log in</h2>{error}
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required placeholder="dsp_…">
<button type="submit">Log in</button></form>
<p>Use the token you give the CLI (<code>DISPATCH_TOKEN</code>); an admin makes one with <code>dispatch token create --user NAME</code>.</p></section>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_is_three_buttons_and_a_question_a_text_box() {
        let q = question_block("t", 2, "", "Which database?", true);
        assert!(q.contains("<textarea"), "{q}");
        assert!(q.contains("<b>Question 002:</b>"), "{q}");
        let a = question_block(
            "t",
            dispatch_core::policy::APPROVAL_SEQ_BASE + 1,
            "approval",
            "Allow Bash: git push origin main?",
            true,
        );
        assert!(!a.contains("<textarea"), "{a}");
        assert!(a.contains("<b>Approval 1:</b>"), "{a}");
        for v in ["yes", "always", "no"] {
            assert!(a.contains(&format!(r#"name="text" value="{v}""#)), "{a}");
        }
        assert!(!question_block("t", 2, "", "x", false).contains("<form"));
        let b = question_block(
            "t",
            dispatch_core::policy::APPROVAL_SEQ_BASE + 2,
            "budget",
            "`t` has used $5.02 of $5.00 — continue with $5.00 more?",
            true,
        );
        assert!(b.contains("<b>Budget 2:</b>"), "{b}");
        assert!(b.contains(r#"value="yes">Continue"#), "{b}");
        assert!(
            b.contains(r#"value="no" class="danger">Stop the task"#),
            "{b}"
        );
        assert!(!b.contains("always"), "{b}");
    }

    /// The inbox shows the question waiting longest first, and for how long.
    #[test]
    fn the_inbox_puts_the_longest_wait_first() {
        let q = |task: &str, at: i64| v1::PendingQuestion {
            task_id: task.into(),
            seq: 1,
            text: "which?".into(),
            asked_at_ms: at,
            ..Default::default()
        };
        let now = 10_000_000;
        let page = inbox(
            &[q("newer", now - 5_000), q("older", now - 600_000)],
            true,
            now,
        );
        let (older, newer) = (
            page.find("inbox-older-1").unwrap(),
            page.find("inbox-newer-1").unwrap(),
        );
        assert!(older < newer, "{page}");
        assert!(page.contains("waiting 10m"), "{page}");
        assert!(page.contains("waiting 5s"), "{page}");
    }
}
