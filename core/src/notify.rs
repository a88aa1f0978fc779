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
    /// Where people reach the coordinator's dashboard (`https://dispatch.example.com`): the
    /// one-time answer links and task links of notifications point there (none without it).
    #[serde(default)]
    pub public_url: Option<String>,
    /// How long an answer link works (`24h` when not set).
    #[serde(default)]
    pub link_ttl: Option<String>,
    /// Receivers people read: Slack, Discord, Teams, ntfy, email.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// The SMTP server `email` targets are sent through.
    #[serde(default)]
    pub smtp: Option<Smtp>,
}

/// An SMTP server to send notifications through.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// Its host name.
    pub host: String,
    /// Its port (default: 587 with `starttls`, 465 with `tls`, 25 with `none`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (the default), `tls` (TLS from the first byte), or `none` (a server on
    /// loopback only: a password never crosses a network in the clear).
    #[serde(default)]
    pub security: Option<String>,
    /// The user to log in as (none: no login).
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// The sender (`dispatch <dispatch@example.com>`).
    pub from: String,
    /// The server's CA (PEM file) when it is not in the system roots.
    #[serde(default)]
    pub ca: Option<String>,
}

impl Smtp {
    /// How the connection is secured: `starttls`, `tls` or `none`.
    pub fn security(&self) -> &str {
        self.security.as_deref().unwrap_or("starttls")
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security() {
            "tls" => 465,
            "none" => 25,
            _ => 587,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("notify.smtp.host is empty".into());
        }
        match self.security() {
            "starttls" | "tls" => {}
            "none" => {
                if !matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1") {
                    return Err(format!(
                        "notify.smtp.security `none` is for a server on this machine only (localhost); `{}` needs starttls or tls",
                        self.host
                    ));
                }
            }
            other => {
                return Err(format!(
                    "notify.smtp.security `{other}`: use starttls, tls or none"
                ));
            }
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err("notify.smtp: give user and password_file together".into());
        }
        if !self.from.contains('@') {
            return Err(format!(
                "notify.smtp.from `{}` is not an address such as `dispatch <dispatch@example.com>`",
                self.from
            ));
        }
        Ok(())
    }
}

/// A receiver in its own format. Exactly one of `slack`, `discord`, `teams` and `ntfy` names
/// its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A Slack incoming webhook (`https://hooks.slack.com/services/…`).
    #[serde(default)]
    pub slack: Option<String>,
    /// A Discord channel webhook (`https://discord.com/api/webhooks/…`).
    #[serde(default)]
    pub discord: Option<String>,
    /// A Microsoft Teams Workflows webhook (an Adaptive Card is posted).
    #[serde(default)]
    pub teams: Option<String>,
    /// An ntfy topic URL (`https://ntfy.sh/my-topic`).
    #[serde(default)]
    pub ntfy: Option<String>,
    /// An email address (sent through `notify.smtp`).
    #[serde(default)]
    pub email: Option<String>,
    /// A file holding the ntfy access token (sent as a bearer token).
    #[serde(default)]
    pub token_file: Option<String>,
    /// Only tasks of these users (empty: everyone's).
    #[serde(default)]
    pub users: Vec<String>,
    /// What it is told: `question`, `task_ended` (empty: both).
    #[serde(default)]
    pub events: Vec<String>,
    /// The CA (PEM file) of a receiver whose certificate is not in the system roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Quiet hours, `22:00-07:00` (in `utc_offset`'s time): what comes meanwhile is held and
    /// sent as one digest when they end.
    #[serde(default)]
    pub quiet: Option<String>,
    /// The receiver's local time for `quiet`, as `+02:00` or `-05:00` (default UTC; no
    /// daylight-saving rules: change it when the clocks do).
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// After a post, what comes within this long (`5m`) is held and sent as one digest.
    #[serde(default)]
    pub digest: Option<String>,
}

/// `HH:MM` → minutes after midnight.
fn clock(s: &str) -> Option<i64> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && s.trim().len() == 5).then_some(h * 60 + m)
}

/// `+02:00` / `-05:30` → minutes east of UTC.
fn offset(s: &str) -> Option<i64> {
    let s = s.trim();
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let m = clock(&s[1..])?;
    (m <= 14 * 60).then_some(sign * m)
}

impl Target {
    /// When the quiet hours that hold `now_ms` end (ms since the epoch); None outside them.
    pub fn quiet_until(&self, now_ms: i64) -> Option<i64> {
        let (from, to) = self.quiet.as_deref()?.split_once('-')?;
        let (from, to) = (clock(from)?, clock(to)?);
        let shift = self.utc_offset.as_deref().map_or(Some(0), offset)? * 60_000;
        let local = now_ms + shift;
        let day = local.div_euclid(86_400_000);
        let minute = local.rem_euclid(86_400_000) / 60_000;
        let ends = |day: i64| day * 86_400_000 + to * 60_000 - shift;
        if from <= to {
            (from..to).contains(&minute).then(|| ends(day))
        } else if minute >= from {
            Some(ends(day + 1))
        } else if minute < to {
            Some(ends(day))
        } else {
            None
        }
    }

    /// The digest window.
    pub fn digest(&self) -> Option<std::time::Duration> {
        self.digest
            .as_deref()
            .and_then(|d| crate::duration::parse(d).ok())
            .filter(|d| !d.is_zero())
    }
    /// Its kind and URL.
    pub fn endpoint(&self) -> Option<(&'static str, &str)> {
        [
            ("slack", &self.slack),
            ("discord", &self.discord),
            ("teams", &self.teams),
            ("ntfy", &self.ntfy),
            ("email", &self.email),
        ]
        .into_iter()
        .find_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }

    /// Whether it is told `event` of a task of `owner`.
    pub fn wants(&self, event: &str, owner: &str) -> bool {
        (self.events.is_empty() || self.events.iter().any(|e| e == event))
            && (self.users.is_empty() || self.users.iter().any(|u| u == owner))
    }

    fn validate(&self, i: usize) -> Result<(), String> {
        let set = [
            &self.slack,
            &self.discord,
            &self.teams,
            &self.ntfy,
            &self.email,
        ]
        .iter()
        .filter(|v| v.is_some())
        .count();
        let Some((kind, url)) = self.endpoint().filter(|_| set == 1) else {
            return Err(format!(
                "notify.targets[{i}] names {set} receivers; give exactly one of slack, discord, teams, ntfy (its URL) or email (an address)"
            ));
        };
        if kind == "email" {
            if !url.contains('@') || url.contains(char::is_control) {
                return Err(format!(
                    "notify.targets[{i}].email `{url}` is not an email address"
                ));
            }
            if self.ca.is_some() || self.token_file.is_some() {
                return Err(format!(
                    "notify.targets[{i}]: an email target's server is notify.smtp (its ca goes there)"
                ));
            }
        } else if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!(
                "notify.targets[{i}].{kind} `{url}` is not an https:// (or http://) URL"
            ));
        }
        if kind == "ntfy" {
            let topic = url
                .split("://")
                .nth(1)
                .and_then(|r| r.split_once('/'))
                .map(|(_, t)| t);
            if !topic.is_some_and(|t| {
                !t.is_empty()
                    && t.len() <= 64
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }) {
                return Err(format!(
                    "notify.targets[{i}].ntfy `{url}` is not a topic URL such as https://ntfy.sh/my-topic"
                ));
            }
        } else if self.token_file.is_some() {
            return Err(format!(
                "notify.targets[{i}].token_file is for ntfy; a {kind} webhook carries its secret in its URL"
            ));
        }
        if let Some(q) = &self.quiet {
            let ok = q.split_once('-').is_some_and(|(a, b)| {
                clock(a).is_some() && clock(b).is_some() && clock(a) != clock(b)
            });
            if !ok {
                return Err(format!(
                    "notify.targets[{i}].quiet `{q}`: give hours as HH:MM-HH:MM, e.g. 22:00-07:00"
                ));
            }
        }
        if let Some(o) = &self.utc_offset
            && offset(o).is_none()
        {
            return Err(format!(
                "notify.targets[{i}].utc_offset `{o}`: give it as +02:00 or -05:00"
            ));
        }
        if let Some(d) = &self.digest {
            match crate::duration::parse(d) {
                Ok(d) if d <= std::time::Duration::from_secs(24 * 3600) => {}
                _ => {
                    return Err(format!(
                        "notify.targets[{i}].digest `{d}`: give a duration up to 24h, e.g. 5m"
                    ));
                }
            }
        }
        for e in &self.events {
            if e != "question" && e != "task_ended" {
                return Err(format!(
                    "notify.targets[{i}].events: `{e}` is not an event; use question and/or task_ended"
                ));
            }
        }
        Ok(())
    }
}

/// Where an ntfy topic URL posts its JSON (the server's root) and the topic.
pub fn ntfy_parts(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (host, topic) = rest.split_once('/')?;
    Some((format!("{scheme}://{host}/"), topic.to_string()))
}

impl NotifyConfig {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.webhook.is_none() && self.targets.is_empty()
    }

    /// How long an answer link works.
    pub fn link_ttl(&self) -> std::time::Duration {
        self.link_ttl
            .as_deref()
            .and_then(|t| crate::duration::parse(t).ok())
            .unwrap_or(std::time::Duration::from_secs(24 * 3600))
    }

    /// The keys that are set, in the file's order (for writing a config back).
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            ("command", &self.command),
            ("webhook", &self.webhook),
            ("secret", &self.secret),
            ("ca", &self.ca),
            ("public_url", &self.public_url),
            ("link_ttl", &self.link_ttl),
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
        for (i, t) in self.targets.iter().enumerate() {
            t.validate(i)?;
        }
        match &self.smtp {
            Some(s) => s.validate()?,
            None if self.targets.iter().any(|t| t.email.is_some()) => {
                return Err(
                    "notify.targets has an email target but there is no notify.smtp to send it through".into(),
                );
            }
            None => {}
        }
        if let Some(u) = &self.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(format!(
                "notify.public_url `{u}` is not the dashboard's https:// (or http://) address"
            ));
        }
        if let Some(t) = &self.link_ttl {
            match crate::duration::parse(t) {
                Ok(d)
                    if d >= std::time::Duration::from_secs(1)
                        && d <= std::time::Duration::from_secs(30 * 24 * 3600) => {}
                _ => {
                    return Err(format!(
                        "notify.link_ttl `{t}`: give a duration from 1s to 30d (e.g. 24h)"
                    ));
                }
            }
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
        // Receivers people read, one kind each.
        let n = parse(
            "notify:\n  public_url: https://dispatch.example\n  targets:\n    - slack: https://hooks.slack.com/services/T/B/X\n    - ntfy: https://ntfy.sh/ann-dispatch\n      users: [ann]\n      events: [question]\n",
        )
        .unwrap();
        assert_eq!(n.targets.len(), 2);
        assert_eq!(
            n.targets[1].endpoint(),
            Some(("ntfy", "https://ntfy.sh/ann-dispatch"))
        );
        assert!(n.targets[1].wants("question", "ann"));
        assert!(!n.targets[1].wants("question", "bob"));
        assert!(!n.targets[1].wants("task_ended", "ann"));
        assert!(n.targets[0].wants("task_ended", "bob"));
        assert_eq!(
            ntfy_parts("https://ntfy.sh/ann-dispatch"),
            Some(("https://ntfy.sh/".into(), "ann-dispatch".into()))
        );
        for (bad, says) in [
            (
                "    - { slack: https://a, discord: https://b }\n",
                "names 2 receivers",
            ),
            ("    - { users: [ann] }\n", "names 0 receivers"),
            ("    - { teams: ftp://x }\n", "not an https://"),
            ("    - { ntfy: https://ntfy.sh/ }\n", "not a topic URL"),
            ("    - { ntfy: https://ntfy.sh/a/b }\n", "not a topic URL"),
            (
                "    - { slack: https://a, token_file: /t }\n",
                "token_file is for ntfy",
            ),
            (
                "    - { slack: https://a, events: [started] }\n",
                "`started` is not an event",
            ),
            ("    - { slak: https://a }\n", "unknown field `slak`"),
        ] {
            let e = parse(&format!("notify:\n  targets:\n{bad}")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Quiet hours across midnight, in the receiver's own time.
        let t = Target {
            slack: Some("https://x".into()),
            quiet: Some("22:00-07:00".into()),
            utc_offset: Some("+02:00".into()),
            ..Default::default()
        };
        let at = |h: i64, m: i64| 20_000 * 86_400_000 + (h * 60 + m) * 60_000;
        // 21:30 UTC is 23:30 there: quiet until 07:00 there, 05:00 UTC the next day.
        assert_eq!(t.quiet_until(at(21, 30)), Some(at(29, 0)));
        // 04:59 UTC is 06:59 there: quiet for one more minute.
        assert_eq!(t.quiet_until(at(4, 59)), Some(at(5, 0)));
        assert_eq!(t.quiet_until(at(5, 0)), None);
        assert_eq!(t.quiet_until(at(12, 0)), None);
        for (bad, says) in [
            ("quiet: 22-07", "HH:MM-HH:MM"),
            ("quiet: 07:00-07:00", "HH:MM-HH:MM"),
            ("utc_offset: 2", "+02:00"),
            ("digest: 2d", "up to 24h"),
        ] {
            let e = parse(&format!(
                "notify:\n  targets:\n    - slack: https://x\n      {bad}\n"
            ))
            .unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(
            parse("notify:\n  public_url: dispatch.example\n")
                .unwrap_err()
                .contains("public_url")
        );
        assert!(
            parse("notify:\n  link_ttl: 90d\n")
                .unwrap_err()
                .contains("from 1s to 30d")
        );
        let seed = include_str!("../../tests/fixtures/seed/config-example.yaml");
        assert!(
            parse(seed).unwrap().is_empty(),
            "the seed's example config loads"
        );
    }
}
