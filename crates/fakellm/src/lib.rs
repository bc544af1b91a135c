//! Fake upstream LLM provider (see README in this crate).
