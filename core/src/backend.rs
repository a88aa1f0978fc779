//! Built-in backends (the seed's three CLIs plus the scripted `sim` worker) and the seed's
//! rules for which backend runs a model.

/// A backend every node may offer when its CLI is on PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinBackend {
    /// Backend name used in config and on the wire (`claude`, `cursor`, `codex`).
    pub name: &'static str,
    /// The executable looked up on PATH.
    pub program: &'static str,
    /// The seed's command template (run through `sh -c`, prompt passed as `"$@"`).
    pub command: &'static str,
}

/// The seed's backends, in the order a task with no backend prefers them.
pub const BUILTIN: [BuiltinBackend; 3] = [
    BuiltinBackend {
        name: "claude",
        program: "claude",
        command: "env -u CLAUDE_CODE_ENTRYPOINT -u CLAUDECODE claude -p --dangerously-skip-permissions",
    },
    BuiltinBackend {
        name: "cursor",
        program: "agent",
        command: "agent -p --force --workspace \"$(pwd)\"",
    },
    BuiltinBackend {
        name: "codex",
        program: "codex",
        command: "codex exec --sandbox workspace-write -C \"$(pwd)\"",
    },
];

/// Models the Claude CLI resolves by itself (the seed: stable aliases).
pub const CLAUDE_MODELS: [&str; 3] = ["opus", "sonnet", "haiku"];

/// The seed's curated Codex model ids (Codex has no `models` command).
pub const CODEX_MODELS: [&str; 3] = ["gpt-5.3-codex", "gpt-5.3-codex-spark", "gpt-5.2"];

/// Parses `agent models` output: lines of `<id> - <Display Name>`, with `(current)` and
/// `(default)` markers stripped; headers, tips and blank lines are skipped. Returns
/// (id, display name) in order.
pub fn parse_agent_models(output: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in output.lines() {
        // Some versions decorate lines with bullets or ANSI colours.
        let clean: String = strip_ansi(line);
        let t = clean.trim().trim_start_matches(['-', '*', '•', ' ']).trim();
        let Some((id, name)) = t.split_once(" - ") else {
            continue;
        };
        let id = id.trim();
        if id.is_empty()
            || id.contains(char::is_whitespace)
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
        {
            continue;
        }
        let mut name = name.trim().to_string();
        for marker in ["(current)", "(default)"] {
            name = name.replace(marker, "");
        }
        out.push((
            id.to_string(),
            name.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Provider group of a model id, for the seed's config layout (`# Claude`, `# GPT / OpenAI`, …).
pub fn provider(model: &str) -> &'static str {
    let m = model.to_ascii_lowercase();
    if is_claude_model(&m) {
        "Claude"
    } else if is_openai_model(&m) {
        "GPT / OpenAI"
    } else if m.contains("gemini") {
        "Gemini"
    } else if m.contains("grok") {
        "Grok"
    } else {
        "Cursor"
    }
}

/// Name of the scripted worker backend every node has.
pub const SIM: &str = "sim";

/// True for Claude models: ids containing `opus`, `sonnet` or `haiku`.
pub fn is_claude_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    ["opus", "sonnet", "haiku"].iter().any(|k| m.contains(k))
}

/// True for OpenAI models: ids containing `gpt`, `codex`, `o1`, `o3` or `o4-mini`.
pub fn is_openai_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    ["gpt", "codex", "o1", "o3", "o4-mini"]
        .iter()
        .any(|k| m.contains(k))
}

/// The backend the seed's rules pick for `model`, given whether a backend is available:
/// Claude models → `claude`; OpenAI models → `codex`, else `cursor`; others → `cursor`.
pub fn backend_for_model(model: &str, available: impl Fn(&str) -> bool) -> &'static str {
    if is_claude_model(model) {
        "claude"
    } else if is_openai_model(model) && available("codex") {
        "codex"
    } else {
        "cursor"
    }
}

/// Whether `--model <id>` is appended to the backend's command: cursor and codex yes, claude
/// never (the Claude CLI manages its own model selection), others (custom, sim) no.
pub fn appends_model(backend: &str) -> bool {
    matches!(backend, "cursor" | "codex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rules() {
        assert_eq!(backend_for_model("opus", |_| true), "claude");
        assert_eq!(backend_for_model("sonnet-4.6", |_| false), "claude");
        assert_eq!(
            backend_for_model("gpt-5.3-codex", |b| b == "codex"),
            "codex"
        );
        assert_eq!(backend_for_model("gpt-9", |_| false), "cursor");
        assert_eq!(backend_for_model("gemini-3.1-pro", |_| true), "cursor");
        assert!(appends_model("codex") && appends_model("cursor") && !appends_model("claude"));
        assert_eq!(provider("opus-4.6-thinking"), "Claude");
        assert_eq!(provider("gpt-5.2"), "GPT / OpenAI");
        assert_eq!(provider("gemini-3-flash"), "Gemini");
        assert_eq!(provider("composer-1.5"), "Cursor");
    }

    #[test]
    fn agent_models_output() {
        let m = parse_agent_models(include_str!("../../tests/fixtures/agent-models.txt"));
        assert_eq!(m.len(), 13);
        assert_eq!(m[0], ("auto".to_string(), "Auto".to_string()));
        assert_eq!(
            m[2],
            ("gpt-5.3-codex".to_string(), "GPT-5.3 Codex".to_string())
        );
        assert_eq!(
            m[6],
            (
                "opus-4.6-thinking".to_string(),
                "Claude 4.6 Opus (Thinking)".to_string()
            )
        );
        assert!(
            m.iter()
                .all(|(id, _)| !id.contains("Tip") && id != "Available")
        );
        let decorated = parse_agent_models(
            "\u{1b}[1mModels\u{1b}[0m\n  • sonnet-4.6 - Claude 4.6 Sonnet \u{1b}[2m(current)\u{1b}[0m\n",
        );
        assert_eq!(
            decorated,
            vec![("sonnet-4.6".to_string(), "Claude 4.6 Sonnet".to_string())]
        );
    }
}
