//! `dispatch-coordinator`: stores tasks and routes them to agent nodes.

use clap::{CommandFactory, Parser, Subcommand};
use dispatch_coordinator::server::ServerTls;
use dispatch_coordinator::{Coordinator, CoordinatorConfig, Listener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The dispatch coordinator: stores every task, plan, question and answer durably (SQLite in
/// --data-dir) and routes tasks to the agent nodes that connect to it.
///
/// Nodes run `dispatch-agent --coordinator https://HOST:PORT`; users point the CLI at the same
/// address with `dispatch --coordinator https://HOST:PORT` (or DISPATCH_COORDINATOR). Every
/// caller over TCP needs a token (`dispatch token create`); a secure set-up:
///
///   dispatch-coordinator certs init /etc/dispatch/tls --host dispatch.example.com --node build-box
///   dispatch-coordinator --listen 0.0.0.0:7070 --data-dir /var/lib/dispatch \
///       --tls-cert /etc/dispatch/tls/server.pem --tls-key /etc/dispatch/tls/server.key
///   dispatch-agent --coordinator https://dispatch.example.com:7070 --ca ca.pem --token-file node.token
#[derive(Parser, Debug)]
#[command(
    name = "dispatch-coordinator",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,

    /// TCP address to listen on (port 0 picks a free port; the bound address is printed and
    /// written to DATA_DIR/coordinator.addr). An address other than loopback needs
    /// --tls-cert and --tls-key, or --insecure.
    #[arg(long, env = "DISPATCH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,

    /// Directory for the SQLite store (created if missing), and the address files
    /// (coordinator.addr, health.addr, metrics.addr) and first admin token. Required to serve
    /// and to back up; with a PostgreSQL --store it holds no tasks.
    #[arg(long, env = "DISPATCH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Keep tasks in PostgreSQL instead of SQLite: postgres://USER:PASSWORD@HOST:PORT/DB
    /// (sslmode=require and the like as URL parameters). Several coordinators may share one
    /// database: one leads and serves, the others are standbys (health NOT_SERVING, every
    /// call UNAVAILABLE naming the leader) and one of them takes over within seconds when the
    /// leader stops. Without it the store is SQLite in --data-dir.
    #[arg(long, env = "DISPATCH_STORE", value_name = "URL")]
    store: Option<String>,

    /// The address clients reach this replica by, told to callers while it is a standby
    /// (default: the --listen address, with this host's name for 0.0.0.0).
    #[arg(long, env = "DISPATCH_ADVERTISE", value_name = "URL")]
    advertise: Option<String>,

    /// With a PostgreSQL --store: how long a leader may go without renewing its lease (it
    /// renews every second) before a standby cuts its database session and takes over. A
    /// leader that dies is replaced at once, without waiting for this.
    #[arg(long, env = "DISPATCH_LEADER_TIMEOUT", default_value = "10s", value_parser = dispatch_core::duration::parse)]
    leader_timeout: Duration,

    /// The server certificate chain (PEM) to serve TLS with (e.g. server.pem from `certs
    /// init`). Clients then use https:// URLs.
    #[arg(
        long,
        env = "DISPATCH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "DISPATCH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// A CA (PEM) whose client certificates identify nodes (mTLS): a node presenting one
    /// connects only as the name in it, and needs no token. Clients without a certificate still
    /// connect with a token.
    #[arg(
        long,
        env = "DISPATCH_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    client_ca: Option<PathBuf>,

    /// Serve plain HTTP/2 on a non-loopback --listen address. Tokens, prompts and answers
    /// then cross the network readable by anyone on the path; a warning is logged at every
    /// start. (Only for a network you trust completely, or behind a TLS-terminating proxy.)
    #[arg(long, env = "DISPATCH_INSECURE")]
    insecure: bool,

    /// Also listen on this Unix socket (mode 0600).
    #[arg(long, env = "DISPATCH_SOCKET")]
    socket: Option<PathBuf>,

    /// How often agent nodes and the coordinator send each other heartbeats (e.g. 3s, 500ms).
    /// A side that hears nothing for 2.5 intervals counts the other as gone: a silent node's
    /// tasks show `unreachable` within 2.5 × this, and an agent reconnects to a hung
    /// coordinator.
    #[arg(long, env = "DISPATCH_HEARTBEAT_INTERVAL", default_value = "3s", value_parser = dispatch_core::duration::parse)]
    heartbeat_interval: Duration,

    /// A YAML config file; its `notify:` section (command and/or webhook), its `budgets:`
    /// section (every task's default budget, users' daily budgets, prices) and its `policy:`
    /// section (tool approvals: which tool calls of Claude Code workers run, ask or are refused)
    /// are used.
    #[arg(long, env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,

    /// Command to run (with `sh -c`) when a question arrives or a task ends; details are in
    /// DISPATCH_EVENT, DISPATCH_TASK_ID, DISPATCH_NODE, DISPATCH_STATE, DISPATCH_REASON,
    /// DISPATCH_QUESTION_SEQ and DISPATCH_QUESTION. Overrides the config file's notify.command.
    #[arg(long, env = "DISPATCH_NOTIFY_COMMAND")]
    notify_command: Option<String>,

    /// https:// (or http://) URL to POST a JSON notification to when a question arrives or a
    /// task ends. Overrides the config file's notify.webhook; its `secret` (an HMAC-SHA256
    /// signature header) and `ca` come from the config file.
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

    /// Connections the gRPC listeners hold at once (0: as many as the open-file limit leaves
    /// room for, which the coordinator raises to its hard limit at start). When it is reached,
    /// the oldest connection that has not authenticated is closed to make room.
    #[arg(long, env = "DISPATCH_MAX_CONNECTIONS", default_value_t = 0)]
    max_connections: usize,

    /// Connections from one address that have not authenticated yet (more are closed at once).
    /// Authenticated connections do not count: a pool of nodes behind one NAT is not limited.
    #[arg(
        long,
        env = "DISPATCH_MAX_UNAUTHENTICATED_PER_ADDRESS",
        default_value_t = 64
    )]
    max_unauthenticated_per_address: usize,

    /// How long a connection may stay without an authenticated call (a TLS handshake never
    /// finished, a silent or trickling client); then it is closed.
    #[arg(long, env = "DISPATCH_AUTH_DEADLINE", default_value = "10s", value_parser = dispatch_core::duration::parse)]
    auth_deadline: Duration,

    /// Long-lived streams (watch, logs --follow, output --follow, dashboard pages) one user
    /// token may hold open at once; past it a new one is refused with resource_exhausted
    /// (0: no limit).
    #[arg(long, env = "DISPATCH_MAX_STREAMS_PER_TOKEN", default_value_t = 64)]
    max_streams_per_token: u32,

    /// Plan history stored per task (e.g. 8MiB): every edit of plan.md is kept as a change
    /// until this much; past it the plan is still kept current and its history ends with a
    /// marker (a worker rewriting plan.md in a loop cannot fill the store).
    #[arg(long, env = "DISPATCH_MAX_PLAN_HISTORY_BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    max_plan_history_bytes: u64,

    /// A file holding the first admin token (`dsp_<id>_<secret>`, e.g. from a Kubernetes
    /// secret), used when the store has no token yet. Without it the first start makes one and
    /// writes it to DATA_DIR/admin.token (0600).
    #[arg(long, env = "DISPATCH_BOOTSTRAP_TOKEN_FILE", value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,

    /// Submits a minute each member token may make, unless the token has its own limit
    /// (`dispatch token create --submits-per-minute`). Admin tokens have only their own. 0: no
    /// limit.
    #[arg(long, env = "DISPATCH_SUBMITS_PER_MINUTE", default_value_t = 60)]
    submits_per_minute: u32,

    /// Active (queued or running) tasks each member token's user may have, unless the token
    /// has its own limit (`--max-active` of `dispatch token create`). Admin tokens have only
    /// their own. 0: no limit.
    #[arg(long, env = "DISPATCH_MAX_ACTIVE_TASKS", default_value_t = 200)]
    max_active_tasks: u32,

    /// How long an ended task keeps its event history (plan changes, questions asked, exits);
    /// its final plan, questions, answers and stored output stay. 0 keeps it forever.
    #[arg(long, env = "DISPATCH_HISTORY_RETENTION", default_value = "7d", value_parser = dispatch_core::duration::parse)]
    history_retention: Duration,

    /// On SIGTERM: the standard gRPC health check (`grpc.health.v1`, served unauthenticated
    /// with server reflection) turns NOT_SERVING and node sessions, watches and log follows
    /// end at once; the listeners keep answering for this long so load balancers and kubelet
    /// probes see the drain, then stop. Set it to the probe period in Kubernetes (e.g. 5s).
    #[arg(long, env = "DISPATCH_SHUTDOWN_GRACE", default_value = "0s", value_parser = dispatch_core::duration::parse)]
    shutdown_grace: Duration,

    /// Serve Prometheus metrics (text format at http://ADDR/metrics; plain HTTP, no token:
    /// bind it to an address only your monitoring reaches). Port 0 picks one; the address is
    /// written to DATA_DIR/metrics.addr.
    #[arg(long, env = "DISPATCH_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,

    /// Serve the web dashboard on this address (port 0 picks one; written to
    /// DATA_DIR/http.addr): every task's checklist live, answering questions, the inbox, the
    /// nodes. Same tokens as gRPC (log in with one) and the same TLS: with --tls-cert it is
    /// HTTPS; plain HTTP on a non-loopback address needs --insecure.
    #[arg(long, env = "DISPATCH_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<String>,

    /// Also serve the gRPC health check alone, in plain text, on this address: for probes that
    /// cannot speak TLS (the kubelet's gRPC probes). Nothing else is served there.
    #[arg(long, env = "DISPATCH_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<String>,

    /// Log lines as `text` or `json` (one object per line, for log shippers). Traces are
    /// exported with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, env = "DISPATCH_LOG_FORMAT", default_value = "text", value_parser = dispatch_telemetry::LogFormat::parse)]
    log_format: dispatch_telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a new random token (`dsp_<id>_<secret>`) for --bootstrap-token-file, e.g. to put
    /// in a Kubernetes secret before the first start. Nothing is stored.
    NewToken,
    /// Make TLS certificates: a private CA, the coordinator's server certificate and node
    /// client certificates (no openssl needed).
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Copy the store to FILE while the coordinator runs: one consistent snapshot (SQLite's
    /// `VACUUM INTO`, which blocks no writer), written 0600 and checked. Restore by stopping
    /// the coordinator and putting FILE in place of DATA_DIR/dispatch.db (docs/operations.md).
    Backup {
        /// The new file (it must not exist).
        file: PathBuf,
    },
    /// Move a single-machine store to PostgreSQL, for a team's coordinator and its replicas:
    /// every task, event, question, answer, command, node, token and audit record, in one
    /// PostgreSQL transaction (all of it or nothing). The target must be empty. Stop the
    /// coordinator first; then start it (or its replicas) with --store URL.
    ///
    ///   dispatch-coordinator migrate-store --from sqlite:/var/lib/dispatch \
    ///       --to postgres://dispatch:PASSWORD@db.example.com/dispatch
    #[command(verbatim_doc_comment)]
    MigrateStore {
        /// The SQLite store: sqlite:DIR (the coordinator's --data-dir, holding dispatch.db)
        /// or sqlite:FILE.
        #[arg(long, value_name = "sqlite:DIR")]
        from: String,
        /// The PostgreSQL database: postgres://USER:PASSWORD@HOST:PORT/DB.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum CertsAction {
    /// Make a CA (ca.pem, ca.key), a server certificate (server.pem, server.key) for the
    /// --host names plus localhost, and a client certificate per --node (node-NAME.pem,
    /// node-NAME.key) in DIR. Keys are written 0600. Give ca.pem to clients (`--ca`).
    Init {
        /// Where to write the files (created 0700).
        dir: PathBuf,
        /// A name (DNS name or IP address) clients reach the coordinator by; repeatable.
        #[arg(long = "host", value_name = "NAME", required = true)]
        hosts: Vec<String>,
        /// A node to make a client certificate for (used with --client-ca); repeatable.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// How long the server and node certificates are valid (the CA: twice as long).
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Replace a CA already in DIR (clients holding the old ca.pem stop trusting the
        /// coordinator).
        #[arg(long)]
        force: bool,
    },
    /// Add node client certificates, signed by the CA in DIR.
    Node {
        /// The directory `certs init` wrote.
        dir: PathBuf,
        /// Node names; each gets node-NAME.pem and node-NAME.key.
        #[arg(required = true)]
        names: Vec<String>,
        /// How long the certificates are valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn certs(action: CertsAction) -> anyhow::Result<()> {
    let (dir, written) = match action {
        CertsAction::Init {
            dir,
            hosts,
            nodes,
            days,
            force,
        } => {
            let w = dispatch_coordinator::certs::init(&dir, &hosts, &nodes, days, force)?;
            (dir, w)
        }
        CertsAction::Node { dir, names, days } => {
            let w = dispatch_coordinator::certs::add_nodes(&dir, &names, days)?;
            (dir, w)
        }
    };
    for f in &written {
        println!("wrote {}", f.display());
    }
    let d = dir.display();
    println!(
        "\nServe with:   dispatch-coordinator --tls-cert {d}/server.pem --tls-key {d}/server.key [--client-ca {d}/ca.pem] …\nClients use:  https://HOST:PORT with --ca {d}/ca.pem (dispatch and dispatch-agent)\nNodes (mTLS): dispatch-agent --tls-cert {d}/node-NAME.pem --tls-key {d}/node-NAME.key …\nKeep ca.key here: it signs new node certificates (`certs node`)."
    );
    Ok(())
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

/// The coordinator's tools (`certs`, `backup`, `migrate-store`, `new-token`): each runs and
/// exits; none serves.
async fn tool(cmd: Cmd, data_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    match cmd {
        Cmd::Certs { action } => certs(action),
        Cmd::Backup { file } => {
            let Some(data_dir) = data_dir else {
                anyhow::bail!("backup needs --data-dir (or DISPATCH_DATA_DIR): where the store is");
            };
            let b =
                dispatch_coordinator::store::sqlite_backup(&data_dir.join("dispatch.db"), &file)
                    .await?;
            println!(
                "Backed up {} tasks (schema {}, {}) to {}",
                b.tasks,
                b.version,
                dispatch_core::fs::human_bytes(b.bytes),
                file.display()
            );
            Ok(())
        }
        Cmd::MigrateStore { from, to } => {
            let Some(path) = from.strip_prefix("sqlite:") else {
                anyhow::bail!(
                    "--from {from}: give sqlite:DIR (the coordinator's --data-dir) or sqlite:FILE"
                );
            };
            let path = PathBuf::from(path);
            let db = if path.is_dir() {
                path.join("dispatch.db")
            } else {
                path
            };
            let started = std::time::Instant::now();
            let moved = dispatch_coordinator::store::migrate::sqlite_to_postgres(&db, &to)
                .await
                .map_err(|e| anyhow::anyhow!("migrate-store: {e}"))?;
            for (table, rows) in &moved.tables {
                println!("{table:<14} {rows:>10} rows");
            }
            println!(
                "Moved {} to {} in {:.1}s. Start the coordinator with --store URL (DISPATCH_STORE); {} is left as it was.",
                db.display(),
                dispatch_coordinator::store::postgres::redact(&to),
                started.elapsed().as_secs_f64(),
                db.display()
            );
            Ok(())
        }
        Cmd::NewToken => {
            println!(
                "{}",
                dispatch_coordinator::domain::access::generate().map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
    }
}

/// The coordinator's settings from its flags (and the notification config file).
fn coordinator_config(
    args: &Args,
    data_dir: &std::path::Path,
) -> anyhow::Result<CoordinatorConfig> {
    let mut config = CoordinatorConfig::new(data_dir.to_path_buf());
    config.heartbeat_interval = args.heartbeat_interval;
    config.node_timeout = args.node_timeout;
    config.max_log_bytes = args.max_log_bytes;
    config.max_plan_history_bytes = args.max_plan_history_bytes;
    config.max_streams_per_token = args.max_streams_per_token;
    dispatch_coordinator::conn::raise_open_file_limit();
    let budget = dispatch_coordinator::conn::fd_budget();
    if args.max_connections > budget {
        tracing::warn!(
            asked = args.max_connections,
            budget,
            "--max-connections is more than the open-file limit leaves room for; using {budget} (raise `ulimit -n` to allow more)"
        );
    }
    config.gate = dispatch_coordinator::conn::Gate::new(dispatch_coordinator::conn::Limits {
        max_connections: if args.max_connections == 0 {
            budget
        } else {
            args.max_connections.min(budget)
        },
        unauthenticated_per_address: args.max_unauthenticated_per_address.max(1),
        deadline: Some(args.auth_deadline),
    });
    config.bootstrap = match &args.bootstrap_token_file {
        Some(p) => dispatch_coordinator::domain::access::Bootstrap::Given(
            dispatch_coordinator::domain::access::read_bootstrap(p)
                .map_err(|e| anyhow::anyhow!(e))?,
        ),
        None => dispatch_coordinator::domain::access::Bootstrap::Generate,
    };
    config.history_retention = args.history_retention;
    config.quota = dispatch_coordinator::domain::access::Quota {
        submits_per_minute: args.submits_per_minute,
        max_active: args.max_active_tasks,
    };
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
    if let Some(path) = &args.config {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let policy = dispatch_core::policy::parse_section(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.policy = std::sync::Arc::new(policy);
        let budgets = dispatch_core::budget::parse_section(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.budgets = std::sync::Arc::new(budgets);
    }
    Ok(config)
}

/// The PostgreSQL store `--store` names; None for SQLite in --data-dir.
fn postgres_url(store: Option<&str>) -> anyhow::Result<Option<String>> {
    Ok(match store.map(str::trim) {
        None | Some("") => None,
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Some(u.to_string())
        }
        Some(u) if u.starts_with("sqlite:") => {
            anyhow::bail!(
                "--store {u}: the SQLite store is chosen with --data-dir DIR (leave --store out)"
            )
        }
        Some(u) => anyhow::bail!(
            "--store `{}` is not a PostgreSQL URL; give postgres://USER:PASSWORD@HOST:PORT/DB, or leave it out for SQLite in --data-dir",
            dispatch_coordinator::store::postgres::redact(u)
        ),
    })
}

/// The ports a coordinator serves on, bound (not yet served).
struct Ports {
    tcp: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    http: Option<tokio::net::TcpListener>,
    health: Option<tokio::net::TcpListener>,
    metrics: Option<tokio::net::TcpListener>,
}

/// Binds every port the flags name, refusing plain HTTP off loopback without --insecure
/// (`tls`, `web_tls`: whether the gRPC port and the dashboard serve TLS).
async fn bind_ports(args: &Args, tls: bool, web_tls: bool) -> anyhow::Result<Ports> {
    let tcp = dispatch_coordinator::server::bind_tcp("--listen", &args.listen).await?;
    let addr = tcp.local_addr()?;
    if !tls && !addr.ip().is_loopback() {
        if !args.insecure {
            anyhow::bail!(
                "refusing to serve plain HTTP on {addr}: tokens, prompts and answers would cross the network readable by anyone on the path. Give --tls-cert and --tls-key (make them with `dispatch-coordinator certs init DIR --host NAME`), listen on a loopback address behind a TLS proxy, or pass --insecure to accept the risk"
            );
        }
        tracing::warn!(%addr, "--insecure: serving plain HTTP on a non-loopback address; tokens, prompts and answers cross the network unencrypted");
    }
    let http = match &args.http_listen {
        Some(h) => {
            let l = dispatch_coordinator::server::bind_tcp("--http-listen", h).await?;
            let haddr = l.local_addr()?;
            if !web_tls && !haddr.ip().is_loopback() && !args.insecure {
                anyhow::bail!(
                    "refusing to serve the dashboard in plain HTTP on {haddr}: tokens and answers would cross the network readable by anyone. Give --tls-cert and --tls-key, use a loopback address behind a TLS proxy, or pass --insecure"
                );
            }
            Some(l)
        }
        None => None,
    };
    let health = match &args.health_listen {
        Some(h) => Some(
            dispatch_coordinator::server::bind_tcp("--health-listen", h)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for health checks: {e}"))?,
        ),
        None => None,
    };
    let metrics_listener = match &args.metrics_listen {
        Some(m) => Some(
            dispatch_coordinator::server::bind_tcp("--metrics-listen", m)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for metrics: {e}"))?,
        ),
        None => None,
    };
    Ok(Ports {
        tcp,
        addr,
        http,
        health,
        metrics: metrics_listener,
    })
}

/// Writes `<data-dir>/<name>`: where a local client finds what this coordinator serves.
fn write_addr(data_dir: &std::path::Path, name: &str, addr: &str) -> anyhow::Result<()> {
    let file = data_dir.join(name);
    std::fs::write(&file, format!("{addr}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))
}

/// The address a replica advertises when --advertise is not given: the host name when it
/// listens on every address, else the address it listens on.
fn advertised(addr: std::net::SocketAddr, scheme: &str) -> String {
    let host = if addr.ip().is_unspecified() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| addr.ip().to_string())
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Serves the dashboard on `l` (its address in `<data-dir>/http.addr`) until the coordinator
/// stops.
fn spawn_dashboard(
    coordinator: &Arc<Coordinator>,
    l: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    slow: Duration,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let haddr = l.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    write_addr(data_dir, "http.addr", &format!("{scheme}://{haddr}"))?;
    tracing::info!(addr = %haddr, "dashboard at {scheme}://{haddr}/");
    let c = Arc::clone(coordinator);
    let stop = coordinator.stopping();
    tokio::spawn(async move {
        let app = dispatch_coordinator::web::router(c, tls.is_some());
        if let Err(e) = dispatch_coordinator::web::serve(app, l, tls, slow, stop).await {
            tracing::error!(error = %e, "the dashboard stopped");
        }
    });
    Ok(())
}

/// Serves until a signal stops it; a PostgreSQL leader also keeps its lease meanwhile and
/// steps down (exits) the moment it loses it.
async fn serve_while_leading(
    serve: impl std::future::Future<Output = anyhow::Result<()>>,
    lease: Option<(Lease, Deposed)>,
) -> anyhow::Result<()> {
    match lease {
        None => serve.await?,
        Some((mut lease, deposed)) => {
            tokio::select! {
                served = serve => {
                    served?;
                    if let Err(e) = lease.release().await {
                        tracing::warn!(error = %e, "could not release the lease (a standby takes over when the connection closes)");
                    }
                }
                reason = lease.keep(Duration::from_secs(1)) => step_down(&reason),
                _ = deposed => step_down("another replica took the lease"),
            }
        }
    }
    Ok(())
}

/// The store a coordinator runs on.
enum Store {
    /// Open already (the first admin token written).
    Sqlite(Arc<Coordinator>),
    /// Opened once this replica holds the lease.
    Postgres(String),
}

impl Args {
    /// The TLS the flags ask for (a certificate and key; a client CA for mutual TLS).
    fn server_tls(&self) -> Option<ServerTls> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            }),
            _ => None,
        }
    }
}

/// Serves /metrics on `l` (its URL in `<data-dir>/metrics.addr`); the leading coordinator's
/// figures once `leading` is set, a replica's while it waits.
fn spawn_metrics(
    l: tokio::net::TcpListener,
    leading: &Arc<std::sync::OnceLock<Arc<Coordinator>>>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let maddr = l.local_addr()?;
    write_addr(data_dir, "metrics.addr", &format!("http://{maddr}/metrics"))?;
    tracing::info!(addr = %maddr, "metrics at http://{maddr}/metrics");
    tokio::spawn(dispatch_coordinator::metrics::serve(
        Arc::clone(leading),
        l,
        std::future::pending(),
    ));
    Ok(())
}

/// The gRPC listeners: the main port (with TLS when given), the Unix socket, and the port that
/// answers health checks only (its address in `<data-dir>/health.addr`).
fn grpc_listeners(
    args: &Args,
    tcp: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    health: Option<tokio::net::TcpListener>,
    gate: &Arc<dispatch_coordinator::conn::Gate>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<Listener>> {
    let mut listeners = vec![match tls {
        Some(t) => Listener::Tls(Arc::new(tcp), Box::new(t), Arc::clone(gate)),
        None => Listener::Tcp(Arc::new(tcp), Arc::clone(gate)),
    }];
    if let Some(path) = &args.socket {
        listeners.push(Listener::Unix(Arc::new(
            dispatch_coordinator::server::bind_unix(path)?,
        )));
    }
    if let Some(l) = health {
        let haddr = l.local_addr()?;
        write_addr(data_dir, "health.addr", &haddr.to_string())?;
        tracing::info!(addr = %haddr, "gRPC health check (only) on {haddr}");
        listeners.push(Listener::HealthOnly(Arc::new(l), Arc::clone(gate)));
    }
    Ok(listeners)
}

/// Starts a coordinator, in an order that is the point (so it stays one function to read top
/// to bottom): every check that can refuse the start and every port bound before anything is
/// written; the SQLite store opened before anything is served; address files written once
/// their port is bound; a PostgreSQL replica serving as a standby until it leads.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cmd) = args.command {
        return tool(cmd, args.data_dir.as_deref()).await;
    }
    let Some(data_dir) = args.data_dir.clone() else {
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--data-dir (or DISPATCH_DATA_DIR) is required: where the coordinator keeps its store",
            )
            .exit();
    };
    let _telemetry = dispatch_telemetry::init("dispatch-coordinator", Some(args.log_format));
    let server_tls = args.server_tls();
    let tls = server_tls.as_ref().map(ServerTls::load).transpose()?;
    let web_tls = server_tls
        .as_ref()
        .map(ServerTls::rustls_config)
        .transpose()?;
    let config = coordinator_config(&args, &data_dir)?;
    let postgres = postgres_url(args.store.as_deref())?;
    // Everything that can refuse this start is checked, and every port bound, before the data
    // directory, the store or the first admin token is created: a refused start leaves nothing
    // behind. (Bound is not served: connections wait in the backlog until the store is open.)
    let Ports {
        tcp,
        addr,
        http,
        health,
        metrics: metrics_listener,
    } = bind_ports(&args, tls.is_some(), web_tls.is_some()).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // With PostgreSQL the data directory holds only the address files: made here too.
    dispatch_core::fs::private_dir(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create --data-dir {}: {e}", data_dir.display()))?;
    // SQLite: the store is open (and the first admin token written) before anything is served.
    let store = match postgres {
        None => Store::Sqlite(Coordinator::start(config.clone()).await?),
        Some(url) => Store::Postgres(url),
    };
    let listeners = grpc_listeners(&args, tcp, tls, health, &config.gate, &data_dir)?;
    // A replica's /metrics answers while it waits too (its leader gauge is 0).
    let leading: Arc<std::sync::OnceLock<Arc<Coordinator>>> = Default::default();
    let metrics = match metrics_listener {
        Some(l) => Some(spawn_metrics(l, &leading, &data_dir)?),
        None => None,
    };
    write_addr(&data_dir, "coordinator.addr", &format!("{scheme}://{addr}"))?;

    let (coordinator, lease) = match store {
        Store::Sqlite(c) => {
            tracing::info!(%addr, data_dir = %data_dir.display(), "coordinator listening on {scheme}://{addr}");
            (c, None)
        }
        Store::Postgres(url) => {
            let advertise = args
                .advertise
                .clone()
                .unwrap_or_else(|| advertised(addr, scheme));
            match lead(&url, &advertise, args.leader_timeout, &listeners, config).await? {
                Some(led) => led,
                None => {
                    tracing::info!("standby stopped");
                    return Ok(());
                }
            }
        }
    };
    if metrics.is_some() {
        let _ = leading.set(Arc::clone(&coordinator));
    }
    if let Some(l) = http {
        spawn_dashboard(
            &coordinator,
            l,
            web_tls.clone(),
            args.auth_deadline,
            &data_dir,
        )?;
    }
    let serve = dispatch_coordinator::server::serve_with_grace(
        coordinator,
        listeners,
        shutdown_signal(),
        args.shutdown_grace,
    );
    serve_while_leading(serve, lease).await?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// A leader that lost its lease stops at once: nothing it writes would commit, and its agents
/// and clients must move to the new leader. Its supervisor restarts it as a standby.
fn step_down(reason: &str) -> ! {
    tracing::error!(
        reason,
        "this replica is no longer the leader; exiting (status 75) so its clients move to the new one"
    );
    std::process::exit(75)
}

/// A leading replica: its coordinator, its lease, and what resolves when a write finds it
/// deposed.
type Led = (Arc<Coordinator>, Option<(Lease, Deposed)>);

/// A leader's lease on the PostgreSQL store.
type Lease = dispatch_coordinator::store::postgres::lease::Lease;

/// Resolves when a write finds this replica deposed.
type Deposed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Campaigns for the lease of the PostgreSQL store at `url`, serving as a standby on
/// `listeners` meanwhile; then opens the store fenced by the lease and starts the coordinator.
/// None when asked to stop while a standby.
async fn lead(
    url: &str,
    advertise: &str,
    stale_after: Duration,
    listeners: &[Listener],
    config: CoordinatorConfig,
) -> anyhow::Result<Option<Led>> {
    use dispatch_coordinator::store::postgres::lease::{Campaign, Role};
    // The URL is checked (and the server reached) once, so a typo fails now, not in a loop.
    dispatch_coordinator::store::postgres::connect_options(url)?;
    let campaign = Campaign {
        url: url.to_string(),
        advertise: advertise.to_string(),
        stale_after,
        poll: Duration::from_millis(250),
    };
    let (role_tx, role_rx) = tokio::sync::watch::channel(Role::Standby {
        leader: String::new(),
    });
    let (led_tx, led_rx) = tokio::sync::oneshot::channel::<()>();
    let standby = tokio::spawn({
        let listeners = listeners.to_vec();
        let role = role_rx.clone();
        async move {
            dispatch_coordinator::server::serve_standby(&listeners, role, async move {
                let _ = led_rx.await;
            })
            .await
        }
    });
    let mut watch_role = role_rx.clone();
    let report = tokio::spawn(async move {
        while watch_role.changed().await.is_ok() {
            if let Role::Standby { leader } = &*watch_role.borrow() {
                tracing::info!(leader = %leader, "standby: health NOT_SERVING; calls are told the leader");
            }
        }
    });
    tracing::info!(store = %dispatch_coordinator::store::postgres::redact(url), advertise, "campaigning for the lease of the PostgreSQL store");
    let started = std::time::Instant::now();
    let lease = tokio::select! {
        lease = campaign.lead(&role_tx) => lease,
        _ = shutdown_signal() => return Ok(None),
    };
    report.abort();
    let store = dispatch_coordinator::store::PgStore::open_fenced(url, lease.epoch)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
    let deposed: Deposed = Box::pin(store.deposed());
    let coordinator = Coordinator::with_store(config, Arc::new(store)).await?;
    let _ = led_tx.send(());
    let _ = standby.await;
    tracing::info!(
        epoch = lease.epoch,
        advertise,
        took_ms = started.elapsed().as_millis() as u64,
        "leading: serving on {advertise}"
    );
    Ok(Some((coordinator, Some((lease, deposed)))))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
