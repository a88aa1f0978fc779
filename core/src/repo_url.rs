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
    /// The URL without credentials: safe to store, log and show.
    pub redacted: String,
}

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
            return Err(format!("`{}` names no host", redact(url)));
        }
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
            redacted: match user {
                Some(u) if !u.is_empty() => format!("{u}@{host}{path}"),
                _ => format!("{host}{path}"),
            },
        });
    }
    Ok(RepoUrl {
        scheme: Scheme::File,
        host: None,
        redacted: url.to_string(),
    })
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
        Err(_) => {
            // Unparsable: drop anything between `://` and the last `@` of the authority.
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
    }
}

/// True for a host that names the node itself or its private network (by name or address).
fn is_local_host(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.octets()[0] == 100 && (64..128).contains(&a.octets()[1])
        }
        Ok(IpAddr::V6(a)) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
        Err(_) => false,
    }
}

/// Which repositories a node clones (`repositories:` in its config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoPolicy {
    /// Schemes it may use (default: https and ssh; `file` allows repositories on the node).
    #[serde(default = "default_schemes")]
    pub schemes: Vec<String>,
    /// Hosts it may reach (none: any host but its own and its private network's).
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
    /// Checks the policy itself (unknown schemes are an error naming them).
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.schemes {
            if Scheme::parse(s).is_none() {
                return Err(format!(
                    "repositories.schemes: `{s}` is not one of https, ssh, git, http, file"
                ));
            }
        }
        Ok(())
    }

    /// Whether the node may clone `url`; the error says why not and what to change.
    pub fn allows(&self, url: &str) -> Result<RepoUrl, String> {
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
        if let Some(host) = &u.host {
            let listed = self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
            if !self.hosts.is_empty() && !listed {
                return Err(format!(
                    "host `{host}` is not among the hosts this node clones from ({}); see `repositories.hosts` in the agent's config",
                    self.hosts.join(", ")
                ));
            }
            if self.hosts.is_empty() && is_local_host(host) {
                return Err(format!(
                    "host `{host}` is this node or its private network; list it in `repositories.hosts` in the agent's config to clone from it"
                ));
            }
        }
        Ok(u)
    }

    /// `git -c` settings that keep git to the allowed schemes (also for submodules and
    /// redirects).
    pub fn git_config(&self) -> Vec<String> {
        let mut out = vec!["protocol.allow=never".to_string()];
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
    }

    #[test]
    fn the_default_policy_keeps_a_node_to_remote_https_and_ssh() {
        let p = RepoPolicy::default();
        assert!(p.allows("https://github.com/org/repo").is_ok());
        assert!(p.allows("git@github.com:org/repo").is_ok());
        for bad in [
            "file:///etc",
            "/home/me/secret-repo",
            "http://github.com/org/repo",
            "https://127.0.0.1:8080/x",
            "https://localhost/x",
            "https://10.1.2.3/x",
            "https://[::1]/x",
            "git@192.168.1.5:x",
        ] {
            assert!(p.allows(bad).is_err(), "{bad}");
        }
        let e = p.allows("file:///etc").unwrap_err();
        assert!(e.contains("repositories.schemes"), "{e}");
        let p = RepoPolicy {
            schemes: vec!["https".into(), "file".into()],
            hosts: vec!["git.internal".into()],
        };
        assert!(p.allows("/srv/repo").is_ok());
        assert!(p.allows("https://git.internal/r").is_ok());
        assert!(p.allows("https://github.com/r").is_err());
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
                "protocol.allow=never",
                "protocol.https.allow=always",
                "protocol.ssh.allow=always"
            ]
        );
    }
}
