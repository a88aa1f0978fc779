//! `dispatch keys …` and signing a task before it is submitted.

use crate::args::KeysAction;
use crate::settings::Settings;
use anyhow::{Result, anyhow, bail};
use dispatch_core::signing::{Key, TaskSpec};
use dispatch_core::{plan, prompt, task_id};
use dispatch_proto::v1;
use std::path::PathBuf;

fn path(g: &Settings) -> Result<PathBuf> {
    Ok(g.home()?.join("signing.key"))
}

/// The signing key, when the user made one.
pub(crate) fn load(g: &Settings) -> Result<Option<Key>> {
    let p = path(g)?;
    if !p.exists() {
        return Ok(None);
    }
    Key::load(&p).map(Some).map_err(|e| anyhow!(e))
}

pub(crate) fn run(g: &Settings, action: KeysAction) -> Result<crate::exit::Exit> {
    let p = path(g)?;
    match action {
        KeysAction::Init { force } => {
            if p.exists() && !force {
                bail!(
                    "{} exists already (`dispatch keys show` prints its public key); pass --force to replace it",
                    p.display()
                );
            }
            if let Some(dir) = p.parent() {
                dispatch_core::fs::private_dir(dir)?;
            }
            let key = Key::generate().map_err(|e| anyhow!(e))?;
            dispatch_core::fs::write_private(&p, key.to_file_text().as_bytes())
                .map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"public_key": key.public(), "file": p.display().to_string()})
                );
            } else {
                eprintln!(
                    "Made a signing key in {} (0600). From now on every task you dispatch is signed.\nAdd this public key to the trusted_keys of the nodes that should run your tasks\n(`trusted_keys:` in the agent's config, or `dispatch-agent --trusted-key KEY`):",
                    p.display()
                );
                println!("{}", key.public());
            }
        }
        KeysAction::Show => {
            let key = load(g)?.ok_or_else(|| {
                anyhow!(
                    "no signing key at {}; make one with `dispatch keys init`",
                    p.display()
                )
            })?;
            if g.json {
                println!("{}", serde_json::json!({"public_key": key.public()}));
            } else {
                println!("{}", key.public());
            }
        }
    }
    Ok(crate::exit::Exit::Success)
}

/// Signs `req`: fixes its id (derived from the prompt when none was given; `attempt` 2, 3, …
/// adds a suffix after a taken one), its plan and what it runs, as the coordinator will build
/// them, and attaches the spec and signature.
pub(crate) fn sign(key: &Key, req: &mut v1::SubmitRequest, attempt: Option<u32>) -> Result<()> {
    let prompt_text = req.prompt.trim_end().to_string();
    if let Some(n) = attempt {
        let base = task_id::derive(&prompt_text);
        req.id = if n <= 1 {
            base
        } else {
            task_id::with_suffix(&base, n)
        };
    }
    // The plan is fixed here, so the coordinator takes it as it is.
    let (plan_md, _) = plan::for_new_task(
        &req.id,
        &prompt_text,
        &req.steps,
        &req.plan_markdown,
        &req.title,
    )
    .map_err(|e| anyhow!(e))?;
    req.plan_markdown = plan_md.clone();
    req.steps.clear();
    let repo = req.repo.clone().unwrap_or_default();
    let repo_url = if repo.url.is_empty() {
        String::new()
    } else {
        dispatch_core::repo_url::parse(&repo.url)
            .map_err(|e| anyhow!(e))?
            .redacted
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut spec = TaskSpec {
        alias_prompt: req.alias_prompt.clone(),
        backend: req.backend.clone(),
        model: req.model.clone(),
        workdir: req.workdir.clone(),
        worktree: req.worktree || prompt::wants_worktree(&req.prompt),
        repo_url,
        commit: repo.commit,
        remote: req.remote.clone(),
        ..TaskSpec::new(&req.id, &prompt_text, &plan_md, now)
    };
    let (bytes, sig) = key.sign(&mut spec);
    req.signed_spec = bytes;
    req.signature = sig;
    Ok(())
}
