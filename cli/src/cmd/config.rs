//! The user's config: loading (with warnings), first-run setup, `dispatch config …`, and the
//! seed's model resolution at submit time.

use crate::args::ConfigAction;
use crate::client::Target;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::backend::{self, CLAUDE_MODELS, CODEX_MODELS, is_claude_model, is_openai_model};
use dispatch_core::config::{AliasConfig, Config, ModelConfig};
use dispatch_core::config_edit;
use dispatch_core::resolve::{Choice, Resolution, resolve};
use dispatch_proto::v1;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// The config's `fallback:` as a submit carries it: each `to` entry resolved to a backend and
/// model (a model or alias of the config: its backend and model; a backend: its default model).
pub(crate) fn fallback_targets(cfg: &Config) -> Result<(Vec<v1::FallbackTarget>, Vec<String>)> {
    let Some(f) = &cfg.fallback else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut to = Vec::new();
    for entry in &f.to {
        let model = cfg
            .alias(entry)
            .map(|a| a.model.as_str())
            .unwrap_or(entry.as_str());
        let target = if let Some(m) = cfg.model(model) {
            v1::FallbackTarget {
                backend: m.backend.clone(),
                model: model.to_string(),
            }
        } else if cfg.backend(entry).is_some()
            || dispatch_core::backend::BUILTIN
                .iter()
                .any(|b| b.name == entry)
            || entry == dispatch_core::backend::SIM
        {
            v1::FallbackTarget {
                backend: entry.clone(),
                model: String::new(),
            }
        } else {
            bail!(
                "fallback.to in your config names `{entry}`, which is neither a model, an alias nor a backend there; add it under models: or backends:, or remove it (--no-fallback skips the fallback for one task)"
            );
        };
        to.push(target);
    }
    Ok((to, f.on.clone()))
}

/// Writes `text` to the config file atomically.
fn write(p: &Path, text: &str) -> Result<()> {
    if let Some(dir) = p.parent() {
        dispatch_core::fs::private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A config may hold a token: new ones are 0600, edits keep the mode the file has.
    dispatch_core::fs::write_keep_mode(p, text.as_bytes())
        .with_context(|| format!("cannot write {}", p.display()))
}

/// What the machines can run: backend names with the command that runs each (as built from the
/// installed CLI's version), and the models each lists.
struct Discovered {
    backends: Vec<(String, String)>,
    models: Vec<(String, String)>,
}

async fn discover(target: Option<&mut Target>) -> Discovered {
    let mut backends: Vec<(String, String)> = Vec::new();
    let mut cursor_models: Vec<String> = Vec::new();
    for b in backend::BUILTIN {
        if dispatch_agent::backends::on_path(b.program).is_some() {
            // The command this version accepts, as a node here would run it.
            let drive = dispatch_core::drive::drive(b.name, &dispatch_agent::backends::probe(&b));
            backends.push((b.name.to_string(), drive.command));
            if b.name == "cursor" {
                cursor_models.extend(dispatch_agent::backends::discover_models("cursor"));
            }
        }
    }
    // Discovery also runs on the nodes, where the CLIs are.
    if let Some(t) = target
        && let Ok(r) = t.client.list_nodes(v1::ListNodesRequest {}).await
    {
        for n in r.into_inner().nodes.iter().filter(|n| n.connected) {
            for b in &n.backends {
                if b.name == backend::SIM {
                    continue;
                }
                if !backends.iter().any(|(n, _)| *n == b.name) {
                    backends.push((b.name.clone(), b.command.clone()));
                }
                if b.name == "cursor" {
                    cursor_models.extend(b.models.iter().cloned());
                }
            }
        }
    }
    let has = |b: &str| backends.iter().any(|(x, _)| x == b);
    let mut models: Vec<(String, String)> = Vec::new();
    let mut add = |id: &str, b: &str| {
        if !models.iter().any(|(m, _)| m == id) {
            models.push((id.to_string(), b.to_string()));
        }
    };
    // The seed's preference: Claude models → claude, OpenAI models → codex, others → cursor.
    if has("claude") {
        for m in CLAUDE_MODELS {
            add(m, "claude");
        }
    }
    for m in &cursor_models {
        if m == "auto" {
            continue;
        }
        let b = if is_claude_model(m) && has("claude") {
            "claude"
        } else if is_openai_model(m) && has("codex") {
            "codex"
        } else {
            "cursor"
        };
        add(m, b);
    }
    if has("codex") {
        for m in CODEX_MODELS {
            add(m, "codex");
        }
    }
    // A backend a node configures itself (a custom CLI) has no model list: it is offered as a
    // model of its own name, so a team whose nodes run only custom backends gets a config too.
    for (name, _) in &backends {
        let builtin = backend::BUILTIN.iter().any(|b| b.name == name);
        if !builtin {
            add(name, name);
        }
    }
    // Claude first, then OpenAI, then the rest: the first listed is the suggested default.
    models.sort_by_key(|(m, _)| {
        if is_claude_model(m) {
            0
        } else if is_openai_model(m) {
            1
        } else {
            2
        }
    });
    Discovered { backends, models }
}

/// What to do when no CLI was found anywhere: install one, or name a backend a node runs.
/// Names the config file by its real path (DISPATCH_HOME or --home).
fn install_hint(config: &Path) -> String {
    format!(
        "No agent CLI found (looked for `agent`, `claude` and `codex` on PATH and on the connected nodes). \
Install one — Cursor CLI (`agent`), Claude Code (`claude`) or Codex CLI (`codex`) — on a node, or name the backend a node runs: \
`dispatch --backend NAME \"<prompt>\"` (`dispatch nodes` lists each node's backends; `sim`, a simulated worker, \
runs on every node), or make it your default with `dispatch config add-model MODEL --backend NAME`. Nothing was written to {}.",
        config.display(),
    )
}

/// "1 model", "12 models".
fn models_count(n: usize) -> String {
    format!("{n} model{}", if n == 1 { "" } else { "s" })
}

fn ask(question: &str) -> Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// First-run setup: detects the CLIs and models, asks for the default on a terminal (the first
/// listed otherwise) and writes the config. Returns None (writing nothing) when no CLI exists.
pub(crate) async fn init(
    g: &Settings,
    target: Option<&mut Target>,
    quiet: bool,
) -> Result<Option<Config>> {
    let p = g.config_path()?;
    let d = discover(target).await;
    if d.models.is_empty() {
        eprintln!("{}", install_hint(&p));
        return Ok(None);
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut default = d.models[0].0.clone();
    if interactive {
        println!(
            "Found {} with {}. Which model should be your default?",
            d.backends
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            models_count(d.models.len())
        );
        let notable: Vec<&(String, String)> = d.models.iter().take(5).collect();
        for (i, (m, b)) in notable.iter().enumerate() {
            println!(
                "  {}. {m} ({b}){}",
                i + 1,
                if i == 0 { "  (recommended)" } else { "" }
            );
        }
        let answer = ask("default [1]: ")?;
        if let Ok(n) = answer.parse::<usize>() {
            if let Some((m, _)) = notable.get(n.wrapping_sub(1)) {
                default = m.clone();
            }
        } else if d.models.iter().any(|(m, _)| *m == answer) {
            default = answer;
        }
    }
    let cfg = Config {
        default: Some(default.clone()),
        backends: config_edit::default_backends(&d.backends),
        models: d
            .models
            .iter()
            .map(|(m, b)| (m.clone(), ModelConfig { backend: b.clone() }))
            .collect(),
        ..Default::default()
    };
    write(&p, &config_edit::render(&cfg))?;
    if !quiet {
        println!(
            "Config created at {} with {}. Default: {default}.",
            p.display(),
            models_count(cfg.models.len())
        );
    } else {
        eprintln!(
            "First run: wrote {} with {} (default: {default}); `dispatch config show` shows it.",
            p.display(),
            models_count(cfg.models.len())
        );
    }
    Ok(Some(cfg))
}

/// Applies an in-place edit, or rewrites the file in the seed's layout (and says so).
fn edit(
    p: &Path,
    cfg: &Config,
    in_place: impl Fn(&str) -> Option<String>,
    apply: impl Fn(&mut Config),
) -> Result<()> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    match in_place(&text) {
        Some(t) => write(p, &t),
        None => {
            let mut c = cfg.clone();
            apply(&mut c);
            write(p, &config_edit::render(&c))?;
            eprintln!(
                "note: {} was rewritten in the seed's layout; its comments could not be kept.",
                p.display()
            );
            Ok(())
        }
    }
}

pub(crate) async fn run(g: &Settings, action: ConfigAction) -> Result<crate::exit::Exit> {
    let p = g.config_path()?;
    if let ConfigAction::Init { force } = &action {
        if p.exists() && !force {
            bail!(
                "{} already exists; `dispatch config show` shows it (use --force to replace it)",
                p.display()
            );
        }
        let mut target = if g.coordinator.is_some() {
            Some(crate::client::connect(g).await?)
        } else {
            None
        };
        return Ok(if init(g, target.as_mut(), false).await?.is_some() {
            crate::exit::Exit::Success
        } else {
            crate::exit::Exit::Failure
        });
    }
    let cfg = match (g.config()?, &action) {
        (Some(cfg), _) => cfg,
        // The way out when `config init` finds no CLI to list: a config of this one model,
        // made the default.
        (None, ConfigAction::AddModel { model, backend: b }) => {
            return add_first_model(&p, model, b.as_deref());
        }
        (None, _) => bail!(
            "there is no config at {}; create one with `dispatch config init` (or `dispatch config add-model MODEL --backend NAME`)",
            p.display()
        ),
    };
    match action {
        ConfigAction::Init { .. } => unreachable!("handled above"),
        ConfigAction::Show => {
            if g.json {
                let v = serde_json::json!({
                    "path": p,
                    "default": cfg.default,
                    "backends": cfg.backends.iter().map(|(n, b)| (n.clone(), b.command.trim().to_string())).collect::<std::collections::BTreeMap<_, _>>(),
                    "models": cfg.models.iter().map(|(n, m)| (n.clone(), m.backend.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                    "aliases": cfg.aliases.iter().map(|(n, a)| (n.clone(), serde_json::json!({"model": a.model, "prompt": a.prompt}))).collect::<std::collections::BTreeMap<_, _>>(),
                    "legacy": cfg.is_legacy(),
                    "warnings": cfg.warnings,
                });
                println!("{v}");
            } else {
                println!("{}", p.display());
                println!("default: {}", cfg.default.as_deref().unwrap_or("(none)"));
                for (n, b) in &cfg.backends {
                    println!("backend {n}: {}", b.command.trim());
                }
                for (n, m) in &cfg.models {
                    println!(
                        "model {n} → {}{}",
                        m.backend,
                        if backend::appends_model(&m.backend) {
                            " (--model appended)"
                        } else {
                            ""
                        }
                    );
                }
                for (n, a) in &cfg.aliases {
                    println!(
                        "alias {n} → {}{}",
                        a.model,
                        if a.prompt.is_some() {
                            " (with a prompt)"
                        } else {
                            ""
                        }
                    );
                }
                for (n, a) in &cfg.agents {
                    println!("agent {n}: {} (old format)", a.command.trim());
                }
            }
        }
        ConfigAction::SetDefault { model } => {
            if cfg.model(&model).is_none()
                && cfg.alias(&model).is_none()
                && !cfg.agents.iter().any(|a| a.0 == model)
            {
                let have: Vec<&str> = cfg
                    .models
                    .iter()
                    .map(|m| m.0.as_str())
                    .chain(cfg.aliases.iter().map(|a| a.0.as_str()))
                    .collect();
                bail!(
                    "`{model}` is not a configured model or alias; configured: {}. Add it with `dispatch config add-model {model}`",
                    have.join(", ")
                );
            }
            edit(
                &p,
                &cfg,
                |t| config_edit::set_default(t, &model),
                |c| c.default = Some(model.clone()),
            )?;
            println!("Default is now {model}.");
        }
        ConfigAction::AddModel { model, backend: b } => {
            dispatch_core::limits::check_name("model", &model)?;
            let installed: Vec<String> = cfg.backends.iter().map(|x| x.0.clone()).collect();
            let b = b.unwrap_or_else(|| {
                backend::backend_for_model(&model, |x| installed.iter().any(|i| i == x)).to_string()
            });
            edit(
                &p,
                &cfg,
                |t| config_edit::add_model(t, &model, &b),
                |c| {
                    c.models.retain(|(m, _)| *m != model);
                    c.models
                        .push((model.clone(), ModelConfig { backend: b.clone() }));
                },
            )?;
            println!("Added {model} → {b}.");
        }
        ConfigAction::RemoveModel { model } => {
            if cfg.model(&model).is_none() {
                bail!("`{model}` is not in {}", p.display());
            }
            edit(
                &p,
                &cfg,
                |t| config_edit::remove_model(t, &model),
                |c| c.models.retain(|(m, _)| *m != model),
            )?;
            println!("Removed {model}.");
        }
        ConfigAction::AddAlias {
            name,
            model,
            prompt,
        } => {
            dispatch_core::limits::check_name("alias", &name)?;
            edit(
                &p,
                &cfg,
                |t| config_edit::add_alias(t, &name, &model, prompt.as_deref()),
                |c| {
                    c.aliases.retain(|(n, _)| *n != name);
                    c.aliases.push((
                        name.clone(),
                        AliasConfig {
                            model: model.clone(),
                            prompt: prompt.clone(),
                        },
                    ));
                },
            )?;
            println!("Alias {name} → {model}.");
        }
        ConfigAction::RemoveAlias { name } => {
            if cfg.alias(&name).is_none() {
                bail!("there is no alias `{name}` in {}", p.display());
            }
            edit(
                &p,
                &cfg,
                |t| config_edit::remove_alias(t, &name),
                |c| c.aliases.retain(|(n, _)| *n != name),
            )?;
            println!("Removed alias {name}.");
        }
        ConfigAction::Migrate => {
            if !cfg.is_legacy() {
                println!(
                    "{} already uses the current schema; nothing to migrate.",
                    p.display()
                );
                return Ok(crate::exit::Exit::Success);
            }
            let old = std::fs::read_to_string(&p)?;
            let backup = p.with_extension("yaml.old");
            dispatch_core::fs::write_private(&backup, old.as_bytes())
                .with_context(|| format!("cannot write {}", backup.display()))?;
            let mut target = if g.coordinator.is_some() {
                Some(crate::client::connect(g).await?)
            } else {
                None
            };
            match init(g, target.as_mut(), false).await? {
                Some(_) => println!("Migrated; the old file is at {}.", backup.display()),
                None => return Ok(crate::exit::Exit::Failure),
            }
        }
    }
    Ok(crate::exit::Exit::Success)
}

/// `dispatch config add-model` with no config yet: writes one holding this model as the
/// default (its backend as given, else by the seed's rules).
fn add_first_model(p: &Path, model: &str, b: Option<&str>) -> Result<crate::exit::Exit> {
    dispatch_core::limits::check_name("model", model)?;
    let b = match b {
        Some(b) => {
            dispatch_core::limits::check_name("backend", b)?;
            b.to_string()
        }
        None => backend::backend_for_model(model, |_| true).to_string(),
    };
    let cfg = Config {
        default: Some(model.to_string()),
        models: vec![(model.to_string(), ModelConfig { backend: b.clone() })],
        ..Default::default()
    };
    write(p, &config_edit::render(&cfg))?;
    println!(
        "Config created at {} with {model} → {b} as the default.",
        p.display()
    );
    Ok(crate::exit::Exit::Success)
}

/// The seed's resolution at submit time: fills the request's backend, model and alias prompt.
/// Returns false when the user declined the default.
/// A model the config does not list yet, to add once the coordinator accepted the task that
/// named it (a refused submit changes nothing).
pub(crate) struct NewModel {
    id: String,
    backend: String,
}

impl NewModel {
    /// Adds the model to the config file (keeping its comments) and says so.
    pub(crate) fn save(&self, g: &Settings) -> Result<()> {
        let p = g.config_path()?;
        let cfg = g.config()?.unwrap_or_default();
        let (id, b) = (&self.id, &self.backend);
        edit(
            &p,
            &cfg,
            |t| config_edit::add_model(t, id, b),
            |c| {
                c.models
                    .push((id.clone(), ModelConfig { backend: b.clone() }))
            },
        )?;
        eprintln!("Added {id} ({b}) to {}.", p.display());
        Ok(())
    }
}

/// Resolves the task's backend, model and alias (and its fallback) from the config, asking to
/// confirm the default on a terminal. `None` when the user declined; else a model to add to the config after the
/// submit is accepted, if the prompt named one it did not list.
pub(crate) async fn resolve_for_submit(
    g: &Settings,
    target: &mut Target,
    req: &mut v1::SubmitRequest,
    alias: Option<&str>,
    yes: bool,
    fallback: bool,
) -> Result<Option<Resolved>> {
    let cfg = match g.config()? {
        Some(c) => c,
        None => match init(g, Some(target), true).await? {
            Some(c) => c,
            None => bail!("nothing to run the task with; see above"),
        },
    };
    // The config is read once per submit: its fallback goes with the task too.
    if fallback {
        (req.fallback, req.fallback_on) = fallback_targets(&cfg)?;
    }
    let nodes = target
        .client
        .list_nodes(v1::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let installed = |b: &str| {
        nodes
            .iter()
            .any(|n| n.connected && n.backends.iter().any(|x| x.name == b))
    };
    let model_flag = (!req.model.is_empty()).then(|| req.model.clone());
    let mut r: Resolution = resolve(&cfg, &req.prompt, model_flag.as_deref(), alias, &installed)
        .map_err(|e| anyhow!(e))?;
    if r.choice == Choice::Default {
        let model = r.model.clone().unwrap_or_else(|| r.backend.clone());
        let confirm = cfg.confirm_default.unwrap_or(true)
            && !yes
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal();
        if confirm {
            let answer = ask(&format!(
                "I'll dispatch this using {model} (your default). OK? [Y/n/other model] "
            ))?;
            match answer.to_ascii_lowercase().as_str() {
                "" | "y" | "yes" => {}
                "n" | "no" => return Ok(None),
                _ => {
                    r = resolve(&cfg, &req.prompt, Some(&answer), None, &installed)
                        .map_err(|e| anyhow!(e))?
                }
            }
        } else if !g.json {
            eprintln!("Using {model} (your default).");
        }
    }
    let default_used =
        (r.choice == Choice::Default).then(|| r.model.clone().unwrap_or_else(|| r.backend.clone()));
    let new_model = r.auto_added.as_ref().map(|(id, b)| NewModel {
        id: id.clone(),
        backend: b.clone(),
    });
    req.backend = r.backend.clone();
    req.model = r.model.clone().unwrap_or_default();
    if let Some((_, Some(p))) = &r.alias {
        req.alias_prompt = p.trim().to_string();
    }
    Ok(Some(Resolved {
        new_model,
        default_used,
    }))
}

/// What resolving a submit's model decided.
pub(crate) struct Resolved {
    /// A model to add to the config once the task is accepted.
    pub(crate) new_model: Option<NewModel>,
    /// The default model, when it was used because the prompt named none.
    pub(crate) default_used: Option<String>,
}
