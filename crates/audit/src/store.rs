//! Where entries live. The log logic (sequencing, chaining, hashing, signing, proofs,
//! verification) is written against the small [`Store`] trait; this module has the embedded
//! default, a set of plain files, and an in-memory store. The execution service can put
//! the same log in PostgreSQL by implementing the trait (append = one transaction holding
//! a row lock on the head).
//!
//! # The file store
//! `audit.log` holds the entries, one canonical JSON object per line. It is the only
//! source of truth: `verify` reads nothing else. Next to it:
//! - `audit.log.idx`: the end offset of every entry (u64 LE), for `show` and `tail`;
//! - `audit.log.tree`: every complete subtree hash in post-order (the order in which an
//!   append completes them), so any proof is O(log² n) reads;
//! - `audit.log.checkpoint`: the latest signed tree heads, in two 4 KiB slots written in
//!   turn (so a torn write never loses the previous one); readers take the newer.
//!
//! Both index files are derived: each append re-checks them against the log under the
//! lock and rebuilds what a crash left missing. An append holds an exclusive `flock` on
//! `audit.log`, so concurrent writers (many `ironcage run`s) are serialised: each sees the
//! head the previous one left, and entries never interleave. The entries are written with
//! one `write` and `fdatasync`ed before the append returns; a writer killed mid-write
//! leaves at most one incomplete line at the end, which the next append removes and
//! reports.

use crate::fsutil;
use crate::merkle::{self, Frontier, Hash, Nodes};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("audit log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("audit log {}: entry {seq}: {reason} (run `ironcage audit verify`)", path.display())]
    Corrupt {
        path: PathBuf,
        seq: u64,
        reason: String,
    },
    #[error("audit log {}: entry {seq} does not exist (the log has {size} entries)", path.display())]
    NoSuchEntry { path: PathBuf, seq: u64, size: u64 },
    #[error("audit log {}: {msg}", path.display())]
    Other { msg: String, path: PathBuf },
    #[error("{0}")]
    Build(String),
}

/// The state an append starts from.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    /// The leaf hash of entry `size - 1`, which the next entry links to.
    pub last_leaf: Option<Hash>,
    /// Entry 0 (which names the log), when there is one.
    pub first: Option<Vec<u8>>,
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
    /// Builds the entries that follow `head`.
    fn entries(&mut self, head: &Head) -> Result<Batch, StoreError>;
    /// After the entries are durable: a signed checkpoint of the new tree, if any.
    fn seal(&mut self, size: u64, root: &Hash) -> Option<String>;
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

pub trait Store {
    /// A human name for messages (the file path).
    fn name(&self) -> String;
    /// Appends atomically with respect to every other writer; returns the new head and root.
    fn append(&mut self, app: &mut dyn Appender) -> Result<(Head, Hash), StoreError>;
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
    fn checkpoint(&self) -> Result<Option<String>, StoreError>;
    /// Stores a checkpoint unless a newer one (larger tree) is already stored.
    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError>;
    /// Repairs done when the store was opened or last appended to (to tell the user).
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

/// Number of tree nodes stored for `n` leaves (post-order of all complete subtrees).
pub fn node_count(n: u64) -> u64 {
    2 * n - n.count_ones() as u64
}

/// Position of complete subtree (level, index) in post-order.
pub fn node_pos(level: u32, index: u64) -> u64 {
    let last_leaf = ((index + 1) << level) - 1;
    node_count(last_leaf) + level as u64
}

/// The (level, index) stored at post-order position `pos` (inverse of [`node_pos`]).
pub fn pos_node(pos: u64) -> (u32, u64) {
    // The leaf count n whose nodes end just after pos: node_count(n-1) <= pos < node_count(n).
    let (mut lo, mut hi) = (0u64, pos + 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if node_count(mid) <= pos {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    // Leaf `lo` sits at node_count(lo); the nodes after it are its completed parents.
    let level = (pos - node_count(lo)) as u32;
    (level, ((lo + 1) >> level) - 1)
}

// ---------------------------------------------------------------------------------------

pub struct FileStore {
    path: PathBuf,
    log: File,
    idx: Option<File>,
    tree: Option<File>,
    writable: bool,
    repairs: Vec<String>,
}

fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".");
    p.push(ext);
    PathBuf::from(p)
}

/// Bytes per checkpoint slot in `audit.log.checkpoint` (two slots, the newer one wins).
const CHECKPOINT_SLOT: usize = 4096;

/// Holds an flock until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl FileStore {
    /// Opens (creating if needed) a log for appending: the directory is created, files are
    /// never opened through a symlink, and the derived files are reconciled with the log.
    pub fn open_append(path: &Path) -> Result<FileStore, StoreError> {
        let err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(err)?;
            }
        }
        let mut log = fsutil::open_rw_create(path, 0o600).map_err(err)?;
        let mut repairs = Vec::new();
        if let Some(moved) = move_legacy_log(path, &log).map_err(err)? {
            repairs.push(format!(
                "it held records in the plain JSON-lines format of earlier ironcage versions (no integrity protection); moved them to {} and started a tamper-evident log",
                moved.display()
            ));
            log = fsutil::open_rw_create(path, 0o600).map_err(err)?;
        }
        let idx = fsutil::open_rw_create(&sidecar(path, "idx"), 0o600).map_err(err)?;
        let tree = fsutil::open_rw_create(&sidecar(path, "tree"), 0o600).map_err(err)?;
        let mut s = FileStore {
            path: path.to_path_buf(),
            log,
            idx: Some(idx),
            tree: Some(tree),
            writable: true,
            repairs,
        };
        s.log.lock().map_err(|e| s.io(e))?;
        let r = s.reconcile();
        let _ = s.log.unlock();
        r?;
        Ok(s)
    }

    /// Opens an existing log read-only (an auditor's copy, or a log one may not write).
    /// Derived files are used when present and consistent, and never modified.
    pub fn open_read(path: &Path) -> Result<FileStore, StoreError> {
        let log = fsutil::open_read(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let idx = fsutil::open_read(&sidecar(path, "idx")).ok();
        let tree = fsutil::open_read(&sidecar(path, "tree")).ok();
        Ok(FileStore {
            path: path.to_path_buf(),
            log,
            idx,
            tree,
            writable: false,
            repairs: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self, exclusive: bool) -> Result<Locked<'_>, StoreError> {
        let r = if exclusive {
            self.log.lock()
        } else {
            self.log.lock_shared()
        };
        r.map_err(|e| self.io(e))?;
        Ok(Locked(&self.log))
    }

    fn len(f: &File) -> io::Result<u64> {
        Ok(f.metadata()?.len())
    }

    fn read_u64(f: &File, i: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, i * 8)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_hash(f: &File, pos: u64) -> io::Result<Hash> {
        let mut h = [0u8; 32];
        f.read_exact_at(&mut h, pos * 32)?;
        Ok(h)
    }

    /// Entries covered by the index files, as far as they agree with each other and with
    /// the log's length (derived files may lag the log after a crash, or be missing).
    fn indexed(&self, log_len: u64) -> io::Result<u64> {
        let (Some(idx), Some(tree)) = (&self.idx, &self.tree) else {
            return Ok(0);
        };
        let mut k = Self::len(idx)? / 8;
        let tree_nodes = Self::len(tree)? / 32;
        while k > 0 && node_count(k) > tree_nodes {
            k -= 1;
        }
        while k > 0 && Self::read_u64(idx, k - 1)? > log_len {
            k -= 1;
        }
        Ok(k)
    }

    fn end_of(&self, k: u64) -> io::Result<u64> {
        match (k, &self.idx) {
            (0, _) => Ok(0),
            (_, Some(idx)) => Self::read_u64(idx, k - 1),
            (_, None) => Err(io::Error::other("no index file")),
        }
    }

    /// Brings the derived files in line with the log (exclusive lock held): removes a
    /// torn tail, drops index records the log does not back, indexes entries a killed
    /// writer appended but did not index, and rebuilds everything if the last indexed
    /// entry does not hash to the recorded leaf.
    fn reconcile(&mut self) -> Result<(u64, u64), StoreError> {
        let log_len = Self::len(&self.log).map_err(|e| self.io(e))?;
        let log_len = self.repair_torn_tail(log_len)?;
        let mut k = self.indexed(log_len).map_err(|e| self.io(e))?;
        if k > 0 {
            let start = self.end_of(k - 1).map_err(|e| self.io(e))?;
            let end = self.end_of(k).map_err(|e| self.io(e))?;
            let ok = end > start && end <= log_len && {
                let mut line = vec![0u8; (end - start) as usize];
                self.log
                    .read_exact_at(&mut line, start)
                    .map_err(|e| self.io(e))?;
                line.last() == Some(&b'\n')
                    && merkle::leaf_hash(&line[..line.len() - 1])
                        == Self::read_hash(self.tree.as_ref().unwrap(), node_pos(0, k - 1))
                            .map_err(|e| self.io(e))?
            };
            if !ok {
                self.repairs.push(format!(
                    "the index files did not match the log at entry {}; rebuilt them from the log",
                    k - 1
                ));
                k = 0;
            }
        }
        let indexed_end = self.end_of(k).map_err(|e| self.io(e))?;
        let idx = self.idx.as_ref().unwrap();
        let tree = self.tree.as_ref().unwrap();
        idx.set_len(k * 8).map_err(|e| self.io(e))?;
        tree.set_len(node_count(k) * 32).map_err(|e| self.io(e))?;
        if indexed_end < log_len {
            let n = self.index_tail(k, indexed_end, log_len)?;
            if k > 0 || n > 0 {
                // Not worth a message when the whole index was simply (re)built.
                if k > 0 {
                    self.repairs.push(format!(
                        "indexed {n} entries a killed writer appended but did not index"
                    ));
                }
            }
            k += n;
        }
        Ok((k, log_len))
    }

    fn repair_torn_tail(&mut self, log_len: u64) -> Result<u64, StoreError> {
        if log_len == 0 {
            return Ok(0);
        }
        let mut last = [0u8; 1];
        self.log
            .read_exact_at(&mut last, log_len - 1)
            .map_err(|e| self.io(e))?;
        if last[0] == b'\n' {
            return Ok(log_len);
        }
        let keep = self.last_newline_end(log_len).map_err(|e| self.io(e))?;
        let removed = log_len - keep;
        self.log.set_len(keep).map_err(|e| self.io(e))?;
        self.log.sync_data().map_err(|e| self.io(e))?;
        self.repairs.push(format!(
            "removed a torn entry at the end ({removed} bytes without a final newline: a writer was killed or the machine stopped mid-append; it was never acknowledged)"
        ));
        Ok(keep)
    }

    /// Offset just past the last '\n' at or before `len` (0 if none).
    fn last_newline_end(&self, len: u64) -> io::Result<u64> {
        let mut end = len;
        let mut buf = vec![0u8; 64 * 1024];
        while end > 0 {
            let start = end.saturating_sub(buf.len() as u64);
            let chunk = &mut buf[..(end - start) as usize];
            self.log.read_exact_at(chunk, start)?;
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                return Ok(start + i as u64 + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// Indexes the complete lines in `from..to` as entries `k..`. They must continue the
    /// chain; anything else is not a crash artefact but tampering, and is refused.
    fn index_tail(&mut self, k: u64, from: u64, to: u64) -> Result<u64, StoreError> {
        let mut data = vec![0u8; (to - from) as usize];
        self.log
            .read_exact_at(&mut data, from)
            .map_err(|e| self.io(e))?;
        let tree = self.tree.as_ref().unwrap();
        let nodes = FileNodes(tree);
        let mut frontier = Frontier::from_nodes(&nodes, k).map_err(|e| self.io(e))?;
        let mut last_leaf = if k > 0 {
            Some(Self::read_hash(tree, node_pos(0, k - 1)).map_err(|e| self.io(e))?)
        } else {
            None
        };
        let mut ends = Vec::new();
        let mut new_nodes = Vec::new();
        let mut pos = 0usize;
        let mut seq = k;
        while pos < data.len() {
            let nl = data[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| pos + i)
                .unwrap_or(data.len());
            let line = &data[pos..nl];
            let parsed = crate::entry::parse(line).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                seq,
                reason: e.to_string(),
            })?;
            let want_prev = last_leaf.unwrap_or([0; 32]);
            if parsed.seq != seq || parsed.prev != want_prev {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    seq,
                    reason: format!(
                        "found sequence number {} linked to {}, expected {seq} linked to {}",
                        parsed.seq,
                        crate::note::hex(&parsed.prev),
                        crate::note::hex(&want_prev)
                    ),
                });
            }
            let leaf = merkle::leaf_hash(line);
            frontier.push(leaf, |_, _, h| new_nodes.extend_from_slice(h));
            last_leaf = Some(leaf);
            pos = nl + 1;
            ends.extend_from_slice(&(from + pos as u64).to_le_bytes());
            seq += 1;
        }
        let idx = self.idx.as_ref().unwrap();
        idx.write_all_at(&ends, k * 8).map_err(|e| self.io(e))?;
        tree.write_all_at(&new_nodes, node_count(k) * 32)
            .map_err(|e| self.io(e))?;
        Ok(seq - k)
    }

    fn checkpoint_path(&self) -> PathBuf {
        sidecar(&self.path, "checkpoint")
    }
}

/// A log written by ironcage before the tamper-evident format (one `{"version","kind",
/// "detail",...}` object per line) is moved aside to `<path>.legacy-<unix time>` so the
/// new log can start; its records are kept, not converted (they never had integrity).
fn move_legacy_log(path: &Path, log: &File) -> io::Result<Option<PathBuf>> {
    let mut first = vec![0u8; 64 * 1024];
    let n = log.read_at(&mut first, 0)?;
    let line = first[..n].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let legacy = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|o| {
            o.contains_key("kind") && o.contains_key("detail") && !o.contains_key("seq")
        });
    if !legacy {
        return Ok(None);
    }
    log.lock()?;
    let secs = crate::entry::now_unix_ms() / 1000;
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".legacy-{secs}"));
    let to = PathBuf::from(to);
    let r = std::fs::rename(path, &to);
    let _ = log.unlock();
    r.map(|()| Some(to))
}

struct FileNodes<'a>(&'a File);

impl Nodes for FileNodes<'_> {
    fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        FileStore::read_hash(self.0, node_pos(level, index))
    }
}

impl Store for FileStore {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn append(&mut self, app: &mut dyn Appender) -> Result<(Head, Hash), StoreError> {
        if !self.writable {
            return Err(StoreError::Other {
                msg: "opened read-only".into(),
                path: self.path.clone(),
            });
        }
        self.log.lock().map_err(|e| self.io(e))?;
        let result = self.append_locked(app);
        let _ = self.log.unlock();
        result
    }

    fn size(&self) -> Result<u64, StoreError> {
        let _l = self.lock(false)?;
        let log_len = Self::len(&self.log).map_err(|e| self.io(e))?;
        self.indexed(log_len).map_err(|e| self.io(e))
    }

    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let size = self.size()?;
        if to > size {
            return Err(StoreError::NoSuchEntry {
                path: self.path.clone(),
                seq: to - 1,
                size,
            });
        }
        // In chunks of about 4 MiB, so exporting a huge log does not need it all in memory.
        let mut seq = from;
        while seq < to {
            let start = self.end_of(seq).map_err(|e| self.io(e))?;
            let mut chunk_to = seq + 1;
            while chunk_to < to
                && self.end_of(chunk_to).map_err(|e| self.io(e))? - start < (4 << 20)
            {
                chunk_to = (chunk_to + 1024).min(to);
            }
            let end = self.end_of(chunk_to).map_err(|e| self.io(e))?;
            let mut data = vec![0u8; (end - start) as usize];
            self.log
                .read_exact_at(&mut data, start)
                .map_err(|e| self.io(e))?;
            // The chunk's end offsets in one read.
            let mut ends = vec![0u8; ((chunk_to - seq) * 8) as usize];
            if let Some(idx) = &self.idx {
                idx.read_exact_at(&mut ends, seq * 8)
                    .map_err(|e| self.io(e))?;
            }
            let mut pos = 0usize;
            for (s, raw_end) in (seq..chunk_to).zip(ends.chunks_exact(8)) {
                let end_s = u64::from_le_bytes(raw_end.try_into().unwrap_or([0; 8]));
                let e = end_s.saturating_sub(start) as usize;
                if e == 0 || e > data.len() || data[e - 1] != b'\n' || e <= pos {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        seq: s,
                        reason: "the index does not point at a whole line".into(),
                    });
                }
                visit(s, &data[pos..e - 1])?;
                pos = e;
            }
            seq = chunk_to;
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        let tree = self.tree.as_ref().ok_or_else(|| StoreError::Other {
            msg: "no tree file (run an append to build it)".into(),
            path: self.path.clone(),
        })?;
        Self::read_hash(tree, node_pos(level, index)).map_err(|e| self.io(e))
    }

    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanEnd, StoreError> {
        let _l = self.lock(false)?;
        let mut f = &self.log;
        let mut buf = vec![0u8; 8 << 20];
        let mut have = 0usize;
        let mut offset = 0u64; // file offset of buf[0]
        let mut position = 0u64;
        loop {
            let n = f.read(&mut buf[have..]).map_err(|e| self.io(e))?;
            if n == 0 {
                break;
            }
            have += n;
            let mut start = 0usize;
            while let Some(i) = buf[start..have].iter().position(|&b| b == b'\n') {
                visit(Raw {
                    position,
                    locator: offset + start as u64,
                    bytes: &buf[start..start + i],
                })?;
                position += 1;
                start += i + 1;
            }
            buf.copy_within(start..have, 0);
            offset += start as u64;
            have -= start;
            if have == buf.len() {
                // A "line" longer than the buffer: grow it (a corrupt log may have no newlines).
                buf.resize(buf.len() * 2, 0);
            }
        }
        Ok(ScanEnd {
            torn_tail_bytes: have as u64,
        })
    }

    fn stored_nodes(&self, from: u64, max: usize) -> Result<Vec<Hash>, StoreError> {
        let Some(tree) = &self.tree else {
            return Ok(Vec::new());
        };
        let total = Self::len(tree).map_err(|e| self.io(e))? / 32;
        let n = total.saturating_sub(from).min(max as u64) as usize;
        let mut buf = vec![0u8; n * 32];
        tree.read_exact_at(&mut buf, from * 32)
            .map_err(|e| self.io(e))?;
        Ok(buf
            .chunks_exact(32)
            .map(|c| <Hash>::try_from(c).unwrap())
            .collect())
    }

    fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        let _l = self.lock(false)?;
        Ok(self
            .checkpoint_slots()?
            .into_iter()
            .flatten()
            .max_by_key(|(size, _)| *size)
            .map(|(_, note)| note))
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        let _l = self.lock(true)?;
        self.write_checkpoint_locked(size, note)
    }

    fn take_repairs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.repairs)
    }
}

impl FileStore {
    fn append_locked(&mut self, app: &mut dyn Appender) -> Result<(Head, Hash), StoreError> {
        let (size, log_len) = self.reconcile()?;
        let tree = self.tree.as_ref().unwrap();
        let first = if size > 0 {
            let end = self.end_of(1).map_err(|e| self.io(e))?;
            let mut b = vec![0u8; end as usize];
            self.log.read_exact_at(&mut b, 0).map_err(|e| self.io(e))?;
            b.pop();
            Some(b)
        } else {
            None
        };
        let head = Head {
            size,
            last_leaf: if size > 0 {
                Some(Self::read_hash(tree, node_pos(0, size - 1)).map_err(|e| self.io(e))?)
            } else {
                None
            },
            first,
        };
        let batch = app.entries(&head)?;
        if batch.leaves.is_empty() {
            let root = merkle::root(&FileNodes(tree), size).map_err(|e| self.io(e))?;
            return Ok((head, root));
        }
        // The entries first, durably; only then the derived files and the checkpoint.
        if let Err(e) = self
            .log
            .write_all_at(&batch.bytes, log_len)
            .and_then(|()| self.log.sync_data())
        {
            // Leave no partial entry behind (the disk may be full).
            let _ = self.log.set_len(log_len);
            return Err(self.io(e));
        }
        if size == 0 {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = fsutil::sync_dir(dir);
            }
        }
        let mut ends = Vec::with_capacity(batch.ends.len() * 8);
        for e in &batch.ends {
            ends.extend_from_slice(&(log_len + *e as u64).to_le_bytes());
        }
        let mut frontier = Frontier::from_nodes(&FileNodes(tree), size).map_err(|e| self.io(e))?;
        let mut new_nodes = Vec::with_capacity(batch.leaves.len() * 64);
        for leaf in &batch.leaves {
            frontier.push(*leaf, |_, _, h| new_nodes.extend_from_slice(h));
        }
        let idx = self.idx.as_ref().unwrap();
        idx.write_all_at(&ends, size * 8).map_err(|e| self.io(e))?;
        tree.write_all_at(&new_nodes, node_count(size) * 32)
            .map_err(|e| self.io(e))?;
        let new_size = size + batch.leaves.len() as u64;
        let root = frontier.root();
        if let Some(note) = app.seal(new_size, &root) {
            self.write_checkpoint_locked(new_size, &note)?;
        }
        Ok((
            Head {
                size: new_size,
                last_leaf: batch.leaves.last().copied(),
                first: None,
            },
            root,
        ))
    }

    /// The two checkpoint slots: (tree size, note) for each that holds a well-formed one.
    fn checkpoint_slots(&self) -> Result<[Option<(u64, String)>; 2], StoreError> {
        let data = match fsutil::read_nofollow(&self.checkpoint_path()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok([None, None]),
            Err(e) => return Err(self.io(e)),
        };
        let slot = |i: usize| -> Option<(u64, String)> {
            let start = i * CHECKPOINT_SLOT;
            let raw = data.get(start..data.len().min(start + CHECKPOINT_SLOT))?;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let note = std::str::from_utf8(&raw[..end]).ok()?;
            let (body, sigs) = note.split_once("\n\n")?;
            // Whole notes only: a torn write leaves a malformed one, which is skipped.
            if !sigs.ends_with('\n') || !sigs.lines().all(|l| l.starts_with('\u{2014}')) {
                return None;
            }
            let cp = crate::note::Checkpoint::parse_body(body).ok()?;
            Some((cp.size, note.to_string()))
        };
        Ok([slot(0), slot(1)])
    }

    /// Writes a checkpoint in place, into the slot that does not hold the newest one, so
    /// a write cut short by a crash never destroys the last good checkpoint. (Replacing a
    /// file by rename costs ~160 µs on ext4, which flushes the new file's data first.)
    fn write_checkpoint_locked(&self, size: u64, note: &str) -> Result<(), StoreError> {
        if note.len() >= CHECKPOINT_SLOT {
            return Err(StoreError::Build(
                "checkpoint larger than its 4 KiB slot".into(),
            ));
        }
        let slots = self.checkpoint_slots()?;
        let sizes = slots.each_ref().map(|s| s.as_ref().map(|(n, _)| *n));
        // Never replace a checkpoint of a larger tree (a slower writer finishing late).
        if sizes.iter().flatten().any(|&n| n > size) {
            return Ok(());
        }
        let target = match sizes {
            [None, _] => 0,
            [_, None] => 1,
            [Some(a), Some(b)] => usize::from(a > b),
        };
        let f = fsutil::open_rw_create(&self.checkpoint_path(), 0o644).map_err(|e| self.io(e))?;
        let mut buf = note.as_bytes().to_vec();
        buf.push(0);
        f.write_all_at(&buf, (target * CHECKPOINT_SLOT) as u64)
            .map_err(|e| self.io(e))
    }
}

// ---------------------------------------------------------------------------------------

/// Everything in memory: for tests, and the reference for other stores.
#[derive(Default)]
pub struct MemStore {
    pub entries: Vec<Vec<u8>>,
    tree: merkle::MemTree,
    post_order: Vec<Hash>,
    checkpoint: Option<(u64, String)>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl Store for MemStore {
    fn name(&self) -> String {
        "memory".into()
    }

    fn append(&mut self, app: &mut dyn Appender) -> Result<(Head, Hash), StoreError> {
        let head = Head {
            size: self.entries.len() as u64,
            last_leaf: self.entries.last().map(|e| merkle::leaf_hash(e)),
            first: self.entries.first().cloned(),
        };
        let batch = app.entries(&head)?;
        let mut start = 0;
        for (end, leaf) in batch.ends.iter().zip(&batch.leaves) {
            self.entries.push(batch.bytes[start..end - 1].to_vec());
            self.tree.push(*leaf);
            let before = self.post_order.len() as u64;
            let want = node_count(self.entries.len() as u64);
            for pos in before..want {
                let (level, index) = pos_node(pos);
                self.post_order.push(self.tree.node(level, index).unwrap());
            }
            start = *end;
        }
        let size = self.entries.len() as u64;
        let root = self.tree.root();
        if !batch.leaves.is_empty() {
            if let Some(note) = app.seal(size, &root) {
                self.checkpoint = Some((size, note));
            }
        }
        Ok((
            Head {
                size,
                last_leaf: batch.leaves.last().copied().or(head.last_leaf),
                first: None,
            },
            root,
        ))
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len() as u64)
    }

    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError> {
        for s in from..to {
            let e = self
                .entries
                .get(s as usize)
                .ok_or(StoreError::NoSuchEntry {
                    path: "memory".into(),
                    seq: s,
                    size: self.entries.len() as u64,
                })?;
            visit(s, e)?;
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.tree.node(level, index).map_err(|e| StoreError::Other {
            msg: e.to_string(),
            path: "memory".into(),
        })
    }

    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanEnd, StoreError> {
        for (i, e) in self.entries.iter().enumerate() {
            visit(Raw {
                position: i as u64,
                locator: i as u64,
                bytes: e,
            })?;
        }
        Ok(ScanEnd::default())
    }

    fn stored_nodes(&self, from: u64, max: usize) -> Result<Vec<Hash>, StoreError> {
        let from = (from as usize).min(self.post_order.len());
        let to = (from + max).min(self.post_order.len());
        Ok(self.post_order[from..to].to_vec())
    }

    fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(self.checkpoint.as_ref().map(|(_, n)| n.clone()))
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        if self.checkpoint.as_ref().is_none_or(|(s, _)| *s <= size) {
            self.checkpoint = Some((size, note.to_string()));
        }
        Ok(())
    }

    fn take_repairs(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_order_positions() {
        // Leaves 0,1 then their parent; leaf 2, leaf 3, parent (1,1), parent (2,0); leaf 4.
        assert_eq!(node_pos(0, 0), 0);
        assert_eq!(node_pos(0, 1), 1);
        assert_eq!(node_pos(1, 0), 2);
        assert_eq!(node_pos(0, 2), 3);
        assert_eq!(node_pos(0, 3), 4);
        assert_eq!(node_pos(1, 1), 5);
        assert_eq!(node_pos(2, 0), 6);
        assert_eq!(node_pos(0, 4), 7);
        assert_eq!(node_count(4), 7);
        // Frontier::push emits nodes in exactly this order.
        let mut order = Vec::new();
        let mut f = Frontier::new();
        for i in 0..64u64 {
            f.push([i as u8; 32], |level, index, _| {
                order.push(node_pos(level, index))
            });
        }
        assert_eq!(order, (0..node_count(64)).collect::<Vec<_>>());
        for pos in 0..node_count(300) {
            let (level, index) = pos_node(pos);
            assert_eq!(node_pos(level, index), pos, "{pos} -> ({level},{index})");
        }
    }
}
