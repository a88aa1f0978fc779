//! gRPC channels to a coordinator over TCP (`http://host:port`) or a Unix socket
//! (`unix:/path/to/socket`).

use hyper_util::rt::TokioIo;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Opens a channel to the coordinator at `url`.
pub async fn connect(url: &str) -> Result<Channel, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        let path = path.trim_start_matches("//").to_string();
        let shown = path.clone();
        // The URI is required by the API but unused: the connector dials the socket.
        return Endpoint::from_static("http://dispatch.local")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to the coordinator socket {shown}: {}",
                    source_chain(&e)
                )
            });
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            format!(
                "`{url}` is not a coordinator URL ({e}); write it as http://HOST:PORT or unix:/PATH"
            )
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|e| {
        format!(
            "cannot connect to the coordinator at {url}: {}",
            source_chain(&e)
        )
    })
}

/// An error with its causes, joined (tonic's top-level transport error says only "transport error").
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
