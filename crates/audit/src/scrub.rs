//! The audit log never stores a secret or a personal value: every string of an entry passes
//! through here first, and what is found is replaced by `[REDACTED:<type>]` and counted (the
//! entry keeps the type and count, never the value).
//!
//! Detectors are deliberately conservative about what they *keep*: a false positive costs a
//! redacted word in an audit entry, a false negative leaks a credential into a file that is
//! kept forever and handed to auditors.

use std::collections::BTreeMap;

pub type Counts = BTreeMap<&'static str, u64>;

/// Argument names whose *next* argument is a secret (`--password hunter2`).
const SECRET_FLAGS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "token",
    "api-key",
    "api_key",
    "apikey",
    "access-key",
    "access_key",
    "secret-key",
    "secret_key",
    "auth",
    "authorization",
    "client-secret",
    "client_secret",
    "private-key",
    "private_key",
    "key",
];

/// Names that mark the value after `=` or `:` as a secret (`PASSWORD=x`, `token: x`).
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "secret_key",
    "private_key",
    "client_secret",
    "authorization",
    "auth_token",
    "session",
    "cookie",
];

/// Prefixes of well-known credential formats, with the minimum length of what follows.
const KEY_PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 16),
    ("sk-proj-", 16),
    ("sk-", 16),
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 16),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxs-", 10),
    ("AKIA", 16),
    ("ASIA", 16),
    ("AIza", 30),
    ("hf_", 20),
    ("npm_", 30),
    ("pypi-", 30),
];

/// Redacts one string; adds what it found to `counts`.
pub fn scrub(s: &str, counts: &mut Counts) -> String {
    let mut spans: Vec<(usize, usize, &'static str)> = Vec::new();
    private_keys(s, &mut spans);
    emails(s, &mut spans);
    words(s, &mut spans);
    digits(s, &mut spans);
    if spans.is_empty() {
        return s.to_string();
    }
    spans.sort_by_key(|&(a, b, _)| (a, std::cmp::Reverse(b)));
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for (start, end, kind) in spans {
        if start < pos {
            continue; // inside a span already redacted
        }
        out.push_str(&s[pos..start]);
        out.push_str("[REDACTED:");
        out.push_str(kind);
        out.push(']');
        *counts.entry(kind).or_insert(0) += 1;
        pos = end;
    }
    out.push_str(&s[pos..]);
    out
}

/// Redacts a command line: each argument as a string, and the argument after a flag that
/// names a secret (`--token XYZ`) whole.
pub fn scrub_argv(argv: &[String], counts: &mut Counts) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut next_is_secret = false;
    for arg in argv {
        if next_is_secret {
            out.push("[REDACTED:secret]".to_string());
            *counts.entry("secret").or_insert(0) += 1;
            next_is_secret = false;
            continue;
        }
        let flag = arg.trim_start_matches('-').to_ascii_lowercase();
        if arg.starts_with('-') && !arg.contains('=') && SECRET_FLAGS.contains(&flag.as_str()) {
            next_is_secret = true;
        }
        out.push(scrub(arg, counts));
    }
    out
}

fn private_keys(s: &str, spans: &mut Vec<(usize, usize, &'static str)>) {
    let mut from = 0;
    while let Some(i) = s[from..].find("-----BEGIN ") {
        let start = from + i;
        let header_end = s[start..].find("PRIVATE KEY-----").map(|j| start + j);
        let Some(h) = header_end else { break };
        let end = s[h..]
            .find("-----END ")
            .and_then(|j| s[h + j..].find("KEY-----").map(|k| h + j + k + 8))
            .unwrap_or(s.len());
        spans.push((start, end, "private_key"));
        from = end;
    }
}

fn is_email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-".contains(&c)
}

fn emails(s: &str, spans: &mut Vec<(usize, usize, &'static str)>) {
    let b = s.as_bytes();
    for (at, _) in s.match_indices('@') {
        let mut start = at;
        while start > 0 && is_email_local(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'.' || b[end] == b'-')
        {
            end += 1;
        }
        while end > at + 1 && b[end - 1] == b'.' {
            end -= 1;
        }
        let domain = &s[at + 1..end];
        let tld_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
            !host.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic())
        });
        if start < at && tld_ok {
            spans.push((start, end, "email"));
        }
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_-./+=".contains(&c)
}

/// Credential-shaped words: known key prefixes, JWTs, `Bearer <token>`, `name=value`.
fn words(s: &str, spans: &mut Vec<(usize, usize, &'static str)>) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prev_word: Option<(usize, usize)> = None;
    while i < b.len() {
        if !is_word(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        let word = &s[start..i];
        if let Some((ps, pe)) = prev_word {
            if (s[ps..pe].eq_ignore_ascii_case("bearer") || s[ps..pe].eq_ignore_ascii_case("basic"))
                && s[pe..start].trim().is_empty()
                && word.len() >= 8
            {
                spans.push((start, i, "bearer_token"));
            }
        }
        prev_word = Some((start, i));
        let token = word.trim_end_matches(['.', '=']);
        if KEY_PREFIXES.iter().any(|(p, min)| {
            token.starts_with(p)
                && token.len() >= p.len() + min
                && token[p.len()..]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        }) {
            spans.push((start, start + token.len(), "api_key"));
            continue;
        }
        if token.starts_with("eyJ") && token.matches('.').count() == 2 && token.len() >= 30 {
            spans.push((start, start + token.len(), "jwt"));
            continue;
        }
        // name=value / name:value where name says secret.
        if let Some(eq) = word.find(['=', ':']) {
            let name = word[..eq].trim_start_matches('-').to_ascii_lowercase();
            let name = name.rsplit(['.', '/']).next().unwrap_or(&name).to_string();
            if SECRET_NAMES
                .iter()
                .any(|n| name == *n || name.ends_with(&format!("_{n}")))
                && eq + 1 < word.len()
            {
                spans.push((start + eq + 1, i, "secret"));
            }
        } else if i < b.len() && b[i] == b':' {
            // `password: value` with a space.
            let name = word.to_ascii_lowercase();
            if SECRET_NAMES.contains(&name.as_str()) {
                let vstart = s[i + 1..]
                    .find(|c: char| !c.is_whitespace())
                    .map(|j| i + 1 + j);
                if let Some(vs) = vstart {
                    let ve = s[vs..]
                        .find(char::is_whitespace)
                        .map(|j| vs + j)
                        .unwrap_or(s.len());
                    let scheme = &s[vs..ve];
                    // `Authorization: Bearer X` is the bearer rule's; `Basic X` is a secret.
                    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic")
                    {
                        continue;
                    }
                    spans.push((vs, ve, "secret"));
                    i = ve;
                }
            }
        }
    }
}

/// Card numbers (13-19 digits, single spaces or dashes allowed, Luhn-valid) and US social
/// security numbers (ddd-dd-dddd).
fn digits(s: &str, spans: &mut Vec<(usize, usize, &'static str)>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric())) {
            i += 1;
            continue;
        }
        let start = i;
        let mut nums = Vec::new();
        let mut end = i;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                nums.push(b[i] - b'0');
                i += 1;
                end = i;
            } else if (b[i] == b' ' || b[i] == b'-')
                && i + 1 < b.len()
                && b[i + 1].is_ascii_digit()
                && end == i
            {
                i += 1;
            } else {
                break;
            }
        }
        if end < b.len() && b[end].is_ascii_alphanumeric() {
            continue;
        }
        let text = &s[start..end];
        if (13..=19).contains(&nums.len()) && luhn(&nums) {
            spans.push((start, end, "card_number"));
        } else if text.len() == 11
            && text.as_bytes()[3] == b'-'
            && text.as_bytes()[6] == b'-'
            && nums.len() == 9
        {
            spans.push((start, end, "ssn"));
        }
    }
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = x as u32;
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10) && d.iter().any(|&x| x != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> (String, Counts) {
        let mut c = Counts::new();
        (scrub(text, &mut c), c)
    }

    #[test]
    fn finds_and_counts_what_must_never_be_stored() {
        let cases = [
            ("mail alice.smith+x@example.co.uk now", "mail [REDACTED:email] now", "email"),
            ("key sk-proj-abcdefghijklmnopqrstuvwx1234", "key [REDACTED:api_key]", "api_key"),
            ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:api_key]", "api_key"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ", "[REDACTED:api_key]", "api_key"),
            ("Authorization: Bearer abcdef123456789", "Authorization: Bearer [REDACTED:bearer_token]", "bearer_token"),
            ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic [REDACTED:bearer_token]", "bearer_token"),
            ("PASSWORD=hunter2 ok", "PASSWORD=[REDACTED:secret] ok", "secret"),
            ("--api-key=xyz123", "--api-key=[REDACTED:secret]", "secret"),
            ("password: hunter2", "password: [REDACTED:secret]", "secret"),
            ("card 4111 1111 1111 1111.", "card [REDACTED:card_number].", "card_number"),
            ("ssn 078-05-1120", "ssn [REDACTED:ssn]", "ssn"),
            ("t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "t [REDACTED:jwt]", "jwt"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n", "[REDACTED:private_key]\n", "private_key"),
        ];
        for (input, want, kind) in cases {
            let (got, counts) = s(input);
            assert_eq!(got, want, "{input:?}");
            assert_eq!(counts.get(kind), Some(&1), "{input:?}: {counts:?}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for text in [
            "/usr/bin/python3",
            "agent.py --verbose",
            "connect 10.0.0.1:443",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "wrote 1234567890123 bytes",
            "mkdir /tmp/out/2026-11-25",
            "user@host",
            "task-1234",
        ] {
            let (got, counts) = s(text);
            assert_eq!(got, text);
            assert!(counts.is_empty(), "{text}: {counts:?}");
        }
    }

    #[test]
    fn argv_flag_values() {
        let mut c = Counts::new();
        let argv: Vec<String> = ["tool", "--token", "abc", "--name", "x", "-p", "8080"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            scrub_argv(&argv, &mut c),
            [
                "tool",
                "--token",
                "[REDACTED:secret]",
                "--name",
                "x",
                "-p",
                "8080"
            ]
        );
        assert_eq!(c.get("secret"), Some(&1));
    }
}
