//! Email addresses, found from their `@`: a local part of `[A-Za-z0-9._%+-]` (the WHATWG
//! set without the quote and brace characters that prose puts around addresses), a domain
//! of at least two labels, and a top-level domain that exists. Checking the TLD is what
//! drops `icon@2x.png`, `a@localhost` and `pkg@1.2.3`.
//!
//! Not an email although it has the shape: URL userinfo (`https://user:pw@host.com`,
//! `ssh://git@host.com`) and scp-style remotes (`git@github.com:org/repo.git`).

use super::text::escape_ends_at;
use super::{Finding, Kind};

/// RFC 5321 limits.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// Generic TLDs accepted besides every two-letter one (country codes). A stand-in for the
/// public suffix list: the common ones, not all 1,400.
const GENERIC_TLDS: &[&str] = &[
    "com",
    "net",
    "org",
    "edu",
    "gov",
    "mil",
    "int",
    "info",
    "biz",
    "name",
    "pro",
    "aero",
    "coop",
    "museum",
    "mobi",
    "asia",
    "jobs",
    "tel",
    "travel",
    "cat",
    "post",
    "app",
    "dev",
    "page",
    "cloud",
    "online",
    "site",
    "xyz",
    "tech",
    "store",
    "shop",
    "blog",
    "email",
    "mail",
    "news",
    "live",
    "life",
    "world",
    "today",
    "space",
    "website",
    "digital",
    "agency",
    "company",
    "solutions",
    "services",
    "network",
    "systems",
    "media",
    "studio",
    "design",
    "art",
    "club",
    "global",
    "group",
    "team",
    "center",
    "zone",
    "link",
    "click",
    "one",
    "top",
    "vip",
    "win",
    "work",
    "works",
    "fun",
    "games",
    "run",
    "plus",
    "wiki",
    "ninja",
    "guru",
    "expert",
    "academy",
    "school",
    "university",
    "college",
    "education",
    "health",
    "care",
    "clinic",
    "law",
    "legal",
    "finance",
    "money",
    "bank",
    "insurance",
    "capital",
    "fund",
    "partners",
    "ventures",
    "consulting",
    "software",
    "codes",
    "photography",
    "photo",
    "gallery",
    "music",
    "film",
    "video",
    "social",
    "chat",
    "community",
    "family",
    "events",
    "city",
    "london",
    "nyc",
    "paris",
    "berlin",
    "tokyo",
    "amsterdam",
    "wien",
    "bayern",
    "hamburg",
    "swiss",
    "africa",
    "inc",
    "llc",
    "ltd",
    "gmbh",
    "security",
    "energy",
    "solar",
    "land",
    "house",
    "science",
    "eco",
    "green",
];

/// Two-letter "TLDs" that are source file extensions, not countries.
const NOT_COUNTRIES: &[&str] = &["js", "ts", "cs", "rb", "kt", "hs", "jl", "db", "gz", "xz"];

fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

pub(super) fn find(t: &[u8], out: &mut Vec<Finding>) {
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'@', &t[from..]).map(|x| x + from) {
        from = at + 1;
        if let Some((start, end)) = around(t, at) {
            out.push(Finding {
                kind: Kind::Email,
                start,
                end,
            });
            from = end;
        }
    }
}

/// The address around the `@` at `at`, if there is one.
fn around(t: &[u8], at: usize) -> Option<(usize, usize)> {
    // Local part, leftwards; a letter that ends a JSON escape (`\nbob@…`) is not in it.
    let mut s = at;
    while s > 0 && local_byte(t[s - 1]) && at - s <= MAX_LOCAL && !escape_ends_at(t, s) {
        s -= 1;
    }
    while s < at && t[s] == b'.' {
        s += 1;
    }
    if s == at || at - s > MAX_LOCAL || t[at - 1] == b'.' {
        return None;
    }
    if s > 0 {
        match t[s - 1] {
            b'/' => return None,
            b':' if !(s >= 7 && t[s - 7..s - 1].eq_ignore_ascii_case(b"mailto")) => return None,
            _ => {}
        }
    }
    // Domain, rightwards, without the sentence's full stop.
    let mut e = at + 1;
    while e < t.len() && domain_byte(t[e]) && e - at <= MAX_DOMAIN {
        e += 1;
    }
    while e > at + 1 && t[e - 1] == b'.' {
        e -= 1;
    }
    let domain = &t[at + 1..e];
    if domain.is_empty() || domain.len() > MAX_DOMAIN || !labels_ok(domain) {
        return None;
    }
    if t.get(e) == Some(&b'_') || t.get(e) == Some(&b'@') {
        return None;
    }
    // `git@github.com:org/repo.git`
    let path = |b: &u8| b.is_ascii_alphanumeric() || *b == b'/' || *b == b'~';
    if t.get(e) == Some(&b':') && t.get(e + 1).is_some_and(path) {
        return None;
    }
    Some((s, e))
}

/// At least two labels of 1-63 letters, digits and inner hyphens, and a real TLD.
fn labels_ok(domain: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = b"";
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && tld_ok(last)
}

fn tld_ok(tld: &[u8]) -> bool {
    if !tld.iter().all(u8::is_ascii_alphabetic) {
        return tld.len() > 4 && tld[..4].eq_ignore_ascii_case(b"xn--");
    }
    let lower = tld.to_ascii_lowercase();
    let is = |list: &[&str]| list.iter().any(|x| x.as_bytes() == lower.as_slice());
    if tld.len() == 2 {
        !is(NOT_COUNTRIES)
    } else {
        is(GENERIC_TLDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(s.as_bytes(), &mut out);
        out.iter().map(|f| &s[f.range()]).collect()
    }

    #[test]
    fn addresses() {
        assert_eq!(
            emails("mail jane.doe@example.com."),
            vec!["jane.doe@example.com"]
        );
        assert_eq!(
            emails("<j+tag@mail.example.co.uk>"),
            vec!["j+tag@mail.example.co.uk"]
        );
        assert_eq!(emails("mailto:ops@acme.io"), vec!["ops@acme.io"]);
        assert_eq!(emails(r#"{"to":"a_b@x-y.org"}"#), vec!["a_b@x-y.org"]);
        assert_eq!(emails(r"hi\nbob@acme.dev"), vec!["bob@acme.dev"]);
        assert_eq!(emails("a@b.com, c@d.de"), vec!["a@b.com", "c@d.de"]);
    }

    #[test]
    fn not_addresses() {
        for bad in [
            "icon@2x.png",
            "a@localhost",
            "pkg@1.2.3",
            "@decorator.name",
            "x@y",
            "git@github.com:org/repo.git",
            "https://user:pw@host.com/",
            "ssh://git@host.com/x",
            "a.@b.com",
            "bob@-x.com",
            "bob@x..com",
            "bob@main.js",
            "email@domain.notatld",
        ] {
            assert!(emails(bad).is_empty(), "{bad}");
        }
    }
}
