//! Full verification from the stored entries alone: every entry canonical and well formed,
//! sequence numbers 0, 1, 2, ... in order, every entry linked to the hash of the one
//! before, the Merkle tree recomputed and compared with every checkpoint given (signature,
//! origin, size, root), and the derived tree index compared node by node. The first
//! problem is reported naming the entry it concerns.
//!
//! Parsing and hashing (the costly part) run on all cores over blocks of entries; the
//! order-dependent checks then run over each block in sequence.

use crate::entry::{self, Parsed, TYPE_LOG_INIT, TYPE_LOG_REPAIR};
use crate::merkle::{Frontier, Hash};
use crate::note::{hex, Checkpoint, NoteError, VerifierKey};
use crate::store::{Raw, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing to check signatures with: the result would prove nothing.
    #[error("no public key to check the checkpoints' signatures with")]
    NoKey,
    /// A checkpoint given to check against is not a checkpoint at all.
    #[error("checkpoint {label}: {reason}")]
    BadInput { label: String, reason: String },
    /// The log (or a checkpoint) is not intact. `entry` is the first bad entry when one
    /// can be named.
    #[error("{message}")]
    Tampered { entry: Option<u64>, message: String },
}

/// A checkpoint to check the log against, with a label for messages (its file name).
pub struct CheckpointInput {
    pub label: String,
    pub note: String,
}

pub struct Options<'a> {
    /// Keys to check checkpoint signatures with: a checkpoint is accepted when one of them
    /// signed it (a log may have been signed by a key since rotated). At least one.
    pub keys: &'a [VerifierKey],
    pub checkpoints: Vec<CheckpointInput>,
}

#[derive(Debug, Default)]
pub struct Verified {
    pub size: u64,
    pub root: Hash,
    pub origin: Option<String>,
    /// What was checked, one line each (for the report).
    pub checked: Vec<String>,
    pub warnings: Vec<String>,
}

fn tampered(entry: Option<u64>, message: String) -> VerifyError {
    VerifyError::Tampered { entry, message }
}

struct Item {
    position: u64,
    locator: u64,
    /// Where the entry's line ends (after its newline).
    end: u64,
    /// A `log.repair` entry's description.
    repair: Option<String>,
    parsed: Result<Parsed, entry::EntryError>,
    leaf: Hash,
    /// Entry 0's log name.
    origin: Option<String>,
}

const BLOCK: usize = 16 * 1024;

struct State<'a> {
    store: &'a dyn Store,
    frontier: Frontier,
    prev_leaf: Hash,
    origin: Option<String>,
    first_failure: Option<(u64, VerifyError)>,
    /// Sequence numbers found at each position (kept to explain ordering failures).
    seqs: Vec<u64>,
    /// Roots at the sizes checkpoints name.
    wanted_sizes: Vec<u64>,
    roots: Vec<(u64, Hash)>,
    /// The stored post-order tree, streamed for comparison.
    stored: Vec<Hash>,
    stored_from: u64,
    stored_exhausted: bool,
    compared_pos: u64,
    tree_mismatch: Option<(u64, u32, u64)>,
    /// The stored entry end offsets, streamed for comparison.
    locators: Vec<u64>,
    locators_from: u64,
    locators_exhausted: bool,
    locator_mismatch: Option<u64>,
    /// `log.repair` entries: (seq, what was repaired).
    repairs: Vec<(u64, String)>,
    /// Runs with a `run.start` and (so far) no `run.end`.
    open_runs: std::collections::BTreeMap<String, u64>,
}

impl State<'_> {
    fn fail(&mut self, position: u64, err: VerifyError) {
        if self.first_failure.is_none() {
            self.first_failure = Some((position, err));
        }
    }

    fn stored_node(&mut self, pos: u64) -> Result<Option<Hash>, StoreError> {
        if self.stored_exhausted {
            return Ok(None);
        }
        if pos >= self.stored_from + self.stored.len() as u64 {
            self.stored_from = pos;
            self.stored = self.store.stored_nodes(pos, 1 << 16)?;
            if self.stored.is_empty() {
                self.stored_exhausted = true;
                return Ok(None);
            }
        }
        Ok(Some(self.stored[(pos - self.stored_from) as usize]))
    }

    fn stored_locator(&mut self, p: u64) -> Result<Option<u64>, StoreError> {
        if self.locators_exhausted {
            return Ok(None);
        }
        if p >= self.locators_from + self.locators.len() as u64 {
            self.locators_from = p;
            self.locators = self.store.stored_locators(p, 1 << 16)?;
            if self.locators.is_empty() {
                self.locators_exhausted = true;
                return Ok(None);
            }
        }
        Ok(Some(self.locators[(p - self.locators_from) as usize]))
    }

    fn take(&mut self, item: Item) -> Result<(), StoreError> {
        let p = item.position;
        if self.locator_mismatch.is_none() {
            if let Some(end) = self.stored_locator(p)? {
                if end != item.end {
                    self.locator_mismatch = Some(p);
                }
            }
        }
        self.seqs.push(match &item.parsed {
            Ok(e) => e.seq,
            Err(_) => u64::MAX,
        });
        if self.first_failure.is_some() {
            return Ok(());
        }
        let parsed = match item.parsed {
            Ok(e) => e,
            Err(e) => {
                self.fail(
                    p,
                    tampered(
                        Some(p),
                        format!("entry {p} (byte offset {}) is damaged: {e}", item.locator),
                    ),
                );
                return Ok(());
            }
        };
        if parsed.seq != p {
            // Explained after the scan, when all sequence numbers are known.
            self.fail(p, tampered(Some(p), String::new()));
            return Ok(());
        }
        if p == 0 {
            if parsed.kind != TYPE_LOG_INIT || parsed.prev != [0; 32] {
                self.fail(
                    0,
                    tampered(
                        Some(0),
                        format!("entry 0 is not the log's {TYPE_LOG_INIT} entry"),
                    ),
                );
                return Ok(());
            }
            self.origin = item.origin.clone();
        } else if parsed.prev != self.prev_leaf {
            let (entry, msg) = self.explain_chain_break(p, &parsed);
            self.fail(p, tampered(Some(entry), msg));
            return Ok(());
        }
        if parsed.kind == TYPE_LOG_REPAIR {
            self.repairs
                .push((p, item.repair.clone().unwrap_or_default()));
        }
        match (parsed.kind.as_str(), parsed.run) {
            ("run.start", Some(run)) => {
                self.open_runs.insert(run, p);
            }
            ("run.end", Some(run)) => {
                self.open_runs.remove(&run);
            }
            _ => {}
        }
        self.prev_leaf = item.leaf;
        let mut emitted: Vec<(u32, u64, Hash)> = Vec::with_capacity(2);
        self.frontier.push(item.leaf, |level, index, h| {
            emitted.push((level, index, *h))
        });
        for (level, index, h) in emitted {
            let pos = self.compared_pos;
            self.compared_pos += 1;
            if self.tree_mismatch.is_none() {
                if let Some(stored) = self.stored_node(pos)? {
                    if stored != h {
                        self.tree_mismatch = Some((pos, level, index));
                    }
                }
            }
        }
        let size = self.frontier.size();
        if self.wanted_sizes.contains(&size) {
            self.roots.push((size, self.frontier.root()));
        }
        Ok(())
    }

    /// (first bad entry, message) for a broken link between entries p - 1 and p.
    fn explain_chain_break(&self, p: u64, parsed: &Parsed) -> (u64, String) {
        let recorded = self.store.node(0, p - 1).ok();
        let recomputed = self.prev_leaf;
        match recorded {
            Some(r) if r == parsed.prev => (
                p - 1,
                format!(
                    "entry {} was modified after it was appended: its hash is {} but entry {p} and the index recorded {}",
                    p - 1,
                    hex(&recomputed),
                    hex(&r)
                ),
            ),
            Some(r) if r == recomputed => (
                p,
                format!(
                    "entry {p} was modified: its link to entry {} was changed (the chain is broken between them)",
                    p - 1
                ),
            ),
            _ => (
                p - 1,
                format!(
                    "the chain is broken between entries {} and {p}: entry {} or the link in entry {p} was modified",
                    p - 1,
                    p - 1
                ),
            ),
        }
    }

    /// Names what is wrong when position `p` holds a different sequence number.
    fn explain_order(&self, p: u64) -> String {
        let found = self.seqs[p as usize];
        if found == u64::MAX {
            return format!("entry {p} is damaged");
        }
        if found < p && self.seqs[..p as usize].contains(&found) {
            return format!("entry {found} appears twice (again at position {p})");
        }
        if let Some(q) = self.seqs.iter().skip(p as usize + 1).position(|&s| s == p) {
            let q = p as usize + 1 + q;
            return format!(
                "entries are out of order: entry {p} is at position {q}, and position {p} holds entry {found} (reordered)"
            );
        }
        if found < p {
            return format!("position {p} holds entry {found}: entries are out of order");
        }
        let missing = found - p;
        format!(
            "entry {p} is missing: position {p} holds entry {found} ({missing} entr{} deleted)",
            if missing == 1 { "y" } else { "ies" }
        )
    }
}

/// Entries collected for parallel processing: their bytes back to back, and for each
/// (position, locator, start, end) into `data`.
#[derive(Default)]
struct Block {
    data: Vec<u8>,
    items: Vec<(u64, u64, usize, usize)>,
}

fn process(data: &[u8], items: &[(u64, u64, usize, usize)]) -> Vec<Item> {
    items
        .iter()
        .map(|&(position, locator, a, b)| {
            let bytes = &data[a..b];
            let parsed = entry::parse(bytes);
            let repair = match &parsed {
                Ok(e) if e.kind == TYPE_LOG_REPAIR => {
                    serde_json::from_slice::<serde_json::Value>(bytes)
                        .ok()
                        .and_then(|v| v["fields"]["repair"].as_str().map(str::to_string))
                }
                _ => None,
            };
            Item {
                position,
                locator,
                end: locator + bytes.len() as u64 + 1,
                repair,
                parsed,
                leaf: crate::merkle::leaf_hash(bytes),
                origin: (position == 0).then(|| entry::origin(bytes)).flatten(),
            }
        })
        .collect()
}

/// Parses and hashes a block on all available cores, keeping order.
fn process_parallel(block: &Block, threads: usize) -> Vec<Item> {
    if threads <= 1 || block.items.len() < 256 {
        return process(&block.data, &block.items);
    }
    let chunk = block.items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = block
            .items
            .chunks(chunk)
            .map(|c| s.spawn(move || process(&block.data, c)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Opens a checkpoint with whichever of `keys` signed it.
fn open_checkpoint(c: &CheckpointInput, keys: &[VerifierKey]) -> Result<Checkpoint, VerifyError> {
    if let Err(e) = Checkpoint::parse_unverified(&c.note) {
        return Err(VerifyError::BadInput {
            label: c.label.clone(),
            reason: format!("not a signed checkpoint: {e}"),
        });
    }
    let mut last = None;
    for key in keys {
        match Checkpoint::open(&c.note, key) {
            Ok(cp) => return Ok(cp),
            Err(e) => last = Some(e),
        }
    }
    let names: Vec<String> = keys.iter().map(|k| k.to_text()).collect();
    let why = match last {
        Some(NoteError::BadSignature(_)) => {
            "its signature does not verify: it was forged or altered".to_string()
        }
        _ => format!("it is not signed by {}", names.join(" or ")),
    };
    Err(tampered(None, format!("checkpoint {}: {why}", c.label)))
}

pub fn verify(store: &dyn Store, opts: &Options<'_>) -> Result<Verified, VerifyError> {
    if opts.keys.is_empty() {
        return Err(VerifyError::NoKey);
    }
    // Open the checkpoints first: a forged one fails before any work.
    let mut cps: Vec<(String, Checkpoint)> = Vec::new();
    let mut warnings = Vec::new();
    for c in &opts.checkpoints {
        cps.push((c.label.clone(), open_checkpoint(c, opts.keys)?));
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let mut st = State {
        store,
        frontier: Frontier::new(),
        prev_leaf: [0; 32],
        origin: None,
        first_failure: None,
        seqs: Vec::new(),
        wanted_sizes: cps.iter().map(|(_, c)| c.size).collect(),
        roots: Vec::new(),
        stored: Vec::new(),
        stored_from: 0,
        stored_exhausted: false,
        compared_pos: 0,
        tree_mismatch: None,
        locators: Vec::new(),
        locators_from: 0,
        locators_exhausted: false,
        locator_mismatch: None,
        repairs: Vec::new(),
        open_runs: Default::default(),
    };
    let mut block = Block::default();
    let flush = |block: &mut Block, st: &mut State| -> Result<(), StoreError> {
        for item in process_parallel(block, threads) {
            st.take(item)?;
        }
        block.data.clear();
        block.items.clear();
        Ok(())
    };
    let end = store.scan(&mut |raw: Raw<'_>| {
        let start = block.data.len();
        block.data.extend_from_slice(raw.bytes);
        block
            .items
            .push((raw.position, raw.locator, start, block.data.len()));
        if block.items.len() == BLOCK {
            flush(&mut block, &mut st)?;
        }
        Ok(())
    })?;
    flush(&mut block, &mut st)?;
    let size = st.seqs.len() as u64;
    if let Some((p, err)) = st.first_failure.take() {
        let err = match err {
            VerifyError::Tampered { entry, message } if message.is_empty() => {
                tampered(entry, st.explain_order(p))
            }
            // An entry whose hash differs from the index before the chain breaks is the
            // one that was changed (its successor's link was changed to match).
            VerifyError::Tampered { entry: Some(e), .. } if matches!(st.tree_mismatch, Some((_, 0, i)) if i < e) =>
            {
                let i = st.tree_mismatch.map(|(_, _, i)| i).unwrap_or(e);
                tampered(
                    Some(i),
                    format!(
                        "entry {i} was modified after it was appended (it no longer matches the hash recorded in the index), and the links after it were changed to match"
                    ),
                )
            }
            other => other,
        };
        return Err(err);
    }
    let mut checked = vec![if size == 0 {
        "the log is empty".to_string()
    } else {
        format!(
            "{size} entries: canonical, numbered 0..{} in order, each linked to the hash of the one before",
            size - 1
        )
    }];
    if end.torn_tail_bytes > 0 {
        warnings.push(format!(
            "{} bytes of an incomplete entry at the end (an append cut short; never acknowledged; the next append removes them)",
            end.torn_tail_bytes
        ));
    }
    if cps.is_empty() && size > 0 {
        return Err(tampered(
            None,
            "there is no signed checkpoint to check the entries against (the .checkpoint file is missing or empty), so a rewritten log cannot be told from the real one: give a checkpoint saved elsewhere with --checkpoint".into(),
        ));
    }
    for (seq, what) in &st.repairs {
        warnings.push(format!(
            "entry {seq}: the log was repaired before an append: {what}"
        ));
    }
    if !st.open_runs.is_empty() {
        let first: Vec<String> = st
            .open_runs
            .iter()
            .take(5)
            .map(|(run, seq)| format!("{run} (entry {seq})"))
            .collect();
        warnings.push(format!(
            "{} run(s) started but have no run.end (still running, or their supervisor was killed): {}{}",
            st.open_runs.len(),
            first.join(", "),
            if st.open_runs.len() > 5 { ", ..." } else { "" }
        ));
    }
    let root = st.frontier.root();
    let mut covered = 0;
    for (label, cp) in &cps {
        if cp.size > size && size == 0 {
            return Err(tampered(
                Some(0),
                format!("the log is empty, but checkpoint {label} covers {} entries: they were all removed", cp.size),
            ));
        }
        if st.origin.as_deref() != Some(cp.origin.as_str()) {
            return Err(tampered(
                None,
                format!(
                    "checkpoint {label} is for log `{}`, but this log is `{}`",
                    cp.origin,
                    st.origin.as_deref().unwrap_or("?")
                ),
            ));
        }
        if cp.size > size {
            return Err(tampered(
                Some(size),
                format!(
                    "the log was truncated: checkpoint {label} covers {} entries but the log has {size}; entries {size}..{} are missing",
                    cp.size,
                    cp.size - 1
                ),
            ));
        }
        let at = st
            .roots
            .iter()
            .find(|(s, _)| *s == cp.size)
            .map(|(_, r)| *r);
        let at = if cp.size == 0 {
            Some(crate::merkle::empty_root())
        } else {
            at
        };
        if at != Some(cp.root) {
            let first = match st.tree_mismatch {
                Some((_, 0, i)) if i < cp.size => Some(i),
                _ => None,
            };
            return Err(tampered(
                first,
                format!(
                    "checkpoint {label} (signed, {} entries) does not match the log: entries before {} were modified or rewritten{}",
                    cp.size,
                    cp.size,
                    first_changed_hint(&st)
                ),
            ));
        }
        covered = covered.max(cp.size);
        checked.push(format!(
            "checkpoint {label}: signature, origin and root of the first {} entries match",
            cp.size
        ));
    }
    if covered < size {
        warnings.push(format!(
            "entries {covered}..{} are not covered by a signed checkpoint yet (appended since the last one): their removal or change could not be detected",
            size - 1
        ));
    }
    if let Some((pos, level, index)) = st.tree_mismatch {
        let what = if level == 0 {
            format!(
                "entry {index} does not match the hash recorded in the index when it was appended (the entry or the index was modified)"
            )
        } else {
            format!(
                "the tree index ({}.tree) is corrupt at node {pos} (entries {}..{}); the entries themselves are intact. Remove the .idx and .tree files: the next append rebuilds them",
                store.name(),
                index << level,
                ((index + 1) << level) - 1
            )
        };
        return Err(tampered((level == 0).then_some(index), what));
    }
    // Index records past the end of the log (other than the zeros a power failure can
    // leave): the index describes entries that are not there.
    if st.locator_mismatch.is_none()
        && store
            .stored_locators(size, 1)?
            .first()
            .is_some_and(|&end| end != 0)
    {
        st.locator_mismatch = Some(size);
    }
    if let Some(p) = st.locator_mismatch {
        return Err(tampered(
            None,
            format!(
                "the index ({}.idx) does not point at entry {p} where it is: `show` and `tail` would show other entries. The entries themselves are intact; remove the .idx and .tree files and the next append rebuilds them",
                store.name()
            ),
        ));
    }
    Ok(Verified {
        size,
        root,
        origin: st.origin.clone(),
        checked,
        warnings,
    })
}

fn first_changed_hint(st: &State<'_>) -> String {
    match st.tree_mismatch {
        Some((_, 0, i)) => format!("; the first entry that differs from the index is {i}"),
        _ => "; the index was rewritten too, so the first changed entry cannot be named".into(),
    }
}
