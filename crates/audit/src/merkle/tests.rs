//! The Merkle code against published RFC 6962/9162 vectors (transparency-dev/merkle's
//! test data) and against a brute-force transcription of the RFC's recursive definitions
//! for every tree size up to 70 and every pair m <= n.

use super::*;

fn hx(s: &str) -> Hash {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn vector_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    })
    .collect()
}

/// Roots of the trees of the first 1..=8 vector leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn vector_tree(n: usize) -> MemTree {
    let mut t = MemTree::new();
    for l in &vector_leaves()[..n] {
        t.push(leaf_hash(l));
    }
    t
}

#[test]
fn empty_tree_root() {
    assert_eq!(
        empty_root(),
        hx("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(MemTree::new().root(), empty_root());
}

#[test]
fn published_roots() {
    for n in 1..=8 {
        let t = vector_tree(n);
        assert_eq!(t.root(), hx(ROOTS[n - 1]), "size {n}");
        assert_eq!(root(&t, n as u64).unwrap(), hx(ROOTS[n - 1]), "size {n}");
    }
}

#[test]
fn published_inclusion_proofs() {
    // (leaf index, tree size, proof), leaf index 0-based.
    let cases: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let leaves = vector_leaves();
    for &(index, size, want) in cases {
        let t = vector_tree(size as usize);
        let want: Vec<Hash> = want.iter().map(|s| hx(s)).collect();
        assert_eq!(
            inclusion_proof(&t, index, size).unwrap(),
            want,
            "{index}/{size}"
        );
        let leaf = leaf_hash(&leaves[index as usize]);
        let r = hx(ROOTS[size as usize - 1]);
        verify_inclusion(index, size, &leaf, &want, &r).unwrap();
        for bad in corrupted(&want, &r) {
            assert!(verify_inclusion(index, size, &leaf, &bad, &r).is_err());
        }
        assert!(verify_inclusion(index ^ 1, size, &leaf, &want, &r).is_err() || size == 1);
        assert!(verify_inclusion(index, size * 2, &leaf, &want, &r).is_err());
    }
}

#[test]
fn published_consistency_proofs() {
    let cases: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for &(old, new, want) in cases {
        let t = vector_tree(new as usize);
        let want: Vec<Hash> = want.iter().map(|s| hx(s)).collect();
        assert_eq!(
            consistency_proof(&t, old, new).unwrap(),
            want,
            "{old}->{new}"
        );
        let (r1, r2) = (hx(ROOTS[old as usize - 1]), hx(ROOTS[new as usize - 1]));
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
        if !want.is_empty() {
            for bad in corrupted(&want, &r1) {
                assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
            }
            assert!(verify_consistency(old, new, &r2, &r1, &want).is_err());
            assert!(verify_consistency(old - 1, new, &r1, &r2, &want).is_err());
            assert!(verify_consistency(old + 1, new, &r1, &r2, &want).is_err());
            assert!(verify_consistency(old, new * 2, &r1, &r2, &want).is_err());
        }
    }
}

/// Every mutation of a valid proof that must not verify: a flipped bit in each hash, a
/// hash removed, one added at either end, two swapped.
fn corrupted(proof: &[Hash], some: &Hash) -> Vec<Vec<Hash>> {
    let mut out = Vec::new();
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 8;
        out.push(p);
        let mut p = proof.to_vec();
        p.remove(i);
        out.push(p);
    }
    let mut p = proof.to_vec();
    p.push(*some);
    out.push(p);
    let mut p = vec![*some];
    p.extend_from_slice(proof);
    out.push(p);
    if proof.len() > 1 && proof[0] != proof[1] {
        let mut p = proof.to_vec();
        p.swap(0, 1);
        out.push(p);
    }
    out
}

// --- The RFC's recursive definitions, transcribed literally, as the reference. ---

fn ref_mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => leaf_hash(&d[0]),
        n => {
            let k = ref_split(n);
            node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

fn ref_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = ref_split(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = ref_split(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

#[test]
fn matches_brute_force_reference_for_every_size_and_pair() {
    const MAX: usize = 70;
    let data: Vec<Vec<u8>> = (0..MAX)
        .map(|i| format!("entry {i}").into_bytes())
        .collect();
    let mut tree = MemTree::new();
    let mut roots = vec![empty_root()];
    for (n, d) in data.iter().enumerate() {
        tree.push(leaf_hash(d));
        let want = ref_mth(&data[..=n]);
        assert_eq!(tree.root(), want, "frontier root at size {}", n + 1);
        assert_eq!(root(&tree, n as u64 + 1).unwrap(), want);
        roots.push(want);
    }
    for n in 1..=MAX {
        let frontier = Frontier::from_nodes(&tree, n as u64).unwrap();
        assert_eq!(frontier.root(), roots[n], "frontier from nodes at {n}");
        for m in 0..n {
            let p = inclusion_proof(&tree, m as u64, n as u64).unwrap();
            assert_eq!(p, ref_path(m, &data[..n]), "inclusion {m} in {n}");
            let leaf = leaf_hash(&data[m]);
            verify_inclusion(m as u64, n as u64, &leaf, &p, &roots[n]).unwrap();
            // The same proof must not vouch for a neighbour or another size.
            if n > 1 {
                let other = leaf_hash(&data[(m + 1) % n]);
                assert!(verify_inclusion(m as u64, n as u64, &other, &p, &roots[n]).is_err());
            }
            // ...nor against another tree's root. (The same path may fit another size:
            // the signed checkpoint binds size and root together.)
            if n > 1 {
                assert!(verify_inclusion(m as u64, n as u64, &leaf, &p, &roots[n - 1]).is_err());
            }
        }
        for m in 0..=n {
            let p = consistency_proof(&tree, m as u64, n as u64).unwrap();
            let want = if m == 0 {
                vec![]
            } else {
                ref_subproof(m, &data[..n], true)
            };
            assert_eq!(p, want, "consistency {m} -> {n}");
            verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &p).unwrap();
            if m > 0 && m < n {
                for bad in corrupted(&p, &roots[0]) {
                    assert!(
                        verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &bad).is_err(),
                        "corrupted consistency {m} -> {n} verified"
                    );
                }
                // A different old tree of the same size is not consistent.
                let mut forged = data[..m].to_vec();
                forged[m - 1] = b"forged".to_vec();
                let r = ref_mth(&forged);
                assert!(verify_consistency(m as u64, n as u64, &r, &roots[n], &p).is_err());
            }
        }
    }
}
