//! Writing the user's config: the seed's layout for a new file, and line edits that keep the
//! user's comments and order for changes to an existing one. Every edit is checked by parsing
//! the result; an edit that cannot be made in place returns `None` so the caller can fall back
//! to [`render`] (and say that comments were not kept).

use crate::backend::{BUILTIN, provider};
use crate::config::Config;

/// The seed's layout: default, backends, models grouped by provider with `# Claude`,
/// `# GPT / OpenAI`, … comments, then aliases.
pub fn render(cfg: &Config) -> String {
    let mut out = String::from(
        "# ~/.dispatch/config.yaml\n# Worker configuration for dispatch (the seed's schema).\n#\n\
         # This file was written by dispatch; edit it freely.\n\n",
    );
    if let Some(d) = &cfg.default {
        out.push_str(&format!(
            "default: {}  # Default model (by name or alias)\n\n",
            scalar(d)
        ));
    }
    for (key, value) in [("coordinator", &cfg.coordinator), ("remote", &cfg.remote)] {
        if let Some(v) = value {
            out.push_str(&format!("{key}: {}\n", scalar(v)));
        }
    }
    let q = quoted;
    if let Some(t) = &cfg.token {
        out.push_str(&format!("token: {}\n", q(t)));
    }
    if let Some(ca) = &cfg.tls {
        out.push_str(&format!("tls:\n  ca: {}\n", q(ca)));
    }
    if !cfg.notify.is_empty() {
        out.push_str("notify:\n");
        for (key, value) in cfg.notify.entries() {
            out.push_str(&format!("  {key}: {}\n", q(value)));
        }
        if !cfg.notify.targets.is_empty() {
            out.push_str("  targets:\n");
            for t in &cfg.notify.targets {
                let mut parts: Vec<String> = [
                    ("slack", &t.slack),
                    ("discord", &t.discord),
                    ("teams", &t.teams),
                    ("ntfy", &t.ntfy),
                    ("email", &t.email),
                    ("token_file", &t.token_file),
                    ("ca", &t.ca),
                    ("quiet", &t.quiet),
                    ("utc_offset", &t.utc_offset),
                    ("digest", &t.digest),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}: {}", q(v))))
                .collect();
                for (k, list) in [("users", &t.users), ("events", &t.events)] {
                    if !list.is_empty() {
                        let items: Vec<String> = list.iter().map(|v| q(v)).collect();
                        parts.push(format!("{k}: [{}]", items.join(", ")));
                    }
                }
                out.push_str(&format!("    - {{ {} }}\n", parts.join(", ")));
            }
        }
        if let Some(m) = &cfg.notify.smtp {
            out.push_str(&format!("  smtp:\n    host: {}\n", q(&m.host)));
            if let Some(p) = m.port {
                out.push_str(&format!("    port: {p}\n"));
            }
            for (k, v) in [
                ("security", &m.security),
                ("user", &m.user),
                ("password_file", &m.password_file),
                ("ca", &m.ca),
            ] {
                if let Some(v) = v {
                    out.push_str(&format!("    {k}: {}\n", q(v)));
                }
            }
            out.push_str(&format!("    from: {}\n", q(&m.from)));
        }
    }
    if let Some(f) = &cfg.fallback {
        out.push_str("fallback:\n");
        for (key, list) in [("to", &f.to), ("on", &f.on)] {
            if !list.is_empty() {
                let items: Vec<String> = list.iter().map(|v| q(v)).collect();
                out.push_str(&format!("  {key}: [{}]\n", items.join(", ")));
            }
        }
    }
    if let Some(c) = cfg.confirm_default {
        out.push_str(&format!("confirm_default: {c}\n"));
    }
    out.push_str("# Backends: CLI commands for each provider.\n# --model <id> is appended for cursor and codex, never for claude.\nbackends:\n");
    for (name, b) in &cfg.backends {
        let cmd = b.command.trim();
        if cmd.chars().any(not_printable) {
            out.push_str(&format!(
                "  {}:\n    command: {}\n\n",
                scalar(name),
                quoted(cmd)
            ));
        } else {
            out.push_str(&format!(
                "  {}:\n    command: >\n      {cmd}\n\n",
                scalar(name)
            ));
        }
    }
    out.push_str("# Models: each model maps to a backend.\nmodels:\n");
    let mut groups: Vec<&str> = Vec::new();
    for (id, _) in &cfg.models {
        let p = provider(id);
        if !groups.contains(&p) {
            groups.push(p);
        }
    }
    for g in groups {
        out.push_str(&format!("  # {g}\n"));
        for (id, m) in cfg.models.iter().filter(|(id, _)| provider(id) == g) {
            out.push_str(&format!(
                "  {}: {{ backend: {} }}\n",
                scalar(id),
                scalar(&m.backend)
            ));
        }
        out.push('\n');
    }
    if !cfg.aliases.is_empty() {
        out.push_str("# Aliases: named shortcuts with optional prompt additions.\naliases:\n");
        for (name, a) in &cfg.aliases {
            out.push_str(&format!(
                "  {}:\n    model: {}\n",
                scalar(name),
                scalar(&a.model)
            ));
            if let Some(p) = &a.prompt {
                // A block keeps the prompt readable; what a block cannot hold as it is
                // (control characters, lines that start or end with spaces) is quoted.
                let plain_lines = p.trim().lines().all(|l| l.trim() == l && !l.is_empty())
                    && !p.trim().chars().any(|c| not_printable(c) && c != '\n');
                if !plain_lines {
                    out.push_str(&format!(
                        "    prompt: {}\n",
                        quoted(&format!("{}\n", p.trim()))
                    ));
                    continue;
                }
                out.push_str(if p.trim().contains('\n') {
                    "    prompt: |\n"
                } else {
                    "    prompt: >\n"
                });
                for l in p.trim().lines() {
                    out.push_str(&format!("      {l}\n"));
                }
            }
        }
    }
    out
}

/// `v` as a YAML scalar: plain when it is a simple word (a name, a model id, a URL), quoted
/// otherwise (so `0x10`, `yes`, `a: b` or `#x` read back as the same string).
fn scalar(v: &str) -> String {
    let simple = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '@' | '+'))
        && !matches!(
            v.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    let url = (v.starts_with("https://") || v.starts_with("http://") || v.starts_with("unix:"))
        && !v.contains([' ', '#', '\'', '"', ',', '[', ']', '{', '}'])
        && !v.chars().any(not_printable);
    if simple || url {
        v.to_string()
    } else {
        quoted(v)
    }
}

/// A character YAML does not allow as it is (controls, and the noncharacters U+FFFE/U+FFFF):
/// written escaped in a double-quoted scalar.
fn not_printable(c: char) -> bool {
    c.is_control() || c == '\u{fffe}' || c == '\u{ffff}'
}

/// `v` as a YAML double-quoted scalar (for strings that may hold anything).
fn quoted(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if not_printable(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `backends:` of a first-run config: each found backend (seed order) with the command
/// that runs it (what its node built from the installed CLI's version, so never a flag that
/// version rejects).
pub fn default_backends(found: &[(String, String)]) -> Vec<(String, crate::config::BackendConfig)> {
    BUILTIN
        .iter()
        .filter_map(|b| {
            let (_, command) = found.iter().find(|(n, _)| n == b.name)?;
            Some((
                b.name.to_string(),
                crate::config::BackendConfig {
                    command: if command.trim().is_empty() {
                        b.command.to_string()
                    } else {
                        command.clone()
                    },
                },
            ))
        })
        .collect()
}

fn top_level_line(line: &str, key: &str) -> bool {
    line.starts_with(&format!("{key}:"))
}

fn section_bounds(lines: &[&str], section: &str) -> Option<(usize, usize)> {
    let start = lines.iter().position(|l| top_level_line(l, section))?;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        if !l.is_empty() && !l.starts_with([' ', '\t', '#']) {
            end = i;
            break;
        }
    }
    // Trailing blank and comment lines belong to what follows.
    while end > start + 1
        && (lines[end - 1].trim().is_empty() || lines[end - 1].trim_start().starts_with('#'))
    {
        end -= 1;
    }
    Some((start, end))
}

fn checked(text: String, ok: impl Fn(&Config) -> bool) -> Option<String> {
    Config::parse(&text).ok().filter(ok).map(|_| text)
}

fn join(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Sets `default:` in place (keeping a trailing comment).
pub fn set_default(text: &str, model: &str) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match lines.iter().position(|l| top_level_line(l, "default")) {
        Some(i) => {
            // Keep whatever follows the value (spacing and comment) as it was.
            let after = lines[i]["default:".len()..].trim_start();
            let comment = after
                .find(char::is_whitespace)
                .map(|c| after[c..].to_string())
                .unwrap_or_default();
            lines[i] = format!("default: {model}{comment}");
        }
        None => lines.insert(0, format!("default: {model}")),
    }
    checked(join(&lines), |c| c.default.as_deref() == Some(model))
}

/// Adds `id: { backend: B }` at the end of `models:` (creating the section if needed), or
/// changes an existing entry's backend.
pub fn add_model(text: &str, id: &str, backend: &str) -> Option<String> {
    let src: Vec<&str> = text.lines().collect();
    let mut lines: Vec<String> = src.iter().map(|s| s.to_string()).collect();
    let entry = format!("  {id}: {{ backend: {backend} }}");
    match section_bounds(&src, "models") {
        Some((start, end)) => {
            if let Some(i) =
                (start + 1..end).find(|&i| src[i].trim_start().starts_with(&format!("{id}:")))
            {
                if !src[i].contains('{') {
                    return None;
                }
                lines[i] = entry;
            } else {
                lines.insert(end, entry);
            }
        }
        None => {
            lines.push("models:".into());
            lines.push(entry);
        }
    }
    checked(join(&lines), |c| {
        c.model(id).is_some_and(|m| m.backend == backend)
    })
}

fn remove_entry(text: &str, section: &str, name: &str) -> Option<String> {
    let src: Vec<&str> = text.lines().collect();
    let (start, end) = section_bounds(&src, section)?;
    let first = (start + 1..end).find(|&i| src[i].trim_start().starts_with(&format!("{name}:")))?;
    let indent = src[first].len() - src[first].trim_start().len();
    let mut last = first + 1;
    while last < end
        && (src[last].trim().is_empty() || src[last].len() - src[last].trim_start().len() > indent)
    {
        last += 1;
    }
    let lines: Vec<String> = src
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < first || *i >= last)
        .map(|(_, s)| s.to_string())
        .collect();
    Some(join(&lines))
}

/// Removes a model entry.
pub fn remove_model(text: &str, id: &str) -> Option<String> {
    checked(remove_entry(text, "models", id)?, |c| c.model(id).is_none())
}

/// Adds (or replaces) an alias at the end of `aliases:`.
pub fn add_alias(text: &str, name: &str, model: &str, prompt: Option<&str>) -> Option<String> {
    let base = if Config::parse(text).ok()?.alias(name).is_some() {
        remove_entry(text, "aliases", name)?
    } else {
        text.to_string()
    };
    let src: Vec<&str> = base.lines().collect();
    let mut block = vec![format!("  {name}:"), format!("    model: {model}")];
    if let Some(p) = prompt {
        // `>` folds lines into one (the seed's style); `|` keeps a multi-line prompt's lines.
        block.push(if p.trim().contains('\n') {
            "    prompt: |".into()
        } else {
            "    prompt: >".into()
        });
        block.extend(p.trim().lines().map(|l| format!("      {l}")));
    }
    let mut lines: Vec<String> = src.iter().map(|s| s.to_string()).collect();
    match section_bounds(&src, "aliases") {
        Some((_, end)) => {
            for (k, l) in block.into_iter().enumerate() {
                lines.insert(end + k, l);
            }
        }
        None => {
            lines.push("aliases:".into());
            lines.extend(block);
        }
    }
    checked(join(&lines), |c| {
        c.alias(name).is_some_and(|a| a.model == model)
    })
}

/// Removes an alias.
pub fn remove_alias(text: &str, name: &str) -> Option<String> {
    checked(remove_entry(text, "aliases", name)?, |c| {
        c.alias(name).is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../tests/fixtures/seed/config-example.yaml");

    #[test]
    fn edits_keep_comments_and_order() {
        let t = set_default(SEED, "sonnet").unwrap();
        assert!(t.contains("default: sonnet  # Default model (by name or alias)"));
        assert!(t.contains("# Cursor CLI flags:"), "comments kept");
        let t = add_model(&t, "sonnet-4.6", "claude").unwrap();
        assert!(t.contains("  sonnet-4.6: { backend: claude }\n"));
        let c = Config::parse(&t).unwrap();
        assert_eq!(c.models.last().unwrap().0, "sonnet-4.6");
        assert!(t.contains("# Aliases: named shortcuts"), "{t}");
        let t = remove_model(&t, "gpt-5.2").unwrap();
        assert!(!t.contains("gpt-5.2:") && t.contains("gpt-5.3-codex-spark:"));
        let t = add_alias(
            &t,
            "reviewer",
            "gpt-5.3-codex",
            Some("Focus on naming.\nAnd tests."),
        )
        .unwrap();
        let c = Config::parse(&t).unwrap();
        assert_eq!(
            c.alias("reviewer")
                .unwrap()
                .prompt
                .as_deref()
                .unwrap()
                .trim(),
            "Focus on naming.\nAnd tests."
        );
        assert!(c.alias("security-reviewer").is_some() && c.alias("quick").is_some());
        let t = remove_alias(&t, "security-reviewer").unwrap();
        let c = Config::parse(&t).unwrap();
        assert!(
            c.alias("security-reviewer").is_none()
                && c.alias("quick").is_some()
                && c.alias("reviewer").is_some()
        );
        assert!(remove_model(SEED, "nope").is_none());
    }

    #[test]
    fn render_groups_by_provider_and_round_trips() {
        let mut c = Config::parse(SEED).unwrap();
        c.models.push((
            "grok-4".into(),
            crate::config::ModelConfig {
                backend: "cursor".into(),
            },
        ));
        let text = render(&c);
        assert!(text.contains("  # Claude\n  opus: { backend: claude }"));
        assert!(text.contains("  # GPT / OpenAI\n  gpt-5.3-codex: { backend: codex }"));
        assert!(text.contains("  # Grok\n  grok-4: { backend: cursor }"));
        let back = Config::parse(&text).unwrap();
        assert_eq!(back.models.len(), c.models.len());
        assert_eq!(
            back.aliases,
            c.aliases
                .iter()
                .map(|(n, a)| (
                    n.clone(),
                    crate::config::AliasConfig {
                        model: a.model.clone(),
                        prompt: a.prompt.as_ref().map(|p| format!("{}\n", p.trim()))
                    }
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            back.backend("claude").unwrap().command.trim(),
            c.backend("claude").unwrap().command.trim()
        );
    }

    #[test]
    fn characters_yaml_cannot_hold_as_they_are_are_written_escaped() {
        // Found by the round-trip property test: a noncharacter in a command was written
        // raw, and the config no longer read back.
        let mut c = Config::parse(SEED).unwrap();
        c.backends[0].1.command = "run \u{fffe}\u{ffff}\u{7} it".into();
        c.aliases.push((
            "odd".into(),
            crate::config::AliasConfig {
                model: "opus".into(),
                prompt: Some("say \u{fffe}".into()),
            },
        ));
        let back = Config::parse(&render(&c)).unwrap();
        assert_eq!(back.backends[0].1.command, c.backends[0].1.command);
        assert_eq!(
            back.aliases.last().unwrap().1.prompt.as_deref(),
            Some("say \u{fffe}\n")
        );
    }

    #[test]
    fn a_rewrite_keeps_the_token_tls_and_notify_settings() {
        let mut c = Config::parse(SEED).unwrap();
        c.token = Some("dsp_ab12_se\"cr#et: x".into());
        c.tls = Some("/etc/dispatch/ca.pem".into());
        c.notify.command = Some("notify-send \"$DISPATCH_TASK_ID\"\necho done".into());
        c.notify.webhook = Some("https://hooks.example/x".into());
        c.fallback = Some(crate::config::FallbackConfig {
            to: vec!["codex".into(), "gpt-5.2".into()],
            on: vec!["rate limit".into(), "it's: \"over\"".into()],
        });
        let back = Config::parse(&render(&c)).unwrap();
        assert_eq!(back.token, c.token);
        assert_eq!(back.tls, c.tls);
        assert_eq!(back.notify, c.notify);
        assert_eq!(back.fallback, c.fallback);
    }
}
