//! LLM list prices: the table shipped in the binary (`prices.yaml`), a user file that
//! overrides or extends it, model-id lookup, and the cost of one response's token usage.
//!
//! Owns what a token costs. It must not decide whether a request may run (that is the
//! budget ledger's job) nor parse provider wire formats (the gateway turns a response's
//! `usage` into a [`Usage`] with [`Usage::openai`] or [`Usage::anthropic`]).
//!
//! Prices are per one million tokens, as the providers publish them, and are kept exact
//! ([`Usd`] picodollars). A cost is rounded up to the next picodollar once, after summing
//! every kind of token, so splitting usage differently never changes the bill by more than
//! one picodollar.

#![forbid(unsafe_code)]

use crate::money::{ceil_div, Usd};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The table compiled into the binary.
pub const SHIPPED_YAML: &str = include_str!("../prices.yaml");

/// The only price-file format this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// A price file is a page of numbers; anything bigger is a mistake (or an attack on the
/// YAML parser), refused before parsing.
pub const MAX_PRICE_FILE_BYTES: usize = 1024 * 1024;

/// Why a price table could not be loaded, or a model could not be priced.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("cannot read price file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The text parsed badly or failed validation at a known place.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("no price for model `{model}`. Hint: add it to a price file (same format as the shipped prices.yaml) or configure a fallback price")]
    UnknownModel { model: String },
}

/// What one model costs, per one million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens not served from a cache.
    pub input: Usd,
    /// Completion tokens, including reasoning tokens (OpenAI counts those in
    /// `completion_tokens`; Anthropic's thinking tokens are in `output_tokens`).
    pub output: Usd,
    /// OpenAI prompt tokens served from the prompt cache. Absent: billed at `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Usd>,
    /// Anthropic prompt-cache writes (5-minute TTL price). Absent: billed at `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Usd>,
    /// Anthropic prompt-cache reads. Absent: billed at `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<Usd>,
    /// Largest completion the model can return: what a budget reserves for a request that
    /// sets no `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// Token counts of one response, in a provider-neutral shape.
///
/// The two providers count cache tokens differently, and the fields keep both meanings
/// apart so that [`Price::cost`] needs no provider flag:
///
/// * `cached_input_tokens` are **part of** `input_tokens`. OpenAI reports
///   `usage.prompt_tokens_details.cached_tokens` (Chat Completions) or
///   `usage.input_tokens_details.cached_tokens` (Responses) as the subset of
///   `prompt_tokens`/`input_tokens` that hit the prompt cache
///   (<https://platform.openai.com/docs/guides/prompt-caching>).
/// * `cache_write_tokens` and `cache_read_tokens` are **in addition to** `input_tokens`.
///   Anthropic's `usage.input_tokens` counts only the tokens after the last cache
///   breakpoint; `cache_creation_input_tokens` and `cache_read_input_tokens` are separate
///   (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#tracking-cache-performance>).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
}

impl Usage {
    /// From OpenAI's `prompt_tokens`, `completion_tokens` and `cached_tokens`.
    pub fn openai(prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> Usage {
        Usage {
            input_tokens: prompt_tokens,
            output_tokens: completion_tokens,
            cached_input_tokens: cached_tokens,
            ..Usage::default()
        }
    }

    /// From Anthropic's `input_tokens`, `output_tokens`, `cache_creation_input_tokens` and
    /// `cache_read_input_tokens`.
    pub fn anthropic(
        input_tokens: u64,
        output_tokens: u64,
        cache_creation_input_tokens: u64,
        cache_read_input_tokens: u64,
    ) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            cache_write_tokens: cache_creation_input_tokens,
            cache_read_tokens: cache_read_input_tokens,
            ..Usage::default()
        }
    }
}

impl Price {
    /// What `usage` costs, rounded up to the picodollar; saturates at [`Usd::MAX`] (about
    /// $9.2 million) rather than wrapping.
    ///
    /// Cached OpenAI tokens are billed at `cached_input` and only the rest of
    /// `input_tokens` at `input`. If a response claims more cached tokens than prompt
    /// tokens, every claimed cached token is still billed (never a negative remainder).
    pub fn cost(&self, usage: &Usage) -> Usd {
        let cached = usage.cached_input_tokens;
        let uncached = usage.input_tokens.saturating_sub(cached);
        let terms = [
            (uncached, self.input),
            (cached, self.cached_input.unwrap_or(self.input)),
            (usage.output_tokens, self.output),
            (
                usage.cache_write_tokens,
                self.cache_write.unwrap_or(self.input),
            ),
            (
                usage.cache_read_tokens,
                self.cache_read.unwrap_or(self.input),
            ),
        ];
        per_million_sum(&terms)
    }

    /// The most a request can cost: `input_tokens` at the dearer of the input and
    /// cache-write prices (an Anthropic request may turn its whole prompt into a cache
    /// write), plus `max_output_tokens` (the request's own, else this model's) at the output
    /// price. `None` when neither maximum is known: the caller must then choose a cap.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: Option<u64>) -> Option<Usd> {
        let out = max_output_tokens.or(self.max_output_tokens)?;
        let input_price = self.input.max(self.cache_write.unwrap_or(self.input));
        Some(per_million_sum(&[
            (input_tokens, input_price),
            (out, self.output),
        ]))
    }
}

/// Σ tokens × price-per-million, exact in i128, divided once and rounded up.
fn per_million_sum(terms: &[(u64, Usd)]) -> Usd {
    let mut total: i128 = 0;
    for &(tokens, price) in terms {
        // Negative prices cannot be parsed; clamp anyway so a hand-built Price cannot
        // produce a refund.
        let p = i128::from(price.picos().max(0));
        let Some(t) = i128::from(tokens)
            .checked_mul(p)
            .and_then(|term| total.checked_add(term))
        else {
            return Usd::MAX;
        };
        total = t;
    }
    i64::try_from(ceil_div(total, 1_000_000)).map_or(Usd::MAX, Usd::from_picos)
}

/// A set of model prices, plus an optional price for models it does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    updated: Option<String>,
    models: BTreeMap<String, Price>,
    fallback: Option<Price>,
}

/// The file format, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: u32,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    models: Models,
    #[serde(default)]
    fallback: Option<Price>,
}

/// The `models:` mapping, refusing a model listed twice (serde's map would silently keep
/// the last one, and a price table is exactly where a copy-paste duplicate hides).
#[derive(Default)]
struct Models(BTreeMap<String, Price>);

impl<'de> Deserialize<'de> for Models {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Models, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Models;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from model id to its price")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Models, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.contains_key(&name) {
                        return Err(de::Error::custom(format!("duplicate model `{name}`")));
                    }
                    let price = map.next_value::<Price>()?;
                    out.insert(name, price);
                }
                Ok(Models(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl PriceTable {
    /// The table shipped in the binary, parsed once.
    pub fn shipped() -> &'static PriceTable {
        static SHIPPED: OnceLock<PriceTable> = OnceLock::new();
        SHIPPED.get_or_init(|| {
            // A unit test parses the same text, so this cannot fail in a tested build.
            PriceTable::parse(SHIPPED_YAML, "<shipped prices.yaml>")
                .unwrap_or_else(|e| panic!("the shipped price table is invalid: {e}"))
        })
    }

    /// An empty table (every lookup fails), for callers that want only their own prices.
    pub fn empty() -> PriceTable {
        PriceTable {
            updated: None,
            models: BTreeMap::new(),
            fallback: None,
        }
    }

    /// Parses one price file on its own. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, PriceError> {
        let at = |line: usize, column: usize, message: String| PriceError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            message,
        };
        if text.len() > MAX_PRICE_FILE_BYTES {
            return Err(at(
                1,
                1,
                format!(
                    "price file is {} bytes; the limit is {MAX_PRICE_FILE_BYTES}",
                    text.len()
                ),
            ));
        }
        let raw: RawTable = serde_norway::from_str(text).map_err(|e| {
            let (line, column, msg) =
                ironcage_policy::yaml_error(text, &e, |l, c, m| refine(text, l, c, m));
            at(line, column, msg)
        })?;
        if raw.version != FORMAT_VERSION {
            let (line, column) = locate_key(text, "version", 0);
            return Err(at(
                line,
                column,
                format!(
                    "version: this build reads price files of version {FORMAT_VERSION}, not {}",
                    raw.version
                ),
            ));
        }
        for (name, price) in raw.models.0.iter() {
            let bad_name = name.is_empty()
                || name.len() > 256
                || name.chars().any(|c| c.is_whitespace() || c.is_control());
            if bad_name {
                let (line, column) = locate_key(text, "models", 0);
                return Err(at(
                    line,
                    column,
                    format!(
                        "models: `{}` is not a model id (no spaces, at most 256 bytes)",
                        name.escape_debug()
                    ),
                ));
            }
            if price.max_output_tokens == Some(0) {
                let (l, _) = locate_key(text, name, 0);
                let (line, column) = locate_key(text, "max_output_tokens", l.saturating_sub(1));
                return Err(at(
                    line,
                    column,
                    format!("models.{name}.max_output_tokens: must be at least 1"),
                ));
            }
        }
        if raw.fallback.as_ref().and_then(|p| p.max_output_tokens) == Some(0) {
            let (line, column) = locate_key(text, "fallback", 0);
            return Err(at(
                line,
                column,
                "fallback.max_output_tokens: must be at least 1".to_string(),
            ));
        }
        Ok(PriceTable {
            updated: raw.updated,
            models: raw.models.0,
            fallback: raw.fallback,
        })
    }

    /// The shipped table with the user's file laid over it: a model the file lists
    /// replaces the shipped entry whole (fields are not merged, so a file never inherits a
    /// price it did not state), new models are added, and the file's `fallback` and
    /// `updated`, if present, win.
    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let text = read_bounded(path).map_err(|source| PriceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let user = PriceTable::parse(&text, &path.display().to_string())?;
        let mut table = PriceTable::shipped().clone();
        table.overlay(user);
        Ok(table)
    }

    /// Lays `other` over `self` (see [`PriceTable::load`]).
    pub fn overlay(&mut self, other: PriceTable) {
        self.models.extend(other.models);
        if other.fallback.is_some() {
            self.fallback = other.fallback;
        }
        if other.updated.is_some() {
            self.updated = other.updated;
        }
    }

    /// The price of `model`: an exact id first, then the id with a version suffix removed
    /// (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`,
    /// `claude-3-5-sonnet-latest` → `claude-3-5-sonnet`). Only a whole date
    /// (`YYYY-MM-DD`, `YYYYMMDD`) or `latest` counts as a version suffix, so
    /// `gpt-4o-mini-2024-07-18` finds `gpt-4o-mini` or nothing, never the dearer-named but
    /// different `gpt-4o`. When several listed ids would match, the longest wins.
    /// The fallback price is not consulted: see [`PriceTable::resolve`].
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        // Splitting at the rightmost dash first tries the longest prefix first.
        model
            .rmatch_indices('-')
            .filter(|&(i, _)| is_version_suffix(&model[i + 1..]))
            .find_map(|(i, _)| self.models.get(&model[..i]))
    }

    /// [`PriceTable::lookup`], else the fallback price, else an error naming the model.
    pub fn resolve(&self, model: &str) -> Result<&Price, PriceError> {
        self.lookup(model)
            .or(self.fallback.as_ref())
            .ok_or_else(|| PriceError::UnknownModel {
                model: model.chars().take(256).collect(),
            })
    }

    /// The price used for unlisted models; `None` refuses them.
    pub fn set_fallback(&mut self, fallback: Option<Price>) {
        self.fallback = fallback;
    }

    pub fn fallback(&self) -> Option<&Price> {
        self.fallback.as_ref()
    }

    /// Adds or replaces one model's price.
    pub fn insert(&mut self, model: impl Into<String>, price: Price) {
        self.models.insert(model.into(), price);
    }

    /// The `updated:` date of the newest layer that had one.
    pub fn updated(&self) -> Option<&str> {
        self.updated.as_deref()
    }

    /// Listed models in id order.
    pub fn models(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.models.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// `YYYY-MM-DD`, `YYYYMMDD` or `latest`.
fn is_version_suffix(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        8 => digits(b),
        10 => {
            digits(&b[..4]) && b[4] == b'-' && digits(&b[5..7]) && b[7] == b'-' && digits(&b[8..])
        }
        _ => s == "latest",
    }
}

/// Reads a regular file of at most MAX_PRICE_FILE_BYTES (+1, so "too big" is reported by
/// `parse`), never reading a device or a huge sparse file to the end.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.take(MAX_PRICE_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// serde_norway's location for a bad scalar can be the start of the enclosing mapping or
/// the previous value, and its path sometimes stops at the mapping. When the message quotes
/// the value (`like this`), point at the value itself and make sure its key ends the path,
/// so "models.b: `2x` …" becomes "models.b.output: `2x` …" at the `output:` line.
fn refine(text: &str, line: usize, column: usize, msg: String) -> (usize, usize, String) {
    if msg.contains("unknown field") || msg.contains("missing field") {
        return (line, column, msg);
    }
    if let Some(dup) = msg.strip_prefix("models: duplicate model `") {
        // Point at the second occurrence of the id.
        let name = dup.split('`').next().unwrap_or_default();
        let (first, _) = locate_key(text, name, 0);
        let (second, col) = locate_key(text, name, first);
        return (second, col, msg);
    }
    let Some(value) = msg.split('`').nth(1).filter(|v| !v.is_empty()) else {
        return (line, column, msg);
    };
    for (i, l) in text
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .take(50)
    {
        let Some((key, rest)) = l.split_once(':') else {
            continue;
        };
        let Some(pos) = rest.find(value) else {
            continue;
        };
        let key = key.trim().trim_start_matches("- ");
        let col = key_indent(l) + key.len() + 1 + pos + 1;
        let msg = match msg.split_once(": ") {
            Some((path, detail))
                if !path.contains(' ')
                    && !key.contains(' ')
                    && !path.ends_with(&format!(".{key}")) =>
            {
                format!("{path}.{key}: {detail}")
            }
            _ => msg,
        };
        return (i + 1, col, msg);
    }
    (line, column, msg)
}

fn key_indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Line and column (1-based) of the first `key:` (plain or quoted) at or after line index
/// `from` (0-based); line 1 if absent.
fn locate_key(text: &str, key: &str, from: usize) -> (usize, usize) {
    for (i, l) in text.lines().enumerate().skip(from) {
        let t = l.trim_start();
        let hit = [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| t.starts_with(k.as_str()));
        if hit {
            return (i + 1, key_indent(l) + 1);
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_suffixes() {
        for s in ["2024-08-06", "20250929", "latest"] {
            assert!(is_version_suffix(s), "{s}");
        }
        for s in [
            "mini",
            "mini-2024-07-18",
            "2024-8-06",
            "2024_08_06",
            "",
            "1",
            "preview",
        ] {
            assert!(!is_version_suffix(s), "{s}");
        }
    }

    #[test]
    fn locate_key_finds_quoted_and_plain_keys_after_a_line() {
        let t = "a:\n  b: 1\n  \"c\": 2\nb: 3\n";
        assert_eq!(locate_key(t, "b", 0), (2, 3));
        assert_eq!(locate_key(t, "b", 2), (4, 1));
        assert_eq!(locate_key(t, "c", 0), (3, 3));
        assert_eq!(locate_key(t, "zzz", 0), (1, 1));
    }
}
