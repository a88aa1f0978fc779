//! Limits on every input, checked where the input enters (CLI, coordinator, agent).

use thiserror::Error;

/// Largest prompt, in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Largest plan.md, in bytes.
pub const MAX_PLAN_BYTES: usize = 256 * 1024;
/// Most checklist items in a plan.
pub const MAX_PLAN_ITEMS: usize = 1000;
/// Most questions one task may ask (the seed numbers them `NNN`).
pub const MAX_QUESTIONS: usize = 999;
/// Longest client request id (idempotent Submit and Answer), in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 64;
/// Largest single step text, in bytes.
pub const MAX_STEP_BYTES: usize = 4 * 1024;
/// The part of a task's `output.md` the coordinator keeps, in bytes (the node keeps the file).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The part of a task's diff the coordinator keeps, in bytes.
pub const MAX_DIFF_BYTES: usize = 2 * 1024 * 1024;
/// Largest git bundle of a task's branch the coordinator takes (a node's own limit may be
/// lower), in bytes.
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;
/// Largest piece of a bundle in one event, in bytes.
pub const MAX_BUNDLE_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest question, answer or note, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest log chunk an agent sends in one event, in bytes.
pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;
/// Longest a drain lets running workers go on.
pub const MAX_DRAIN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Fallback targets of one task.
pub const MAX_FALLBACK_TARGETS: usize = 8;
/// Fallback patterns of one task.
pub const MAX_FALLBACK_PATTERNS: usize = 32;
/// Activity lines in one event of a structured worker stream.
pub const MAX_ACTIVITY_LINES: usize = 256;
/// One activity line (the node cuts them to 240 characters).
pub const MAX_ACTIVITY_LINE_BYTES: usize = 1024;
/// Longest node name, label key, backend or model name, in bytes.
pub const MAX_NAME_BYTES: usize = 63;
/// Longest label value or command template, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Most tasks one node may run at once (what it may claim as its capacity).
pub const MAX_NODE_CAPACITY: u32 = 1024;
/// Most labels on a node.
pub const MAX_LABELS: usize = 64;
/// Longest workdir path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// A worker's tool call as its node reports it for approval: the tool's input (JSON), cut
/// by the node at this size (a cut input never matches a rule).
pub const MAX_TOOL_INPUT_BYTES: usize = 16 * 1024;

/// An input that breaks a limit or a format rule. The message names the input and the rule.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{what}: {problem}")]
pub struct InvalidInput {
    /// Which input (e.g. "prompt", "task id `x`").
    pub what: String,
    /// What is wrong and what would be accepted.
    pub problem: String,
}

impl InvalidInput {
    /// Builds an error for `what` with the `problem` text.
    pub fn new(what: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidInput {
            what: what.into(),
            problem: problem.into(),
        }
    }
}

/// Checks that `value` is at most `max` bytes and holds no NUL byte (no text a store keeps
/// may: PostgreSQL's text refuses it).
pub fn check_len(what: &str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.len() > max {
        return Err(InvalidInput::new(
            what,
            format!("is {} bytes, over the limit of {} bytes", value.len(), max),
        ));
    }
    if value.contains('\0') {
        return Err(InvalidInput::new(
            what,
            "contains a NUL byte (\\0), which text may not hold; remove it",
        ));
    }
    Ok(())
}

/// Checks a name (node, backend, model, label key): 1–63 bytes of `[A-Za-z0-9._-]`.
pub fn check_name(what: &str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(what, "must not be empty"));
    }
    check_len(what, value, MAX_NAME_BYTES)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')))
    {
        return Err(InvalidInput::new(
            format!("{what} `{value}`"),
            format!("contains {c:?}; use letters, digits, '.', '_', '-', '/' or ':'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("node", "build-box.1").is_ok());
        assert!(check_name("model", "gpt-5.3-codex").is_ok());
        assert!(check_name("node", "").is_err());
        assert!(check_name("node", "a b").is_err());
        assert!(check_name("node", &"a".repeat(64)).is_err());
        assert!(
            check_len("prompt", "abc", 2)
                .unwrap_err()
                .to_string()
                .contains("limit of 2")
        );
    }
}
