//! The fuzz targets' code (`dispatch_core::fuzzing`, also run by `fuzz/` with cargo-fuzz), run
//! in CI as property tests, plus the config writer's round trip on arbitrary settings.
//! `DISPATCH_PROPTEST_CASES` sets the number of cases (default 256).

use dispatch_core::config::{AliasConfig, BackendConfig, Config, ModelConfig};
use dispatch_core::{config_edit, fuzzing};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("DISPATCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Names as people write them, and strings that are not.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9._-]{0,12}",
        1 => "[^\\x00-\\x1f\\x7f]{1,16}",
        1 => prop::sample::select(vec![
            "true", "no", "null", "~", "1.5", "0x10", "- a", "a: b", "#c", "'q'", "\"d\"", "[x]", "{y}", "&a", "*b", "!t", "%p", "@at", "`b`", "a #b", " lead", "trail ", "x:", "?k", "|", ">",
        ]).prop_map(str::to_string),
    ]
    .prop_filter("not empty", |s| !s.trim().is_empty() && s.trim() == s)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-zA-Z0-9 ._/:-]{1,40}",
        1 => "[^\\x00]{1,40}",
        1 => name(),
    ]
    .prop_filter("not empty", |s| !s.trim().is_empty())
}

prop_compose! {
    fn config()(
        default in prop::option::of(name()),
        backends in prop::collection::vec((name(), value()), 0..4),
        models in prop::collection::vec((name(), name()), 0..5),
        aliases in prop::collection::vec((name(), name(), prop::option::of(value())), 0..3),
        coordinator in prop::option::of(value()),
        token in prop::option::of(value()),
        tls in prop::option::of(value()),
        remote in prop::option::of(name()),
        confirm in prop::option::of(any::<bool>()),
        command in prop::option::of(value()),
    ) -> Config {
        let dedup = |v: Vec<(String, String)>| {
            let mut seen = std::collections::BTreeSet::new();
            v.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect::<Vec<_>>()
        };
        let mut c = Config {
            default,
            coordinator,
            token,
            tls,
            remote,
            confirm_default: confirm,
            ..Default::default()
        };
        c.backends = dedup(backends)
            .into_iter()
            .map(|(n, cmd)| (n, BackendConfig { command: cmd.trim().to_string() }))
            .collect();
        c.models = dedup(models)
            .into_iter()
            .map(|(n, b)| (n, ModelConfig { backend: b }))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        c.aliases = aliases
            .into_iter()
            .filter(|(n, _, _)| seen.insert(n.clone()))
            .map(|(n, m, p)| (n, AliasConfig { model: m, prompt: p.map(|p| format!("{}\n", p.trim())) }))
            .collect();
        c.notify.command = command;
        c
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn plan_bytes(b in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::plan(&b);
    }

    #[test]
    fn plan_like_text(s in "(#[^\\n]{0,20}\\n)?(( {0,4}[-*+] \\[[ xX?!]\\] [^\\n]{0,30}\\n)|([^\\n]{0,20}\\n)){0,12}") {
        fuzzing::plan(s.as_bytes());
    }

    #[test]
    fn config_bytes(b in prop::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::config(&b);
    }

    #[test]
    fn config_like_text(s in "((default|coordinator|token|remote|tls|notify|backends|models|aliases|agents|confirm_default):( [^\\n]{0,20})?\\n(  [a-z]{1,6}:( [^\\n]{0,20})?\\n){0,3}){0,6}") {
        fuzzing::config(s.as_bytes());
    }

    #[test]
    fn a_written_config_reads_back_the_same(c in config()) {
        let text = config_edit::render(&c);
        let back = Config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back.default, &c.default, "{}", text);
        // A folded block keeps the command's final newline; commands are used trimmed.
        let trimmed = |b: &[(String, BackendConfig)]| {
            b.iter().map(|(n, x)| (n.clone(), x.command.trim().to_string())).collect::<Vec<_>>()
        };
        prop_assert_eq!(trimmed(&back.backends), trimmed(&c.backends), "{}", text);
        // Models are written grouped by provider.
        let sorted = |m: &[(String, ModelConfig)]| {
            let mut v = m.to_vec();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        prop_assert_eq!(sorted(&back.models), sorted(&c.models), "{}", text);
        prop_assert_eq!(&back.aliases, &c.aliases, "{}", text);
        prop_assert_eq!(&back.coordinator, &c.coordinator, "{}", text);
        prop_assert_eq!(&back.token, &c.token, "{}", text);
        prop_assert_eq!(&back.tls, &c.tls, "{}", text);
        prop_assert_eq!(&back.remote, &c.remote, "{}", text);
        prop_assert_eq!(back.confirm_default, c.confirm_default);
        prop_assert_eq!(&back.notify, &c.notify, "{}", text);
    }

    #[test]
    fn worker_stream_bytes(b in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::worker_stream(&b);
    }

    #[test]
    fn worker_stream_like_text(s in "(\\{\"type\":\"(assistant|user|result|system|item\\.completed|turn\\.completed|error)\"(,\"[a-z_]{1,12}\":(\\{[^\n]{0,30}\\}|\"[^\n]{0,12}\"|[0-9]{1,6}|true|null))*\\}\n|[^\n]{0,30}\n){0,10}") {
        fuzzing::worker_stream(s.as_bytes());
    }

    #[test]
    fn repo_url_like_text(s in "((https?|ssh|git|file|HTTPS)://)?([a-z]{0,3}(:[a-z]{0,3})?@)?(\\[[0-9a-f:.%]{0,20}(%25[a-z0-9]{1,4})?\\]|[0-9a-zA-Z.x]{0,16})(:[0-9a-z]{0,6})?(/[^ ]{0,12})?") {
        fuzzing::repo_url(s.as_bytes());
    }

    #[test]
    fn repo_url_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::repo_url(&b);
    }

    #[test]
    fn policy_like_text(s in "((Bash|Edit|Read|WebFetch|mcp__[a-z]{1,3})(\\([^)|\n]{0,16}\\))?\\|?){0,6}\n[a-z $`'\"();&|<>*/.=\\\\\n#~-]{0,60}") {
        fuzzing::policy(s.as_bytes());
    }

    #[test]
    fn policy_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::policy(&b);
    }

    #[test]
    fn budget_like_text(s in "(\\$|usd ?)?[0-9]{0,14}(\\.[0-9]{0,8})? ?(k|m|M|g|usd|\\$|tokens?)?(, ?[0-9.]{0,8}[kM]?)?\n[a-z:$ 0-9\n{}]{0,40}") {
        fuzzing::budget(s.as_bytes());
    }

    #[test]
    fn budget_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::budget(&b);
    }

    #[test]
    fn signed_spec_bytes(b in prop::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::signed_spec(&b);
    }
}
