//! `ironcage_guard::pii` through its public API: every detector's positives and hard
//! negatives, span boundaries, UTF-8 around matches, redaction and blocking, JSON bodies of
//! the two LLM wire formats, policy parsing, the labelled corpus, and a no-panic fuzz.
//!
//! Key-shaped test values are built at run time from a seeded generator, so this file holds
//! no literal that a secret scanner would flag.

use ironcage_guard::pii::{eval, Action, Counts, Finding, Kind, Rules, Scanner};
use serde_json::json;
use std::borrow::Cow;

fn scanner() -> &'static Scanner {
    Scanner::global()
}

/// `(kind, value)` of every finding.
fn found(text: &str) -> Vec<(Kind, &str)> {
    scanner()
        .scan(text)
        .into_iter()
        .map(|f| (f.kind, &text[f.range()]))
        .collect()
}

/// Asserts `text` yields exactly one finding, of `kind`, whose value is `value`.
#[track_caller]
fn assert_one(text: &str, kind: Kind, value: &str) {
    assert_eq!(found(text), vec![(kind, value)], "in {text:?}");
}

#[track_caller]
fn assert_none(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

/// xorshift64*, so tests need no random crate and always see the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn string(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

fn openai_key(rng: &mut Rng) -> String {
    format!(
        "sk-proj-{}T3BlbkFJ{}",
        rng.string(74, URL_SAFE),
        rng.string(74, URL_SAFE)
    )
}

fn anthropic_key(rng: &mut Rng) -> String {
    format!("sk-ant-api03-{}AA", rng.string(93, URL_SAFE))
}

#[test]
fn scanner_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Scanner>();
    send_sync::<Rules>();
}

// ------------------------------------------------------------------ detectors

#[test]
fn emails() {
    assert_one(
        "Write to jane.doe+billing@mail.example.co.uk today",
        Kind::Email,
        "jane.doe+billing@mail.example.co.uk",
    );
    assert_one("<ops@acme.io>", Kind::Email, "ops@acme.io");
    assert_one(
        "Mail: Bob_Smith@Example.COM.",
        Kind::Email,
        "Bob_Smith@Example.COM",
    );
    for neg in [
        "![logo](assets/icon@2x.png)",
        "user@localhost",
        "npm i left-pad@1.3.0",
        "@app.route('/x')",
        "git@github.com:acme/infra.git",
        "https://user:secret@db.example.com/x",
        "bob@example.notatld",
    ] {
        assert_none(neg);
    }
}

#[test]
fn phones() {
    for p in [
        "+1 (415) 555-2671",
        "415-555-2671",
        "(415) 555-2671",
        "415.555.2671",
        "1-800-555-0199",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 12345678",
        "+33 6 12 34 56 78",
        "+81-3-1234-5678",
        "+91 98765 43210",
        "0044 20 7946 0958",
        "020 7946 0958",
        "01 23 45 67 89",
    ] {
        assert_one(&format!("Call {p}, thanks."), Kind::Phone, p);
    }
    assert_one("Phone: 4155552671", Kind::Phone, "4155552671");
    for neg in [
        "Order 4155552671 shipped",
        "Order #415-555-2671",
        "2024-05-12 10:30:00",
        "Due 05/12/2024",
        "See pp. 212-255",
        "ISBN 978-3-16-148410-0",
        "ORCID 0000-0002-1825-0097",
        "score +12 and -3",
        "hex 01 02 03 04 05 06 07 08",
    ] {
        assert_none(neg);
    }
}

#[test]
fn cards() {
    for c in [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "2223 0031 2200 3222",
        "3782 822463 10005",
        "6011 1111 1111 1117",
        "3530 1113 3330 0000",
        "3056 930902 5904",
    ] {
        assert_one(&format!("card {c}."), Kind::CreditCard, c);
    }
    // Presidio's three-in-a-row case: a grouped card right after another card.
    let three = "4012888888881881 4012-8888-8888-1881 4012 8888 8888 1881";
    assert_eq!(
        found(three),
        vec![
            (Kind::CreditCard, "4012888888881881"),
            (Kind::CreditCard, "4012-8888-8888-1881"),
            (Kind::CreditCard, "4012 8888 8888 1881"),
        ]
    );
    assert_one(
        "Card 4111 1111 1111 1111 12/27",
        Kind::CreditCard,
        "4111 1111 1111 1111",
    );
    for neg in [
        "ref 4111111111111112", // Luhn fails
        "4012-8888-8888-1882",  // Luhn fails, grouped
        "36168002586008",       // Diners length, Luhn fails
        "ref 1234567812345670", // Luhn ok, no issuer
        "IMEI 356938035643809", // Luhn ok, 15 digits, not Amex
        "tracking 9400 1000 0000 0000 0000 00",
        "card4111111111111111", // glued before
        "4111111111111111abc",  // glued after
        "x_4111111111111111",
        "pi 3.4111111111111111",
    ] {
        assert_none(neg);
    }
}

#[test]
fn ssns() {
    assert_one("SSN: 536-22-1234", Kind::UsSsn, "536-22-1234");
    assert_one("ssn 536 22 1234.", Kind::UsSsn, "536 22 1234");
    for neg in [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "536-00-1234",
        "536-22-0000",
        "078-05-1120",
        "123-45-6789",
        "invoice 536221234",
        "536-22-1234-7",
    ] {
        assert_none(neg);
    }
}

#[test]
fn ibans() {
    for iban in [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB29 NWBK 6016 1331 9268 19",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "CH9300762011623852957",
    ] {
        assert_one(&format!("IBAN: {iban}, ok"), Kind::Iban, iban);
    }
    assert_one(
        "pay DE89 3704 0044 0532 0130 00 12 EUR",
        Kind::Iban,
        "DE89 3704 0044 0532 0130 00",
    );
    for neg in [
        "DE89370400440532013001",
        "GB29 NWBK 6016 1331 9268 18",
        "XDE89370400440532013000",
        "DE8937040044053201300",
    ] {
        assert_none(neg);
    }
}

#[test]
fn ip_addresses() {
    for ip in [
        "10.0.0.1",
        "192.168.1.254",
        "203.0.113.7",
        "::1",
        "fe80::1ff:fe23:4567:890a",
        "2001:db8::8a2e:370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.0.2.128",
    ] {
        assert_one(&format!("from {ip}."), Kind::IpAddress, ip);
    }
    assert_one("http://[2001:db8::1]:8080/", Kind::IpAddress, "2001:db8::1");
    assert_one(
        "mongodb://app:pw@10.0.0.5:27017/db",
        Kind::IpAddress,
        "10.0.0.5",
    );
    assert_eq!(
        found("DHCP range 192.168.1.100-192.168.1.200"),
        vec![
            (Kind::IpAddress, "192.168.1.100"),
            (Kind::IpAddress, "192.168.1.200")
        ]
    );
    for neg in [
        "v1.2.3.4",
        "version 1.2.3.4",
        "v2.10.0.1",
        "pkg@1.2.3.4",
        "1.2.3.4.5",
        "1.3.6.1.4.1.2021",
        "999.1.1.1",
        "let s = add::<u32>(1, 2);",
        "use std::io::Result;",
        "ys = arr[1::2]",
        "at 12:30:45",
        "MAC 00:1A:2B:3C:4D:5E",
    ] {
        assert_none(neg);
    }
}

#[test]
fn api_keys() {
    let mut rng = Rng(7);
    let keys = [
        openai_key(&mut rng),
        format!(
            "sk-{}T3BlbkFJ{}",
            rng.string(20, ALNUM),
            rng.string(20, ALNUM)
        ),
        anthropic_key(&mut rng),
        format!(
            "AKIA{}",
            rng.string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        ),
        format!("ghp_{}", rng.string(36, ALNUM)),
        format!(
            "github_pat_{}_{}",
            rng.string(22, ALNUM),
            rng.string(59, ALNUM)
        ),
        format!("AIza{}", rng.string(35, URL_SAFE)),
        format!("sk_live_{}", rng.string(24, ALNUM)),
        format!("xoxb-1234567890-9876543210-{}", rng.string(24, ALNUM)),
    ];
    for key in &keys {
        assert_one(&format!("export KEY={key}\n"), Kind::ApiKey, key);
        assert_one(&format!("Bearer {key}."), Kind::ApiKey, key);
    }
    for neg in [
        "OPENAI_API_KEY=sk-...",
        "api_key: YOUR_API_KEY",
        "export ANTHROPIC_API_KEY=sk-ant-...",
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAXXXXXXXXXXXXXXXX",
        "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "stripe.api_key = 'sk_test_...'",
        "a risk-free task-sk-thing",
    ] {
        assert_none(neg);
    }
}

#[test]
fn private_keys() {
    let mut rng = Rng(11);
    let body: Vec<String> = (0..5)
        .map(|_| {
            rng.string(
                64,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            )
        })
        .collect();
    let body = body.join("\n");
    for label in [
        "RSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK",
    ] {
        let block = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----");
        assert_one(
            &format!("my key:\n{block}\nwhy is it rejected?"),
            Kind::PrivateKey,
            &block,
        );
    }
    for label in ["PUBLIC KEY", "CERTIFICATE"] {
        assert_none(&format!(
            "-----BEGIN {label}-----\n{body}\n-----END {label}-----"
        ));
    }
}

#[test]
fn jwts() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let mut rng = Rng(13);
    let payload = b64(r#"{"sub":"1234567890","name":"Jane","iat":1516239022}"#);
    let token = format!(
        "{}.{payload}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        rng.string(43, URL_SAFE)
    );
    assert_one(&format!("Authorization: Bearer {token}"), Kind::Jwt, &token);
    assert_one(&format!("session={token}; Path=/"), Kind::Jwt, &token);
    let no_alg = format!(
        "{}.{payload}.{}",
        b64(r#"{"typ":"JWT"}"#),
        rng.string(43, URL_SAFE)
    );
    assert_none(&format!("data={no_alg}"));
}

#[test]
fn hard_negatives_by_class() {
    let mut rng = Rng(17);
    const HEX: &[u8] = b"0123456789abcdef";
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        rng.string(8, HEX),
        rng.string(4, HEX),
        rng.string(3, HEX),
        rng.string(3, HEX),
        rng.string(12, HEX)
    );
    for neg in [
        format!("request_id={uuid}"),
        format!("md5 {}", rng.string(32, HEX)),
        format!("sha1 {}", rng.string(40, HEX)),
        format!("sha256:{}", rng.string(64, HEX)),
        format!("commit {}", rng.string(40, HEX)),
        "2024-03-15T14:30:00Z and 2024-03-15 14:30:00.123456+00:00".to_owned(),
        "Order #A-2024-000123, order number 100234987".to_owned(),
        "UPS 1Z999AA10123456784".to_owned(),
        "pages 123-145".to_owned(),
        "$1,299.99 for 1,234,567 units".to_owned(),
        "Chrome/120.0.6099.109".to_owned(),
    ] {
        assert_none(&neg);
    }
}

// ------------------------------------------------------------------ boundaries and UTF-8

#[test]
fn values_glued_to_words_are_not_values() {
    assert_none("abc4111111111111111");
    assert_none("4111111111111111xyz");
    assert_none("id536-22-1234");
    assert_none("x10.0.0.1");
    assert_one(
        "card:4111111111111111;",
        Kind::CreditCard,
        "4111111111111111",
    );
}

#[test]
fn trailing_punctuation_is_not_in_the_span() {
    for (text, kind, value) in [
        ("Mail bob@example.com.", Kind::Email, "bob@example.com"),
        ("Mail bob@example.com!", Kind::Email, "bob@example.com"),
        ("Call 415-555-2671.", Kind::Phone, "415-555-2671"),
        (
            "Card 4111 1111 1111 1111.",
            Kind::CreditCard,
            "4111 1111 1111 1111",
        ),
        ("From 10.0.0.1, then", Kind::IpAddress, "10.0.0.1"),
        ("From fe80::1.", Kind::IpAddress, "fe80::1"),
        ("(bob@example.com)", Kind::Email, "bob@example.com"),
        ("\"bob@example.com\"", Kind::Email, "bob@example.com"),
    ] {
        assert_one(text, kind, value);
    }
}

#[test]
fn utf8_around_matches_keeps_char_boundaries() {
    let cases = [
        ("日本語bob@example.com日本語", "bob@example.com"),
        ("Ünïcödé 4111 1111 1111 1111 – ok", "4111 1111 1111 1111"),
        ("电话：+44 20 7946 0958。", "+44 20 7946 0958"),
        ("IP→10.0.0.1←", "10.0.0.1"),
        ("🙂DE89370400440532013000🙂", "DE89370400440532013000"),
        ("é536-22-1234é", "536-22-1234"),
    ];
    for (text, value) in cases {
        let findings = scanner().scan(text);
        assert_eq!(findings.len(), 1, "{text}");
        let f = findings[0];
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        assert_eq!(&text[f.range()], value);
        let applied = scanner().apply(text, &Rules::all(Action::Redact));
        assert!(applied.text.contains("[REDACTED:"), "{text}");
        assert!(!applied.text.contains(value));
    }
}

// ------------------------------------------------------------------ apply

#[test]
fn apply_redacts_with_typed_placeholders_and_counts() {
    let text = "Mail jane@example.com or john@example.org, call 415-555-2671 from 10.0.0.1.";
    let applied = scanner().apply(text, &Rules::default());
    assert_eq!(
        applied.text,
        "Mail [REDACTED:email] or [REDACTED:email], call [REDACTED:phone] from 10.0.0.1."
    );
    let c = &applied.counts;
    assert_eq!(c.found.get(&Kind::Email), Some(&2));
    assert_eq!(c.found.get(&Kind::Phone), Some(&1));
    assert_eq!(
        c.found.get(&Kind::IpAddress),
        Some(&1),
        "allowed, still counted"
    );
    assert_eq!(c.redacted.get(&Kind::Email), Some(&2));
    assert_eq!(c.redacted.get(&Kind::IpAddress), None);
    assert!(c.blocked.is_empty());
}

#[test]
fn apply_without_findings_borrows() {
    let text = "nothing to see here, version 1.2.3.4";
    let applied = scanner().apply(text, &Rules::default());
    assert!(matches!(applied.text, Cow::Borrowed(_)));
    assert!(applied.counts.is_empty());
    let allowed = scanner().apply("mail a@example.com", &Rules::all(Action::Allow));
    assert!(matches!(allowed.text, Cow::Borrowed(_)));
    assert_eq!(allowed.counts.found.get(&Kind::Email), Some(&1));
}

#[test]
fn block_lists_kinds_and_still_redacts() {
    let rules = Rules::default().with(Kind::CreditCard, Action::Block);
    let applied = scanner().apply("card 4111 1111 1111 1111 for bob@example.com", &rules);
    assert_eq!(
        applied.counts.blocked.iter().copied().collect::<Vec<_>>(),
        vec![Kind::CreditCard]
    );
    assert!(applied.counts.is_blocked());
    assert_eq!(
        applied.text,
        "card [REDACTED:credit_card] for [REDACTED:email]"
    );
    assert_eq!(applied.counts.redacted.get(&Kind::CreditCard), None);
    assert_eq!(applied.counts.redacted.get(&Kind::Email), Some(&1));
}

#[test]
fn counts_never_hold_values() {
    let mut rng = Rng(19);
    let key = anthropic_key(&mut rng);
    let text = format!("key {key} and ssn 536-22-1234 and bob@example.com");
    let applied = scanner().apply(&text, &Rules::default());
    let audit = serde_json::to_string(&applied.counts).unwrap();
    for value in [key.as_str(), "536-22-1234", "bob@example.com", "example"] {
        assert!(!audit.contains(value), "{audit}");
    }
    assert_eq!(
        audit,
        r#"{"found":{"email":1,"us_ssn":1,"api_key":1},"redacted":{"email":1,"us_ssn":1,"api_key":1},"blocked":[]}"#
    );
}

// ------------------------------------------------------------------ JSON bodies

const SKIP: &[&str] = &["model", "role", "type", "id"];

#[test]
fn apply_json_openai_chat_body() {
    let mut rng = Rng(23);
    let key = openai_key(&mut rng);
    let mut body = json!({
        "model": "gpt-4o-2024-08-06",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": format!("My key {key} leaks, email me at a@example.com")},
            {"role": "assistant", "content": "Rotate it."},
        ],
        "user": "bob@example.com",
        "temperature": 0.2,
    });
    let counts = scanner().apply_json(&mut body, &Rules::default(), SKIP);
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(
        body["messages"][1]["content"],
        "My key [REDACTED:api_key] leaks, email me at [REDACTED:email]"
    );
    assert_eq!(body["user"], "[REDACTED:email]");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(counts.found.get(&Kind::Email), Some(&2));
    assert_eq!(counts.found.get(&Kind::ApiKey), Some(&1));
}

#[test]
fn apply_json_anthropic_messages_body_string_and_parts() {
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "Support agent. Escalations go to lead@example.com.",
        "messages": [
            {"role": "user", "content": "Card 4111 1111 1111 1111 was charged twice"},
            {"role": "user", "content": [
                {"type": "text", "text": "Call me on +44 20 7946 0958"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "ssn 536-22-1234"}]},
            ]},
        ],
    });
    let rules = Rules::default().with(Kind::CreditCard, Action::Block);
    let counts = scanner().apply_json(&mut body, &rules, SKIP);
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["messages"][1]["content"][0]["type"], "text");
    assert_eq!(
        body["system"],
        "Support agent. Escalations go to [REDACTED:email]."
    );
    assert_eq!(
        body["messages"][0]["content"],
        "Card [REDACTED:credit_card] was charged twice"
    );
    assert_eq!(
        body["messages"][1]["content"][0]["text"],
        "Call me on [REDACTED:phone]"
    );
    assert_eq!(
        body["messages"][1]["content"][2]["content"][0]["text"],
        "ssn [REDACTED:us_ssn]"
    );
    assert_eq!(
        counts.blocked.iter().copied().collect::<Vec<_>>(),
        vec![Kind::CreditCard]
    );
    assert_eq!(counts.found.values().sum::<u32>(), 4);
}

#[test]
fn apply_json_skips_keys_at_any_depth_and_never_touches_object_keys() {
    let mut body = json!({
        "id": "bob@example.com",
        "metadata": {"bob@example.com": "carol@example.com", "model": {"x": "dan@example.com"}},
    });
    let counts = scanner().apply_json(&mut body, &Rules::default(), SKIP);
    assert_eq!(body["id"], "bob@example.com");
    assert_eq!(body["metadata"]["bob@example.com"], "[REDACTED:email]");
    assert_eq!(body["metadata"]["model"]["x"], "dan@example.com");
    assert_eq!(counts.found.get(&Kind::Email), Some(&1));
}

#[test]
fn json_escapes_in_values_and_in_raw_text() {
    // Decoded by serde_json: a newline, a quote and a unicode escape sit right next to values.
    let raw =
        r#"{"content": "line one\nbob@example.com\"quoted\" caf\u00e9 4111 1111 1111 1111\u00e9"}"#;
    let mut body: serde_json::Value = serde_json::from_str(raw).unwrap();
    let counts = scanner().apply_json(&mut body, &Rules::default(), SKIP);
    assert_eq!(
        body["content"],
        "line one\n[REDACTED:email]\"quoted\" café [REDACTED:credit_card]é"
    );
    assert_eq!(counts.found.values().sum::<u32>(), 2);

    // Scanned as raw wire text, the escapes' letters must not glue onto the values, and the
    // redacted text must still be valid JSON.
    let raw = r#"{"content": "a\nbob@example.com\t4111111111111111\u00e9 \\n4111111111111111"}"#;
    assert_eq!(
        found(raw),
        vec![
            (Kind::Email, "bob@example.com"),
            (Kind::CreditCard, "4111111111111111")
        ]
    );
    let applied = scanner().apply(raw, &Rules::default());
    let reparsed: serde_json::Value = serde_json::from_str(&applied.text).unwrap();
    assert_eq!(
        reparsed["content"],
        "a\n[REDACTED:email]\t[REDACTED:credit_card]é \\n4111111111111111"
    );
}

// ------------------------------------------------------------------ policy

#[test]
fn rules_from_yaml() {
    let rules: Rules =
        serde_norway::from_str("{email: redact, credit_card: block, ip_address: allow}").unwrap();
    assert_eq!(rules.action(Kind::CreditCard), Action::Block);
    assert_eq!(rules.action(Kind::IpAddress), Action::Allow);
    assert_eq!(
        rules.action(Kind::Jwt),
        Action::Redact,
        "unnamed kinds keep defaults"
    );

    let err = serde_norway::from_str::<Rules>("{email: redact, ssn: block}").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown PII kind `ssn`"), "{msg}");
    assert!(
        msg.contains("us_ssn"),
        "the message lists the known kinds: {msg}"
    );

    let err = serde_norway::from_str::<Rules>("{email: delete}").unwrap_err();
    assert!(err.to_string().contains("delete"), "{err}");

    let round: Rules = serde_json::from_value(serde_json::to_value(&rules).unwrap()).unwrap();
    assert_eq!(round, rules);
}

// ------------------------------------------------------------------ corpus

#[test]
fn corpus_precision_and_recall_per_kind() {
    let corpus = include_str!("../corpus/pii.jsonl");
    let report = eval::evaluate(scanner(), corpus).unwrap();
    assert!(report.lines >= 400, "corpus has {} lines", report.lines);
    for kind in Kind::ALL {
        let s = report.per_kind[&kind];
        assert!(s.tp >= 15, "{kind}: only {} labelled positives found", s.tp);
    }
    let below = report.kinds_below(0.95);
    assert!(
        below.is_empty(),
        "below 0.95: {below:?}\n{}\n{:#?}",
        report.table(),
        report.mismatches
    );
}

// ------------------------------------------------------------------ fuzz

#[track_caller]
fn check_invariants(text: &str) {
    let findings = scanner().scan(text);
    let mut last_end = 0;
    for f in &findings {
        let Finding { start, end, .. } = *f;
        assert!(start < end && end <= text.len(), "{f:?} in {text:?}");
        assert!(
            start >= last_end,
            "overlap or unsorted: {findings:?} in {text:?}"
        );
        assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
        last_end = end;
    }
    let applied = scanner().apply(text, &Rules::all(Action::Redact));
    let total: u32 = applied.counts.found.values().sum();
    assert_eq!(total as usize, findings.len());
    let mut counts = Counts::default();
    counts.merge(&applied.counts);
    assert_eq!(counts, applied.counts);
}

#[test]
fn fuzz_random_bytes_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_invariants(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn fuzz_spliced_fragments_never_panic() {
    // Random bytes rarely reach the validators; splicing pieces of real values does.
    let mut rng = Rng(42);
    let pieces: Vec<String> = vec![
        "4111 1111 1111 1111".into(),
        "+44 (0)20 7946".into(),
        "(212) 555-".into(),
        "536-22-1234".into(),
        "DE89 3704 0044".into(),
        "GB29NWBK".into(),
        "::ffff:10.0.".into(),
        "fe80::".into(),
        "a[1::2]".into(),
        "bob@example.".into(),
        "@".into(),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE".into(),
        "-----END".into(),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.".into(),
        "sk-ant-api03-".into(),
        "sk-proj-".into(),
        "AKIA".into(),
        "xoxb-1234567890-".into(),
        "\\n".into(),
        "\\u00e9".into(),
        "é".into(),
        "日本".into(),
        "0".into(),
        "9".into(),
        ".".into(),
        " ".into(),
        "-".into(),
        "(".into(),
        ")".into(),
        ":".into(),
        "+".into(),
        "/".into(),
        "1234567890123".into(),
        "A".into(),
        openai_key(&mut Rng(3)),
    ];
    for _ in 0..5000 {
        let n = rng.below(16);
        let text: String = (0..n)
            .map(|_| pieces[rng.below(pieces.len())].as_str())
            .collect();
        check_invariants(&text);
    }
}
