//! `dispatch demo`: three sim tasks on the local daemon, shown live.

use crate::client::connect;
use crate::cmd::run::dispatched_line;
use crate::cmd::watch::follow;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow};
use dispatch_proto::v1;

pub(super) async fn demo(g: &Settings) -> Result<crate::exit::Exit> {
    let mut target = connect(g).await?;
    let workdir = if target.local {
        let dir = g.home()?.join("demo");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        dir.display().to_string()
    } else {
        String::new()
    };
    let steps = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let plans = [
        (
            "Demo: security review",
            steps(&[
                "Scan for hardcoded secrets (sleep 700ms)",
                "Review auth logic (sleep 900ms)",
                "Check dependencies (sleep 600ms)",
            ]),
        ),
        (
            "Demo: update the README",
            steps(&[
                "Outline the new sections (sleep 800ms)",
                "Draft the quick start (sleep 1s)",
            ]),
        ),
        (
            "Demo: add tests after the README",
            steps(&[
                "Write tests for the examples (sleep 600ms)",
                "Run them (sleep 500ms)",
            ]),
        ),
    ];
    let mut ids: Vec<String> = Vec::new();
    println!(
        "Dispatching {} sim tasks to {}…",
        plans.len(),
        if target.local {
            "the local daemon".to_string()
        } else {
            target.url.clone()
        }
    );
    for (i, (prompt, steps)) in plans.into_iter().enumerate() {
        let req = v1::SubmitRequest {
            prompt: prompt.to_string(),
            steps,
            backend: dispatch_core::backend::SIM.into(),
            workdir: workdir.clone(),
            after: if i == 2 {
                ids[1].clone()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let task = target
            .client
            .submit(req)
            .await?
            .into_inner()
            .task
            .ok_or_else(|| anyhow!("the coordinator returned no task"))?;
        println!("{}", dispatched_line(&task));
        ids.push(task.id);
    }
    println!();
    let code = follow(g, &mut target, &ids, g.json).await?;
    if !g.json {
        println!();
        if code == crate::exit::Exit::Success {
            println!("All {} demo tasks completed.", ids.len());
        }
        if !workdir.is_empty() {
            println!("Their plans and output.md files are under {workdir}/.dispatch/tasks/");
        }
        println!(
            "Try `dispatch status`, `dispatch logs {}` or `dispatch nodes`.",
            ids[0]
        );
    }
    Ok(code)
}
