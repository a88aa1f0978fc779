//! Runs the gRPC services on any number of listeners (TCP and Unix sockets).

use crate::Coordinator;
use crate::service::auth::authenticate;
use crate::service::{agent::AgentSvc, dispatch::DispatchSvc};
use dispatch_proto::v1::agent_service_server::AgentServiceServer;
use dispatch_proto::v1::dispatch_service_server::DispatchServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;

/// A bound listener to serve on.
pub enum Listener {
    /// TCP (host:port).
    Tcp(tokio::net::TcpListener),
    /// A Unix domain socket (local mode; protected by file permissions).
    Unix(tokio::net::UnixListener),
}

/// Largest gRPC message accepted (a plan is ≤ 256 KiB; this leaves room for the envelope).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Serves the coordinator on every listener until `shutdown` resolves.
pub async fn serve(
    c: Arc<Coordinator>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let owner = Arc::clone(&c);
    tokio::spawn(async move {
        shutdown.await;
        owner.begin_shutdown();
        let _ = stop_tx.send(true);
    });
    let mut servers = Vec::new();
    for l in listeners {
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // Every call is authenticated before its handler runs.
            .add_service(InterceptedService::new(
                AgentServiceServer::new(AgentSvc(Arc::clone(&c)))
                    .max_decoding_message_size(MAX_MESSAGE),
                authenticate(Arc::clone(&c)),
            ))
            .add_service(InterceptedService::new(
                DispatchServiceServer::new(DispatchSvc(Arc::clone(&c)))
                    .max_decoding_message_size(MAX_MESSAGE),
                authenticate(Arc::clone(&c)),
            ));
        let mut stop = stop_rx.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        servers.push(tokio::spawn(async move {
            match l {
                // Nagle's algorithm with delayed ACKs adds ~40 ms to small messages.
                Listener::Tcp(t) => {
                    let incoming =
                        tonic::transport::server::TcpIncoming::from(t).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
                Listener::Unix(u) => {
                    router
                        .serve_with_incoming_shutdown(own_user_only(u), signal)
                        .await
                }
            }
        }));
    }
    for s in servers {
        s.await??;
    }
    Ok(())
}

/// Connections the kernel may hold for the coordinator before it accepts them (capped by
/// `net.core.somaxconn`). Tokio's default, 1,024, overflows when thousands of nodes reconnect
/// at once after a coordinator restart; an overflowed handshake is reset.
const TCP_BACKLOG: u32 = 8192;

/// Binds TCP `addr` (host:port; a name resolves to each of its addresses in turn) with
/// SO_REUSEADDR, so a restarted coordinator can take its port back at once, and a deep accept
/// backlog.
pub async fn bind_tcp(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve --listen {addr}: {e}"))?
    {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let bound = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(a)?;
            s.listen(TCP_BACKLOG)
        });
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => {
            anyhow::anyhow!("cannot listen on {addr}: {e}; choose another address with --listen")
        }
        None => anyhow::anyhow!("--listen {addr} resolves to no address"),
    })
}

/// Binds a Unix socket at `path` with mode 0600, replacing a stale socket file left by a
/// process that is gone (but never a socket something still answers on).
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{} is in use by another running process; stop it first or choose another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        dispatch_core::fs::private_dir(dir)?;
    }
    // Created 0600 from the start (a umask for the bind), not chmod-ed after: no moment in
    // which another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = bound.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The connections of a Unix listener, but only from this process's own user (checked with
/// the peer's credentials): the socket carries no token, so the kernel's word is the check.
fn own_user_only(
    l: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    use tokio_stream::StreamExt;
    let me = nix::unistd::Uid::current().as_raw();
    UnixListenerStream::new(l).filter(move |conn| match conn {
        Ok(s) => match s.peer_cred() {
            Ok(c) if c.uid() == me => true,
            Ok(c) => {
                tracing::warn!(
                    uid = c.uid(),
                    "refused a connection to the socket from another user"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a socket connection whose peer is unknown");
                false
            }
        },
        Err(_) => true,
    })
}
