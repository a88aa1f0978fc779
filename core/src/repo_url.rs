//! Repository URLs as a task names them: which scheme and host they reach, and the URL with its
//! credentials removed — what is stored, logged and shown. A node decides by its own policy
//! which of them it clones ([`RepoPolicy`]).

use serde::Deserialize;
use std::net::IpAddr;

/// How a URL reaches its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `https://`.
    Https,
    /// `http://`.
    Http,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `git://`.
    Git,
    /// `file://` or a local path: a repository on the node itself.
    File,
}

impl Scheme {
    /// The name used in a node's policy and in git's `protocol.<name>.allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
            Scheme::Ssh => "ssh",
            Scheme::Git => "git",
            Scheme::File => "file",
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        Some(match s {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ssh" => Scheme::Ssh,
            "git" => Scheme::Git,
            "file" => Scheme::File,
            _ => return None,
        })
    }
}

/// A repository URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// How it is reached.
    pub scheme: Scheme,
    /// The host (lower case, without user or port), for the network schemes.
    pub host: Option<String>,
    /// The port the URL names (none: the scheme's own).
    pub port: Option<u16>,
    /// The URL without credentials: safe to store, log and show.
    pub redacted: String,
}

/// How a node's start failure ends when the task's commit is not on origin: the coordinator
/// advises a push for such a failure, not another node.
pub const NOT_PUSHED: &str = "; push it first";

/// Takes `url` apart; an error says what is wrong with it.
pub fn parse(url: &str) -> Result<RepoUrl, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("the repository URL is empty".into());
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "`{}` is not a repository URL",
            crate::text::printable_line(url)
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_l = scheme.to_ascii_lowercase();
        let s = Scheme::parse(&scheme_l).ok_or_else(|| {
            format!("`{scheme}://` is not a repository scheme dispatch knows (https, ssh, git, http, file)")
        })?;
        if s == Scheme::File {
            return Ok(RepoUrl {
                scheme: s,
                host: None,
                port: None,
                redacted: url.to_string(),
            });
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let host = host_of(hostport);
        if host.is_empty() {
            return Err(format!("`{}` names no host", redact_unparsed(url)));
        }
        let port = port_of(hostport).map_err(|p| {
            format!(
                "`{}` names port `{}`, which is not a port number",
                redact_unparsed(url),
                crate::text::printable_line(p)
            )
        })?;
        // https/http: all of the user part goes (it is a token more often than not); ssh keeps
        // its user name (`git@`), never a password.
        let user = match (s, userinfo) {
            (Scheme::Ssh, Some(u)) => Some(u.split(':').next().unwrap_or("")),
            _ => None,
        };
        let redacted = match user {
            Some(u) if !u.is_empty() => format!("{scheme}://{u}@{hostport}{path}"),
            _ => format!("{scheme}://{hostport}{path}"),
        };
        return Ok(RepoUrl {
            scheme: s,
            host: Some(host),
            port,
            redacted,
        });
    }
    // scp-like `[user@]host:path` (a colon before any slash), else a local path.
    if let Some(colon) = url.find(':')
        && !url[..colon].contains('/')
    {
        if url[colon + 1..].starts_with(':') {
            // git's `<transport>::<address>` (ext::, fd::): never a repository URL here.
            return Err(format!(
                "`{}` is git transport syntax, not a repository URL",
                crate::text::printable_line(url)
            ));
        }
        let (userhost, path) = url.split_at(colon);
        let (user, host) = match userhost.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or("")), h),
            None => (None, userhost),
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        return Ok(RepoUrl {
            scheme: Scheme::Ssh,
            host: Some(host.to_ascii_lowercase()),
            port: None,
            redacted: match user {
                Some(u) if !u.is_empty() => format!("{u}@{host}{path}"),
                _ => format!("{host}{path}"),
            },
        });
    }
    Ok(RepoUrl {
        scheme: Scheme::File,
        host: None,
        port: None,
        redacted: url.to_string(),
    })
}

/// The port of `host[:port]` or `[v6]:port` (none when it names none); the text when it is not
/// a port number.
fn port_of(hostport: &str) -> Result<Option<u16>, &str> {
    let p = match hostport.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((_, after)) => after.strip_prefix(':').unwrap_or(after),
            None => "",
        },
        None => hostport.split_once(':').map_or("", |(_, p)| p),
    };
    if p.is_empty() {
        return Ok(None);
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(p),
    }
}

/// The host of `host[:port]` or `[v6]:port`, lower case.
fn host_of(hostport: &str) -> String {
    let h = if let Some(rest) = hostport.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    h.to_ascii_lowercase()
}

/// `url` without credentials (as [`parse`] gives it), or the URL as it is when it does not
/// parse (it is then refused anyway).
pub fn redact(url: &str) -> String {
    match parse(url) {
        Ok(u) => u.redacted,
        Err(_) => redact_unparsed(url),
    }
}

/// An unparsable URL without anything between `://` and the last `@` of its authority (what
/// [`parse`]'s own errors show: never through [`redact`], which calls it).
fn redact_unparsed(url: &str) -> String {
    match url.split_once("://") {
        Some((s, rest)) => match rest.split('/').next().and_then(|a| a.rsplit_once('@')) {
            Some((_, host)) => {
                let path = &rest[rest.find('/').unwrap_or(rest.len())..];
                format!("{s}://{host}{path}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The network as a node sees it: how it resolves a name, and its own addresses.
pub trait Network {
    /// The addresses `host` resolves to (for `port`), as the node's resolver gives them.
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
    /// The addresses of the node's own interfaces.
    fn own_addresses(&self) -> Vec<IpAddr>;
}

/// Where the node's git may go for one repository: its URL taken apart and, for the network
/// schemes, the one checked address git is to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The URL.
    pub url: RepoUrl,
    /// The checked address (none for a repository on the node: `file`).
    pub route: Option<crate::egress::Route>,
}

impl Scheme {
    /// The port a URL of this scheme reaches when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
            Scheme::Ssh => 22,
            Scheme::Git => 9418,
            Scheme::File => 0,
        }
    }
}

/// Which repositories a node clones (`repositories:` in its config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoPolicy {
    /// Schemes it may use (default: https and ssh; `file` allows repositories on the node).
    #[serde(default = "default_schemes")]
    pub schemes: Vec<String>,
    /// Hosts it may reach, by name or address (none: any host whose every address is public —
    /// never the node itself or its private network). A listed name may resolve to the private
    /// network but never to the node itself unless that address is listed too.
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn default_schemes() -> Vec<String> {
    vec!["https".into(), "ssh".into()]
}

impl Default for RepoPolicy {
    fn default() -> Self {
        RepoPolicy {
            schemes: default_schemes(),
            hosts: Vec::new(),
        }
    }
}

impl RepoPolicy {
    /// Checks the policy itself (unknown schemes and hosts that are neither a name nor an
    /// address are an error naming them).
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.schemes {
            if Scheme::parse(s).is_none() {
                return Err(format!(
                    "repositories.schemes: `{s}` is not one of https, ssh, git, http, file"
                ));
            }
        }
        for h in &self.hosts {
            let bare = h
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(h);
            crate::egress::parse_host(bare)
                .map_err(|e| format!("repositories.hosts: `{h}`: {e}"))?;
        }
        Ok(())
    }

    /// The listed hosts, read as names or addresses (unreadable ones, refused by
    /// [`RepoPolicy::validate`], match nothing).
    fn listed(&self) -> Vec<crate::egress::Host> {
        self.hosts
            .iter()
            .filter_map(|h| {
                let bare = h
                    .strip_prefix('[')
                    .and_then(|x| x.strip_suffix(']'))
                    .unwrap_or(h);
                crate::egress::parse_host(bare).ok()
            })
            .collect()
    }

    /// Where the node's git may go for `url`: its scheme must be allowed, and its host is judged
    /// by every address it is (an address in any spelling, or a name the node resolves through
    /// `net`), never by its text. The error says why not and what to change.
    pub fn route(&self, url: &str, net: &dyn Network) -> Result<Egress, String> {
        use crate::egress::{Host, Reach, Route, parse_host, reach};
        let u = parse(url)?;
        if !self.schemes.iter().any(|s| s == u.scheme.as_str()) {
            return Err(format!(
                "this node does not clone {} repositories (`{}`); it allows {} — add `{}` to `repositories.schemes` in the agent's config to allow it",
                u.scheme.as_str(),
                u.redacted,
                self.schemes.join(", "),
                u.scheme.as_str()
            ));
        }
        let Some(text) = u.host.clone() else {
            return Ok(Egress {
                url: u,
                route: None,
            });
        };
        let host = parse_host(&text).map_err(|e| format!("`{}`: {e}", u.redacted))?;
        let port = u.port.unwrap_or(u.scheme.default_port());
        let listed = self.listed();
        let name_listed = matches!(&host, Host::Name(_)) && listed.contains(&host);
        let addrs: Vec<IpAddr> = match &host {
            Host::Addr(a) => vec![*a],
            Host::Name(n) => {
                let mut found = net
                    .resolve(n, port)
                    .map_err(|e| format!("host `{n}` does not resolve from this node ({e})"))?;
                found.dedup();
                found
            }
        };
        if addrs.is_empty() {
            return Err(format!(
                "host `{text}` resolves to no address from this node"
            ));
        }
        let own = net.own_addresses();
        let is_listed = |a: &IpAddr| {
            listed.iter().any(|l| match l {
                Host::Addr(x) => crate::egress::canonical(*x) == crate::egress::canonical(*a),
                Host::Name(_) => false,
            })
        };
        if !self.hosts.is_empty() && !name_listed && !addrs.iter().all(is_listed) {
            return Err(format!(
                "host `{text}` is not among the hosts this node clones from ({}); see `repositories.hosts` in the agent's config",
                self.hosts.join(", ")
            ));
        }
        for a in &addrs {
            let r = reach(*a, &own);
            let ok = is_listed(a)
                || (self.hosts.is_empty() && r == Reach::Public)
                || (name_listed && r != Reach::Node);
            if !ok {
                let what = match r {
                    Reach::Node => "this node itself",
                    _ => "on this node's private network",
                };
                let via = if matches!(host, Host::Name(_)) || a.to_string() != text {
                    format!("host `{text}` is {a}, ")
                } else {
                    format!("host `{text}` is ")
                };
                return Err(format!(
                    "{via}{what}; a node clones from such an address only when `repositories.hosts` in the agent's config lists it ({a})"
                ));
            }
        }
        Ok(Egress {
            route: Some(Route {
                host: text,
                port,
                addr: addrs[0],
            }),
            url: u,
        })
    }

    /// `git -c` settings that keep git to the allowed schemes (also for submodules) and follow
    /// no HTTP redirect (a redirect would reach an address nobody checked).
    pub fn git_config(&self) -> Vec<String> {
        let mut out = vec![
            "http.followRedirects=false".to_string(),
            "protocol.allow=never".to_string(),
        ];
        for s in &self.schemes {
            out.push(format!("protocol.{s}.allow=always"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_credentials_dropped() {
        let u = parse("https://alice:ghp_secret@GitHub.com/org/repo.git").unwrap();
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.host.as_deref(), Some("github.com"));
        assert_eq!(u.redacted, "https://GitHub.com/org/repo.git");
        let u = parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(
            (u.scheme, u.redacted.as_str()),
            (Scheme::Ssh, "git@github.com:org/repo.git")
        );
        let u = parse("ssh://git:pw@host:2222/r").unwrap();
        assert_eq!(u.redacted, "ssh://git@host:2222/r");
        assert_eq!(u.host.as_deref(), Some("host"));
        assert_eq!(parse("/srv/repo").unwrap().scheme, Scheme::File);
        assert_eq!(parse("file:///srv/repo").unwrap().scheme, Scheme::File);
        assert!(parse("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(parse("-uoption").is_err());
        assert!(parse("ext::sh%-c%touch").unwrap_err().contains("transport"));
        assert_eq!(redact("https://tok@x.io/a"), "https://x.io/a");
        // Errors that show the URL never recurse (this overflowed the stack once).
        for bad in [
            "https:///x",
            "https://tok@/x",
            "https://h:99999/x",
            "ssh://u:p@h:x/r",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("tok") && !e.contains(":p@"), "{e}");
        }
    }

    /// A network where names resolve as a table says, and the node has 203.0.114.7.
    struct Fake(Vec<(&'static str, Vec<&'static str>)>);

    impl Network for Fake {
        fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
            self.0
                .iter()
                .find(|(n, _)| *n == host)
                .map(|(_, a)| a.iter().map(|a| a.parse().unwrap()).collect())
                .ok_or_else(|| std::io::Error::other("Name or service not known"))
        }
        fn own_addresses(&self) -> Vec<IpAddr> {
            vec!["203.0.114.7".parse().unwrap()]
        }
    }

    fn net() -> Fake {
        Fake(vec![
            ("github.com", vec!["140.82.112.3"]),
            ("localhost", vec!["127.0.0.1", "::1"]),
            ("rebind.example", vec!["140.82.112.4", "127.0.0.1"]),
            ("metadata.example", vec!["169.254.169.254"]),
            ("git.internal", vec!["10.0.0.5"]),
            ("self.example", vec!["203.0.114.7"]),
            ("loop.internal", vec!["127.0.0.1"]),
        ])
    }

    #[test]
    fn the_default_policy_keeps_a_node_to_remote_https_and_ssh() {
        let p = RepoPolicy::default();
        let ok = p.route("https://github.com/org/repo", &net()).unwrap();
        assert_eq!(
            ok.route.unwrap(),
            crate::egress::Route {
                host: "github.com".into(),
                port: 443,
                addr: "140.82.112.3".parse().unwrap()
            }
        );
        let ssh = p.route("git@github.com:org/repo", &net()).unwrap();
        assert_eq!(ssh.route.unwrap().port, 22);
        assert_eq!(
            p.route("ssh://git@github.com:2222/r", &net())
                .unwrap()
                .route
                .unwrap()
                .port,
            2222
        );
        for bad in [
            "file:///etc",
            "/home/me/secret-repo",
            "http://github.com/org/repo",
            "https://127.0.0.1:8080/x",
            "https://localhost/x",
            "https://localhost./x",
            "https://10.1.2.3/x",
            "https://[::1]/x",
            "git@192.168.1.5:x",
            // What the red team tried.
            "https://127.1/x",
            "https://2130706433/x",
            "https://0x7f000001/x",
            "https://0177.0.0.1/x",
            "https://0/x",
            "https://[::1%25lo]/x",
            "https://[::ffff:127.0.0.1]/x",
            "ssh://127.1/x",
            "git@0x7f.1:x",
            // Names that are the node or its network once resolved.
            "https://loop.internal/x",
            "https://rebind.example/x",
            "https://metadata.example/x",
            "https://git.internal/x",
            "https://self.example/x",
            "https://203.0.114.7/x",
            // Names that do not resolve, and ports that are not ports.
            "https://nowhere.example/x",
            "https://github.com:99999/x",
            "https://github.com:x/x",
        ] {
            assert!(p.route(bad, &net()).is_err(), "{bad}");
        }
        let e = p.route("file:///etc", &net()).unwrap_err();
        assert!(e.contains("repositories.schemes"), "{e}");
        let e = p.route("https://2130706433/x", &net()).unwrap_err();
        assert!(
            e.contains("127.0.0.1") && e.contains("this node itself"),
            "{e}"
        );
        let e = p.route("https://rebind.example/x", &net()).unwrap_err();
        assert!(e.contains("127.0.0.1"), "{e}");
        let e = p.route("https://git.internal/x", &net()).unwrap_err();
        assert!(
            e.contains("private network") && e.contains("repositories.hosts"),
            "{e}"
        );
        assert!(
            RepoPolicy {
                schemes: vec!["ftp".into()],
                hosts: vec![]
            }
            .validate()
            .is_err()
        );
        assert_eq!(
            RepoPolicy::default().git_config(),
            [
                "http.followRedirects=false",
                "protocol.allow=never",
                "protocol.https.allow=always",
                "protocol.ssh.allow=always"
            ]
        );
    }

    #[test]
    fn listed_hosts_are_matched_by_name_or_by_address_after_resolution() {
        let p = RepoPolicy {
            schemes: vec!["https".into(), "file".into()],
            hosts: vec![
                "git.internal".into(),
                "127.0.0.2".into(),
                "loop.internal".into(),
            ],
        };
        assert!(p.validate().is_ok());
        assert!(p.route("/srv/repo", &net()).unwrap().route.is_none());
        // A listed name may be on the private network.
        assert!(p.route("https://git.internal/r", &net()).is_ok());
        // A listed address in any spelling.
        for ok in [
            "https://127.0.0.2/r",
            "https://127.2/r",
            "https://0x7f000002/r",
        ] {
            assert!(p.route(ok, &net()).is_ok(), "{ok}");
        }
        // Not listed (by name or address), or a listed name that is the node itself.
        for bad in [
            "https://github.com/r",
            "https://127.0.0.1/r",
            "https://127.1/r",
            "https://loop.internal/r",
        ] {
            assert!(p.route(bad, &net()).is_err(), "{bad}");
        }
        assert!(
            RepoPolicy {
                schemes: vec!["https".into()],
                hosts: vec!["not a host".into()]
            }
            .validate()
            .is_err()
        );
    }
}
