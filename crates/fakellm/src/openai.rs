//! The OpenAI side of the fake: chat completions, responses, embeddings and models, in the
//! shapes the official `openai` Python SDK parses (see
//! docs/plans/governance-wire-formats.md). Pure: request JSON in, [`Answer`] out.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::answer::{new_id, now_secs, splice_faults, sse_data, sse_event, Answer};
use crate::exchange::{content_text, words, Exchange, Prompt};

/// Models listed by `GET /v1/models`.
pub const MODELS: &[&str] = &["fake-gpt", "fake-gpt-mini", "fake-embedding"];

/// Default embedding width when the request has no `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 16;

/// An error in OpenAI's shape, `{"error":{"message","type","param","code"}}`, with the
/// `type`/`code` the real API uses for that status.
pub fn error(status: u16, message: &str, param: Option<&str>) -> Answer {
    let (kind, code) = match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("not_found")),
        409 => ("conflict_error", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    let answer = Answer::json(status, &body).with_header("x-request-id", new_id("req_"));
    if status == 429 {
        answer
            .with_header("retry-after", "1")
            .with_header("retry-after-ms", "1000")
    } else {
        answer
    }
}

fn bad_request(message: &str, param: &str) -> Answer {
    error(400, message, Some(param))
}

/// Common tail of the three generating endpoints: directive errors and delays.
fn exchange_or_error(prompt: &Prompt) -> Result<Exchange, Answer> {
    let ex = Exchange::new(prompt).map_err(|e| bad_request(&e.to_string(), "messages"))?;
    if let Some(status) = ex.directives.error {
        return Err(error(
            status,
            &format!("fake error {status} requested by a [[fake:error]] directive"),
            None,
        )
        .with_delay(Duration::from_millis(ex.directives.delay_ms)));
    }
    Ok(ex)
}

fn model_of(body: &Value) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-gpt")
        .to_string()
}

fn u64_field(body: &Value, name: &str) -> Option<u64> {
    body.get(name).and_then(Value::as_u64)
}

fn delay(ex: &Exchange) -> Duration {
    Duration::from_millis(ex.directives.delay_ms)
}

fn finish(answer: Answer, ex: &Exchange) -> Answer {
    let answer = answer.with_header("x-request-id", new_id("req_"));
    if ex.directives.cut {
        answer.cut_short().with_delay(delay(ex))
    } else {
        answer.with_delay(delay(ex))
    }
}

// ---- chat completions ----------------------------------------------------------------------

fn chat_prompt(body: &Value) -> Result<Prompt, Answer> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("'messages' is a required property", "messages"))?;
    let mut prompt = Prompt {
        max_tokens: u64_field(body, "max_completion_tokens").or(u64_field(body, "max_tokens")),
        ..Prompt::default()
    };
    for m in messages {
        let text = content_text(m.get("content").unwrap_or(&Value::Null));
        if m.get("role").and_then(Value::as_str) == Some("user") {
            prompt.last_user = text.clone();
        }
        prompt.messages.push(text);
    }
    Ok(prompt)
}

fn chat_usage(ex: &Exchange, n: u64) -> Value {
    let completion = if ex.usage_fixed {
        ex.completion_tokens
    } else {
        ex.completion_tokens * n
    };
    json!({
        "prompt_tokens": ex.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": ex.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": ex.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

/// `POST /v1/chat/completions`.
pub fn chat(body: &Value) -> Answer {
    let prompt = match chat_prompt(body) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let n = u64_field(body, "n").unwrap_or(1);
    if !(1..=128).contains(&n) {
        return bad_request("'n' must be between 1 and 128", "n");
    }
    let ex = match exchange_or_error(&prompt) {
        Ok(ex) => ex,
        Err(a) => return a,
    };
    let id = new_id("chatcmpl-");
    let model = model_of(body);
    let created = now_secs();
    let finish_reason = if ex.truncated { "length" } else { "stop" };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        return chat_stream(&ex, n, &id, &model, created, include_usage);
    }
    let text = ex.text();
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": finish_reason,
            })
        })
        .collect();
    let out = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices, "usage": chat_usage(&ex, n),
        "service_tier": "default", "system_fingerprint": "fp_fakellm",
    });
    finish(Answer::json(200, &out), &ex)
}

fn chat_stream(
    ex: &Exchange,
    n: u64,
    id: &str,
    model: &str,
    created: u64,
    include_usage: bool,
) -> Answer {
    let chunk = |choices: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_fakellm", "choices": choices,
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let choice = |i: u64, delta: Value, finish: Value| json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut events = Vec::new();
    for i in 0..n {
        let delta = json!({"role": "assistant", "content": "", "refusal": null});
        events.push(sse_data(&chunk(choice(i, delta, Value::Null))));
    }
    for w in 0..ex.reply.len() {
        for i in 0..n {
            let delta = json!({"content": ex.delta(w)});
            events.push(sse_data(&chunk(choice(i, delta, Value::Null))));
        }
    }
    let finish_reason = if ex.truncated { "length" } else { "stop" };
    for i in 0..n {
        events.push(sse_data(&chunk(choice(i, json!({}), json!(finish_reason)))));
    }
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = chat_usage(ex, n);
        events.push(sse_data(&last));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let fault_at = usize::try_from(n).unwrap_or(1) * (1 + ex.deltas_before_fault());
    let err = json!({"error": {
        "message": "The server had an error while processing your request (fake stream_error).",
        "type": "server_error", "param": null, "code": null
    }});
    let steps = splice_faults(events, fault_at, &ex.directives, sse_data(&err));
    Answer::sse(steps, delay(ex)).with_header("x-request-id", new_id("req_"))
}

// ---- responses -----------------------------------------------------------------------------

fn responses_prompt(body: &Value) -> Result<Prompt, Answer> {
    let mut prompt = Prompt {
        max_tokens: u64_field(body, "max_output_tokens"),
        ..Prompt::default()
    };
    if let Some(i) = body.get("instructions").and_then(Value::as_str) {
        prompt.messages.push(i.to_string());
    }
    match body.get("input") {
        Some(Value::String(s)) => {
            prompt.messages.push(s.clone());
            prompt.last_user = s.clone();
        }
        Some(Value::Array(items)) => {
            for item in items {
                let text = match (item.get("content"), item.get("output")) {
                    (Some(c), _) => content_text(c),
                    (None, Some(Value::String(o))) => o.clone(),
                    _ => String::new(),
                };
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    prompt.last_user = text.clone();
                }
                prompt.messages.push(text);
            }
        }
        _ => return Err(bad_request("'input' must be a string or a list", "input")),
    }
    Ok(prompt)
}

fn responses_usage(ex: &Exchange) -> Value {
    json!({
        "input_tokens": ex.prompt_tokens,
        "input_tokens_details": {"cached_tokens": ex.cached_tokens},
        "output_tokens": ex.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": ex.prompt_tokens + ex.completion_tokens,
    })
}

struct ResponseShape<'a> {
    id: &'a str,
    msg_id: &'a str,
    model: &'a str,
    created: u64,
    body: &'a Value,
}

impl ResponseShape<'_> {
    fn message(&self, status: &str, content: Value) -> Value {
        json!({"type": "message", "id": self.msg_id, "status": status, "role": "assistant", "content": content})
    }

    fn part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    fn response(&self, status: &str, output: Value, usage: Value, truncated: bool) -> Value {
        let b = self.body;
        let incomplete = if truncated {
            json!({"reason": "max_output_tokens"})
        } else {
            Value::Null
        };
        json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "background": false, "error": null, "incomplete_details": incomplete,
            "instructions": b.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": b.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": self.model, "output": output, "parallel_tool_calls": true,
            "previous_response_id": b.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "reasoning": {"effort": null, "summary": null}, "service_tier": "default",
            "store": b.get("store").cloned().unwrap_or(json!(true)),
            "temperature": b.get("temperature").cloned().unwrap_or(json!(1.0)),
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": b.get("top_p").cloned().unwrap_or(json!(1.0)), "truncation": "disabled",
            "usage": usage, "user": null, "metadata": {},
        })
    }
}

/// `POST /v1/responses`.
pub fn responses(body: &Value) -> Answer {
    let prompt = match responses_prompt(body) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let ex = match exchange_or_error(&prompt) {
        Ok(ex) => ex,
        Err(a) => return a,
    };
    let id = new_id("resp_");
    let msg_id = new_id("msg_");
    let model = model_of(body);
    let shape = ResponseShape {
        id: &id,
        msg_id: &msg_id,
        model: &model,
        created: now_secs(),
        body,
    };
    let text = ex.text();
    let final_status = if ex.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let done_item = shape.message(final_status, json!([ResponseShape::part(&text)]));
    let done = shape.response(
        final_status,
        json!([done_item.clone()]),
        responses_usage(&ex),
        ex.truncated,
    );
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return finish(Answer::json(200, &done), &ex);
    }

    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push(sse_event(name, &data));
    };
    let in_progress = shape.response("in_progress", json!([]), Value::Null, false);
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));
    let item0 = shape.message("in_progress", json!([]));
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": item0}),
    );
    let at = json!({"item_id": msg_id, "output_index": 0, "content_index": 0});
    let with = |mut base: Value, extra: Value| {
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        base
    };
    push(
        "response.content_part.added",
        with(at.clone(), json!({"part": ResponseShape::part("")})),
    );
    for w in 0..ex.reply.len() {
        push(
            "response.output_text.delta",
            with(at.clone(), json!({"delta": ex.delta(w), "logprobs": []})),
        );
    }
    push(
        "response.output_text.done",
        with(at.clone(), json!({"text": text, "logprobs": []})),
    );
    push(
        "response.content_part.done",
        with(at.clone(), json!({"part": ResponseShape::part(&text)})),
    );
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item}),
    );
    let terminal = if ex.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(terminal, json!({"response": done}));
    let fault_at = 4 + ex.deltas_before_fault();
    let err = json!({
        "type": "error", "code": "server_error", "param": null,
        "message": "The server had an error while processing your request (fake stream_error).",
        "sequence_number": fault_at,
    });
    let steps = splice_faults(events, fault_at, &ex.directives, sse_event("error", &err));
    Answer::sse(steps, delay(&ex)).with_header("x-request-id", new_id("req_"))
}

// ---- embeddings ----------------------------------------------------------------------------

/// One input of an embeddings request: its text (for directives and the vector) and tokens.
fn embedding_inputs(input: &Value) -> Option<Vec<(String, u64)>> {
    let token_list = |v: &Value| -> Option<u64> {
        let tokens = v.as_array()?;
        tokens
            .iter()
            .all(Value::is_u64)
            .then_some(tokens.len() as u64)
    };
    match input {
        Value::String(s) => Some(vec![(s.clone(), words(s))]),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| (s.to_string(), words(s)))
                .collect(),
        ),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            Some(vec![(input.to_string(), items.len() as u64)])
        }
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| token_list(v).map(|n| (v.to_string(), n)))
            .collect(),
        _ => None,
    }
}

/// A deterministic unit vector for `text`.
pub fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            // xorshift64*: fills the vector from the text's hash.
            h ^= h >> 12;
            h ^= h << 25;
            h ^= h >> 27;
            let x = h.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `POST /v1/embeddings`.
pub fn embeddings(body: &Value) -> Answer {
    let Some(inputs) = body.get("input").and_then(embedding_inputs) else {
        return bad_request(
            "'input' must be a non-empty string, list of strings or list of token lists",
            "input",
        );
    };
    let all_text: Vec<&str> = inputs.iter().map(|(t, _)| t.as_str()).collect();
    let prompt = Prompt {
        messages: Vec::new(),
        last_user: all_text.join("\n"),
        max_tokens: None,
    };
    let ex = match exchange_or_error(&prompt) {
        Ok(ex) => ex,
        Err(a) => return a,
    };
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, 4096);
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let v = embed(text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt_tokens = match ex.directives.usage {
        Some((p, _)) => p,
        None => inputs.iter().map(|(_, n)| n).sum(),
    };
    let out = json!({
        "object": "list", "data": data, "model": model_of(body),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    finish(Answer::json(200, &out), &ex)
}

// ---- models --------------------------------------------------------------------------------

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fakellm"})
}

/// `GET /v1/models`.
pub fn models() -> Answer {
    let data: Vec<Value> = MODELS.iter().map(|m| model_object(m)).collect();
    Answer::json(200, &json!({"object": "list", "data": data}))
        .with_header("x-request-id", new_id("req_"))
}

/// `GET /v1/models/{id}`.
pub fn model(id: &str) -> Answer {
    if MODELS.contains(&id) {
        Answer::json(200, &model_object(id)).with_header("x-request-id", new_id("req_"))
    } else {
        error(
            404,
            &format!("The model '{id}' does not exist"),
            Some("model"),
        )
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

    fn stream_events(a: &Answer) -> Vec<String> {
        match &a.body {
            Body::Stream { steps, .. } => steps
                .iter()
                .map(|s| match s {
                    Step::Send(b) | Step::Cut(b) => String::from_utf8(b.to_vec()).unwrap(),
                })
                .collect(),
            Body::Full(_) => panic!("expected a stream"),
        }
    }

    fn chat_body(text: &str) -> Value {
        json!({"model": "fake-gpt", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text}
        ]})
    }

    #[test]
    fn chat_usage_follows_the_formula() {
        let a = chat(&chat_body("hello world"));
        assert_eq!(a.status, 200);
        let v = full_json(&a);
        assert_eq!(v["choices"][0]["message"]["content"], "echo: hello world");
        assert_eq!(v["usage"]["prompt_tokens"], 2 + 3 + 2 + 3);
        assert_eq!(v["usage"]["completion_tokens"], 3);
        assert_eq!(v["usage"]["total_tokens"], 13);
    }

    #[test]
    fn chat_n_multiplies_choices_and_completion() {
        let mut b = chat_body("hi");
        b["n"] = json!(3);
        let v = full_json(&chat(&b));
        assert_eq!(v["choices"].as_array().unwrap().len(), 3);
        assert_eq!(v["usage"]["completion_tokens"], 6);
    }

    #[test]
    fn chat_stream_usage_chunk_only_on_request() {
        let mut b = chat_body("a b");
        b["stream"] = json!(true);
        let plain = stream_events(&chat(&b));
        assert!(plain.iter().all(|e| !e.contains("\"usage\"")));
        assert_eq!(plain.last().unwrap(), "data: [DONE]\n\n");
        b["stream_options"] = json!({"include_usage": true});
        let with = stream_events(&chat(&b));
        let usage: Value =
            serde_json::from_str(with[with.len() - 2].trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert!(with[..with.len() - 2]
            .iter()
            .all(|e| e.contains("\"usage\":null")));
    }

    #[test]
    fn error_directive_gives_openai_error_shape() {
        let a = chat(&chat_body("x [[fake:error=429]]"));
        assert_eq!(a.status, 429);
        assert_eq!(a.header("retry-after"), Some("1"));
        assert_eq!(full_json(&a)["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn bad_directive_is_a_400() {
        let a = chat(&chat_body("[[fake:nope]]"));
        assert_eq!(a.status, 400);
        assert!(full_json(&a)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown directive"));
    }

    #[test]
    fn responses_stream_has_increasing_sequence_numbers() {
        let b = json!({"model": "fake-gpt", "input": "one two", "stream": true});
        let events = stream_events(&responses(&b));
        let names: Vec<&str> = events
            .iter()
            .map(|e| e.lines().next().unwrap().trim_start_matches("event: "))
            .collect();
        assert_eq!(names[0], "response.created");
        assert_eq!(*names.last().unwrap(), "response.completed");
        for (i, e) in events.iter().enumerate() {
            let data: Value =
                serde_json::from_str(e.lines().nth(1).unwrap().trim_start_matches("data: "))
                    .unwrap();
            assert_eq!(data["sequence_number"], i);
            assert_eq!(data["type"], names[i]);
            if names[i] != "response.completed" {
                assert!(data.pointer("/response/usage").is_none_or(Value::is_null));
            }
        }
    }

    #[test]
    fn responses_max_output_tokens_is_incomplete() {
        let b = json!({"model": "m", "input": "a b c d", "max_output_tokens": 2});
        let v = full_json(&responses(&b));
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["usage"]["output_tokens"], 2);
    }

    #[test]
    fn embeddings_base64_is_little_endian_f32() {
        let b = json!({"model": "m", "input": ["a b", "c"], "encoding_format": "base64", "dimensions": 4});
        let v = full_json(&embeddings(&b));
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = raw
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, embed("c", 4));
    }

    #[test]
    fn embeddings_accept_token_lists() {
        let v = full_json(&embeddings(&json!({"input": [[1, 2, 3], [4]]})));
        assert_eq!(v["usage"]["prompt_tokens"], 4);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 16);
    }
}
