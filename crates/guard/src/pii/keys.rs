//! Secrets found from a literal prefix: API keys of the cloud and LLM providers, JWTs
//! (`eyJ`) and PEM private keys (`-----BEGIN`). One Aho-Corasick pass finds every prefix;
//! each hit is then checked against its format's exact shape (gitleaks' rules).
//!
//! Placeholders (`sk-...`, `sk-proj-xxxx`, `YOUR_API_KEY`, AWS's documented
//! `AKIAIOSFODNN7EXAMPLE`) fail on length, character set or variety.

use super::text::{clear_after, clear_before};
use super::{jwt, pem, Finding, Kind};
use aho_corasick::{AhoCorasick, Input, MatchKind};

#[derive(Clone, Copy, Debug)]
enum Prefix {
    Pem,
    Jwt,
    /// `sk-`: OpenAI (legacy, project, service account, admin), Anthropic, and other LLM
    /// providers' `sk-` + 32-64 alphanumerics.
    SkDash,
    /// `sk_`/`rk_` + `live_`/`test_`/`prod_`: Stripe secret and restricted keys.
    Stripe,
    /// AWS access key ids (`AKIA`, `ASIA`, …) are 20 uppercase alphanumerics.
    Aws,
    /// `gh[pousr]_` + 36 alphanumerics.
    GitHub,
    /// `github_pat_` + 82 word characters.
    GitHubPat,
    /// `AIza` + 35 URL-safe characters.
    Google,
    /// `xoxb-`, `xoxp-`, `xoxe-`.
    Slack,
    /// `xapp-`.
    SlackApp,
}

const PREFIXES: &[(&str, Prefix)] = &[
    ("-----BEGIN", Prefix::Pem),
    ("eyJ", Prefix::Jwt),
    ("sk-", Prefix::SkDash),
    ("sk_", Prefix::Stripe),
    ("rk_", Prefix::Stripe),
    ("AKIA", Prefix::Aws),
    ("ASIA", Prefix::Aws),
    ("ABIA", Prefix::Aws),
    ("ACCA", Prefix::Aws),
    ("A3T", Prefix::Aws),
    ("ghp_", Prefix::GitHub),
    ("gho_", Prefix::GitHub),
    ("ghu_", Prefix::GitHub),
    ("ghs_", Prefix::GitHub),
    ("ghr_", Prefix::GitHub),
    ("github_pat_", Prefix::GitHubPat),
    ("AIza", Prefix::Google),
    ("xoxb-", Prefix::Slack),
    ("xoxp-", Prefix::Slack),
    ("xoxe-", Prefix::Slack),
    ("xapp-", Prefix::SlackApp),
];

/// `T3BlbkFJ` is base64 for "OpenAI"; OpenAI embeds it in every key it issues.
const OPENAI_MARKER: &[u8] = b"T3BlbkFJ";

#[derive(Clone, Debug)]
pub(super) struct Prefixes {
    ac: AhoCorasick,
}

impl Prefixes {
    pub(super) fn new() -> Prefixes {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(PREFIXES.iter().map(|(p, _)| p))
            // 21 short literals are far below every automaton size limit.
            .expect("key prefixes build an automaton");
        Prefixes { ac }
    }

    pub(super) fn find(&self, t: &[u8], out: &mut Vec<Finding>) {
        let mut pos = 0;
        let mut ends = pem::Ends::default();
        while let Some(m) = self.ac.find(Input::new(t).range(pos..)) {
            let (_, prefix) = PREFIXES[m.pattern().as_usize()];
            pos = m.end();
            if let Some((kind, end)) = classify(t, m.start(), m.end(), prefix, &mut ends) {
                out.push(Finding {
                    kind,
                    start: m.start(),
                    end,
                });
                pos = end;
            }
        }
    }
}

fn classify(
    t: &[u8],
    s: usize,
    e: usize,
    prefix: Prefix,
    ends: &mut pem::Ends,
) -> Option<(Kind, usize)> {
    if let Prefix::Pem = prefix {
        return pem::at(t, s, ends).map(|end| (Kind::PrivateKey, end));
    }
    // Not the tail of a longer identifier (`risk-free`, `task-sk-…`, `a.eyJ…`).
    if !clear_before(t, s) || (s > 0 && matches!(t[s - 1], b'-' | b'.')) {
        return None;
    }
    let key = |end: Option<usize>| end.map(|end| (Kind::ApiKey, end));
    match prefix {
        Prefix::Pem => None,
        Prefix::Jwt => jwt::at(t, s).map(|end| (Kind::Jwt, end)),
        Prefix::SkDash => key(sk_dash(t, e)),
        Prefix::Stripe => key(stripe(t, e)),
        Prefix::Aws => key(aws(t, s)),
        Prefix::GitHub => key(exact(t, e, 36, alnum)),
        Prefix::GitHubPat => key(exact(t, e, 82, word)),
        Prefix::Google => key(exact(t, e, 35, url_safe)),
        Prefix::Slack => key(slack(t, s, e)),
        Prefix::SlackApp => key(slack_app(t, e)),
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn run(t: &[u8], i: usize, class: fn(u8) -> bool) -> usize {
    i + t[i..].iter().take_while(|&&b| class(b)).count()
}

/// Exactly `n` bytes of `class` at `i`, not followed by another: the key's end.
fn exact(t: &[u8], i: usize, n: usize, class: fn(u8) -> bool) -> Option<usize> {
    let end = run(t, i, class);
    (end - i == n && !t.get(end).copied().is_some_and(url_safe) && varied(&t[i..end], 10))
        .then_some(end)
}

/// Whether `body` uses at least `min` distinct bytes: random keys do, placeholders such as
/// `xxxxxxxx` or `0000000000` do not.
fn varied(body: &[u8], min: usize) -> bool {
    let mut seen = [false; 256];
    let mut distinct = 0;
    for &b in body {
        if !seen[usize::from(b)] {
            seen[usize::from(b)] = true;
            distinct += 1;
            if distinct >= min {
                return true;
            }
        }
    }
    false
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// After `sk-` at `e`: the end of an OpenAI, Anthropic or other `sk-` key.
fn sk_dash(t: &[u8], e: usize) -> Option<usize> {
    let rest = &t[e..];
    if let Some(ant) = rest.strip_prefix(b"ant-") {
        let b = e + 4;
        for (kind, fixed) in [
            (&b"api03-"[..], true),
            (b"admin01-", true),
            (b"oat01-", false),
            (b"ort01-", false),
        ] {
            if ant.starts_with(kind) {
                let body = b + kind.len();
                let end = run(t, body, url_safe);
                let n = end - body;
                let ok = if fixed {
                    n == 95 && t[end - 2..end] == *b"AA"
                } else {
                    (40..=200).contains(&n)
                };
                return (ok && varied(&t[body..end], 10)).then_some(end);
            }
        }
        return None;
    }
    for scope in [&b"proj-"[..], b"svcacct-", b"admin-"] {
        if rest.starts_with(scope) {
            let body = e + scope.len();
            let end = run(t, body, url_safe);
            let b = &t[body..end];
            let ok = (40..=250).contains(&b.len()) && contains(b, OPENAI_MARKER)
                || ((80..=250).contains(&b.len()) && mixed(b));
            return (ok && varied(b, 10)).then_some(end);
        }
    }
    let end = run(t, e, alnum);
    if t.get(end).copied().is_some_and(url_safe) {
        return None;
    }
    let b = &t[e..end];
    let legacy = b.len() == 48 && &b[20..28] == OPENAI_MARKER;
    let other = (32..=64).contains(&b.len())
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic)
        && varied(b, 10);
    (legacy || other).then_some(end)
}

/// Upper and lower case letters and digits, as in a random token.
fn mixed(b: &[u8]) -> bool {
    b.iter().any(u8::is_ascii_uppercase)
        && b.iter().any(u8::is_ascii_lowercase)
        && b.iter().any(u8::is_ascii_digit)
}

/// After `sk_`/`rk_` at `e`: `live_`/`test_`/`prod_` and 10-99 alphanumerics.
fn stripe(t: &[u8], e: usize) -> Option<usize> {
    let mode = t.get(e..e + 5)?;
    if !matches!(mode, b"live_" | b"test_" | b"prod_") {
        return None;
    }
    let body = e + 5;
    let end = run(t, body, alnum);
    let b = &t[body..end];
    ((10..=99).contains(&b.len()) && clear_after(t, end) && varied(b, 8)).then_some(end)
}

/// An AWS access key id at `s`: 20 uppercase letters and digits, not AWS's documented
/// example (`…EXAMPLE`) or a filler.
fn aws(t: &[u8], s: usize) -> Option<usize> {
    let id = t.get(s..s + 20)?;
    let shaped = id
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    (shaped && clear_after(t, s + 20) && !id.ends_with(b"EXAMPLE") && varied(&id[4..], 6))
        .then_some(s + 20)
}

/// `xoxb-` + 10-13 digits, `-`, 10-13 digits, anything; `xoxp-`/`xoxe-` + three groups of
/// 10-13 digits and a 28-34 character secret.
fn slack(t: &[u8], s: usize, e: usize) -> Option<usize> {
    let end = run(t, e, |b| b.is_ascii_alphanumeric() || b == b'-');
    if t.get(end) == Some(&b'_') {
        return None;
    }
    let mut groups = t[e..end].splitn(4, |&b| b == b'-');
    let numeric = |p: Option<&[u8]>| {
        p.is_some_and(|p| (10..=13).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
    };
    let (team, user) = (groups.next(), groups.next());
    let ok = numeric(team)
        && numeric(user)
        && (t[s + 3] == b'b' || {
            let (third, secret) = (groups.next(), groups.next());
            numeric(third) && secret.is_some_and(|r| (28..=34).contains(&r.len()))
        });
    ok.then_some(end)
}

/// After `xapp-` at `e`: a digit, an uppercase id, digits, a lowercase secret.
fn slack_app(t: &[u8], e: usize) -> Option<usize> {
    let end = run(t, e, |b| b.is_ascii_alphanumeric() || b == b'-');
    let parts: Vec<&[u8]> = t[e..end].split(|&b| b == b'-').collect();
    let ok = match parts.as_slice() {
        [a, b, c, d] => {
            a.len() == 1
                && a[0].is_ascii_digit()
                && !b.is_empty()
                && b.iter()
                    .all(|x| x.is_ascii_uppercase() || x.is_ascii_digit())
                && !c.is_empty()
                && c.iter().all(u8::is_ascii_digit)
                && d.len() >= 32
                && d.iter()
                    .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
        }
        _ => false,
    };
    (ok && clear_after(t, end)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<(Kind, &str)> {
        let mut out = Vec::new();
        Prefixes::new().find(s.as_bytes(), &mut out);
        out.iter().map(|f| (f.kind, &s[f.range()])).collect()
    }

    fn one_key(s: &str) -> Option<&str> {
        match keys(s).as_slice() {
            [(Kind::ApiKey, k)] => Some(k),
            _ => None,
        }
    }

    /// A deterministic pseudo-random string over `alphabet`.
    fn filler(n: usize, alphabet: &[u8], seed: u64) -> String {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize] as char
            })
            .collect()
    }

    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

    #[test]
    fn provider_formats() {
        let cases = [
            format!(
                "sk-{}T3BlbkFJ{}",
                filler(20, ALNUM, 1),
                filler(20, ALNUM, 2)
            ),
            format!(
                "sk-proj-{}T3BlbkFJ{}",
                filler(74, URL, 3),
                filler(74, URL, 4)
            ),
            format!("sk-ant-api03-{}AA", filler(93, URL, 5)),
            format!("sk-ant-admin01-{}AA", filler(93, URL, 6)),
            format!("sk-{}", filler(32, b"0123456789abcdef", 7)),
            "AKIAZ3MHQ7RXW2NPLK4T".to_owned(),
            format!("ghp_{}", filler(36, ALNUM, 8)),
            format!(
                "github_pat_{}_{}",
                filler(22, ALNUM, 9),
                filler(59, ALNUM, 10)
            ),
            format!("AIza{}", filler(35, URL, 11)),
            format!("sk_live_{}", filler(24, ALNUM, 12)),
            format!("rk_test_{}", filler(24, ALNUM, 13)),
            format!("xoxb-1234567890123-1234567890123-{}", filler(24, ALNUM, 14)),
            format!(
                "xoxp-1234567890-1234567890-1234567890-{}",
                filler(32, b"0123456789abcdef", 15)
            ),
            format!(
                "xapp-1-A0B1C2D3E4F-1234567890123-{}",
                filler(64, b"0123456789abcdef", 16)
            ),
        ];
        for key in &cases {
            let text = format!("key = \"{key}\", then");
            assert_eq!(one_key(&text), Some(key.as_str()), "{key}");
        }
    }

    #[test]
    fn placeholders_and_lookalikes() {
        for bad in [
            "sk-...",
            "sk-your-key-here",
            "YOUR_API_KEY",
            "sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "AKIAIOSFODNN7EXAMPLE",
            "AKIAXXXXXXXXXXXXXXXX",
            "risk-assessment-2024-with-a-long-tail-of-words",
            "sk_test_YOUR_SECRET_KEY",
            "pk_live_51HqLyjWDarjtT1zdp7dc0123456789",
            "xoxb-your-bot-token",
            "ghp_short",
            "AIzaShort",
            "ASIA PACIFIC region",
        ] {
            assert!(keys(bad).is_empty(), "{bad}");
        }
        // One character too many or too few.
        let long = format!("ghp_{}", filler(37, ALNUM, 1));
        assert!(keys(&long).is_empty());
        let glued = "xAKIAZ3MHQ7RXW2NPLK4T";
        assert!(keys(glued).is_empty());
    }
}
