//! Host names and IP literals as the proxy sees them: one parser for allow/deny patterns and
//! for the hosts of requests, so both are compared in the same canonical form (ASCII,
//! lower case, no trailing dot, IPv6 without brackets). It resolves nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A validated destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: ASCII, lower case, without the trailing dot.
    Name(String),
    /// An IP address literal (`192.0.2.1`, `::1`, `[::1]`).
    Ip(IpAddr),
}

/// Why a string is not a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// the host is empty
    #[error("the host is empty")]
    Empty,
    /// Internationalized names are not converted here.
    #[error("the host is not ASCII (Hint: write internationalized names in their punycode form, xn--...)")]
    NonAscii,
    /// RFC 1035: at most 253 characters.
    #[error("the host is longer than 253 characters")]
    TooLong,
    /// An empty label (`a..b`) or one longer than 63 characters.
    #[error("the host has an empty label or one longer than 63 characters")]
    BadLabel,
    /// Only letters, digits, `-` and `_`; no label starts or ends with `-`.
    #[error("the host has a character other than letters, digits, '-', '_' and '.'")]
    BadChar,
    /// `127.1`, `2130706433`, `0x7f.0.0.1`: resolvers read these as IP addresses, so they
    /// would slip past the IP-literal rule as "names".
    #[error("the host looks like an IP address in a non-standard form (Hint: write it as a dotted quad)")]
    NumericName,
    /// `[...]` that does not hold an IPv6 address.
    #[error("the bracketed host is not an IPv6 address")]
    BadIpv6,
}

impl Host {
    /// Parses a host as written in a pattern, a request target or an authority.
    pub fn parse(s: &str) -> Result<Host, HostError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| HostError::BadIpv6);
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        if !s.is_ascii() {
            return Err(HostError::NonAscii);
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.len() > 253 {
            return Err(HostError::TooLong);
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(HostError::BadLabel);
            }
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_chars || label.starts_with('-') || label.ends_with('-') {
                return Err(HostError::BadChar);
            }
        }
        if looks_numeric(&name) {
            return Err(HostError::NumericName);
        }
        Ok(Host::Name(name))
    }

    /// The host as it goes into a `Host` header or an authority: IPv6 in brackets.
    pub fn authority_form(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        }
    }
}

/// True when the last label is a number (`127.1`, `2130706433`) or hex (`0x7f000001`):
/// no top-level domain is numeric, and `inet_aton` accepts these as IPv4 addresses.
fn looks_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || last.bytes().all(|b| b.is_ascii_digit())
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(Host::parse("API.GitHub.com."), Ok(name("api.github.com")));
        assert_eq!(Host::parse("a_b.example"), Ok(name("a_b.example")));
        assert_eq!(Host::parse("localhost"), Ok(name("localhost")));
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            Host::parse("127.0.0.1"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(Host::parse("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::parse("::1"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::parse("[::1"), Err(HostError::BadIpv6));
        assert_eq!(Host::parse("[example.com]"), Err(HostError::BadIpv6));
        assert_eq!(Host::parse("[fe80::1%eth0]"), Err(HostError::BadIpv6));
        assert_eq!(Host::Ip("::1".parse().unwrap()).authority_form(), "[::1]");
    }

    #[test]
    fn odd_numeric_forms_are_not_names() {
        for s in [
            "127.1",
            "2130706433",
            "0x7f000001",
            "0x7f.0.0.1",
            "1.2.3.4.",
        ] {
            assert_eq!(Host::parse(s), Err(HostError::NumericName), "{s}");
        }
        assert_eq!(Host::parse("1password.com"), Ok(name("1password.com")));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Host::parse(""), Err(HostError::Empty));
        assert_eq!(Host::parse("."), Err(HostError::Empty));
        assert_eq!(Host::parse("bücher.de"), Err(HostError::NonAscii));
        assert_eq!(Host::parse("a..b"), Err(HostError::BadLabel));
        assert_eq!(Host::parse(&"a".repeat(64)), Err(HostError::BadLabel));
        assert_eq!(Host::parse(&["a"; 130].join(".")), Err(HostError::TooLong));
        for s in [
            "a b", "a/b", "-a.com", "a-.com", "a:b", "a@b", "*.a.com", "a\r\n",
        ] {
            assert_eq!(Host::parse(s), Err(HostError::BadChar), "{s:?}");
        }
    }
}
