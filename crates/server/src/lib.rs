//! The Iron Cage execution service (`ironcage serve`): run code over HTTP in sandboxes
//! taken from a warm pool, with API keys, a persistent store (SQLite or PostgreSQL),
//! metrics and an OpenAPI description.
//!
//! Layout: `config` (file/env/flags), `store` (SQL), `keys` (API keys, rate limits),
//! `host` (the per-sandbox host process), `pool` (warm sandboxes), `execution` (request ->
//! job -> result), `app` (HTTP routes), `metrics`, `serve` (start-up and shutdown).

#![deny(unsafe_code)]

pub mod app;
pub mod audit_store;
pub mod config;
pub mod execution;
pub mod host;
pub mod http;
pub mod keys;
pub mod llm;
pub mod metrics;
pub mod pool;
pub mod sandboxes;
pub mod serve;
pub mod store;

/// The OpenAPI 3.1 description served at /openapi.json.
pub const OPENAPI: &str = include_str!("openapi.json");

pub use config::{Config, Overrides};
