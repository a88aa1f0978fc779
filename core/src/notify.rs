//! The optional `notify:` section of a config file: a command to run and/or a webhook to POST
//! to when a question arrives or a task ends.
//!
//! ```yaml
//! notify:
//!   command: notify-send "dispatch" "$DISPATCH_TASK_ID: $DISPATCH_EVENT"
//!   webhook: https://chat.internal/hooks/dispatch
//!   secret: whsec_…                   # signs each POST (Standard Webhooks: webhook-signature)
//!   ca: /etc/dispatch/hooks-ca.pem    # the webhook's CA when it is not in the system roots
//! ```

use std::path::Path;

/// Where notifications go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Run with `sh -c`; the event's details are in `DISPATCH_*` environment variables, never
    /// in the command text.
    #[serde(default)]
    pub command: Option<String>,
    /// `https://` (or `http://`) URL that gets a JSON POST.
    #[serde(default)]
    pub webhook: Option<String>,
    /// With it, each POST carries a Standard Webhooks `webhook-signature` (and the older
    /// `X-Dispatch-Signature-256: sha256=<hex HMAC-SHA256 of the body>`).
    #[serde(default)]
    pub secret: Option<String>,
    /// The CA (PEM file) of an `https://` webhook whose certificate is not in the system roots.
    #[serde(default)]
    pub ca: Option<String>,
}

impl NotifyConfig {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.webhook.is_none()
    }

    /// The keys that are set, in the file's order (for writing a config back).
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            ("command", &self.command),
            ("webhook", &self.webhook),
            ("secret", &self.secret),
            ("ca", &self.ca),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// Checks what can be checked before the first event.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(w) = &self.webhook
            && !w.starts_with("http://")
            && !w.starts_with("https://")
        {
            return Err(format!(
                "notify.webhook `{w}` is not an https:// (or http://) URL"
            ));
        }
        if self.webhook.is_none() && (self.secret.is_some() || self.ca.is_some()) {
            return Err("notify.secret and notify.ca are for a webhook; set notify.webhook".into());
        }
        if let Some(s) = &self.secret
            && s.len() < 16
        {
            return Err(
                "notify.secret is shorter than 16 characters; use a long random string (e.g. `openssl rand -hex 32`)".into(),
            );
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    notify: Option<NotifyConfig>,
}

/// Reads the `notify:` section of the YAML config at `path` (other sections are left to their
/// own readers). A missing file means no notifications. Errors name the file, line and column.
pub fn load(path: &Path) -> Result<NotifyConfig, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NotifyConfig::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the `notify:` section out of a YAML document.
pub fn parse(text: &str) -> Result<NotifyConfig, String> {
    if text.trim().is_empty() {
        return Ok(NotifyConfig::default());
    }
    let doc: Document = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })?;
    let n = doc.notify.unwrap_or_default();
    n.validate()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let n =
            parse("default: opus\nnotify:\n  command: echo hi\n  webhook: http://x/y\n").unwrap();
        assert_eq!(n.command.as_deref(), Some("echo hi"));
        assert_eq!(n.webhook.as_deref(), Some("http://x/y"));
        assert!(parse("default: opus\n").unwrap().is_empty());
        assert!(
            parse("notify:\n  comand: x\n")
                .unwrap_err()
                .contains("unknown field `comand`")
        );
        let n = parse("notify:\n  webhook: https://x/h\n  secret: 0123456789abcdef0\n").unwrap();
        assert_eq!(n.secret.as_deref(), Some("0123456789abcdef0"));
        assert!(
            parse("notify:\n  webhook: ftp://x\n")
                .unwrap_err()
                .contains("not an https://")
        );
        assert!(
            parse("notify:\n  webhook: https://x\n  secret: short\n")
                .unwrap_err()
                .contains("shorter than 16")
        );
        assert!(
            parse("notify:\n  secret: 0123456789abcdef0\n")
                .unwrap_err()
                .contains("set notify.webhook")
        );
        assert!(parse("notify: [1, 2").unwrap_err().contains("line"));
        let seed = include_str!("../../tests/fixtures/seed/config-example.yaml");
        assert!(
            parse(seed).unwrap().is_empty(),
            "the seed's example config loads"
        );
    }
}
