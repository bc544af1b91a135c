//! The embedded default store: plain files, no server.
//!
//! `audit.log` holds the entries, one canonical JSON object per line. It is the only source
//! of truth: `verify` reads nothing else. Next to it:
//! - `audit.log.idx`: the end offset of every entry (u64 LE), for `show` and `tail`;
//! - `audit.log.tree`: every complete subtree hash in post-order, so any proof is
//!   O(log² n) reads;
//! - `audit.log.checkpoint`: the latest signed tree heads, in two 4 KiB slots written in
//!   turn (so a torn write never loses the previous one).
//!
//! An append holds an exclusive `flock` on `audit.log`. Under it, the derived files are
//! checked against the log (`reconcile`): the traces of a crash (a torn last line, entries
//! durable but not indexed, index files missing) are repaired and the repairs recorded in
//! the log; anything else (the log shorter than its index, an indexed entry changed, a
//! broken chain) is refused as tampering. Before signing, the new tree is built on the
//! last checkpoint signed by the same key, checked against its root, and on the entries
//! since, re-read and re-hashed from the log (`trusted_frontier`): an honest append never
//! signs a history someone rewrote. The entries are written with one `write` and
//! `fdatasync`ed before the append returns; disk blocks for the next appends are reserved
//! ahead (`fallocate`), so a sandbox that fills the disk cannot stop its run's end from
//! being recorded.

use super::layout::{leaves_for_nodes, node_count, node_pos};
use super::{Appender, Done, EntryVisit, Head, Raw, ScanEnd, Store, StoreError, Visit};
use crate::entry::{self, TYPE_LOG_INIT};
use crate::fsutil;
use crate::merkle::{self, Frontier, Hash, MemTree, Nodes};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes per checkpoint slot in `audit.log.checkpoint`.
const CHECKPOINT_SLOT: usize = 4096;
/// Disk space kept reserved past the end of the log.
const RESERVE: u64 = 1 << 20;
/// No entry line is longer than this.
const MAX_LINE: usize = 256 << 20;

/// Where entries end and the tree nodes, read from the index files or, when those are
/// missing or behind (a read-only copy, a crash not yet repaired), built in memory.
enum Index {
    Files { idx: File, tree: File },
    Memory { ends: Vec<u64>, tree: MemTree },
}

pub struct FileStore {
    path: PathBuf,
    log: File,
    /// The checkpoint file, opened with the log so a log moved aside mid-append keeps
    /// its own checkpoints (None: a read-only copy without one).
    checkpoint: Option<File>,
    index: Index,
    /// The index files as found, for `verify` to compare (also when `index` is in memory).
    files: Option<(File, File)>,
    writable: bool,
    repairs: Vec<String>,
}

fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".");
    p.push(ext);
    PathBuf::from(p)
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

fn len(f: &File) -> io::Result<u64> {
    Ok(f.metadata()?.len())
}

struct FileNodes<'a>(&'a File);

impl Nodes for FileNodes<'_> {
    fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        read_hash(self.0, node_pos(level, index))
    }
}

/// How far index files can be trusted: records present in both, without a partial or
/// all-zero tail (pages a power failure left unwritten), as (entries, tree nodes).
fn usable_records(idx: &File, tree: &File, log_len: u64) -> io::Result<u64> {
    // Every entry takes at least two bytes of the log, so no index of a log this long
    // has more records than this, however large someone made the files.
    let most = log_len / 2;
    let k = without_zero_tail(idx, 8, most)?;
    let t = without_zero_tail(tree, 32, node_count(most))?;
    Ok(k.min(leaves_for_nodes(t)))
}

/// Records of `size` bytes in `f`, not counting a tail of all-zero records (read backwards
/// in large chunks: someone may have made the file huge and sparse).
fn without_zero_tail(f: &File, size: u64, most: u64) -> io::Result<u64> {
    let mut n = (len(f)? / size).min(most);
    // The usual case, without a buffer: the last record is not zero.
    let mut last = [0u8; 32];
    if n > 0 {
        f.read_exact_at(&mut last[..size as usize], (n - 1) * size)?;
        if last.iter().any(|&b| b != 0) {
            return Ok(n);
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    while n > 0 {
        let from = n.saturating_sub(buf.len() as u64 / size);
        let chunk = &mut buf[..((n - from) * size) as usize];
        f.read_exact_at(chunk, from * size)?;
        match chunk
            .chunks_exact(size as usize)
            .rposition(|r| r.iter().any(|&b| b != 0))
        {
            Some(i) => return Ok(from + i as u64 + 1),
            None => n = from,
        }
    }
    Ok(0)
}

impl FileStore {
    /// Opens (creating if needed) a log for appending: the directory is created, files are
    /// never opened through a symlink, and a log in the pre-tamper-evident format is
    /// moved aside.
    pub fn open_append(path: &Path) -> Result<FileStore, StoreError> {
        Self::open_append_inner(path, true)
    }

    /// Opens an existing log for appending (`audit checkpoint`: a mistyped path must not
    /// create an empty log).
    pub fn open_existing(path: &Path) -> Result<FileStore, StoreError> {
        Self::open_append_inner(path, false)
    }

    fn open_append_inner(path: &Path, create: bool) -> Result<FileStore, StoreError> {
        let err = |step, source| StoreError::IoAt {
            path: path.to_path_buf(),
            step,
            source,
        };
        if !create && !path.exists() {
            return Err(err(
                "open",
                io::Error::new(io::ErrorKind::NotFound, "no such log"),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|e| err("create its directory", e))?;
            }
        }
        let mut repairs = Vec::new();
        // The file we lock must be the one at the path (another process may have moved a
        // legacy log aside between our open and our lock).
        let mut log = None;
        for _ in 0..8 {
            let f = fsutil::open_rw_create(path, 0o600).map_err(|e| err("open", e))?;
            f.lock().map_err(|e| err("lock", e))?;
            let same = std::fs::symlink_metadata(path)
                .map(|m| {
                    f.metadata()
                        .is_ok_and(|o| o.ino() == m.ino() && o.dev() == m.dev())
                })
                .unwrap_or(false);
            if !same {
                let _ = f.unlock();
                continue;
            }
            if let Some(moved) =
                move_legacy_log(path, &f).map_err(|e| err("move a legacy log aside", e))?
            {
                repairs.push(format!(
                    "it held records in the plain JSON-lines format of earlier ironcage versions (no integrity protection); moved them to {} and started a tamper-evident log",
                    moved.display()
                ));
                let _ = f.unlock();
                continue;
            }
            let _ = f.unlock();
            log = Some(f);
            break;
        }
        let log = log.ok_or_else(|| StoreError::Unusable {
            path: path.to_path_buf(),
            msg: "the file keeps being replaced while it is opened".into(),
        })?;
        let idx = fsutil::open_rw_create(&sidecar(path, "idx"), 0o600)
            .map_err(|e| err("open the .idx file", e))?;
        let tree = fsutil::open_rw_create(&sidecar(path, "tree"), 0o600)
            .map_err(|e| err("open the .tree file", e))?;
        let checkpoint = fsutil::open_rw_create(&sidecar(path, "checkpoint"), 0o644)
            .map_err(|e| err("open the .checkpoint file", e))?;
        let files = Some((
            idx.try_clone().map_err(|e| err("open", e))?,
            tree.try_clone().map_err(|e| err("open", e))?,
        ));
        Ok(FileStore {
            path: path.to_path_buf(),
            log,
            checkpoint: Some(checkpoint),
            index: Index::Files { idx, tree },
            files,
            writable: true,
            repairs,
        })
    }

    /// Opens an existing log read-only (an auditor's copy, a log one may not write).
    /// The index files are used when present and in line with the log; otherwise the
    /// index is built in memory from the log (never written).
    pub fn open_read(path: &Path) -> Result<FileStore, StoreError> {
        let log = fsutil::open_read(path).map_err(|source| StoreError::IoAt {
            path: path.to_path_buf(),
            step: "open",
            source,
        })?;
        let idx = fsutil::open_read(&sidecar(path, "idx")).ok();
        let tree = fsutil::open_read(&sidecar(path, "tree")).ok();
        let files = match (&idx, &tree) {
            (Some(i), Some(t)) => Some((
                i.try_clone().map_err(|e| io_at(path, "open", e))?,
                t.try_clone().map_err(|e| io_at(path, "open", e))?,
            )),
            _ => None,
        };
        let checkpoint = match fsutil::open_read(&sidecar(path, "checkpoint")) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(path, "open the .checkpoint file", e)),
        };
        let mut s = FileStore {
            path: path.to_path_buf(),
            log,
            checkpoint,
            index: Index::Memory {
                ends: Vec::new(),
                tree: MemTree::new(),
            },
            files,
            writable: false,
            repairs: Vec::new(),
        };
        s.log.lock_shared().map_err(|e| s.io("lock", e))?;
        let built = s.choose_index(idx, tree);
        let _ = s.log.unlock();
        s.index = built?;
        Ok(s)
    }

    /// The index files when they are in line with the log, else one built in memory.
    fn choose_index(&self, idx: Option<File>, tree: Option<File>) -> Result<Index, StoreError> {
        let s = self;
        let log_len = len(&s.log).map_err(|e| s.io("read", e))?;
        let complete = s.last_newline_end(log_len).map_err(|e| s.io("read", e))?;
        let from_files = match (idx, tree) {
            (Some(idx), Some(tree)) => {
                let k =
                    usable_records(&idx, &tree, log_len).map_err(|e| s.io("read the index", e))?;
                let end = if k == 0 {
                    0
                } else {
                    read_u64(&idx, k - 1).map_err(|e| s.io("read the index", e))?
                };
                (end == complete).then_some(Index::Files { idx, tree })
            }
            _ => None,
        };
        match from_files {
            Some(files) => Ok(files),
            None => s.index_in_memory(complete),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, step: &'static str, source: io::Error) -> StoreError {
        io_at(&self.path, step, source)
    }

    fn tampered(&self, entry: Option<u64>, reason: String) -> StoreError {
        StoreError::Tampered {
            path: self.path.clone(),
            entry,
            reason,
        }
    }

    fn lock(&self, exclusive: bool) -> Result<Locked<'_>, StoreError> {
        let r = if exclusive {
            self.log.lock()
        } else {
            self.log.lock_shared()
        };
        r.map_err(|e| self.io("lock", e))?;
        Ok(Locked(&self.log))
    }

    /// Builds the index in memory from the log's complete lines (no checks: `verify`
    /// does those; this only lets a reader find entries and prove them).
    fn index_in_memory(&self, complete: u64) -> Result<Index, StoreError> {
        let mut ends = Vec::new();
        let mut tree = MemTree::new();
        self.scan_to(complete, &mut |raw| {
            ends.push(raw.locator + raw.bytes.len() as u64 + 1);
            tree.push(merkle::leaf_hash(raw.bytes));
            Ok(())
        })?;
        Ok(Index::Memory { ends, tree })
    }

    /// Entries the index covers (consistent with the log's length).
    fn indexed(&self) -> Result<u64, StoreError> {
        match &self.index {
            Index::Memory { ends, .. } => Ok(ends.len() as u64),
            Index::Files { idx, tree } => {
                let log_len = len(&self.log).map_err(|e| self.io("read", e))?;
                let mut k =
                    usable_records(idx, tree, log_len).map_err(|e| self.io("read the index", e))?;
                // A reader never repairs: it just does not look past what the log backs.
                while k > 0
                    && read_u64(idx, k - 1).map_err(|e| self.io("read the index", e))? > log_len
                {
                    k -= 1;
                }
                Ok(k)
            }
        }
    }

    /// End offset of entry `i - 1` (where entry `i` starts); 0 for i = 0.
    fn start_of(&self, i: u64) -> Result<u64, StoreError> {
        if i == 0 {
            return Ok(0);
        }
        match &self.index {
            Index::Memory { ends, .. } => Ok(ends[(i - 1) as usize]),
            Index::Files { idx, .. } => {
                read_u64(idx, i - 1).map_err(|e| self.io("read the index", e))
            }
        }
    }

    fn ends(&self, from: u64, n: u64) -> Result<Vec<u64>, StoreError> {
        match &self.index {
            Index::Memory { ends, .. } => Ok(ends[from as usize..(from + n) as usize].to_vec()),
            Index::Files { idx, .. } => {
                let mut raw = vec![0u8; (n * 8) as usize];
                idx.read_exact_at(&mut raw, from * 8)
                    .map_err(|e| self.io("read the index", e))?;
                Ok(raw
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect())
            }
        }
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

    /// Reads the complete lines of the log up to byte `to`, from the start.
    fn scan_to(&self, to: u64, visit: &mut Visit<'_>) -> Result<u64, StoreError> {
        let mut buf = vec![0u8; 8 << 20];
        let mut have = 0usize;
        let mut offset = 0u64; // file offset of buf[0]
        let mut position = 0u64;
        loop {
            let want = ((to - offset) as usize)
                .saturating_sub(have)
                .min(buf.len() - have);
            if want == 0 && have < buf.len() {
                break;
            }
            let n = if want == 0 {
                0
            } else {
                self.log
                    .read_at(&mut buf[have..have + want], offset + have as u64)
                    .map_err(|e| self.io("read", e))?
            };
            if n == 0 && want > 0 {
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
                // A "line" longer than the buffer: grow it, up to a bound no entry comes
                // near (strings in entries are capped at 64 KiB).
                if buf.len() >= MAX_LINE {
                    return Err(self.tampered(
                        Some(position),
                        format!("entry {position} (byte offset {offset}) is damaged: a line longer than {} MiB", MAX_LINE >> 20),
                    ));
                }
                buf.resize(buf.len() * 2, 0);
            }
        }
        Ok(have as u64)
    }

    fn files(&self) -> (&File, &File) {
        match &self.index {
            Index::Files { idx, tree } => (idx, tree),
            Index::Memory { .. } => unreachable!("writable stores index in files"),
        }
    }

    /// Brings the index files in line with the log (exclusive lock held) and returns
    /// (entries, log length). Crash traces are repaired and noted in `self.repairs`;
    /// everything else is refused as tampering.
    fn reconcile(&mut self) -> Result<(u64, u64), StoreError> {
        let mut log_len = len(&self.log).map_err(|e| self.io("read", e))?;
        let (idx, tree) = self.files();
        if len(idx).map_err(|e| self.io("read the index", e))? / 8 > log_len / 2 + 1 {
            return Err(self.tampered(
                None,
                format!("the index ({}.idx) is larger than a log of {log_len} bytes could ever need (if the log itself verifies, remove the .idx and .tree files: the next append rebuilds them)", self.path.display()),
            ));
        }
        let k = without_zero_tail(idx, 8, log_len / 2).map_err(|e| self.io("read the index", e))?;
        // The index is written only after the entries are durable: it never legitimately
        // points past the end of the log.
        if k > 0 {
            let last_end = read_u64(idx, k - 1).map_err(|e| self.io("read the index", e))?;
            if last_end > log_len {
                let (mut lo, mut hi) = (0u64, k - 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if read_u64(idx, mid).map_err(|e| self.io("read the index", e))? > log_len {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                return Err(self.tampered(
                    Some(lo),
                    format!(
                        "the log ends at byte {log_len}, but its index records {k} entries ending at byte {last_end}: entry {lo} (and any after it) was removed or changed"
                    ),
                ));
            }
        }
        let k =
            k.min(usable_records(idx, tree, log_len).map_err(|e| self.io("read the index", e))?);
        // The last indexed entry must still be the one that was indexed.
        if k > 0 {
            let (s, e) = (self.start_of(k - 1)?, self.start_of(k)?);
            let mut line = vec![0u8; e.saturating_sub(s) as usize];
            self.log
                .read_exact_at(&mut line, s)
                .map_err(|e| self.io("read", e))?;
            let recorded =
                read_hash(tree, node_pos(0, k - 1)).map_err(|e| self.io("read the index", e))?;
            if line.last() != Some(&b'\n') || merkle::leaf_hash(&line[..line.len() - 1]) != recorded
            {
                return Err(self.tampered(
                    Some(k - 1),
                    format!(
                        "entry {} no longer matches the hash recorded when it was appended",
                        k - 1
                    ),
                ));
            }
        }
        let indexed_end = self.start_of(k)?;
        // A torn append: bytes after the last newline, past everything indexed (which was
        // durable before it was indexed, so never torn).
        if log_len > indexed_end {
            let mut last = [0u8; 1];
            self.log
                .read_exact_at(&mut last, log_len - 1)
                .map_err(|e| self.io("read", e))?;
            if last[0] != b'\n' {
                let keep = self
                    .last_newline_end(log_len)
                    .map_err(|e| self.io("read", e))?
                    .max(indexed_end);
                self.log
                    .set_len(keep)
                    .map_err(|e| self.io("remove a torn append", e))?;
                self.log
                    .sync_data()
                    .map_err(|e| self.io("remove a torn append", e))?;
                self.repairs.push(format!(
                    "removed {} bytes of an append cut short after entry {} (a writer was killed or the machine stopped mid-write; it was never acknowledged)",
                    log_len - keep,
                    k.saturating_sub(1)
                ));
                log_len = keep;
            }
        }
        let (idx, tree) = self.files();
        idx.set_len(k * 8)
            .map_err(|e| self.io("trim the index", e))?;
        tree.set_len(node_count(k) * 32)
            .map_err(|e| self.io("trim the index", e))?;
        if indexed_end < log_len {
            let n = self.index_tail(k, indexed_end, log_len)?;
            self.repairs.push(if k == 0 {
                format!("built the missing index files from the log's {n} entries")
            } else {
                format!(
                    "indexed entries {k}..{} that a writer made durable but did not index (killed mid-append)",
                    k + n - 1
                )
            });
            return Ok((k + n, log_len));
        }
        Ok((k, log_len))
    }

    /// Indexes the complete lines in `from..to` as entries `k..`. They must continue the
    /// chain; anything else is not a crash trace, and is refused.
    fn index_tail(&mut self, k: u64, from: u64, to: u64) -> Result<u64, StoreError> {
        let (idx, tree) = self.files();
        let mut frontier =
            Frontier::from_nodes(&FileNodes(tree), k).map_err(|e| self.io("read the index", e))?;
        let mut prev = if k > 0 {
            Some(read_hash(tree, node_pos(0, k - 1)).map_err(|e| self.io("read the index", e))?)
        } else {
            None
        };
        let mut ends = Vec::new();
        let mut nodes = Vec::new();
        let mut seq = k;
        let mut data = vec![0u8; (to - from).min(64 << 20) as usize];
        let mut offset = from;
        while offset < to {
            let n = ((to - offset) as usize).min(data.len());
            self.log
                .read_exact_at(&mut data[..n], offset)
                .map_err(|e| self.io("read", e))?;
            let mut pos = 0usize;
            while let Some(i) = data[pos..n].iter().position(|&b| b == b'\n') {
                let line = &data[pos..pos + i];
                let leaf = self.check_link(seq, line, prev)?;
                frontier.push(leaf, |_, _, h| nodes.extend_from_slice(h));
                prev = Some(leaf);
                pos += i + 1;
                ends.extend_from_slice(&(offset + pos as u64).to_le_bytes());
                seq += 1;
            }
            if pos == 0 {
                // One line longer than the buffer: read more of it at once.
                data.resize(data.len() * 2, 0);
                continue;
            }
            offset += pos as u64;
        }
        idx.write_all_at(&ends, k * 8)
            .map_err(|e| self.io("write the index", e))?;
        tree.write_all_at(&nodes, node_count(k) * 32)
            .map_err(|e| self.io("write the index", e))?;
        Ok(seq - k)
    }

    /// Checks that `line` is entry `seq`, canonical, linked to `prev`; returns its leaf.
    fn check_link(&self, seq: u64, line: &[u8], prev: Option<Hash>) -> Result<Hash, StoreError> {
        let parsed = entry::parse(line)
            .map_err(|e| self.tampered(Some(seq), format!("entry {seq}: {e}")))?;
        let want = prev.unwrap_or([0; 32]);
        if parsed.seq != seq || parsed.prev != want {
            return Err(self.tampered(
                Some(seq),
                format!(
                    "position {seq} holds entry {} linked to {}, not entry {seq} linked to {}",
                    parsed.seq,
                    crate::note::hex(&parsed.prev),
                    crate::note::hex(&want)
                ),
            ));
        }
        if seq == 0 && parsed.kind != TYPE_LOG_INIT {
            return Err(self.tampered(
                Some(0),
                format!("entry 0 is not the log's {TYPE_LOG_INIT} entry"),
            ));
        }
        Ok(merkle::leaf_hash(line))
    }

    /// Re-reads entries `from..to` from the log, checks their chain and their recorded
    /// hashes, and pushes them onto `frontier`.
    fn adopt(&self, from: u64, to: u64, frontier: &mut Frontier) -> Result<(), StoreError> {
        let (_, tree) = self.files();
        let mut prev = if from > 0 {
            Some(read_hash(tree, node_pos(0, from - 1)).map_err(|e| self.io("read the index", e))?)
        } else {
            None
        };
        let mut failure = None;
        self.entries_upto(from, to, to, &mut |seq, line| {
            let leaf = self.check_link(seq, line, prev)?;
            let recorded =
                read_hash(tree, node_pos(0, seq)).map_err(|e| self.io("read the index", e))?;
            if recorded != leaf && failure.is_none() {
                failure = Some(seq);
            }
            frontier.push(leaf, |_, _, _| {});
            prev = Some(leaf);
            Ok(())
        })?;
        if let Some(seq) = failure {
            return Err(self.tampered(
                Some(seq),
                format!("entry {seq} does not match the hash in the index"),
            ));
        }
        Ok(())
    }

    /// The tree the next signature builds on: the last checkpoint signed by the
    /// appender's key, checked against the stored nodes, extended by the entries since,
    /// re-read from the log. Without such a checkpoint, the whole log is re-read.
    fn trusted_frontier(
        &mut self,
        app: &mut dyn Appender,
        k: u64,
        first: Option<&[u8]>,
    ) -> Result<(Frontier, Option<usize>), StoreError> {
        let slots = self.checkpoint_slots()?;
        if k > 0 && first.and_then(entry::origin).is_none() {
            return Err(self.tampered(
                Some(0),
                format!(
                    "entry 0 is not a {TYPE_LOG_INIT} entry naming the log: nothing can be signed"
                ),
            ));
        }
        if k == 0 {
            // An empty log next to a checkpoint signed by this key: the log was emptied
            // (or moved aside without its checkpoint file). Not a fresh start.
            if let Some(m) = slots
                .iter()
                .flatten()
                .filter_map(|(_, n)| app.signed_size(n))
                .max()
            {
                if m > 0 {
                    return Err(self.tampered(
                        Some(0),
                        format!("the log is empty, but its checkpoint file holds a checkpoint of {m} entries signed by this key: the log was emptied (to start a new log, move the .checkpoint file aside too)"),
                    ));
                }
            }
        }
        let mut best: Option<(usize, u64, Hash)> = None;
        let mut any = false;
        for (i, slot) in slots.iter().enumerate() {
            if let Some((_, note)) = slot {
                any = true;
                if let Some((m, root)) = app.trusted(note, first) {
                    if best.is_none_or(|(_, bm, _)| m > bm) {
                        best = Some((i, m, root));
                    }
                }
            }
        }
        let Some((slot, m, root)) = best else {
            let mut f = Frontier::new();
            if k > 0 {
                // A checkpoint this key signed, for another log: entry 0 was changed (or
                // the log swapped). Never a reason to sign what is here now.
                let foreign = slots
                    .iter()
                    .flatten()
                    .filter_map(|(_, n)| app.signed_size(n))
                    .max();
                if let Some(m) = foreign {
                    return Err(self.tampered(
                        Some(0),
                        format!("the checkpoint file holds a checkpoint of {m} entries signed by this key for another log: entry 0 was changed or the log replaced"),
                    ));
                }
                // Entries but no checkpoint of ours: the checkpoint file was removed, or
                // the key changed. Signing all of it takes a person's decision.
                if !app.adopts() {
                    return Err(self.tampered(
                        None,
                        format!(
                            "{} for its {k} entries (the .checkpoint file was removed, or the signing key changed). Check it (`ironcage audit verify --log {} --key <the old key's .pub>`, or against a checkpoint saved elsewhere); if it is what you expect, sign it as it is with `ironcage audit checkpoint --adopt` (recorded in the log)",
                            if any {
                                "no checkpoint here is signed by this key for this log"
                            } else {
                                "there is no signed checkpoint"
                            },
                            self.path.display()
                        ),
                    ));
                }
                self.adopt(0, k, &mut f)?;
                self.repairs.push(format!(
                    "{}; an operator chose to sign the log's {k} entries as they are now (`audit checkpoint --adopt`)",
                    if any {
                        "no checkpoint here was signed by this key for this log"
                    } else {
                        "no signed checkpoint was found"
                    }
                ));
            }
            return Ok((f, None));
        };
        if m > k {
            return Err(self.tampered(
                Some(k),
                format!("the log has {k} entries, but its last signed checkpoint covers {m}: entries {k}..{} were removed", m - 1),
            ));
        }
        let (_, tree) = self.files();
        let mut f =
            Frontier::from_nodes(&FileNodes(tree), m).map_err(|e| self.io("read the index", e))?;
        if f.root() != root {
            return Err(self.tampered(
                None,
                format!(
                    "the first {m} entries, or their index, no longer match the last signed checkpoint (if only the index files were damaged, remove {0}.idx and {0}.tree and try again)",
                    self.path.display()
                ),
            ));
        }
        // The last signed entry itself, re-read from the log, must be in the signed tree
        // (the stored nodes above it only prove the root, not the leaf they came from).
        if m > 0 {
            let mut line = Vec::new();
            self.entries_upto(m - 1, m, k, &mut |_, b| {
                line = b.to_vec();
                Ok(())
            })?;
            let leaf = merkle::leaf_hash(&line);
            let proof = merkle::inclusion_proof(&FileNodes(tree), m - 1, m)
                .map_err(|e| self.io("read the index", e))?;
            if merkle::verify_inclusion(m - 1, m, &leaf, &proof, &root).is_err()
                || read_hash(tree, node_pos(0, m - 1)).map_err(|e| self.io("read the index", e))?
                    != leaf
            {
                return Err(self.tampered(
                    Some(m - 1),
                    format!(
                        "entry {} is not the entry the last signed checkpoint covers",
                        m - 1
                    ),
                ));
            }
        }
        if m < k {
            self.adopt(m, k, &mut f)?;
            self.repairs.push(format!(
                "entries {m}..{} were not covered by a signed checkpoint (appended by a writer killed before signing or without the key, or by someone else); signing them as they are",
                k - 1
            ));
        }
        Ok((f, Some(slot)))
    }

    /// The two checkpoint slots: (tree size, note) for each that holds a well-formed one.
    fn checkpoint_slots(&self) -> Result<[Option<(u64, String)>; 2], StoreError> {
        let Some(f) = &self.checkpoint else {
            return Ok([None, None]);
        };
        // Only the two slots are read, however large someone made the file.
        let mut data = vec![0u8; 2 * CHECKPOINT_SLOT];
        let mut got = 0;
        while got < data.len() {
            match f.read_at(&mut data[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("read the checkpoint file", e)),
            }
        }
        data.truncate(got);
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

    /// Writes a checkpoint in place into the slot that does not hold `keep` (the last
    /// trusted one), clearing an untrusted one: a write cut short never destroys the last
    /// good checkpoint, and no rename (which costs ~160 µs on ext4) is needed.
    fn write_checkpoint(&self, note: &str, keep: Option<usize>) -> io::Result<()> {
        if note.len() >= CHECKPOINT_SLOT {
            return Err(io::Error::other("checkpoint larger than its 4 KiB slot"));
        }
        let f = self
            .checkpoint
            .as_ref()
            .ok_or_else(|| io::Error::other("no checkpoint file"))?;
        let target = keep.map(|i| 1 - i).unwrap_or(0);
        let mut buf = note.as_bytes().to_vec();
        buf.resize(CHECKPOINT_SLOT, 0);
        f.write_all_at(&buf, (target * CHECKPOINT_SLOT) as u64)?;
        // Then clear the other slot: an older signed checkpoint left lying there would
        // hand anyone who can write the log a point to roll it back to.
        f.write_all_at(
            &[0u8; CHECKPOINT_SLOT],
            ((1 - target) * CHECKPOINT_SLOT) as u64,
        )?;
        f.set_len(2 * CHECKPOINT_SLOT as u64)
    }

    /// Keeps disk space reserved past `end`, so the next appends cannot fail for lack of
    /// space even if a sandbox fills the disk meanwhile.
    fn reserve(&self, end: u64) {
        let allocated = self.log.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        if allocated < end + RESERVE / 4 {
            let _ = ironcage_sandbox::sys::fallocate_keep_size(&self.log, end, RESERVE);
        }
    }

    fn append_locked(&mut self, app: &mut dyn Appender) -> Result<Done, StoreError> {
        let (k, log_len) = self.reconcile()?;
        let first = if k > 0 {
            let end = self.start_of(1)?;
            let mut b = vec![0u8; end as usize];
            self.log
                .read_exact_at(&mut b, 0)
                .map_err(|e| self.io("read", e))?;
            b.pop();
            Some(b)
        } else {
            None
        };
        let trusted = if app.signs() {
            Some(self.trusted_frontier(app, k, first.as_deref())?)
        } else {
            None
        };
        let last_leaf = if k > 0 {
            let (_, tree) = self.files();
            Some(read_hash(tree, node_pos(0, k - 1)).map_err(|e| self.io("read the index", e))?)
        } else {
            None
        };
        let head = Head {
            size: k,
            last_leaf,
            first,
            repairs: std::mem::take(&mut self.repairs),
        };
        let (_, tree) = self.files();
        let batch = app.entries(&head)?;
        let mut warnings = Vec::new();
        let mut frontier = match &trusted {
            Some((f, _)) => f.clone(),
            None => Frontier::from_nodes(&FileNodes(tree), k)
                .map_err(|e| self.io("read the index", e))?,
        };
        if !batch.leaves.is_empty() {
            self.reserve(log_len + batch.bytes.len() as u64);
            // The entries first, durably; only then the derived files and the checkpoint.
            if let Err(e) = self
                .log
                .write_all_at(&batch.bytes, log_len)
                .and_then(|()| self.log.sync_data())
            {
                // Leave no partial entry behind.
                let _ = self.log.set_len(log_len);
                return Err(self.io("write", e));
            }
            if k == 0 {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = fsutil::sync_dir(dir);
                }
            }
            self.reserve(log_len + batch.bytes.len() as u64);
            let mut ends = Vec::with_capacity(batch.ends.len() * 8);
            for e in &batch.ends {
                ends.extend_from_slice(&(log_len + *e as u64).to_le_bytes());
            }
            let mut nodes = Vec::with_capacity(batch.leaves.len() * 64);
            for leaf in &batch.leaves {
                frontier.push(*leaf, |_, _, h| nodes.extend_from_slice(h));
            }
            // The entries are durable: from here on, failures are warnings, not errors
            // (the next append rebuilds what is missing).
            let (idx, tree) = self.files();
            if let Err(e) = idx
                .write_all_at(&ends, k * 8)
                .and_then(|()| tree.write_all_at(&nodes, node_count(k) * 32))
            {
                warnings.push(format!("the entries are recorded, but the index could not be updated ({e}); the next append rebuilds it"));
            }
        }
        let size = k + batch.leaves.len() as u64;
        let root = frontier.root();
        if let Some((_, keep)) = trusted {
            if size > 0 {
                if let Some(note) = app.seal(size, &root) {
                    if let Err(e) = self.write_checkpoint(&note, keep) {
                        warnings.push(format!("the entries are recorded, but the signed checkpoint could not be stored ({e})"));
                    }
                }
            }
        }
        Ok(Done {
            size,
            root,
            warnings,
        })
    }
}

impl FileStore {
    /// Entries `from..to` of a log of `size` entries (lock held or not needed).
    fn entries_upto(
        &self,
        from: u64,
        to: u64,
        size: u64,
        visit: &mut EntryVisit<'_>,
    ) -> Result<(), StoreError> {
        if to > size {
            return Err(StoreError::NoSuchEntry {
                path: self.path.clone(),
                seq: to - 1,
                size,
            });
        }
        // In chunks of up to 4096 entries, so exporting a huge log does not need it all in
        // memory.
        let mut seq = from;
        while seq < to {
            let n = (to - seq).min(4096);
            let start = self.start_of(seq)?;
            let ends = self.ends(seq, n)?;
            let end = *ends.last().unwrap_or(&start);
            let bad = |s: u64| {
                StoreError::Unusable {
                path: self.path.clone(),
                msg: format!("the index does not point at a whole line for entry {s} (run `ironcage audit verify`)"),
            }
            };
            if end < start || end - start > (1 << 34) {
                return Err(bad(seq));
            }
            let mut data = vec![0u8; (end - start) as usize];
            self.log
                .read_exact_at(&mut data, start)
                .map_err(|e| self.io("read", e))?;
            let mut pos = 0usize;
            for (s, e) in (seq..seq + n).zip(ends) {
                let e = e.checked_sub(start).ok_or_else(|| bad(s))? as usize;
                if e <= pos || e > data.len() || data[e - 1] != b'\n' {
                    return Err(bad(s));
                }
                visit(s, &data[pos..e - 1])?;
                pos = e;
            }
            seq += n;
        }
        Ok(())
    }
}

fn io_at(path: &Path, step: &'static str, source: io::Error) -> StoreError {
    StoreError::IoAt {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// Holds an flock until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A log written before the tamper-evident format (every line a `{"version","kind",
/// "detail",...}` object, no index files) is moved aside to `<path>.legacy-<ms>-<pid>`
/// so a new log can start; its records are kept, not converted (they never had
/// integrity). Anything less clear-cut is left for `reconcile` to judge. Lock held.
fn move_legacy_log(path: &Path, log: &File) -> io::Result<Option<PathBuf>> {
    let size = len(log)?;
    if size == 0 || size > (256 << 20) {
        return Ok(None);
    }
    for ext in ["idx", "tree"] {
        if std::fs::metadata(sidecar(path, ext)).is_ok_and(|m| m.len() > 0) {
            return Ok(None);
        }
    }
    let mut data = vec![0u8; size as usize];
    log.read_exact_at(&mut data, 0)?;
    let legacy = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .all(|line| {
            serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .is_some_and(|o| {
                    o.contains_key("kind") && o.contains_key("detail") && !o.contains_key("seq")
                })
        });
    if !legacy {
        return Ok(None);
    }
    let mut to = path.as_os_str().to_owned();
    to.push(format!(
        ".legacy-{}-{}",
        entry::now_unix_ms(),
        std::process::id()
    ));
    let to = PathBuf::from(to);
    std::fs::hard_link(path, &to)?;
    std::fs::remove_file(path)?;
    Ok(Some(to))
}

impl Store for FileStore {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn append(&mut self, app: &mut dyn Appender) -> Result<Done, StoreError> {
        if !self.writable {
            return Err(StoreError::Unusable {
                path: self.path.clone(),
                msg: "opened read-only".into(),
            });
        }
        self.log.lock().map_err(|e| self.io("lock", e))?;
        let result = self.append_locked(app);
        let _ = self.log.unlock();
        result
    }

    fn size(&self) -> Result<u64, StoreError> {
        let _l = self.lock(false)?;
        self.indexed()
    }

    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let size = self.size()?;
        self.entries_upto(from, to, size, visit)
    }
    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        match &self.index {
            Index::Memory { tree, .. } => tree
                .node(level, index)
                .map_err(|e| self.io("read the index", e)),
            Index::Files { tree, .. } => {
                read_hash(tree, node_pos(level, index)).map_err(|e| self.io("read the index", e))
            }
        }
    }

    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanEnd, StoreError> {
        // The log only grows (a repair only cuts bytes after the last newline), so a
        // snapshot of its length is all a reader needs the lock for: appends are not
        // held up for the length of a scan.
        let log_len = {
            let _l = self.lock(false)?;
            len(&self.log).map_err(|e| self.io("read", e))?
        };
        let torn = self.scan_to(log_len, visit)?;
        Ok(ScanEnd {
            torn_tail_bytes: torn,
        })
    }

    fn stored_nodes(&self, from: u64, max: usize) -> Result<Vec<Hash>, StoreError> {
        let Some((_, tree)) = &self.files else {
            return Ok(Vec::new());
        };
        let total = len(tree).map_err(|e| self.io("read the index", e))? / 32;
        let n = total.saturating_sub(from).min(max as u64) as usize;
        let mut buf = vec![0u8; n * 32];
        tree.read_exact_at(&mut buf, from * 32)
            .map_err(|e| self.io("read the index", e))?;
        Ok(buf
            .chunks_exact(32)
            .map(|c| <Hash>::try_from(c).unwrap_or([0; 32]))
            .collect())
    }

    fn stored_locators(&self, from: u64, max: usize) -> Result<Vec<u64>, StoreError> {
        let Some((idx, _)) = &self.files else {
            return Ok(Vec::new());
        };
        let total = len(idx).map_err(|e| self.io("read the index", e))? / 8;
        let n = total.saturating_sub(from).min(max as u64) as usize;
        let mut buf = vec![0u8; n * 8];
        idx.read_exact_at(&mut buf, from * 8)
            .map_err(|e| self.io("read the index", e))?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
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

    fn take_repairs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.repairs)
    }
}
