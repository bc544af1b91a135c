//! Export bundles: entries with a signed checkpoint and what it takes to check them
//! offline, with nothing but the log's public key.
//!
//! ```json
//! {"format": "ironcage-audit-bundle/1", "origin": "...", "public_key": "<vkey>",
//!  "checkpoint": "<signed note>", "tree_size": N, "complete": false,
//!  "entries": [{"seq": 5, "entry": "<entry bytes as a string>", "proof": ["<hex>", ...]}]}
//! ```
//! A bundle of the whole log (`complete`) carries no per-entry proofs: the verifier
//! recomputes the tree from all entries. A partial one (one run, a range) carries an
//! inclusion proof per entry and a `manifest` signed by the log's key that states what was
//! selected and the hash of exactly the entries included, so none can be left out.
//! `public_key` is informational; the verifier only trusts the key it is given.

use crate::entry;
use crate::log::{AuditLog, LogError};
use crate::merkle::{self, Frontier, Hash};
use crate::note::{hex, unhex, Checkpoint, SigningKey, VerifierKey};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "ironcage-audit-bundle/1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub origin: String,
    pub public_key: Option<String>,
    pub checkpoint: String,
    pub tree_size: u64,
    pub complete: bool,
    /// What was selected: `all`, `run:<id>` or `range:<from>-<to>`.
    #[serde(default)]
    pub selection: String,
    /// A signed note stating the selection and the entries it gave (see `manifest_text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    pub entries: Vec<BundleEntry>,
}

/// The manifest's text: format, origin, tree size, selection, number of entries, and the
/// SHA-256 of their leaf hashes in order.
fn manifest_text(origin: &str, size: u64, selection: &str, leaves: &[Hash]) -> String {
    let mut h = Sha256::new();
    for l in leaves {
        h.update(l);
    }
    format!(
        "{FORMAT}\n{origin}\n{size}\n{selection}\n{}\n{}\n",
        leaves.len(),
        hex(&h.finalize())
    )
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleEntry {
    pub seq: u64,
    pub entry: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proof: Vec<String>,
}

/// Which entries to export.
pub enum Select<'a> {
    All,
    Range(u64, u64),
    Run(&'a str),
}

/// Builds a bundle of the selected entries against `checkpoint` (a signed note for the
/// tree of `cp.size` entries, which must be the log's).
pub fn export(
    log: &AuditLog,
    checkpoint_note: &str,
    cp: &Checkpoint,
    signer: Option<&SigningKey>,
    select: Select<'_>,
) -> Result<Bundle, LogError> {
    let public_key = signer.map(|k| k.verifier());
    let size = cp.size;
    let (from, to) = match select {
        Select::All | Select::Run(_) => (0, size),
        Select::Range(a, b) => (a.min(size), b.min(size)),
    };
    let mut entries = Vec::new();
    log.store().entries(from, to, &mut |seq, bytes| {
        let keep = match &select {
            // An entry that does not parse cannot be left out quietly: it may be the one.
            Select::Run(id) => {
                entry::parse(bytes)
                    .map_err(|e| StoreError::Tampered {
                        path: log.name().into(),
                        entry: Some(seq),
                        reason: format!("entry {seq}: {e}"),
                    })?
                    .run
                    .as_deref()
                    == Some(*id)
            }
            _ => true,
        };
        if keep {
            entries.push(BundleEntry {
                seq,
                entry: String::from_utf8_lossy(bytes).into_owned(),
                proof: Vec::new(),
            });
        }
        Ok(())
    })?;
    let complete = from == 0 && to == size && matches!(select, Select::All | Select::Range(..));
    let selection = match &select {
        Select::All => "all".to_string(),
        Select::Run(id) => format!("run:{id}"),
        Select::Range(..) => format!("range:{from}-{to}"),
    };
    let leaves: Vec<Hash> = entries
        .iter()
        .map(|e| merkle::leaf_hash(e.entry.as_bytes()))
        .collect();
    let manifest =
        signer.map(|k| k.sign_note(&manifest_text(&cp.origin, size, &selection, &leaves)));
    if !complete {
        for e in &mut entries {
            e.proof = log
                .inclusion_proof(e.seq, size)?
                .iter()
                .map(|h| hex(h))
                .collect();
        }
    }
    Ok(Bundle {
        format: FORMAT.into(),
        origin: cp.origin.clone(),
        public_key: public_key.map(|k| k.to_text()),
        checkpoint: checkpoint_note.to_string(),
        tree_size: size,
        complete,
        selection,
        manifest,
        entries,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not an ironcage audit bundle: {0}")]
    Format(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("entry {seq}: {reason}")]
    Entry { seq: u64, reason: String },
}

/// What a bundle proved.
#[derive(Debug)]
pub struct BundleVerified {
    pub origin: String,
    pub tree_size: u64,
    pub entries: u64,
    pub complete: bool,
    pub selection: String,
    /// Whether a signed manifest proves no selected entry was left out (always true for a
    /// complete bundle).
    pub selection_attested: bool,
}

pub fn verify_bundle(b: &Bundle, key: &VerifierKey) -> Result<BundleVerified, BundleError> {
    if b.format != FORMAT {
        return Err(BundleError::Format(format!("format `{}`", b.format)));
    }
    let cp =
        Checkpoint::open(&b.checkpoint, key).map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    if cp.origin != b.origin || cp.size != b.tree_size {
        return Err(BundleError::Checkpoint(format!(
            "the bundle says log `{}` with {} entries, its signed checkpoint says `{}` with {}",
            b.origin, b.tree_size, cp.origin, cp.size
        )));
    }
    let bad = |seq: u64, reason: String| BundleError::Entry { seq, reason };
    let mut prev: Option<(u64, Hash)> = None;
    let mut frontier = Frontier::new();
    for e in &b.entries {
        let bytes = e.entry.as_bytes();
        let parsed = entry::parse(bytes).map_err(|err| bad(e.seq, err.to_string()))?;
        if parsed.seq != e.seq {
            return Err(bad(
                e.seq,
                format!("it carries sequence number {}", parsed.seq),
            ));
        }
        if e.seq >= cp.size {
            return Err(bad(
                e.seq,
                format!("outside the checkpoint's {} entries", cp.size),
            ));
        }
        let leaf = merkle::leaf_hash(bytes);
        if let Some((ps, pl)) = prev {
            if e.seq <= ps {
                return Err(bad(e.seq, "entries are out of order or repeated".into()));
            }
            if e.seq == ps + 1 && parsed.prev != pl {
                return Err(bad(
                    ps,
                    format!("entry {ps} was modified, or the link to it in entry {} (the chain is broken between them)", e.seq),
                ));
            }
        }
        if b.complete {
            if e.seq != frontier.size() {
                return Err(bad(
                    e.seq,
                    format!(
                        "entry {} is missing from a complete bundle",
                        frontier.size()
                    ),
                ));
            }
            frontier.push(leaf, |_, _, _| {});
        } else {
            let proof: Vec<Hash> = e
                .proof
                .iter()
                .map(|h| unhex(h).and_then(|v| <Hash>::try_from(v).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(e.seq, "proof hashes must be 64 hex digits".into()))?;
            merkle::verify_inclusion(e.seq, cp.size, &leaf, &proof, &cp.root).map_err(|err| {
                bad(
                    e.seq,
                    format!("inclusion proof fails: {err} (the entry was modified)"),
                )
            })?;
        }
        prev = Some((e.seq, leaf));
    }
    if b.complete {
        if frontier.size() != cp.size {
            return Err(BundleError::Entry {
                seq: frontier.size(),
                reason: format!("missing: the bundle claims all {} entries", cp.size),
            });
        }
        if frontier.root() != cp.root {
            return Err(BundleError::Checkpoint(
                "the entries do not hash to the signed root: entries were modified".into(),
            ));
        }
    }
    let attested = match &b.manifest {
        Some(m) => {
            let text = key
                .open(m)
                .map_err(|e| BundleError::Checkpoint(format!("manifest: {e}")))?;
            let leaves: Vec<Hash> = b.entries.iter().map(|e| merkle::leaf_hash(e.entry.as_bytes())).collect();
            if text != manifest_text(&cp.origin, cp.size, &b.selection, &leaves) {
                return Err(BundleError::Checkpoint(format!(
                    "the entries are not the ones the signed manifest lists for `{}`: entries were left out, added or changed",
                    b.selection
                )));
            }
            true
        }
        None if b.complete => true,
        None => {
            return Err(BundleError::Checkpoint(format!(
                "this partial bundle (`{}`) has no signed manifest, so entries could have been left out",
                b.selection
            )))
        }
    };
    Ok(BundleVerified {
        origin: cp.origin,
        tree_size: cp.size,
        entries: b.entries.len() as u64,
        complete: b.complete,
        selection: b.selection.clone(),
        selection_attested: attested,
    })
}
