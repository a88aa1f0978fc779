//! The embedded local coordinator (the "daemon"): a coordinator and an agent node named
//! `local` in one detached process, serving on a Unix socket under DISPATCH_HOME. Started on
//! demand by [`ensure_running`], exits by itself when idle. Its commands (`dispatch daemon
//! status|stop`, `dispatch dashboard`) are in `cmd/daemon.rs`.

use anyhow::{Context, Result, anyhow, bail};
use dispatch_agent::AgentConfig;
use dispatch_coordinator::{Coordinator, CoordinatorConfig, Listener};
use dispatch_proto::v1;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// Set in the daemon's environment: a process that has it never starts another daemon.
const DAEMON_CHILD_ENV: &str = "DISPATCH_DAEMON_CHILD";

/// Name of the embedded node.
pub(crate) const LOCAL_NODE: &str = "local";

pub(crate) fn socket(home: &Path) -> PathBuf {
    home.join("daemon.sock")
}

/// `unix:` URL of the daemon's socket.
pub(crate) fn socket_url(home: &Path) -> String {
    format!("unix:{}", socket(home).display())
}

pub(crate) fn log_path(home: &Path) -> PathBuf {
    home.join("daemon.log")
}

/// Connects to a running daemon.
pub(crate) async fn connect_existing(home: &Path) -> Result<Channel> {
    let url = socket_url(home);
    dispatch_connect::connect(&url)
        .await
        .map_err(|e| anyhow!(e))
}

pub(crate) async fn info(channel: Channel) -> Result<v1::InfoResponse> {
    let mut c = v1::dispatch_service_client::DispatchServiceClient::new(channel);
    Ok(c.info(v1::InfoRequest {}).await?.into_inner())
}

/// Connects to the daemon, starting it first when it is not running, and waits until its
/// local node has connected (so the first task can be routed at once).
pub(crate) async fn ensure_running(home: &Path) -> Result<Channel> {
    if let Ok(ch) = connect_existing(home).await
        && info(ch.clone()).await.is_ok_and(|i| i.connected_nodes > 0)
    {
        return Ok(ch);
    }
    // A config the daemon would refuse is reported here, not in its log.
    dispatch_core::notify::load(&home.join("config.yaml")).map_err(|e| anyhow!(e))?;
    local_policy(home)?;
    local_node(home, false)?;
    if std::env::var_os(DAEMON_CHILD_ENV).is_some() {
        bail!(
            "the local daemon is not answering on {} and this process was started by a daemon; refusing to start another",
            socket(home).display()
        );
    }
    dispatch_core::fs::private_dir(home)
        .with_context(|| format!("cannot create {}", home.display()))?;
    spawn_detached(home)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last_err = String::from("it did not answer");
    while tokio::time::Instant::now() < deadline {
        match connect_existing(home).await {
            Ok(ch) => match info(ch.clone()).await {
                Ok(i) if i.connected_nodes > 0 => return Ok(ch),
                Ok(_) => last_err = "its local node has not connected yet".into(),
                Err(e) => last_err = e.to_string(),
            },
            Err(e) => last_err = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!(
        "the local daemon did not start within 15 s ({last_err}); see {}",
        log_path(home).display()
    )
}

fn spawn_detached(home: &Path) -> Result<()> {
    let exe = std::env::current_exe()
        .context("cannot find the dispatch executable to start the daemon")?;
    let log = dispatch_core::fs::private_append(&log_path(home))
        .with_context(|| format!("cannot open {}", log_path(home).display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--home").arg(home).arg("daemon").arg("run");
    cmd.env_remove("DISPATCH_COORDINATOR")
        .env(DAEMON_CHILD_ENV, "1");
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(home);
    // The daemon gets its own session: it never holds the caller's terminal, and a signal to
    // the caller's process group does not reach it.
    dispatch_core::process::in_new_session(&mut cmd);
    let child = cmd.spawn().context("cannot start the local daemon")?;
    // Not waited for: the daemon outlives this command by design. Reap it if it exits early
    // so no zombie stays while this process lives.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(())
}

/// `dispatch daemon run`: serves until idle for `idle_timeout`, or SIGTERM.
pub(crate) fn run_foreground(home: PathBuf, idle_timeout: Duration) -> Result<()> {
    // Everything under DISPATCH_HOME is this user's alone: 0700 directories, 0600 files.
    dispatch_core::fs::private_dir(&home)
        .with_context(|| format!("cannot create {}", home.display()))?;
    let lock_file = dispatch_core::fs::private_append(&home.join("daemon.lock"))?;
    let _lock =
        match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err(_) => {
                eprintln!(
                    "another local daemon already runs for {}; leaving it be",
                    home.display()
                );
                return Ok(());
            }
        };
    let rt = tokio::runtime::Runtime::new()?;
    let _telemetry = {
        let _in = rt.enter();
        dispatch_telemetry::init("dispatch-daemon", Some(dispatch_telemetry::LogFormat::Text))
    };
    rt.block_on(serve(home, idle_timeout))
}

/// The `policy:` and `budgets:` sections of the user's config.yaml: the local daemon's tool
/// approvals and budgets.
fn local_policy(
    home: &Path,
) -> Result<(
    dispatch_core::policy::PolicyConfig,
    dispatch_core::budget::BudgetConfig,
)> {
    let path = home.join("config.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let policy = dispatch_core::policy::parse_section(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let budgets = dispatch_core::budget::parse_section(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((policy, budgets))
}

async fn serve(home: PathBuf, idle_timeout: Duration) -> Result<()> {
    // Read before anything listens: a file the node refuses stops the daemon at once.
    let (backends, changes, file) = local_node(&home, true)?;
    let mut config = CoordinatorConfig::new(home.join("coordinator"));
    config.notify =
        dispatch_core::notify::load(&home.join("config.yaml")).map_err(|e| anyhow!(e))?;
    let (policy, budgets) = local_policy(&home)?;
    config.policy = std::sync::Arc::new(policy);
    config.budgets = std::sync::Arc::new(budgets);
    let coordinator = Coordinator::start(config).await?;
    let listener = dispatch_coordinator::server::bind_unix(&socket(&home))?;
    let pid_file = home.join("daemon.pid");
    dispatch_core::fs::write_private(&pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    tracing::info!(socket = %socket(&home).display(), pid = std::process::id(), "local daemon serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(dispatch_coordinator::serve(
        coordinator.clone(),
        vec![Listener::Unix(std::sync::Arc::new(listener))],
        stop_signal(stop_rx.clone()),
    ));

    // The dashboard, on loopback; `dispatch dashboard` logs its owner in with a one-time URL.
    match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => {
            let addr = l.local_addr()?;
            let login = dispatch_coordinator::web::LocalLogin {
                once_file: home.join("dashboard.once"),
            };
            dispatch_core::fs::write_private(
                &home.join("dashboard.addr"),
                format!("http://{addr}\n").as_bytes(),
            )?;
            let router = dispatch_coordinator::web::local_router(coordinator.clone(), login);
            tokio::spawn(dispatch_coordinator::web::serve(
                router,
                l,
                None,
                dispatch_coordinator::web::SLOW_CLIENT,
                stop_signal(stop_rx.clone()),
            ));
        }
        Err(e) => tracing::warn!(error = %e, "no dashboard: cannot listen on loopback"),
    }

    let workdir = std::env::current_dir().unwrap_or_else(|_| home.clone());
    let max_tasks = std::env::var("DISPATCH_LOCAL_MAX_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4u32)
        .max(1);
    let agent_cfg = AgentConfig {
        coordinator: socket_url(&home),
        name: LOCAL_NODE.into(),
        labels: Default::default(),
        max_tasks,
        workdir,
        data_dir: home.join("agent"),
        backends,
        max_backoff: Duration::from_secs(1),
        // The local socket refuses nobody of its own user: never give up.
        give_up_after: Duration::ZERO,
        ephemeral: false,
        api_retries: file.api_retries.unwrap_or(3),
        worker_env: file.worker_env.clone(),
        workspace_roots: vec![],
        repositories: Default::default(),
        token: None,
        tls: Default::default(),
        trusted_keys: vec![],
        changes,
        on_sigterm: dispatch_agent::OnSigterm::Detach,
        health_listen: None,
        metrics_listen: None,
    };
    let agent = tokio::spawn(dispatch_agent::run(agent_cfg, stop_signal(stop_rx.clone())));

    // Idle exit, driven by task changes: no active task for `idle_timeout` ends the daemon.
    let mut changes = coordinator.publisher.watch();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let active = coordinator.store.count_active().await.unwrap_or(1);
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => break,
            r = changes.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break; }
            }
            _ = tokio::time::sleep(idle_timeout), if active == 0 => {
                if coordinator.store.count_active().await.unwrap_or(1) == 0 {
                    tracing::info!(?idle_timeout, "idle: no active task; exiting");
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = agent.await;
    let _ = server.await;
    let _ = std::fs::remove_file(socket(&home));
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// The embedded node's own settings from `DISPATCH_HOME/agent.yaml` (the agent config file's
/// format): its backends (caps, custom commands, structured output), how changes come home, and
/// the file itself (its API retry limit, what reaches workers). Without `detect`, only checks
/// the file (what the CLI does before it starts a daemon).
fn local_node(
    home: &Path,
    detect: bool,
) -> Result<(
    Vec<dispatch_agent::backends::BackendSpec>,
    dispatch_agent::changes::Policy,
    dispatch_core::agent_config::AgentFile,
)> {
    let agent_file = home.join("agent.yaml");
    let file = match std::fs::read_to_string(&agent_file) {
        Ok(text) => dispatch_core::agent_config::AgentFile::parse(&text)
            .map_err(|e| anyhow!("{}: {e}", agent_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", agent_file.display())),
    };
    let mut changes = dispatch_agent::changes::Policy::for_node(LOCAL_NODE);
    changes
        .apply(&file.changes)
        .map_err(|e| anyhow!("{}: {e}", agent_file.display()))?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "dispatch".into());
    let detected = if detect {
        dispatch_agent::backends::detect(format!(
            "{} sim-worker",
            dispatch_agent::backends::shell_quote(&exe)
        ))
    } else {
        dispatch_agent::backends::assume_detected(&file.backends)
    };
    let backends = dispatch_agent::backends::configure(detected, &file.backends)
        .map_err(|e| anyhow!("{}: {e}", agent_file.display()))?;
    Ok((backends, changes, file))
}
