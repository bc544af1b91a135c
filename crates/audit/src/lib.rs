//! Iron Cage's tamper-evident audit log.
#![forbid(unsafe_code)]
pub mod canonical;
pub mod fsutil;
pub mod merkle;
pub mod note;
