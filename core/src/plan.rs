//! The seed's `plan.md`: a markdown checklist that workers tick off.
//!
//! The parser never rejects input: any text is a plan (maybe with no items). It keeps every
//! line exactly as written, so `Plan::parse(s).render() == s` for every string, and a rewrite
//! (a status change, a note) touches only the lines it is about.

use std::fmt;

/// Status of one checklist item, from its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// `- [ ]`: not started (or in progress when it is the first unchecked item).
    Pending,
    /// `- [x]` or `- [X]`.
    Done,
    /// `- [?]`: the worker stopped on a question it could not get answered.
    Blocked,
    /// `- [!]`: the worker hit an error it could not resolve.
    Error,
}

impl ItemStatus {
    /// The character between the brackets when this status is written.
    pub fn marker(self) -> char {
        match self {
            ItemStatus::Pending => ' ',
            ItemStatus::Done => 'x',
            ItemStatus::Blocked => '?',
            ItemStatus::Error => '!',
        }
    }

    fn from_marker(c: u8) -> Option<ItemStatus> {
        match c {
            b' ' => Some(ItemStatus::Pending),
            b'x' | b'X' => Some(ItemStatus::Done),
            b'?' => Some(ItemStatus::Blocked),
            b'!' => Some(ItemStatus::Error),
            _ => None,
        }
    }

    /// Stable lower-case name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Done => "done",
            ItemStatus::Blocked => "blocked",
            ItemStatus::Error => "error",
        }
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One checklist item as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Text after the marker, trimmed.
    pub text: String,
    /// Status from the marker.
    pub status: ItemStatus,
    /// Indented non-checklist lines directly under the item, trimmed and joined by `\n`
    /// (a leading bullet is removed).
    pub note: String,
    /// Nesting level: 0 for a top-level item, 1 for an item indented under another, …
    pub depth: u32,
    line: usize,
    marker_col: usize,
    indent: usize,
    note_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    ending: &'static str,
}

/// A parsed plan.md that remembers its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    lines: Vec<Line>,
    title: Option<String>,
    items: Vec<Item>,
}

/// Parsed pieces of a checklist line: (indent, marker column, status, text).
fn parse_item_line(line: &str) -> Option<(usize, usize, ItemStatus, &str)> {
    let bytes = line.as_bytes();
    let indent = bytes
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    let rest = &bytes[indent..];
    if rest.len() < 5 || !matches!(rest[0], b'-' | b'*' | b'+') {
        return None;
    }
    let spaces = rest[1..]
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    if spaces == 0 {
        return None;
    }
    let open = 1 + spaces;
    if rest.len() < open + 3 || rest[open] != b'[' || rest[open + 2] != b']' {
        return None;
    }
    let status = ItemStatus::from_marker(rest[open + 1])?;
    let after = open + 3;
    if after < rest.len() && rest[after] != b' ' && rest[after] != b'\t' {
        return None;
    }
    let marker_col = indent + open + 1;
    // `after` is an ASCII boundary, so slicing the str there is safe.
    let text = line[indent + after..].trim();
    Some((indent, marker_col, status, text))
}

fn indent_width(line: &str) -> usize {
    line.bytes()
        .take_while(|b| *b == b' ' || *b == b'\t')
        .map(|b| if b == b'\t' { 4 } else { 1 })
        .sum()
}

fn note_text(line: &str) -> &str {
    let t = line.trim();
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = t.strip_prefix(bullet) {
            return rest.trim_start();
        }
    }
    t
}

impl Plan {
    /// Parses plan text. Never fails: text that is not a checklist is kept as is.
    pub fn parse(source: &str) -> Plan {
        let mut lines = Vec::new();
        for raw in source.split_inclusive('\n') {
            let (text, ending) = if let Some(t) = raw.strip_suffix("\r\n") {
                (t, "\r\n")
            } else if let Some(t) = raw.strip_suffix('\n') {
                (t, "\n")
            } else {
                (raw, "")
            };
            lines.push(Line {
                text: text.to_string(),
                ending,
            });
        }
        let mut plan = Plan {
            lines,
            title: None,
            items: Vec::new(),
        };
        plan.reindex();
        plan
    }

    /// Parses bytes read from disk; invalid UTF-8 is replaced, never an error.
    pub fn parse_bytes(bytes: &[u8]) -> Plan {
        Plan::parse(&String::from_utf8_lossy(bytes))
    }

    fn reindex(&mut self) {
        self.title = None;
        self.items.clear();
        // Indents of the open items, to compute depth.
        let mut stack: Vec<usize> = Vec::new();
        let mut in_fence = false;
        for (i, line) in self.lines.iter().enumerate() {
            let text = line.text.as_str();
            if text.trim_start().starts_with("```") {
                in_fence = !in_fence;
                continue;
            }
            if in_fence {
                continue;
            }
            if self.title.is_none()
                && self.items.is_empty()
                && let Some(t) = text.strip_prefix("# ")
            {
                self.title = Some(t.trim().to_string());
                continue;
            }
            if let Some((_, marker_col, status, item_text)) = parse_item_line(text) {
                let indent = indent_width(text);
                while stack.last().is_some_and(|top| *top >= indent) {
                    stack.pop();
                }
                let depth = stack.len() as u32;
                stack.push(indent);
                self.items.push(Item {
                    text: item_text.to_string(),
                    status,
                    note: String::new(),
                    depth,
                    line: i,
                    marker_col,
                    indent,
                    note_lines: 0,
                });
                continue;
            }
            // A note: an indented, non-empty, non-item line right under an item (or its notes).
            if let Some(item) = self.items.last_mut() {
                let follows = item.line + item.note_lines + 1 == i;
                if follows && !text.trim().is_empty() && indent_width(text) > item.indent {
                    if !item.note.is_empty() {
                        item.note.push('\n');
                    }
                    item.note.push_str(note_text(text));
                    item.note_lines += 1;
                }
            }
        }
    }

    /// The first `# ` heading before the first item, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// Checklist items in document order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The plan as text: exactly the source when nothing was changed.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for line in &self.lines {
            out.push_str(&line.text);
            out.push_str(line.ending);
        }
        out
    }

    /// The line ending this plan mostly uses (for lines it inserts).
    fn newline(&self) -> &'static str {
        let crlf = self.lines.iter().filter(|l| l.ending == "\r\n").count();
        let lf = self.lines.iter().filter(|l| l.ending == "\n").count();
        if crlf > lf { "\r\n" } else { "\n" }
    }

    /// Changes the marker of item `index`; every other byte stays as it was.
    /// Returns false when there is no such item.
    pub fn set_status(&mut self, index: usize, status: ItemStatus) -> bool {
        let Some(item) = self.items.get(index) else {
            return false;
        };
        let line = &mut self.lines[item.line].text;
        let col = item.marker_col;
        let mut buf = [0u8; 4];
        line.replace_range(col..col + 1, status.marker().encode_utf8(&mut buf));
        self.items[index].status = status;
        true
    }

    /// Replaces the note lines under item `index` with `note` (one line per line of `note`,
    /// indented under the item). An empty note removes them. Returns false when there is no
    /// such item.
    pub fn set_note(&mut self, index: usize, note: &str) -> bool {
        let Some(item) = self.items.get(index) else {
            return false;
        };
        let (first, count) = (item.line + 1, item.note_lines);
        let pad = " ".repeat(item.indent + 2);
        let nl = self.newline();
        // The item line itself must end with a newline before notes can follow it.
        if !note.trim().is_empty() && self.lines[item.line].ending.is_empty() {
            self.lines[item.line].ending = nl;
        }
        let new_lines: Vec<Line> = note
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Line {
                text: format!("{pad}{}", l.trim()),
                ending: nl,
            })
            .collect();
        self.lines.splice(first..first + count, new_lines);
        self.reindex();
        true
    }

    /// Appends a line at the end of the plan, after a blank line (as the seed's
    /// "Note from dispatcher" does).
    pub fn append_line(&mut self, text: &str) {
        let nl = self.newline();
        if let Some(last) = self.lines.last_mut()
            && last.ending.is_empty()
        {
            last.ending = nl;
        }
        if self.lines.last().is_some_and(|l| !l.text.trim().is_empty()) {
            self.lines.push(Line {
                text: String::new(),
                ending: nl,
            });
        }
        for l in text.lines() {
            self.lines.push(Line {
                text: l.to_string(),
                ending: nl,
            });
        }
        self.reindex();
    }

    /// Index of the first item that is not done: where a worker is, or would resume.
    pub fn current(&self) -> Option<usize> {
        self.items.iter().position(|i| i.status != ItemStatus::Done)
    }

    /// Counts of items by status: (done, total).
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Done)
            .count();
        (done, self.items.len())
    }
}

/// Longest derived title, in characters.
const MAX_TITLE_CHARS: usize = 80;

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}

/// The title of a task with no `--title`: the prompt's first line (without a list marker or
/// a trailing colon), else its id.
fn derived_title(prompt_text: &str, id: &str) -> String {
    let line = first_line(prompt_text)
        .trim_start_matches(['-', '*', '+', ' '])
        .trim_end_matches(':')
        .trim();
    if line.is_empty() {
        id.to_string()
    } else {
        truncate_chars(line, MAX_TITLE_CHARS)
    }
}

/// The plan.md and title a new task `id` gets: `plan_markdown` verbatim when given (it must
/// have items), else a checklist of `steps` (or the list in the prompt, or its first line)
/// with the seed's summary item appended. The coordinator's rule; a client that signs a task
/// computes the same.
pub fn for_new_task(
    id: &str,
    prompt_text: &str,
    steps: &[String],
    plan_markdown: &str,
    title: &str,
) -> Result<(String, String), String> {
    use crate::limits;
    let given_title = Some(title.trim()).filter(|t| !t.is_empty());
    if !plan_markdown.trim().is_empty() {
        let p = Plan::parse(plan_markdown);
        if p.items().is_empty() {
            return Err(
                "the plan has no checklist items; write items as `- [ ] step` lines".into(),
            );
        }
        if p.items().len() > limits::MAX_PLAN_ITEMS {
            return Err(format!(
                "the plan has {} items; the limit is {}",
                p.items().len(),
                limits::MAX_PLAN_ITEMS
            ));
        }
        let title = given_title
            .map(str::to_string)
            .or_else(|| p.title().map(str::to_string))
            .unwrap_or_else(|| derived_title(prompt_text, id));
        return Ok((plan_markdown.to_string(), title));
    }
    let mut items: Vec<String> = if !steps.is_empty() {
        steps.iter().map(|s| s.trim().to_string()).collect()
    } else {
        let listed = list_in_text(prompt_text);
        if listed.is_empty() {
            vec![truncate_chars(
                first_line(prompt_text),
                limits::MAX_STEP_BYTES / 4,
            )]
        } else {
            listed
        }
    };
    if items.len() >= limits::MAX_PLAN_ITEMS {
        items.truncate(limits::MAX_PLAN_ITEMS - 1);
    }
    items.push(crate::prompt::summary_item(id));
    let title = given_title
        .map(str::to_string)
        .unwrap_or_else(|| derived_title(prompt_text, id));
    Ok((render_new(&title, &items), title))
}

/// The item texts of a plan, in order (what a signature fixes; states and notes change as the
/// worker goes).
pub fn item_texts(markdown: &str) -> Vec<String> {
    Plan::parse(markdown)
        .items()
        .iter()
        .map(|i| i.text.clone())
        .collect()
}

/// Builds a new plan.md in the seed's shape: `# Title`, a blank line, then `- [ ]` items.
pub fn render_new(title: &str, items: &[String]) -> String {
    let mut out = format!("# {}\n\n", title.trim());
    for item in items {
        out.push_str("- [ ] ");
        out.push_str(&item.replace(['\r', '\n'], " "));
        out.push('\n');
    }
    out
}

/// Finds a numbered (`1.`, `2)`) or bulleted (`-`, `*`, `+`) list in free text, as users write
/// steps in a prompt. Returns the item texts, or an empty vec when the text has fewer than two
/// list lines.
pub fn list_in_text(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let rest = if let Some(r) = t.strip_prefix(['-', '*', '+']) {
            r.strip_prefix([' ', '\t'])
        } else {
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 3 {
                None
            } else {
                t[digits..]
                    .strip_prefix(['.', ')'])
                    .and_then(|r| r.strip_prefix([' ', '\t']))
            }
        };
        if let Some(r) = rest {
            // A checkbox written in the prompt is not part of the step text.
            let r = r.trim();
            let r = ["[ ] ", "[x] ", "[X] "]
                .iter()
                .find_map(|p| r.strip_prefix(p))
                .unwrap_or(r);
            if !r.trim().is_empty() {
                items.push(r.trim().to_string());
            }
        }
    }
    if items.len() < 2 { Vec::new() } else { items }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "# Security Review\n\n- [x] Scan for hardcoded secrets\n- [ ] Review auth logic\n- [ ] Check dependencies\n- [ ] Write summary of findings/changes to .dispatch/tasks/security-review/output.md\n";

    #[test]
    fn parses_the_seed_plan() {
        let p = Plan::parse(SEED);
        assert_eq!(p.title(), Some("Security Review"));
        assert_eq!(p.items().len(), 4);
        assert_eq!(p.items()[0].status, ItemStatus::Done);
        assert_eq!(p.items()[1].text, "Review auth logic");
        assert_eq!(p.current(), Some(1));
        assert_eq!(p.progress(), (1, 4));
        assert_eq!(p.render(), SEED);
    }

    #[test]
    fn all_markers_and_bullets() {
        let src = "- [ ] a\n* [x] b\n+ [X] c\n- [?] d\n- [!] e\n- [~] not an item\n-[ ] nor this\n- [ ]tight\n";
        let p = Plan::parse(src);
        let got: Vec<_> = p
            .items()
            .iter()
            .map(|i| (i.text.as_str(), i.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", ItemStatus::Pending),
                ("b", ItemStatus::Done),
                ("c", ItemStatus::Done),
                ("d", ItemStatus::Blocked),
                ("e", ItemStatus::Error),
            ]
        );
    }

    #[test]
    fn notes_nesting_and_dispatcher_notes() {
        let src = "# T\n- [x] First\n  Found 3 issues\n  - one is critical\n- [ ] Second\n  - [ ] Sub step\n    sub note\n- [?] Third\n  Which database should I use?\n\n> **Note from dispatcher:** use npx\n";
        let p = Plan::parse(src);
        let items = p.items();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].note, "Found 3 issues\none is critical");
        assert_eq!(items[2].text, "Sub step");
        assert_eq!(items[2].depth, 1);
        assert_eq!(items[2].note, "sub note");
        assert_eq!(items[1].note, "");
        assert_eq!(items[3].note, "Which database should I use?");
        assert_eq!(p.render(), src);
    }

    #[test]
    fn crlf_is_kept_on_rewrite() {
        let src = "# T\r\n\r\n- [ ] a\r\n- [ ] b\r\n";
        let mut p = Plan::parse(src);
        assert!(p.set_status(0, ItemStatus::Done));
        assert!(p.set_note(0, "did it"));
        assert_eq!(p.render(), "# T\r\n\r\n- [x] a\r\n  did it\r\n- [ ] b\r\n");
        assert_eq!(p.items()[0].note, "did it");
    }

    #[test]
    fn rewrite_keeps_surrounding_text() {
        let src = "Intro text\n# Title\nsome words\n\n- [ ] one\n   old note\n- [ ] two\n\ntrailing paragraph";
        let mut p = Plan::parse(src);
        p.set_status(1, ItemStatus::Error);
        p.set_note(0, "new note\nsecond");
        p.set_status(0, ItemStatus::Done);
        assert_eq!(
            p.render(),
            "Intro text\n# Title\nsome words\n\n- [x] one\n  new note\n  second\n- [!] two\n\ntrailing paragraph"
        );
        p.append_line("> **Note from dispatcher:** hi");
        assert!(
            p.render()
                .ends_with("trailing paragraph\n\n> **Note from dispatcher:** hi\n")
        );
        assert_eq!(p.items().len(), 2);
    }

    #[test]
    fn code_fences_hold_no_items() {
        let p = Plan::parse("```\n- [ ] not real\n```\n- [ ] real\n");
        assert_eq!(p.items().len(), 1);
        assert_eq!(p.items()[0].text, "real");
    }

    #[test]
    fn new_plans_and_lists_in_prompts() {
        let steps = list_in_text("Do this:\n1. scan\n2) review\n- [ ] check deps\n");
        assert_eq!(steps, vec!["scan", "review", "check deps"]);
        assert!(list_in_text("just one line").is_empty());
        assert!(list_in_text("- only one").is_empty());
        let md = render_new("T", &steps);
        let p = Plan::parse(&md);
        assert_eq!(p.items().len(), 3);
        assert_eq!(p.title(), Some("T"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn plan_like() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            Just("# Title".to_string()),
            Just("- [ ] item".to_string()),
            Just("* [x] done".to_string()),
            Just("  - [?] nested".to_string()),
            Just("- [!] err".to_string()),
            Just("  a note".to_string()),
            Just("```".to_string()),
            Just(String::new()),
            "[ -~\\t]{0,20}",
        ];
        (prop::collection::vec(
            (line, prop_oneof![Just("\n"), Just("\r\n"), Just("")]),
            0..20,
        ))
        .prop_map(|v| v.into_iter().map(|(l, e)| l + e).collect())
    }

    proptest! {
        #[test]
        fn render_parse_round_trips(s in any::<String>()) {
            prop_assert_eq!(Plan::parse(&s).render(), s);
        }

        #[test]
        fn plan_like_round_trips_and_rewrites_locally(s in plan_like(), idx in 0usize..8) {
            let mut p = Plan::parse(&s);
            prop_assert_eq!(p.render(), s.clone());
            let n = p.items().len();
            if idx < n {
                p.set_status(idx, ItemStatus::Done);
                let again = Plan::parse(&p.render());
                prop_assert_eq!(again.items().len(), n);
                prop_assert_eq!(again.items()[idx].status, ItemStatus::Done);
                prop_assert_eq!(again.render().len(), s.len());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut p = Plan::parse_bytes(&b);
            let n = p.items().len();
            for i in 0..n {
                p.set_status(i, ItemStatus::Blocked);
                p.set_note(i, "x\ny");
            }
            let _ = p.render();
            let _ = list_in_text(&String::from_utf8_lossy(&b));
        }
    }
}
