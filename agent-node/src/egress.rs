//! The node's git on the network. Each repository host is resolved by the node and every
//! address checked against its policy ([`RepoPolicy::route`]); git is then pinned to the checked
//! address — `http.curloptResolve` for http(s), `ssh -o HostName=` for ssh, a rewritten URL for
//! git:// — and follows no redirect, so what git connects to is what was checked.

use dispatch_core::repo_url::{Network, RepoPolicy, Scheme};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::OnceLock;

/// The network through the node's own resolver and interfaces.
pub struct SystemNetwork;

impl Network for SystemNetwork {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok((host, port).to_socket_addrs()?.map(|s| s.ip()).collect())
    }

    fn own_addresses(&self) -> Vec<IpAddr> {
        match nix::ifaddrs::getifaddrs() {
            Ok(addrs) => addrs
                .filter_map(|i| {
                    let a = i.address?;
                    if let Some(v4) = a.as_sockaddr_in() {
                        Some(IpAddr::V4(v4.ip()))
                    } else {
                        a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                    }
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this node's addresses; only loopback and private ranges count as the node");
                Vec::new()
            }
        }
    }
}

/// How git reaches one repository: the URL as shown (no credentials), and the `-c` settings and
/// environment that keep git to the policy and to the checked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitReach {
    /// The URL without credentials.
    pub shown: String,
    /// `git -c` settings.
    pub config: Vec<String>,
    /// Environment for git (ssh's pinning).
    pub env: Vec<(String, String)>,
}

impl GitReach {
    /// git for the node's own repositories: no network settings.
    pub fn local() -> GitReach {
        GitReach {
            shown: String::new(),
            config: Vec::new(),
            env: Vec::new(),
        }
    }

    /// git in `dir` with these settings (never prompting for credentials); its stdout, or its
    /// stderr as the error.
    pub fn run(&self, dir: &std::path::Path, args: &[&str]) -> Result<String, String> {
        dispatch_core::git::Git {
            config: self.config.clone(),
            env: self.env.clone(),
        }
        .run(dir, args)
        .map_err(|e| match e {
            dispatch_core::git::GitError::Spawn(e) => format!(
                "cannot run git ({e}); tasks in repositories need git installed on the node"
            ),
            failed => failed.stderr().to_string(),
        })
    }
}

/// The oldest git that pins an http(s) connection (`http.curloptResolve`).
const PINNING_GIT: (u32, u32) = (2, 37);

/// The installed git's version (major, minor), once.
fn git_version() -> Option<(u32, u32)> {
    static V: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *V.get_or_init(|| {
        let out = dispatch_core::git::Git::local()
            .run(Path::new("/"), &["version"])
            .ok()?;
        parse_git_version(&out)
    })
}

/// `git version 2.47.3` → (2, 47).
fn parse_git_version(s: &str) -> Option<(u32, u32)> {
    let v = s.trim().strip_prefix("git version ")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Where git may go for `url` under `policy`, through `net`; the error says why not.
pub fn reach(policy: &RepoPolicy, url: &str, net: &dyn Network) -> Result<GitReach, String> {
    let egress = policy.route(url, net)?;
    let mut config = policy.git_config();
    let mut env = Vec::new();
    if let Some(route) = &egress.route {
        match egress.url.scheme {
            Scheme::Https | Scheme::Http => {
                let named = matches!(
                    dispatch_core::egress::parse_host(&route.host),
                    Ok(dispatch_core::egress::Host::Name(_))
                );
                if named {
                    match git_version() {
                        Some(v) if v >= PINNING_GIT => {}
                        v => {
                            return Err(format!(
                                "this node's git ({}) cannot be held to the address it checked for `{}` (that needs git {}.{} or later, for http.curloptResolve); upgrade git on the node",
                                v.map_or("unknown version".to_string(), |(a, b)| format!(
                                    "{a}.{b}"
                                )),
                                route.host,
                                PINNING_GIT.0,
                                PINNING_GIT.1
                            ));
                        }
                    }
                }
                config.extend(route.git_config());
            }
            Scheme::Ssh => {
                let base = std::env::var("GIT_SSH_COMMAND")
                    .ok()
                    .filter(|c| !c.trim().is_empty())
                    .unwrap_or_else(|| "ssh".to_string());
                let opts: Vec<String> = route
                    .ssh_options()
                    .iter()
                    .map(|o| format!("-o '{o}'"))
                    .collect();
                env.push((
                    "GIT_SSH_COMMAND".to_string(),
                    format!("{base} {}", opts.join(" ")),
                ));
            }
            Scheme::Git => {
                // git:// has no host identity to keep: the URL itself is pointed at the address.
                let prefix = authority_prefix(url);
                let addr = match route.addr {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                config.push(format!(
                    "url.git://{addr}:{}/.insteadOf={prefix}",
                    route.port
                ));
            }
            Scheme::File => {}
        }
    }
    Ok(GitReach {
        shown: egress.url.redacted,
        config,
        env,
    })
}

/// `scheme://authority/` of a URL, exactly as written.
fn authority_prefix(url: &str) -> String {
    let url = url.trim();
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            format!("{}/", &url[..i + 3 + end])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A plain HTTP server on `ip` that answers every request with `reply` and counts them.
    fn server(ip: &str, reply: String) -> (u16, Arc<AtomicUsize>) {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                h.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply.as_bytes());
            }
        });
        (port, hits)
    }

    /// Runs git with what `reach` gave, against `url`; git's result.
    fn ls_remote(r: &GitReach, url: &str) -> Result<(), String> {
        r.run(&std::env::temp_dir(), &["ls-remote", url]).map(drop)
    }

    struct Names(Vec<(String, IpAddr)>);
    impl Network for Names {
        fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
            Ok(self
                .0
                .iter()
                .filter(|(n, _)| n == host)
                .map(|(_, a)| *a)
                .collect())
        }
        fn own_addresses(&self) -> Vec<IpAddr> {
            Vec::new()
        }
    }

    const NOT_FOUND: &str =
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    #[test]
    fn git_connects_to_the_checked_address_whatever_the_name_resolves_to_later() {
        let (port, checked) = server("127.0.0.2", NOT_FOUND.to_string());
        // The name does not resolve in the real DNS at all: only the pinning can take git there.
        let net = Names(vec![(
            "git.pinned.invalid".into(),
            "127.0.0.2".parse().unwrap(),
        )]);
        let policy = RepoPolicy {
            schemes: vec!["http".into()],
            // A listed name may be the node itself only when its address is listed too.
            hosts: vec!["git.pinned.invalid".into(), "127.0.0.2".into()],
        };
        let url = format!("http://git.pinned.invalid:{port}/repo.git");
        let r = reach(&policy, &url, &net).unwrap();
        assert!(
            r.config.contains(&format!(
                "http.curloptResolve=git.pinned.invalid:{port}:127.0.0.2"
            )),
            "{r:?}"
        );
        let _ = ls_remote(&r, &url);
        assert!(
            checked.load(Ordering::SeqCst) >= 1,
            "git connected to the checked address"
        );
    }

    #[test]
    fn git_follows_no_redirect_past_the_policy() {
        let (inner, reached) = server("127.0.0.1", NOT_FOUND.to_string());
        let (outer, asked) = server(
            "127.0.0.2",
            format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{inner}/repo.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        let policy = RepoPolicy {
            schemes: vec!["http".into()],
            hosts: vec!["127.0.0.2".into()],
        };
        let url = format!("http://127.0.0.2:{outer}/repo.git");
        let r = reach(&policy, &url, &SystemNetwork).unwrap();
        let e = ls_remote(&r, &url).unwrap_err();
        assert!(asked.load(Ordering::SeqCst) >= 1, "git asked: {e}");
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "git followed the redirect to 127.0.0.1: {e}"
        );
        // Without the node's settings git does follow it: the test can tell.
        let plain = GitReach {
            shown: url.clone(),
            config: Vec::new(),
            env: Vec::new(),
        };
        let _ = ls_remote(&plain, &url);
        assert!(reached.load(Ordering::SeqCst) >= 1, "plain git follows");
    }

    #[test]
    fn ssh_and_git_urls_are_pinned_too() {
        let net = Names(vec![("h.example".into(), "140.82.112.3".parse().unwrap())]);
        let all = RepoPolicy {
            schemes: vec!["ssh".into(), "git".into()],
            hosts: Vec::new(),
        };
        let r = reach(&all, "git@h.example:org/r.git", &net).unwrap();
        let cmd = &r.env[0];
        assert_eq!(cmd.0, "GIT_SSH_COMMAND");
        assert!(
            cmd.1
                .ends_with("-o 'HostName=140.82.112.3' -o 'HostKeyAlias=h.example'"),
            "{cmd:?}"
        );
        let r = reach(&all, "git://h.example/org/r.git", &net).unwrap();
        assert!(
            r.config
                .contains(&"url.git://140.82.112.3:9418/.insteadOf=git://h.example/".to_string()),
            "{r:?}"
        );
        assert_eq!(parse_git_version("git version 2.47.3\n"), Some((2, 47)));
        assert_eq!(
            parse_git_version("git version 2.39.5 (Apple Git-154)"),
            Some((2, 39))
        );
    }

    #[test]
    fn the_node_knows_its_own_addresses() {
        let own = SystemNetwork.own_addresses();
        assert!(
            own.iter().any(|a| a.is_loopback()),
            "loopback is among {own:?}"
        );
    }
}
