//! RFC 9162 section 2.1 Merkle tree hashing, proofs and their verifiers.
//!
//! Leaves are `H(0x00 || entry)`, interior nodes `H(0x01 || left || right)`, a tree of n
//! leaves splits at the largest power of two below n, and odd nodes are never duplicated.
//! Proof *generation* reads complete-subtree hashes from a [`Nodes`] source (the store keeps
//! them, so proofs cost O(log² n) reads at any size); *verification* is the RFC's algorithm
//! verbatim and needs nothing but the proof.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Hashes of complete subtrees: `node(level, index)` is the hash of leaves
/// `[index << level, (index + 1) << level)`.
pub trait Nodes {
    fn node(&self, level: u32, index: u64) -> std::io::Result<Hash>;
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]). In every range a proof asks for, `start` is a multiple of the
/// largest power of two not above `end - start`, so the left part is always one node.
pub fn range_hash(nodes: &dyn Nodes, start: u64, end: u64) -> std::io::Result<Hash> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return nodes.node(level, start >> level);
    }
    let k = split(n);
    let left = range_hash(nodes, start, start + k)?;
    let right = range_hash(nodes, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The tree head (root) of the first `size` leaves.
pub fn root(nodes: &dyn Nodes, size: u64) -> std::io::Result<Hash> {
    range_hash(nodes, 0, size)
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1).
pub fn inclusion_proof(nodes: &dyn Nodes, index: u64, size: u64) -> std::io::Result<Vec<Hash>> {
    assert!(index < size, "leaf {index} outside tree of size {size}");
    let mut proof = Vec::new();
    // Walk down from the root, collecting the sibling subtrees, then reverse: the RFC
    // lists them from the leaf up.
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split(end - start);
        if index < start + k {
            proof.push(range_hash(nodes, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(nodes, start, start + k)?);
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the trees of the first `old` and `new` leaves
/// (RFC 9162 2.1.4.1). Empty when `old` is 0 or equals `new`.
pub fn consistency_proof(nodes: &dyn Nodes, old: u64, new: u64) -> std::io::Result<Vec<Hash>> {
    assert!(old <= new, "consistency from {old} to smaller {new}");
    let mut proof = Vec::new();
    if old == 0 || old == new {
        return Ok(proof);
    }
    // SUBPROOF(m, D[start:end], b), unrolled.
    let (mut m, mut start, mut end, mut whole) = (old, 0u64, new, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(range_hash(nodes, start, end)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(range_hash(nodes, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(nodes, start, start + k)?);
            m -= k;
            start += k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesBackwards { old: u64, new: u64 },
}

/// RFC 9162 2.1.3.2: verifies that `leaf` is at `index` in the tree with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 2.1.4.2: verifies that the tree (`new`, `new_root`) extends (`old`, `old_root`).
/// Equal sizes need an empty proof and equal roots; an empty old tree is consistent with
/// everything (the RFC leaves both cases to the caller).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesBackwards { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first.
/// Feeding it leaves one by one gives the root at every size in O(1) amortised hashing;
/// `verify` uses it to recompute the tree from the entries alone.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored complete subtrees.
    pub fn from_nodes(nodes: &dyn Nodes, size: u64) -> std::io::Result<Frontier> {
        let mut peaks = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                peaks.push((level, nodes.node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Frontier { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds a leaf; calls `completed(level, index, hash)` for the leaf and for every
    /// subtree this leaf completes, in that order (the post-order a tree file stores).
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let index = self.size;
        completed(0, index, &leaf);
        let mut cur = (0u32, leaf);
        while let Some(&(level, left)) = self.peaks.last() {
            if level != cur.0 {
                break;
            }
            self.peaks.pop();
            let hash = node_hash(&left, &cur.1);
            let level = level + 1;
            completed(level, index >> level, &hash);
            cur = (level, hash);
        }
        self.peaks.push(cur);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut r)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            r = node_hash(left, &r);
        }
        r
    }
}

/// Complete-subtree hashes kept in memory, level by level. Used by tests, by bundle
/// verification, and by `verify` to name the first differing leaf.
#[derive(Debug, Clone, Default)]
pub struct MemTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemTree {
    pub fn new() -> MemTree {
        MemTree::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.push(leaf, |level, _index, hash| {
            let level = level as usize;
            if levels.len() <= level {
                levels.push(Vec::new());
            }
            levels[level].push(*hash);
        });
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

impl Nodes for MemTree {
    fn node(&self, level: u32, index: u64) -> std::io::Result<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no complete subtree at level {level} index {index}"),
                )
            })
    }
}

#[cfg(test)]
mod tests;
