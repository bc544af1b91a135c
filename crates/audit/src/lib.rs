//! Iron Cage's tamper-evident audit log.
#![forbid(unsafe_code)]
pub mod canonical;
pub mod entry;
pub mod fsutil;
pub mod log;
pub mod merkle;
pub mod note;
pub mod scrub;
pub mod store;
pub mod verify;
