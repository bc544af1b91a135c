//! Which provider and endpoint a request is for, and answers in that provider's own error
//! shape (so the official SDKs raise their usual exception classes).

use bytes::Bytes;
use hyper::{header, Response, StatusCode};

use crate::body::{full, GatewayBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

    /// The name used on the command line, in the secret store and in paths.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn from_name(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The public API, used when no upstream is configured. Like the SDKs' base URLs:
    /// OpenAI's includes `/v1`, Anthropic's does not.
    pub fn default_upstream(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }
}

/// The endpoints the gateway forwards. Anything else is refused: an unmetered endpoint
/// (files, fine-tuning, batches) would spend money or move data past the budget and scanner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Models,
    Messages,
    CountTokens,
}

impl Endpoint {
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
        }
    }

    /// Whether calls cost money (and so need a price and a reservation).
    pub fn billed(&self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::CountTokens)
    }
}

/// Where a request goes: provider, endpoint, and the path below the provider's `/v1`.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Provider,
    pub endpoint: Endpoint,
    /// e.g. `chat/completions` or `models/gpt-4o`.
    pub rest: String,
}

pub const OPENAI_PREFIX: &str = "/llm/openai/v1/";
pub const ANTHROPIC_PREFIX: &str = "/llm/anthropic/v1/";

/// The provider a path belongs to (for error shapes), even if the endpoint is unknown.
pub fn provider_of(path: &str) -> Option<Provider> {
    if path.starts_with(OPENAI_PREFIX) || path == "/llm/openai/v1" {
        Some(Provider::OpenAi)
    } else if path.starts_with(ANTHROPIC_PREFIX) || path == "/llm/anthropic/v1" {
        Some(Provider::Anthropic)
    } else {
        None
    }
}

/// Routes `method path`; `Err` carries the provider (for the error's shape) when known.
pub fn route(method: &hyper::Method, path: &str) -> Result<Route, Option<Provider>> {
    let (provider, rest) = if let Some(r) = path.strip_prefix(OPENAI_PREFIX) {
        (Provider::OpenAi, r)
    } else if let Some(r) = path.strip_prefix(ANTHROPIC_PREFIX) {
        (Provider::Anthropic, r)
    } else {
        return Err(provider_of(path));
    };
    let post = method == hyper::Method::POST;
    let get = method == hyper::Method::GET;
    let endpoint = match (provider, rest, post, get) {
        (Provider::OpenAi, "chat/completions", true, _) => Endpoint::ChatCompletions,
        (Provider::OpenAi, "responses", true, _) => Endpoint::Responses,
        (Provider::OpenAi, "embeddings", true, _) => Endpoint::Embeddings,
        (Provider::Anthropic, "messages", true, _) => Endpoint::Messages,
        (Provider::Anthropic, "messages/count_tokens", true, _) => Endpoint::CountTokens,
        (_, "models", _, true) => Endpoint::Models,
        (_, r, _, true)
            if r.strip_prefix("models/").is_some_and(|id| {
                !id.is_empty()
                    && !id.contains("..")
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            }) =>
        {
            Endpoint::Models
        }
        _ => return Err(Some(provider)),
    };
    Ok(Route {
        provider,
        endpoint,
        rest: rest.to_string(),
    })
}

/// What went wrong, in terms both providers have an error type for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    NotFound,
    TooLarge,
    /// Over budget: the SDKs must not retry.
    Budget,
    /// The circuit breaker is open or the upstream failed.
    Unavailable,
    BadGateway,
}

impl ErrorKind {
    fn status(self, provider: Provider) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // What each provider answers when the account is out of credit.
            ErrorKind::Budget => match provider {
                Provider::OpenAi => StatusCode::TOO_MANY_REQUESTS,
                Provider::Anthropic => StatusCode::PAYMENT_REQUIRED,
            },
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::BadRequest | ErrorKind::TooLarge => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Budget => "insufficient_quota",
            ErrorKind::Unavailable | ErrorKind::BadGateway => "server_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::Budget => "billing_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::BadGateway => "api_error",
        }
    }
}

/// The JSON of an error in the provider's shape.
pub fn error_json(provider: Provider, kind: ErrorKind, code: &str, message: &str) -> Vec<u8> {
    let v = match provider {
        Provider::OpenAi => serde_json::json!({
            "error": {"message": message, "type": kind.openai_type(), "param": null, "code": code}
        }),
        Provider::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": kind.anthropic_type(), "message": message},
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// An error response. Budget refusals and blocked prompts carry `x-should-retry: false`:
/// the SDKs would otherwise retry 429s (twice by default) and spend the agent's time.
pub fn error_response(
    provider: Provider,
    kind: ErrorKind,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response<GatewayBody> {
    let mut b = Response::builder()
        .status(kind.status(provider))
        .header(header::CONTENT_TYPE, "application/json");
    match (kind, code, retry_after) {
        // Momentarily busy: the SDKs may retry, after a second.
        (ErrorKind::Unavailable, "busy", _) => {
            b = b.header(header::RETRY_AFTER, "1");
        }
        (ErrorKind::Unavailable, _, Some(secs)) => {
            b = b.header(header::RETRY_AFTER, secs.to_string());
            b = b.header("x-should-retry", "false");
        }
        // Refusals that a retry cannot change, and failures already billed at their
        // worst case (a retry would be billed again).
        (ErrorKind::Budget | ErrorKind::BadRequest | ErrorKind::TooLarge, _, _)
        | (ErrorKind::BadGateway, "upstream_timeout" | "upstream_read_failed", _) => {
            b = b.header("x-should-retry", "false");
        }
        _ => {}
    }
    b.body(full(Bytes::from(error_json(provider, kind, code, message))))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// The in-band error event that ends a stream the gateway stops (budget crossed): the
/// SDKs raise on it, where a stream that just ends early would pass silently.
pub fn stream_error_event(provider: Provider, endpoint: &Endpoint, message: &str) -> Bytes {
    let text = match (provider, endpoint) {
        (Provider::Anthropic, _) => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "error": {"type": "billing_error", "message": message}})
        ),
        // The SDK raises on a Responses event only when its data has an `error` member.
        (Provider::OpenAi, Endpoint::Responses) => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "code": "insufficient_quota", "message": message, "param": null,
                               "error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": message}})
        ),
        (Provider::OpenAi, _) => format!(
            "data: {}\n\n",
            serde_json::json!({"error": {"message": message, "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
        ),
    };
    Bytes::from(text)
}
