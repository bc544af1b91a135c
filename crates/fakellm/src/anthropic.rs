//! The Anthropic side of the fake: messages (whole and streamed), token counting and the
//! model list, in the shapes the official `anthropic` Python SDK parses (see
//! docs/plans/governance-wire-formats.md). Pure: request JSON in, [`Answer`] out.
//!
//! Usage: the exchange's prompt tokens are the *total* prompt, so `input_tokens` is that minus
//! the cached tokens, and `cache_read_input_tokens` is the cached tokens (Anthropic counts
//! cache reads apart from `input_tokens`; OpenAI counts them inside `prompt_tokens`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::answer::{new_id, splice_faults, sse_event, Answer};
use crate::exchange::{content_text, Exchange, Prompt};

/// Models listed by `GET /v1/models` when the request carries `anthropic-version`.
pub const MODELS: &[&str] = &["fake-claude", "fake-claude-haiku"];

/// The error `type` Anthropic uses for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error in Anthropic's shape, `{"type":"error","error":{"type","message"},"request_id"}`,
/// with the same id in the `request-id` header.
pub fn error(status: u16, message: &str) -> Answer {
    let request_id = new_id("req_");
    let body = json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
        "request_id": request_id,
    });
    let answer = Answer::json(status, &body).with_header("request-id", request_id);
    if status == 429 || status == 529 {
        answer.with_header("retry-after", "1")
    } else {
        answer
    }
}

fn prompt(body: &Value, need_max_tokens: bool) -> Result<Prompt, Answer> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| error(400, "messages: Field required"))?;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    if need_max_tokens && max_tokens.is_none() {
        return Err(error(400, "max_tokens: Field required"));
    }
    let mut p = Prompt {
        max_tokens,
        ..Prompt::default()
    };
    if let Some(system) = body.get("system") {
        p.messages.push(content_text(system));
    }
    for m in messages {
        let text = content_text(m.get("content").unwrap_or(&Value::Null));
        if m.get("role").and_then(Value::as_str) == Some("user") {
            p.last_user = text.clone();
        }
        p.messages.push(text);
    }
    Ok(p)
}

fn exchange_or_error(prompt: &Prompt) -> Result<Exchange, Answer> {
    let ex = Exchange::new(prompt).map_err(|e| error(400, &e.to_string()))?;
    if let Some(status) = ex.directives.error {
        return Err(error(
            status,
            &format!("fake error {status} requested by a [[fake:error]] directive"),
        )
        .with_delay(Duration::from_millis(ex.directives.delay_ms)));
    }
    Ok(ex)
}

fn usage(ex: &Exchange, output_tokens: u64) -> Value {
    json!({
        "input_tokens": ex.prompt_tokens.saturating_sub(ex.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": ex.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

/// `POST /v1/messages`.
pub fn messages(body: &Value) -> Answer {
    let ex = match prompt(body, true).and_then(|p| exchange_or_error(&p)) {
        Ok(ex) => ex,
        Err(a) => return a,
    };
    let request_id = new_id("req_");
    let id = new_id("msg_");
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-claude");
    let stop_reason = if ex.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    let delay = Duration::from_millis(ex.directives.delay_ms);
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let out = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": ex.text()}],
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage(&ex, ex.completion_tokens),
        });
        let answer = Answer::json(200, &out)
            .with_header("request-id", request_id)
            .with_delay(delay);
        return if ex.directives.cut {
            answer.cut_short()
        } else {
            answer
        };
    }

    let mut events = Vec::new();
    let start = json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": usage(&ex, ex.completion_tokens.min(1)),
    }});
    events.push(sse_event("message_start", &start));
    events.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push(sse_event("ping", &json!({"type": "ping"})));
    for w in 0..ex.reply.len() {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": ex.delta(w)}}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": ex.completion_tokens}}),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let steps = splice_faults(
        events,
        3 + ex.deltas_before_fault(),
        &ex.directives,
        sse_event("error", &err),
    );
    Answer::sse(steps, delay).with_header("request-id", request_id)
}

/// `POST /v1/messages/count_tokens`.
pub fn count_tokens(body: &Value) -> Answer {
    let ex = match prompt(body, false).and_then(|p| exchange_or_error(&p)) {
        Ok(ex) => ex,
        Err(a) => return a,
    };
    Answer::json(200, &json!({"input_tokens": ex.prompt_tokens}))
        .with_header("request-id", new_id("req_"))
        .with_delay(Duration::from_millis(ex.directives.delay_ms))
}

fn model_object(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
}

/// `GET /v1/models` (Anthropic shape).
pub fn models() -> Answer {
    let data: Vec<Value> = MODELS.iter().map(|m| model_object(m)).collect();
    Answer::json(
        200,
        &json!({"data": data, "has_more": false, "first_id": MODELS[0], "last_id": MODELS[MODELS.len() - 1]}),
    )
    .with_header("request-id", new_id("req_"))
}

/// `GET /v1/models/{id}` (Anthropic shape).
pub fn model(id: &str) -> Answer {
    if MODELS.contains(&id) {
        Answer::json(200, &model_object(id)).with_header("request-id", new_id("req_"))
    } else {
        error(404, &format!("model: {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Body, Step};

    fn full_json(a: &Answer) -> Value {
        match &a.body {
            Body::Full(b) => serde_json::from_slice(b).unwrap(),
            Body::Stream { .. } => panic!("expected a full body"),
        }
    }

    fn body(text: &str) -> Value {
        json!({"model": "fake-claude", "max_tokens": 50, "system": "be brief",
               "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})
    }

    #[test]
    fn message_usage_follows_the_formula() {
        let v = full_json(&messages(&body("hi there")));
        assert_eq!(v["content"][0]["text"], "echo: hi there");
        assert_eq!(v["usage"]["input_tokens"], 2 + 3 + 2 + 3);
        assert_eq!(v["usage"]["output_tokens"], 3);
        assert_eq!(v["stop_reason"], "end_turn");
    }

    #[test]
    fn cached_tokens_come_out_of_input_tokens() {
        let v = full_json(&messages(&body("[[fake:usage=100,5]] [[fake:cached=40]]")));
        assert_eq!(v["usage"]["input_tokens"], 60);
        assert_eq!(v["usage"]["cache_read_input_tokens"], 40);
        assert_eq!(v["usage"]["output_tokens"], 5);
    }

    #[test]
    fn max_tokens_is_required() {
        let mut b = body("x");
        b.as_object_mut().unwrap().remove("max_tokens");
        let a = messages(&b);
        assert_eq!(a.status, 400);
        assert_eq!(full_json(&a)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn error_types_by_status() {
        for (status, kind) in [
            (401, "authentication_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (529, "overloaded_error"),
        ] {
            let a = messages(&body(&format!("[[fake:error={status}]]")));
            assert_eq!(a.status, status);
            let v = full_json(&a);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind);
            assert_eq!(a.header("request-id"), v["request_id"].as_str());
        }
    }

    #[test]
    fn stream_error_sends_an_error_event_after_a_few_deltas() {
        let mut b = body("a b c d e [[fake:stream_error]]");
        b["stream"] = json!(true);
        let a = messages(&b);
        let Body::Stream { steps, .. } = &a.body else {
            panic!("expected a stream")
        };
        let names: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Send(b) | Step::Cut(b) => String::from_utf8_lossy(b)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "event: message_start",
                "event: content_block_start",
                "event: ping",
                "event: content_block_delta",
                "event: content_block_delta",
                "event: error"
            ]
        );
    }

    #[test]
    fn count_tokens_counts_the_prompt() {
        let v = full_json(&count_tokens(&body("one two three")));
        assert_eq!(v["input_tokens"], 2 + 3 + 3 + 3);
    }
}
