//! What a worker's CLI says about its own trouble, read from its output as it runs: API
//! retries (Claude Code's `system/api_retry` events, Codex's `Reconnecting... 2/5`), its
//! error line (a failed `result`, an `error` event, Codex's `ERROR:` lines, or the last line a
//! plain run printed before a failing exit), what kind of trouble that is (authentication, a
//! usage limit, a rate limit, an overloaded or failing server), and when a usage limit resets.
//!
//! The output is the worker's, so it is hostile input: every text kept is cut to
//! [`MAX_MESSAGE_CHARS`] with control characters out, and nothing here fails.

use serde_json::Value;

/// Longest error line kept.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Whose words a worker's output is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cli {
    /// Claude Code (`claude -p`).
    Claude,
    /// Codex (`codex exec`).
    Codex,
}

impl Cli {
    /// The CLI a backend runs: a built-in backend's, or the program its command starts
    /// (`claude`, `codex`, after any `env …` prefix).
    pub fn of(backend: &str, command: &str) -> Option<Cli> {
        match backend {
            "claude" => return Some(Cli::Claude),
            "codex" => return Some(Cli::Codex),
            _ => {}
        }
        let mut words = command.split_whitespace();
        while let Some(w) = words.next() {
            let prog = w.rsplit('/').next().unwrap_or(w);
            match prog {
                // `env -u NAME …`: the option's value is no program.
                "-u" | "--unset" => {
                    words.next();
                }
                "env" => {}
                _ if w.starts_with('-') || w.contains('=') => {}
                "claude" => return Some(Cli::Claude),
                "codex" => return Some(Cli::Codex),
                _ => return None,
            }
        }
        None
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
        }
    }
}

/// What kind of trouble a CLI reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trouble {
    /// A missing, invalid or expired credential, or one without permission.
    Auth,
    /// A usage limit, an exhausted quota or credit balance: it lasts until a reset.
    UsageLimit,
    /// Too many requests for now.
    RateLimit,
    /// The model's servers are overloaded.
    Overloaded,
    /// The model's servers failed.
    Server,
    /// Anything else.
    Error,
}

impl Trouble {
    /// Its name on the wire and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Trouble::Auth => "auth",
            Trouble::UsageLimit => "usage_limit",
            Trouble::RateLimit => "rate_limit",
            Trouble::Overloaded => "overloaded",
            Trouble::Server => "server",
            Trouble::Error => "error",
        }
    }

    /// Reads a name written by [`Trouble::as_str`].
    pub fn parse(s: &str) -> Option<Trouble> {
        Some(match s {
            "auth" => Trouble::Auth,
            "usage_limit" => Trouble::UsageLimit,
            "rate_limit" => Trouble::RateLimit,
            "overloaded" => Trouble::Overloaded,
            "server" => Trouble::Server,
            "error" => Trouble::Error,
            _ => return None,
        })
    }

    /// How a person says it; a fallback's `on` patterns are matched against it too.
    pub fn phrase(self) -> &'static str {
        match self {
            Trouble::Auth => "authentication failed",
            Trouble::UsageLimit => "usage limit",
            Trouble::RateLimit => "rate limit",
            Trouble::Overloaded => "overloaded",
            Trouble::Server => "server error",
            Trouble::Error => "error",
        }
    }

    /// Trouble the CLI cannot get past by itself now: its worker could not start or continue.
    pub fn stops_the_cli(self) -> bool {
        matches!(
            self,
            Trouble::Auth | Trouble::UsageLimit | Trouble::RateLimit | Trouble::Overloaded
        )
    }
}

/// What kind of trouble an error text and HTTP status describe.
pub fn classify(text: &str, status: Option<u16>) -> Trouble {
    let t = text.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&[
        "usage limit",
        "hit your limit",
        "hit your usage",
        "credit balance",
        "exceeded your current quota",
        "insufficient_quota",
        "regain access",
        "spend limit",
        "out of usage credits",
        "out of extra usage",
    ]) {
        return Trouble::UsageLimit;
    }
    if matches!(status, Some(401 | 403))
        || any(&[
            "invalid api key",
            "incorrect api key",
            "authentication",
            "failed to authenticate",
            "unauthorized",
            "forbidden",
            "not logged in",
            "please run /login",
            "/login",
            "insufficient permissions",
            "does not have permission",
            "token expired",
            "token has expired",
            "session expired",
            "no api key",
            "missing api key",
            "api key not found",
            "openai_api_key",
            // Codex, when its provider's key variable is not set.
            "missing environment variable",
        ])
    {
        return Trouble::Auth;
    }
    if status == Some(429) || any(&["rate limit", "rate_limit", "too many requests", " 429"]) {
        return Trouble::RateLimit;
    }
    if matches!(status, Some(529 | 503))
        || any(&[
            "overloaded",
            "at capacity",
            "high demand",
            "server_is_overloaded",
            " 529",
            " 503",
        ])
    {
        return Trouble::Overloaded;
    }
    if status.is_some_and(|s| s >= 500)
        || any(&[
            "internal server error",
            "server_error",
            "server error",
            "api_error",
            " 500 ",
            " 502 ",
        ])
    {
        return Trouble::Server;
    }
    Trouble::Error
}

/// The node's clock and time zone, for reset times a CLI writes in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Now, in ms since the Unix epoch.
    pub now_ms: i64,
    /// The node's offset from UTC, in seconds (east positive).
    pub utc_offset_s: i32,
}

impl Clock {
    /// The system clock, in UTC.
    pub fn utc() -> Clock {
        Clock {
            now_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            utc_offset_s: 0,
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm; the inverse of
/// `days_from_civil`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `3pm`, `3:05 PM`, `15:00`, `10:38 AM` → minutes after midnight.
fn clock_time(s: &str) -> Option<(u32, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() && i < 2 {
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let mut hour: u32 = s[..i].parse().ok()?;
    let mut minute = 0;
    if b.get(i) == Some(&b':') && b.len() >= i + 3 && b[i + 1..i + 3].iter().all(u8::is_ascii_digit)
    {
        minute = s[i + 1..i + 3].parse().ok()?;
        i += 3;
    }
    let rest = s[i..].trim_start();
    let skipped = s.len() - s[i..].len() + (s[i..].len() - rest.len());
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("am") || lower.starts_with("a.m") {
        if hour == 12 {
            hour = 0;
        }
        i = skipped + 2;
    } else if lower.starts_with("pm") || lower.starts_with("p.m") {
        if hour < 12 {
            hour += 12;
        }
        i = skipped + 2;
    } else if b.get(i - 1).is_some_and(u8::is_ascii_digit) && !s[..i].contains(':') {
        // A bare number is not a time.
        return None;
    }
    (hour < 24 && minute < 60).then_some((hour * 60 + minute, i))
}

/// When a usage limit resets, from the CLI's words: the Anthropic API's `You will regain
/// access on 2026-12-03 at 15:00 UTC`, Codex's `try again at 3:00 PM` (the node's local
/// time), Claude Code's `resets 3pm` / `resets at 5pm` and `usage limit reached|<epoch>`.
pub fn resets_at(text: &str, clock: &Clock) -> Option<i64> {
    let lower = text.to_lowercase();
    if let Some(i) = lower.find("limit reached|") {
        let digits: String = lower[i + 14..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(secs) = digits.parse::<i64>() {
            return Some(secs.saturating_mul(1000));
        }
    }
    if let Some(i) = lower.find("regain access on ") {
        let rest = &lower[i + 17..];
        // 2026-12-03 at 15:00 UTC
        let date = rest.get(..10)?;
        let mut parts = date.split('-');
        let (y, m, d) = (
            parts.next()?.parse::<i64>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
        );
        let at = rest[10..].trim_start().strip_prefix("at ")?;
        let (minutes, _) = clock_time(at)?;
        return Some((days_from_civil(y, m, d) * 86_400 + i64::from(minutes) * 60) * 1000);
    }
    for marker in ["try again at ", "resets at ", "resets ", "reset at "] {
        if let Some(i) = lower.find(marker) {
            let at = &text[i + marker.len()..];
            if let Some((minutes, _)) = clock_time(at.trim_start()) {
                return Some(next_local(minutes, clock));
            }
            // Codex on another day than today: `Dec 4th, 2026 12:28 AM` (local time).
            if let Some(ms) = local_date_time(at.trim_start(), clock) {
                return Some(ms);
            }
        }
    }
    None
}

/// `Dec 4th, 2026 12:28 AM` (the node's local time) → ms since the epoch.
fn local_date_time(s: &str, clock: &Clock) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let mut words = s.split_whitespace();
    let month = words.next()?.to_ascii_lowercase();
    let m = MONTHS.iter().position(|x| month.starts_with(x))? as u32 + 1;
    // `4th,` → 4, `2026` → 2026.
    let mut number = || -> Option<i64> {
        let w = words.next()?;
        w[..w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len())]
            .parse()
            .ok()
    };
    let d = number().filter(|d| (1..=31).contains(d))? as u32;
    let y = number().filter(|y| (1970..=9999).contains(y))?;
    let rest: Vec<&str> = words.collect();
    let (minutes, _) = clock_time(&rest.join(" "))?;
    let local_s = days_from_civil(y, m, d) * 86_400 + i64::from(minutes) * 60;
    Some((local_s - i64::from(clock.utc_offset_s)) * 1000)
}

/// The next time the node's clock shows `minutes` after midnight (local time).
fn next_local(minutes: u32, clock: &Clock) -> i64 {
    let local_s = clock.now_ms.div_euclid(1000) + i64::from(clock.utc_offset_s);
    let day = local_s.div_euclid(86_400);
    let mut at = day * 86_400 + i64::from(minutes) * 60;
    if at <= local_s {
        at += 86_400;
    }
    (at - i64::from(clock.utc_offset_s)) * 1000
}

/// The CLI's error, as it said it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// What kind of trouble.
    pub trouble: Trouble,
    /// The CLI's own error line.
    pub message: String,
    /// The HTTP status it names, when it does.
    pub status: Option<u16>,
    /// When a usage limit resets (ms since the epoch), when the CLI says.
    pub resets_at_ms: Option<i64>,
    /// API retries in a row just before it.
    pub retries: u32,
    /// The node stopped the worker for it (its retries went on past the node's limit).
    pub stopped: bool,
}

impl Failure {
    /// `rate limit, after 3 API retries, stopped by the node`: what kind of trouble, for a
    /// reason.
    pub fn note(&self) -> String {
        let mut note = self.trouble.phrase().to_string();
        if self.retries > 0 {
            note.push_str(&format!(
                ", after {} API retr{}",
                self.retries,
                if self.retries == 1 { "y" } else { "ies" }
            ));
        }
        if self.stopped {
            note.push_str(", stopped by the node");
        }
        note
    }
}

/// An API retry the CLI announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Which attempt (1 for the first retry).
    pub attempt: u32,
    /// Retries it will make at most (0: unknown).
    pub max: u32,
    /// The HTTP status that made it retry, when known.
    pub status: Option<u16>,
    /// Why, when the CLI says.
    pub trouble: Option<Trouble>,
    /// The CLI's words for it.
    pub detail: String,
}

/// Reads a worker's trouble out of its output, line by line.
#[derive(Debug, Clone)]
pub struct Signals {
    cli: Option<Cli>,
    clock: Clock,
    retries: u32,
    last_retry: Option<Retry>,
    error: Option<Failure>,
    last_text: Option<String>,
}

/// One line cut for keeping: control characters out, at most [`MAX_MESSAGE_CHARS`].
fn keep(s: &str) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// `Reconnecting... 2/5 (cause)` → (2, 5, cause).
fn reconnecting(text: &str) -> Option<(u32, u32, String)> {
    let rest = text.trim().strip_prefix("Reconnecting...")?.trim_start();
    let (counts, cause) = match rest.split_once(' ') {
        Some((c, more)) => (c, more.trim()),
        None => (rest, ""),
    };
    let (a, m) = counts.split_once('/')?;
    let cause = cause
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or(cause);
    Some((a.parse().ok()?, m.parse().ok()?, cause.to_string()))
}

/// Codex's lines that are not about the task (start-up warnings, its prompt echo).
fn codex_noise(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("warning:")
        || l.starts_with("WARNING:")
        || l.starts_with("Reading additional input from stdin")
        || l.starts_with("Reading prompt from stdin")
}

impl Signals {
    /// A reader for `cli`'s output (None: an unknown CLI, whose last lines still count).
    pub fn new(cli: Option<Cli>, clock: Clock) -> Signals {
        Signals {
            cli,
            clock,
            retries: 0,
            last_retry: None,
            error: None,
            last_text: None,
        }
    }

    /// A line of the CLI's that says nothing about the task (Codex's start-up warnings).
    pub fn noise(&self, line: &str) -> bool {
        self.cli == Some(Cli::Codex) && codex_noise(line)
    }

    /// API retries in a row so far (a model answer resets the count).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The last retry announced, while retries go on.
    pub fn last_retry(&self) -> Option<&Retry> {
        self.last_retry.as_ref().filter(|_| self.retries > 0)
    }

    fn retry(&mut self, r: Retry) -> String {
        self.retries += 1;
        let mut line = if r.max > 0 {
            format!("API retry {}/{}", r.attempt, r.max)
        } else {
            format!("API retry {}", r.attempt)
        };
        match (r.status, r.trouble) {
            (Some(s), Some(t)) => line.push_str(&format!(" — {s} {}", t.phrase())),
            (None, Some(t)) => line.push_str(&format!(" — {}", t.phrase())),
            (Some(s), None) => line.push_str(&format!(" — status {s}")),
            (None, None) => {}
        }
        if !r.detail.is_empty() && r.trouble.is_none_or(|t| r.detail != t.phrase()) {
            line.push_str(&format!(": {}", r.detail));
        }
        self.last_retry = Some(r);
        keep(&line)
    }

    fn answered(&mut self) {
        self.retries = 0;
        self.last_retry = None;
    }

    fn failed(&mut self, message: &str, status: Option<u16>, kind_hint: Option<Trouble>) {
        let message = keep(message);
        if message.is_empty() {
            return;
        }
        let mut trouble = classify(&message, status);
        if trouble == Trouble::Error
            && let Some(h) = kind_hint
        {
            trouble = h;
        }
        self.error = Some(Failure {
            trouble,
            resets_at_ms: if trouble == Trouble::UsageLimit {
                resets_at(&message, &self.clock)
            } else {
                None
            },
            message,
            status,
            retries: self.retries,
            stopped: false,
        });
    }

    /// A Claude Code stream-json event; an activity line for what it says about trouble.
    pub fn claude_event(&mut self, v: &Value) -> Option<String> {
        match v["type"].as_str().unwrap_or("") {
            "system" if v["subtype"] == "api_retry" => {
                let status = v["error_status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok());
                let kind = v["error"].as_str().unwrap_or("");
                let trouble = match kind {
                    "authentication_failed" => Some(Trouble::Auth),
                    "billing_error" => Some(Trouble::UsageLimit),
                    "rate_limit" => Some(Trouble::RateLimit),
                    "overloaded" => Some(Trouble::Overloaded),
                    "server_error" => Some(Trouble::Server),
                    _ => status.map(|s| classify("", Some(s))),
                };
                Some(self.retry(Retry {
                    attempt: v["attempt"].as_u64().unwrap_or(0) as u32,
                    max: v["max_retries"].as_u64().unwrap_or(0) as u32,
                    status,
                    trouble,
                    detail: String::new(),
                }))
            }
            "assistant"
                if v["is_api_error_message"] == true || v["message"]["model"] == "<synthetic>" =>
            {
                let text: Vec<&str> = v["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["text"].as_str())
                    .collect();
                let status = v["api_error_status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok());
                self.failed(&text.join(" "), status, None);
                None
            }
            "assistant" | "stream_event" => {
                self.answered();
                None
            }
            "result" if v["is_error"] == true => {
                let status = v["api_error_status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok());
                let message = v["result"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        v["errors"].as_array().map(|e| {
                            e.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .unwrap_or_default();
                let message = if message.trim().is_empty() {
                    v["subtype"].as_str().unwrap_or("error").to_string()
                } else {
                    message
                };
                self.failed(&message, status, None);
                None
            }
            _ => None,
        }
    }

    /// A Codex `exec --json` event; an activity line for what it says about trouble.
    pub fn codex_event(&mut self, v: &Value) -> Option<String> {
        match v["type"].as_str().unwrap_or("") {
            "error" => {
                let message = v["message"].as_str().unwrap_or("");
                self.codex_error(message)
            }
            "turn.failed" => {
                let message = v["error"]["message"].as_str().unwrap_or("");
                self.failed(message, None, None);
                None
            }
            "item.started" | "item.completed" | "item.updated" | "turn.completed" => {
                // Its own start-up warnings come as items too; they are no answer.
                if v["item"]["type"] != "error" {
                    self.answered();
                }
                None
            }
            _ => None,
        }
    }

    fn codex_error(&mut self, message: &str) -> Option<String> {
        if let Some((attempt, max, cause)) = reconnecting(message) {
            let trouble = (!cause.is_empty()).then(|| classify(&cause, None));
            return Some(self.retry(Retry {
                attempt,
                max,
                status: None,
                trouble,
                detail: cause,
            }));
        }
        self.failed(message, None, None);
        None
    }

    /// A line that is not a JSON event (a plain run's output, a CLI's stderr).
    pub fn text_line(&mut self, line: &str) -> Option<String> {
        let t = line.trim();
        if t.is_empty() {
            return None;
        }
        if self.cli == Some(Cli::Codex) {
            if codex_noise(t) {
                return None;
            }
            if let Some(e) = t
                .strip_prefix("ERROR: ")
                .or_else(|| t.strip_prefix("ERROR:"))
            {
                return self.codex_error(e);
            }
        }
        self.answered();
        self.last_text = Some(keep(t));
        None
    }

    /// Why the node should stop the worker now, when retries go on past `max_retries` in a
    /// row for a rate limit or an overloaded or failing server (Claude Code is told the same
    /// limit and stops by itself; Codex's retries are its own).
    pub fn stop(&self, max_retries: u32) -> Option<Failure> {
        let r = self.last_retry()?;
        let counted = r.trouble.is_some_and(|t| {
            matches!(
                t,
                Trouble::RateLimit | Trouble::Overloaded | Trouble::Server
            )
        });
        // Claude Code stops by itself after max_retries (the node sets its limit): one more
        // means it did not.
        let limit = match self.cli {
            Some(Cli::Claude) => max_retries.saturating_add(1),
            _ => max_retries,
        };
        if !counted || self.retries < limit.max(1) {
            return None;
        }
        let trouble = r.trouble.unwrap_or(Trouble::Error);
        let message = if r.detail.is_empty() {
            match r.status {
                Some(s) => format!("API retry {}: {s} {}", r.attempt, trouble.phrase()),
                None => format!("API retry {}: {}", r.attempt, trouble.phrase()),
            }
        } else {
            r.detail.clone()
        };
        Some(Failure {
            trouble,
            message: keep(&message),
            status: r.status,
            resets_at_ms: None,
            retries: self.retries,
            stopped: true,
        })
    }

    /// The CLI's error once it exited with `exit_code`: the error it reported, or for a
    /// failing exit the last line it printed.
    pub fn failure(&self, exit_code: Option<i32>) -> Option<Failure> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        if exit_code.is_some_and(|c| c != 0) {
            let line = self.last_text.as_ref()?;
            let trouble = classify(line, None);
            return Some(Failure {
                trouble,
                resets_at_ms: if trouble == Trouble::UsageLimit {
                    resets_at(line, &self.clock)
                } else {
                    None
                },
                message: line.clone(),
                status: None,
                retries: self.retries,
                stopped: false,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn civil_dates_round_trip_and_read_as_utc() {
        for days in [
            -719_468, -1, 0, 1, 59, 365, 11_016, 20_000, 20_789, 2_932_896,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(utc_text(1_796_396_400_000), "2026-12-04 15:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    use super::*;

    const NOON: Clock = Clock {
        // 2026-12-03 12:00:00 UTC
        now_ms: 1_796_299_200_000,
        utc_offset_s: 0,
    };

    fn feed_codex(lines: &str) -> Signals {
        let mut s = Signals::new(Some(Cli::Codex), NOON);
        for l in lines.lines() {
            match serde_json::from_str::<Value>(l) {
                Ok(v @ Value::Object(_)) => {
                    s.codex_event(&v);
                }
                _ => {
                    s.text_line(l);
                }
            }
        }
        s
    }

    #[test]
    fn the_clis_error_lines_are_classified() {
        for (text, status, want) in [
            (
                "Invalid API key · Fix external API key",
                None,
                Trouble::Auth,
            ),
            (
                "Failed to authenticate. API Error: 403 Your API key does not have permission to use the specified resource.",
                None,
                Trouble::Auth,
            ),
            (
                "API Error: Request rejected (429) · This request would exceed the rate limit",
                None,
                Trouble::RateLimit,
            ),
            (
                "API Error: 529 Overloaded. This is a server-side issue",
                None,
                Trouble::Overloaded,
            ),
            (
                "API Error: 500 Internal server error",
                None,
                Trouble::Server,
            ),
            (
                "API Error: 400 You have reached your specified API usage limits. You will regain access on 2026-12-03 at 15:00 UTC.",
                Some(400),
                Trouble::UsageLimit,
            ),
            ("Credit balance is too low", None, Trouble::UsageLimit),
            (
                "You’ve hit your usage limit. Upgrade to Pro, or try again at 3:00 PM.",
                None,
                Trouble::UsageLimit,
            ),
            (
                "unexpected status 401 Unauthorized: Incorrect API key provided",
                None,
                Trouble::Auth,
            ),
            (
                "exceeded retry limit, last status: 429 Too Many Requests, request id: x",
                None,
                Trouble::RateLimit,
            ),
            (
                "Selected model is at capacity. Please try a different model.",
                None,
                Trouble::Overloaded,
            ),
            (
                "We’re currently experiencing high demand, which may cause temporary errors.",
                None,
                Trouble::Overloaded,
            ),
            (
                "Missing environment variable: `OPENAI_API_KEY`.",
                None,
                Trouble::Auth,
            ),
            ("Not logged in · Please run /login", None, Trouble::Auth),
            ("cannot open src/main.rs", None, Trouble::Error),
        ] {
            assert_eq!(classify(text, status), want, "{text}");
        }
    }

    #[test]
    fn reset_times_are_read_in_each_clis_words() {
        let at = |s: &str| resets_at(s, &NOON);
        assert_eq!(
            at("You will regain access on 2026-12-03 at 15:00 UTC."),
            Some(NOON.now_ms + 3 * 3_600_000)
        );
        assert_eq!(
            at("or try again at 3:00 PM."),
            Some(NOON.now_ms + 3 * 3_600_000)
        );
        assert_eq!(
            at("or try again at 10:38 AM."),
            Some(NOON.now_ms + (22 * 60 + 38) * 60_000)
        );
        assert_eq!(
            at("You've hit your limit · resets 5pm"),
            Some(NOON.now_ms + 5 * 3_600_000)
        );
        assert_eq!(at("It resets at 5pm."), Some(NOON.now_ms + 5 * 3_600_000));
        assert_eq!(
            at("Claude AI usage limit reached|1796310000"),
            Some(1_796_310_000_000)
        );
        // Codex when the reset is on another day: a date, in local time.
        assert_eq!(
            at("or try again at Dec 4th, 2026 12:28 AM."),
            Some((days_from_civil(2026, 12, 4) * 86_400 + 28 * 60) * 1000)
        );
        assert_eq!(
            at("try again at Jan 1st, 2027 3:05 PM"),
            Some((days_from_civil(2027, 1, 1) * 86_400 + (15 * 60 + 5) * 60) * 1000)
        );
        assert_eq!(at("try again at Dec 40th, 2026 1:00 AM"), None);
        assert_eq!(at("resets soon"), None);
        assert_eq!(at("try again at 99:99"), None);
        // In local time: a node two hours east of UTC reads 3:00 PM as 13:00 UTC.
        let east = Clock {
            utc_offset_s: 7200,
            ..NOON
        };
        assert_eq!(
            resets_at("try again at 3:00 PM", &east),
            Some(NOON.now_ms + 3_600_000)
        );
    }

    #[test]
    fn claude_retries_show_and_its_result_is_the_error() {
        let mut s = Signals::new(Some(Cli::Claude), NOON);
        let retry = |n: u32| serde_json::json!({"type":"system","subtype":"api_retry","attempt":n,"max_retries":10,"retry_delay_ms":1000,"error_status":429,"error":"rate_limit"});
        assert_eq!(
            s.claude_event(&retry(1)).as_deref(),
            Some("API retry 1/10 — 429 rate limit")
        );
        for n in 2..=3 {
            s.claude_event(&retry(n));
        }
        assert_eq!(s.stop(3), None, "claude stops by itself at its limit");
        s.claude_event(&retry(4));
        let f = s.stop(3).expect("one past the limit: the node stops it");
        assert_eq!(
            (f.trouble, f.status, f.retries),
            (Trouble::RateLimit, Some(429), 4)
        );
        // A model answer ends the run of retries.
        s.claude_event(
            &serde_json::json!({"type":"assistant","message":{"model":"claude-x","content":[]}}),
        );
        assert_eq!((s.retries(), s.stop(3)), (0, None));
        s.claude_event(&serde_json::json!({"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key · Fix external API key"}));
        let f = s.failure(Some(1)).unwrap();
        assert_eq!(
            (f.trouble, f.message.as_str()),
            (Trouble::Auth, "Invalid API key · Fix external API key")
        );
    }

    #[test]
    fn codex_reconnects_count_and_its_error_line_is_kept_plain_or_json() {
        let plain = "warning: Model metadata for `gpt-5.3-codex` not found.\nERROR: Reconnecting... 1/5\nERROR: Reconnecting... 2/5\nERROR: exceeded retry limit, last status: 429 Too Many Requests, request id: r1\nERROR: exceeded retry limit, last status: 429 Too Many Requests, request id: r1\n";
        let s = feed_codex(plain);
        let f = s.failure(Some(1)).unwrap();
        assert_eq!(f.trouble, Trouble::RateLimit);
        assert!(
            f.message.starts_with("exceeded retry limit"),
            "{}",
            f.message
        );
        assert_eq!(
            s.stop(3),
            None,
            "a retry without a stated cause is codex's to end"
        );
        let json = "{\"type\":\"error\",\"message\":\"Reconnecting... 1/5 (We’re currently experiencing high demand, which may cause temporary errors.)\"}\n{\"type\":\"error\",\"message\":\"Reconnecting... 2/5 (We’re currently experiencing high demand, which may cause temporary errors.)\"}\n{\"type\":\"error\",\"message\":\"Reconnecting... 3/5 (We’re currently experiencing high demand, which may cause temporary errors.)\"}\n";
        let s = feed_codex(json);
        let f = s.stop(3).expect("three overload retries in a row");
        assert_eq!(f.trouble, Trouble::Overloaded);
        assert!(f.message.starts_with("We’re currently"), "{}", f.message);
        let mut s = feed_codex(json);
        assert_eq!(
            s.codex_event(
                &serde_json::json!({"type":"error","message":"Reconnecting... 4/5 (high demand)"})
            )
            .as_deref(),
            Some("API retry 4/5 — overloaded: high demand")
        );
        let s = feed_codex(
            "{\"type\":\"turn.failed\",\"error\":{\"message\":\"You’ve hit your usage limit. Upgrade to Pro or try again at 3:00 PM.\"}}\n",
        );
        let f = s.failure(Some(1)).unwrap();
        assert_eq!(
            (f.trouble, f.resets_at_ms),
            (Trouble::UsageLimit, Some(NOON.now_ms + 3 * 3_600_000))
        );
    }

    #[test]
    fn a_plain_run_is_judged_by_its_last_line_only_when_it_fails() {
        let mut s = Signals::new(Some(Cli::Claude), NOON);
        s.text_line("Working on it.");
        s.text_line("API Error: Request rejected (429) · rate limited");
        assert_eq!(s.failure(Some(0)), None);
        let f = s.failure(Some(1)).unwrap();
        assert_eq!(f.trouble, Trouble::RateLimit);
        // Hostile lines are cut and cleaned.
        let mut s = Signals::new(None, NOON);
        s.text_line(&format!("\x1b[31m{}", "x".repeat(5000)));
        let f = s.failure(Some(2)).unwrap();
        assert_eq!(f.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!f.message.contains('\x1b'));
    }

    #[test]
    fn the_cli_of_a_backend() {
        assert_eq!(Cli::of("claude", ""), Some(Cli::Claude));
        assert_eq!(
            Cli::of("mine", "env -u X FOO=1 /usr/local/bin/codex exec"),
            Some(Cli::Codex)
        );
        assert_eq!(Cli::of("mine", "mycli run"), None);
        assert_eq!(
            Cli::of(
                "opus",
                "env -u CLAUDE_CODE_ENTRYPOINT -u CLAUDECODE claude -p"
            ),
            Some(Cli::Claude)
        );
        for t in [
            Trouble::Auth,
            Trouble::UsageLimit,
            Trouble::RateLimit,
            Trouble::Overloaded,
            Trouble::Server,
            Trouble::Error,
        ] {
            assert_eq!(Trouble::parse(t.as_str()), Some(t));
        }
    }
}
