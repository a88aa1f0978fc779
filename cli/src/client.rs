//! Finding and connecting to the coordinator: the configured one, or the local daemon.

use crate::args::Global;
use anyhow::{Context, Result, anyhow};
use dispatch_proto::v1::dispatch_service_client::DispatchServiceClient;
use std::path::PathBuf;
use tonic::transport::Channel;

/// Client of the coordinator's DispatchService.
pub(crate) type Client = DispatchServiceClient<Channel>;

/// Where dispatch keeps its files: --home, DISPATCH_HOME, else ~/.dispatch.
pub(crate) fn home(g: &Global) -> Result<PathBuf> {
    if let Some(h) = &g.home {
        return Ok(h.clone());
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        anyhow!("HOME is not set; set DISPATCH_HOME to where dispatch may keep its files")
    })?;
    Ok(PathBuf::from(home).join(".dispatch"))
}

/// The coordinator a command talks to.
pub(crate) struct Target {
    /// URL shown in messages.
    pub(crate) url: String,
    /// True when it is the local daemon.
    pub(crate) local: bool,
    /// The client.
    pub(crate) client: Client,
}

fn client_for(channel: Channel) -> Client {
    DispatchServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024)
}

/// Connects to the configured coordinator, or to the local daemon (starting it when
/// `start_daemon` is set and it is not running).
pub(crate) async fn connect(g: &Global, start_daemon: bool) -> Result<Target> {
    if let Some(url) = &g.coordinator {
        let channel = dispatch_agent::channel::connect(url).await.map_err(|e| {
            anyhow!("{e}\nIs dispatch-coordinator running there? Check --coordinator or DISPATCH_COORDINATOR.")
        })?;
        return Ok(Target {
            url: url.clone(),
            local: false,
            client: client_for(channel),
        });
    }
    let home = home(g)?;
    let channel = if start_daemon {
        crate::daemon::ensure_running(&home).await?
    } else {
        crate::daemon::connect_existing(&home).await.with_context(
            || "the local daemon is not running (it starts with the first `dispatch \"<prompt>\"`)",
        )?
    };
    Ok(Target {
        url: crate::daemon::socket_url(&home),
        local: true,
        client: client_for(channel),
    })
}
