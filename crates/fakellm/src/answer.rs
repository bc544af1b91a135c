//! An answer as plain data: status, headers and either a whole body or a list of stream steps.
//! Provider modules build these; the server module is the only one that puts them on a socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;

use crate::directives::Directives;

/// One step of a streamed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes as they are.
    Send(Bytes),
    /// Send these bytes (part of a message), then drop the connection without finishing the
    /// body.
    Cut(Bytes),
}

/// The body of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Full(Bytes),
    /// Sent step by step, sleeping `gap` before every step but the first.
    Stream {
        steps: Vec<Step>,
        gap: Duration,
    },
}

/// Everything the server needs to answer one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Sleep this long before the status line goes out.
    pub delay: Duration,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: Body::Full(Bytes::from(value.to_string())),
            delay: Duration::ZERO,
        }
    }

    /// A `text/event-stream` answer.
    pub fn sse(steps: Vec<Step>, gap: Duration) -> Answer {
        Answer {
            status: 200,
            headers: vec![
                (
                    "content-type",
                    "text/event-stream; charset=utf-8".to_string(),
                ),
                ("cache-control", "no-cache".to_string()),
            ],
            body: Body::Stream { steps, gap },
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the delay before the answer starts.
    pub fn with_delay(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Keeps the status and headers of a full JSON answer but sends only the first half of the
    /// body (with the whole body's `content-length`) and then drops the connection.
    pub fn cut_short(mut self) -> Answer {
        if let Body::Full(bytes) = &self.body {
            let bytes = bytes.clone();
            self.headers
                .push(("content-length", bytes.len().to_string()));
            self.body = Body::Stream {
                steps: vec![Step::Cut(bytes.slice(..bytes.len() / 2))],
                gap: Duration::ZERO,
            };
        }
        self
    }

    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `data: {json}\n\n` (OpenAI chat completions style, no event name).
pub fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// `event: NAME\ndata: {json}\n\n`.
pub fn sse_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// Turns the events of a complete stream into steps, applying `cut` and `stream_error`: when
/// either is asked for, the events from `fault_at` on are replaced by `error_event` (for
/// `stream_error`) and/or the first half of event `fault_at` followed by a dropped connection
/// (for `cut`).
pub fn splice_faults(
    events: Vec<Bytes>,
    fault_at: usize,
    directives: &Directives,
    error_event: Bytes,
) -> Vec<Step> {
    if !directives.cut && !directives.stream_error {
        return events.into_iter().map(Step::Send).collect();
    }
    let fault_at = fault_at.min(events.len().saturating_sub(1));
    let next = events[fault_at].clone();
    let mut steps: Vec<Step> = events.into_iter().take(fault_at).map(Step::Send).collect();
    if directives.stream_error {
        steps.push(Step::Send(error_event));
    }
    if directives.cut {
        steps.push(Step::Cut(next.slice(..next.len() / 2)));
    }
    steps
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh identifier: `prefix` then 24 hex digits, unique within this process.
pub fn new_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let started = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{prefix}{started:08x}fa4e{n:012x}")
}

static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Bytes> {
        ["a", "b", "c", "d"]
            .iter()
            .map(|s| Bytes::from(s.repeat(4)))
            .collect()
    }

    #[test]
    fn no_fault_sends_everything() {
        let steps = splice_faults(events(), 1, &Directives::default(), Bytes::new());
        assert_eq!(steps.len(), 4);
    }

    #[test]
    fn cut_sends_half_of_the_next_event() {
        let d = Directives {
            cut: true,
            ..Directives::default()
        };
        let steps = splice_faults(events(), 2, &d, Bytes::new());
        assert_eq!(
            steps,
            [
                Step::Send(Bytes::from("aaaa")),
                Step::Send(Bytes::from("bbbb")),
                Step::Cut(Bytes::from("cc"))
            ]
        );
    }

    #[test]
    fn stream_error_replaces_the_rest() {
        let d = Directives {
            stream_error: true,
            ..Directives::default()
        };
        let steps = splice_faults(events(), 1, &d, Bytes::from("E"));
        assert_eq!(
            steps,
            [
                Step::Send(Bytes::from("aaaa")),
                Step::Send(Bytes::from("E"))
            ]
        );
    }

    #[test]
    fn cut_short_keeps_the_full_length() {
        let a = Answer::json(200, &serde_json::json!({"k": "0123456789"})).cut_short();
        let full = r#"{"k":"0123456789"}"#.len();
        assert_eq!(a.header("content-length"), Some(full.to_string().as_str()));
        assert!(
            matches!(&a.body, Body::Stream { steps, .. } if matches!(&steps[..], [Step::Cut(b)] if b.len() == full / 2))
        );
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(new_id("x_"), new_id("x_"));
    }
}
