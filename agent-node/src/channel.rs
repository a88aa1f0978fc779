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

/// Opens a channel to the first coordinator of `list` (`URL1,URL2,…`) that serves, in order;
/// returns it with the address it reached. A standby replica (health NOT_SERVING) is skipped,
/// and the leader it names is tried next — so one Service address in front of every replica
/// works too. That redirect is followed only with the same scheme (and the same TLS trust), a
/// few times at most. The error names every address and why it failed.
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
    let mut failures = Vec::new();
    let mut redirects = 0;
    while let Some(url) = queue.pop_front() {
        if tried.contains(&url) {
            continue;
        }
        tried.push(url.clone());
        let ch = match connect_with(&url, tls).await {
            Ok(ch) => ch,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match serving(&ch).await {
            Health::Serving => {
                if !failures.is_empty() {
                    tracing::info!(coordinator = %url, "connected to the coordinator that serves");
                }
                return Ok((ch, url));
            }
            Health::Standby(leader) => {
                failures.push(match &leader {
                    Some(l) => format!("{url}: a standby replica; the leader is {l}"),
                    None => format!("{url}: a standby replica, or stopping (health NOT_SERVING)"),
                });
                if let Some(l) = leader
                    && redirects < 3
                    && !tried.contains(&l)
                    && same_scheme(&url, &l)
                {
                    redirects += 1;
                    queue.push_front(l);
                }
            }
            Health::Failed(why) => {
                let hint = tls_hint(&url, &why, tls);
                failures.push(format!("{url}: {why}{hint}"));
            }
        }
    }
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
