//! The local daemon: a coordinator and an agent node named `local` in one detached process,
//! serving on a Unix socket under DISPATCH_HOME. Started on demand, exits by itself when idle.

use crate::args::Global;
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

fn socket(home: &Path) -> PathBuf {
    home.join("daemon.sock")
}

/// `unix:` URL of the daemon's socket.
pub(crate) fn socket_url(home: &Path) -> String {
    format!("unix:{}", socket(home).display())
}

fn log_path(home: &Path) -> PathBuf {
    home.join("daemon.log")
}

/// Connects to a running daemon.
pub(crate) async fn connect_existing(home: &Path) -> Result<Channel> {
    let url = socket_url(home);
    dispatch_agent::channel::connect(&url)
        .await
        .map_err(|e| anyhow!(e))
}

async fn info(channel: Channel) -> Result<v1::InfoResponse> {
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
pub(crate) fn run_foreground(g: &Global, idle_timeout: Duration) -> Result<()> {
    let home = crate::client::home(g)?;
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

async fn serve(home: PathBuf, idle_timeout: Duration) -> Result<()> {
    // Read before anything listens: a file the node refuses stops the daemon at once.
    let (backends, changes, file) = local_node(&home, true)?;
    let mut config = CoordinatorConfig::new(home.join("coordinator"));
    config.notify =
        dispatch_core::notify::load(&home.join("config.yaml")).map_err(|e| anyhow!(e))?;
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

/// `dispatch daemon status`.
pub(crate) async fn status(g: &Global) -> Result<u8> {
    let home = crate::client::home(g)?;
    let running = match connect_existing(&home).await {
        Ok(ch) => info(ch).await.ok(),
        Err(_) => None,
    };
    if g.json {
        let v = match &running {
            Some(i) => {
                serde_json::json!({"running": true, "pid": i.pid, "socket": socket(&home), "active_tasks": i.active_tasks, "started_at_ms": i.started_at_ms, "log": log_path(&home)})
            }
            None => serde_json::json!({"running": false, "socket": socket(&home)}),
        };
        println!("{v}");
        return Ok(crate::exit::Exit::Success.into());
    }
    match running {
        Some(i) => {
            let up = (dispatch_coordinator::now_ms() - i.started_at_ms).max(0) / 1000;
            println!(
                "local daemon running: pid {}, up {}, {} active task(s)",
                i.pid,
                crate::render::human_secs(up),
                i.active_tasks
            );
            println!(
                "socket: {}\nlog:    {}",
                socket(&home).display(),
                log_path(&home).display()
            );
        }
        None => {
            println!("local daemon not running (it starts with the first `dispatch \"<prompt>\"`)")
        }
    }
    Ok(crate::exit::Exit::Success.into())
}

/// Cancels every active task and waits (up to 15 s) until each worker's end is recorded.
async fn cancel_all(ch: Channel) -> Result<()> {
    use dispatch_core::TaskState;
    let mut c = crate::client::client_for(ch, None)?;
    let active = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Waiting,
        TaskState::Unreachable,
    ]
    .map(|s| dispatch_proto::convert::state_to_proto(s) as i32)
    .to_vec();
    let (tasks, _) = crate::cmd::list_tasks(&mut c, active, 0).await?;
    for t in &tasks {
        let cancelled = c
            .cancel(v1::CancelRequest { id: t.id.clone() })
            .await?
            .into_inner();
        if cancelled.node.is_empty() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let now = c
                .get_task(v1::GetTaskRequest { id: t.id.clone() })
                .await?
                .into_inner();
            if now.exit_code.is_some() || now.reason.contains("was stopped") {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the worker of `{}` did not stop within 15 s", t.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("cancelled `{}`", t.id);
    }
    Ok(())
}

/// `dispatch daemon stop`.
pub(crate) async fn stop(g: &Global, force: bool) -> Result<u8> {
    let home = crate::client::home(g)?;
    let Ok(ch) = connect_existing(&home).await else {
        println!("local daemon not running");
        return Ok(crate::exit::Exit::Success.into());
    };
    let i = match info(ch.clone()).await {
        Ok(i) => i,
        // It exited (idle) between the connect and the call.
        Err(_) if connect_existing(&home).await.is_err() => {
            println!("local daemon not running");
            return Ok(crate::exit::Exit::Success.into());
        }
        Err(e) => return Err(e),
    };
    if i.active_tasks > 0 && !force {
        bail!(
            "{} task(s) are still active on the local daemon; cancel them (`dispatch status` lists them) or pass --force to stop their workers too",
            i.active_tasks
        );
    }
    if i.active_tasks > 0 {
        cancel_all(ch).await?;
    }
    let pid = nix::unistd::Pid::from_raw(i.pid as i32);
    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        // ESRCH: it exited on its own meanwhile.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot signal the daemon (pid {})", i.pid));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while nix::sys::signal::kill(pid, None).is_ok() {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the daemon (pid {}) did not stop within 15 s; see {}",
                i.pid,
                log_path(&home).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("local daemon stopped");
    Ok(crate::exit::Exit::Success.into())
}

/// `dispatch dashboard`: a one-time login link to the local daemon's dashboard.
pub(crate) async fn dashboard(g: &Global, no_open: bool) -> Result<u8> {
    if let Some(url) = &g.coordinator {
        println!(
            "The coordinator at {url} serves its dashboard where it was started with --http-listen (`dispatch-coordinator --http-listen ADDR`); open that address and log in with your token."
        );
        return Ok(crate::exit::Exit::Success.into());
    }
    let home = crate::client::home(g)?;
    let _ = ensure_running(&home).await?;
    let addr = std::fs::read_to_string(home.join("dashboard.addr")).with_context(|| {
        format!(
            "the local daemon serves no dashboard (no {}); restart it with `dispatch daemon stop`",
            home.join("dashboard.addr").display()
        )
    })?;
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("no randomness: {e}"))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    // Readable by this user only; the daemon deletes it at its first use.
    dispatch_core::fs::write_private(&home.join("dashboard.once"), secret.as_bytes())?;
    let link = format!("{}/login?once={secret}", addr.trim());
    println!("{link}\n(the link logs you in once; run `dispatch dashboard` again for another)");
    if !no_open && std::io::IsTerminal::is_terminal(&std::io::stdout()) && has_display() {
        for opener in ["xdg-open", "open"] {
            if std::process::Command::new(opener)
                .arg(&link)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .is_ok()
            {
                break;
            }
        }
    }
    Ok(crate::exit::Exit::Success.into())
}

fn has_display() -> bool {
    cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
}
