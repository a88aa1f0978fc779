//! `dispatch token …` and `dispatch audit`: for admins of a shared coordinator.

use crate::args::{PolicyAction, TokenAction};
use crate::client::connect;
use crate::render;
use crate::settings::Settings;
use anyhow::{Result, bail};
use dispatch_core::text::printable_line;
use dispatch_proto::v1;

fn when(ms: i64) -> String {
    render::ago(ms)
}

pub(crate) async fn token(g: &Settings, action: TokenAction) -> Result<crate::exit::Exit> {
    let mut t = connect(g).await?;
    if t.local {
        bail!(
            "the local daemon needs no tokens (its socket serves only you); tokens are for a shared coordinator: set --coordinator"
        );
    }
    match action {
        TokenAction::Create {
            user,
            role,
            node,
            allow_nodes,
            submits_per_minute,
            max_active,
            expires,
            uses,
            task_budget,
            day_budget,
        } => {
            let role = match (&user, role) {
                (Some(_), None) => {
                    bail!("say the user's role: --role admin, member or viewer")
                }
                (_, r) => r.unwrap_or_default(),
            };
            let r = t
                .client
                .create_token(v1::CreateTokenRequest {
                    user: user.unwrap_or_default(),
                    role,
                    node: node.unwrap_or_default(),
                    nodes: allow_nodes,
                    submits_per_minute: submits_per_minute.unwrap_or(0),
                    max_active: max_active.unwrap_or(0),
                    expires_in_ms: expires.map_or(0, |d| d.as_millis().max(1) as u64),
                    uses: uses.unwrap_or(0),
                    task_budget: task_budget.unwrap_or_default(),
                    day_budget: day_budget.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let info = r.info.unwrap_or_default();
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"id": info.id, "kind": info.kind, "name": info.name, "role": info.role, "nodes": info.nodes, "expires_at_ms": (info.expires_at_ms > 0).then_some(info.expires_at_ms), "uses_max": (info.uses_max > 0).then_some(info.uses_max), "token": r.token})
                );
            } else {
                eprintln!(
                    "{} {} for {} `{}`{}{}{}. It is shown this once; the coordinator keeps only a hash of it:",
                    if info.uses_max > 0 {
                        "Registration token"
                    } else {
                        "Token"
                    },
                    info.id,
                    info.kind,
                    info.name,
                    if info.kind == "user" {
                        format!(" ({})", info.role)
                    } else {
                        String::new()
                    },
                    match expires {
                        Some(d) => format!(", valid for {}", dispatch_core::duration::format(d)),
                        None => String::new(),
                    },
                    match info.uses_max {
                        0 => String::new(),
                        n => format!(
                            ", for {n} node{} (each agent that connects with it is given a token of its own)",
                            if n == 1 { "" } else { "s" }
                        ),
                    }
                );
                println!("{}", r.token);
            }
        }
        TokenAction::List => {
            let tokens = t
                .client
                .list_tokens(v1::ListTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            if g.json {
                let v: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|i| serde_json::json!({"id": i.id, "kind": i.kind, "name": i.name, "role": i.role, "nodes": i.nodes, "submits_per_minute": i.submits_per_minute, "max_active": i.max_active, "created_at_ms": i.created_at_ms, "created_by": i.created_by, "revoked_at_ms": i.revoked_at_ms, "expires_at_ms": (i.expires_at_ms > 0).then_some(i.expires_at_ms), "last_used_at_ms": (i.last_used_at_ms > 0).then_some(i.last_used_at_ms), "uses_max": (i.uses_max > 0).then_some(i.uses_max), "uses": (i.uses_max > 0).then_some(i.uses), "task_budget": i.task_budget.as_ref().map(budget_text), "day_budget": i.day_budget.as_ref().map(budget_text)}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(crate::exit::Exit::Success);
            }
            println!(
                "{:<14} {:<5} {:<20} {:<7} {:<14} {:<12} {:<14} STATUS",
                "ID", "KIND", "NAME", "ROLE", "MADE", "BY", "LAST USED"
            );
            let now = dispatch_coordinator::now_ms();
            for i in &tokens {
                println!(
                    "{:<14} {:<5} {:<20} {:<7} {:<14} {:<12} {:<14} {}",
                    i.id,
                    i.kind,
                    printable_line(&i.name),
                    i.role,
                    when(i.created_at_ms),
                    printable_line(&i.created_by),
                    if i.last_used_at_ms > 0 {
                        when(i.last_used_at_ms)
                    } else {
                        "never".into()
                    },
                    if i.revoked_at_ms > 0 {
                        format!("revoked {}", when(i.revoked_at_ms))
                    } else if i.expires_at_ms > 0 && i.expires_at_ms <= now {
                        format!("expired {}", when(i.expires_at_ms))
                    } else if i.uses_max > 0 && i.uses >= i.uses_max {
                        format!("used up ({} of {} nodes registered)", i.uses, i.uses_max)
                    } else {
                        let mut s = String::from("valid");
                        if i.uses_max > 0 {
                            s.push_str(&format!(
                                ", registers nodes ({} of {} used)",
                                i.uses, i.uses_max
                            ));
                        }
                        if i.expires_at_ms > 0 {
                            s.push_str(&format!(
                                " for {}",
                                render::human_secs((i.expires_at_ms - now) / 1000)
                            ));
                        }
                        if !i.nodes.is_empty() {
                            s.push_str(&format!(", on {}", i.nodes.join(",")));
                        }
                        if i.submits_per_minute > 0 {
                            s.push_str(&format!(", {}/min", i.submits_per_minute));
                        }
                        if i.max_active > 0 {
                            s.push_str(&format!(", {} active", i.max_active));
                        }
                        s
                    }
                );
            }
        }
        TokenAction::Revoke { id } => {
            let id = id
                .trim_start_matches("dsp_")
                .split('_')
                .next()
                .unwrap_or("")
                .to_string();
            let i = t
                .client
                .revoke_token(v1::RevokeTokenRequest { id })
                .await?
                .into_inner();
            println!(
                "Revoked token {} ({} `{}`): it no longer works.",
                i.id,
                i.kind,
                printable_line(&i.name)
            );
        }
    }
    Ok(crate::exit::Exit::Success)
}

pub(crate) async fn audit(
    g: &Settings,
    task: Option<String>,
    limit: u32,
) -> Result<crate::exit::Exit> {
    let mut t = connect(g).await?;
    let records = t
        .client
        .list_audit(v1::ListAuditRequest {
            task_id: task.unwrap_or_default(),
            before_id: 0,
            limit,
        })
        .await?
        .into_inner()
        .records;
    if g.json {
        let v: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::json!({"id": r.id, "at_ms": r.at_ms, "who": r.who, "action": r.action, "task": r.task_id, "detail": r.detail}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(crate::exit::Exit::Success);
    }
    if records.is_empty() {
        println!("no change recorded yet");
        return Ok(crate::exit::Exit::Success);
    }
    let rows = records
        .iter()
        .map(|r| {
            vec![
                when(r.at_ms),
                printable_line(&r.who).into_owned(),
                printable_line(&r.action).into_owned(),
                r.task_id.clone(),
                printable_line(&r.detail).into_owned(),
            ]
        })
        .collect();
    println!(
        "{}",
        crate::render::table(&["WHEN", "WHO", "WHAT", "TASK", "DETAIL"], rows, &[])
    );
    Ok(crate::exit::Exit::Success)
}

/// `dispatch policy show|set|clear`.
pub(crate) async fn policy(g: &Settings, action: PolicyAction) -> Result<crate::exit::Exit> {
    let mut t = connect(g).await?;
    let p = match action {
        PolicyAction::Show => t.client.get_policy(v1::GetPolicyRequest {}).await?,
        PolicyAction::Set { file } => {
            let yaml = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read the policy file {file}: {e}"))?
            };
            // A file may hold the whole section (`policy:` at its top) or only its content.
            let yaml = match dispatch_core::policy::parse_section(&yaml) {
                Ok(p) if !p.is_empty() => p.to_yaml(),
                _ => yaml,
            };
            t.client
                .set_policy(v1::SetPolicyRequest { yaml, clear: false })
                .await?
        }
        PolicyAction::Clear => {
            t.client
                .set_policy(v1::SetPolicyRequest {
                    yaml: String::new(),
                    clear: true,
                })
                .await?
        }
    }
    .into_inner();
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "config": p.config_yaml,
                "stored": p.stored_yaml,
                "effective": p.effective_yaml,
                "updated_ms": p.updated_ms,
                "updated_by": p.updated_by,
            })
        );
        return Ok(crate::exit::Exit::Success);
    }
    if p.effective_yaml.is_empty() {
        println!(
            "no tool policy: workers run with their CLI's permission checks off (`dispatch policy set FILE` makes one)"
        );
        return Ok(crate::exit::Exit::Success);
    }
    let part = |title: &str, yaml: &str| {
        println!("# {title}");
        if yaml.is_empty() {
            println!("(none)");
        } else {
            print!("{}", dispatch_core::text::printable(yaml));
        }
    };
    part("tasks run under (both together)", &p.effective_yaml);
    println!();
    part("from the coordinator's config file", &p.config_yaml);
    println!();
    let by = if p.updated_ms > 0 {
        format!(
            "set with `dispatch policy set` by {} {}",
            printable_line(&p.updated_by),
            render::ago(p.updated_ms)
        )
    } else {
        "set with `dispatch policy set`".into()
    };
    part(&by, &p.stored_yaml);
    Ok(crate::exit::Exit::Success)
}

/// A token's budget as people write it (`$5.00`, `2M tokens`).
fn budget_text(b: &v1::Budget) -> String {
    dispatch_core::budget::Budget {
        usd_micros: b.usd_micros,
        tokens: b.tokens,
    }
    .to_string()
}
