//! Finding and connecting to the coordinator: the configured one, or the local daemon.

use crate::settings::Settings;
use anyhow::{Result, anyhow};
use dispatch_proto::v1::dispatch_service_client::DispatchServiceClient;
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
pub(crate) async fn connect(g: &Settings) -> Result<Target> {
    if let Some(url) = &g.coordinator {
        let tls = dispatch_connect::ClientTls {
            ca: g.ca.clone(),
            ..Default::default()
        };
        let (channel, reached) = dispatch_connect::connect_first(url, &tls)
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
    let home = g.home()?;
    let channel = crate::embedded::ensure_running(&home).await?;
    Ok(Target {
        url: crate::embedded::socket_url(&home),
        local: true,
        client: client_for(channel, None)?,
    })
}
