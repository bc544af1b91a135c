//! The tamper-evident audit log in the service's database (SQLite or PostgreSQL): the
//! audit crate's `Store` trait over three tables. `audit_entries` holds the canonical
//! entries (the source of truth), `audit_nodes` the complete subtree hashes in post-order
//! (derived, checked), `audit_head` the size and the newest signed checkpoint.
//!
//! An append is one transaction that first locks the head row, so appends from every
//! instance sharing the store are serialised. Before a new tree head is signed it is
//! rebuilt on the last checkpoint this key signed: the stored subtrees are checked against
//! that checkpoint's root and every entry since is re-hashed from its bytes; anything that
//! does not match is refused as tampering, never repaired.
//!
//! The trait is synchronous (the log logic is shared with the file store); calls block on
//! the async database driver and must come from a blocking thread (`spawn_blocking`, or a
//! plain thread), never from inside the async runtime.

use crate::store::Store as Db;
use ironcage_audit::merkle::{self, Frontier, Hash, Nodes};
use ironcage_audit::store::{
    node_pos, Appender, Done, EntryVisit, Head, Raw, ScanEnd, Store, StoreError, Visit,
};
use sqlx::Row;
use std::collections::HashMap;
use std::path::PathBuf;

pub struct SqlAuditStore {
    db: Db,
    rt: tokio::runtime::Handle,
    name: String,
}

impl SqlAuditStore {
    pub fn new(db: Db, rt: tokio::runtime::Handle, name: &str) -> SqlAuditStore {
        SqlAuditStore {
            db,
            rt,
            name: name.to_string(),
        }
    }

    fn err(&self, step: &'static str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| StoreError::IoAt {
            path: PathBuf::from(&self.name),
            step,
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn tampered(&self, entry: Option<u64>, reason: String) -> StoreError {
        StoreError::Tampered {
            path: PathBuf::from(&self.name),
            entry,
            reason,
        }
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

fn hash_of(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// Subtree hashes fetched by position, for `Frontier::from_nodes`.
struct Fetched(HashMap<u64, Hash>);

impl Nodes for Fetched {
    fn node(&self, level: u32, index: u64) -> std::io::Result<Hash> {
        self.0
            .get(&node_pos(level, index))
            .copied()
            .ok_or_else(|| std::io::Error::other(format!("subtree ({level}, {index}) missing")))
    }
}

/// `insert` (`INSERT INTO t (a, b)`) of (integer, bytes) rows: few statements per append (a
/// batch of entries, their subtrees), in chunks under every driver's parameter limit.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    insert: &str,
    rows: &[(i64, &[u8])],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(200) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let q = format!("{insert} VALUES {}", values.join(", "));
        let mut query = sqlx::query(&q);
        for (n, bytes) in chunk {
            query = query.bind(*n).bind(*bytes);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Stored subtree hashes at `positions`, in one query (positions are our own integers,
/// written into the statement); malformed ones are left out.
async fn fetch_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    positions: &[u64],
) -> Result<HashMap<u64, Hash>, sqlx::Error> {
    let mut out = HashMap::new();
    if positions.is_empty() {
        return Ok(out);
    }
    let list: Vec<String> = positions.iter().map(|p| p.to_string()).collect();
    let q = format!(
        "SELECT pos, hash FROM audit_nodes WHERE pos IN ({})",
        list.join(", ")
    );
    for r in sqlx::query(&q).fetch_all(&mut **tx).await? {
        let pos: i64 = r.try_get(0)?;
        let h: Vec<u8> = r.try_get(1)?;
        if let Some(h) = hash_of(&h) {
            out.insert(pos as u64, h);
        }
    }
    Ok(out)
}

/// Positions of the subtrees making up the frontier of a tree of `size` leaves.
fn frontier_positions(size: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            out.push(node_pos(level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

impl Store for SqlAuditStore {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn append(&mut self, app: &mut dyn Appender) -> Result<Done, StoreError> {
        let this = &*self;
        this.block(async {
            let e = |s| this.err(s);
            let mut tx = this.db.pool().begin().await.map_err(e("begin"))?;
            // The lock: every appender waits here for the one before (a row lock on
            // PostgreSQL, the write lock on SQLite).
            sqlx::query("UPDATE audit_head SET size = size WHERE id = 1")
                .execute(&mut *tx)
                .await
                .map_err(e("lock head"))?;
            let row = sqlx::query("SELECT size, checkpoint FROM audit_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(e("read head"))?;
            let size: i64 = row.try_get("size").map_err(e("read head"))?;
            let size = size as u64;
            let checkpoint: Option<String> = row.try_get("checkpoint").map_err(e("read head"))?;
            // The head's size against the table, in O(log n): the last entry is there and
            // nothing lies beyond it (a COUNT would scan the whole log on every append).
            let max: Option<i64> = sqlx::query("SELECT MAX(seq) FROM audit_entries")
                .fetch_one(&mut *tx)
                .await
                .map_err(e("read entries"))?
                .try_get(0)
                .map_err(e("read entries"))?;
            if max.map_or(0, |m| m as u64 + 1) != size {
                return Err(this.tampered(
                    None,
                    format!(
                        "the head says {size} entries, the last stored entry is {}",
                        max.map_or("none".to_string(), |m| m.to_string())
                    ),
                ));
            }
            let entry = |seq: u64| {
                let q = sqlx::query("SELECT entry FROM audit_entries WHERE seq = $1")
                    .bind(seq as i64);
                q
            };
            let first: Option<Vec<u8>> = if size > 0 {
                Some(
                    entry(0)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(e("read entry 0"))?
                        .try_get(0)
                        .map_err(e("read entry 0"))?,
                )
            } else {
                None
            };

            // Where the new tree is built from: the last head this key signed, checked.
            let (base, mut frontier) = match checkpoint
                .as_deref()
                .and_then(|n| app.trusted(n, first.as_deref()))
            {
                Some((csize, croot)) if csize <= size => {
                    let want = frontier_positions(csize);
                    let got = fetch_nodes(&mut tx, &want).await.map_err(e("read tree"))?;
                    if let Some(pos) = want.iter().find(|p| !got.contains_key(p)) {
                        return Err(this.tampered(
                            None,
                            format!("stored subtree at position {pos} is missing or malformed"),
                        ));
                    }
                    let f = Frontier::from_nodes(&Fetched(got), csize)
                        .map_err(|x| this.tampered(None, x.to_string()))?;
                    if f.root() != croot {
                        return Err(this.tampered(
                            None,
                            format!("the stored tree does not match the checkpoint signed at size {csize}"),
                        ));
                    }
                    (csize, f)
                }
                Some((csize, _)) => {
                    return Err(this.tampered(
                        None,
                        format!("the log has {size} entries but a checkpoint of this key signed {csize}"),
                    ))
                }
                None if size == 0 || !app.signs() || app.adopts() => (0, Frontier::new()),
                None => {
                    return Err(this.tampered(
                        None,
                        "the log has entries but no checkpoint signed by this key".into(),
                    ))
                }
            };
            // Entries since the checkpoint: re-hashed from their bytes, compared with the
            // stored leaves, and chained onto the checked frontier.
            let mut last_leaf = None;
            if base < size {
                let rows = sqlx::query(
                    "SELECT seq, entry FROM audit_entries WHERE seq >= $1 ORDER BY seq",
                )
                .bind(base as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(e("read entries"))?;
                for (i, r) in rows.iter().enumerate() {
                    let seq: i64 = r.try_get(0).map_err(e("read entries"))?;
                    let bytes: Vec<u8> = r.try_get(1).map_err(e("read entries"))?;
                    if seq as u64 != base + i as u64 {
                        return Err(this.tampered(Some(base + i as u64), "entry missing".into()));
                    }
                    let leaf = merkle::leaf_hash(&bytes);
                    let stored: Option<Vec<u8>> =
                        sqlx::query("SELECT hash FROM audit_nodes WHERE pos = $1")
                            .bind(node_pos(0, seq as u64) as i64)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(e("read tree"))?
                            .map(|r| r.try_get(0))
                            .transpose()
                            .map_err(e("read tree"))?;
                    if stored.as_deref().and_then(hash_of) != Some(leaf) && app.signs() {
                        return Err(this.tampered(
                            Some(seq as u64),
                            "entry does not match its stored leaf hash".into(),
                        ));
                    }
                    frontier.push(leaf, |_, _, _| {});
                    last_leaf = Some(leaf);
                }
            } else if size > 0 {
                // The last entry against its leaf in the checked tree: an edit of the
                // newest entry is refused here (older ones are `verify`'s job, O(n)).
                let bytes: Vec<u8> = entry(size - 1)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(e("read last entry"))?
                    .try_get(0)
                    .map_err(e("read last entry"))?;
                let leaf = merkle::leaf_hash(&bytes);
                // The newest leaf is the right-most of the smallest peak of the checked
                // frontier: hash it up to that peak with the stored left siblings (an edit
                // would need a SHA-256 collision to land on the signed peak).
                if app.signs() && base == size {
                    let level = size.trailing_zeros();
                    let siblings: Vec<u64> = (0..level)
                        .map(|l| node_pos(l, ((size - 1) >> l) - 1))
                        .collect();
                    let peak = node_pos(level, (size - 1) >> level);
                    let mut want = siblings.clone();
                    want.push(peak);
                    let got = fetch_nodes(&mut tx, &want).await.map_err(e("read tree"))?;
                    let mut h = leaf;
                    for pos in &siblings {
                        let Some(sib) = got.get(pos) else {
                            return Err(this.tampered(None, "a stored subtree is missing".into()));
                        };
                        h = merkle::node_hash(sib, &h);
                    }
                    // The peak itself was checked against the signed root above.
                    if got.get(&peak) != Some(&h) {
                        return Err(this.tampered(
                            Some(size - 1),
                            "the last entry does not match the signed tree".into(),
                        ));
                    }
                }
                last_leaf = Some(leaf);
            }

            let head = Head {
                size,
                last_leaf,
                first,
                repairs: Vec::new(),
            };
            let batch = app.entries(&head)?;
            let mut start = 0usize;
            let mut nodes: Vec<(u64, Hash)> = Vec::new();
            let mut rows: Vec<(i64, &[u8])> = Vec::with_capacity(batch.leaves.len());
            for (i, (end, leaf)) in batch.ends.iter().zip(&batch.leaves).enumerate() {
                // Stored without the line's newline, as the file store's entries read back.
                rows.push(((size + i as u64) as i64, &batch.bytes[start..end - 1]));
                frontier.push(*leaf, |level, index, h| nodes.push((node_pos(level, index), *h)));
                start = *end;
            }
            let hashes: Vec<(i64, &[u8])> =
                nodes.iter().map(|(p, h)| (*p as i64, h.as_slice())).collect();
            insert_rows(&mut tx, "INSERT INTO audit_entries (seq, entry)", &rows)
                .await
                .map_err(e("write entry"))?;
            insert_rows(&mut tx, "INSERT INTO audit_nodes (pos, hash)", &hashes)
                .await
                .map_err(e("write tree"))?;
            let new_size = size + batch.leaves.len() as u64;
            let root = frontier.root();
            let note = if app.signs() && new_size > 0 {
                app.seal(new_size, &root)
            } else {
                None
            };
            match &note {
                Some(n) => {
                    sqlx::query("UPDATE audit_head SET size = $1, checkpoint = $2 WHERE id = 1")
                        .bind(new_size as i64)
                        .bind(n)
                        .execute(&mut *tx)
                        .await
                }
                None => {
                    sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
                        .bind(new_size as i64)
                        .execute(&mut *tx)
                        .await
                }
            }
            .map_err(e("write head"))?;
            tx.commit().await.map_err(e("commit"))?;
            Ok(Done {
                size: new_size,
                root,
                warnings: Vec::new(),
            })
        })
    }

    fn size(&self) -> Result<u64, StoreError> {
        self.block(async {
            let r = sqlx::query("SELECT size FROM audit_head WHERE id = 1")
                .fetch_one(self.db.pool())
                .await
                .map_err(self.err("read head"))?;
            let n: i64 = r.try_get(0).map_err(self.err("read head"))?;
            Ok(n as u64)
        })
    }

    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError> {
        let rows = self.block(async {
            sqlx::query(
                "SELECT seq, entry FROM audit_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq",
            )
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(self.db.pool())
            .await
            .map_err(self.err("read entries"))
        })?;
        let mut want = from;
        for r in rows {
            let seq: i64 = r.try_get(0).map_err(self.err("read entries"))?;
            let bytes: Vec<u8> = r.try_get(1).map_err(self.err("read entries"))?;
            if seq as u64 != want {
                break;
            }
            visit(want, &bytes)?;
            want += 1;
        }
        if want < to {
            return Err(StoreError::NoSuchEntry {
                path: PathBuf::from(&self.name),
                seq: want,
                size: self.size()?,
            });
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        let h: Option<Vec<u8>> = self.block(async {
            sqlx::query("SELECT hash FROM audit_nodes WHERE pos = $1")
                .bind(node_pos(level, index) as i64)
                .fetch_optional(self.db.pool())
                .await
                .map_err(self.err("read tree"))?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(self.err("read tree"))
        })?;
        h.as_deref()
            .and_then(hash_of)
            .ok_or_else(|| StoreError::Unusable {
                path: PathBuf::from(&self.name),
                msg: format!("subtree ({level}, {index}) is not stored"),
            })
    }

    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanEnd, StoreError> {
        // In pages, so a long log is never held in memory at once.
        let mut from = 0i64;
        let mut position = 0u64;
        loop {
            let rows = self.block(async {
                sqlx::query(
                    "SELECT seq, entry FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT 10000",
                )
                .bind(from)
                .fetch_all(self.db.pool())
                .await
                .map_err(self.err("read entries"))
            })?;
            if rows.is_empty() {
                return Ok(ScanEnd::default());
            }
            for r in &rows {
                let seq: i64 = r.try_get(0).map_err(self.err("read entries"))?;
                let bytes: Vec<u8> = r.try_get(1).map_err(self.err("read entries"))?;
                visit(Raw {
                    position,
                    locator: seq as u64,
                    bytes: &bytes,
                })?;
                position += 1;
                from = seq + 1;
            }
        }
    }

    fn stored_nodes(&self, from: u64, max: usize) -> Result<Vec<Hash>, StoreError> {
        let rows = self.block(async {
            sqlx::query("SELECT pos, hash FROM audit_nodes WHERE pos >= $1 ORDER BY pos LIMIT $2")
                .bind(from as i64)
                .bind(max as i64)
                .fetch_all(self.db.pool())
                .await
                .map_err(self.err("read tree"))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let pos: i64 = r.try_get(0).map_err(self.err("read tree"))?;
            let h: Vec<u8> = r.try_get(1).map_err(self.err("read tree"))?;
            // A gap ends the run: verify compares what is there with what it recomputes.
            match (pos as u64 == from + i as u64, hash_of(&h)) {
                (true, Some(h)) => out.push(h),
                _ => break,
            }
        }
        Ok(out)
    }

    fn stored_locators(&self, _from: u64, _max: usize) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }

    fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        self.block(async {
            let r = sqlx::query("SELECT checkpoint FROM audit_head WHERE id = 1")
                .fetch_one(self.db.pool())
                .await
                .map_err(self.err("read head"))?;
            r.try_get::<Option<String>, _>(0)
                .map_err(self.err("read head"))
        })
    }

    fn take_repairs(&mut self) -> Vec<String> {
        Vec::new()
    }
}

pub fn is_database_url(s: &str) -> bool {
    ["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// The service's audit log in the database at `url` (`ironcage audit ... --log URL`); for
/// reading, or for signing a checkpoint (`write`). The driver runs on a runtime of its own, kept for the process's life.
pub fn open_url(url: &str, write: bool) -> Result<ironcage_audit::AuditLog, String> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    let rt = RT
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)?;
    // Never created or migrated from here; read-only unless a checkpoint is to be signed.
    let db = rt
        .block_on(Db::open_existing(url, write))
        .map_err(|e| e.to_string())?;
    rt.block_on(sqlx::query("SELECT size FROM audit_head WHERE id = 1").fetch_one(db.pool()))
        .map_err(|e| {
            format!(
                "{}: no audit log in this database ({e})",
                crate::store::redact_url(url)
            )
        })?;
    let name = crate::store::redact_url(url);
    Ok(ironcage_audit::AuditLog::new(
        Box::new(SqlAuditStore::new(db, rt.handle().clone(), &name)),
        None,
    ))
}
