//! `dispatch-agent`: runs agent CLIs for a coordinator's tasks on this machine.

use clap::{CommandFactory, Parser, Subcommand};
use dispatch_agent::{AgentConfig, backends};
use std::path::PathBuf;
use std::time::Duration;

/// A dispatch agent node: connects out to a coordinator, reports which agent CLIs this machine
/// has (claude, agent, codex on PATH, plus the scripted `sim` worker), and runs a worker for
/// each task it is assigned in the seed's `.dispatch/tasks/<id>/` layout.
#[derive(Parser, Debug)]
#[command(
    name = "dispatch-agent",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// A YAML config file (name, coordinator, token, tls, labels, max_tasks, workdir,
    /// data_dir, workspace_roots, trusted_keys, repositories, changes, and backends with
    /// command/models/max_tasks/structured — `structured: true` runs claude or codex with its
    /// event stream on, for activity lines, token counts and cost); flags and env override it.
    #[arg(long, env = "DISPATCH_AGENT_CONFIG")]
    config: Option<PathBuf>,

    /// Coordinator address: https://HOST:PORT (TLS), http://HOST:PORT or unix:/PATH. Several,
    /// comma-separated (URL1,URL2), are tried in order at every (re)connect (each alone for
    /// 250 ms, then the next beside it; the first that serves wins).
    #[arg(long, env = "DISPATCH_COORDINATOR")]
    coordinator: Option<String>,

    /// This node's unique name (what `dispatch --remote NAME` uses). Defaults to the host name.
    #[arg(long, env = "DISPATCH_AGENT_NAME")]
    name: Option<String>,

    /// A label for pool selection, as key=value (repeatable).
    #[arg(long = "label", env = "DISPATCH_AGENT_LABELS", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// How many tasks may run at once (default 2).
    #[arg(long, env = "DISPATCH_AGENT_MAX_TASKS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_tasks: Option<u32>,

    /// Directory tasks run in when they name none (default: the current directory).
    #[arg(long, env = "DISPATCH_AGENT_WORKDIR")]
    workdir: Option<PathBuf>,

    /// Directory for the event spool and worker logs.
    #[arg(long, env = "DISPATCH_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// A file holding this node's token (made by an admin with `dispatch token create --node
    /// NAME`). Without it: DISPATCH_AGENT_TOKEN, else `token:` in --config. A coordinator on a
    /// TCP address needs one; its local socket does not. A registration token (`--uses N`)
    /// works once: the node is given a token of its own, kept in DATA_DIR/node.token, which is
    /// presented from then on ahead of all of these.
    #[arg(long, env = "DISPATCH_AGENT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// The CA that signed an https:// coordinator's certificate (PEM; e.g. ca.pem from
    /// `dispatch-coordinator certs init`). Without it: `tls.ca` in --config, else the system's
    /// roots.
    #[arg(long, env = "DISPATCH_AGENT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// This node's certificate (PEM), for a coordinator started with --client-ca: the
    /// certificate names the node, which then connects only as that name.
    #[arg(
        long,
        env = "DISPATCH_AGENT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "DISPATCH_AGENT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// A public key (`ed25519:<base64>`, from `dispatch keys show`) whose signed tasks this
    /// node runs (repeatable; adds to `trusted_keys` in --config). With any trusted key the
    /// node runs only tasks signed by one of them, exactly as signed: a coordinator cannot
    /// make it run anything else.
    #[arg(long = "trusted-key", env = "DISPATCH_AGENT_TRUSTED_KEYS", value_delimiter = ',', value_name = "KEY", value_parser = parse_key)]
    trusted_keys: Vec<String>,

    /// API retries in a row (rate limits, overloaded or failing model servers) after which a
    /// worker is stopped and its task counts as unable to continue, so a `fallback:` takes
    /// over instead of the CLI retrying for minutes. Claude Code is told the same limit
    /// (CLAUDE_CODE_MAX_RETRIES); Codex ends its own retries. Overrides `api_retries` in
    /// --config; default 3.
    #[arg(long, env = "DISPATCH_AGENT_API_RETRIES", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    api_retries: Option<u32>,

    /// Longest wait between reconnect attempts (e.g. 5s).
    #[arg(long, env = "DISPATCH_AGENT_MAX_BACKOFF", default_value = "5s", value_parser = dispatch_core::duration::parse)]
    max_backoff: Duration,

    /// This node is ephemeral (a pod, a CI runner): the coordinator forgets it once it has gone
    /// and its tasks are settled (after its --node-timeout), so `dispatch nodes` does not pile
    /// up pod names. Default: on in Kubernetes (KUBERNETES_SERVICE_HOST set), off elsewhere;
    /// `--ephemeral=false` turns it off.
    #[arg(long, env = "DISPATCH_AGENT_EPHEMERAL", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    ephemeral: Option<bool>,

    /// Exit with status 78 once the coordinator has refused every attempt for this long (and
    /// at least 3 in a row) for a reason retrying does not fix: no token, a bogus, revoked or
    /// other node's token, or a name another live agent holds. The systemd unit does not
    /// restart on 78 (RestartPreventExitStatus); a pod shows the reason in its status. Keep it
    /// above 2.5 × the coordinator's --heartbeat-interval (an agent restarted at once may
    /// find its old session still counted live that long). `0`: retry forever.
    #[arg(long, env = "DISPATCH_AGENT_GIVE_UP_AFTER", default_value = "60s", value_parser = dispatch_core::duration::parse)]
    give_up_after: Duration,

    /// What SIGTERM does. `drain`: tell the coordinator (no new tasks; `dispatch nodes` shows
    /// it draining), let running workers finish within --drain-timeout, then stop the rest
    /// with their process groups (each task ends `lost`, reason "node drained", retryable),
    /// flush the events and exit — what a Kubernetes pod that is going away needs. `detach`:
    /// leave the workers running; the next start of this agent re-attaches to them. Default:
    /// drain in Kubernetes (KUBERNETES_SERVICE_HOST set), detach elsewhere.
    #[arg(long, env = "DISPATCH_AGENT_ON_SIGTERM", value_parser = ["drain", "detach"])]
    on_sigterm: Option<String>,

    /// How long a drain lets running workers finish (match the pod's
    /// terminationGracePeriodSeconds, less a few seconds).
    #[arg(long, env = "DISPATCH_AGENT_DRAIN_TIMEOUT", default_value = "60s", value_parser = dispatch_core::duration::parse)]
    drain_timeout: Duration,

    /// Serve the standard gRPC health check (`grpc.health.v1`, plain text, service "") on this
    /// address: SERVING while connected to a coordinator, NOT_SERVING otherwise and while
    /// draining. For liveness/readiness probes.
    #[arg(long, env = "DISPATCH_AGENT_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no token): connected,
    /// draining, workers, workers started, events sent, and the tokens and cost structured
    /// worker streams report, per backend. The address is written to DATA_DIR/metrics.addr.
    #[arg(long, env = "DISPATCH_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,

    /// Log lines as `text` or `json` (one object per line, for log shippers). Traces are
    /// exported with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, env = "DISPATCH_LOG_FORMAT", default_value = "text", value_parser = dispatch_telemetry::LogFormat::parse)]
    log_format: dispatch_telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scripted sim worker on a worker prompt (what the `sim` backend runs).
    SimWorker {
        /// `[--model M] PROMPT`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The tool-approval hook a worker's Claude Code runs before each tool call (set by the
    /// node under a coordinator policy; not run by hand).
    #[command(hide = true)]
    ApproveHook {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn parse_key(s: &str) -> Result<String, String> {
    dispatch_core::signing::parse_public(s)?;
    Ok(s.trim().to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label `{s}` is not key=value"))?;
    dispatch_core::limits::check_name("label key", k.trim()).map_err(|e| e.to_string())?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Some(Command::SimWorker { args }) => std::process::exit(dispatch_agent::sim::main(args)),
        Some(Command::ApproveHook { args }) => {
            std::process::exit(dispatch_agent::approvals::hook_main(args))
        }
        None => {}
    }
    let file = match &args.config {
        Some(p) => {
            dispatch_core::agent_config::AgentFile::load(p).map_err(|e| anyhow::anyhow!(e))?
        }
        None => Default::default(),
    };
    let Some(coordinator) = args.coordinator.or(file.coordinator.clone()) else {
        Args::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, "--coordinator (or DISPATCH_COORDINATOR, or `coordinator:` in --config) is required: the address of the coordinator to connect to, e.g. http://build-server:7070")
            .exit();
    };
    // The runtime first: the trace exporter runs on it.
    let rt = tokio::runtime::Runtime::new()?;
    let _telemetry = {
        let _in = rt.enter();
        dispatch_telemetry::init("dispatch-agent", Some(args.log_format))
    };
    let name = match args.name.or(file.name.clone()) {
        Some(n) => n,
        None => nix::unistd::gethostname()?
            .into_string()
            .map_err(|_| anyhow::anyhow!("the host name is not UTF-8; pass --name"))?,
    };
    dispatch_core::limits::check_name("--name", &name)?;
    let workdir = match args.workdir.or(file.workdir.as_ref().map(PathBuf::from)) {
        Some(w) => w,
        None => std::env::current_dir()?,
    };
    let workdir = std::fs::canonicalize(&workdir)
        .map_err(|e| anyhow::anyhow!("--workdir {}: {e}", workdir.display()))?;
    let data_dir = match args.data_dir.or(file.data_dir.as_ref().map(PathBuf::from)) {
        Some(d) => d,
        None => dirs_home()?.join(".dispatch").join("agent"),
    };
    dispatch_core::fs::private_dir(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create --data-dir {}: {e}", data_dir.display()))?;
    let token = token(args.token_file.as_deref(), &file, &data_dir)?;
    let mut labels = file.labels.clone();
    labels.extend(args.labels);
    let mut roots = Vec::new();
    for r in &file.workspace_roots {
        roots.push(
            std::fs::canonicalize(r).map_err(|e| anyhow::anyhow!("workspace root {r}: {e}"))?,
        );
    }
    let tls = dispatch_connect::ClientTls {
        ca: args.ca.or(file.tls.ca.as_ref().map(PathBuf::from)),
        cert: args.tls_cert.or(file.tls.cert.as_ref().map(PathBuf::from)),
        key: args.tls_key.or(file.tls.key.as_ref().map(PathBuf::from)),
    };
    let mut trusted_keys = file.trusted_keys.clone();
    trusted_keys.extend(args.trusted_keys);
    let mut changes = dispatch_agent::changes::Policy::for_node(&name);
    changes.apply(&file.changes).map_err(anyhow::Error::msg)?;
    let drain = match args.on_sigterm.as_deref() {
        Some("drain") => true,
        Some(_) => false,
        None => std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    };
    let ephemeral = args
        .ephemeral
        .unwrap_or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
    let cfg = AgentConfig {
        ephemeral,
        health_listen: args.health_listen.clone(),
        metrics_listen: args.metrics_listen.clone(),
        on_sigterm: if drain {
            dispatch_agent::OnSigterm::Drain(args.drain_timeout)
        } else {
            dispatch_agent::OnSigterm::Detach
        },
        changes,
        tls,
        trusted_keys,
        coordinator,
        name,
        labels,
        max_tasks: args.max_tasks.or(file.max_tasks).unwrap_or(2),
        workdir,
        data_dir,
        backends: backends::configure(
            backends::detect(backends::sim_command_for_current_exe()),
            &file.backends,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
        max_backoff: args.max_backoff,
        give_up_after: args.give_up_after,
        api_retries: args.api_retries.or(file.api_retries).unwrap_or(3),
        worker_env: file.worker_env.clone(),
        workspace_roots: roots,
        repositories: file.repositories.clone(),
        token,
    };
    let found: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    tracing::info!(node = %cfg.name, backends = %found.join(", "), max_tasks = cfg.max_tasks, workdir = %cfg.workdir.display(), signed_only = !cfg.trusted_keys.is_empty(), "agent starting");
    match rt.block_on(dispatch_agent::run(cfg, shutdown_signal())) {
        Err(e) if e.is::<dispatch_agent::RefusedForGood>() => {
            eprintln!("dispatch-agent: {e}");
            std::process::exit(dispatch_agent::EXIT_REFUSED);
        }
        other => other,
    }
}

/// The node's token: its own, from an earlier registration (DATA_DIR/node.token), else
/// --token-file, DISPATCH_AGENT_TOKEN or `token:` in --config.
fn token(
    token_file: Option<&std::path::Path>,
    file: &dispatch_core::agent_config::AgentFile,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    let own = data_dir.join(dispatch_agent::NODE_TOKEN_FILE);
    match std::fs::read_to_string(&own) {
        Ok(t) if !t.trim().is_empty() => {
            tracing::info!(file = %own.display(), "using this node's own token, given at its registration");
            return Ok(Some(t.trim().to_string()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read this node's token {}: {e}", own.display()),
    }
    Ok(match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("DISPATCH_AGENT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or(file.token.clone()),
    })
}

fn dirs_home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --data-dir"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
