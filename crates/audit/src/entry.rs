//! What one log entry is: canonical JSON with a version, a sequence number, a timestamp, an
//! event type, the run it belongs to, the hash of the entry before it, and the event's
//! fields, scrubbed of secrets and personal data (their types and counts are kept instead).
//!
//! ```text
//! {"fields":{...},"prev":"<hex leaf hash of entry seq-1>","redacted":{"email":1},
//!  "run":"<run id>","seq":1042,"time":"2026-11-25T09:18:16.123Z","type":"run.end","v":1}
//! ```
//! (one line; `redacted` and `run` only when there is something to say.)

use crate::canonical;
use crate::merkle::Hash;
use crate::note::{hex, unhex};
use crate::scrub;
use serde_json::{Map, Value};

pub const ENTRY_VERSION: u64 = 1;
/// The type of entry 0, which names the log (its checkpoint origin).
pub const TYPE_LOG_INIT: &str = "log.init";
/// A crash trace the log repaired before an append (recorded so auditors see it).
pub const TYPE_LOG_REPAIR: &str = "log.repair";

/// An event to append: the caller's part of an entry.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub run: Option<String>,
    pub time_unix_ms: u64,
    pub fields: Map<String, Value>,
    /// Redactions the caller already made (e.g. a command line's `--token X`), counted
    /// with the ones made when the entry is encoded.
    pub redacted: scrub::Counts,
}

impl Event {
    /// An event happening now. `fields` must be a JSON object (anything else is wrapped
    /// as `{"value": ...}`).
    pub fn new(kind: &str, run: Option<&str>, fields: Value) -> Event {
        let fields = match fields {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Event {
            kind: kind.to_string(),
            run: run.map(str::to_string),
            time_unix_ms: now_unix_ms(),
            fields,
            redacted: scrub::Counts::new(),
        }
    }
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The canonical bytes of entry `seq` (without the newline that ends it in a file).
pub fn encode(seq: u64, prev: &Hash, ev: &Event) -> Vec<u8> {
    let mut counts = ev.redacted.clone();
    let fields = scrub_map(&ev.fields, &mut counts);
    let mut m = Map::new();
    m.insert("v".into(), ENTRY_VERSION.into());
    m.insert("seq".into(), seq.into());
    m.insert("time".into(), rfc3339_ms(ev.time_unix_ms).into());
    m.insert("type".into(), scrub::scrub(&ev.kind, &mut counts).into());
    if let Some(run) = &ev.run {
        m.insert("run".into(), scrub::scrub(run, &mut counts).into());
    }
    m.insert("prev".into(), hex(prev).into());
    m.insert("fields".into(), Value::Object(fields));
    if !counts.is_empty() {
        let r: Map<String, Value> = counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        m.insert("redacted".into(), Value::Object(r));
    }
    canonical::to_vec(&Value::Object(m))
}

/// Longest string kept in an entry; longer ones are cut and marked (an entry is evidence
/// about an event, not a place for a sandbox to park megabytes).
pub const MAX_STRING: usize = 64 * 1024;

fn cap(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_STRING {
        return s.into();
    }
    let mut cut = MAX_STRING;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated {} bytes]", &s[..cut], s.len() - cut).into()
}

fn scrub_value(v: &Value, counts: &mut scrub::Counts) -> Value {
    match v {
        Value::String(s) => Value::String(scrub::scrub(&cap(s), counts)),
        Value::Array(a) => Value::Array(a.iter().map(|x| scrub_value(x, counts)).collect()),
        Value::Object(m) => Value::Object(scrub_map(m, counts)),
        other => other.clone(),
    }
}

fn scrub_map(m: &Map<String, Value>, counts: &mut scrub::Counts) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (scrub::scrub(&cap(k), counts), scrub_value(v, counts)))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not in canonical form ({0}): edited by hand?")]
    NotCanonical(String),
    #[error("field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("unsupported entry version {0}")]
    Version(u64),
}

/// The parts of a stored entry that the log's structure depends on.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub seq: u64,
    pub prev: Hash,
    pub kind: String,
    pub run: Option<String>,
    pub time: String,
}

fn json_str(raw: &[u8]) -> Option<String> {
    if raw.len() < 2 || raw[0] != b'"' {
        return None;
    }
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(&raw[1..raw.len() - 1])
            .ok()
            .map(str::to_string);
    }
    serde_json::from_slice(raw).ok()
}

/// Parses stored entry bytes, checking that they are exactly the canonical encoding (in
/// one pass, without building the JSON tree: `verify` does this for every entry).
pub fn parse(bytes: &[u8]) -> Result<Parsed, EntryError> {
    let (mut v, mut seq, mut prev, mut kind, mut time, mut run, mut fields) =
        (None, None, None, None, None, None, false);
    let mut bad_run = false;
    crate::canonical::check_object(bytes, |key, raw| match key {
        "v" => {
            v = std::str::from_utf8(raw)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        }
        "seq" => {
            seq = std::str::from_utf8(raw)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        }
        "prev" => {
            prev = json_str(raw)
                .and_then(|h| unhex(&h))
                .and_then(|h| <Hash>::try_from(h).ok())
        }
        "type" => kind = json_str(raw).filter(|k| !k.is_empty()),
        "time" => time = json_str(raw),
        "run" => {
            run = json_str(raw);
            bad_run = run.is_none();
        }
        "fields" => fields = raw.first() == Some(&b'{'),
        _ => {}
    })
    .map_err(|e| {
        // Say "not JSON" when it is not JSON at all, "not canonical" when it is JSON.
        match serde_json::from_slice::<Value>(bytes) {
            Err(j) => EntryError::Json(j.to_string()),
            Ok(_) => EntryError::NotCanonical(format!("at byte {}: {}", e.at, e.what)),
        }
    })?;
    let v = v.ok_or(EntryError::Field("v"))?;
    if v != ENTRY_VERSION {
        return Err(EntryError::Version(v));
    }
    if bad_run {
        return Err(EntryError::Field("run"));
    }
    if !fields {
        return Err(EntryError::Field("fields"));
    }
    Ok(Parsed {
        seq: seq.ok_or(EntryError::Field("seq"))?,
        prev: prev.ok_or(EntryError::Field("prev"))?,
        kind: kind.ok_or(EntryError::Field("type"))?,
        run,
        time: time.ok_or(EntryError::Field("time"))?,
    })
}

/// The log's name, from entry 0 (`log.init`).
pub fn origin(first: &[u8]) -> Option<String> {
    let p = parse(first).ok()?;
    if p.kind != TYPE_LOG_INIT {
        return None;
    }
    let v: Value = serde_json::from_slice(first).ok()?;
    v["fields"]["origin"].as_str().map(str::to_string)
}

/// `2026-11-25T09:18:16.123Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_598_296_123), "2026-11-25T09:18:16.123Z");
    }

    #[test]
    fn encode_is_canonical_scrubbed_and_parses_back() {
        let mut ev = Event::new(
            "run.start",
            Some("r1"),
            json!({"command": ["curl", "-H", "Authorization: Bearer sk-abcdefghijklmnopqrstuv"], "user": "bob@example.com"}),
        );
        ev.time_unix_ms = 1_795_598_296_123;
        let bytes = encode(7, &[0xab; 32], &ev);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text.contains("bob@example.com") && !text.contains("sk-abc"),
            "{text}"
        );
        assert!(
            text.starts_with(
                r#"{"fields":{"command":["curl","-H","Authorization: Bearer [REDACTED:"#
            ),
            "{text}"
        );
        assert!(text.contains(r#""redacted":{"#), "{text}");
        let p = parse(&bytes).unwrap();
        assert_eq!(
            (p.seq, p.prev, p.kind.as_str(), p.run.as_deref()),
            (7, [0xab; 32], "run.start", Some("r1"))
        );
        assert_eq!(p.time, "2026-11-25T09:18:16.123Z");
        // One space more: same JSON, not the same entry.
        let spaced = text.replacen(",", ", ", 1);
        let err = parse(spaced.as_bytes()).unwrap_err();
        assert!(matches!(err, EntryError::NotCanonical(_)), "{err}");
        assert!(err.to_string().contains("no whitespace"), "{err}");
        assert!(matches!(parse(b"{\"seq\":1"), Err(EntryError::Json(_))));
    }
}
