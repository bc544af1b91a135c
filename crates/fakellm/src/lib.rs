//! A fake upstream LLM provider (OpenAI and Anthropic wire formats) and an open-loop load
//! generator, for Iron Cage's gateway tests and benchmarks. See this crate's README for the
//! usage formula and the `[[fake:...]]` directives.
//!
//! Layout: [`directives`] and [`exchange`] decide what to answer (pure), [`openai`] and
//! [`anthropic`] put it in each provider's shape (pure), [`router`] picks the endpoint (pure),
//! [`server`] is the only module that touches sockets for the fake; [`load`] is the load
//! generator behind `llmload`.
#![forbid(unsafe_code)]

pub mod answer;
pub mod anthropic;
pub mod directives;
pub mod exchange;
pub mod load;
pub mod openai;
pub mod reqlog;
pub mod router;
pub mod server;
