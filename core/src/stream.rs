//! Structured worker output: the event streams Claude Code (`-p --output-format stream-json
//! --verbose`) and Codex (`exec --json`) print, one JSON object per line, read into what a
//! person follows — one activity line per tool use, message or command — and the task's token
//! counts and cost.
//!
//! The stream is the worker's output, so it is hostile input: a line is bounded
//! ([`MAX_STREAM_LINE_BYTES`]; past it the rest of the line is skipped), an activity line is cut
//! to [`MAX_ACTIVITY_LINE_CHARS`], a line that is not JSON is kept as text, and an event type
//! this parser does not know is counted and otherwise ignored (the raw stream stays the log).
//! Nothing here fails.

use crate::signals::{Cli, Clock, Signals};
use serde_json::Value;

/// The formats a backend's structured output can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamFormat {
    /// Claude Code's `--output-format stream-json` (with `--verbose`).
    ClaudeStreamJson,
    /// Codex's `exec --json` (JSONL thread events).
    CodexJson,
}

impl StreamFormat {
    /// Its name in config and records.
    pub fn name(self) -> &'static str {
        match self {
            StreamFormat::ClaudeStreamJson => "claude-stream-json",
            StreamFormat::CodexJson => "codex-json",
        }
    }

    /// Parses a name from config; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<StreamFormat> {
        match name {
            "claude-stream-json" => Some(StreamFormat::ClaudeStreamJson),
            "codex-json" => Some(StreamFormat::CodexJson),
            _ => None,
        }
    }

    /// The CLI that prints it.
    pub fn cli(self) -> Cli {
        match self {
            StreamFormat::ClaudeStreamJson => Cli::Claude,
            StreamFormat::CodexJson => Cli::Codex,
        }
    }

    /// The format a built-in backend prints, and the flags that turn it on.
    pub fn of_builtin(backend: &str) -> Option<(StreamFormat, &'static str)> {
        match backend {
            "claude" => Some((
                StreamFormat::ClaudeStreamJson,
                "--output-format stream-json --verbose",
            )),
            "codex" => Some((StreamFormat::CodexJson, "--json")),
            _ => None,
        }
    }
}

/// A stream line longer than this is cut (the rest of it skipped, not buffered).
pub const MAX_STREAM_LINE_BYTES: usize = 1024 * 1024;
/// An activity line is cut to this many characters.
pub const MAX_ACTIVITY_LINE_CHARS: usize = 240;

/// What a task's worker used, as far as its stream says.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Input tokens, not counting those read from the cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Cost in US dollars, when the CLI reports one (Claude Code does; Codex does not).
    pub cost_usd: Option<f64>,
    /// Model turns.
    pub turns: u32,
    /// The model, when the stream names it.
    pub model: String,
    /// Events of a type this parser does not know (kept in the log).
    pub unknown_events: u32,
    /// Lines that were not JSON (kept as activity text).
    pub garbled_lines: u32,
}

impl Usage {
    /// True when the stream reported nothing countable.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// One line for a person: `12.3k in (40.1k cached) · 2.1k out · 7 turns · $0.0421`.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut parts = vec![format!("{} in", tokens(self.input_tokens))];
        if self.cache_read_tokens > 0 {
            parts[0].push_str(&format!(" ({} cached)", tokens(self.cache_read_tokens)));
        }
        parts.push(format!("{} out", tokens(self.output_tokens)));
        if self.turns > 0 {
            parts.push(format!(
                "{} turn{}",
                self.turns,
                if self.turns == 1 { "" } else { "s" }
            ));
        }
        if let Some(c) = self.cost_usd {
            parts.push(format!("${c:.4}"));
        }
        if !self.model.is_empty() {
            parts.push(self.model.clone());
        }
        parts.join(" · ")
    }
}

/// The sum of several runs' usage (the model is the last one named).
pub fn total<'a>(runs: impl IntoIterator<Item = &'a Usage>) -> Usage {
    let mut t = Usage::default();
    for u in runs {
        t.input_tokens = t.input_tokens.saturating_add(u.input_tokens);
        t.output_tokens = t.output_tokens.saturating_add(u.output_tokens);
        t.cache_read_tokens = t.cache_read_tokens.saturating_add(u.cache_read_tokens);
        t.cache_write_tokens = t.cache_write_tokens.saturating_add(u.cache_write_tokens);
        t.cost_usd = match (t.cost_usd, u.cost_usd) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        t.turns = t.turns.saturating_add(u.turns);
        if !u.model.is_empty() {
            t.model = u.model.clone();
        }
        t.unknown_events = t.unknown_events.saturating_add(u.unknown_events);
        t.garbled_lines = t.garbled_lines.saturating_add(u.garbled_lines);
    }
    t
}

/// A token count the way people read one: `950`, `12.3k`, `1.20M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// Reads a worker's output as it grows: feed it bytes, take the activity lines;
/// [`StreamParser::usage`] is the running total and [`StreamParser::signals`] what the CLI said
/// about its own trouble. A plain run (no structured format) yields only the lines its
/// signals make (API retries).
#[derive(Debug)]
pub struct StreamParser {
    format: Option<StreamFormat>,
    signals: Signals,
    partial: Vec<u8>,
    /// The current line went past the limit: skip to its end.
    skipping: bool,
    usage: Usage,
    /// Claude: the current assistant message (its content blocks arrive as separate events,
    /// one after another, each carrying the message's usage) and the sum of those before it,
    /// until the final `result` gives the totals.
    message: Option<(String, Usage)>,
    before: Usage,
    /// Claude's `result` came: its totals are the task's.
    final_totals: bool,
}

impl StreamParser {
    /// A parser for `format`.
    pub fn new(format: StreamFormat) -> StreamParser {
        StreamParser::reading(Some(format), Some(format.cli()), Clock::utc())
    }

    /// A reader of a worker's output: a structured stream in `format`, or (None) a plain
    /// run of `cli`; `clock` reads the reset times a CLI writes in local time.
    pub fn reading(format: Option<StreamFormat>, cli: Option<Cli>, clock: Clock) -> StreamParser {
        StreamParser {
            format,
            signals: Signals::new(format.map(StreamFormat::cli).or(cli), clock),
            partial: Vec::new(),
            skipping: false,
            usage: Usage::default(),
            message: None,
            before: Usage::default(),
            final_totals: false,
        }
    }

    /// The totals so far.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// What the CLI said about its trouble so far.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Reads `bytes` (any split of the stream) and returns the activity lines of the lines it
    /// completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        loop {
            let nl = rest.iter().position(|&b| b == b'\n');
            let (head, tail) = match nl {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if !self.skipping {
                // Never more than the limit kept, however the stream is split.
                let room = (MAX_STREAM_LINE_BYTES + 1).saturating_sub(self.partial.len());
                self.partial
                    .extend_from_slice(&head[..head.len().min(room)]);
                if self.partial.len() > MAX_STREAM_LINE_BYTES {
                    // A line this long is not an event anyone can read: note it, skip its rest.
                    let line = std::mem::take(&mut self.partial);
                    self.usage.garbled_lines += 1;
                    out.push(cut(&format!(
                        "(a line over {} KiB, cut) {}",
                        MAX_STREAM_LINE_BYTES / 1024,
                        String::from_utf8_lossy(&line[..200])
                    )));
                    self.skipping = true;
                }
            }
            let Some(tail) = tail else {
                break;
            };
            if self.skipping {
                self.skipping = false;
            } else {
                let line = std::mem::take(&mut self.partial);
                self.line(&line, &mut out);
            }
            rest = tail;
        }
        out
    }

    /// The stream ended: the last line, if it had no newline.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.skipping && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut out);
        }
        self.skipping = false;
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<String>) {
        let text = String::from_utf8_lossy(line);
        let t = text.trim();
        if t.is_empty() {
            return;
        }
        if let Some(format) = self.format
            && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(t)
        {
            match format {
                StreamFormat::ClaudeStreamJson => self.claude(&v, out),
                StreamFormat::CodexJson => self.codex(&v, out),
            }
            return;
        }
        // A line of text: a plain run's output, or what the CLI wrote to stderr.
        if self.signals.noise(t) {
            return;
        }
        if let Some(l) = self.signals.text_line(t) {
            out.push(cut(&l));
        } else if self.format.is_some() {
            // Only what looks like JSON and is not is garbled; the rest is the CLI's stderr.
            if t.starts_with('{') || t.starts_with('[') {
                self.usage.garbled_lines += 1;
            }
            out.push(cut(t));
        }
    }

    fn claude(&mut self, v: &Value, out: &mut Vec<String>) {
        if let Some(l) = self.signals.claude_event(v) {
            out.push(cut(&l));
        }
        match str_at(v, "type") {
            "system" if str_at(v, "subtype") == "init" => {
                let model = str_at(v, "model");
                if !model.is_empty() {
                    self.usage.model = cut(model);
                }
                let tools = v["tools"].as_array().map_or(0, Vec::len);
                out.push(cut(&format!(
                    "session started: {}{} tools",
                    if model.is_empty() {
                        String::new()
                    } else {
                        format!("{model}, ")
                    },
                    tools
                )));
            }
            "system" => {}
            // A failed API call, as Claude Code reports it: a message no model wrote.
            "assistant"
                if v["is_api_error_message"] == true || v["message"]["model"] == "<synthetic>" =>
            {
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    if let Some(l) = first_line(str_at(block, "text")) {
                        out.push(cut(&format!("error: {l}")));
                    }
                }
            }
            "assistant" => {
                let m = &v["message"];
                let model = str_at(m, "model");
                if !model.is_empty() {
                    self.usage.model = cut(model);
                }
                for block in m["content"].as_array().into_iter().flatten() {
                    match str_at(block, "type") {
                        "text" => {
                            if let Some(l) = first_line(str_at(block, "text")) {
                                out.push(cut(&format!("says: {l}")));
                            }
                        }
                        "tool_use" => out.push(cut(&claude_tool(block))),
                        "thinking" | "redacted_thinking" => {}
                        other => out.push(cut(&format!("({other})"))),
                    }
                }
                if !self.final_totals && m["usage"].is_object() {
                    let u = &m["usage"];
                    let id = str_at(m, "id").to_string();
                    let this = Usage {
                        input_tokens: u64_at(u, "input_tokens"),
                        output_tokens: u64_at(u, "output_tokens"),
                        cache_read_tokens: u64_at(u, "cache_read_input_tokens"),
                        cache_write_tokens: u64_at(u, "cache_creation_input_tokens"),
                        ..Usage::default()
                    };
                    // A message's blocks repeat its usage (its output tokens as counted so
                    // far): it counts once, with the most output any of them shows.
                    match &mut self.message {
                        Some((i, u)) if !id.is_empty() && *i == id => {
                            let output = u.output_tokens.max(this.output_tokens);
                            *u = Usage {
                                output_tokens: output,
                                ..this
                            };
                        }
                        _ => {
                            if let Some((_, done)) = self.message.replace((id, this)) {
                                add(&mut self.before, &done);
                            }
                            self.usage.turns += 1;
                        }
                    }
                    let mut total = self.before.clone();
                    if let Some((_, u)) = &self.message {
                        add(&mut total, u);
                    }
                    self.usage.input_tokens = total.input_tokens;
                    self.usage.output_tokens = total.output_tokens;
                    self.usage.cache_read_tokens = total.cache_read_tokens;
                    self.usage.cache_write_tokens = total.cache_write_tokens;
                }
            }
            "user" => {
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    if str_at(block, "type") == "tool_result" && block["is_error"] == true {
                        let text = match &block["content"] {
                            Value::String(s) => s.clone(),
                            Value::Array(a) => a
                                .iter()
                                .map(|b| str_at(b, "text"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            _ => String::new(),
                        };
                        out.push(cut(&format!(
                            "tool error: {}",
                            first_line(&text).unwrap_or("")
                        )));
                    }
                }
            }
            "result" => {
                let u = &v["usage"];
                let tokens = ["input_tokens", "output_tokens", "cache_read_input_tokens"]
                    .iter()
                    .map(|k| u64_at(u, k))
                    .sum::<u64>();
                // A run that never reached a model reports zeros and one turn: it used nothing.
                let counts = !(v["is_error"] == true && tokens == 0);
                self.final_totals = counts;
                if u.is_object() && counts {
                    self.usage.input_tokens = u64_at(u, "input_tokens");
                    self.usage.output_tokens = u64_at(u, "output_tokens");
                    self.usage.cache_read_tokens = u64_at(u, "cache_read_input_tokens");
                    self.usage.cache_write_tokens = u64_at(u, "cache_creation_input_tokens");
                }
                if let Some(c) = v["total_cost_usd"]
                    .as_f64()
                    .filter(|c| c.is_finite() && counts)
                {
                    self.usage.cost_usd = Some(c.max(0.0));
                }
                if let Some(n) = v["num_turns"].as_u64().filter(|_| counts) {
                    self.usage.turns = n.min(u32::MAX as u64) as u32;
                }
                let secs = v["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
                let outcome = if v["is_error"] == true {
                    // A failed run's subtype may still say "success": its words are in result.
                    match first_line(str_at(v, "result")) {
                        Some(r) => format!("ended with an error: {r} —"),
                        None => format!("ended with an error ({}):", str_at(v, "subtype")),
                    }
                } else {
                    "finished:".to_string()
                };
                let mut line = format!("{outcome} {} turns, {secs:.1} s", self.usage.turns);
                if let Some(c) = self.usage.cost_usd {
                    line.push_str(&format!(", ${c:.4}"));
                }
                if !counts {
                    line = outcome.trim_end_matches(" —").to_string();
                }
                out.push(cut(&line));
            }
            _ => self.usage.unknown_events += 1,
        }
    }

    fn codex(&mut self, v: &Value, out: &mut Vec<String>) {
        if let Some(l) = self.signals.codex_event(v) {
            // An API retry: its line says it better than the raw event.
            out.push(cut(&l));
            return;
        }
        match str_at(v, "type") {
            "thread.started" => out.push(cut(&format!(
                "session started: thread {}",
                str_at(v, "thread_id")
            ))),
            "turn.started" | "item.updated" => {}
            "item.started" => {
                let item = &v["item"];
                if str_at(item, "type") == "command_execution" {
                    out.push(cut(&format!("running: {}", str_at(item, "command"))));
                }
            }
            "item.completed" => {
                if let Some(l) = codex_item(&v["item"]) {
                    out.push(cut(&l));
                }
            }
            "turn.completed" => {
                let u = &v["usage"];
                self.usage.turns += 1;
                // Codex counts cached input inside input_tokens; here they are apart.
                let cached = u64_at(u, "cached_input_tokens");
                self.usage.input_tokens = self
                    .usage
                    .input_tokens
                    .saturating_add(u64_at(u, "input_tokens").saturating_sub(cached));
                self.usage.cache_read_tokens = self.usage.cache_read_tokens.saturating_add(cached);
                self.usage.output_tokens = self
                    .usage
                    .output_tokens
                    .saturating_add(u64_at(u, "output_tokens"));
            }
            "turn.failed" => out.push(cut(&format!(
                "turn failed: {}",
                str_at(&v["error"], "message")
            ))),
            "error" => out.push(cut(&format!("error: {}", str_at(v, "message")))),
            _ => self.usage.unknown_events += 1,
        }
    }
}

/// A Claude Code tool use, as `Tool: what` (`Bash: cargo test`, `Edit: src/lib.rs`).
fn claude_tool(block: &Value) -> String {
    let name = str_at(block, "name");
    let input = &block["input"];
    let what = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
    ]
    .iter()
    .map(|k| str_at(input, k))
    .find(|s| !s.is_empty())
    .map(str::to_string)
    .or_else(|| {
        input["todos"]
            .as_array()
            .map(|t| format!("{} items", t.len()))
    });
    match what.as_deref().and_then(first_line) {
        Some(w) => format!("{name}: {w}"),
        None => name.to_string(),
    }
}

/// A finished Codex item, as one line (`None` for what a person need not see).
fn codex_item(item: &Value) -> Option<String> {
    Some(match str_at(item, "type") {
        "command_execution" => match item["exit_code"].as_i64() {
            Some(code) => format!("ran: {} (exit {code})", str_at(item, "command")),
            None => format!("ran: {}", str_at(item, "command")),
        },
        "file_change" => {
            let files: Vec<String> = item["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{} ({})", str_at(c, "path"), str_at(c, "kind")))
                .collect();
            format!("changed: {}", files.join(", "))
        }
        "agent_message" => format!("says: {}", first_line(str_at(item, "text"))?),
        "reasoning" => format!(
            "thinks: {}",
            first_line(str_at(item, "text"))?.trim_matches('*')
        ),
        "mcp_tool_call" => format!("tool: {}.{}", str_at(item, "server"), str_at(item, "tool")),
        "web_search" => format!("searched: {}", str_at(item, "query")),
        "todo_list" => {
            let items = item["items"].as_array().map_or(&[][..], Vec::as_slice);
            let done = items.iter().filter(|i| i["completed"] == true).count();
            format!("todo: {done}/{} done", items.len())
        }
        "error" => format!("error: {}", str_at(item, "message")),
        other => format!("({other})"),
    })
}

fn add(to: &mut Usage, u: &Usage) {
    to.input_tokens = to.input_tokens.saturating_add(u.input_tokens);
    to.output_tokens = to.output_tokens.saturating_add(u.output_tokens);
    to.cache_read_tokens = to.cache_read_tokens.saturating_add(u.cache_read_tokens);
    to.cache_write_tokens = to.cache_write_tokens.saturating_add(u.cache_write_tokens);
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}

/// One activity line: control characters out, at most [`MAX_ACTIVITY_LINE_CHARS`].
fn cut(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ACTIVITY_LINE_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_ACTIVITY_LINE_CHARS {
        out = out.chars().take(MAX_ACTIVITY_LINE_CHARS - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: StreamFormat, text: &str, split: usize) -> (Vec<String>, Usage) {
        let mut p = StreamParser::new(format);
        let mut lines = Vec::new();
        for chunk in text.as_bytes().chunks(split.max(1)) {
            lines.extend(p.feed(chunk));
        }
        lines.extend(p.finish());
        (lines, p.usage().clone())
    }

    #[test]
    fn a_claude_stream_reads_into_lines_and_totals() {
        let fixture = include_str!("../../tests/fixtures/claude-stream-json.jsonl");
        let (lines, usage) = parse(StreamFormat::ClaudeStreamJson, fixture, 1 << 20);
        assert_eq!(
            lines,
            [
                "session started: claude-sonnet-4-5-20250929, 16 tools",
                "says: I'll look at the failing test first.",
                "Bash: cargo test -p parser",
                "tool error: error[E0425]: cannot find value `depth` in this scope",
                "Read: /repo/src/parser.rs",
                "Edit: /repo/src/parser.rs",
                "TodoWrite: 2 items",
                "Warning: this line is not JSON",
                "says: Fixed: the parser now tracks nesting depth.",
                "finished: 4 turns, 41.2 s, $0.0873",
            ]
        );
        assert_eq!(usage.input_tokens, 31);
        assert_eq!(usage.output_tokens, 1204);
        assert_eq!(usage.cache_read_tokens, 52_310);
        assert_eq!(usage.cache_write_tokens, 9_876);
        assert_eq!(usage.cost_usd, Some(0.0873));
        assert_eq!(usage.turns, 4);
        assert_eq!(usage.model, "claude-sonnet-4-5-20250929");
        assert_eq!(usage.unknown_events, 1, "the stream_event line");
        assert_eq!(usage.garbled_lines, 0, "a line of text is the CLI's stderr");
        // Any split of the bytes reads the same.
        for split in [1, 7, 64, 333] {
            assert_eq!(
                parse(StreamFormat::ClaudeStreamJson, fixture, split),
                (lines.clone(), usage.clone())
            );
        }
    }

    #[test]
    fn a_claude_stream_without_its_result_sums_messages_once_each() {
        let fixture = include_str!("../../tests/fixtures/claude-stream-json.jsonl");
        let cut_before_result: String = fixture
            .lines()
            .filter(|l| !l.contains("\"type\":\"result\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_, u) = parse(StreamFormat::ClaudeStreamJson, &cut_before_result, 1 << 20);
        // Three messages; the first one's two blocks carry its usage twice.
        assert_eq!(u.turns, 3);
        assert_eq!(
            (u.input_tokens, u.output_tokens),
            (3 + 4 + 5, 90 + 310 + 120)
        );
        assert_eq!(u.cost_usd, None);
    }

    #[test]
    fn a_codex_stream_reads_into_lines_and_totals() {
        let fixture = include_str!("../../tests/fixtures/codex-exec-json.jsonl");
        let (lines, usage) = parse(StreamFormat::CodexJson, fixture, 1 << 20);
        assert_eq!(
            lines,
            [
                "session started: thread 0199a213-81c0-7800-8aa1-bbab2a035a53",
                "thinks: Inspecting the failing test",
                "running: bash -lc 'cargo test -p parser'",
                "ran: bash -lc 'cargo test -p parser' (exit 101)",
                "changed: src/parser.rs (update), tests/depth.rs (add)",
                "todo: 1/2 done",
                "(some_future_item)",
                "says: Fixed the depth tracking; the test passes now.",
                "error: stream disconnected before completion; retrying 1/5",
            ]
        );
        assert_eq!(usage.turns, 2);
        assert_eq!(usage.input_tokens, (24_763 - 24_448) + (30_120 - 29_952));
        assert_eq!(usage.cache_read_tokens, 24_448 + 29_952);
        assert_eq!(usage.output_tokens, 122 + 845);
        assert_eq!(usage.cost_usd, None);
        assert_eq!(usage.unknown_events, 1, "the token_count line");
        assert_eq!(usage.summary(), "483 in (54.4k cached) · 967 out · 2 turns");
    }

    fn real(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../tests/fixtures/real/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_pinned_claude_codes_own_streams_read_right() {
        // A run against the test suite's mock: the totals are exactly what the mock sent.
        let (lines, u) = parse(
            StreamFormat::ClaudeStreamJson,
            &real("claude-2.1.332-success.jsonl"),
            1 << 20,
        );
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.turns
            ),
            (343, 390, 14_100, 1_500, 7)
        );
        assert_eq!(u.model, "claude-opus-5-5");
        assert!(u.cost_usd.unwrap() > 0.0);
        assert_eq!((u.garbled_lines, u.unknown_events), (0, 0));
        assert!(
            lines.last().unwrap().starts_with("finished: 7 turns"),
            "{lines:?}"
        );
        // Cut before its result, each message counts once, with its output so far.
        let cut_before_result: String = real("claude-2.1.332-success.jsonl")
            .lines()
            .filter(|l| !l.contains("\"type\":\"result\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_, u) = parse(StreamFormat::ClaudeStreamJson, &cut_before_result, 1 << 20);
        assert_eq!((u.turns, u.input_tokens, u.output_tokens), (7, 343, 7));
        // A rate-limited run: its retries show, it never reached a model, its words are kept.
        let (lines, u) = parse(
            StreamFormat::ClaudeStreamJson,
            &real("claude-2.1.332-429.jsonl"),
            1 << 20,
        );
        assert_eq!(
            &lines[1..4],
            [
                "API retry 1/3 — 429 rate limit",
                "API retry 2/3 — 429 rate limit",
                "API retry 3/3 — 429 rate limit"
            ]
        );
        assert!(
            lines[4].starts_with("error: API Error: Request rejected (429)"),
            "{lines:?}"
        );
        assert!(
            lines[5].starts_with("ended with an error: API Error: Request rejected (429)"),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("(success)")), "{lines:?}");
        assert_eq!(
            u.model, "claude-opus-5-5",
            "the init line's model, never <synthetic>"
        );
        assert_eq!((u.turns, u.cost_usd, u.output_tokens), (0, None, 0));
    }

    #[test]
    fn the_pinned_codexs_own_streams_read_right() {
        let (lines, u) = parse(
            StreamFormat::CodexJson,
            &real("codex-0.171.0-success.jsonl"),
            1 << 20,
        );
        // The mock sent 404 uncached and 16,800 cached input tokens over 8 answers.
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.turns),
            (404, 16_800, 1)
        );
        assert_eq!((u.garbled_lines, u.unknown_events), (0, 0));
        assert!(
            lines.iter().any(|l| l.starts_with("ran: /bin/bash -lc")),
            "{lines:?}"
        );
        // Its stderr in the same log is no garbled stream, and its retries are named.
        let (lines, u) = parse(
            StreamFormat::CodexJson,
            &real("codex-0.171.0-500.log"),
            1 << 20,
        );
        assert_eq!(u.garbled_lines, 0);
        assert!(
            lines.iter().any(|l| l.starts_with(
                "API retry 1/5 — overloaded: We’re currently experiencing high demand"
            )),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("Reading additional input")),
            "{lines:?}"
        );
    }

    #[test]
    fn the_pinned_clis_failures_read_as_their_own_words() {
        use crate::signals::{Cli, Clock, Trouble};
        let failure = |format: Option<StreamFormat>, cli: Cli, name: &str| {
            let mut p = StreamParser::reading(format, Some(cli), Clock::utc());
            p.feed(real(name).as_bytes());
            p.finish();
            p.signals().failure(Some(1)).expect("a failure")
        };
        let claude = Some(StreamFormat::ClaudeStreamJson);
        let codex = Some(StreamFormat::CodexJson);
        for (format, cli, name, trouble, starts) in [
            (
                claude,
                Cli::Claude,
                "claude-2.1.332-401.jsonl",
                Trouble::Auth,
                "Invalid API key · Fix external API key",
            ),
            (
                claude,
                Cli::Claude,
                "claude-2.1.332-429.jsonl",
                Trouble::RateLimit,
                "API Error: Request rejected (429)",
            ),
            (
                claude,
                Cli::Claude,
                "claude-2.1.332-usage-limit.jsonl",
                Trouble::UsageLimit,
                "API Error: 400 You have reached your specified API usage limits",
            ),
            (
                None,
                Cli::Claude,
                "claude-2.1.332-529-plain.log",
                Trouble::Overloaded,
                "API Error: 529 Overloaded",
            ),
            (
                codex,
                Cli::Codex,
                "codex-0.171.0-500.log",
                Trouble::Overloaded,
                "We’re currently experiencing high demand",
            ),
            (
                codex,
                Cli::Codex,
                "codex-0.171.0-usage-limit.log",
                Trouble::UsageLimit,
                "You’ve hit your usage limit",
            ),
            (
                None,
                Cli::Codex,
                "codex-0.171.0-429-plain.log",
                Trouble::RateLimit,
                "exceeded retry limit, last status: 429 Too Many Requests",
            ),
        ] {
            let f = failure(format, cli, name);
            assert_eq!(f.trouble, trouble, "{name}: {f:?}");
            assert!(f.message.starts_with(starts), "{name}: {}", f.message);
            assert!(!f.message.contains("{\""), "{name}: never raw JSON");
        }
        let f = failure(claude, Cli::Claude, "claude-2.1.332-usage-limit.jsonl");
        assert!(
            f.resets_at_ms.is_some(),
            "the API names when access comes back"
        );
        let f = failure(codex, Cli::Codex, "codex-0.171.0-usage-limit.log");
        assert!(f.resets_at_ms.is_some(), "codex says when to try again");
    }

    #[test]
    fn hostile_lines_are_bounded_and_never_fatal() {
        let mut p = StreamParser::new(StreamFormat::ClaudeStreamJson);
        // A huge line: cut once, its rest skipped without being kept.
        let mut lines = p.feed(&vec![b'x'; MAX_STREAM_LINE_BYTES + 10]);
        lines.extend(p.feed(&vec![b'y'; 3 * MAX_STREAM_LINE_BYTES]));
        assert_eq!(lines.len(), 1);
        assert!(p.partial.is_empty());
        lines.extend(p.feed(b"\n{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}}\n"));
        assert_eq!(lines.last().unwrap(), "says: ok");
        // Wrong types, escapes, arrays, numbers, invalid UTF-8: lines, never a panic.
        for bad in [
            &b"[1,2,3]\n"[..],
            b"{\"type\":5}\n",
            b"{\"type\":\"result\",\"total_cost_usd\":\"lots\",\"num_turns\":-3}\n",
            b"{\"type\":\"assistant\",\"message\":{\"content\":\"nope\",\"usage\":[]}}\n",
            b"\xff\xfe\x1b[31mred\n",
        ] {
            p.feed(bad);
        }
        // A huge line reads the same in one piece or many.
        let big = format!(
            "{}\n{{\"type\":\"error\",\"message\":\"x\"}}\n",
            "q".repeat(MAX_STREAM_LINE_BYTES + 5)
        );
        let whole = parse(StreamFormat::CodexJson, &big, big.len());
        assert_eq!(whole, parse(StreamFormat::CodexJson, &big, 4096));
        assert_eq!(whole.0.len(), 2, "{:?}", whole.0);
        assert_eq!(whole.0[1], "error: x");
        // A retry line built from a long cause is cut like every activity line (found by the
        // worker_stream fuzz target).
        let mut c = StreamParser::new(StreamFormat::CodexJson);
        let retry = c.feed(
            format!(
                "{{\"type\":\"error\",\"message\":\"Reconnecting... 1/5 ({})\"}}\n",
                "y".repeat(1000)
            )
            .as_bytes(),
        );
        assert_eq!(retry[0].chars().count(), MAX_ACTIVITY_LINE_CHARS);
        let long = p.feed(format!("{}\n", "z".repeat(10_000)).as_bytes());
        assert_eq!(long[0].chars().count(), MAX_ACTIVITY_LINE_CHARS);
        assert!(!p.feed(b"\x1b[2J\n")[0].contains('\x1b'));
    }

    #[test]
    fn formats_and_counts_read_like_people_write_them() {
        assert_eq!(
            StreamFormat::parse("codex-json"),
            Some(StreamFormat::CodexJson)
        );
        assert_eq!(StreamFormat::parse("xml"), None);
        for f in [StreamFormat::ClaudeStreamJson, StreamFormat::CodexJson] {
            assert_eq!(StreamFormat::parse(f.name()), Some(f));
        }
        assert_eq!(
            StreamFormat::of_builtin("claude").unwrap().1,
            "--output-format stream-json --verbose"
        );
        assert_eq!(StreamFormat::of_builtin("cursor"), None);
        assert_eq!(
            (tokens(950), tokens(12_345), tokens(1_200_000)),
            ("950".into(), "12.3k".into(), "1.20M".into())
        );
    }
}
