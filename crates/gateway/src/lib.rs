//! The LLM gateway: OpenAI- and Anthropic-compatible endpoints under `/llm/openai/v1` and
//! `/llm/anthropic/v1` that authenticate a virtual or service key, redact or block
//! personal data and secrets, reserve the worst-case cost against every budget the
//! caller is charged to, forward with the real provider key through a per-provider
//! circuit breaker, meter the provider's reported usage (streams event by event) and
//! record one decision per request.
//!
//! `ironcage run` serves it on a listener inside the sandbox's network namespace;
//! `ironcage serve` mounts it next to its API; `ironcage gateway` runs it alone.

pub mod auth;
pub mod body;
pub mod event;
mod gateway;
pub mod meter;
pub mod metrics;
pub mod provider;
pub mod serve;
pub mod settings;
pub mod sse;
mod upstream;

pub use gateway::{
    Config, Gateway, GatewayError, Stats, DEFAULT_MAX_OUTPUT_TOKENS, MAX_REQUEST_BYTES,
};
