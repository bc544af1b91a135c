//! Where entries live. The log logic (sequencing, chaining, hashing, signing, proofs,
//! verification) is written against the small [`Store`] trait; `file` is the embedded
//! default (plain files), `mem` keeps everything in memory. The execution service can put
//! the same log in PostgreSQL by implementing the trait (an append is one transaction
//! holding a row lock on the head).
//!
//! What every store must guarantee, whatever it is built on:
//! - appends are serialised: each sees the head the previous one left, entries never
//!   interleave, and the entries are durable before `append` returns;
//! - a new tree head is signed only if it extends the last head signed by the same key,
//!   recomputed from the entries (never from derived data an attacker could edit), so an
//!   honest append never signs a rewritten or truncated history;
//! - anything found wrong is refused as tampering, never "repaired" away; what is repaired
//!   (the traces of a crash) is recorded in the log itself, as `log.repair` entries.

mod file;
pub mod layout;
mod mem;

pub use file::FileStore;
pub use layout::{node_count, node_pos, pos_node};
pub use mem::MemStore;

use crate::merkle::{Hash, Nodes};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("audit log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("audit log {}: {step}: {source}", path.display())]
    IoAt {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    /// The log or its index was modified: appends and signatures are refused until a
    /// person has looked (`ironcage audit verify`).
    #[error("audit log {} was tampered with: {reason}. Nothing was appended or signed. Run `ironcage audit verify --log {}`; keep the files as evidence and move audit.log* aside to start a new log", path.display(), path.display())]
    Tampered {
        path: PathBuf,
        entry: Option<u64>,
        reason: String,
    },
    #[error("audit log {}: entry {seq} does not exist (the log has {size} entries)", path.display())]
    NoSuchEntry { path: PathBuf, seq: u64, size: u64 },
    #[error("audit log {}: {msg}", path.display())]
    Unusable { path: PathBuf, msg: String },
    /// The caller's batch could not be built.
    #[error("{0}")]
    Build(String),
}

/// The state an append starts from.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub size: u64,
    /// The leaf hash of entry `size - 1`, which the next entry links to.
    pub last_leaf: Option<Hash>,
    /// Entry 0 (which names the log), when there is one.
    pub first: Option<Vec<u8>>,
    /// Crash traces the store repaired before this append, to be recorded as `log.repair`
    /// entries ahead of the caller's.
    pub repairs: Vec<String>,
}

/// Entries to append: their bytes (each ending in '\n'), where each ends within `bytes`,
/// and their leaf hashes.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
    pub leaves: Vec<Hash>,
}

/// The log side of an append, called with the store locked.
pub trait Appender {
    /// Whether this append signs the new tree head (it has a key).
    fn signs(&self) -> bool;
    /// `Some((size, root))` when `note` is a checkpoint of this log (whose entry 0 is
    /// `first`) signed by the appender's key.
    fn trusted(&mut self, note: &str, first: Option<&[u8]>) -> Option<(u64, Hash)>;
    /// The tree size of `note` if its signature is the appender's key's, whatever log it
    /// names.
    fn signed_size(&self, note: &str) -> Option<u64>;
    /// Whether to sign a log that has entries but no checkpoint of this key (an
    /// operator's explicit decision: `audit checkpoint --adopt`).
    fn adopts(&self) -> bool {
        false
    }
    /// Builds the entries that follow `head`.
    fn entries(&mut self, head: &Head) -> Result<Batch, StoreError>;
    /// After the entries are durable: the signed checkpoint of the new tree.
    fn seal(&mut self, size: u64, root: &Hash) -> Option<String>;
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Done {
    pub size: u64,
    pub root: Hash,
    /// Things that went wrong after the entries were durable (derived files or the
    /// checkpoint could not be written): the append itself succeeded.
    pub warnings: Vec<String>,
}

/// One stored item as a from-scratch verification sees it.
pub struct Raw<'a> {
    /// Position in storage order (what the sequence number should be).
    pub position: u64,
    /// Where it is (byte offset for files), for error messages.
    pub locator: u64,
    pub bytes: &'a [u8],
}

#[derive(Debug, Default, Clone)]
pub struct ScanEnd {
    /// Bytes after the last complete entry (a torn append not yet repaired).
    pub torn_tail_bytes: u64,
}

pub type Visit<'a> = dyn FnMut(Raw<'_>) -> Result<(), StoreError> + 'a;
/// Called with (sequence number, entry bytes).
pub type EntryVisit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'a;

pub trait Store: Send {
    /// A human name for messages (the file path).
    fn name(&self) -> String;
    /// Appends atomically with respect to every other writer (see the module docs).
    fn append(&mut self, app: &mut dyn Appender) -> Result<Done, StoreError>;
    /// Number of entries.
    fn size(&self) -> Result<u64, StoreError>;
    /// Calls `visit(seq, bytes)` for entries `from..to`.
    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError>;
    /// A complete subtree hash from the stored tree.
    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError>;
    /// Every stored entry as stored, ignoring all derived data: what `verify` reads.
    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanEnd, StoreError>;
    /// Stored tree nodes in post-order from position `from` (at most `max`); fewer (or
    /// none) when the store keeps fewer. `verify` compares them with what it recomputes.
    fn stored_nodes(&self, from: u64, max: usize) -> Result<Vec<Hash>, StoreError>;
    /// Stored entry locators (end offsets for files) from entry `from` (at most `max`),
    /// for `verify` to compare with what it scanned; empty when the store keeps none.
    fn stored_locators(&self, from: u64, max: usize) -> Result<Vec<u64>, StoreError>;
    /// The newest well-formed stored checkpoint (not signature-checked).
    fn checkpoint(&self) -> Result<Option<String>, StoreError>;
    /// Repairs done when the store was opened (to tell the user; appends record them).
    fn take_repairs(&mut self) -> Vec<String>;
}

/// Adapts a store to the Merkle code's node source.
pub struct StoreNodes<'a>(pub &'a dyn Store);

impl Nodes for StoreNodes<'_> {
    fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        self.0
            .node(level, index)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}
