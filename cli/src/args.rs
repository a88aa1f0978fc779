//! Command-line syntax.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Send coding-agent tasks (Claude Code, Codex, Cursor, or any CLI that takes a prompt) to any
/// machine, and watch their checklists, questions and logs.
///
/// With no coordinator configured, `dispatch` starts a local daemon (coordinator + an agent
/// node named `local`) on a Unix socket under DISPATCH_HOME, and tasks run in the directory
/// where you ran `dispatch`. Point it at a shared coordinator with --coordinator or
/// DISPATCH_COORDINATOR to send work to other machines (`--remote build-box`).
///
/// Examples:
///   dispatch "do a security review of this project"
///   dispatch --remote build-box --backend codex "fix the flaky test in ci.rs"
///   dispatch --step "scan for secrets" --step "review auth" "security review"
///   dispatch watch security-review
///   dispatch demo
#[derive(Parser, Debug)]
#[command(name = "dispatch", version, about, long_about, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Coordinator to use: https://HOST:PORT (TLS), http://HOST:PORT or unix:/PATH; several,
    /// comma-separated (URL1,URL2), are tried in order (each alone for 250 ms, then the next
    /// beside it; the first that serves wins). Without it, a local daemon is used (started on
    /// demand).
    #[arg(long, global = true, env = "DISPATCH_COORDINATOR")]
    pub(crate) coordinator: Option<String>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Where dispatch keeps its config, local daemon socket, store and logs.
    #[arg(long, global = true, env = "DISPATCH_HOME", hide_env_values = true)]
    pub(crate) home: Option<PathBuf>,

    /// A file holding the token for a remote coordinator. Without it: DISPATCH_TOKEN, else
    /// `token:` in the config. (The local daemon needs none.)
    #[arg(long, global = true, env = "DISPATCH_TOKEN_FILE", value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// The CA (PEM) that signed an https:// coordinator's certificate (e.g. ca.pem from
    /// `dispatch-coordinator certs init`). Without it: `tls: { ca: FILE }` in the config, else
    /// the system's roots.
    #[arg(long, global = true, env = "DISPATCH_CA", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,

    /// Colour (and live redraws): `auto` on a terminal unless NO_COLOR is set or TERM is
    /// dumb, `always`, or `never`.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub(crate) color: String,
}

/// Options of `dispatch run` (also accepted by plain `dispatch "<prompt>"`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct RunArgs {
    /// What the worker should do. A numbered or bulleted list in it becomes the checklist;
    /// otherwise its first line is the one item. `-` reads it from stdin. A prompt of one bare
    /// word is dispatched only by `dispatch run WORD` (a plain `dispatch WORD` is taken for a
    /// mistyped command and refused).
    #[arg(value_name = "PROMPT")]
    pub(crate) prompt: Vec<String>,

    /// Run only on nodes whose labels include all of these (`gpu=a100,zone=eu`).
    #[arg(long, value_name = "K=V[,K=V]", value_parser = parse_pool)]
    pub(crate) pool: Option<std::collections::BTreeMap<String, String>>,

    /// Run on this node only (see `dispatch nodes`).
    #[arg(long, value_name = "NODE")]
    pub(crate) remote: Option<String>,

    /// Backend to run: claude, cursor, codex, sim, or one a node configures. Default: the
    /// backend of the model from your config (see --model).
    #[arg(long, value_name = "NAME")]
    pub(crate) backend: Option<String>,

    /// Use a configured alias (its model, and its prompt addition).
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    pub(crate) alias: Option<String>,

    /// Use the default model without asking.
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,

    /// Model to use (passed as --model to cursor and codex; claude picks its own). Default:
    /// the last model or alias from your config named in the prompt, else your default.
    #[arg(long, value_name = "M")]
    pub(crate) model: Option<String>,

    /// Task id (kebab-case, at most 63 characters). Default: derived from the prompt.
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,

    /// A checklist item (repeatable); replaces the items taken from the prompt.
    #[arg(long = "step", value_name = "TEXT")]
    pub(crate) steps: Vec<String>,

    /// Use this plan.md as is (`-` reads it from stdin).
    #[arg(long, value_name = "FILE")]
    pub(crate) plan: Option<String>,

    /// Start only after this task has completed (fail if it fails).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,

    /// Directory the worker runs in, on the node. Default: here (local daemon) or the node's
    /// --workdir (remote coordinator).
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<PathBuf>,

    /// Title of the plan (default: the prompt's first line).
    #[arg(long, value_name = "TEXT")]
    pub(crate) title: Option<String>,

    /// Queue priority; higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(crate) priority: i32,

    /// Stay and show the checklist until the task ends (exit status as `dispatch watch`).
    #[arg(long)]
    pub(crate) wait: bool,

    /// Run the worker in a git worktree on branch dispatch/<id> (also when the prompt says
    /// "in a worktree" or "use a worktree"); kept for review until `dispatch clean ID`.
    #[arg(long)]
    pub(crate) worktree: bool,

    /// How a worktree or remote-workspace task's branch comes home: `bundle` (through the
    /// coordinator; `dispatch fetch` takes it from there) or `push` (the node pushes
    /// dispatch/<id> to the repository's origin with its own credentials). Default: the
    /// node's setting (bundle unless its config says otherwise).
    #[arg(long, value_name = "HOW", value_parser = ["bundle", "push"])]
    pub(crate) deliver: Option<String>,

    /// Do not fall back for this task. With `fallback:` in your config (`to: [codex]`), a task
    /// whose worker cannot start because its CLI reports a rate limit, an exhausted quota or an
    /// expired login (`fallback.on`, or the built-in phrases) is retried once on the first
    /// target a node can run; `status` says what happened.
    #[arg(long)]
    pub(crate) no_fallback: bool,

    /// A budget for the task: dollars (`$5`, `5usd`), tokens (`200k`, `2M`), or both
    /// (`'$5, 2M'`). When its worker reaches it, the worker is paused at its next tool call
    /// (Claude Code) or stopped after its current item (other CLIs), and you are asked
    /// whether to go on with as much again; no blocks the task. Dollars are what the CLI
    /// reports, or its tokens at list price while it runs. Default: your token's or the
    /// coordinator's `budgets.task`.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_budget)]
    pub(crate) budget: Option<String>,
    /// The git checkout whose origin and commit a remote task works on (or, with the local
    /// daemon, the directory it runs in) when it is not the current directory (the MCP
    /// server's `repository`).
    #[arg(skip)]
    pub repo_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Dispatch a task (the default command: `dispatch "<prompt>"`).
    #[command(
        after_help = "Examples:\n  dispatch run --backend codex --step \"reproduce\" --step \"fix\" \"fix the flaky login test\"\n  echo \"review auth.rs\" | dispatch run -"
    )]
    Run(Box<RunArgs>),

    /// Show one task in detail, or list the most recent tasks.
    ///
    /// One task's view names its backend and model (and, from a structured stream, the model its
    /// CLI says it ran: `(claude, asked sonnet, ran claude-opus-5-5)`), its checklist, questions,
    /// usage, what its worker is doing, and its reason — for a failure, the worker CLI's own
    /// error line and the kind of trouble; a usage limit that named its reset adds `blocked until
    /// 15:00 — usage limit`.
    #[command(after_help = "Examples:\n  dispatch status\n  dispatch status fix-login --json")]
    Status {
        /// Task to show; the most recent tasks when omitted.
        id: Option<String>,
        /// With no ID: how many of the most recent tasks to list.
        #[arg(long, default_value_t = 50, conflicts_with = "all")]
        limit: u32,
        /// With no ID: list every task (read from the coordinator a page at a time).
        #[arg(long)]
        all: bool,
    },

    /// Follow a task's checklist live until it ends.
    ///
    /// Exit status: 0 completed, 11 blocked, 12 failed or lost, 13 cancelled.
    #[command(after_help = "Examples:\n  dispatch watch fix-login\n  dispatch watch --all")]
    Watch {
        /// Task to watch.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every active task in one view (and each one submitted meanwhile), until all have
        /// ended.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },

    /// Print a task's worker output: piped, exactly the bytes the worker wrote; on a terminal,
    /// its colours but no other escape sequence (those are shown escaped, as `\x1b`). For a
    /// backend with structured output (`structured:` in the node's config) that is the raw
    /// event stream; `--activity` prints what the node read from it instead.
    #[command(
        after_help = "Examples:\n  dispatch logs fix-login --follow\n  dispatch logs fix-login --activity"
    )]
    Logs {
        /// Task whose output to print.
        id: String,
        /// Keep printing new output until the task ends (across a coordinator restart or a
        /// replica takeover: it goes on after the last chunk it printed).
        #[arg(short, long)]
        follow: bool,
        /// One line per tool use, message or command, read from a structured stream (nothing
        /// for a backend without one).
        #[arg(long)]
        activity: bool,
    },

    /// Print a task's output.md: the summary the seed's last plan item has the worker write
    /// (the coordinator keeps its first 1 MiB; a larger file is on the task's node). Exits 1
    /// when the task has none yet.
    #[command(after_help = "Example:\n  dispatch output fix-login > summary.md")]
    Output {
        /// Task whose output.md to print.
        id: String,
        /// Print it again whenever the worker rewrites it, until the task ends (across a
        /// coordinator restart or a replica takeover).
        #[arg(short, long)]
        follow: bool,
    },

    /// Print what a worktree or remote-workspace task changed, as a patch (`git diff` of its
    /// branch against the commit it started from); the counts go to stderr. A task with no
    /// changes to show (it ran in a plain directory, is still running, or its node could not
    /// commit them) says why on stderr and exits 0.
    #[command(after_help = "Example:\n  dispatch diff fix-login | less")]
    Diff {
        /// The task.
        id: String,
    },

    /// Bring a task's branch into this repository as `dispatch/<id>`: from the bundle its node
    /// sent through the coordinator, or from origin when the node pushed it. Your current
    /// branch is not touched.
    #[command(after_help = "Example:\n  dispatch fetch fix-login && git log dispatch/fix-login")]
    Fetch {
        /// The task.
        id: String,
    },

    /// Fetch a task's branch and merge it into your current branch (needs a clean working
    /// tree); a conflict is undone and reported, leaving the fetched branch to merge by hand.
    #[command(
        after_help = "Examples:\n  dispatch apply fix-login\n  dispatch apply fix-login --cherry-pick"
    )]
    Apply {
        /// The task.
        id: String,
        /// Cherry-pick the task's commits instead of merging its branch.
        #[arg(long)]
        cherry_pick: bool,
    },

    /// Cancel a task; a running worker's whole process group is stopped.
    #[command(after_help = "Example:\n  dispatch cancel fix-login")]
    Cancel {
        /// Task to cancel.
        id: String,
    },

    /// List agent nodes: backends, capacity, load, and whether they drain.
    ///
    /// A backend shows the version its CLI reported at the node's start and how many models it
    /// lists (`claude@2.1.332(3)`); one marked `!` cannot run there (a CLI version the node
    /// cannot drive, or one that refuses to run as its user), and why is said below the table.
    #[command(
        after_help = "Examples:\n  dispatch nodes\n  dispatch nodes --json\n  dispatch nodes drain build-box --timeout 30m"
    )]
    Nodes {
        #[command(subcommand)]
        action: Option<NodesAction>,
    },

    /// Show or change your config (DISPATCH_HOME/config.yaml, the seed's schema).
    #[command(after_help = "Examples:\n  dispatch config show\n  dispatch config set-default opus")]
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },

    /// Remove an ended worktree task's worktree on its node (its branch dispatch/<id> stays).
    #[command(after_help = "Example:\n  dispatch clean fix-login")]
    Clean {
        /// Task whose worktree to remove.
        id: String,
    },

    /// Run a failed, lost, cancelled or blocked task again: its unchecked items, same plan. A
    /// task waiting for a usage limit's reset runs now instead of at the reset.
    #[command(after_help = "Example:\n  dispatch retry fix-login --backend codex")]
    Retry {
        /// Task to retry.
        id: String,
        /// Use this model instead.
        #[arg(long)]
        model: Option<String>,
        /// Use this backend instead.
        #[arg(long)]
        backend: Option<String>,
        /// Run it on this node.
        #[arg(long, value_name = "NODE")]
        remote: Option<String>,
    },

    /// Answer a worker's question (written to its ipc/NNN.answer on the node).
    ///
    /// The text comes from the arguments, else from stdin when it is not a terminal, else from
    /// $VISUAL/$EDITOR. Without --seq, the oldest unanswered question is answered. Answering a
    /// blocked task (its worker gave up waiting) starts a new worker that continues with the
    /// answer.
    ///
    /// A tool approval (a worker's tool call the coordinator's policy asks about: "Allow Bash:
    /// git push origin main?") is answered yes, no, or always (the same call is allowed for
    /// the rest of the task); its CLI waits for the answer.
    #[command(
        after_help = "Examples:\n  dispatch answer fix-login \"use the staging database\"\n  dispatch answer fix-login --seq 2 \"yes\"\n  dispatch answer fix-login --approval 1 always"
    )]
    Answer {
        /// Task whose question to answer.
        id: String,
        /// Question number (the NNN of NNN.question).
        #[arg(long, conflicts_with = "approval")]
        seq: Option<u32>,
        /// Tool approval number (`approval N` in status, inbox and wait).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        approval: Option<u32>,
        /// The answer.
        text: Vec<String>,
    },

    /// Add a note to a running task: appended to its plan.md as
    /// "> **Note from dispatcher:** TEXT", which the worker reads before its next items.
    #[command(after_help = "Example:\n  dispatch note fix-login \"the CI uses Node 20\"")]
    Note {
        /// Task to add the note to.
        id: String,
        /// The note (one line).
        #[arg(required = true)]
        text: Vec<String>,
    },

    /// Every unanswered question across all tasks and nodes, oldest first; on a terminal,
    /// answer them in turn.
    #[command(after_help = "Examples:\n  dispatch inbox\n  dispatch inbox --list")]
    Inbox {
        /// Only list, even on a terminal.
        #[arg(long)]
        list: bool,
    },

    /// Block until a task needs you, then exit with a code that says why.
    ///
    /// Exit status: 0 every task completed, 10 a question is waiting (printed), 11 a task is
    /// blocked, 12 a task failed or was lost, 13 a task was cancelled, 2 usage error (or an
    /// unknown task), 124 --timeout reached. Rides the coordinator's watch stream: no polling.
    #[command(after_help = "Example:\n  dispatch wait fix-login --timeout 30m; echo \"exit $?\"")]
    Wait {
        /// Tasks to wait for.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Give up after this long (e.g. 30m) with exit status 124.
        #[arg(long, value_parser = dispatch_core::duration::parse)]
        timeout: Option<Duration>,
    },

    /// Run a short end-to-end demo: three scripted tasks on the local daemon, shown live.
    #[command(after_help = "Example:\n  dispatch demo")]
    Demo,

    /// Check what dispatch needs and say what to fix: the config, the coordinator (reached,
    /// version, TLS, token) and each connected node's backends — or, with no coordinator,
    /// the agent CLIs on this machine. Exit status 1 when something must be fixed.
    ///
    /// Example:
    ///   DISPATCH_COORDINATOR=https://dispatch.example.com:7070 dispatch doctor
    #[command(verbatim_doc_comment)]
    Doctor,

    /// Manage the coordinator's tokens (admins): who may connect, as what.
    #[command(
        after_help = "Examples:\n  dispatch token create --user ann --role member\n  dispatch token list"
    )]
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },

    /// The tool policy (tool approvals): which tool calls of Claude Code and Codex workers
    /// run, which a person approves (`dispatch answer ID yes|no|always`) and which are refused.
    /// Tasks run under the coordinator's config file's `policy:` section and the one set here,
    /// together.
    #[command(
        after_help = "Examples:\n  dispatch policy show\n  dispatch policy set policy.yaml\n  dispatch policy clear\n\nA policy file (the `policy:` section's content):\n  allow: [Read, Grep, Glob, \"Bash(cargo test:*)\", \"Edit(src/**)\"]\n  ask: [\"Bash(git push:*)\"]\n  deny: [\"Bash(rm -rf /*)\"]\n  users:\n    alice: { allow: [\"Bash(make:*)\"] }\n  tokens:        # by token id (`dispatch token list`)\n    8b63ccce3a8f: { deny: [\"Bash(git push:*)\"], default: deny }"
    )]
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },

    /// Your task-signing key: with one, every task you dispatch is signed, and nodes that
    /// trust its public key run it (and nodes with trusted keys run nothing unsigned).
    #[command(after_help = "Examples:\n  dispatch keys init\n  dispatch keys show")]
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },

    /// Every change made on the coordinator, who made it and when (admins), newest first.
    #[command(after_help = "Example:\n  dispatch audit --task fix-login")]
    Audit {
        /// Only this task's records.
        #[arg(long)]
        task: Option<String>,
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },

    /// Manage the local daemon (used when no coordinator is configured).
    #[command(after_help = "Examples:\n  dispatch daemon status\n  dispatch daemon stop")]
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },

    /// Open the web dashboard (a one-time login link to the local daemon's).
    ///
    /// With the local daemon: prints a link to its dashboard that logs you in once (and opens
    /// it with xdg-open/open when there is a display). With a coordinator: its dashboard is
    /// where it serves `--http-listen`; log in there with your token.
    #[command(after_help = "Example:\n  dispatch dashboard")]
    Dashboard {
        /// Only print the link.
        #[arg(long)]
        no_open: bool,
    },

    /// Serve dispatch as MCP tools on stdin/stdout, for agent hosts (Claude Code, Codex,
    /// Cursor): dispatch, wait, answer, read results — no monitor script.
    ///
    /// Register it once with the host (docs/cli.md, "MCP"); the host starts it. It uses the same
    /// coordinator, token and config as the CLI. Tools: dispatch_task, task_status,
    /// wait_for_task, answer_question, add_note, cancel_task, retry_task, task_output,
    /// task_diff, list_nodes, inbox. Resources, with change notifications:
    /// dispatch://tasks/ID/plan (the live checklist) and dispatch://tasks/ID/output.
    #[command(after_help = "Example:\n  claude mcp add dispatch -- dispatch mcp")]
    Mcp,

    /// Print a shell completion script: `dispatch completions bash > ~/.local/share/bash-completion/completions/dispatch`,
    /// `dispatch completions zsh > ~/.zfunc/_dispatch`, `dispatch completions fish > ~/.config/fish/completions/dispatch.fish`.
    #[command(
        after_help = "Example:\n  dispatch completions bash > ~/.local/share/bash-completion/completions/dispatch"
    )]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff): `dispatch man > dispatch.1; man ./dispatch.1`, or install
    /// it as `/usr/local/share/man/man1/dispatch.1`.
    #[command(after_help = "Example:\n  dispatch man > dispatch.1 && man ./dispatch.1")]
    Man,

    /// Run the scripted sim worker on a worker prompt (what the `sim` backend runs).
    #[command(hide = true)]
    SimWorker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },

    /// The tool-approval hook a worker's Claude Code runs before each tool call (the local
    /// daemon's node sets it under a policy).
    #[command(hide = true)]
    ApproveHook {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub(crate) fn parse_pool(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        dispatch_core::limits::check_name("label", k.trim()).map_err(|e| e.to_string())?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        return Err("give at least one key=value".into());
    }
    Ok(out)
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigAction {
    /// Print the config: default, backends, models and aliases.
    #[command(after_help = "Example:\n  dispatch config show")]
    Show,
    /// First-run setup: detect agent, claude and codex (here and on the coordinator's nodes),
    /// list their models, ask for the default, write the config.
    #[command(after_help = "Example:\n  dispatch config init")]
    Init {
        /// Replace an existing config.
        #[arg(long)]
        force: bool,
    },
    /// Set the default model (or alias).
    #[command(after_help = "Example:\n  dispatch config set-default opus")]
    SetDefault {
        /// A configured model or alias.
        model: String,
    },
    /// Add a model (backend by the seed's rules unless given). With no config yet, writes one
    /// holding this model as the default.
    #[command(after_help = "Example:\n  dispatch config add-model gpt-5.3-codex --backend codex")]
    AddModel {
        /// Model id.
        model: String,
        /// Backend that runs it.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Remove a model.
    #[command(after_help = "Example:\n  dispatch config remove-model gpt-5.3-codex")]
    RemoveModel {
        /// Model id.
        model: String,
    },
    /// Add (or replace) an alias: a name for a model plus an optional prompt addition.
    #[command(
        after_help = "Example:\n  dispatch config add-alias security-reviewer --model opus --prompt \"Focus on security.\""
    )]
    AddAlias {
        /// Alias name.
        name: String,
        /// Model it stands for.
        #[arg(long)]
        model: String,
        /// Text prepended to the worker prompt.
        #[arg(long)]
        prompt: Option<String>,
    },
    /// Remove an alias.
    #[command(after_help = "Example:\n  dispatch config remove-alias security-reviewer")]
    RemoveAlias {
        /// Alias name.
        name: String,
    },
    /// Upgrade an old `agents:` config to the current schema (the old file is kept as
    /// config.yaml.old).
    #[command(after_help = "Example:\n  dispatch config migrate")]
    Migrate,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyAction {
    /// Print the policy tasks run under, and where its parts come from (the config file's,
    /// the one set with `dispatch policy set`).
    #[command(after_help = "Example:\n  dispatch policy show")]
    Show,
    /// Replace the policy set here with FILE (YAML; `-` for stdin), checked whole first: a rule
    /// that does not parse changes nothing (admins; audited).
    #[command(after_help = "Example:\n  dispatch policy set policy.yaml")]
    Set {
        /// The policy file, or - for stdin.
        file: String,
    },
    /// Remove the policy set here (the config file's stays) (admins; audited).
    #[command(after_help = "Example:\n  dispatch policy clear")]
    Clear,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysAction {
    /// Make an ed25519 signing key in DISPATCH_HOME/signing.key (0600) and print its public
    /// key, for nodes' `trusted_keys` (or `dispatch-agent --trusted-key`).
    #[command(after_help = "Example:\n  dispatch keys init")]
    Init {
        /// Replace an existing key (tasks signed with the old one stop verifying on nodes
        /// that trust only it).
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of your signing key.
    #[command(after_help = "Example:\n  dispatch keys show")]
    Show,
}

#[derive(Subcommand, Debug)]
pub(crate) enum NodesAction {
    /// Cordon a node (admins): no new task goes there, kept across restarts of the
    /// coordinator and the node until `uncordon`. Its running tasks go on; with --timeout the
    /// node drains them: they get that long to finish, then the rest are stopped with their
    /// process groups and end lost ("node drained"), retryable.
    #[command(after_help = "Example:\n  dispatch nodes drain build-box --timeout 30m")]
    Drain {
        /// The node.
        name: String,
        /// Stop what still runs on the node after this long (e.g. 5m).
        #[arg(long, value_parser = dispatch_core::duration::parse)]
        timeout: Option<std::time::Duration>,
    },
    /// Take tasks on a cordoned node again (admins).
    #[command(after_help = "Example:\n  dispatch nodes uncordon build-box")]
    Uncordon {
        /// The node.
        name: String,
    },
    /// Forget a node that has gone for good (admins, audited): it leaves `dispatch nodes`, the
    /// dashboard and `--remote` errors. Refused while its agent is connected or a task that
    /// has not ended names it. Ephemeral nodes (`dispatch-agent --ephemeral`, the default in
    /// Kubernetes) are forgotten by themselves once gone and settled. If the node connects
    /// again it is simply known again.
    #[command(after_help = "Example:\n  dispatch nodes forget old-laptop")]
    Forget {
        /// The node.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenAction {
    /// Make a token, printed once (only a hash of it is stored): for a user with a role, or
    /// for a node (it may connect as that name only; `NAME*` for a pool of names).
    #[command(
        after_help = "Examples:\n  dispatch token create --user ann --role member --allow-node build-box\n  dispatch token create --node \"dispatch-agent-default-*\"\n  dispatch token create --user ci --role member --expires 30d\n  dispatch token create --node \"ci-*\" --uses 3 --expires 1h"
    )]
    Create {
        /// A user token for this user.
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        user: Option<String>,
        /// The user's role: admin (everything), member (submit; act on and read their own
        /// tasks; summaries of others), viewer (summaries).
        #[arg(long, requires = "user", value_parser = ["admin", "member", "viewer"])]
        role: Option<String>,
        /// A node token for this node name (a trailing * allows every name with that prefix).
        #[arg(long)]
        node: Option<String>,
        /// The token's own limit of submits a minute (default: the coordinator's
        /// --submits-per-minute for members, none for admins).
        #[arg(long, value_name = "N", requires = "user")]
        submits_per_minute: Option<u32>,
        /// The token's own limit of active (queued or running) tasks of its user (default:
        /// the coordinator's --max-active-tasks for members, none for admins).
        #[arg(long, value_name = "N", requires = "user")]
        max_active: Option<u32>,
        /// Only on these nodes may a member's tasks run (names or prefix*; repeatable).
        #[arg(long = "allow-node", requires = "user", value_name = "NODE")]
        allow_nodes: Vec<String>,
        /// The token stops working this long after it is made (e.g. 90d, 12h); an agent or
        /// CLI presenting it then is told it expired. Default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = dispatch_core::duration::parse)]
        expires: Option<std::time::Duration>,
        /// A registration token: it registers at most N nodes (names matching --node). Each
        /// agent that connects with it is given a token of its own for its name, keeps it in
        /// DATA_DIR/node.token and presents it from then on, so the registration token is
        /// useless once spent. Give it a short --expires too.
        #[arg(long, value_name = "N", requires = "node", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        uses: Option<u32>,
        /// The budget of each task submitted with this token when its submit gives none
        /// (`$5`, `2M`, `'$5, 2M'`; default: the coordinator's `budgets.task`).
        #[arg(long, value_name = "AMOUNT", requires = "user", value_parser = parse_budget)]
        task_budget: Option<String>,
        /// What its user may spend a day (UTC) through this token: past it, submits are
        /// refused until the next day (default: the coordinator's `budgets.day`).
        #[arg(long, value_name = "AMOUNT", requires = "user", value_parser = parse_budget)]
        day_budget: Option<String>,
    },
    /// Every token: id, whom it is for, role, when it was made and by whom, when it was last
    /// used (written every 30 s), when it expires, revoked or not.
    #[command(after_help = "Example:\n  dispatch token list --json")]
    List,
    /// Revoke a token: it stops working at once.
    #[command(after_help = "Example:\n  dispatch token revoke 8b63ccce3a8f")]
    Revoke {
        /// The token's id (`dispatch token list`), the part after `dsp_`.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum DaemonAction {
    /// Is the local daemon running? (pid, socket, active tasks)
    #[command(after_help = "Example:\n  dispatch daemon status")]
    Status,
    /// Stop the local daemon.
    #[command(after_help = "Example:\n  dispatch daemon stop")]
    Stop {
        /// Stop even though tasks are still running (their workers are stopped too).
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon in the foreground (what `dispatch` starts in the background).
    #[command(hide = true)]
    Run {
        /// Exit after this long with no active task.
        #[arg(long, env = "DISPATCH_DAEMON_IDLE_TIMEOUT", default_value = "10m", value_parser = dispatch_core::duration::parse)]
        idle_timeout: Duration,
    },
}

/// A budget as `--budget` takes it (checked here; sent as written).
fn parse_budget(s: &str) -> Result<String, String> {
    dispatch_core::budget::Budget::parse(s).map(|b| b.to_string())
}

#[cfg(test)]
mod examples {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// The words of a shell command line (quotes kept together), up to a pipe or redirect.
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => cur.push(c),
                (None, '"' | '\'') => quote = Some(c),
                (None, ' ') => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                (None, c) => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        let end = out
            .iter()
            .position(|w| matches!(w.as_str(), "|" | ">" | "&&" | ";") || w.ends_with(';'))
            .unwrap_or(out.len());
        out.truncate(end);
        out
    }

    /// Every subcommand's help shows an example, and every example parses.
    #[test]
    fn every_command_has_an_example_that_parses() {
        fn walk(cmd: &clap::Command, path: &str, seen: &mut usize) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("{path} {}", sub.get_name());
                let text = format!(
                    "{}\n{}",
                    sub.get_after_help()
                        .map(|h| h.to_string())
                        .unwrap_or_default(),
                    sub.get_long_about()
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                );
                assert!(text.contains("Example"), "`{name} --help` has no example");
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("dispatch "))
                {
                    let line = line.split_once("; echo").map_or(line, |(a, _)| a);
                    if let Err(e) = Cli::try_parse_from(words(line)) {
                        panic!("the example `{line}` of `{name}` does not parse: {e}");
                    }
                    *seen += 1;
                }
                if sub.get_name() != "help" {
                    walk(sub, &name, seen);
                }
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), "dispatch", &mut seen);
        assert!(seen > 40, "{seen} examples");
    }
}
