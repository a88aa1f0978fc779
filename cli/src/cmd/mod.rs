//! One file per command (or family of commands); this one reads the command line and runs
//! the command it names.

pub(crate) mod admin;
pub(crate) mod ask;
mod cancel;
pub(crate) mod changes;
mod clean;
pub(crate) mod config;
mod daemon;
mod demo;
pub(crate) mod doctor;
pub(crate) mod keys;
mod logs;
mod mcp;
mod nodes;
mod output;
mod retry;
mod run;
mod status;
mod watch;

use cancel::cancel;
use clean::clean;
use demo::demo;
use logs::logs;
use nodes::{cordon, nodes};
use output::output;
use retry::retry;
use run::submit;
use status::status;
use watch::follow;
use watch::watch_all;

use crate::args::{Cli, Command, DaemonAction, NodesAction, RunArgs};
use crate::client::connect;
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::task_id;
use std::io::Write;

/// Runs the parsed command line; returns the exit status.
pub(crate) async fn run(cli: Cli) -> Result<crate::exit::Exit> {
    // The commands that inspect or repair a config file run with a broken one.
    let lenient = matches!(
        cli.command,
        Some(Command::Config { .. } | Command::Doctor | Command::Completions { .. } | Command::Man)
    );
    let g = Settings::load(&cli.global, lenient)?;
    let with_remote = |mut a: RunArgs| {
        if a.remote.is_none() && g.coordinator.is_some() {
            a.remote = g.remote.clone();
        }
        a
    };
    match cli.command {
        None => {
            if cli.run.prompt.is_empty() && cli.run.plan.is_none() && cli.run.steps.is_empty() {
                bail!("say what to dispatch: dispatch \"<prompt>\" (see `dispatch --help`)");
            }
            if let Some(word) = lone_word(&cli.run) {
                let word = dispatch_core::text::printable_line(word);
                let word = match word.char_indices().nth(60) {
                    Some((i, _)) => format!("{}…", &word[..i]),
                    None => word.into_owned(),
                };
                let meant = resembled_command(&word).map_or_else(
                    || " (see `dispatch --help`)".to_string(),
                    |m| format!("; did you mean `dispatch {m}`?"),
                );
                eprintln!(
                    "error: `{word}` is not a dispatch command{meant}\n(A prompt of one word is dispatched only when you say so: `dispatch run {word}`.)"
                );
                return Ok(crate::exit::Exit::Usage);
            }
            submit(&g, with_remote(cli.run)).await
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "dispatch", &mut out);
            print_all(&out)
        }
        Some(Command::Man) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("cannot render the manual page")?;
            print_all(&out)
        }
        Some(Command::Run(args)) => submit(&g, with_remote(*args)).await,
        Some(Command::Status { id, limit, all }) => status(&g, id, limit, all).await,
        Some(Command::Watch { id: Some(id), .. }) => {
            task_id::validate(&id)?;
            let mut t = connect(&g).await?;
            follow(&g, &mut t, &[id], g.json).await
        }
        Some(Command::Watch { id: None, .. }) => watch_all(&g).await,
        Some(Command::Logs {
            id,
            follow,
            activity,
        }) => logs(&g, &id, follow, activity).await,
        Some(Command::Output { id, follow }) => output(&g, &id, follow).await,
        Some(Command::Diff { id }) => crate::cmd::changes::diff(&g, &id).await,
        Some(Command::Fetch { id }) => crate::cmd::changes::fetch_cmd(&g, &id).await,
        Some(Command::Apply { id, cherry_pick }) => {
            crate::cmd::changes::apply(&g, &id, cherry_pick).await
        }
        Some(Command::Cancel { id }) => cancel(&g, &id).await,
        Some(Command::Nodes { action: None }) => nodes(&g).await,
        Some(Command::Nodes {
            action: Some(NodesAction::Drain { name, timeout }),
        }) => cordon(&g, &name, true, timeout).await,
        Some(Command::Nodes {
            action: Some(NodesAction::Uncordon { name }),
        }) => cordon(&g, &name, false, None).await,
        Some(Command::Nodes {
            action: Some(NodesAction::Forget { name }),
        }) => crate::cmd::nodes::forget(&g, &name).await,
        Some(Command::Config { action }) => crate::cmd::config::run(&g, action).await,
        Some(Command::Clean { id }) => clean(&g, &id).await,
        Some(Command::Retry {
            id,
            model,
            backend,
            remote,
        }) => retry(&g, &id, model, backend, remote).await,
        Some(Command::Answer {
            id,
            seq,
            approval,
            text,
        }) => {
            let seq = approval
                .map(|n| dispatch_core::policy::APPROVAL_SEQ_BASE.saturating_add(n))
                .or(seq);
            crate::cmd::ask::answer(&g, &id, seq, text).await
        }
        Some(Command::Note { id, text }) => crate::cmd::ask::note(&g, &id, &text.join(" ")).await,
        Some(Command::Inbox { list }) => crate::cmd::ask::inbox(&g, list).await,
        Some(Command::Wait { ids, timeout }) => crate::cmd::ask::wait(&g, &ids, timeout).await,
        Some(Command::Demo) => demo(&g).await,
        Some(Command::Doctor) => crate::cmd::doctor::doctor(&g).await,
        Some(Command::Mcp) => mcp::serve(&g).await,
        Some(Command::Dashboard { no_open }) => crate::cmd::daemon::dashboard(&g, no_open).await,
        Some(Command::Token { action }) => crate::cmd::admin::token(&g, action).await,
        Some(Command::Keys { action }) => crate::cmd::keys::run(&g, action),
        Some(Command::Policy { action }) => crate::cmd::admin::policy(&g, action).await,
        Some(Command::Audit { task, limit }) => crate::cmd::admin::audit(&g, task, limit).await,
        Some(Command::Daemon {
            action: DaemonAction::Status,
        }) => crate::cmd::daemon::status(&g).await,
        Some(Command::Daemon {
            action: DaemonAction::Stop { force },
        }) => crate::cmd::daemon::stop(&g, force).await,
        Some(Command::Daemon {
            action: DaemonAction::Run { .. },
        })
        | Some(Command::SimWorker { .. })
        | Some(Command::ApproveHook { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<crate::exit::Exit> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(crate::exit::Exit::Success),
    }
}

/// The prompt of a plain `dispatch WORD` that is one bare word (no space in it, no `--step`
/// or `--plan` beside it): never dispatched, since it is far more often a command that does not
/// exist (`dispatch questions`) than a task, and a task costs money. `dispatch run WORD` and
/// `dispatch -` (stdin) dispatch as asked.
fn lone_word(run: &RunArgs) -> Option<&str> {
    let [word] = run.prompt.as_slice() else {
        return None;
    };
    let bare = !word.is_empty() && word != "-" && !word.chars().any(char::is_whitespace);
    (bare && run.steps.is_empty() && run.plan.is_none()).then_some(word.as_str())
}

/// The command a lone word was probably meant as (`dispatch stauts`): a subcommand within two
/// edits of it (one, for words under five letters), or one it is a prefix of (`dispatch stat`).
fn resembled_command(word: &str) -> Option<String> {
    if word.len() < 2 || !word.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return None;
    }
    let word = word.to_ascii_lowercase();
    let most = if word.len() < 5 { 1 } else { 2 };
    <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .map(|name| {
            let d = if word.len() >= 3 && name.starts_with(&word) {
                0
            } else {
                edit_distance(&word, &name)
            };
            (d, name)
        })
        .filter(|(d, _)| *d <= most)
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance (with adjacent swaps counting one), over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}
