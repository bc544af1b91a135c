//! Iron Cage's tamper-evident audit log: canonical JSON entries, each linked to the hash
//! of the one before, in an RFC 9162 Merkle tree whose heads are signed as C2SP
//! checkpoints. `log` appends and proves, `verify` checks from scratch, `bundle` exports
//! entries with proofs for offline checking, `store` is where entries live (a file by
//! default; a small trait for other backends), `run_events` is what a sandbox run records.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod canonical;
pub mod entry;
pub mod fsutil;
pub mod log;
pub mod merkle;
pub mod note;
pub mod run_events;
pub mod scrub;
pub mod store;
pub mod verify;

pub use entry::Event;
pub use log::{AuditLog, LogError};
