//! Reads token usage from provider responses (whole bodies and stream events) and keeps a
//! running estimate while a stream is in flight, so a stream can be stopped at its budget.

use crate::provider::{Endpoint, Provider};
use ironcage_guard::prices::Usage;
use serde_json::Value;

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        match v.get(p) {
            Some(x) => v = x,
            None => return 0,
        }
    }
    v.as_u64().unwrap_or(0)
}

/// Usage from a provider's `usage` object, by endpoint. OpenAI's cached tokens are part of
/// its prompt tokens; Anthropic's cache tokens are counted apart from `input_tokens`.
pub fn usage_of(provider: Provider, endpoint: &Endpoint, usage: &Value) -> Usage {
    match (provider, endpoint) {
        (Provider::OpenAi, Endpoint::Responses) => Usage::openai(
            n(usage, &["input_tokens"]),
            n(usage, &["output_tokens"]),
            n(usage, &["input_tokens_details", "cached_tokens"]),
        ),
        (Provider::OpenAi, _) => Usage::openai(
            n(usage, &["prompt_tokens"]),
            n(usage, &["completion_tokens"]),
            n(usage, &["prompt_tokens_details", "cached_tokens"]),
        ),
        (Provider::Anthropic, _) => Usage::anthropic(
            n(usage, &["input_tokens"]),
            n(usage, &["output_tokens"]),
            n(usage, &["cache_creation_input_tokens"]),
            n(usage, &["cache_read_input_tokens"]),
        ),
    }
}

/// Usage from a whole (non-streaming) response body.
pub fn usage_of_body(provider: Provider, endpoint: &Endpoint, body: &Value) -> Option<Usage> {
    let u = body.get("usage").filter(|u| u.is_object())?;
    Some(usage_of(provider, endpoint, u))
}

/// What a stream has told us so far.
#[derive(Debug, Default, Clone)]
pub struct StreamMeter {
    /// Usage as the provider reported it (final once the stream completed normally).
    pub reported: Option<Usage>,
    /// Output pieces seen (deltas): an estimate of output tokens until usage arrives
    /// (providers stream about one token per delta).
    pub deltas: u64,
    /// Anthropic's running output total from `message_delta`.
    pub output_running: u64,
    /// The provider's terminal event was seen (`[DONE]`, `message_stop`, `response.completed`).
    pub finished: bool,
}

/// One event seen by the meter. Returns true for OpenAI's usage-only chat chunk (which the
/// gateway drops when it asked for usage on the client's behalf).
pub fn observe(
    m: &mut StreamMeter,
    provider: Provider,
    endpoint: &Endpoint,
    name: Option<&str>,
    data: &str,
) -> bool {
    match (provider, endpoint) {
        (Provider::OpenAi, Endpoint::ChatCompletions) => {
            if data == "[DONE]" {
                m.finished = true;
                return false;
            }
            // Parse only chunks that can carry usage: most chunks are small deltas.
            if data.contains("\"usage\"") && !data.contains("\"usage\":null") {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                        m.reported = Some(usage_of(provider, endpoint, u));
                        let empty = v
                            .get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(|c| c.is_empty());
                        return empty;
                    }
                }
            }
            if data.contains("\"delta\"") {
                m.deltas += 1;
            }
            false
        }
        (Provider::OpenAi, _) => {
            match name {
                Some("response.output_text.delta")
                | Some("response.function_call_arguments.delta")
                | Some("response.reasoning_summary_text.delta")
                | Some("response.refusal.delta") => m.deltas += 1,
                Some("response.completed" | "response.incomplete" | "response.failed") => {
                    m.finished = true;
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        if let Some(u) = v.pointer("/response/usage").filter(|u| u.is_object()) {
                            m.reported = Some(usage_of(provider, endpoint, u));
                        }
                    }
                }
                _ => {}
            }
            false
        }
        (Provider::Anthropic, _) => {
            match name {
                Some("content_block_delta") => m.deltas += 1,
                Some("message_start") => {
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        if let Some(u) = v.pointer("/message/usage") {
                            m.reported = Some(usage_of(provider, endpoint, u));
                            m.output_running = n(u, &["output_tokens"]);
                        }
                    }
                }
                Some("message_delta") => {
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        if let Some(u) = v.get("usage") {
                            // The running output total; input/cache fields, when repeated
                            // here, override those of message_start.
                            let mut r = m.reported.unwrap_or_default();
                            r.output_tokens = n(u, &["output_tokens"]);
                            m.output_running = r.output_tokens;
                            if u.get("input_tokens").is_some() {
                                r.input_tokens = n(u, &["input_tokens"]);
                            }
                            if u.get("cache_creation_input_tokens").is_some() {
                                r.cache_write_tokens = n(u, &["cache_creation_input_tokens"]);
                            }
                            if u.get("cache_read_input_tokens").is_some() {
                                r.cache_read_tokens = n(u, &["cache_read_input_tokens"]);
                            }
                            m.reported = Some(r);
                        }
                    }
                }
                Some("message_stop") => m.finished = true,
                _ => {}
            }
            false
        }
    }
}

impl StreamMeter {
    /// Output tokens so far: the provider's count when it gave one, else the delta count.
    pub fn output_estimate(&self) -> u64 {
        self.deltas
            .max(self.output_running)
            .max(self.reported.map(|u| u.output_tokens).unwrap_or(0))
    }
}

/// Removes `"usage":null` from an OpenAI chat chunk (present only because the gateway
/// asked for usage on the client's behalf). Byte surgery on the compact JSON the API
/// sends, so everything else stays byte for byte; falls back to leaving the event alone.
pub fn strip_null_usage(event: &[u8]) -> Option<Vec<u8>> {
    const KEYS: [&[u8]; 4] = [
        b",\"usage\":null",
        b"\"usage\":null,",
        b", \"usage\": null",
        b"\"usage\": null, ",
    ];
    for k in KEYS {
        if let Some(i) = find(event, k) {
            let mut out = Vec::with_capacity(event.len());
            out.extend_from_slice(&event[..i]);
            out.extend_from_slice(&event[i + k.len()..]);
            return Some(out);
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chunks() {
        let mut m = StreamMeter::default();
        let p = Provider::OpenAi;
        let e = Endpoint::ChatCompletions;
        assert!(!observe(
            &mut m,
            p,
            &e,
            None,
            r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#
        ));
        assert!(observe(
            &mut m,
            p,
            &e,
            None,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":3}}}"#
        ));
        observe(&mut m, p, &e, None, "[DONE]");
        assert!(m.finished);
        let u = m.reported.unwrap();
        assert_eq!((u.output_tokens, u.cached_input_tokens), (2, 3));
        assert_eq!(m.deltas, 1);
    }

    #[test]
    fn anthropic_running_total() {
        let mut m = StreamMeter::default();
        let p = Provider::Anthropic;
        let e = Endpoint::Messages;
        observe(
            &mut m,
            p,
            &e,
            Some("message_start"),
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
        );
        observe(&mut m, p, &e, Some("content_block_delta"), "{}");
        observe(
            &mut m,
            p,
            &e,
            Some("message_delta"),
            r#"{"type":"message_delta","usage":{"output_tokens":12}}"#,
        );
        let u = m.reported.unwrap();
        assert_eq!((u.output_tokens, u.cache_read_tokens), (12, 4));
        assert_eq!(m.output_estimate(), 12);
    }

    #[test]
    fn strips_null_usage_only() {
        let e = br#"data: {"id":"x","choices":[],"usage":null}"#;
        assert_eq!(
            strip_null_usage(e).unwrap(),
            br#"data: {"id":"x","choices":[]}"#.to_vec()
        );
        assert!(strip_null_usage(br#"data: {"usage":{"a":1}}"#).is_none());
    }
}
