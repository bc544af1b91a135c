//! Where complete subtree hashes sit in a tree file: post-order, the order in which appends
//! complete them (leaf, then every parent it completes), so the file only ever grows.

/// Number of nodes stored for `n` leaves.
pub fn node_count(n: u64) -> u64 {
    2 * n - n.count_ones() as u64
}

/// Position of complete subtree (level, index).
pub fn node_pos(level: u32, index: u64) -> u64 {
    let last_leaf = ((index + 1) << level) - 1;
    node_count(last_leaf) + level as u64
}

/// The (level, index) at position `pos` (inverse of [`node_pos`]).
pub fn pos_node(pos: u64) -> (u32, u64) {
    // The leaf count n with node_count(n) <= pos < node_count(n + 1).
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

/// The largest n with node_count(n) <= nodes (how many leaves a tree file of `nodes`
/// hashes covers completely).
pub fn leaves_for_nodes(nodes: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, nodes);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if node_count(mid) <= nodes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::Frontier;

    #[test]
    fn post_order_positions() {
        // Leaves 0,1 then their parent; leaf 2, leaf 3, parent (1,1), parent (2,0); leaf 4.
        let want = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (pos, (level, index)) in want.into_iter().enumerate() {
            assert_eq!(node_pos(level, index), pos as u64);
        }
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
        for n in 0..300 {
            assert_eq!(leaves_for_nodes(node_count(n)), n);
            if n > 0 {
                assert_eq!(leaves_for_nodes(node_count(n) - 1), n - 1);
            }
        }
    }
}
