//! The fast subset's summary tells the truth (issue 24): a test that needs an outside tool
//! (PostgreSQL, Chromium, the Python clients, promtool, kubectl, podman, the real agent CLIs,
//! the MCP Inspector) is marked `#[ignore = "needs …"]`, so `cargo nextest run` counts it as
//! skipped instead of passing it unrun; `--run-ignored all` (what `.ci/run` runs) runs it.
//!
//! The rule is checked over the test sources: every test function that reaches one of the
//! helpers that look for such a tool (directly, or through a function of its own file) carries
//! an `ignore` attribute, and so does every test the PostgreSQL halves of the store suite's
//! macro make.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a test calls when it needs an outside tool, and the tool.
const NEEDS: &[(&str, &str)] = &[
    ("python_with(", "the Python test clients"),
    ("postgres_server(", "PostgreSQL"),
    ("DISPATCH_TEST_POSTGRES", "PostgreSQL"),
    ("Replicas::start", "PostgreSQL"),
    ("Kind::Postgres", "PostgreSQL"),
    ("promtool(", "promtool"),
    ("RealClis::installed", "the real agent CLIs"),
    ("chromium()", "Chromium"),
    ("tool(\"kubectl\")", "kubectl"),
    ("tool(\"kubernetes-validate\")", "kubernetes-validate"),
    ("podman", "podman"),
    ("mcp-inspector", "the MCP Inspector"),
];

/// A function of a source file: its attributes and its text up to the next function.
struct Function {
    attrs: String,
    body: String,
}

/// The functions of `text`, by name (a name defined twice keeps both bodies together).
fn functions(text: &str) -> BTreeMap<String, Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut starts: Vec<(usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                starts.push((i, name));
            }
        }
    }
    let mut out: BTreeMap<String, Function> = BTreeMap::new();
    for (k, (i, name)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(lines.len(), |(j, _)| *j);
        // The attributes: the `#[…]` lines right above it.
        let mut a = *i;
        while a > 0 && lines[a - 1].trim_start().starts_with("#[") {
            a -= 1;
        }
        let f = out.entry(name.clone()).or_insert(Function {
            attrs: String::new(),
            body: String::new(),
        });
        f.attrs.push_str(&lines[a..*i].join("\n"));
        f.body.push_str(&lines[*i..end].join("\n"));
    }
    out
}

/// True when `body` calls a function named `callee` (not a method or another type's function
/// of that name: `x.callee(` and `Other::callee(` do not count).
fn calls(body: &str, callee: &str) -> bool {
    let pat = format!("{callee}(");
    body.match_indices(&pat).any(|(i, _)| {
        let before = body[..i].chars().next_back();
        !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '.' || c == ':')
    })
}

/// The tests of `text` that need an outside tool without an `ignore`, with the tools.
fn unmarked(text: &str) -> Vec<(String, BTreeSet<&'static str>)> {
    let fns = functions(text);
    let mut needs: BTreeMap<&str, BTreeSet<&'static str>> = BTreeMap::new();
    for (name, f) in &fns {
        for (call, tool) in NEEDS {
            if f.body.contains(call) {
                needs.entry(name.as_str()).or_default().insert(tool);
            }
        }
    }
    // Through the file's own functions, until nothing changes (by name: names every type has,
    // like `new`, would tie everything to everything).
    const COMMON: &[&str] = &["new", "default", "start", "open", "run", "main"];
    loop {
        let mut changed = false;
        for (name, f) in &fns {
            let mut more = BTreeSet::new();
            for (callee, tools) in &needs {
                if *callee != name.as_str() && !COMMON.contains(callee) && calls(&f.body, callee) {
                    more.extend(tools.iter().copied());
                }
            }
            let have = needs.entry(name.as_str()).or_default();
            let before = have.len();
            have.extend(more);
            changed |= have.len() != before;
        }
        if !changed {
            break;
        }
    }
    fns.iter()
        .filter(|(_, f)| f.attrs.contains("test") && !f.attrs.contains("#[ignore"))
        .filter_map(|(name, _)| {
            let tools = needs.get(name.as_str())?;
            (!tools.is_empty()).then(|| (name.clone(), tools.clone()))
        })
        .collect()
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("coordinator/src/store/tests.rs")];
    for dir in [
        "tests/tests",
        "coordinator/tests",
        "agent-node/tests",
        "cli/tests",
    ] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "rs")),
            );
        }
    }
    files.sort();
    files
}

#[test]
fn every_test_that_needs_an_outside_tool_is_marked_ignored() {
    let mut wrong = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        if file.ends_with("honest_skips.rs") {
            continue;
        }
        for (name, tools) in unmarked(&text) {
            wrong.push(format!(
                "{}: `{name}` needs {} and has no #[ignore = \"needs …\"]",
                file.display(),
                tools.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        // The store suite's macro: its PostgreSQL half.
        if let Some(at) = text.find("mod on_postgres {") {
            let head: String = text[at..].chars().take(400).collect();
            if !head.contains("#[ignore") {
                wrong.push(format!(
                    "{}: the tests of `mod on_postgres` need PostgreSQL and are not marked ignored",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The check itself finds what it should: a test that reaches a tool through a helper of its
/// file, and not one that is marked.
#[test]
fn the_check_follows_helpers_and_respects_marks() {
    let text = r#"
fn browser() -> Option<PathBuf> { chromium() }

#[test]
fn a_page() {
    let Some(b) = browser() else { return };
}

#[test]
#[ignore = "needs Chromium"]
fn a_marked_page() {
    let Some(b) = browser() else { return };
}

#[test]
fn plain() {}
"#;
    let found = unmarked(text);
    assert_eq!(found.len(), 1, "{:?}", found);
    assert_eq!(found[0].0, "a_page");
    assert!(found[0].1.contains("Chromium"));
}
