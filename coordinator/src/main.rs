//! `dispatch-coordinator`: stores tasks and routes them to agent nodes.

use clap::Parser;
use dispatch_coordinator::{Coordinator, CoordinatorConfig, Listener, serve};
use std::path::PathBuf;
use std::time::Duration;

/// The dispatch coordinator: stores every task, plan, question and answer durably (SQLite in
/// --data-dir) and routes tasks to the agent nodes that connect to it.
///
/// Nodes run `dispatch-agent --coordinator http://HOST:PORT`; users point the CLI at the same
/// address with `dispatch --coordinator http://HOST:PORT` (or DISPATCH_COORDINATOR).
#[derive(Parser, Debug)]
#[command(name = "dispatch-coordinator", version, about, long_about)]
struct Args {
    /// TCP address to listen on (port 0 picks a free port; the bound address is printed and
    /// written to DATA_DIR/coordinator.addr).
    #[arg(long, env = "DISPATCH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,

    /// Directory for the SQLite store (created if missing).
    #[arg(long, env = "DISPATCH_DATA_DIR")]
    data_dir: PathBuf,

    /// Also listen on this Unix socket (mode 0600).
    #[arg(long, env = "DISPATCH_SOCKET")]
    socket: Option<PathBuf>,

    /// How often agent nodes and the coordinator send each other heartbeats (e.g. 3s, 500ms).
    /// A side that hears nothing for 2.5 intervals counts the other as gone: a silent node's
    /// tasks show `unreachable` within 2.5 × this, and an agent reconnects to a hung
    /// coordinator.
    #[arg(long, env = "DISPATCH_HEARTBEAT_INTERVAL", default_value = "3s", value_parser = dispatch_core::duration::parse)]
    heartbeat_interval: Duration,

    /// A YAML config file; its `notify:` section (command and/or webhook) is used.
    #[arg(long, env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,

    /// Command to run (with `sh -c`) when a question arrives or a task ends; details are in
    /// DISPATCH_EVENT, DISPATCH_TASK_ID, DISPATCH_NODE, DISPATCH_STATE, DISPATCH_REASON,
    /// DISPATCH_QUESTION_SEQ and DISPATCH_QUESTION. Overrides the config file's notify.command.
    #[arg(long, env = "DISPATCH_NOTIFY_COMMAND")]
    notify_command: Option<String>,

    /// http:// URL to POST a JSON notification to when a question arrives or a task ends.
    /// Overrides the config file's notify.webhook.
    #[arg(long, env = "DISPATCH_NOTIFY_WEBHOOK")]
    notify_webhook: Option<String>,

    /// The grace of a silent node: its tasks stay `unreachable` this long (and go back to
    /// running if it returns), then they are `lost`, their workers fenced and their slots free.
    #[arg(long, env = "DISPATCH_NODE_TIMEOUT", default_value = "60s", value_parser = dispatch_core::duration::parse)]
    node_timeout: Duration,

    /// Worker output stored per task (e.g. 64MiB, 512KiB, or bytes); past it a marker says
    /// where the rest is (the node keeps the whole log).
    #[arg(long, env = "DISPATCH_MAX_LOG_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    max_log_bytes: u64,

    /// A file holding the first admin token (`dsp_<id>_<secret>`, e.g. from a Kubernetes
    /// secret), used when the store has no token yet. Without it the first start makes one and
    /// writes it to DATA_DIR/admin.token (0600).
    #[arg(long, env = "DISPATCH_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,

    /// How long an ended task keeps its event history (plan changes, questions asked, exits);
    /// its final plan, questions, answers and stored output stay. 0 keeps it forever.
    #[arg(long, env = "DISPATCH_HISTORY_RETENTION", default_value = "7d", value_parser = dispatch_core::duration::parse)]
    history_retention: Duration,
}

/// `64MiB`, `512KiB`, `1GiB` or a plain number of bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 64MiB, 512KiB or 1048576"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{s}` has unknown unit `{other}`; use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISPATCH_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let mut config = CoordinatorConfig::new(args.data_dir.clone());
    config.heartbeat_interval = args.heartbeat_interval;
    config.node_timeout = args.node_timeout;
    config.max_log_bytes = args.max_log_bytes;
    config.bootstrap = match &args.bootstrap_token_file {
        Some(p) => dispatch_coordinator::domain::access::Bootstrap::Given(
            dispatch_coordinator::domain::access::read_bootstrap(p)
                .map_err(|e| anyhow::anyhow!(e))?,
        ),
        None => dispatch_coordinator::domain::access::Bootstrap::Generate,
    };
    config.history_retention = args.history_retention;
    let mut notify = match &args.config {
        Some(path) => dispatch_core::notify::load(path).map_err(|e| anyhow::anyhow!(e))?,
        None => Default::default(),
    };
    if args.notify_command.is_some() {
        notify.command = args.notify_command.clone();
    }
    if args.notify_webhook.is_some() {
        notify.webhook = args.notify_webhook.clone();
    }
    notify.validate().map_err(|e| anyhow::anyhow!(e))?;
    config.notify = notify;
    let coordinator = Coordinator::start(config).await?;

    let tcp = dispatch_coordinator::server::bind_tcp(&args.listen).await?;
    let addr = tcp.local_addr()?;
    let mut listeners = vec![Listener::Tcp(tcp)];
    if let Some(path) = &args.socket {
        listeners.push(Listener::Unix(dispatch_coordinator::server::bind_unix(
            path,
        )?));
    }
    let addr_file = args.data_dir.join("coordinator.addr");
    std::fs::write(&addr_file, format!("http://{addr}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", addr_file.display()))?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "coordinator listening on http://{addr}");
    serve(coordinator, listeners, shutdown_signal()).await?;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
