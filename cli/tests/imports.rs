//! The CLI's modules import one another without a circle: a module can be read (and changed)
//! knowing only the modules below it. This reads cli/src the way the compiler names paths —
//! `crate::a::b`, `super::x`, `self::y`, grouped `use crate::{a, b}` and a parent's bare
//! `child::item` — builds the graph of which module uses which, and fails naming a circle.
//! Test modules (`#[cfg(test)] mod …` to the end of a file) are left out: a test of a module
//! reaching back into it is no circle of the product.
//!
//! Run alone: `cargo nextest run -p dispatch-cli --test imports`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`""` for the crate root, `cmd::mcp`) → its source, for every .rs under `src`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["main"] || parts == ["lib"] {
                parts.clear();
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The source without line comments and without its test module.
fn product_code(src: &str) -> String {
    let mut code = String::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        code.push_str(line.split("//").next().unwrap_or(""));
        code.push('\n');
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path in `code` that starts at `crate`, `super` or `self`, or at one of `children`
/// (as the segments after that start), with what it starts at.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == ':')) {
            i += 1;
            continue;
        }
        // A path: idents joined by `::`, maybe ending in a `{…}` group.
        let mut segs = vec![String::new()];
        let mut j = i;
        let mut group = None;
        while j < bytes.len() {
            let c = bytes[j];
            if is_ident(c) {
                segs.last_mut().unwrap().push(c);
                j += 1;
            } else if c == ':' && bytes.get(j + 1) == Some(&':') {
                j += 2;
                if bytes.get(j) == Some(&'{') {
                    let end = bytes[j..].iter().position(|&c| c == '}').map(|e| j + e);
                    group = end.map(|e| bytes[j + 1..e].iter().collect::<String>());
                    j = end.unwrap_or(bytes.len());
                    break;
                }
                segs.push(String::new());
            } else {
                break;
            }
        }
        let start = segs[0].as_str();
        if (segs.len() > 1 || group.is_some())
            && (matches!(start, "crate" | "super" | "self") || children.contains(start))
        {
            match &group {
                Some(items) => {
                    for item in items.split(',') {
                        let item = item.split(" as ").next().unwrap_or("").trim();
                        if item.is_empty() {
                            continue;
                        }
                        let mut p = segs.clone();
                        p.extend(item.split("::").map(|s| s.trim().to_string()));
                        found.push(p);
                    }
                }
                None => found.push(segs.clone()),
            }
        }
        i = j.max(i + 1);
    }
    found
}

/// The module a path from module `at` lands in: the longest prefix that is a module.
fn target(at: &str, path: &[String], modules: &BTreeMap<String, String>) -> Option<String> {
    let mut base: Vec<String> = if at.is_empty() {
        Vec::new()
    } else {
        at.split("::").map(str::to_string).collect()
    };
    let mut rest = path;
    match path[0].as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut best = None;
    for n in 0..=rest.len() {
        let mut m = base.clone();
        m.extend(rest[..n].iter().cloned());
        let m = m.join("::");
        if modules.contains_key(&m) {
            best = Some(m);
        }
    }
    best
}

/// Which module uses which (a module's own submodules through their paths count too).
fn graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g = BTreeMap::new();
    for (m, src) in modules {
        let depth = if m.is_empty() {
            0
        } else {
            m.split("::").count()
        };
        let prefix = if m.is_empty() {
            String::new()
        } else {
            format!("{m}::")
        };
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|k| {
                k.starts_with(&prefix) && !k.is_empty() && k.split("::").count() == depth + 1
            })
            .map(|k| k.rsplit("::").next().unwrap().to_string())
            .collect();
        let uses: BTreeSet<String> = paths(&product_code(src), &children)
            .iter()
            .filter_map(|p| target(m, p, modules))
            .filter(|t| t != m)
            .collect();
        g.insert(m.clone(), uses);
    }
    g
}

/// A circle in `g`, as the modules around it, if there is one.
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_string(), Mark::Open);
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let from = path.iter().position(|p| p == next).unwrap();
                    let mut c = path[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, g, marks, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in g.keys() {
        if !marks.contains_key(m)
            && let Some(c) = visit(m, g, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn shown(c: &[String]) -> String {
    c.iter()
        .map(|m| if m.is_empty() { "main" } else { m.as_str() })
        .collect::<Vec<_>>()
        .join(" → ")
}

#[test]
fn the_cli_modules_import_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.len() > 20, "read {} modules", modules.len());
    let g = graph(&modules);
    // The graph is the real one: the command table reaches its commands, they reach the
    // client, and the client its settings.
    assert!(g["cmd"].contains("cmd::run"), "{g:?}");
    assert!(g["cmd::run"].contains("client"), "{g:?}");
    assert!(g["client"].contains("settings"), "{g:?}");
    if let Some(c) = circle(&g) {
        panic!(
            "cli/src has an import circle: {}. Move what both sides need into a module below \
             them (as settings.rs, render.rs and exit.rs are).",
            shown(&c)
        );
    }
}

#[test]
fn a_circle_is_found_and_named() {
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // A parent calling its child, which reaches back through super:: — the shape the CLI had.
    let planted = m(&[
        ("", "mod cmd;\nfn main() { cmd::run(); }"),
        (
            "cmd",
            "mod run;\npub fn run() { run::go(); }\npub fn helper() {}",
        ),
        ("cmd::run", "pub fn go() { super::helper(); }"),
        (
            "settings",
            "// crate::cmd::run in a comment is no use\npub struct S;",
        ),
    ]);
    let c = circle(&graph(&planted)).expect("the planted circle is found");
    assert_eq!(shown(&c), "cmd::run → cmd → cmd::run");
    // Grouped imports count, and a test module does not.
    let grouped = m(&[
        ("a", "use crate::{b::f, c};"),
        (
            "b",
            "pub fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::a;\n}",
        ),
        ("c", "use super::a as x;"),
    ]);
    let g = graph(&grouped);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string(), "c".to_string()]));
    assert!(g["b"].is_empty(), "{g:?}");
    assert_eq!(circle(&g).map(|c| shown(&c)).as_deref(), Some("a → c → a"));
}
