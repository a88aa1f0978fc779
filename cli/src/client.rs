//! Finding and connecting to the coordinator: the configured one, or the local daemon.

use crate::args::Global;
use anyhow::{Result, anyhow};
use dispatch_proto::v1::dispatch_service_client::DispatchServiceClient;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the token to every call (`authorization: Bearer …`), when there is one.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Client of the coordinator's DispatchService.
pub(crate) type Client = DispatchServiceClient<InterceptedService<Channel, Bearer>>;

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

/// A client on `channel` that sends `token` (none for the local daemon's socket).
pub(crate) fn client_for(channel: Channel, token: Option<&str>) -> Result<Client> {
    let header = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {}", t.trim()))
                .map_err(|_| anyhow!("the token holds characters a header cannot carry; check DISPATCH_TOKEN or the token file"))
        })
        .transpose()?;
    Ok(
        DispatchServiceClient::with_interceptor(channel, Bearer(header))
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// Connects to the configured coordinator, or to the local daemon (starting it when it is not
/// running: its store keeps every task, so `status` works the day after too).
pub(crate) async fn connect(g: &Global) -> Result<Target> {
    if let Some(url) = &g.coordinator {
        let tls = dispatch_agent::channel::ClientTls {
            ca: g.ca.clone(),
            ..Default::default()
        };
        let (channel, reached) = dispatch_agent::channel::connect_first(url, &tls)
            .await
            .map_err(|e| {
                if e.contains('\n') {
                    // It already says what to do (a TLS problem, or each address's failure).
                    anyhow!("{e}\nCheck --coordinator or DISPATCH_COORDINATOR.")
                } else {
                    anyhow!("{e}\nIs dispatch-coordinator running there? Check --coordinator or DISPATCH_COORDINATOR.")
                }
            })?;
        if reached.starts_with("http://") {
            let _ = crate::render::PLAIN_HTTP.set(reached.clone());
        }
        return Ok(Target {
            url: reached,
            local: false,
            client: client_for(channel, g.token.as_deref())?,
        });
    }
    let home = home(g)?;
    let channel = crate::daemon::ensure_running(&home).await?;
    Ok(Target {
        url: crate::daemon::socket_url(&home),
        local: true,
        client: client_for(channel, None)?,
    })
}
