//! What a notification says, in each receiver's own format: Slack (Block Kit through an
//! incoming webhook), Discord (an embed through a channel webhook), Microsoft Teams (an Adaptive
//! Card through a Workflows webhook), ntfy (its JSON publish) and email (text and HTML).
//!
//! Everything a worker wrote (a question, a plan item) is hostile text: it is escaped for the
//! format it lands in (no markup, no mention, no link of its own), cut to the receiver's
//! limits at a character boundary, and only dispatch's own link is a link.

use super::Notification;
use serde_json::{Value, json};

/// A notification with what the receivers show around it.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The event.
    pub n: Notification,
    /// The one-time answer link of a question (None: no public address configured).
    pub answer_link: Option<String>,
    /// The task's page on the dashboard (None: no public address configured).
    pub task_link: Option<String>,
}

/// `s` cut to at most `max` characters (with `…` in place of the rest).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line of `s`: control characters and line breaks as spaces.
fn line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Slack's mrkdwn: `&`, `<` and `>` escaped (so no `<!channel>`, `<@U…>` or `<url|text>`).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown (Discord, Teams): every character that could format, link or quote escaped with
/// a backslash, and `@` followed by a zero-width joiner so no mention forms.
fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '[' | ']' | '(' | ')' | '#' | '-'
            | '+' | '!' | '{' | '}' | '.' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{2060}"),
            c => out.push(c),
        }
    }
    out
}

/// The headline: `` `fix-login` asks (question 002) `` or `` `fix-login` completed ``.
pub fn headline(n: &Notification) -> String {
    match n.event {
        "digest" => line(&n.title),
        "question" => format!(
            "`{}` asks ({})",
            line(&n.task),
            dispatch_core::policy::label_of(n.seq, &n.kind)
        ),
        _ => format!("`{}` {}", line(&n.task), line(&n.state)),
    }
}

/// The body: the question (or why the task ended).
fn body(n: &Notification) -> &str {
    if n.event == "question" || n.event == "digest" {
        &n.question
    } else {
        &n.reason
    }
}

/// `node box · 2 of 5 items done` (what is known).
fn context(m: &Message) -> String {
    let mut parts = Vec::new();
    if !m.n.node.is_empty() {
        parts.push(format!("node {}", line(&m.n.node)));
    }
    if let Some((done, all)) = progress(&m.n) {
        parts.push(format!("{done} of {all} items done"));
    }
    if !m.n.owner.is_empty() {
        parts.push(format!("by {}", line(&m.n.owner)));
    }
    parts.join(" · ")
}

/// Items done and in all, when the plan has any.
fn progress(n: &Notification) -> Option<(u32, u32)> {
    (n.items > 0).then_some((n.items_done, n.items))
}

/// What the button to the dashboard says.
fn open_label(n: &Notification) -> &'static str {
    if n.event == "digest" {
        "Open the inbox"
    } else {
        "Open the task"
    }
}

/// What many held notifications become: one, listing each headline and its first line, with
/// the dashboard's inbox as its link (the answer links of what it holds are not repeated).
pub fn digest(held: &[std::sync::Arc<Message>], inbox: Option<String>) -> Message {
    let questions = held.iter().filter(|m| m.n.event == "question").count();
    let ended = held.len() - questions;
    let title = match (questions, ended) {
        (q, 0) => format!("{q} questions while you were away"),
        (0, e) => format!("{e} tasks ended while you were away"),
        (q, e) => format!("{q} questions and {e} ended tasks while you were away"),
    };
    let lines: Vec<String> = held
        .iter()
        .map(|m| format!("• {}: {}", headline(&m.n), cut(&line(body(&m.n)), 200)))
        .collect();
    Message {
        n: Notification {
            event: "digest",
            title,
            question: cut(&lines.join("\n"), 3000),
            ..Default::default()
        },
        answer_link: None,
        task_link: inbox,
    }
}

/// What an answer button says.
fn answer_label(n: &Notification) -> &'static str {
    match n.kind.as_str() {
        "approval" => "Allow or deny",
        "budget" => "Continue or stop",
        _ => "Answer",
    }
}

/// A Slack incoming webhook's body: Block Kit (header, the question, context, an Answer
/// button) with a plain `text` for notifications and old clients. Limits: header 150
/// characters, section 3000, context 2000, button label 75, URL 3000.
pub fn slack(m: &Message) -> Value {
    let n = &m.n;
    let head = cut(&line(&headline(n)), 150);
    let text = cut(&slack_escape(body(n)), 3000);
    let title = if n.title.is_empty() {
        String::new()
    } else {
        format!("*{}*\n", cut(&slack_escape(&line(&n.title)), 200))
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": head, "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("{title}{text}"), 3000)}}),
    ];
    let ctx = context(m);
    if !ctx.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&slack_escape(&ctx), 2000)}]}));
    }
    let mut buttons = Vec::new();
    if let Some(url) = m.answer_link.as_deref().filter(|u| u.len() <= 3000) {
        buttons.push(json!({"type": "button", "text": {"type": "plain_text", "text": answer_label(n)}, "url": url, "style": "primary"}));
    }
    if let Some(url) = m.task_link.as_deref().filter(|u| u.len() <= 3000) {
        buttons.push(
            json!({"type": "button", "text": {"type": "plain_text", "text": open_label(n)}, "url": url}),
        );
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({
        "text": cut(&slack_escape(&format!("{}: {}", headline(n), line(body(n)))), 3000),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// A Discord webhook's body: one embed (title, the question, node and progress as fields, the
/// answer link as the title's URL), and no mention parsed at all. Limits: content 2000,
/// title 256, description 4096, field value 1024.
pub fn discord(m: &Message) -> Value {
    let n = &m.n;
    let mut fields = Vec::new();
    if !n.node.is_empty() {
        fields.push(json!({"name": "Node", "value": cut(&markdown_escape(&line(&n.node)), 1024), "inline": true}));
    }
    if let Some((done, all)) = progress(n) {
        fields.push(
            json!({"name": "Plan", "value": format!("{done} of {all} items done"), "inline": true}),
        );
    }
    if !n.title.is_empty() {
        fields.push(json!({"name": "Task", "value": cut(&markdown_escape(&line(&n.title)), 1024), "inline": false}));
    }
    let mut description = cut(&markdown_escape(body(n)), 3800);
    if let Some(url) = &m.answer_link {
        description.push_str(&format!("\n\n[{}]({url})", answer_label(n)));
    }
    let mut embed = json!({
        "title": cut(&line(&headline(n)), 256),
        "description": description,
        "color": if n.event == "question" { 0xE8A33D } else { 0x4F8A5B },
        "fields": fields,
    });
    if let Some(url) = m.answer_link.as_ref().or(m.task_link.as_ref()) {
        embed["url"] = json!(url);
    }
    json!({
        "content": cut(&markdown_escape(&line(&headline(n))), 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
}

/// A Teams Workflows webhook's body: a message with one Adaptive Card (1.4): the headline, the
/// question, a fact set, and an Answer action that opens the link.
pub fn teams(m: &Message) -> Value {
    let n = &m.n;
    let mut facts = Vec::new();
    if !n.node.is_empty() {
        facts.push(json!({"title": "Node", "value": markdown_escape(&line(&n.node))}));
    }
    if let Some((done, all)) = progress(n) {
        facts.push(json!({"title": "Plan", "value": format!("{done} of {all} items done")}));
    }
    if !n.title.is_empty() {
        facts.push(json!({"title": "Task", "value": cut(&markdown_escape(&line(&n.title)), 500)}));
    }
    let mut body_blocks = vec![
        json!({"type": "TextBlock", "text": markdown_escape(&cut(&line(&headline(n)), 200)), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": cut(&markdown_escape(body(n)), 4000), "wrap": true}),
    ];
    if !facts.is_empty() {
        body_blocks.push(json!({"type": "FactSet", "facts": facts}));
    }
    let mut actions = Vec::new();
    if let Some(url) = &m.answer_link {
        actions.push(json!({"type": "Action.OpenUrl", "title": answer_label(n), "url": url}));
    }
    if let Some(url) = &m.task_link {
        actions.push(json!({"type": "Action.OpenUrl", "title": open_label(n), "url": url}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body_blocks,
    });
    if !actions.is_empty() {
        card["actions"] = json!(actions);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// ntfy's JSON publish (POSTed to the server's root): the topic, a title, the text as plain
/// text, the answer link as the click target and a view action, high priority for a question.
pub fn ntfy(m: &Message, topic: &str) -> Value {
    let n = &m.n;
    let mut v = json!({
        "topic": topic,
        "title": cut(&line(&headline(n)), 200),
        "message": cut(&format!("{}\n{}", body(n), context(m)), 3500),
        "tags": [if n.event == "question" { "question" } else { "checkered_flag" }],
        "priority": if n.event == "question" { 4 } else { 3 },
        "markdown": false,
    });
    if let Some(url) = m.answer_link.as_ref().or(m.task_link.as_ref()) {
        v["click"] = json!(url);
    }
    if let Some(url) = &m.answer_link {
        v["actions"] =
            json!([{"action": "view", "label": answer_label(n), "url": url, "clear": true}]);
    }
    v
}

/// An email: its subject, a plain-text body and an HTML body (every text escaped).
pub fn email(m: &Message) -> (String, String, String) {
    let n = &m.n;
    let subject = cut(&line(&format!("dispatch: {}", headline(n))), 200);
    let ctx = context(m);
    let mut text = format!("{}\n\n{}\n", headline(n), body(n));
    if !n.title.is_empty() {
        text.push_str(&format!("\nTask: {}\n", line(&n.title)));
    }
    if !ctx.is_empty() {
        text.push_str(&format!("{ctx}\n"));
    }
    if let Some(url) = &m.answer_link {
        text.push_str(&format!(
            "\n{}: {url}\n(the link works once, for this question only)\n",
            answer_label(n)
        ));
    } else if let Some(url) = m.task_link.as_ref().filter(|_| n.event == "digest") {
        text.push_str(&format!("\n{}: {url}\n", open_label(n)));
    }
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = format!(
        "<p><b>{}</b></p><p style=\"white-space: pre-wrap\">{}</p>",
        esc(&headline(n)),
        esc(body(n))
    );
    if !ctx.is_empty() {
        html.push_str(&format!("<p>{}</p>", esc(&ctx)));
    }
    if let Some(url) = &m.answer_link {
        html.push_str(&format!(
            "<p><a href=\"{}\">{}</a> (the link works once, for this question only)</p>",
            esc(url),
            answer_label(n)
        ));
    }
    (subject, text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> Message {
        let mut n = Notification::question(
            "fix-login",
            "Fix the *login* page",
            "box",
            2,
            "<!channel> @everyone see [this](https://evil.example) & <https://evil|click>",
        );
        n.owner = "ann".into();
        n.items_done = 2;
        n.items = 5;
        Message {
            n,
            answer_link: Some("https://dispatch.example/a/tok".into()),
            task_link: Some("https://dispatch.example/task/fix-login".into()),
        }
    }

    #[test]
    fn a_workers_text_cannot_mention_link_or_format() {
        let m = hostile();
        let s = slack(&m).to_string();
        assert!(
            !s.contains("<!channel>") && !s.contains("<https://evil"),
            "{s}"
        );
        assert!(s.contains("&lt;!channel&gt;"), "{s}");
        let d = discord(&m);
        assert_eq!(d["allowed_mentions"]["parse"], json!([]));
        let desc = d["embeds"][0]["description"].as_str().unwrap();
        assert!(!desc.contains("[this](https://evil"), "{desc}");
        assert!(desc.contains("\\[this\\]\\(https://evil"), "{desc}");
        assert!(desc.contains("@\u{2060}everyone"), "{desc}");
        assert!(
            desc.ends_with("[Answer](https://dispatch.example/a/tok)"),
            "{desc}"
        );
        let t = teams(&m).to_string();
        assert!(!t.contains("[this](https://evil"), "{t}");
        let (_, _, html) = email(&m);
        assert!(!html.contains("<https://evil"), "{html}");
        assert!(html.contains("<a href=\"https://dispatch.example/a/tok\">Answer</a>"));
    }

    #[test]
    fn long_text_is_cut_to_each_receivers_limits() {
        let mut m = hostile();
        m.n.question = "x".repeat(10_000);
        m.n.task = "t".repeat(63);
        let s = slack(&m);
        assert!(
            s["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 150
        );
        assert!(
            s["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 3000
        );
        let d = discord(&m);
        assert!(
            d["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 4096
        );
        assert!(d["embeds"][0]["title"].as_str().unwrap().chars().count() <= 256);
        assert!(d["content"].as_str().unwrap().chars().count() <= 2000);
        let n = ntfy(&m, "topic");
        assert!(n["message"].as_str().unwrap().len() <= 4096 * 3);
        assert_eq!(cut("héllo", 3), "hé…");
    }

    #[test]
    fn each_format_carries_the_question_the_task_node_progress_and_link() {
        let m = hostile();
        let s = slack(&m);
        assert_eq!(
            s["blocks"][0]["text"]["text"],
            "`fix-login` asks (question 002)"
        );
        assert_eq!(
            s["blocks"][3]["elements"][0]["url"],
            "https://dispatch.example/a/tok"
        );
        assert!(
            s["blocks"][2]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .contains("2 of 5 items done")
        );
        let t = teams(&m);
        let card = &t["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["actions"][0]["url"], "https://dispatch.example/a/tok");
        let n = ntfy(&m, "alice");
        assert_eq!(n["topic"], "alice");
        assert_eq!(n["click"], "https://dispatch.example/a/tok");
        assert_eq!(n["actions"][0]["action"], "view");
        let (subject, text, _) = email(&m);
        assert_eq!(subject, "dispatch: `fix-login` asks (question 002)");
        assert!(
            text.contains("node box · 2 of 5 items done · by ann"),
            "{text}"
        );
    }
}
