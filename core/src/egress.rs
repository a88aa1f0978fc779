//! Where a node's git may connect. A repository host is judged by the addresses it *is*, never by
//! its text: an address literal in any spelling a resolver accepts (`127.1`, `2130706433`,
//! `0x7f000001`, `0177.0.0.1`, `0`, `[::ffff:127.0.0.1]`, `[::1%25lo]`) is read as the address,
//! and a name is resolved by the node itself. Every address is checked, and git is then made to
//! connect to exactly the checked one ([`Route::git_config`], [`Route::ssh_options`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a host string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address, however it was spelled.
    Addr(IpAddr),
    /// A DNS name (lower case, without a trailing dot).
    Name(String),
}

/// Reads `host` (as it stands in a URL, without brackets) as an address in any spelling the
/// system's resolver accepts, or as a name; an error for what is neither.
pub fn parse_host(host: &str) -> Result<Host, String> {
    let shown = crate::text::printable_line(host);
    if host.is_empty() {
        return Err("no host".into());
    }
    // IPv6, with a zone id (`%25lo` in a URL, `%lo` once decoded) that names an interface of
    // the node: the address is what counts.
    if host.contains(':') {
        let addr = host.split('%').next().unwrap_or("");
        return addr
            .parse::<Ipv6Addr>()
            .map(|a| Host::Addr(IpAddr::V6(a)))
            .map_err(|_| format!("`{shown}` is not an IPv6 address"));
    }
    if let Some(a) = parse_ipv4_any(host) {
        return Ok(Host::Addr(IpAddr::V4(a)));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{shown}` is not a host name"));
    }
    // All-numeric labels that did not read as an address (`999.1`, `0x1g`): a resolver may read
    // them in its own way; refused rather than guessed.
    let last = name.rsplit('.').next().unwrap_or("");
    if last.bytes().all(|b| b.is_ascii_digit()) || is_hex_number(last) {
        return Err(format!(
            "`{shown}` is neither a host name nor an address in any spelling dispatch accepts"
        ));
    }
    Ok(Host::Name(name))
}

fn is_hex_number(s: &str) -> bool {
    (s.starts_with("0x") || s.starts_with("0X")) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An IPv4 address as `inet_aton` reads it: one to four parts, each decimal, `0x` hex or
/// `0` octal; the last part fills the bytes the others leave (`127.1` is 127.0.0.1,
/// `2130706433` is 127.0.0.1). A trailing dot is allowed (`127.0.0.1.`).
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        nums.push(parse_part(p)?);
    }
    let (last, head) = nums.split_last()?;
    let mut value: u64 = 0;
    for &n in head {
        if n > 0xff {
            return None;
        }
        value = (value << 8) | n;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    value = (value << rest_bits) | last;
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

fn parse_part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 12 {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 to inet_aton.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4, Teredo's client),
/// which the network may reach instead.
pub fn embedded_v4(a: &Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let o = a.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (deprecated "compatible"), but not :: or ::1.
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        return Some(tail);
    }
    // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48).
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(tail);
    }
    // 6to4: 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // Teredo: 2001:0::/32, the client's address inverted in the last 32 bits.
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::from(!u32::from(tail)));
    }
    None
}

/// Where an address is, as far as a node's policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The node itself: loopback, unspecified, or one of its own interfaces' addresses.
    Node,
    /// Its private network, or nowhere public: private, shared (CGNAT), link-local, unique
    /// local, multicast, documentation, benchmarking and reserved ranges.
    Private,
    /// Anywhere else.
    Public,
}

/// Where `addr` is, for a node whose interfaces have `own` addresses.
pub fn reach(addr: IpAddr, own: &[IpAddr]) -> Reach {
    let canon = canonical(addr);
    if own.iter().any(|o| canonical(*o) == canon) {
        return Reach::Node;
    }
    match canon {
        IpAddr::V4(a) => reach_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_v4(&a) {
                if own.contains(&IpAddr::V4(v4)) {
                    return Reach::Node;
                }
                let r = reach_v4(v4);
                if r != Reach::Public {
                    return r;
                }
            }
            let s = a.segments();
            if a.is_loopback() || a.is_unspecified() {
                Reach::Node
            } else if (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
                || s[0] == 0
            {
                Reach::Private
            } else {
                Reach::Public
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; any other as it is (the same peer or host
/// either way).
pub fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

fn reach_v4(a: Ipv4Addr) -> Reach {
    let [b0, b1, b2, _] = a.octets();
    if a.is_loopback() || b0 == 0 {
        // 0.0.0.0/8: "this network"; 0.0.0.0 connects to the node itself.
        return Reach::Node;
    }
    let private = a.is_private()
        || a.is_link_local()
        || (b0 == 100 && (64..128).contains(&b1)) // shared address space (CGNAT)
        || (b0 == 192 && b1 == 0 && b2 == 0) // IETF protocol assignments
        || (b0 == 192 && b1 == 0 && b2 == 2) // documentation
        || (b0 == 198 && (18..20).contains(&b1)) // benchmarking
        || (b0 == 198 && b1 == 51 && b2 == 100)
        || (b0 == 203 && b1 == 0 && b2 == 113)
        || b0 >= 224; // multicast, reserved, broadcast
    if private {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// Where git is to connect for one repository URL: the host as the URL names it, its port,
/// and the one checked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The host as the URL spells it (lower case; what TLS and SSH host keys are checked for).
    pub host: String,
    /// The port git connects to.
    pub port: u16,
    /// The address it was resolved and checked to.
    pub addr: IpAddr,
}

impl Route {
    /// `git -c` settings that make an http(s) clone connect to exactly [`Route::addr`]
    /// (`http.curloptResolve`, git ≥ 2.37) and follow no redirect.
    pub fn git_config(&self) -> Vec<String> {
        let addr = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        vec![format!(
            "http.curloptResolve={}:{}:{addr}",
            self.host, self.port
        )]
    }

    /// `ssh` options that make an ssh clone connect to exactly [`Route::addr`], checking the host
    /// key of the name the URL gave.
    pub fn ssh_options(&self) -> Vec<String> {
        let alias = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        vec![
            format!("HostName={}", self.addr),
            format!("HostKeyAlias={alias}"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    /// What the red team tried, and more: every one is the node itself.
    #[test]
    fn every_spelling_of_the_node_itself_is_the_node() {
        for host in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "0177.1",
            "017700000001",
            "0",
            "0.0.0.0",
            "0x0",
            "127.0.0.1.",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::1%25lo",
            "::1%lo",
            "::",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::",
        ] {
            let Ok(Host::Addr(a)) = parse_host(host) else {
                panic!("`{host}` is an address: {:?}", parse_host(host));
            };
            assert_eq!(reach(a, &[]), Reach::Node, "{host} is {a}");
        }
    }

    #[test]
    fn private_networks_in_any_spelling_are_private() {
        for host in [
            "10.0.0.1",
            "10.1",
            "167772161",
            "0xa000001",
            "012.0.0.1",
            "172.16.0.1",
            "192.168.1.5",
            "0xc0a80105",
            "169.254.169.254",
            "2852039166",
            "100.64.0.1",
            "fd00::1",
            "fe80::1%25eth0",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "ff02::1",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            let Ok(Host::Addr(a)) = parse_host(host) else {
                panic!("`{host}`: {:?}", parse_host(host));
            };
            assert_eq!(reach(a, &[]), Reach::Private, "{host} is {a}");
        }
        for host in ["140.82.112.3", "2606:4700::1111", "0x8c527003"] {
            let Ok(Host::Addr(a)) = parse_host(host) else {
                panic!("{host}")
            };
            assert_eq!(reach(a, &[]), Reach::Public, "{host}");
        }
        // The node's own public address is the node.
        assert_eq!(reach(v4("203.0.114.7"), &[v4("203.0.114.7")]), Reach::Node);
    }

    #[test]
    fn names_are_names_and_nonsense_is_refused() {
        assert_eq!(
            parse_host("GitHub.com.").unwrap(),
            Host::Name("github.com".into())
        );
        assert_eq!(
            parse_host("localhost").unwrap(),
            Host::Name("localhost".into())
        );
        for bad in [
            "256.1.1.1",
            "1.2.3.4.5",
            "999999999999",
            "a..b",
            "-x.com",
            "x y",
            "::zz",
            "1.2.3.0x100",
            "4294967296",
        ] {
            assert!(parse_host(bad).is_err(), "`{bad}`: {:?}", parse_host(bad));
        }
    }

    #[test]
    fn a_route_pins_git_and_ssh_to_the_checked_address() {
        let r = Route {
            host: "git.example".into(),
            port: 443,
            addr: v4("140.82.112.3"),
        };
        assert_eq!(
            r.git_config(),
            ["http.curloptResolve=git.example:443:140.82.112.3"]
        );
        let r6 = Route {
            host: "git.example".into(),
            port: 2222,
            addr: "2606:4700::1111".parse().unwrap(),
        };
        assert_eq!(
            r6.git_config(),
            ["http.curloptResolve=git.example:2222:[2606:4700::1111]"]
        );
        assert_eq!(
            r6.ssh_options(),
            [
                "HostName=2606:4700::1111",
                "HostKeyAlias=[git.example]:2222"
            ]
        );
    }

    /// Every way `inet_aton` may spell an IPv4 address.
    fn spellings(a: Ipv4Addr) -> Vec<String> {
        let [b0, b1, b2, b3] = a.octets();
        let n = u32::from(a);
        vec![
            a.to_string(),
            format!("{a}."),
            n.to_string(),
            format!("{n:#x}"),
            format!("0{n:o}"),
            format!("{b0:#x}.{b1:#x}.{b2:#x}.{b3:#x}"),
            format!("0{b0:o}.0{b1:o}.0{b2:o}.0{b3:o}"),
            format!("{b0}.{}", n & 0xff_ffff),
            format!("{b0}.{b1}.{}", n & 0xffff),
            format!("{b0:#x}.0{b1:o}.{}", n & 0xffff),
            format!("::ffff:{a}"),
            format!("::ffff:{:x}:{:x}", n >> 16, n & 0xffff),
            format!("::ffff:{a}%25eth0"),
            format!("64:ff9b::{a}"),
        ]
    }

    proptest! {
        /// However an address is spelled, it is the same address and the same verdict.
        #[test]
        fn every_spelling_reads_as_the_address(n in any::<u32>()) {
            let a = Ipv4Addr::from(n);
            let want = reach(IpAddr::V4(a), &[]);
            for s in spellings(a) {
                let got = parse_host(&s);
                let Ok(Host::Addr(addr)) = got else {
                    return Err(TestCaseError::fail(format!("`{s}` ({a}): {got:?}")));
                };
                prop_assert_eq!(reach(addr, &[]), want, "`{}` for {}", s, a);
                if let IpAddr::V4(got) = addr {
                    prop_assert_eq!(got, a, "`{}`", s);
                }
            }
        }

        /// Whatever the text, reading it never panics, and a name never ends in a label a
        /// resolver could read as a number.
        #[test]
        fn any_text_reads_as_an_address_a_name_or_an_error(s in "[0-9a-fxX.:%]{1,24}") {
            if let Ok(Host::Name(n)) = parse_host(&s) {
                let last = n.rsplit('.').next().unwrap_or("");
                prop_assert!(
                    !last.bytes().all(|b| b.is_ascii_digit()) && !is_hex_number(last),
                    "`{}` taken for the name `{}`", s, n
                );
            }
        }
    }
}
