//! The user's `~/.dispatch/config.yaml` in the seed's schema (`default`, `backends`, `models`,
//! `aliases`), the legacy `agents:` format, and the keys distribution adds (`coordinator`,
//! `token`, `tls`, `remote`, `confirm_default`, `notify`).
//!
//! Errors carry the file's line and column; unknown keys are warnings, never silence.

use crate::notify::NotifyConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A backend's command template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BackendConfig {
    /// Run with the prompt as a separate argument.
    pub command: String,
}

/// Which backend runs a model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelConfig {
    /// Backend name.
    pub backend: String,
}

/// A named shortcut: a model plus an optional prompt addition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AliasConfig {
    /// The model it stands for.
    pub model: String,
    /// Prepended to the worker prompt.
    #[serde(default)]
    pub prompt: Option<String>,
}

/// A legacy `agents:` entry: a name with an inline command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LegacyAgent {
    /// The full command (no model appended).
    pub command: String,
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    backends: Option<serde_norway::Mapping>,
    #[serde(default)]
    models: Option<serde_norway::Mapping>,
    #[serde(default)]
    aliases: Option<serde_norway::Mapping>,
    #[serde(default)]
    agents: Option<serde_norway::Mapping>,
    #[serde(default)]
    coordinator: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    confirm_default: Option<bool>,
    #[serde(default)]
    notify: Option<NotifyConfig>,
    #[serde(default)]
    fallback: Option<FallbackConfig>,
}

/// `fallback:` — where a task goes, once, when its worker cannot start because its CLI hit a
/// rate limit, an exhausted quota or an expired login.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Models or backends to retry on, in order (the first one a node can run). The task's own
    /// backend here means the same backend on another node.
    #[serde(default)]
    pub to: Vec<String>,
    /// What a start failure must say (case-insensitive; matched against the CLI's exit status,
    /// `status N`, and its last output lines); none: [`DEFAULT_FALLBACK_ON`].
    #[serde(default)]
    pub on: Vec<String>,
}

/// What a quota, rate-limit or login failure says, as the seed's CLIs print it.
pub const DEFAULT_FALLBACK_ON: &[&str] = &[
    "rate limit",
    "rate_limit",
    "usage limit",
    "quota",
    "too many requests",
    "credit balance",
    "overloaded",
    "not logged in",
    "/login",
    "login required",
    "please log in",
    "unauthorized",
    "authentication",
    "invalid api key",
    "token expired",
    "session expired",
];

impl FallbackConfig {
    /// The patterns in force.
    pub fn patterns(&self) -> Vec<String> {
        if self.on.is_empty() {
            DEFAULT_FALLBACK_ON.iter().map(|s| s.to_string()).collect()
        } else {
            self.on.clone()
        }
    }
}

/// `tls: { ca: FILE }`, or (older files) `tls: FILE`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTls {
    Ca(String),
    Map {
        #[serde(default)]
        ca: Option<String>,
    },
}

const KNOWN_KEYS: &[&str] = &[
    "default",
    "backends",
    "models",
    "aliases",
    "agents",
    "coordinator",
    "token",
    "tls",
    "remote",
    "confirm_default",
    "notify",
    "fallback",
    "policy",
];

/// A parsed config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Default model (or alias, or legacy agent).
    pub default: Option<String>,
    /// Backends by name, in file order.
    pub backends: Vec<(String, BackendConfig)>,
    /// Models by id, in file order.
    pub models: Vec<(String, ModelConfig)>,
    /// Aliases by name, in file order.
    pub aliases: Vec<(String, AliasConfig)>,
    /// Legacy agents by name, in file order (old format).
    pub agents: Vec<(String, LegacyAgent)>,
    /// Coordinator address.
    pub coordinator: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// The CA (PEM file) that signed an `https://` coordinator's certificate (`tls: { ca }`).
    pub tls: Option<String>,
    /// Default node for `--remote`.
    pub remote: Option<String>,
    /// Ask before using the default model on a terminal (default true).
    pub confirm_default: Option<bool>,
    /// Notifications.
    pub notify: NotifyConfig,
    /// Where a task goes when its CLI cannot start for quota or login (off when absent).
    pub fallback: Option<FallbackConfig>,
    /// Unknown keys and other things worth a warning.
    pub warnings: Vec<String>,
}

fn located(e: &serde_norway::Error) -> String {
    match e.location() {
        Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    }
}

/// Line (1-based) of entry `name` under top-level `section:` in `text`, for error messages.
fn entry_line(text: &str, section: &str, name: &str) -> Option<usize> {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with([' ', '\t', '#']) && !line.is_empty() {
            in_section = line
                .trim_end()
                .strip_suffix(':')
                .or_else(|| line.split_once(':').map(|x| x.0))
                == Some(section);
            continue;
        }
        let t = line.trim_start();
        if in_section
            && (t.starts_with(&format!("{name}:")) || t.starts_with(&format!("\"{name}\":")))
        {
            return Some(i + 1);
        }
    }
    None
}

fn entries<T: serde::de::DeserializeOwned>(
    text: &str,
    section: &str,
    map: Option<serde_norway::Mapping>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, T)>, String> {
    let mut out = Vec::new();
    for (k, v) in map.unwrap_or_default() {
        let name = match k {
            serde_norway::Value::String(s) => s,
            other => serde_norway::to_string(&other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if let serde_norway::Value::Mapping(m) = &v {
            for key in m.keys() {
                let key = key.as_str().unwrap_or("?");
                let known: &[&str] = match section {
                    "backends" | "agents" => &["command"],
                    "models" => &["backend"],
                    "aliases" => &["model", "prompt"],
                    _ => &[],
                };
                if !known.contains(&key) {
                    warnings.push(format!("unknown key `{section}.{name}.{key}` is ignored"));
                }
            }
        }
        let value: T = serde_norway::from_value(v).map_err(|e| {
            let at = entry_line(text, section, &name)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            format!("{at}{section}.{name}: {e}")
        })?;
        out.push((name, value));
    }
    Ok(out)
}

impl Config {
    /// Parses config text. Errors give line and column (or the entry) and say what is wrong.
    pub fn parse(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let raw: Raw = serde_norway::from_str(text).map_err(|e| located(&e))?;
        let mut warnings = Vec::new();
        if let Ok(serde_norway::Value::Mapping(top)) =
            serde_norway::from_str::<serde_norway::Value>(text)
        {
            for k in top.keys() {
                let k = k.as_str().unwrap_or("?");
                if !KNOWN_KEYS.contains(&k) {
                    warnings.push(format!(
                        "unknown key `{k}` is ignored (known keys: {})",
                        KNOWN_KEYS.join(", ")
                    ));
                }
            }
        }
        let notify = raw.notify.unwrap_or_default();
        notify.validate()?;
        let config = Config {
            default: raw.default,
            backends: entries(text, "backends", raw.backends, &mut warnings)?,
            models: entries(text, "models", raw.models, &mut warnings)?,
            aliases: entries(text, "aliases", raw.aliases, &mut warnings)?,
            agents: entries(text, "agents", raw.agents, &mut warnings)?,
            coordinator: raw.coordinator,
            token: raw.token,
            tls: match raw.tls {
                Some(RawTls::Ca(ca)) => Some(ca),
                Some(RawTls::Map { ca }) => ca,
                None => None,
            },
            remote: raw.remote,
            confirm_default: raw.confirm_default,
            notify,
            fallback: raw.fallback,
            warnings,
        };
        Ok(config)
    }

    /// Reads and parses the config at `path`; `Ok(None)` when there is no file.
    pub fn load(path: &std::path::Path) -> Result<Option<Config>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// True for the old `agents:` format.
    pub fn is_legacy(&self) -> bool {
        !self.agents.is_empty() && self.models.is_empty() && self.backends.is_empty()
    }

    /// The backend a model id maps to, when configured.
    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|(k, _)| k == id).map(|(_, v)| v)
    }

    /// An alias by name.
    pub fn alias(&self, name: &str) -> Option<&AliasConfig> {
        self.aliases.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A backend's command by name.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Backend names, in order.
    pub fn backend_names(&self) -> BTreeMap<String, String> {
        self.backends
            .iter()
            .map(|(k, v)| (k.clone(), v.command.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../tests/fixtures/seed/config-example.yaml");

    #[test]
    fn the_seed_example_loads_as_is() {
        let c = Config::parse(SEED).unwrap();
        assert_eq!(c.default.as_deref(), Some("opus"));
        assert_eq!(
            c.backends.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["claude", "cursor", "codex"]
        );
        assert_eq!(
            c.backend("cursor").unwrap().command.trim(),
            "agent -p --force --workspace \"$(pwd)\""
        );
        assert_eq!(c.model("gpt-5.3-codex").unwrap().backend, "codex");
        assert_eq!(c.models.first().unwrap().0, "opus");
        assert!(
            c.alias("security-reviewer")
                .unwrap()
                .prompt
                .as_deref()
                .unwrap()
                .starts_with("You are a security-focused reviewer.")
        );
        assert_eq!(c.alias("quick").unwrap().model, "sonnet");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(!c.is_legacy());
    }

    #[test]
    fn legacy_unknown_keys_and_errors() {
        let c = Config::parse("default: reviewer\nagents:\n  reviewer:\n    command: claude -p\n  fast:\n    command: agent -p --model x\n").unwrap();
        assert!(c.is_legacy());
        assert_eq!(c.agents[1].1.command, "agent -p --model x");
        let c = Config::parse("default: opus\nmodles:\n  x: {backend: claude}\nmodels:\n  opus: { backend: claude, effort: high }\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("unknown key `modles`")),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("models.opus.effort")),
            "{:?}",
            c.warnings
        );
        let e = Config::parse("default: opus\nmodels:\n  opus: [\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let e = Config::parse("default: [1, 2]\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = Config::parse("default: opus\nmodels:\n  opus: { backend: 3 }\n").unwrap_err();
        assert!(
            e.starts_with("line 3: models.opus: invalid type: integer `3`, expected a string"),
            "{e}"
        );
    }
}
