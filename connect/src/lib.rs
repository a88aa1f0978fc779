//! gRPC channels to a coordinator over TCP (`http://host:port`), TLS (`https://host:port`) or
//! a Unix socket (`unix:/path/to/socket`).

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a client verifies (and, for mTLS, proves itself to) an `https://` coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the coordinator's certificate (PEM); none: the system's roots.
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a coordinator that takes node certificates.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

fn read_pem(what: &str, p: &std::path::Path) -> Result<Vec<u8>, String> {
    let data =
        std::fs::read(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))?;
    if !data.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "the {what} {} is not PEM (no `-----BEGIN` line)",
            p.display()
        ));
    }
    Ok(data)
}

impl ClientTls {
    fn config(&self, url: &str) -> Result<ClientTlsConfig, String> {
        let mut c = ClientTlsConfig::new();
        c = match &self.ca {
            Some(ca) => c.ca_certificate(Certificate::from_pem(read_pem("CA file", ca)?)),
            None => c.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(Identity::from_pem(
                    read_pem("certificate", cert)?,
                    read_pem("key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(format!(
                    "a client certificate for {url} needs both its certificate and its key (--tls-cert and --tls-key)"
                ));
            }
        }
        Ok(c)
    }

    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Where the coordinator's certificate must chain to, for messages.
    fn trust(&self) -> String {
        match &self.ca {
            Some(ca) => format!("the CA in {}", ca.display()),
            None => "a CA in this system's roots".to_string(),
        }
    }
}

/// What a failed connection means, when it is about TLS.
fn tls_hint(url: &str, err: &str, tls: &ClientTls) -> String {
    let e = err.to_ascii_lowercase();
    if e.contains("unknownissuer") || e.contains("unknown issuer") || e.contains("badsignature") {
        format!(
            "\nThe coordinator's certificate is not signed by {}: give the CA that signed it with --ca (or `tls: {{ ca: FILE }}` in the config)",
            tls.trust()
        )
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        format!(
            "\nThe coordinator's certificate does not name the host in {url}: connect with a name it holds, or make it again with that --host (`dispatch-coordinator certs init`)"
        )
    } else if e.contains("expired") || e.contains("notvalidyet") {
        "\nThe coordinator's certificate is outside its validity period: check the clocks, or make a new one".to_string()
    } else if url.starts_with("https://")
        && (e.contains("corrupt message")
            || e.contains("invalidcontenttype")
            || e.contains("invalid content type"))
    {
        "\nThe coordinator does not speak TLS there: use an http:// URL, or start it with --tls-cert and --tls-key".to_string()
    } else if url.starts_with("http://")
        && (e.contains("connection reset")
            || e.contains("connection closed")
            || e.contains("frame with invalid size")
            || e.contains("broken pipe")
            || e.contains("h2 protocol error"))
    {
        "\nIf the coordinator serves TLS, its URL starts with https://".to_string()
    } else {
        String::new()
    }
}

/// The addresses in a coordinator list (`URL1,URL2,…`: replicas, or a Service and a fallback),
/// in order; empty entries are left out.
pub fn addresses(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// How long an address that has not answered yet is waited on alone before the next one of
/// the list is tried beside it ("happy eyeballs"): a hung replica first in the list costs a
/// new connection this much, not the health check's whole timeout.
const HEAD_START: Duration = Duration::from_millis(250);

/// Opens a channel to the first coordinator of `list` (`URL1,URL2,…`) that serves. Addresses
/// are tried in order, each given [`HEAD_START`] before the next starts beside it, and the
/// first to answer SERVING wins. A standby replica (health NOT_SERVING) is skipped, and the
/// leader it names is tried next — so one Service address in front of every replica works
/// too. That redirect is followed only with the same scheme (and the same TLS trust), a few
/// times at most. The error names every address and why it failed, in the list's order.
pub async fn connect_first(list: &str, tls: &ClientTls) -> Result<(Channel, String), String> {
    let given = addresses(list);
    if given.is_empty() {
        return Err(
            "no coordinator address; give https://HOST:PORT, http://HOST:PORT or unix:/PATH (several, comma-separated, are tried in order)"
                .into(),
        );
    }
    let mut queue: std::collections::VecDeque<String> =
        given.iter().map(|u| u.to_string()).collect();
    let mut tried: Vec<String> = Vec::new();
    // Each failure with the place its address was started at, to report them in order.
    let mut failures: Vec<(usize, String)> = Vec::new();
    let mut redirects = 0;
    let mut probes = tokio::task::JoinSet::new();
    let start_next = |queue: &mut std::collections::VecDeque<String>,
                      tried: &mut Vec<String>,
                      probes: &mut tokio::task::JoinSet<_>| {
        while let Some(url) = queue.pop_front() {
            if tried.contains(&url) {
                continue;
            }
            tried.push(url.clone());
            let (at, tls) = (tried.len() - 1, tls.clone());
            probes.spawn(async move {
                let reached = match connect_with(&url, &tls).await {
                    Ok(ch) => {
                        let health = serving(&ch).await;
                        Ok((ch, health))
                    }
                    Err(e) => Err(e),
                };
                (at, url, reached)
            });
            return true;
        }
        false
    };
    start_next(&mut queue, &mut tried, &mut probes);
    loop {
        let waiting = queue.iter().any(|u| !tried.contains(u));
        let done = tokio::select! {
            done = probes.join_next() => done,
            _ = tokio::time::sleep(HEAD_START), if waiting => {
                start_next(&mut queue, &mut tried, &mut probes);
                continue;
            }
        };
        let Some(done) = done else {
            // Nothing in flight and nothing left to try.
            break;
        };
        let Ok((at, url, reached)) = done else {
            continue;
        };
        match reached {
            Ok((ch, Health::Serving)) => {
                if !failures.is_empty() || at > 0 {
                    tracing::info!(coordinator = %url, "connected to the coordinator that serves");
                }
                return Ok((ch, url));
            }
            Ok((_, Health::Standby(leader))) => {
                failures.push((
                    at,
                    match &leader {
                        Some(l) => format!("{url}: a standby replica; the leader is {l}"),
                        None => {
                            format!("{url}: a standby replica, or stopping (health NOT_SERVING)")
                        }
                    },
                ));
                if let Some(l) = leader
                    && redirects < 3
                    && !tried.contains(&l)
                    && same_scheme(&url, &l)
                {
                    redirects += 1;
                    queue.push_front(l);
                }
            }
            Ok((_, Health::Failed(why))) => {
                let hint = tls_hint(&url, &why, tls);
                failures.push((at, format!("{url}: {why}{hint}")));
            }
            Err(e) => failures.push((at, e)),
        }
        // An answer that is not SERVING frees the turn: the next address starts now.
        start_next(&mut queue, &mut tried, &mut probes);
    }
    failures.sort_by_key(|(at, _)| *at);
    let mut failures: Vec<String> = failures.into_iter().map(|(_, f)| f).collect();
    if given.len() == 1 && failures.len() == 1 {
        return Err(failures.remove(0));
    }
    Err(format!(
        "no coordinator of {} answered:\n  {}",
        given.join(", "),
        failures.join("\n  ")
    ))
}

/// True when `to` has `from`'s scheme (a standby's redirect never downgrades TLS).
fn same_scheme(from: &str, to: &str) -> bool {
    let scheme = |u: &str| u.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    scheme(from).is_some() && scheme(from) == scheme(to)
}

/// What a coordinator's health check says.
enum Health {
    /// It serves.
    Serving,
    /// A standby replica (or one stopping), with the leader it names.
    Standby(Option<String>),
    /// No usable answer.
    Failed(String),
}

/// The header in which a standby names the leader.
pub const LEADER_HEADER: &str = "dispatch-leader";

/// Asks the standard health check whether the coordinator behind `ch` serves (a standby
/// replica does not); a coordinator without the health service counts as serving.
async fn serving(ch: &Channel) -> Health {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut client = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    let leader = |m: &tonic::metadata::MetadataMap| {
        m.get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|l| !l.is_empty() && l.len() <= 512)
            .map(str::to_string)
    };
    match asked {
        Err(_) => Health::Failed("no answer to a health check within 5 s".into()),
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Health::Serving,
        Ok(Ok(r)) => Health::Standby(leader(r.metadata())),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Health::Serving,
        Ok(Err(s)) => {
            // The transport's own words (a reset, an h2 protocol error) are in the sources:
            // they are what tells a TLS port reached over http://.
            let mut why = s.message().to_string();
            let mut cur = std::error::Error::source(&s);
            while let Some(e) = cur {
                let text = e.to_string();
                if !why.contains(&text) {
                    why.push_str(": ");
                    why.push_str(&text);
                }
                cur = e.source();
            }
            Health::Failed(format!("health check failed: {why}"))
        }
    }
}

/// Opens a channel to the coordinator at `url` (no TLS options: the system's roots for an
/// `https://` URL).
pub async fn connect(url: &str) -> Result<Channel, String> {
    connect_with(url, &ClientTls::default()).await
}

/// Opens a channel to the coordinator at `url`, verifying an `https://` one as `tls` says.
pub async fn connect_with(url: &str, tls: &ClientTls) -> Result<Channel, String> {
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
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(format!(
            "`{url}` is not a coordinator URL; write it as https://HOST:PORT, http://HOST:PORT or unix:/PATH"
        ));
    }
    if !https && tls.any() {
        return Err(format!(
            "TLS options (a CA or a client certificate) are set but the coordinator URL `{url}` is http://; write it as https://"
        ));
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            format!(
                "`{url}` is not a coordinator URL ({e}); write it as https://HOST:PORT, http://HOST:PORT or unix:/PATH"
            )
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if https {
        endpoint = endpoint
            .tls_config(tls.config(url)?)
            .map_err(|e| format!("TLS for {url}: {}", source_chain(&e)))?;
    }
    endpoint.connect().await.map_err(|e| {
        let chain = source_chain(&e);
        format!(
            "cannot connect to the coordinator at {url}: {chain}{}",
            tls_hint(url, &chain, tls)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC server with only the health service, answering `status`; its URL.
    async fn health_server(status: tonic_health::ServingStatus) -> String {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let _keep = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
        });
        url
    }

    #[tokio::test]
    async fn a_hung_first_address_costs_a_head_start_not_a_health_timeout() {
        // Connections to it complete (the kernel accepts them) and nothing ever answers: a
        // paused leader, or one behind a partition that drops its replies.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = health_server(tonic_health::ServingStatus::Serving).await;
        let list = format!("http://{},{serving}", hung.local_addr().unwrap());
        let started = std::time::Instant::now();
        let (_, reached) = connect_first(&list, &ClientTls::default()).await.unwrap();
        assert_eq!(reached, serving);
        // In turn, it would first wait out the hung one's 5 s health check.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_serving_one_wins_over_a_standby_and_failures_are_told_in_order() {
        let standby = health_server(tonic_health::ServingStatus::NotServing).await;
        let serving = health_server(tonic_health::ServingStatus::Serving).await;
        let (_, reached) = connect_first(&format!("{standby},{serving}"), &ClientTls::default())
            .await
            .unwrap();
        assert_eq!(reached, serving);
        // Two closed ports: both fail, and the error names them in the list's order.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (a, b) = (free(), free());
        let e = connect_first(
            &format!("http://{a},{standby},http://{b}"),
            &ClientTls::default(),
        )
        .await
        .unwrap_err();
        let at = |s: &str| e.find(s).unwrap_or_else(|| panic!("{s} in {e}"));
        assert!(
            at(&a.to_string()) < at(&standby) && at(&standby) < at(&b.to_string()),
            "{e}"
        );
        assert!(e.contains("a standby replica"), "{e}");
    }
}
