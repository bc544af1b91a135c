//! The request log tests read through `GET /_fake/requests`: the last [`CAPACITY`] provider
//! requests, each with its method, path, every header (lower-case names) and the body as
//! received.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// How many requests the log keeps.
pub const CAPACITY: usize = 1000;

/// A bounded, thread-safe log of requests.
#[derive(Default)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    entries: VecDeque<Value>,
}

impl RequestLog {
    /// Appends one request, dropping the oldest past [`CAPACITY`]. Repeated headers are joined
    /// with `", "`. A body that is not UTF-8 is kept lossily.
    pub fn record<'a>(
        &self,
        method: &str,
        path_and_query: &str,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
        body: &[u8],
    ) {
        let mut map = Map::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            let value = String::from_utf8_lossy(value).into_owned();
            match map.get_mut(&name) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    map.insert(name, Value::String(value));
                }
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.push_back(json!({
            "seq": seq,
            "method": method,
            "path": path_and_query,
            "headers": map,
            "body": String::from_utf8_lossy(body),
        }));
        while inner.entries.len() > CAPACITY {
            inner.entries.pop_front();
        }
    }

    /// The logged requests, oldest first, as a JSON array.
    pub fn snapshot(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Value::Array(inner.entries.iter().cloned().collect())
    }

    /// Empties the log; returns how many entries it held.
    pub fn clear(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = inner.entries.len();
        inner.entries.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_thousand() {
        let log = RequestLog::default();
        for i in 0..(CAPACITY + 5) {
            log.record("POST", &format!("/p{i}"), std::iter::empty(), b"{}");
        }
        let all = log.snapshot();
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0]["path"], "/p5");
        assert_eq!(all[0]["seq"], 5);
        assert_eq!(log.clear(), CAPACITY);
        assert_eq!(log.snapshot(), json!([]));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let log = RequestLog::default();
        let headers = [("x-a", &b"1"[..]), ("X-A", &b"2"[..]), ("x-b", &b"3"[..])];
        log.record("GET", "/", headers.into_iter(), b"");
        let e = &log.snapshot()[0];
        assert_eq!(e["headers"]["x-a"], "1, 2");
        assert_eq!(e["headers"]["x-b"], "3");
    }
}
