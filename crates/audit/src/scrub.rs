//! The audit log never stores a secret or a personal value: every string of an entry passes
//! through here first, and what is found is replaced by `[REDACTED:<type>]` and counted (the
//! entry keeps the type and count, never the value).
//!
//! Detectors are deliberately conservative about what they *keep*: a false positive costs a
//! redacted word in an audit entry, a false negative leaks a credential into a file that is
//! kept forever and handed to auditors.

use std::collections::BTreeMap;

pub type Counts = BTreeMap<&'static str, u64>;

/// Name parts that mark a value as a secret (`DB_PASSWORD=`, `--auth-token`, `x-api-key:`).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "secrets",
    "token",
    "tokens",
    "apikey",
    "credential",
    "credentials",
    "cookie",
    "authorization",
    "sessionid",
    "otp",
    "pin",
    "sig",
    "signature",
];

/// Name endings that do, glued to anything (`PGPASSWORD`, `MYSQL_PWD`, `dbpassword`).
const SECRET_SUFFIXES: &[&str] = &["password", "passwd", "secret", "token", "apikey"];

/// Adjacent name parts that do (`api_key`, `access-key`, `client_secret`).
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("secret", "key"),
    ("signing", "key"),
    ("encryption", "key"),
    ("master", "key"),
    ("auth", "key"),
    ("session", "id"),
    ("account", "key"),
    ("shared", "key"),
];

/// Prefixes of well-known credential formats, with the minimum length of what follows.
const KEY_PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 16),
    ("sk-proj-", 16),
    ("sk-", 16),
    ("sk_live_", 16),
    ("sk_test_", 16),
    ("rk_live_", 16),
    ("rk_test_", 16),
    ("whsec_", 16),
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
    ("SG.", 20),
    ("ya29.", 20),
    ("xoxe-", 10),
    ("sq0csp-", 20),
    ("shpat_", 20),
    ("dop_v1_", 20),
];

/// Programs that run another command given as their arguments.
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "env", "nice", "nohup", "timeout", "time", "exec", "command", "xargs",
    "stdbuf", "ionice", "chrt", "setsid",
];

/// Shells whose `-c SCRIPT` is a command line.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// Prefixes distinctive enough to find inside a longer word (`xsk-ant-...`).
const DISTINCTIVE: &[&str] = &[
    "sk-ant-",
    "sk-proj-",
    "sk_live_",
    "rk_live_",
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "AIza",
];

/// Programs whose `-pSECRET` / `-p SECRET` is a password (elsewhere `-p` is a port, a
/// path...).
const DASH_P_PASSWORD: &[&str] = &["mysql", "mysqldump", "mariadb", "mysqladmin", "sshpass"];

type Spans = Vec<(usize, usize, &'static str)>;

/// Whether a variable, key or flag name says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let trimmed = name.trim_matches(|c| c == '-' || c == '"' || c == '\'');
    // camelCase parts: `dbPassword` -> `db_password`.
    let mut snake = String::with_capacity(trimmed.len() + 4);
    let mut prev_lower = false;
    for c in trimmed.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            snake.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        snake.push(c);
    }
    let n = snake.to_ascii_lowercase().replace(['-', '.'], "_");
    if SECRET_SUFFIXES.iter().any(|x| n.ends_with(x)) {
        return true;
    }
    let parts: Vec<&str> = n.split('_').filter(|p| !p.is_empty()).collect();
    // A bare `key` (`--key VALUE`) and `auth` as any part (`X-Auth`, `auth_header`).
    if n == "key" || parts.contains(&"auth") {
        return true;
    }
    parts.iter().any(|p| SECRET_PARTS.contains(p))
        || parts
            .windows(2)
            .any(|w| SECRET_PAIRS.contains(&(w[0], w[1])))
}

/// Redacts one string; adds what it found to `counts`.
pub fn scrub(s: &str, counts: &mut Counts) -> String {
    let mut spans: Spans = Vec::new();
    private_keys(s, &mut spans);
    urls(s, &mut spans);
    emails(s, &mut spans);
    assignments(s, &mut spans);
    words(s, &mut spans);
    digits(s, &mut spans);
    // What is already redacted (a command line scrubbed argument by argument, then again
    // as entry text) stays as it is: a marker is never redacted again.
    let markers: Vec<(usize, usize)> = s
        .match_indices("[REDACTED:")
        .filter_map(|(i, _)| s[i..].find(']').map(|j| (i, i + j + 1)))
        .collect();
    spans.retain(|&(a, b, _)| !markers.iter().any(|&(m0, m1)| a < m1 && m0 < b));
    if spans.is_empty() {
        return s.to_string();
    }
    spans.sort_by_key(|&(a, b, _)| (a, std::cmp::Reverse(b)));
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for (start, end, kind) in spans {
        if start < pos || start >= end {
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

/// Redacts a command line: each argument as a string; the argument after a flag whose
/// name says secret (`--db-password X`) whole; `-u user:PASS`; and `-pPASS` for the
/// programs that take a password that way.
pub fn scrub_argv(argv: &[String], counts: &mut Counts) -> Vec<String> {
    // The program that reads the arguments: past wrappers (`sudo`, `env A=1`, `timeout
    // 5`...), whose own arguments are scrubbed as words.
    let base = |a: &String| a.rsplit('/').next().unwrap_or("").to_string();
    let mut p = 0;
    while p < argv.len() {
        let b = base(&argv[p]);
        if WRAPPERS.contains(&b.as_str()) {
            p += 1;
            // The wrapper's options and (for env) assignments.
            while p < argv.len()
                && (argv[p].starts_with('-')
                    || argv[p].contains('=')
                    || argv[p].parse::<f64>().is_ok())
            {
                p += 1;
            }
        } else {
            break;
        }
    }
    let program = argv.get(p).map(base).unwrap_or_default();
    let sub = argv.get(p + 1).map(String::as_str);
    let dash_p = DASH_P_PASSWORD.contains(&program.as_str())
        || (matches!(
            program.as_str(),
            "docker" | "podman" | "nerdctl" | "buildah" | "skopeo"
        ) && sub == Some("login"));
    let shell = SHELLS.contains(&program.as_str());
    let mut out = Vec::with_capacity(argv.len());
    let mut next: Option<&'static str> = None;
    let secret = |counts: &mut Counts, kind: &'static str| {
        *counts.entry(kind).or_insert(0) += 1;
        format!("[REDACTED:{kind}]")
    };
    for (i, arg) in argv.iter().enumerate() {
        match next.take() {
            Some("userinfo") => {
                match arg.split_once(':') {
                    Some((user, _)) => out.push(format!("{user}:{}", secret(counts, "secret"))),
                    None => out.push(scrub(arg, counts)),
                }
                continue;
            }
            Some(kind) => {
                out.push(secret(counts, kind));
                continue;
            }
            None => {}
        }
        // `sh -c "mysql -pPASS ..."`: the script's words, as a command line of their own.
        if shell && i > p + 1 && argv[i - 1] == "-c" {
            let words: Vec<String> = arg.split_whitespace().map(str::to_string).collect();
            out.push(scrub_argv(&words, counts).join(" "));
            continue;
        }
        // `--user=name:PASS`, `-uname:PASS`.
        if i > 0 {
            if let Some(v) = arg
                .strip_prefix("--user=")
                .or_else(|| arg.strip_prefix("--proxy-user="))
                .or_else(|| arg.strip_prefix("-u").filter(|v| !v.is_empty()))
            {
                if let Some((user, _)) = v.split_once(':') {
                    let flag = &arg[..arg.len() - v.len()];
                    out.push(format!("{flag}{user}:{}", secret(counts, "secret")));
                    continue;
                }
            }
        }
        if i > 0 && arg.starts_with('-') && !arg.contains('=') {
            let flag = arg.trim_start_matches('-');
            if is_secret_name(flag) {
                next = Some("secret");
            } else if flag == "u" || flag == "user" || flag == "proxy-user" {
                next = Some("userinfo");
            } else if dash_p && arg == "-p" {
                next = Some("secret");
            } else if dash_p && arg.starts_with("-p") && arg.len() > 2 && !arg.starts_with("--") {
                out.push(format!("-p{}", secret(counts, "secret")));
                continue;
            }
        }
        out.push(scrub(arg, counts));
    }
    out
}

/// `-----BEGIN ... PRIVATE KEY...-----` up to its `-----END ...-----` (PEM, OpenSSH, PGP).
fn private_keys(s: &str, spans: &mut Spans) {
    let mut from = 0;
    while let Some(i) = s[from..].find("-----BEGIN ") {
        let start = from + i;
        let header_start = start + "-----BEGIN ".len();
        let Some(header_len) = s[header_start..].find("-----") else {
            break;
        };
        let header = &s[header_start..header_start + header_len];
        let after = header_start + header_len + 5;
        if !header.contains("PRIVATE KEY") {
            from = after;
            continue;
        }
        let end = s[after..]
            .find("-----END ")
            .and_then(|j| {
                let e = after + j + "-----END ".len();
                s[e..].find("-----").map(|k| e + k + 5)
            })
            .unwrap_or(s.len());
        spans.push((start, end, "private_key"));
        from = end;
    }
}

/// `scheme://user:PASSWORD@host`: the password.
fn urls(s: &str, spans: &mut Spans) {
    for (i, _) in s.match_indices("://") {
        let rest = &s[i + 3..];
        let auth_end = rest
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        // Slack incoming webhooks: the path is the secret.
        if authority.eq_ignore_ascii_case("hooks.slack.com") {
            let path_start = i + 3 + auth_end;
            let path_end = s[path_start..]
                .find(char::is_whitespace)
                .map(|k| path_start + k)
                .unwrap_or(s.len());
            if path_end > path_start + 1 {
                spans.push((path_start + 1, path_end, "webhook"));
            }
        }
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                let start = i + 3 + colon + 1;
                if start < i + 3 + at {
                    spans.push((start, i + 3 + at, "url_password"));
                }
            }
        }
    }
}

fn is_email_local(c: char) -> bool {
    c.is_alphanumeric() || "._%+-".contains(c)
}

fn emails(s: &str, spans: &mut Spans) {
    for (at, _) in s.match_indices('@') {
        // The user part of a URL is not an address.
        let word_start = s[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        if s[word_start..at].contains("://") {
            continue;
        }
        let start = s[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_email_local(*c))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(at);
        let mut end = at + 1;
        for (i, c) in s[at + 1..].char_indices() {
            if c.is_alphanumeric() || c == '.' || c == '-' {
                end = at + 1 + i + c.len_utf8();
            } else {
                break;
            }
        }
        while end > at + 1 && s[..end].ends_with('.') {
            end -= 1;
        }
        let domain = &s[at + 1..end];
        let tld_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
            !host.is_empty() && tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
        });
        if start < at && tld_ok {
            spans.push((start, end, "email"));
        }
    }
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_-.".contains(&c)
}

/// `NAME=VALUE`, `NAME: VALUE`, `NAME = 'VALUE'`, `"NAME":"VALUE"` where NAME says secret;
/// `Authorization: Bearer|Basic|Token X` keeps the scheme and redacts X.
fn assignments(s: &str, spans: &mut Spans) {
    let b = s.as_bytes();
    for (i, &sep) in b.iter().enumerate() {
        if sep != b'=' && sep != b':' {
            continue;
        }
        if sep == b'=' && (b.get(i + 1) == Some(&b'=') || (i > 0 && b[i - 1] == b'=')) {
            continue;
        }
        if sep == b':' && s[i..].starts_with("://") {
            continue;
        }
        // The name, backwards: spaces, a closing quote, name characters.
        let mut j = i;
        while j > 0 && b[j - 1] == b' ' {
            j -= 1;
        }
        if j > 0 && (b[j - 1] == b'"' || b[j - 1] == b'\'') {
            j -= 1;
        }
        let name_end = j;
        while j > 0 && is_name_char(b[j - 1]) {
            j -= 1;
        }
        if j == name_end || !is_secret_name(&s[j..name_end]) {
            continue;
        }
        // The value, forwards.
        let mut v = i + 1;
        while v < b.len() && b[v] == b' ' {
            v += 1;
        }
        let Some(&first) = b.get(v) else { continue };
        let (vs, ve) = if first == b'"' || first == b'\'' {
            let close = s[v + 1..]
                .find(first as char)
                .map(|k| v + 1 + k)
                .unwrap_or(b.len());
            (v + 1, close)
        } else {
            let end = s[v..]
                .find(|c: char| c.is_whitespace() || ",;&})]".contains(c))
                .map(|k| v + k)
                .unwrap_or(b.len());
            (v, end)
        };
        if vs >= ve {
            continue;
        }
        let value = &s[vs..ve];
        if ["bearer", "basic", "token", "digest"]
            .iter()
            .any(|x| value.eq_ignore_ascii_case(x))
        {
            // The credential is the next word.
            let mut w = ve;
            while w < b.len() && b[w] == b' ' {
                w += 1;
            }
            let we = s[w..]
                .find(char::is_whitespace)
                .map(|k| w + k)
                .unwrap_or(b.len());
            if w < we {
                spans.push((w, we, "bearer_token"));
            }
            continue;
        }
        spans.push((vs, ve, "secret"));
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_-./+=".contains(&c)
}

/// Credential-shaped words: known key prefixes, JWTs, `Bearer <token>`.
fn words(s: &str, spans: &mut Spans) {
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
            let scheme = &s[ps..pe];
            if (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic"))
                && s[pe..start].trim().is_empty()
            {
                spans.push((start, i, "bearer_token"));
            }
        }
        prev_word = Some((start, i));
        // Credentials glued to something (`--key=sk-...`, `/v1/sk-...`): each piece.
        let mut piece_start = start;
        for piece in word.split(['=', '/', ':', ',']) {
            let mut token = piece.trim_end_matches(['.', '=']);
            let mut token_start = piece_start;
            // A credential glued to other letters: start at its distinctive prefix.
            // (Only long words can hold one: every such credential is 20+ characters.)
            let glued = if token.len() >= 20 {
                DISTINCTIVE
                    .iter()
                    .filter_map(|p| token.find(p))
                    .filter(|&at| at > 0)
                    .min()
            } else {
                None
            };
            if let Some(at) = glued {
                token_start += at;
                token = &token[at..];
            }
            if KEY_PREFIXES.iter().any(|(p, min)| {
                token.starts_with(p)
                    && token.len() >= p.len() + min
                    && token[p.len()..]
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c))
            }) {
                spans.push((token_start, token_start + token.len(), "api_key"));
            } else if token.starts_with("eyJ")
                && token.matches('.').count() == 2
                && token.len() >= 30
            {
                spans.push((token_start, token_start + token.len(), "jwt"));
            }
            piece_start += piece.len() + 1;
        }
    }
}

/// Card numbers (13-19 digits, single spaces, dashes or dots allowed, Luhn-valid) and US
/// social security numbers (ddd-dd-dddd).
fn digits(s: &str, spans: &mut Spans) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
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
            } else if matches!(b[i], b' ' | b'-' | b'.')
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

    /// Every leak the reviews found, each must be redacted without keeping the value.
    #[test]
    fn reviewed_leaks_are_redacted() {
        let cases: &[(&str, &str)] = &[
            ("PASSWORD='hunter2'", "hunter2"),
            ("TOKEN=\"tok-secret-1\"", "tok-secret-1"),
            ("password = SpacedPw1", "SpacedPw1"),
            ("{\"password\":\"jsonpw\"}", "jsonpw"),
            ("DB_PASS=dbpw9", "dbpw9"),
            ("x-api-key: XApiKeyValue77", "XApiKeyValue77"),
            ("--access-token=TopSecretTok123", "TopSecretTok123"),
            ("--client-secret=CliSecret5", "CliSecret5"),
            (
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "4eC39HqLyjWDarjtT1zdp7dc",
            ),
            ("Authorization: token GhClassicTok42", "GhClassicTok42"),
            ("Authorization: Bearer short1", "short1"),
            ("postgres://admin:PgPassw0rd@db:5432/app", "PgPassw0rd"),
            ("redis://:RedisPw9@10.0.0.5:6379", "RedisPw9"),
            ("bob@ex\u{e4}mple.com", "bob"),
            ("4111.1111.1111.1111", "4111"),
            ("--anthropic-key=sk-ant-api03-abcdefghijklmnop", "abcdefghijklmnop"),
            ("https://api.example.com/v1/sk-proj-abcdefghijklmnopqrst", "abcdefghijklmnopqrst"),
            ("x/AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("--jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl", "eyJzdWIi"),
            ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBF"),
            ("--dbPassword=camelPw1", "camelPw1"),
            ("--accessToken=camelTok1", "camelTok1"),
            ("PGPASSWORD=pgpw1", "pgpw1"),
            ("AccountKey=azkey1", "azkey1"),
            ("https://x.blob.core.windows.net/c?sv=1&sig=sasSig1", "sasSig1"),
            ("SG.abcdefghijklmnopqrstuv.wxyz0123456789", "abcdefghijklmnop"),
            ("ya29.a0AfH6SMBabcdefghijklmnop", "a0AfH6SMB"),
            ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "XXXXSECRET"),
            ("/etc/sk-ant-api03-sandboxchosenpath123", "sandboxchosenpath123"),
        ];
        for (input, secret) in cases {
            let (got, counts) = s(input);
            assert!(!got.contains(secret), "{input:?} kept {secret:?}: {got}");
            assert!(!counts.is_empty(), "{input:?}");
        }
        let argv = |a: &[&str]| -> Vec<String> {
            let mut c = Counts::new();
            scrub_argv(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &mut c)
        };
        for (cmd, secret) in [
            (
                &["tool", "--db-password", "Hunter2Secret"][..],
                "Hunter2Secret",
            ),
            (&["tool", "--auth-token", "AuthSecret987"], "AuthSecret987"),
            (&["tool", "--passphrase", "MyPassPhrase1"], "MyPassPhrase1"),
            // From the execution service's attack round.
            (&["tool", "--key", "hunter2xyz"], "hunter2xyz"),
            (&["curl", "-H", "X-Auth: abcdef123456"], "abcdef123456"),
            (&["mysql", "-pMysqlRootPw"], "MysqlRootPw"),
            (
                &["sshpass", "-p", "SshpassPw123", "ssh", "host"],
                "SshpassPw123",
            ),
            (
                &["curl", "-u", "admin:CurlBasicPw1", "https://x"],
                "CurlBasicPw1",
            ),
            (
                &["curl", "--user=alice:UserEqPw1", "https://x"],
                "UserEqPw1",
            ),
            (&["mysql", "-ualice:AttachedPw1"], "AttachedPw1"),
            (
                &["docker", "login", "-p", "DockerPw1", "registry"],
                "DockerPw1",
            ),
            (&["tool", "--dbPassword", "CamelFlagPw1"], "CamelFlagPw1"),
            (
                &["sudo", "docker", "login", "-p", "SudoDockerPw1"],
                "SudoDockerPw1",
            ),
            (&["env", "FOO=1", "mysql", "-pEnvMysqlPw1"], "EnvMysqlPw1"),
            (
                &[
                    "sh",
                    "-c",
                    "docker login -p ShDockerPw1 reg && mysql -pShMysqlPw1",
                ],
                "ShDockerPw1",
            ),
            (&["bash", "-c", "mysql -pShMysqlPw2"], "ShMysqlPw2"),
            (
                &["sh", "-c", "curl -u admin:ShCurlPw1 https://x"],
                "ShCurlPw1",
            ),
            (&["podman", "login", "-p", "PodmanPw1"], "PodmanPw1"),
            (
                &["tool", "xsk-ant-api03-gluedgluedglued1"],
                "gluedgluedglued1",
            ),
        ] {
            let out = argv(cmd);
            assert!(
                !out.iter().any(|a| a.contains(secret)),
                "{cmd:?} -> {out:?}"
            );
        }
        // ...while ports and ordinary flags stay.
        assert_eq!(
            argv(&[
                "python3",
                "-p",
                "8080",
                "--author=bob",
                "--session-name",
                "x"
            ]),
            [
                "python3",
                "-p",
                "8080",
                "--author=bob",
                "--session-name",
                "x"
            ]
        );
    }

    /// A command line is scrubbed per argument, then again as entry text: markers stay whole
    /// and are counted once.
    #[test]
    fn scrubbing_twice_changes_nothing() {
        for argv in [
            vec!["/bin/echo", "password=foo"],
            vec!["tool", "API_KEY=sk-abcdefghijklmnopqrstu"],
            vec!["tool", "--token", "x"],
        ] {
            let argv: Vec<String> = argv.into_iter().map(str::to_string).collect();
            let mut once = Counts::new();
            let first = scrub_argv(&argv, &mut once);
            let mut again = Counts::new();
            let second: Vec<String> = first.iter().map(|a| scrub(a, &mut again)).collect();
            assert_eq!(first, second, "{argv:?}");
            assert!(again.is_empty(), "{argv:?}: {again:?}");
            assert!(!first.iter().any(|a| a.contains("]]")), "{first:?}");
        }
    }

    /// The sandbox chooses what goes into some entries (paths it tried to write): no input
    /// may make the scrubber panic (a panic would lose the run's record).
    #[test]
    fn never_panics_on_any_text() {
        let pieces = [
            "a",
            "@",
            ".",
            ":",
            "=",
            "/",
            "-",
            " ",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "\u{85}",
            "é",
            "😀",
            "\"",
            "'",
            "://",
            "sk-",
            "eyJ",
            "Bearer",
            "password",
            "-----BEGIN ",
            "PRIVATE KEY-----",
            "4111",
            "x.com",
            "\n",
            "\u{0}",
            "ab",
            "_",
            "1",
            "\\",
        ];
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..30_000 {
            let n = 1 + next() % 12;
            let text: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let mut c = Counts::new();
            let _ = scrub(&text, &mut c);
            let argv: Vec<String> = text.split(' ').map(str::to_string).collect();
            let _ = scrub_argv(&argv, &mut c);
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
