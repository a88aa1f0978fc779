//! `dispatch nodes` (and `nodes drain|uncordon`).

use crate::client::connect;
use crate::render;
use crate::settings::Settings;
use anyhow::Result;
use dispatch_core::limits;
use dispatch_proto::v1;

pub(super) async fn cordon(
    g: &Settings,
    name: &str,
    draining: bool,
    timeout: Option<std::time::Duration>,
) -> Result<crate::exit::Exit> {
    limits::check_name("node name", name)?;
    let mut t = connect(g).await?;
    let n = t
        .client
        .set_node_draining(v1::SetNodeDrainingRequest {
            name: name.to_string(),
            draining,
            stop_after_ms: timeout.map_or(0, |t| t.as_millis().max(1) as u64),
        })
        .await?
        .into_inner();
    if g.json {
        println!("{}", render::node_json(&n));
    } else if let (true, Some(t)) = (draining, timeout) {
        println!(
            "Node `{}` is draining: no new task goes there; {} {} to finish, then the rest are stopped (lost, retryable). `dispatch nodes uncordon {}` undoes it.",
            n.name,
            match n.running {
                1 => "its 1 running task gets".to_string(),
                r => format!("its {r} running tasks get"),
            },
            dispatch_core::duration::format(t),
            n.name
        );
    } else if draining {
        println!(
            "Node `{}` is cordoned: no new task goes there; {}. `dispatch nodes uncordon {}` undoes it.",
            n.name,
            match n.running {
                0 => "nothing runs there now".to_string(),
                1 => "its 1 running task goes on".to_string(),
                r => format!("its {r} running tasks go on"),
            },
            n.name
        );
    } else {
        println!("Node `{}` takes tasks again.", n.name);
    }
    Ok(crate::exit::Exit::Success)
}

pub(super) async fn forget(g: &Settings, name: &str) -> Result<crate::exit::Exit> {
    limits::check_name("node name", name)?;
    let mut t = connect(g).await?;
    t.client
        .forget_node(v1::ForgetNodeRequest {
            name: name.to_string(),
        })
        .await?;
    if g.json {
        println!("{}", serde_json::json!({"forgotten": name}));
    } else {
        println!("Forgot node `{name}`; if its agent connects again, it is known again.");
    }
    Ok(crate::exit::Exit::Success)
}

pub(super) async fn nodes(g: &Settings) -> Result<crate::exit::Exit> {
    let mut t = connect(g).await?;
    let nodes = t
        .client
        .list_nodes(v1::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    if g.json {
        println!(
            "{}",
            serde_json::Value::Array(nodes.iter().map(render::node_json).collect())
        );
        return Ok(crate::exit::Exit::Success);
    }
    if nodes.is_empty() {
        println!(
            "no node has connected to {} yet; start one with `dispatch-agent --coordinator {} --name NAME`",
            t.url, t.url
        );
        return Ok(crate::exit::Exit::Success);
    }
    let mut rows = Vec::new();
    for n in &nodes {
        // `claude@2.1.332(3)`: a backend, its CLI's version and how many models it lists; a
        // `!` marks one the node cannot run (said below the table).
        let backends: Vec<String> = n
            .backends
            .iter()
            .map(|b| {
                let mut cell = b.name.clone();
                if !b.version.is_empty() {
                    cell.push_str(&format!("@{}", b.version));
                }
                if !b.models.is_empty() {
                    cell.push_str(&format!("({})", b.models.len()));
                }
                if !b.error.is_empty() {
                    cell.push('!');
                }
                cell
            })
            .collect();
        let mut labels: Vec<String> = n
            .labels
            .iter()
            .map(|(k, v)| dispatch_core::text::printable_line(&format!("{k}={v}")).into_owned())
            .collect();
        labels.sort();
        rows.push(vec![
            n.name.clone(),
            dispatch_proto::convert::node_state(n).to_string(),
            format!("{}/{}", n.running, n.capacity),
            dispatch_core::text::printable_line(&backends.join(",")).into_owned(),
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            render::ago(n.last_seen_ms),
        ]);
    }
    println!(
        "{}",
        render::table(
            &[
                "NAME",
                "STATUS",
                "RUNNING",
                "BACKENDS",
                "LABELS",
                "LAST HEARD FROM"
            ],
            rows,
            &[2]
        )
    );
    for n in &nodes {
        for b in n.backends.iter().filter(|b| !b.error.is_empty()) {
            println!(
                "{}",
                dispatch_core::text::printable_line(&format!(
                    "! node `{}`: backend `{}` cannot run there: {}",
                    n.name, b.name, b.error
                ))
            );
        }
    }
    Ok(crate::exit::Exit::Success)
}
