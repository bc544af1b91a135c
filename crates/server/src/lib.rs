//! The Iron Cage execution service (`ironcage serve`): run code over HTTP in sandboxes
//! taken from a warm pool, with API keys, a persistent store (SQLite or PostgreSQL),
//! metrics and an OpenAPI description.

#![deny(unsafe_code)]

pub mod host;
