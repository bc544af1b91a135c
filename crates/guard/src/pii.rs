//! PII and secret detection for text that leaves a sandbox: LLM prompts on the way out and,
//! when a policy asks for it, responses on the way back.
//!
//! Owns the detectors (email, phone, payment card, US SSN, IBAN, IP address, API keys,
//! private keys, JWTs), the redaction of findings into typed placeholders such as
//! `[REDACTED:email]`, and the per-kind counts an audit entry records.
//!
//! It must never keep a detected value: a [`Finding`] is a kind and two offsets, [`Counts`]
//! are numbers, so an audit log built from them cannot become a copy of the secrets it
//! reports. It does no I/O.
//!
//! Speed comes from anchors rather than a regex over everything: each detector starts at a
//! byte or literal that is rare in prose (`@`, `:`, a digit run, a key prefix found by one
//! Aho-Corasick pass, `-----BEGIN`, `eyJ`) and validates a small candidate by hand
//! (Luhn, mod 97, `std::net` parsing, base64url + JSON for JWT headers).

#![forbid(unsafe_code)]

mod card;
mod email;
pub mod eval;
mod iban;
mod ip;
mod json;
mod jwt;
mod keys;
mod numbers;
mod pem;
mod phone;
mod ssn;
mod text;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Why a name is not a kind or an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("unknown PII kind `{name}`: expected one of {}", Kind::names())]
    UnknownKind { name: String },
    #[error("unknown PII action `{name}`: expected one of allow, redact, block")]
    UnknownAction { name: String },
}

/// What a finding is. The order is the order of [`Kind::ALL`] and of audit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    IpAddress,
    ApiKey,
    PrivateKey,
    Jwt,
}

impl Kind {
    pub const COUNT: usize = 9;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Email,
        Kind::Phone,
        Kind::CreditCard,
        Kind::UsSsn,
        Kind::Iban,
        Kind::IpAddress,
        Kind::ApiKey,
        Kind::PrivateKey,
        Kind::Jwt,
    ];

    /// The snake_case name used in policy YAML and audit entries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::UsSsn => "us_ssn",
            Kind::Iban => "iban",
            Kind::IpAddress => "ip_address",
            Kind::ApiKey => "api_key",
            Kind::PrivateKey => "private_key",
            Kind::Jwt => "jwt",
        }
    }

    /// What replaces a redacted value: typed, so the model still knows an email was there.
    pub const fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[REDACTED:email]",
            Kind::Phone => "[REDACTED:phone]",
            Kind::CreditCard => "[REDACTED:credit_card]",
            Kind::UsSsn => "[REDACTED:us_ssn]",
            Kind::Iban => "[REDACTED:iban]",
            Kind::IpAddress => "[REDACTED:ip_address]",
            Kind::ApiKey => "[REDACTED:api_key]",
            Kind::PrivateKey => "[REDACTED:private_key]",
            Kind::Jwt => "[REDACTED:jwt]",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// When two candidates overlap with the same length, the lower rank wins: a PEM block
    /// holds base64 that may look like a card, an email's local part may hold digits.
    const fn specificity(self) -> u8 {
        match self {
            Kind::PrivateKey => 0,
            Kind::Jwt => 1,
            Kind::ApiKey => 2,
            Kind::Iban => 3,
            Kind::CreditCard => 4,
            Kind::UsSsn => 5,
            Kind::Email => 6,
            Kind::IpAddress => 7,
            Kind::Phone => 8,
        }
    }

    fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = PiiError;

    fn from_str(s: &str) -> Result<Kind, PiiError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| PiiError::UnknownKind { name: s.to_owned() })
    }
}

/// What a policy does with a kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Leave the value in the text; it is still counted.
    Allow,
    /// Replace the value with its kind's placeholder.
    Redact,
    /// Refuse the request; the value is replaced as well, so a caller that logs the text
    /// after refusing never logs the value.
    Block,
}

impl FromStr for Action {
    type Err = PiiError;

    fn from_str(s: &str) -> Result<Action, PiiError> {
        match s {
            "allow" => Ok(Action::Allow),
            "redact" => Ok(Action::Redact),
            "block" => Ok(Action::Block),
            _ => Err(PiiError::UnknownAction { name: s.to_owned() }),
        }
    }
}

/// An action for every kind. Kinds a policy does not name keep their default: redact, except
/// `ip_address`, which is allowed because prompts about networking are full of addresses that
/// identify no person.
///
/// Deserializes from a map such as `{email: redact, credit_card: block, ip_address: allow}`;
/// an unknown kind name is an error that lists the known ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, Action>", into = "BTreeMap<Kind, Action>")]
pub struct Rules {
    actions: [Action; Kind::COUNT],
}

impl Default for Rules {
    fn default() -> Rules {
        let mut rules = Rules::all(Action::Redact);
        rules.set(Kind::IpAddress, Action::Allow);
        rules
    }
}

impl Rules {
    /// The same action for every kind.
    pub const fn all(action: Action) -> Rules {
        Rules {
            actions: [action; Kind::COUNT],
        }
    }

    pub const fn action(&self, kind: Kind) -> Action {
        self.actions[kind.index()]
    }

    pub fn set(&mut self, kind: Kind, action: Action) -> &mut Rules {
        self.actions[kind.index()] = action;
        self
    }

    /// Builder form of [`Rules::set`].
    pub fn with(mut self, kind: Kind, action: Action) -> Rules {
        self.set(kind, action);
        self
    }
}

impl TryFrom<BTreeMap<String, Action>> for Rules {
    type Error = PiiError;

    fn try_from(map: BTreeMap<String, Action>) -> Result<Rules, PiiError> {
        let mut rules = Rules::default();
        for (name, action) in map {
            rules.set(name.parse()?, action);
        }
        Ok(rules)
    }
}

impl From<Rules> for BTreeMap<Kind, Action> {
    fn from(rules: Rules) -> BTreeMap<Kind, Action> {
        Kind::ALL
            .into_iter()
            .map(|k| (k, rules.action(k)))
            .collect()
    }
}

/// One detected value: its kind and byte offsets into the scanned text. Offsets are on char
/// boundaries (every detector starts and ends its span on an ASCII byte), so
/// `&text[f.start..f.end]` never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Finding {
    pub const fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    const fn len(&self) -> usize {
        self.end - self.start
    }
}

/// What a scan found and did, by kind. Never holds a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub found: BTreeMap<Kind, u32>,
    pub redacted: BTreeMap<Kind, u32>,
    /// Kinds whose action is [`Action::Block`] and that were found: the caller must refuse.
    pub blocked: BTreeSet<Kind>,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.found.is_empty() && self.redacted.is_empty() && self.blocked.is_empty()
    }

    pub fn is_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    pub fn merge(&mut self, other: &Counts) {
        for (kind, n) in &other.found {
            bump(&mut self.found, *kind, *n);
        }
        for (kind, n) in &other.redacted {
            bump(&mut self.redacted, *kind, *n);
        }
        self.blocked.extend(other.blocked.iter().copied());
    }
}

fn bump(map: &mut BTreeMap<Kind, u32>, kind: Kind, n: u32) {
    let slot = map.entry(kind).or_insert(0);
    *slot = slot.saturating_add(n);
}

/// The text after [`Scanner::apply`]: borrowed when nothing was replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<'t> {
    pub text: Cow<'t, str>,
    pub counts: Counts,
}

/// The detectors, built once. `Send + Sync`; share one per process ([`Scanner::global`]).
#[derive(Clone, Debug)]
pub struct Scanner {
    prefixes: keys::Prefixes,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            prefixes: keys::Prefixes::new(),
        }
    }

    /// A process-wide scanner, built on first use.
    pub fn global() -> &'static Scanner {
        static SCANNER: OnceLock<Scanner> = OnceLock::new();
        SCANNER.get_or_init(Scanner::new)
    }

    /// Every finding in `text`, sorted by offset and non-overlapping.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        self.prefixes.find(bytes, &mut found);
        email::find(bytes, &mut found);
        ip::find_v6(bytes, &mut found);
        numbers::find(bytes, &mut found);
        resolve(found)
    }

    /// Scans `text` and replaces every finding whose action is not `Allow` with its
    /// placeholder. Blocked kinds are listed in `counts.blocked`; the caller refuses.
    pub fn apply<'t>(&self, text: &'t str, rules: &Rules) -> Applied<'t> {
        let mut counts = Counts::default();
        let mut out: Option<String> = None;
        let mut copied = 0;
        for f in self.scan(text) {
            bump(&mut counts.found, f.kind, 1);
            match rules.action(f.kind) {
                Action::Allow => continue,
                Action::Redact => bump(&mut counts.redacted, f.kind, 1),
                Action::Block => {
                    counts.blocked.insert(f.kind);
                }
            }
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..f.start]);
            buf.push_str(f.kind.placeholder());
            copied = f.end;
        }
        let text = match out {
            Some(mut buf) => {
                buf.push_str(&text[copied..]);
                Cow::Owned(buf)
            }
            None => Cow::Borrowed(text),
        };
        Applied { text, counts }
    }

    /// [`Scanner::apply`] on every string value of a JSON document (object keys are left
    /// alone), in place. Values under an object key listed in `skip_keys` are not scanned at
    /// any depth: `model`, `role`, `type` and ids are protocol, not content.
    pub fn apply_json(
        &self,
        value: &mut serde_json::Value,
        rules: &Rules,
        skip_keys: &[&str],
    ) -> Counts {
        let mut counts = Counts::default();
        json::walk(self, value, rules, skip_keys, &mut counts);
        counts
    }
}

/// Sorts candidates and drops overlaps: of two overlapping candidates the longer wins, and
/// at equal length the more specific kind.
fn resolve(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_unstable_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.kind.specificity()));
    let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        match kept.last_mut() {
            Some(last) if f.start < last.end => {
                let better = f.len() > last.len()
                    || (f.len() == last.len() && f.kind.specificity() < last.kind.specificity());
                if better {
                    *last = f;
                }
            }
            _ => kept.push(f),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: Kind, start: usize, end: usize) -> Finding {
        Finding { kind, start, end }
    }

    #[test]
    fn overlap_keeps_the_longer_then_the_more_specific() {
        let got = resolve(vec![
            f(Kind::Phone, 10, 20),
            f(Kind::Email, 5, 30),
            f(Kind::IpAddress, 40, 50),
            f(Kind::CreditCard, 40, 50),
            f(Kind::Phone, 60, 65),
        ]);
        assert_eq!(
            got,
            vec![
                f(Kind::Email, 5, 30),
                f(Kind::CreditCard, 40, 50),
                f(Kind::Phone, 60, 65)
            ]
        );
    }

    #[test]
    fn a_later_longer_candidate_replaces_an_earlier_overlapping_one() {
        let got = resolve(vec![f(Kind::IpAddress, 7, 16), f(Kind::IpAddress, 0, 8)]);
        assert_eq!(got, vec![f(Kind::IpAddress, 7, 16)]);
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
            assert_eq!(kind.placeholder(), format!("[REDACTED:{kind}]"));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert!(matches!(
            "ssn".parse::<Kind>(),
            Err(PiiError::UnknownKind { .. })
        ));
    }

    #[test]
    fn rules_default_redacts_all_but_ip() {
        let rules = Rules::default();
        for kind in Kind::ALL {
            let want = if kind == Kind::IpAddress {
                Action::Allow
            } else {
                Action::Redact
            };
            assert_eq!(rules.action(kind), want, "{kind}");
        }
    }

    #[test]
    fn counts_merge_adds_and_unions() {
        let mut a = Counts::default();
        bump(&mut a.found, Kind::Email, 2);
        let mut b = Counts::default();
        bump(&mut b.found, Kind::Email, 3);
        bump(&mut b.found, Kind::Phone, u32::MAX);
        bump(&mut b.redacted, Kind::Phone, 1);
        b.blocked.insert(Kind::CreditCard);
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.found[&Kind::Email], 8);
        assert_eq!(a.found[&Kind::Phone], u32::MAX, "saturates, never wraps");
        assert_eq!(a.redacted[&Kind::Phone], 2);
        assert!(a.is_blocked() && !a.is_empty());
        assert!(Counts::default().is_empty());
    }
}
