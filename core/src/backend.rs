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
        command: "codex exec --full-auto -C \"$(pwd)\"",
    },
];

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
    }
}
