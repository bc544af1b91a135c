//! Everything in memory: for tests, and the reference behaviour for other stores.

use super::{layout, Appender, Done, EntryVisit, Head, Raw, ScanEnd, Store, StoreError, Visit};
use crate::merkle::{self, Hash, Nodes};

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

fn missing(seq: u64, size: u64) -> StoreError {
    StoreError::NoSuchEntry {
        path: "memory".into(),
        seq,
        size,
    }
}

impl Store for MemStore {
    fn name(&self) -> String {
        "memory".into()
    }

    fn append(&mut self, app: &mut dyn Appender) -> Result<Done, StoreError> {
        let head = Head {
            size: self.entries.len() as u64,
            last_leaf: self.entries.last().map(|e| merkle::leaf_hash(e)),
            first: self.entries.first().cloned(),
            repairs: Vec::new(),
        };
        let batch = app.entries(&head)?;
        let mut start = 0;
        for (end, leaf) in batch.ends.iter().zip(&batch.leaves) {
            self.entries.push(batch.bytes[start..end - 1].to_vec());
            self.tree.push(*leaf);
            let want = layout::node_count(self.entries.len() as u64);
            for pos in self.post_order.len() as u64..want {
                let (level, index) = layout::pos_node(pos);
                self.post_order
                    .push(
                        self.tree
                            .node(level, index)
                            .map_err(|e| StoreError::Unusable {
                                path: "memory".into(),
                                msg: e.to_string(),
                            })?,
                    );
            }
            start = *end;
        }
        let size = self.entries.len() as u64;
        let root = self.tree.root();
        if app.signs() && size > 0 {
            if let Some(note) = app.seal(size, &root) {
                self.checkpoint = Some((size, note));
            }
        }
        Ok(Done {
            size,
            root,
            warnings: Vec::new(),
        })
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len() as u64)
    }

    fn entries(&self, from: u64, to: u64, visit: &mut EntryVisit<'_>) -> Result<(), StoreError> {
        for s in from..to {
            let e = self
                .entries
                .get(s as usize)
                .ok_or_else(|| missing(s, self.entries.len() as u64))?;
            visit(s, e)?;
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.tree
            .node(level, index)
            .map_err(|e| StoreError::Unusable {
                path: "memory".into(),
                msg: e.to_string(),
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

    fn stored_locators(&self, _from: u64, _max: usize) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }

    fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(self.checkpoint.as_ref().map(|(_, n)| n.clone()))
    }

    fn take_repairs(&mut self) -> Vec<String> {
        Vec::new()
    }
}
