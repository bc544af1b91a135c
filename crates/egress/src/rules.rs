//! Which destinations the proxy may reach: the allow/deny patterns, the ports, and the guard
//! on resolved addresses. Pure decisions; resolving and connecting happen in `proxy`.

use crate::host::{Host, HostError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ports a destination may use unless [`Rules::with_ports`] says otherwise.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

const ALLOW_LIST: &str = "network.allow_domains";
const DENY_LIST: &str = "network.deny_domains";

/// One allow or deny entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Matches this host only.
    Exact(Host),
    /// `*.suffix`: matches names ending in `.suffix` at any depth, never `suffix` itself.
    Wildcard(String),
}

impl Pattern {
    fn parse(list: &'static str, raw: &str) -> Result<Pattern, RuleError> {
        let err = |problem| RuleError {
            list,
            pattern: raw.to_string(),
            problem,
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(err(Problem::Empty));
        }
        if !s.is_ascii() {
            return Err(err(Problem::NonAscii));
        }
        if s.contains("://") || s.contains('/') {
            return Err(err(Problem::NotAHost));
        }
        if s == "*" || s == "*." {
            return Err(err(Problem::BareWildcard));
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            return match Host::parse(suffix) {
                Ok(Host::Name(n)) => Ok(Pattern::Wildcard(n)),
                Ok(Host::Ip(_)) | Err(HostError::NumericName) => Err(err(Problem::WildcardIp)),
                Err(HostError::BadChar) if suffix.contains('*') => {
                    Err(err(Problem::MisplacedWildcard))
                }
                Err(e) => Err(err(Problem::Host(e))),
            };
        }
        if s.contains('*') {
            return Err(err(Problem::MisplacedWildcard));
        }
        match Host::parse(s) {
            Ok(h) => Ok(Pattern::Exact(canonical(h))),
            Err(HostError::BadChar) if s.contains(':') && !s.starts_with('[') => {
                Err(err(Problem::NotAHost))
            }
            Err(e) => Err(err(Problem::Host(e))),
        }
    }

    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Pattern::Exact(p), h) => p == h,
            (Pattern::Wildcard(suffix), Host::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (Pattern::Wildcard(_), Host::Ip(_)) => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(h) => write!(f, "{h}"),
            Pattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// IPv4-mapped IPv6 literals compare equal to their IPv4 form.
fn canonical(h: Host) -> Host {
    match h {
        Host::Ip(ip) => Host::Ip(ip.to_canonical()),
        name => name,
    }
}

/// A pattern that cannot be used, with the list it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list} entry {pattern:?}: {problem}")]
pub struct RuleError {
    /// `network.allow_domains` or `network.deny_domains`.
    pub list: &'static str,
    /// The entry as written.
    pub pattern: String,
    pub problem: Problem,
}

/// What is wrong with one pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the entry is empty")]
    Empty,
    #[error("internationalized names are not supported. Hint: write the punycode form (xn--...), e.g. from `idn2 NAME`")]
    NonAscii,
    #[error("a bare \"*\" would match every host. Hint: list the domains, or \"*.example.com\" for the subdomains of one")]
    BareWildcard,
    #[error("\"*\" may only be the whole leftmost label, as in \"*.example.com\"")]
    MisplacedWildcard,
    #[error("a wildcard cannot cover IP addresses. Hint: list each address exactly")]
    WildcardIp,
    #[error("write only the host name: no scheme, port or path (ports are a separate setting)")]
    NotAHost,
    #[error("{0}")]
    Host(HostError),
}

/// Whether a destination may be reached, before its name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed. `exact` is true when the host matched an exact (non-wildcard) allow entry:
    /// only then may it resolve to loopback, private or link-local addresses.
    Allow {
        exact: bool,
    },
    Deny {
        reason: DenyReason,
    },
}

/// Why a destination was refused. Its text names the setting to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    #[error("not in {ALLOW_LIST}")]
    NotAllowed,
    #[error("matches {DENY_LIST} entry \"{pattern}\"")]
    DenyListed { pattern: String },
    #[error("port {port} is not allowed (allowed ports: {})", list_ports(allowed))]
    Port { port: u16, allowed: Vec<u16> },
    #[error("IP addresses are refused unless listed exactly in {ALLOW_LIST}")]
    IpLiteral,
    #[error("resolves only to non-public addresses ({addr}); only exact {ALLOW_LIST} entries may reach loopback, private or link-local addresses")]
    NonPublicAddress { addr: IpAddr },
    #[error("resolves only to addresses in {DENY_LIST} ({addr})")]
    DenyListedAddress { addr: IpAddr },
    #[error("invalid host: {0}")]
    InvalidHost(HostError),
}

fn list_ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    v.join(", ")
}

/// The validated allow/deny lists and ports of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    ports: Vec<u16>,
}

impl Rules {
    /// Validates `network.allow_domains` and `network.deny_domains`. Ports default to
    /// [`DEFAULT_PORTS`].
    pub fn new(allow: &[String], deny: &[String]) -> Result<Rules, RuleError> {
        let parse = |list, v: &[String]| -> Result<Vec<Pattern>, RuleError> {
            v.iter().map(|p| Pattern::parse(list, p)).collect()
        };
        Ok(Rules {
            allow: parse(ALLOW_LIST, allow)?,
            deny: parse(DENY_LIST, deny)?,
            ports: DEFAULT_PORTS.to_vec(),
        })
    }

    /// Replaces the allowed destination ports (an empty list allows none).
    pub fn with_ports(mut self, ports: &[u16]) -> Rules {
        let mut p = ports.to_vec();
        p.sort_unstable();
        p.dedup();
        self.ports = p;
        self
    }

    /// The allowed destination ports, ascending.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Decides on a destination as named in a request. Deny entries win over allow
    /// entries; IP literals pass only through an exact allow entry.
    pub fn check(&self, host: &str, port: u16) -> Verdict {
        match Host::parse(host) {
            Ok(h) => self.check_host(&h, port),
            Err(e) => Verdict::Deny {
                reason: DenyReason::InvalidHost(e),
            },
        }
    }

    /// [`Rules::check`] for an already parsed host.
    pub fn check_host(&self, host: &Host, port: u16) -> Verdict {
        let host = canonical(host.clone());
        let deny = |reason| Verdict::Deny { reason };
        if let Some(p) = self.deny.iter().find(|p| p.matches(&host)) {
            return deny(DenyReason::DenyListed {
                pattern: p.to_string(),
            });
        }
        // The host first, then its port: "not in allow_domains" is the answer a refused
        // host deserves, whatever port it was asked on.
        let exact = self
            .allow
            .iter()
            .any(|p| matches!(p, Pattern::Exact(_)) && p.matches(&host));
        let verdict = if exact {
            Verdict::Allow { exact: true }
        } else if let Host::Ip(_) = host {
            return deny(DenyReason::IpLiteral);
        } else if self.allow.iter().any(|p| p.matches(&host)) {
            Verdict::Allow { exact: false }
        } else {
            return deny(DenyReason::NotAllowed);
        };
        if !self.ports.contains(&port) {
            return deny(DenyReason::Port {
                port,
                allowed: self.ports.clone(),
            });
        }
        verdict
    }

    /// The guard after resolution (DNS rebinding, SSRF to metadata services): keeps the
    /// addresses a connection may go to, in order. Addresses listed as IP literals in
    /// `deny_domains` are always dropped; non-public ones (see [`is_public`]) are dropped
    /// unless the host matched an exact allow entry (`exact`). Refuses when none is left.
    pub fn screen_addresses(
        &self,
        exact: bool,
        addrs: &[IpAddr],
    ) -> Result<Vec<IpAddr>, DenyReason> {
        let mut kept = Vec::new();
        let mut first_refusal = None;
        for &addr in addrs {
            let h = Host::Ip(addr.to_canonical());
            if self.deny.iter().any(|p| p.matches(&h)) {
                first_refusal.get_or_insert(DenyReason::DenyListedAddress { addr });
            } else if !exact && !is_public(addr) {
                first_refusal.get_or_insert(DenyReason::NonPublicAddress { addr });
            } else if !kept.contains(&addr) {
                kept.push(addr);
            }
        }
        match (kept.is_empty(), first_refusal) {
            (false, _) => Ok(kept),
            (true, Some(r)) => Err(r),
            (true, None) => Err(DenyReason::NotAllowed),
        }
    }
}

/// False for addresses a sandbox must not reach through a wildcard entry: unspecified,
/// loopback, private (RFC 1918, fc00::/7), shared (100.64/10), link-local (169.254/16 with
/// the cloud metadata address, fe80::/10), multicast, broadcast and reserved ranges, and
/// IPv6 forms that embed such an IPv4 address (mapped, compatible, NAT64, 6to4).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let non_public = a == 0                       // "this network", 0.0.0.0
        || a == 10                                // RFC 1918
        || a == 127                               // loopback
        || (a == 100 && (64..128).contains(&b))   // shared address space (CGNAT, tailnets)
        || (a == 169 && b == 254)                 // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))    // RFC 1918
        || (a == 192 && b == 0 && c == 0)         // IETF protocol assignments
        || (a == 192 && b == 168)                 // RFC 1918
        || (a == 198 && (b == 18 || b == 19))     // benchmarking
        || a >= 224; // multicast, reserved, broadcast
    !non_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let non_public = ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00   // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80   // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0   // site-local fec0::/10 (deprecated)
        || (s[0] & 0xff00) == 0xff00; // multicast
    !non_public
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d),
/// NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:AABB:CCDD::) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5]
        && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified()))
    {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rules::new(&v(allow), &v(deny)).unwrap()
    }

    fn problem(allow: &str) -> Problem {
        Rules::new(&[allow.to_string()], &[]).unwrap_err().problem
    }

    const ALLOW: Verdict = Verdict::Allow { exact: false };
    const EXACT: Verdict = Verdict::Allow { exact: true };
    const NOT_ALLOWED: Verdict = Verdict::Deny {
        reason: DenyReason::NotAllowed,
    };

    #[test]
    fn exact_and_wildcard() {
        let r = rules(&["api.github.com", "*.example.com"], &[]);
        assert_eq!(r.check("api.github.com", 443), EXACT);
        assert_eq!(r.check("API.GITHUB.COM.", 443), EXACT);
        assert_eq!(r.check("github.com", 443), NOT_ALLOWED);
        assert_eq!(r.check("x.api.github.com", 443), NOT_ALLOWED);
        assert_eq!(r.check("a.example.com", 443), ALLOW);
        assert_eq!(r.check("a.b.c.example.com", 80), ALLOW);
        // the apex is not covered by its wildcard
        assert_eq!(r.check("example.com", 443), NOT_ALLOWED);
        assert_eq!(r.check("badexample.com", 443), NOT_ALLOWED);
        assert_eq!(r.check("example.com.evil.net", 443), NOT_ALLOWED);
    }

    #[test]
    fn exact_wins_over_wildcard_for_the_address_guard() {
        let r = rules(&["*.example.com", "db.example.com"], &[]);
        assert_eq!(r.check("db.example.com", 443), EXACT);
    }

    #[test]
    fn deny_wins() {
        let r = rules(
            &["*.example.com", "bad.example.com"],
            &["bad.example.com", "*.evil.example.com"],
        );
        let denied = |p: &str| Verdict::Deny {
            reason: DenyReason::DenyListed {
                pattern: p.to_string(),
            },
        };
        assert_eq!(r.check("bad.example.com", 443), denied("bad.example.com"));
        assert_eq!(
            r.check("x.evil.example.com", 443),
            denied("*.evil.example.com")
        );
        assert_eq!(r.check("evil.example.com", 443), ALLOW);
        // a denied host is reported as denied whatever its port
        assert_eq!(r.check("bad.example.com", 22), denied("bad.example.com"));
    }

    #[test]
    fn ports() {
        let r = rules(&["example.com"], &[]);
        let v = r.check("example.com", 22);
        assert_eq!(
            v,
            Verdict::Deny {
                reason: DenyReason::Port {
                    port: 22,
                    allowed: vec![80, 443]
                }
            }
        );
        let Verdict::Deny { reason } = v else {
            unreachable!()
        };
        assert_eq!(
            reason.to_string(),
            "port 22 is not allowed (allowed ports: 80, 443)"
        );
        let r = r.with_ports(&[8443, 22, 22]);
        assert_eq!(r.ports(), &[22, 8443]);
        assert_eq!(r.check("example.com", 22), EXACT);
        assert!(matches!(r.check("example.com", 443), Verdict::Deny { .. }));
    }

    #[test]
    fn ip_literals_only_when_listed_exactly() {
        let r = rules(&["*.example.com", "192.0.2.7", "[2001:db8::1]"], &[]);
        let ip = Verdict::Deny {
            reason: DenyReason::IpLiteral,
        };
        assert_eq!(r.check("192.0.2.8", 443), ip);
        assert_eq!(r.check("127.0.0.1", 443), ip);
        assert_eq!(r.check("192.0.2.7", 443), EXACT);
        assert_eq!(r.check("[::ffff:192.0.2.7]", 443), EXACT);
        assert_eq!(r.check("[2001:db8::1]", 443), EXACT);
        assert_eq!(r.check("2001:db8::1", 443), EXACT);
        assert_eq!(
            r.check("127.1", 443),
            Verdict::Deny {
                reason: DenyReason::InvalidHost(HostError::NumericName)
            }
        );
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(problem("*"), Problem::BareWildcard);
        assert_eq!(problem("*."), Problem::BareWildcard);
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem("bücher.de"), Problem::NonAscii);
        assert_eq!(problem("*.bücher.de"), Problem::NonAscii);
        assert_eq!(problem("a.*.com"), Problem::MisplacedWildcard);
        assert_eq!(problem("*foo.com"), Problem::MisplacedWildcard);
        assert_eq!(problem("*.*.com"), Problem::MisplacedWildcard);
        assert_eq!(problem("*.10.0.0.1"), Problem::WildcardIp);
        assert_eq!(problem("https://github.com"), Problem::NotAHost);
        assert_eq!(problem("github.com/x"), Problem::NotAHost);
        assert_eq!(problem("github.com:443"), Problem::NotAHost);
        assert_eq!(problem("a..b"), Problem::Host(HostError::BadLabel));
        let e = Rules::new(&[], &["ok.com".into(), "*".into()]).unwrap_err();
        assert_eq!(e.list, "network.deny_domains");
        assert!(
            e.to_string()
                .starts_with("network.deny_domains entry \"*\": a bare"),
            "{e}"
        );
    }

    #[test]
    fn public_addresses() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "192.0.2.1",
            "203.0.113.9",
            "2606:4700::1111",
            "2002:0808:0808::1",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn address_screen() {
        let r = rules(&["*.example.com", "localhost"], &["203.0.113.66"]);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let lo = [ip("127.0.0.1"), ip("::1")];
        assert_eq!(r.screen_addresses(true, &lo), Ok(lo.to_vec()));
        assert_eq!(
            r.screen_addresses(false, &lo),
            Err(DenyReason::NonPublicAddress {
                addr: ip("127.0.0.1")
            })
        );
        let mixed = [ip("169.254.169.254"), ip("203.0.113.5"), ip("203.0.113.5")];
        assert_eq!(
            r.screen_addresses(false, &mixed),
            Ok(vec![ip("203.0.113.5")])
        );
        assert_eq!(
            r.screen_addresses(true, &[ip("203.0.113.66")]),
            Err(DenyReason::DenyListedAddress {
                addr: ip("203.0.113.66")
            })
        );
        assert_eq!(r.screen_addresses(false, &[]), Err(DenyReason::NotAllowed));
    }
}
