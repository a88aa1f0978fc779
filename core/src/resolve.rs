//! The seed's model resolution: which model, backend and alias prompt a dispatch uses.
//!
//! 1. `--alias` / `--model` override everything;
//! 2. otherwise the prompt is scanned for configured model ids and alias names as whole words,
//!    and the last one named wins;
//! 3. otherwise the default (which the CLI confirms on a terminal).
//!
//! A model that is not configured is added by the seed's pattern rules (opus/sonnet/haiku →
//! claude; gpt/codex/o1/o3/o4-mini → codex, or cursor without codex) or refused with the list of
//! what is available. `--model` is appended for cursor and codex only, never for claude.

use crate::backend::{appends_model, backend_for_model, is_claude_model, is_openai_model};
use crate::config::Config;

/// How the model was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `--model` or `--alias` on the command line.
    Flag,
    /// Named in the prompt (the word as written).
    Named(String),
    /// The config's default: confirm it with the user on a terminal.
    Default,
}

/// What a dispatch runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Model id (`None` when a legacy agent without a model runs).
    pub model: Option<String>,
    /// Backend name.
    pub backend: String,
    /// Whether `--model <id>` is appended to the backend's command.
    pub append_model: bool,
    /// Alias whose prompt addition applies, with the addition.
    pub alias: Option<(String, Option<String>)>,
    /// How it was chosen.
    pub choice: Choice,
    /// A model that was not in the config and was added by the seed's rules: (id, backend).
    pub auto_added: Option<(String, String)>,
}

/// Byte offset of the last whole-word, case-insensitive occurrence of `word` in `text`.
/// Word characters are letters, digits, `_`, `-`, and a `.` between two of them.
pub fn last_word(text: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let hay = text.to_ascii_lowercase();
    let needle = word.to_ascii_lowercase();
    let bytes = hay.as_bytes();
    // A '.' between two letters or digits is part of a word (`gpt-5.3`); at the end of a
    // sentence it is not.
    let word_at = |i: usize| {
        let b = bytes[i];
        b.is_ascii_alphanumeric()
            || b == b'_'
            || b == b'-'
            || (b == b'.'
                && i > 0
                && i + 1 < bytes.len()
                && bytes[i - 1].is_ascii_alphanumeric()
                && bytes[i + 1].is_ascii_alphanumeric())
    };
    let mut found = None;
    let mut from = 0;
    while let Some(rel) = hay[from..].find(&needle) {
        let start = from + rel;
        let end = start + needle.len();
        let before_ok = start == 0 || !word_at(start - 1);
        let after_ok = end >= bytes.len() || !word_at(end);
        if before_ok && after_ok {
            found = Some(start);
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    found
}

fn model_backend(
    cfg: &Config,
    id: &str,
    installed: &dyn Fn(&str) -> bool,
) -> Result<(String, Option<(String, String)>), String> {
    if let Some(m) = cfg.model(id) {
        return Ok((m.backend.clone(), None));
    }
    if is_claude_model(id) || is_openai_model(id) {
        let b = backend_for_model(id, installed).to_string();
        return Ok((b.clone(), Some((id.to_string(), b))));
    }
    let models: Vec<&str> = cfg.models.iter().map(|m| m.0.as_str()).collect();
    let aliases: Vec<&str> = cfg.aliases.iter().map(|a| a.0.as_str()).collect();
    Err(format!(
        "model `{id}` is not in your config and is not a known Claude or OpenAI model; configured models: {}{}. \
         Add it with `dispatch config add-model {id} --backend B`, run `agent models` to see what Cursor offers, or check your Cursor/Claude/OpenAI subscription",
        if models.is_empty() {
            "none".to_string()
        } else {
            models.join(", ")
        },
        if aliases.is_empty() {
            String::new()
        } else {
            format!("; aliases: {}", aliases.join(", "))
        }
    ))
}

fn legacy_backend(command: &str) -> Result<String, String> {
    // The node runs its own command for a backend; a legacy inline command is mapped to the
    // CLI it calls.
    for word in command.split_whitespace() {
        match word {
            "claude" => return Ok("claude".into()),
            "agent" => return Ok("cursor".into()),
            "codex" => return Ok("codex".into()),
            _ => {}
        }
    }
    Err(format!(
        "the legacy agent command `{}` does not call claude, agent or codex, so no node can run it; run `dispatch config migrate`",
        command.trim()
    ))
}

/// Resolves the model, backend and alias prompt for a dispatch of `prompt`.
pub fn resolve(
    cfg: &Config,
    prompt: &str,
    model_flag: Option<&str>,
    alias_flag: Option<&str>,
    installed: &dyn Fn(&str) -> bool,
) -> Result<Resolution, String> {
    let finish = |model: String,
                  alias: Option<(String, Option<String>)>,
                  choice: Choice|
     -> Result<Resolution, String> {
        let (backend, auto_added) = model_backend(cfg, &model, installed)?;
        Ok(Resolution {
            append_model: appends_model(&backend),
            model: Some(model),
            backend,
            alias,
            choice,
            auto_added,
        })
    };
    if let Some(a) = alias_flag {
        let alias = cfg.alias(a).ok_or_else(|| {
            let have: Vec<&str> = cfg.aliases.iter().map(|x| x.0.as_str()).collect();
            format!(
                "no alias `{a}` in your config; aliases: {}",
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            )
        })?;
        return finish(
            alias.model.clone(),
            Some((a.to_string(), alias.prompt.clone())),
            Choice::Flag,
        );
    }
    if let Some(m) = model_flag {
        return finish(m.to_string(), None, Choice::Flag);
    }
    if cfg.is_legacy() {
        let named = cfg
            .agents
            .iter()
            .filter_map(|(n, a)| last_word(prompt, n).map(|p| (p, n, a)))
            .max_by_key(|x| x.0);
        let (name, agent, choice) = match named {
            Some((_, n, a)) => (n.clone(), a, Choice::Named(n.clone())),
            None => {
                let d = cfg.default.as_deref().ok_or("your config (old `agents:` format) has no `default:`; name an agent in the prompt or set one")?;
                let a = cfg
                    .agents
                    .iter()
                    .find(|(n, _)| n == d)
                    .map(|x| &x.1)
                    .ok_or_else(|| format!("the default `{d}` is not one of your agents"))?;
                (d.to_string(), a, Choice::Default)
            }
        };
        let backend = legacy_backend(&agent.command)?;
        return Ok(Resolution {
            model: None,
            append_model: false,
            backend,
            alias: Some((name, None)),
            choice,
            auto_added: None,
        });
    }
    // The last configured model id or alias named in the prompt wins.
    let mut best: Option<(usize, String, bool)> = None;
    for (id, _) in &cfg.models {
        if let Some(p) = last_word(prompt, id)
            && best.as_ref().is_none_or(|b| p >= b.0)
        {
            best = Some((p, id.clone(), false));
        }
    }
    for (name, _) in &cfg.aliases {
        if let Some(p) = last_word(prompt, name)
            && best.as_ref().is_none_or(|b| p >= b.0)
        {
            best = Some((p, name.clone(), true));
        }
    }
    if let Some((_, word, is_alias)) = best {
        if is_alias {
            let a = cfg.alias(&word).expect("found above");
            return finish(
                a.model.clone(),
                Some((word.clone(), a.prompt.clone())),
                Choice::Named(word),
            );
        }
        return finish(word.clone(), None, Choice::Named(word));
    }
    let default = cfg.default.clone().ok_or("your config has no `default:` model and the prompt names none; pass --model or run `dispatch config set-default MODEL`")?;
    if let Some(a) = cfg.alias(&default) {
        return finish(
            a.model.clone(),
            Some((default.clone(), a.prompt.clone())),
            Choice::Default,
        );
    }
    finish(default, None, Choice::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Config {
        Config::parse(include_str!(
            "../../tests/fixtures/seed/config-example.yaml"
        ))
        .unwrap()
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn whole_words() {
        assert_eq!(last_word("use opus, then opus.", "opus"), Some(15));
        assert_eq!(last_word("opusx and xopus and opus-4", "opus"), None);
        assert_eq!(last_word("try gpt-5.3-codex now", "gpt-5.3-codex"), Some(4));
        assert_eq!(last_word("try gpt-5.3-codex-spark", "gpt-5.3-codex"), None);
        assert_eq!(last_word("Have Sonnet test", "sonnet"), Some(5));
        assert_eq!(last_word("v1.opus", "opus"), None);
    }

    #[test]
    fn the_seeds_examples() {
        let c = seed();
        // Two models named: the last wins.
        let r = resolve(&c, "have opus review and sonnet test", None, None, &all).unwrap();
        assert_eq!(
            (r.model.as_deref(), r.backend.as_str(), r.choice.clone()),
            (Some("sonnet"), "claude", Choice::Named("sonnet".into()))
        );
        // Claude never gets --model; codex and cursor do.
        assert!(!r.append_model);
        let r = resolve(&c, "review with gpt-5.3-codex", None, None, &all).unwrap();
        assert_eq!((r.backend.as_str(), r.append_model), ("codex", true));
        let r = resolve(&c, "try gemini-3.1-pro here", None, None, &all).unwrap();
        assert_eq!((r.backend.as_str(), r.append_model), ("cursor", true));
        // An alias with a prompt.
        let r = resolve(&c, "have security-reviewer look at this", None, None, &all).unwrap();
        assert_eq!(r.model.as_deref(), Some("opus"));
        let (name, prompt) = r.alias.unwrap();
        assert_eq!(name, "security-reviewer");
        assert!(prompt.unwrap().contains("OWASP Top 10"));
        // Nothing named: the default, to be confirmed.
        let r = resolve(&c, "do a security review", None, None, &all).unwrap();
        assert_eq!(
            (r.model.as_deref(), r.choice),
            (Some("opus"), Choice::Default)
        );
        // Unknown models: the seed's pattern rules.
        let r = resolve(&c, "x", Some("sonnet-4.6"), None, &all).unwrap();
        assert_eq!(
            (r.backend.as_str(), r.auto_added),
            ("claude", Some(("sonnet-4.6".into(), "claude".into())))
        );
        let r = resolve(&c, "x", Some("gpt-9"), None, &|b| b == "codex").unwrap();
        assert_eq!(r.backend, "codex");
        let r = resolve(&c, "x", Some("gpt-9"), None, &|b| b == "cursor").unwrap();
        assert_eq!(r.backend, "cursor", "no codex: cursor");
        let e = resolve(&c, "x", Some("llama-7"), None, &all).unwrap_err();
        assert!(
            e.contains("configured models: opus, sonnet, haiku")
                && e.contains("aliases: security-reviewer, quick"),
            "{e}"
        );
        // Flags override the prompt.
        let r = resolve(&c, "use opus", Some("haiku"), None, &all).unwrap();
        assert_eq!(
            (r.model.as_deref(), r.choice),
            (Some("haiku"), Choice::Flag)
        );
        let r = resolve(&c, "use opus", None, Some("quick"), &all).unwrap();
        assert_eq!(r.model.as_deref(), Some("sonnet"));
        assert!(
            resolve(&c, "x", None, Some("nope"), &all)
                .unwrap_err()
                .contains("aliases: security-reviewer, quick")
        );
    }

    #[test]
    fn legacy_agents() {
        let c = Config::parse("default: careful\nagents:\n  careful:\n    command: claude -p --dangerously-skip-permissions\n  fast:\n    command: agent -p --force\n").unwrap();
        let r = resolve(&c, "be fast about it", None, None, &all).unwrap();
        assert_eq!((r.backend.as_str(), r.model), ("cursor", None));
        let r = resolve(&c, "carefully", None, None, &all).unwrap();
        assert_eq!((r.backend.as_str(), r.choice), ("claude", Choice::Default));
    }
}
