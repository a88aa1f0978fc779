//! Entry points for fuzzing (`fuzz/`, with cargo-fuzz) and for the property tests that run
//! the same code in CI: each takes arbitrary bytes, must never panic, and checks what must
//! hold whatever the input.

use crate::plan::{ItemStatus, Plan};

/// A plan.md as a worker may write it: parsed, rewritten, rendered and parsed again.
pub fn plan(data: &[u8]) {
    let mut p = Plan::parse_bytes(data);
    let text = String::from_utf8_lossy(data);
    // Rendering an untouched plan gives back its text.
    if std::str::from_utf8(data).is_ok() {
        assert_eq!(Plan::parse(&text).render(), text);
    }
    let n = p.items().len();
    for i in 0..n {
        p.set_status(i, ItemStatus::Done);
        p.set_note(i, "a note\nover two lines");
    }
    let again = Plan::parse(&p.render());
    assert_eq!(again.items().len(), n, "a rewrite keeps every item");
    assert!(again.items().iter().all(|i| i.status == ItemStatus::Done));
    let _ = crate::plan::list_in_text(&text);
    let _ = crate::plan::item_texts(&text);
}

/// A config file: the user's, an agent's, the notify section. A user config that parses must
/// survive being written back.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = crate::config::Config::parse(text) {
        let written = crate::config_edit::render(&c);
        let back = crate::config::Config::parse(&written)
            .unwrap_or_else(|e| panic!("a rewritten config does not parse: {e}\n{written}"));
        assert_eq!(back.token, c.token);
        assert_eq!(back.tls, c.tls);
        assert_eq!(back.notify, c.notify);
    }
    let _ = crate::agent_config::AgentFile::parse(text);
    let _ = crate::notify::parse(text);
}

/// A signed task spec and signature as a node receives them.
pub fn signed_spec(data: &[u8]) {
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % 80)
        .min(data.len());
    let (sig, spec) = data.split_at(cut);
    assert!(crate::signing::verify(spec, sig, &[]).is_err() || sig.len() == 64);
}

/// A worker's output, structured in both formats and plain from each CLI: any bytes, split
/// anywhere, read the same; every activity line is bounded and free of control characters,
/// and so is the error the CLI's signals keep.
pub fn worker_stream(data: &[u8]) {
    use crate::signals::{Cli, Clock, MAX_MESSAGE_CHARS};
    use crate::stream::{MAX_ACTIVITY_LINE_CHARS, StreamFormat, StreamParser};
    let split = data.first().map_or(1, |b| usize::from(*b % 17) + 1);
    let clock = Clock {
        now_ms: 1_796_299_200_000,
        utc_offset_s: 3600,
    };
    for (format, cli) in [
        (Some(StreamFormat::ClaudeStreamJson), Some(Cli::Claude)),
        (Some(StreamFormat::CodexJson), Some(Cli::Codex)),
        (None, Some(Cli::Claude)),
        (None, Some(Cli::Codex)),
        (None, None),
    ] {
        let mut whole = StreamParser::reading(format, cli, clock);
        let mut lines = whole.feed(data);
        lines.extend(whole.finish());
        let mut parts = StreamParser::reading(format, cli, clock);
        let mut split_lines = Vec::new();
        for chunk in data.chunks(split) {
            split_lines.extend(parts.feed(chunk));
        }
        split_lines.extend(parts.finish());
        assert_eq!(lines, split_lines, "a split stream reads the same");
        assert_eq!(whole.usage(), parts.usage());
        for l in &lines {
            assert!(l.chars().count() <= MAX_ACTIVITY_LINE_CHARS);
            assert!(!l.chars().any(char::is_control), "{l:?}");
        }
        for exit in [Some(1), Some(0), None] {
            let f = whole.signals().failure(exit);
            assert_eq!(f, parts.signals().failure(exit));
            if let Some(f) = f {
                assert!(f.message.chars().count() <= MAX_MESSAGE_CHARS);
                assert!(!f.message.chars().any(char::is_control), "{f:?}");
            }
        }
        assert_eq!(whole.signals().stop(3), parts.signals().stop(3));
    }
}

/// A repository URL as a task names it (a member, or a peer, chose every byte): taking it
/// apart, redacting it and routing it never panic (nor recurse), a redacted URL carries no
/// password, and a route never reaches the node itself or its private network under the
/// default policy.
pub fn repo_url(data: &[u8]) {
    use crate::egress::{Reach, reach};
    use crate::repo_url::{Network, RepoPolicy, parse, redact};
    use std::net::IpAddr;
    struct Loopy;
    impl Network for Loopy {
        fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
            // Names resolve to the node, its network or the world, by their length.
            Ok(vec![match host.len() % 3 {
                0 => IpAddr::from([127, 0, 0, 1]),
                1 => IpAddr::from([10, 0, 0, 1]),
                _ => IpAddr::from([140, 82, 112, 3]),
            }])
        }
        fn own_addresses(&self) -> Vec<IpAddr> {
            vec![IpAddr::from([203, 0, 114, 7])]
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = redact(text);
    if let Ok(u) = parse(text) {
        assert_eq!(u.redacted, shown);
    }
    let open = RepoPolicy {
        schemes: ["https", "http", "ssh", "git", "file"]
            .map(String::from)
            .to_vec(),
        hosts: Vec::new(),
    };
    if let Ok(e) = open.route(text, &Loopy)
        && let Some(r) = e.route
    {
        assert_eq!(
            reach(r.addr, &Loopy.own_addresses()),
            Reach::Public,
            "`{text}` routed to {}",
            r.addr
        );
    }
}

/// A tool call as a worker's CLI reports it, judged by a policy whose rules are the first line
/// (`|`-separated: allow, ask and deny rules each take a third), the rest being the command.
/// Whatever the input: no panic; a line allowed by command rules is all plain parts; a plain
/// line a person allowed "always" is allowed again, even where every Bash call asks.
pub fn policy(data: &[u8]) {
    use crate::policy::{Decision, Policy, PolicySpec, ToolCall, exact_rules};
    let text = String::from_utf8_lossy(data);
    let (rules, command) = text.split_once('\n').unwrap_or((&text, ""));
    let rules: Vec<String> = rules.split('|').map(str::to_string).collect();
    for r in &rules {
        let _ = crate::policy::Rule::parse(r);
    }
    let third = rules.len().div_ceil(3);
    let spec = PolicySpec {
        allow: rules.iter().take(third).cloned().collect(),
        ask: rules.iter().skip(third).take(third).cloned().collect(),
        deny: rules.iter().skip(2 * third).cloned().collect(),
        default: None,
    };
    let input = serde_json::json!({ "command": command, "file_path": command, "url": command });
    let cwd = std::path::Path::new("/w");
    for tool in ["Bash", "Edit", "Read", "WebFetch", "mcp__x__y"] {
        let call = ToolCall {
            tool,
            input: &input,
            cwd,
        };
        if let Ok(p) = Policy::parse(&spec) {
            let _ = p.decide(&call).explain();
        }
        let granted = exact_rules(tool, &input);
        let asks = Policy::parse(&PolicySpec {
            ask: vec![tool.to_string()],
            ..Default::default()
        })
        .unwrap();
        if !granted.is_empty() {
            assert_eq!(
                asks.decide_with(&call, &granted).decision,
                Decision::Allow,
                "{tool} {command:?} granted {granted:?}"
            );
        }
    }
}

/// A budget as a person writes it (the first line), and a `budgets:` section around it: no
/// panic; a budget that reads prints as it reads and limits something; raising it never
/// lowers it; a spend of any size is priced without overflow.
pub fn budget(data: &[u8]) {
    use crate::budget::{Budget, Prices, Spend, parse_section};
    let text = String::from_utf8_lossy(data);
    let (line, rest) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(b) = Budget::parse(line) {
        assert!(!b.is_none(), "{line:?} read as no budget");
        assert_eq!(Budget::parse(&b.to_string()), Ok(b), "{line:?} → {b}");
        let spend = Spend {
            usd_micros: b.usd_micros.wrapping_mul(3),
            tokens: b.tokens.wrapping_mul(3),
            estimated: false,
        };
        let up = b.raised(&b, &spend);
        assert!(
            up.usd_micros >= b.usd_micros && up.tokens >= b.tokens,
            "{b} → {up}"
        );
        assert!(!up.reached_by(&Spend::default()), "{up}");
        let _ = b.against(&spend);
    }
    let _ = parse_section(&format!("budgets:\n  task: {line}\n{rest}"));
    let n = |i: usize| {
        data.get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let u = crate::stream::Usage {
        input_tokens: n(0),
        output_tokens: n(8),
        cache_read_tokens: n(16),
        cache_write_tokens: n(24),
        cost_usd: data
            .first()
            .filter(|b| **b > 128)
            .map(|_| n(32) as f64 / 7.0),
        model: line.chars().take(40).collect(),
        ..Default::default()
    };
    let _ = Prices::default().spend(&u, "").describe();
}
