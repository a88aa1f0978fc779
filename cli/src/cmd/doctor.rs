//! `dispatch doctor`: checks what dispatch needs, in the order it needs it, and says what to
//! fix — the config, the coordinator (reached, its version, TLS, the token), and the nodes with
//! their backends (or, in local mode, the agent CLIs on this machine).

use crate::exit::Exit;
use crate::settings::Settings;
use anyhow::Result;
use dispatch_proto::v1;

struct Report {
    problems: usize,
    warnings: usize,
    json: Vec<serde_json::Value>,
    print: bool,
}

impl Report {
    fn line(&mut self, mark: &str, what: &str, detail: &str, fix: Option<&str>) {
        match mark {
            "fail" => self.problems += 1,
            "warn" => self.warnings += 1,
            _ => {}
        }
        if self.print {
            let sign = match mark {
                "ok" => "✓",
                "warn" => "!",
                _ => "✗",
            };
            let detail = dispatch_core::text::printable(detail).replace('\n', "\n    ");
            println!("{sign} {what}: {detail}");
            if let Some(f) = fix {
                println!("    fix: {f}");
            }
        }
        self.json.push(serde_json::json!({
            "check": what, "result": mark, "detail": detail, "fix": fix,
        }));
    }
}

/// Runs every check; exit 0 when nothing failed (warnings allowed), else 1.
pub(crate) async fn doctor(g: &Settings) -> Result<crate::exit::Exit> {
    let mut r = Report {
        problems: 0,
        warnings: 0,
        json: Vec::new(),
        print: !g.json,
    };
    // The config.
    match g.config_path() {
        Ok(path) => match dispatch_core::config::Config::load(&path) {
            Ok(Some(c)) => {
                r.line(
                    "ok",
                    "config",
                    &format!(
                        "{} ({} backends, {} models, {} aliases)",
                        path.display(),
                        c.backends.len(),
                        c.models.len(),
                        c.aliases.len()
                    ),
                    None,
                );
                for w in &c.warnings {
                    r.line(
                        "warn",
                        "config",
                        w,
                        Some("edit the file (`dispatch config show`)"),
                    );
                }
            }
            Ok(None) => r.line(
                "warn",
                "config",
                &format!("{} does not exist yet", path.display()),
                Some("the first `dispatch \"<prompt>\"` writes one from the CLIs it finds"),
            ),
            Err(e) => r.line(
                "fail",
                "config",
                &format!("{}: {e}", path.display()),
                Some("fix the file, or move it aside to start over"),
            ),
        },
        Err(e) => r.line(
            "fail",
            "config",
            &format!("{e:#}"),
            Some("set DISPATCH_HOME or HOME"),
        ),
    }

    // The coordinator.
    match &g.coordinator {
        None => {
            r.line(
                "ok",
                "coordinator",
                "none configured: the local daemon runs tasks on this machine",
                None,
            );
            let found = dispatch_agent::backends::detect(String::new());
            let clis: Vec<String> = found
                .iter()
                .filter(|b| b.name != "sim" && b.error.is_empty())
                .map(backend_cell)
                .collect();
            for b in found.iter().filter(|b| !b.error.is_empty()) {
                r.line(
                    "fail",
                    &format!("backend {}", b.name),
                    &format!("{} cannot run here: {}", backend_cell(b), b.error),
                    Some("do what the message says; the other backends still run"),
                );
            }
            if clis.is_empty() {
                r.line(
                    "warn",
                    "backends",
                    "no agent CLI on PATH (claude, agent, codex); only the `sim` backend can run",
                    Some("install Claude Code, Cursor's agent or Codex, or configure a backend in the config"),
                );
            } else {
                r.line(
                    "ok",
                    "backends",
                    &format!("on PATH: {}", clis.join(", ")),
                    None,
                );
            }
        }
        Some(list) => {
            if list.split(',').any(|u| u.trim().starts_with("http://"))
                && list
                    .split(',')
                    .any(|u| !u.contains("127.0.0.1") && !u.contains("localhost"))
            {
                r.line(
                    "warn",
                    "tls",
                    &format!("{list} is plain HTTP: tokens and prompts cross the network readable"),
                    Some("serve TLS (`dispatch-coordinator --tls-cert … --tls-key …`) and use https://"),
                );
            }
            match crate::client::connect(g).await {
                Err(e) => r.line(
                    "fail",
                    "coordinator",
                    &format!("{e:#}"),
                    Some("check the URL, that dispatch-coordinator runs there, and --ca for https://"),
                ),
                Ok(mut t) => {
                    if t.url.starts_with("https://") {
                        r.line("ok", "tls", &format!("{} verified", t.url), None);
                    }
                    match t.client.info(v1::InfoRequest {}).await {
                        Ok(info) => {
                            let info = info.into_inner();
                            let ours = env!("CARGO_PKG_VERSION");
                            let (mark, fix) = if minor(&info.version) == minor(ours) {
                                ("ok", None)
                            } else {
                                ("warn", Some("use the same minor version of dispatch and dispatch-coordinator"))
                            };
                            r.line(
                                mark,
                                "coordinator",
                                &format!(
                                    "{} answers: version {} (this CLI {ours}), {} active tasks, {} nodes connected",
                                    t.url, info.version, info.active_tasks, info.connected_nodes
                                ),
                                fix,
                            );
                        }
                        Err(s) if s.code() == tonic::Code::Unauthenticated => r.line(
                            "fail",
                            "token",
                            s.message(),
                            Some("set DISPATCH_TOKEN (or --token-file, or `token:` in the config); an admin makes one with `dispatch token create --user NAME`"),
                        ),
                        Err(s) => r.line("fail", "coordinator", s.message(), None),
                    }
                    match t.client.list_nodes(v1::ListNodesRequest {}).await {
                        Ok(n) => nodes(&mut r, &n.into_inner().nodes),
                        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
                        Err(s) => r.line("fail", "nodes", s.message(), None),
                    }
                }
            }
        }
    }
    if g.json {
        println!(
            "{}",
            serde_json::json!({"problems": r.problems, "warnings": r.warnings, "checks": r.json})
        );
    } else if r.problems == 0 {
        println!(
            "\nAll good{}.",
            if r.warnings > 0 {
                format!(" ({} warning(s) above)", r.warnings)
            } else {
                String::new()
            }
        );
    } else {
        println!("\n{} problem(s) to fix above.", r.problems);
    }
    Ok(if r.problems == 0 {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn nodes(r: &mut Report, nodes: &[v1::Node]) {
    let connected: Vec<&v1::Node> = nodes.iter().filter(|n| n.connected).collect();
    if connected.is_empty() {
        r.line(
            "fail",
            "nodes",
            "no agent node is connected: tasks would wait in the queue",
            Some("start `dispatch-agent --coordinator URL --token-file FILE` on a machine with an agent CLI"),
        );
        return;
    }
    for n in connected {
        let backends: Vec<String> = n
            .backends
            .iter()
            .filter(|b| b.error.is_empty())
            .map(|b| {
                if b.version.is_empty() {
                    b.name.clone()
                } else {
                    format!("{} {}", b.name, b.version)
                }
            })
            .collect();
        for b in n.backends.iter().filter(|b| !b.error.is_empty()) {
            r.line(
                "fail",
                &format!("node {}", n.name),
                &format!("backend `{}` cannot run there: {}", b.name, b.error),
                Some("fix it on that node and restart its agent; its other backends still run"),
            );
        }
        let real = backends.iter().any(|b| b != "sim");
        r.line(
            if real { "ok" } else { "warn" },
            &format!("node {}", n.name),
            &format!(
                "{}/{} slots busy{}, backends: {}",
                n.running,
                n.capacity,
                match dispatch_proto::convert::node_state(n) {
                    "connected" => String::new(),
                    s => format!(", {s}"),
                },
                backends.join(", ")
            ),
            (!real).then_some("install an agent CLI (claude, agent, codex) on it, or configure one in its --config"),
        );
    }
}

/// `claude 2.1.332`: a backend found on this machine and the version its CLI reported.
fn backend_cell(b: &dispatch_agent::backends::BackendSpec) -> String {
    if b.version.is_empty() {
        b.name.clone()
    } else {
        format!("{} {}", b.name, b.version)
    }
}

/// `major.minor` of a version.
fn minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}
