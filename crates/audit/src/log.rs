//! The audit log: sequences, chains, hashes and signs events on top of a [`Store`], and
//! answers proof requests. Verification from scratch is in `verify`.

use crate::entry::{self, Event, TYPE_LOG_INIT, TYPE_LOG_REPAIR};
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, SigningKey};
use crate::store::{Appender, Batch, FileStore, Head, Store, StoreError, StoreNodes};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log {log}: {msg}")]
    Invalid { log: String, msg: String },
}

impl LogError {
    /// Whether the log was found tampered with (as opposed to unreadable).
    pub fn is_tampering(&self) -> bool {
        matches!(self, LogError::Store(StoreError::Tampered { .. }))
    }
}

pub struct AuditLog {
    store: Box<dyn Store>,
    signer: Option<SigningKey>,
    origin: Option<String>,
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Sequence number of the first of the caller's events.
    pub first_seq: u64,
    /// Tree size after the append.
    pub size: u64,
    pub root: Hash,
    /// The signed checkpoint of the new tree (with a signer).
    pub checkpoint: Option<String>,
    /// Crash traces repaired first, each recorded in the log as a `log.repair` entry.
    pub repairs: Vec<String>,
    /// Problems after the entries were durable (index or checkpoint not written).
    pub warnings: Vec<String>,
}

/// A fresh log's name (its checkpoint origin): host, and a random part so two logs on
/// one host never share a name.
fn new_origin() -> String {
    let mut r = [0u8; 6];
    let _ = getrandom::fill(&mut r);
    format!(
        "{}/ironcage-audit/{}",
        crate::note::host_name(),
        crate::note::hex(&r)
    )
}

struct EventAppender<'a> {
    events: &'a [Event],
    signer: Option<&'a SigningKey>,
    origin: &'a mut Option<String>,
    first_seq: u64,
    sealed: Option<String>,
    repairs: Vec<String>,
    adopt: bool,
}

fn push_entry(bytes: Vec<u8>, batch: &mut Batch, prev: &mut Hash, seq: &mut u64) {
    let leaf = merkle::leaf_hash(&bytes);
    batch.bytes.extend_from_slice(&bytes);
    batch.bytes.push(b'\n');
    batch.ends.push(batch.bytes.len());
    batch.leaves.push(leaf);
    *prev = leaf;
    *seq += 1;
}

impl Appender for EventAppender<'_> {
    fn signs(&self) -> bool {
        self.signer.is_some()
    }

    fn trusted(&mut self, note: &str, first: Option<&[u8]>) -> Option<(u64, Hash)> {
        let key = self.signer?;
        if self.origin.is_none() {
            *self.origin = first.and_then(entry::origin);
        }
        let cp = Checkpoint::open(note, &key.verifier()).ok()?;
        (Some(&cp.origin) == self.origin.as_ref()).then_some((cp.size, cp.root))
    }

    fn adopts(&self) -> bool {
        self.adopt
    }

    fn signed_size(&self, note: &str) -> Option<u64> {
        Checkpoint::open(note, &self.signer?.verifier())
            .ok()
            .map(|c| c.size)
    }

    fn entries(&mut self, head: &Head) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        let mut prev = head.last_leaf.unwrap_or([0; 32]);
        let mut seq = head.size;
        if head.size == 0 {
            let origin = new_origin();
            let init = Event::new(
                TYPE_LOG_INIT,
                None,
                serde_json::json!({
                    "origin": origin,
                    "created_by": format!("ironcage {}", env!("CARGO_PKG_VERSION")),
                }),
            );
            *self.origin = Some(origin);
            push_entry(
                entry::encode(0, &prev, &init),
                &mut batch,
                &mut prev,
                &mut seq,
            );
        } else if self.origin.is_none() {
            *self.origin = head.first.as_deref().and_then(entry::origin);
        }
        for r in &head.repairs {
            let ev = Event::new(TYPE_LOG_REPAIR, None, serde_json::json!({ "repair": r }));
            push_entry(
                entry::encode(seq, &prev, &ev),
                &mut batch,
                &mut prev,
                &mut seq,
            );
        }
        self.repairs = head.repairs.clone();
        self.first_seq = seq;
        for ev in self.events {
            push_entry(
                entry::encode(seq, &prev, ev),
                &mut batch,
                &mut prev,
                &mut seq,
            );
        }
        Ok(batch)
    }

    fn seal(&mut self, size: u64, root: &Hash) -> Option<String> {
        let (key, origin) = (self.signer?, self.origin.as_ref()?);
        let note = Checkpoint {
            origin: origin.clone(),
            size,
            root: *root,
        }
        .sign(key);
        self.sealed = Some(note.clone());
        Some(note)
    }
}

impl AuditLog {
    pub fn new(store: Box<dyn Store>, signer: Option<SigningKey>) -> AuditLog {
        AuditLog {
            store,
            signer,
            origin: None,
        }
    }

    /// The embedded default: a file log at `path` (created if missing), for appending.
    pub fn open_file(path: &Path, signer: Option<SigningKey>) -> Result<AuditLog, LogError> {
        Ok(AuditLog::new(
            Box::new(FileStore::open_append(path)?),
            signer,
        ))
    }

    /// An existing file log, for appending (never creates one).
    pub fn open_file_existing(
        path: &Path,
        signer: Option<SigningKey>,
    ) -> Result<AuditLog, LogError> {
        Ok(AuditLog::new(
            Box::new(FileStore::open_existing(path)?),
            signer,
        ))
    }

    /// A file log opened read-only.
    pub fn open_file_read(path: &Path) -> Result<AuditLog, LogError> {
        Ok(AuditLog::new(Box::new(FileStore::open_read(path)?), None))
    }

    /// Signs from now on with `key` (a log opened for reading, then checkpointed).
    pub fn set_signer(&mut self, key: SigningKey) {
        self.signer = Some(key);
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn name(&self) -> String {
        self.store.name()
    }

    /// Appends events durably (returns after the entries are on disk) and, with a signer,
    /// stores a signed checkpoint of the new tree. One call is one batch: one write, one
    /// fsync, one signature, however many events.
    pub fn append(&mut self, events: &[Event]) -> Result<Appended, LogError> {
        self.append_inner(events, false)
    }

    fn append_inner(&mut self, events: &[Event], adopt: bool) -> Result<Appended, LogError> {
        let mut app = EventAppender {
            events,
            signer: self.signer.as_ref(),
            origin: &mut self.origin,
            first_seq: 0,
            sealed: None,
            repairs: Vec::new(),
            adopt,
        };
        let done = self.store.append(&mut app)?;
        Ok(Appended {
            first_seq: app.first_seq,
            size: done.size,
            root: done.root,
            checkpoint: app.sealed,
            repairs: app.repairs,
            warnings: done.warnings,
        })
    }

    /// Repairs noticed when the store was opened (before any append).
    pub fn take_repairs(&mut self) -> Vec<String> {
        self.store.take_repairs()
    }

    pub fn size(&self) -> Result<u64, LogError> {
        Ok(self.store.size()?)
    }

    pub fn origin(&mut self) -> Result<Option<String>, LogError> {
        if self.origin.is_none() && self.size()? > 0 {
            self.origin = entry::origin(&self.entry(0)?);
        }
        Ok(self.origin.clone())
    }

    pub fn entry(&self, seq: u64) -> Result<Vec<u8>, LogError> {
        let mut out = None;
        self.store.entries(seq, seq + 1, &mut |_, b| {
            out = Some(b.to_vec());
            Ok(())
        })?;
        out.ok_or_else(|| self.invalid(format!("entry {seq} does not exist")))
    }

    fn invalid(&self, msg: String) -> LogError {
        LogError::Invalid {
            log: self.store.name(),
            msg,
        }
    }

    fn proof_error(&self, e: std::io::Error) -> LogError {
        self.invalid(format!(
            "the index cannot be read ({e}); run `ironcage audit verify`"
        ))
    }

    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        merkle::root(&StoreNodes(self.store.as_ref()), size).map_err(|e| self.proof_error(e))
    }

    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        if seq >= size {
            return Err(self.invalid(format!("entry {seq} is not in the tree of size {size}")));
        }
        merkle::inclusion_proof(&StoreNodes(self.store.as_ref()), seq, size)
            .map_err(|e| self.proof_error(e))
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        if old > new {
            return Err(self.invalid(format!(
                "the old tree ({old} entries) is larger than the new one ({new}): the log was truncated"
            )));
        }
        merkle::consistency_proof(&StoreNodes(self.store.as_ref()), old, new)
            .map_err(|e| self.proof_error(e))
    }

    /// The latest stored checkpoint, if any.
    pub fn stored_checkpoint(&self) -> Result<Option<String>, LogError> {
        Ok(self.store.checkpoint()?)
    }

    /// Signs a checkpoint of the log as it is now (an append of nothing: the same checks
    /// that the log still extends its last signed checkpoint) and stores it.
    pub fn checkpoint_now(&mut self) -> Result<Appended, LogError> {
        self.checkpoint_inner(false)
    }

    /// Like `checkpoint_now`, but also signs a log that has entries and no checkpoint of
    /// this key (the checkpoint file was removed, or the key changed), recording that in
    /// the log: an operator's decision, after checking the log some other way.
    pub fn checkpoint_adopting(&mut self) -> Result<Appended, LogError> {
        self.checkpoint_inner(true)
    }

    fn checkpoint_inner(&mut self, adopt: bool) -> Result<Appended, LogError> {
        if self.signer.is_none() {
            return Err(self.invalid("no signing key".into()));
        }
        if self.size()? == 0 {
            return Err(self.invalid("the log is empty: nothing to sign yet".into()));
        }
        let a = self.append_inner(&[], adopt)?;
        if a.checkpoint.is_none() {
            return Err(self.invalid(format!(
                "entry 0 does not name the log (no {TYPE_LOG_INIT} entry): cannot sign"
            )));
        }
        Ok(a)
    }
}
