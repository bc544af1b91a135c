//! IP addresses. IPv4 comes from the digit-run pass, IPv6 from a pass over `:`; every
//! candidate is re-parsed with `std::net`, which also rejects octets with leading zeros.
//!
//! What looks like an address but is not one: version strings (`v1.2.3.4`, `version
//! 1.2.3.4`, `pkg@1.2.3.4`, `1.2.3.4-rc1`, five dotted groups), and code that happens to be
//! valid IPv6 (`add::`, `std::io`, `a[1::2]`). IPv6 therefore needs a digit, clear
//! boundaries, and must not be a slice inside brackets after an identifier.

use super::text::{clear_after, clear_before, digits_end, is_word, word_before_is};
use super::{Finding, Kind};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Words that make a dotted quad after them a version, a section number or an OID.
const NOT_ADDRESS_WORDS: &[&str] = &[
    "version",
    "versions",
    "ver",
    "v",
    "release",
    "build",
    "firmware",
    "upgrade",
    "update",
    "bump",
    "tag",
    "rev",
    "revision",
    "section",
    "sec",
    "clause",
    "chapter",
    "paragraph",
    "para",
    "appendix",
    "article",
    "figure",
    "fig",
    "table",
    "step",
    "item",
    "rule",
    "oid",
];

/// Login names that make `name@10.0.0.1` an SSH target rather than a package pin.
const LOGINS: &[&str] = &[
    "root",
    "ubuntu",
    "admin",
    "user",
    "ec2-user",
    "pi",
    "git",
    "deploy",
    "centos",
    "debian",
    "core",
    "azureuser",
    "opc",
    "fedora",
];

/// End of the IPv4 address starting at the digit `p` (already clear of what precedes it).
pub(super) fn v4_at(t: &[u8], p: usize) -> Option<usize> {
    let mut i = p;
    for group in 0..4 {
        if group > 0 {
            if t.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let e = digits_end(t, i);
        if e == i || e - i > 3 {
            return None;
        }
        i = e;
    }
    let end = i;
    let next = |k: usize| t.get(end + k).copied().unwrap_or(0);
    // A fifth group, or a suffix (`1.2.3.4-rc1`): a version. `-` and a digit is a range.
    if !clear_after(t, end)
        || (next(0) == b'.' && next(1).is_ascii_digit())
        || (next(0) == b'-' && next(1).is_ascii_alphabetic())
    {
        return None;
    }
    if p > 0 && t[p - 1] == b'@' && !login_before(t, p - 1) && !in_url(t, p - 1) {
        return None;
    }
    if is_version_at(t, p) || follows_version(t, p) {
        return None;
    }
    std::str::from_utf8(&t[p..end])
        .ok()?
        .parse::<Ipv4Addr>()
        .ok()?;
    Some(end)
}

/// Whether the dotted number at `p` is labelled as something else: `version 1.2.3.4`,
/// `section 3.2.1.4`, `OID 2.5.4.3` (`v1.2.3.4` is already glued to its `v`).
fn is_version_at(t: &[u8], p: usize) -> bool {
    word_before_is(t, p, NOT_ADDRESS_WORDS)
}

/// `ver 10.4.1.3 -> 10.4.1.4`, `from v1.2.0.1 to 1.2.0.2`: the second of two versions
/// joined by an arrow or `to` is a version too.
fn follows_version(t: &[u8], p: usize) -> bool {
    let mut i = skip_spaces(t, p);
    let joiners: [&[u8]; 4] = ["→".as_bytes(), b"->", b"=>", b" to"];
    let Some(j) = joiners.iter().find(|j| t[..i].ends_with(j)) else {
        return false;
    };
    i = skip_spaces(t, i - j.len());
    let end = i;
    while i > 0 && (t[i - 1].is_ascii_digit() || t[i - 1] == b'.') {
        i -= 1;
    }
    let dots = t[i..end].iter().filter(|&&b| b == b'.').count();
    if dots < 2 || !t.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let v_prefix = i > 0 && matches!(t[i - 1], b'v' | b'V') && clear_before(t, i - 1);
    v_prefix || is_version_at(t, i)
}

fn skip_spaces(t: &[u8], mut i: usize) -> usize {
    while i > 0 && t[i - 1] == b' ' {
        i -= 1;
    }
    i
}

/// Whether the `@` at `at` ends the userinfo of a URL (`mongodb://app:pw@10.0.0.5`): the
/// token it ends contains `://`.
fn in_url(t: &[u8], at: usize) -> bool {
    let start = at.saturating_sub(256);
    let token_start = t[start..at]
        .iter()
        .rposition(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'('))
        .map_or(start, |i| start + i + 1);
    memchr::memmem::find(&t[token_start..at], b"://").is_some()
}

/// Whether the `-` at `dash` ends an IPv4 address (the start of a range).
pub(super) fn ends_range(t: &[u8], dash: usize) -> bool {
    // An address is at most 15 bytes; look one further to see where it starts.
    let floor = dash.saturating_sub(16);
    let start = t[floor..dash]
        .iter()
        .rposition(|b| !(b.is_ascii_digit() || *b == b'.'))
        .map_or(floor, |i| floor + i + 1);
    (7..=15).contains(&(dash - start))
        && std::str::from_utf8(&t[start..dash])
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .is_some()
}

/// Whether the name before the `@` at `at` is a common login name.
fn login_before(t: &[u8], at: usize) -> bool {
    let mut s = at;
    while s > 0 && (is_word(t[s - 1]) || t[s - 1] == b'-') && at - s < 16 {
        s -= 1;
    }
    let name = &t[s..at];
    LOGINS.iter().any(|l| l.as_bytes() == name)
}

/// Every IPv6 address, found from its colons.
pub(super) fn find_v6(t: &[u8], out: &mut Vec<Finding>) {
    let mut from = 0;
    while let Some(c) = memchr::memchr(b':', &t[from..]).map(|x| x + from) {
        from = c + 1;
        let next = t.get(c + 1).copied().unwrap_or(0);
        let prev = if c > 0 { t[c - 1] } else { 0 };
        // The first colon of an address has `::` or hex digits on both sides.
        if !(next == b':' || (next.is_ascii_hexdigit() && prev.is_ascii_hexdigit())) {
            continue;
        }
        let mut s = c;
        while s > 0 && (t[s - 1].is_ascii_hexdigit() || t[s - 1] == b':') && c - s < 40 {
            s -= 1;
        }
        let mut e = c + 1;
        while e < t.len()
            && (t[e].is_ascii_hexdigit() || t[e] == b':' || t[e] == b'.')
            && e - s < 48
        {
            e += 1;
        }
        from = e;
        if let Some((start, end)) = v6_candidate(t, s, e) {
            out.push(Finding {
                kind: Kind::IpAddress,
                start,
                end,
            });
        }
    }
}

/// The address inside the hex/colon/dot run `s..e`, if it is one.
fn v6_candidate(t: &[u8], mut s: usize, e: usize) -> Option<(usize, usize)> {
    // `addr:fe80::1`: a lone leading colon belongs to a label.
    if t[s] == b':' && t.get(s + 1) != Some(&b':') {
        s += 1;
    }
    // Sentence punctuation: `…::1.` and `…::1:` at the end of a clause.
    let mut end = e;
    while end > s && t[end - 1] == b'.' {
        end -= 1;
    }
    if end >= s + 2 && t[end - 1] == b':' && t[end - 2] != b':' {
        end -= 1;
    }
    let cand = &t[s..end];
    let colons = cand.iter().filter(|&&b| b == b':').count();
    let compressed = cand.windows(2).any(|w| w == b"::");
    let dotted = cand.contains(&b'.');
    if !(compressed || colons == 7 || (colons == 6 && dotted)) {
        return None;
    }
    if !cand.iter().any(u8::is_ascii_digit) || !clear_before(t, s) || !clear_after(t, end) {
        return None;
    }
    // `a[1::2]`, `x[::2]`: a slice, not an address in brackets (`http://[::1]:8080`).
    if s >= 2 && t[s - 1] == b'[' && (is_word(t[s - 2]) || matches!(t[s - 2], b']' | b')')) {
        return None;
    }
    // `x[:, ::2]`, `1::3`: slice steps. No address is written as two small decimal groups,
    // except the loopback `::1`.
    let mut groups = cand.split(|&b| b == b':').filter(|g| !g.is_empty());
    let small_decimals = groups.clone().count() <= 2
        && groups.all(|g| g.len() <= 2 && g.iter().all(u8::is_ascii_digit));
    if small_decimals && cand != b"::1" {
        return None;
    }
    std::str::from_utf8(cand).ok()?.parse::<Ipv6Addr>().ok()?;
    Some((s, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Option<&str> {
        let t = s.as_bytes();
        let p = t.iter().position(u8::is_ascii_digit)?;
        v4_at(t, p).map(|e| &s[p..e])
    }

    fn v6(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find_v6(s.as_bytes(), &mut out);
        out.iter().map(|f| &s[f.range()]).collect()
    }

    #[test]
    fn ipv4() {
        assert_eq!(v4("host 192.168.1.20."), Some("192.168.1.20"));
        assert_eq!(v4("10.0.0.1:8080"), Some("10.0.0.1"));
        assert_eq!(v4("10.0.0.0/8"), Some("10.0.0.0"));
        assert_eq!(v4("10.0.0.1-10.0.0.9"), Some("10.0.0.1"));
        assert_eq!(v4("ssh root@10.0.0.1"), Some("10.0.0.1"));
        assert_eq!(v4("mongodb://app:pw@10.0.0.5:27017/db"), Some("10.0.0.5"));
        for bad in [
            "256.1.1.1",
            "01.02.03.04",
            "1.2.3",
            "1.2.3.4.5",
            "version 1.2.3.4",
            "see section 3.2.1.4",
            "OID 2.5.4.3",
            "\"version\": \"1.2.3.4\"",
            "pkg@1.2.3.4",
            "1.2.3.4-rc1",
            "1.2.3.4a",
        ] {
            assert_eq!(v4(bad), None, "{bad}");
        }
        let second = |s: &'static str| v4_at(s.as_bytes(), s.rfind(' ').unwrap() + 1);
        assert_eq!(second("ver 10.4.1.3 -> 10.4.1.4"), None);
        assert_eq!(second("bump v1.2.0.1 to 1.2.0.2"), None);
        assert_eq!(second("v2.0.0.1 → 2.0.0.2"), None);
        assert_eq!(second("from 10.0.0.1 to 10.0.0.2"), Some(25));
    }

    #[test]
    fn ipv6_forms() {
        for ok in [
            "::1",
            "fe80::1",
            "2001:db8::8a2e:370:7334",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::ffff:192.0.2.1",
            "2001:db8::",
            "64:ff9b::192.0.2.33",
        ] {
            assert_eq!(v6(&format!("addr {ok} ok")), vec![ok], "{ok}");
        }
        assert_eq!(v6("see fe80::1."), vec!["fe80::1"]);
        assert_eq!(v6("http://[2001:db8::1]:8080/"), vec!["2001:db8::1"]);
        assert_eq!(v6("listen [::1]:80"), vec!["::1"]);
        assert_eq!(v6("fe80::1%eth0"), vec!["fe80::1"]);
        assert_eq!(v6("addr:fe80::1"), vec!["fe80::1"]);
    }

    #[test]
    fn code_is_not_ipv6() {
        for bad in [
            "let x = add::",
            "use std::io::Result;",
            "Foo::Bar::3",
            "a[1::2]",
            "xs[::2]",
            "x[:, ::2]",
            "y[0, 1::3]",
            "2::",
            "i32::from(x)",
            "dead::beef",
            "12:30:45",
            "00:1a:2b:3c:4d:5e",
            "2024-05-12T10:30:45Z",
        ] {
            assert!(v6(bad).is_empty(), "{bad}");
        }
    }
}
