//! `dispatch daemon status|stop` and `dispatch dashboard`: the local daemon's commands (the
//! daemon itself is `embedded.rs`).

use crate::embedded::{connect_existing, ensure_running, info, log_path, socket};
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_proto::v1;
use std::time::Duration;
use tonic::transport::Channel;

/// `dispatch daemon status`.
pub(crate) async fn status(g: &Settings) -> Result<crate::exit::Exit> {
    let home = g.home()?;
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
        return Ok(crate::exit::Exit::Success);
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
    Ok(crate::exit::Exit::Success)
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
    let (tasks, _) = crate::cmd::status::list_tasks(&mut c, active, 0).await?;
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
pub(crate) async fn stop(g: &Settings, force: bool) -> Result<crate::exit::Exit> {
    let home = g.home()?;
    let Ok(ch) = connect_existing(&home).await else {
        println!("local daemon not running");
        return Ok(crate::exit::Exit::Success);
    };
    let i = match info(ch.clone()).await {
        Ok(i) => i,
        // It exited (idle) between the connect and the call.
        Err(_) if connect_existing(&home).await.is_err() => {
            println!("local daemon not running");
            return Ok(crate::exit::Exit::Success);
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
    // Watched before it is signalled: its end is seen even if it comes at once.
    let mut exit = dispatch_core::process::ProcessExit::new(i.pid);
    let pid = nix::unistd::Pid::from_raw(i.pid as i32);
    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        // ESRCH: it exited on its own meanwhile.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot signal the daemon (pid {})", i.pid));
        }
    }
    if tokio::time::timeout(Duration::from_secs(15), exit.wait())
        .await
        .is_err()
    {
        bail!(
            "the daemon (pid {}) did not stop within 15 s; see {}",
            i.pid,
            log_path(&home).display()
        );
    }
    println!("local daemon stopped");
    Ok(crate::exit::Exit::Success)
}

/// `dispatch dashboard`: a one-time login link to the local daemon's dashboard.
pub(crate) async fn dashboard(g: &Settings, no_open: bool) -> Result<crate::exit::Exit> {
    if let Some(url) = &g.coordinator {
        println!(
            "The coordinator at {url} serves its dashboard where it was started with --http-listen (`dispatch-coordinator --http-listen ADDR`); open that address and log in with your token."
        );
        return Ok(crate::exit::Exit::Success);
    }
    let home = g.home()?;
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
    Ok(crate::exit::Exit::Success)
}

fn has_display() -> bool {
    cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
}
