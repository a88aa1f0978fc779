//! Runs the gRPC services on any number of listeners (TCP and Unix sockets).

use crate::Coordinator;
use crate::conn::Gate;
use crate::service::auth::authenticate;
use crate::service::{agent::AgentSvc, dispatch::DispatchSvc};
use crate::store::postgres::lease::Role;
use dispatch_proto::v1::agent_service_server::AgentServiceServer;
use dispatch_proto::v1::dispatch_service_server::DispatchServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

/// A bound listener to serve on. Shared: a standby replica answers on the listeners it will
/// serve on as leader, and the leader's server takes them over without closing them.
#[derive(Clone)]
pub enum Listener {
    /// TCP (host:port), plain; its connections pass the gate.
    Tcp(Arc<tokio::net::TcpListener>, Arc<Gate>),
    /// TCP with TLS.
    Tls(
        Arc<tokio::net::TcpListener>,
        Box<tonic::transport::ServerTlsConfig>,
        Arc<Gate>,
    ),
    /// A Unix domain socket (local mode; protected by file permissions).
    Unix(Arc<tokio::net::UnixListener>),
    /// Plain TCP serving only the gRPC health check (`--health-listen`): for probes that
    /// cannot speak TLS, such as the kubelet's.
    HealthOnly(Arc<tokio::net::TcpListener>, Arc<Gate>),
}

/// The connections of a shared listener, as a stream (Nagle off on TCP: with delayed ACKs it
/// adds ~40 ms to small messages). Dropping it stops accepting; the listener stays open for
/// its other holders.
///
/// A listener must have one accepting task at a time: tokio keeps one waker per listener, so
/// when a finished server polls it once more after the next one's first poll, the next one is
/// never woken for a connection again (a standby's servers did that to the leader's, which
/// then accepted nothing). `_claim` is that task's claim: dropped with the stream, so
/// the one handing the listeners over can wait until nothing else will poll them.
struct Accepting<L> {
    listener: Arc<L>,
    _claim: Claim,
}

/// [`Accepting`] TCP connections through a [`Gate`]: the ones it refuses are closed at once.
struct Gated {
    accepting: Accepting<tokio::net::TcpListener>,
    gate: Arc<Gate>,
}

impl tokio_stream::Stream for Gated {
    type Item = std::io::Result<crate::conn::Guarded<tokio::net::TcpStream>>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            let (s, peer) = match self.accepting.listener.poll_accept(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Some(Err(e))),
                std::task::Poll::Ready(Ok(c)) => c,
            };
            let _ = s.set_nodelay(true);
            if let Some(g) = self.gate.admit(s, peer) {
                return std::task::Poll::Ready(Some(Ok(g)));
            }
        }
    }
}

/// A server's claim on its listener; the hand-off waits until every claim is dropped.
type Claim = tokio::sync::mpsc::Sender<std::convert::Infallible>;

impl tokio_stream::Stream for Accepting<tokio::net::UnixListener> {
    type Item = std::io::Result<tokio::net::UnixStream>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some(r.map(|(s, _)| s)))
    }
}

/// Largest gRPC message accepted (a plan is ≤ 256 KiB; this leaves room for the envelope).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The services the standard health check reports on ("" is the whole server).
const HEALTH_SERVICES: [&str; 3] = [
    "",
    "dispatch.v1.DispatchService",
    "dispatch.v1.AgentService",
];

/// Spawns `router` serving on listener `l` until `stop` turns true (a macro: the routers'
/// types differ with their layers).
macro_rules! serve_on {
    ($router:expr, $l:expr, $stop:expr, $claim:expr) => {{
        let (router, mut stop, claim) = ($router, $stop, $claim);
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(async move {
            match $l {
                Listener::Tcp(t, gate)
                | Listener::Tls(t, _, gate)
                | Listener::HealthOnly(t, gate) => {
                    router
                        .serve_with_incoming_shutdown(
                            Gated {
                                accepting: Accepting {
                                    listener: t,
                                    _claim: claim,
                                },
                                gate,
                            },
                            signal,
                        )
                        .await
                }
                Listener::Unix(u) => {
                    router
                        .serve_with_incoming_shutdown(own_user_only(u, claim), signal)
                        .await
                }
            }
        })
    }};
}

/// Serves the coordinator on every listener until `shutdown` resolves, with the standard gRPC
/// health service (`grpc.health.v1`, unauthenticated: probes carry no token) and server
/// reflection. When `shutdown` resolves, health turns NOT_SERVING and long-lived streams end
/// at once; the listeners keep answering for `grace` (so load balancers and kubelets see the
/// drain) and then stop.
pub async fn serve(
    c: Arc<Coordinator>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_grace(c, listeners, shutdown, Duration::ZERO).await
}

/// [`serve`], answering for `grace` after `shutdown` with health NOT_SERVING.
pub async fn serve_with_grace(
    c: Arc<Coordinator>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    // Serving: the store is open and migrated (Coordinator::start did both).
    for s in HEALTH_SERVICES {
        health
            .set_service_status(s, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Reflection v1 and v1alpha (what older grpcurl-style tools ask for).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dispatch_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| anyhow::anyhow!("server reflection: {e}"))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| anyhow::anyhow!("server reflection: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let owner = Arc::clone(&c);
    let reporter = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        for s in HEALTH_SERVICES {
            reporter
                .set_service_status(s, tonic_health::ServingStatus::NotServing)
                .await;
        }
        owner.begin_shutdown();
        if !grace.is_zero() {
            tracing::info!(
                ?grace,
                "draining: health is NOT_SERVING; stopping after the grace"
            );
            tokio::time::sleep(grace).await;
        }
        let _ = stop_tx.send(true);
    });
    // Every server here has ended when this returns (awaited below): nothing to hand over.
    let (claim, _released) = tokio::sync::mpsc::channel(1);
    let mut servers = Vec::new();
    for l in listeners {
        if let Listener::HealthOnly(..) = l {
            let router = tonic::transport::Server::builder().add_service(health_svc.clone());
            servers.push(serve_on!(router, l, stop_rx.clone(), claim.clone()));
            continue;
        }
        let mut builder = tonic::transport::Server::builder();
        if let Listener::Tls(_, tls, _) = &l {
            builder = builder
                .tls_config((**tls).clone())
                .map_err(|e| anyhow::anyhow!("TLS: {}", source_chain(&e)))?;
        }
        let router = builder
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(health_svc.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
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
        servers.push(serve_on!(router, l, stop_rx.clone(), claim.clone()));
    }
    for s in servers {
        s.await??;
    }
    Ok(())
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The coordinator's TLS files.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Its certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
    /// The CA whose client certificates name nodes (mTLS); clients without a certificate
    /// still connect (with a token).
    pub client_ca: Option<std::path::PathBuf>,
}

impl ServerTls {
    /// The same certificate and key as a rustls configuration for the dashboard's HTTPS
    /// (`--http-listen`); call [`ServerTls::load`] first, which checks the files.
    pub fn rustls_config(&self) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Reads and checks the files: each error names the file and what is wrong with it.
    pub fn load(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", p.display()))
        };
        let cert = read("--tls-cert", &self.cert)?;
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "--tls-cert {} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----`)",
                self.cert.display()
            );
        }
        let key = read("--tls-key", &self.key)?;
        let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            anyhow::anyhow!(
                "--tls-key {} holds no private key ({e}; expected PEM `-----BEGIN PRIVATE KEY-----`)",
                self.key.display()
            )
        })?;
        // The key must be the certificate's: checked now, not at the first handshake.
        let provider = tokio_rustls::rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(parsed)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        let certified = tokio_rustls::rustls::sign::CertifiedKey::new(
            certs.into_iter().map(|c| c.into_owned()).collect(),
            signing,
        );
        certified.keys_match().map_err(|e| {
            anyhow::anyhow!(
                "--tls-key {} is not the key of --tls-cert {} ({e})",
                self.key.display(),
                self.cert.display()
            )
        })?;
        // A handshake not finished in 10 s is cut (the gate's deadline would close it too).
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.client_ca {
            let pem = read("--client-ca", ca)?;
            let n = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--client-ca {}: {e}", ca.display()))?
                .len();
            if n == 0 {
                anyhow::bail!("--client-ca {} holds no certificate", ca.display());
            }
            cfg = cfg
                .client_ca_root(tonic::transport::Certificate::from_pem(pem))
                .client_auth_optional(true);
        }
        Ok(cfg)
    }
}

/// Connections the kernel may hold for the coordinator before it accepts them (capped by
/// `net.core.somaxconn`). Tokio's default, 1,024, overflows when thousands of nodes reconnect
/// at once after a coordinator restart; an overflowed handshake is reset.
const TCP_BACKLOG: u32 = 8192;

/// Binds TCP `addr` (host:port; a name resolves to each of its addresses in turn) with
/// SO_REUSEADDR, so a restarted coordinator can take its port back at once, and a deep accept
/// backlog. `flag` names the option the address came from, for the error.
pub async fn bind_tcp(flag: &str, addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {flag} {addr}: {e}"))?
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
            anyhow::anyhow!(
                "cannot listen on {addr} ({flag}): {e}; choose another address with {flag}"
            )
        }
        None => anyhow::anyhow!("{flag} {addr} resolves to no address"),
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
    l: Arc<tokio::net::UnixListener>,
    claim: Claim,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    use tokio_stream::StreamExt;
    let me = nix::unistd::Uid::current().as_raw();
    Accepting {
        listener: l,
        _claim: claim,
    }
    .filter(move |conn| match conn {
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

/// The name of a service a standby answers for.
trait StandbyName {
    const NAME: &'static str;
}

struct DispatchName;
impl StandbyName for DispatchName {
    const NAME: &'static str = "dispatch.v1.DispatchService";
}

struct AgentName;
impl StandbyName for AgentName {
    const NAME: &'static str = "dispatch.v1.AgentService";
}

/// A service of a standby replica: every call is UNAVAILABLE, naming the leader.
struct Standby<N> {
    leader: tokio::sync::watch::Receiver<Role>,
    _name: std::marker::PhantomData<fn() -> N>,
}

impl<N> Clone for Standby<N> {
    fn clone(&self) -> Self {
        Standby {
            leader: self.leader.clone(),
            _name: std::marker::PhantomData,
        }
    }
}

impl<N: StandbyName> tonic::server::NamedService for Standby<N> {
    const NAME: &'static str = N::NAME;
}

/// The header in which a standby names the leader (what clients follow).
pub const LEADER_HEADER: &str = "dispatch-leader";

/// What a standby says to a caller.
pub fn standby_status(leader: &str) -> tonic::Status {
    let who = if leader.is_empty() {
        "no replica leads yet (one takes over within seconds)".to_string()
    } else {
        format!("the leader is {leader}")
    };
    tonic::Status::unavailable(format!(
        "this coordinator replica is a standby; {who}. Give every replica in --coordinator URL1,URL2 (or DISPATCH_COORDINATOR), or a Service address that routes to the ready replica"
    ))
}

impl<N> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Standby<N> {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let leader = match &*self.leader.borrow() {
            Role::Standby { leader } => leader.clone(),
            Role::Leader { .. } => String::new(),
        };
        std::future::ready(Ok(standby_status(&leader).into_http()))
    }
}

/// Serves a standby replica on `listeners` until `until` resolves: health NOT_SERVING (so a
/// Kubernetes Service routes only to the leader), every dispatch call UNAVAILABLE naming the
/// leader (`leader` follows who it is). The listeners stay open for the leader's server.
pub async fn serve_standby(
    listeners: &[Listener],
    leader: tokio::sync::watch::Receiver<Role>,
    until: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    for s in HEALTH_SERVICES {
        health
            .set_service_status(s, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        until.await;
        let _ = stop_tx.send(true);
    });
    let (claim, mut released) = tokio::sync::mpsc::channel(1);
    let mut servers = Vec::new();
    for l in listeners.iter().cloned() {
        let mut builder = tonic::transport::Server::builder();
        if let Listener::Tls(_, tls, _) = &l {
            builder = builder
                .tls_config((**tls).clone())
                .map_err(|e| anyhow::anyhow!("TLS: {}", source_chain(&e)))?;
        }
        // Every answer names the leader (the health check's too), so a client that reached
        // a standby through a Service address goes to the leader next.
        let role = leader.clone();
        let name_leader = tower::util::MapResponseLayer::new(
            move |mut r: tonic::codegen::http::Response<tonic::body::Body>| {
                if let Role::Standby { leader } = &*role.borrow()
                    && let Ok(v) = tonic::codegen::http::HeaderValue::from_str(leader)
                    && !leader.is_empty()
                {
                    r.headers_mut().insert(LEADER_HEADER, v);
                }
                r
            },
        );
        let router = builder.layer(name_leader).add_service(health_svc.clone());
        let router = if matches!(l, Listener::HealthOnly(..)) {
            router
        } else {
            router
                .add_service(Standby::<DispatchName> {
                    leader: leader.clone(),
                    _name: std::marker::PhantomData,
                })
                .add_service(Standby::<AgentName> {
                    leader: leader.clone(),
                    _name: std::marker::PhantomData,
                })
        };
        servers.push(serve_on!(router, l, stop_rx.clone(), claim.clone()));
    }
    drop(claim);
    // Stops accepting at once when `until` resolves; calls still in flight finish on their own
    // (tonic drops its incoming stream, and so the claim, when it stops accepting). Returns
    // only when no standby server will poll a listener again, so the leader's servers that
    // take them over are the ones woken for the next connection.
    let mut stop = stop_rx;
    let _ = stop.wait_for(|s| *s).await;
    let handed_over = tokio::time::timeout(Duration::from_secs(2), released.recv()).await;
    if handed_over.is_err() {
        tracing::warn!(
            "the standby's servers did not stop accepting within 2 s; ending them (open calls to the standby are cut)"
        );
        for s in &servers {
            s.abort();
        }
        for s in servers {
            let _ = s.await;
        }
    }
    Ok(())
}
