//! `[[fake:...]]` directives: parsing them out of request text and stripping them from the
//! echoed reply. Pure; knows nothing about HTTP or providers.

use std::fmt;

/// What the directives in one request ask for. The default is an ordinary answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `[[fake:error=STATUS]]`: answer this HTTP status in the provider's error shape.
    pub error: Option<u16>,
    /// `[[fake:chunks=N]]`: the reply has exactly N words (streamed one per chunk).
    pub chunks: Option<u64>,
    /// `[[fake:delay_ms=D]]`: sleep D ms between stream chunks, or once before a
    /// non-streaming answer.
    pub delay_ms: u64,
    /// `[[fake:cut]]`: send a few chunks, then half of the next one, then drop the connection.
    pub cut: bool,
    /// `[[fake:stream_error]]`: send a few chunks, then the provider's in-band error event.
    pub stream_error: bool,
    /// `[[fake:usage=P,C]]`: report exactly P prompt and C completion tokens.
    pub usage: Option<(u64, u64)>,
    /// `[[fake:cached=K]]`: K of the prompt tokens were served from the prompt cache.
    pub cached: u64,
}

/// A directive that could not be understood; answered as a 400 so a typo in a test shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError {
    /// The directive text between `[[fake:` and `]]`.
    pub directive: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad fake directive [[fake:{}]]: {}. Known: error=STATUS, chunks=N, delay_ms=D, cut, \
             stream_error, usage=P,C, cached=K",
            self.directive, self.reason
        )
    }
}

impl std::error::Error for DirectiveError {}

/// Largest `chunks=N` accepted (the reply is built in memory).
pub const MAX_CHUNKS: u64 = 1_000_000;

const OPEN: &str = "[[fake:";
const CLOSE: &str = "]]";

/// Yields the inner text of every `[[fake:...]]` in `text`, in order.
fn inner_parts(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(OPEN)? + OPEN.len();
        let len = rest[start..].find(CLOSE)?;
        let inner = &rest[start..start + len];
        rest = &rest[start + len + CLOSE.len()..];
        Some(inner)
    })
}

/// Parses every directive in `text`; a later directive of the same kind wins.
pub fn parse(text: &str) -> Result<Directives, DirectiveError> {
    let mut d = Directives::default();
    for inner in inner_parts(text) {
        let bad = |reason| DirectiveError {
            directive: inner.to_string(),
            reason,
        };
        let (key, value) = match inner.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (inner.trim(), None),
        };
        let number = |v: Option<&str>| -> Result<u64, DirectiveError> {
            v.ok_or_else(|| bad("needs a value"))?
                .parse::<u64>()
                .map_err(|_| bad("the value must be a non-negative integer"))
        };
        match key {
            "error" => {
                let status = number(value)?;
                if !(400..=599).contains(&status) {
                    return Err(bad("the status must be 400..=599"));
                }
                d.error = Some(u16::try_from(status).map_err(|_| bad("status out of range"))?);
            }
            "chunks" => {
                let n = number(value)?;
                if n > MAX_CHUNKS {
                    return Err(bad("at most 1000000 chunks"));
                }
                d.chunks = Some(n);
            }
            "delay_ms" => d.delay_ms = number(value)?,
            "cached" => d.cached = number(value)?,
            "usage" => {
                let (p, c) = value
                    .and_then(|v| v.split_once(','))
                    .ok_or_else(|| bad("the value must be PROMPT,COMPLETION"))?;
                d.usage = Some((number(Some(p.trim()))?, number(Some(c.trim()))?));
            }
            "cut" | "stream_error" if value.is_some() => return Err(bad("takes no value")),
            "cut" => d.cut = true,
            "stream_error" => d.stream_error = true,
            _ => return Err(bad("unknown directive")),
        }
    }
    Ok(d)
}

/// `text` without its directives (whitespace around them is left for the caller to split on).
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        match rest[start..].find(CLOSE) {
            Some(len) => {
                out.push_str(&rest[..start]);
                out.push(' ');
                rest = &rest[start + len + CLOSE.len()..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_directive_is_the_default() {
        assert_eq!(parse("hello [[not one]]").unwrap(), Directives::default());
    }

    #[test]
    fn every_directive_parses() {
        let d = parse(
            "a [[fake:error=429]] [[fake:chunks=7]][[fake:delay_ms=15]] [[fake:cut]] \
             [[fake:stream_error]] [[fake:usage=10, 20]] [[fake:cached=4]] b",
        )
        .unwrap();
        assert_eq!(
            d,
            Directives {
                error: Some(429),
                chunks: Some(7),
                delay_ms: 15,
                cut: true,
                stream_error: true,
                usage: Some((10, 20)),
                cached: 4,
            }
        );
    }

    #[test]
    fn later_directive_wins() {
        assert_eq!(
            parse("[[fake:chunks=1]] [[fake:chunks=2]]").unwrap().chunks,
            Some(2)
        );
    }

    #[test]
    fn typos_are_errors() {
        assert_eq!(
            parse("[[fake:chunk=3]]").unwrap_err().reason,
            "unknown directive"
        );
        assert!(parse("[[fake:error=200]]").is_err());
        assert!(parse("[[fake:error=abc]]").is_err());
        assert!(parse("[[fake:usage=3]]").is_err());
        assert!(parse("[[fake:cut=1]]").is_err());
        assert!(parse("[[fake:delay_ms]]").is_err());
        assert!(parse("[[fake:chunks=1000001]]").is_err());
    }

    #[test]
    fn unterminated_directive_is_plain_text() {
        assert_eq!(parse("[[fake:error=500").unwrap(), Directives::default());
        assert_eq!(strip("a [[fake:cut"), "a [[fake:cut");
    }

    #[test]
    fn strip_removes_directives_only() {
        let s = strip("say [[fake:chunks=3]]hi[[fake:cut]] there");
        assert_eq!(
            s.split_whitespace().collect::<Vec<_>>(),
            ["say", "hi", "there"]
        );
    }
}
