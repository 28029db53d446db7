//! Binary Merkle tree over 32-byte leaves with inclusion proofs.
//!
//! Leaves and inner nodes are hashed under different domains (no second-preimage
//! confusion between a leaf and a node). An odd node at the end of a level is promoted
//! unchanged. The root of the empty tree is the hash of the empty string under the
//! leaf domain.

use vouch_types::Hash32;

const LEAF: &str = "vouch 2026 merkle leaf v1";
const NODE: &str = "vouch 2026 merkle node v1";

pub fn leaf_hash(data: &[u8]) -> Hash32 {
    Hash32::digest(LEAF, &[data])
}

fn node_hash(l: &Hash32, r: &Hash32) -> Hash32 {
    Hash32::digest(NODE, &[l.as_bytes(), r.as_bytes()])
}

/// The level above `level`: pairs hashed, an odd last node promoted unchanged.
fn parents(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|p| {
            if p.len() == 2 {
                node_hash(&p[0], &p[1])
            } else {
                p[0]
            }
        })
        .collect()
}

/// Root over already-hashed leaves.
pub fn root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return leaf_hash(&[]);
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = parents(&level);
    }
    level[0]
}

/// Sibling path for leaf `index`: each step is (sibling, sibling_is_left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub index: u64,
    pub leaves: u64,
    pub path: Vec<Hash32>,
}

pub fn prove(leaves: &[Hash32], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sib = i ^ 1;
        if sib < level.len() {
            path.push(level[sib]);
        }
        level = parents(&level);
        i /= 2;
    }
    Some(Proof {
        index: index as u64,
        leaves: leaves.len() as u64,
        path,
    })
}

/// Checks that `leaf` is at `proof.index` in a tree with root `root`.
pub fn verify(root_hash: &Hash32, leaf: &Hash32, proof: &Proof) -> bool {
    if proof.index >= proof.leaves {
        return false;
    }
    let mut acc = *leaf;
    let mut i = proof.index;
    let mut n = proof.leaves;
    let mut path = proof.path.iter();
    while n > 1 {
        let sib = i ^ 1;
        if sib < n {
            let Some(s) = path.next() else { return false };
            acc = if i.is_multiple_of(2) {
                node_hash(&acc, s)
            } else {
                node_hash(s, &acc)
            };
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    path.next().is_none() && acc == *root_hash
}

/// One level of a multiproof walk: for each known node `(index, hash)` (sorted), its
/// sibling is either known too or comes from `sibling(index)`; returns the parents.
fn level_up(
    n: usize,
    cur: &[(usize, Hash32)],
    mut sibling: impl FnMut(usize) -> Option<Hash32>,
) -> Option<Vec<(usize, Hash32)>> {
    let mut next = Vec::with_capacity(cur.len());
    let mut i = 0;
    while i < cur.len() {
        let (idx, h) = cur[i];
        if idx % 2 == 0 {
            if idx + 1 < n {
                let r = if i + 1 < cur.len() && cur[i + 1].0 == idx + 1 {
                    i += 1;
                    cur[i].1
                } else {
                    sibling(idx + 1)?
                };
                next.push((idx / 2, node_hash(&h, &r)));
            } else {
                next.push((idx / 2, h));
            }
        } else {
            let l = sibling(idx - 1)?;
            next.push((idx / 2, node_hash(&l, &h)));
        }
        i += 1;
    }
    Some(next)
}

fn sorted_unique(indices: &[usize], n: usize) -> bool {
    !indices.is_empty()
        && indices.windows(2).all(|w| w[0] < w[1])
        && indices.last().is_some_and(|&i| i < n)
}

/// Sibling hashes that, together with the leaves at `indices` (sorted, distinct), rebuild
/// the root: one proof for many leaves, sharing every node they have in common (a range
/// of `m` adjacent leaves needs about `2 log2 n` hashes, not `m log2 n`).
pub fn prove_many(leaves: &[Hash32], indices: &[usize]) -> Option<Vec<Hash32>> {
    if !sorted_unique(indices, leaves.len()) {
        return None;
    }
    let mut level = leaves.to_vec();
    let mut cur: Vec<(usize, Hash32)> = indices.iter().map(|&i| (i, leaves[i])).collect();
    let mut proof = Vec::new();
    while level.len() > 1 {
        cur = level_up(level.len(), &cur, |j| {
            proof.push(level[j]);
            Some(level[j])
        })?;
        level = parents(&level);
    }
    Some(proof)
}

/// The root of an `n`-leaf tree from some of its leaves (`(index, hash)`, sorted by
/// index, distinct) and the proof from [`prove_many`]. `None` when the proof does not fit
/// (too short, too long, or indices out of order or range).
pub fn root_from_many(n: usize, known: &[(usize, Hash32)], proof: &[Hash32]) -> Option<Hash32> {
    let idx: Vec<usize> = known.iter().map(|k| k.0).collect();
    if !sorted_unique(&idx, n) {
        return None;
    }
    let mut it = proof.iter();
    let mut cur = known.to_vec();
    let mut level_n = n;
    while level_n > 1 {
        cur = level_up(level_n, &cur, |_| it.next().copied())?;
        level_n = level_n.div_ceil(2);
    }
    if it.next().is_some() {
        return None;
    }
    Some(cur[0].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiproofs_rebuild_the_root_and_reject_tampering() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for n in 1..=40usize {
            let leaves: Vec<Hash32> = (0..n).map(|i| leaf_hash(&[i as u8, 1])).collect();
            let r = root(&leaves);
            for _ in 0..20 {
                let mut idx: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.3)).collect();
                if idx.is_empty() {
                    idx.push(rng.gen_range(0..n));
                }
                let proof = prove_many(&leaves, &idx).unwrap();
                let known: Vec<(usize, Hash32)> = idx.iter().map(|&i| (i, leaves[i])).collect();
                assert_eq!(root_from_many(n, &known, &proof), Some(r), "n={n} {idx:?}");
                // A changed leaf, a missing or extra proof hash: another root or none.
                let mut bad = known.clone();
                bad[0].1 = leaf_hash(b"other");
                assert_ne!(root_from_many(n, &bad, &proof), Some(r));
                if !proof.is_empty() {
                    assert_eq!(root_from_many(n, &known, &proof[1..]), None);
                }
                let mut long = proof.clone();
                long.push(r);
                assert_eq!(root_from_many(n, &known, &long), None);
            }
            // A contiguous range costs about two paths, not one per leaf.
            if n >= 16 {
                let range: Vec<usize> = (0..n / 2).collect();
                let p = prove_many(&leaves, &range).unwrap();
                assert!(p.len() <= 2 * (usize::BITS - n.leading_zeros()) as usize);
            }
        }
        assert!(prove_many(&[leaf_hash(b"a")], &[]).is_none());
        assert!(prove_many(&[leaf_hash(b"a")], &[1]).is_none());
    }

    #[test]
    fn every_leaf_proves_and_tampering_fails() {
        for n in 1..=17usize {
            let leaves: Vec<Hash32> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = prove(&leaves, i).unwrap();
                assert!(verify(&r, &leaves[i], &p), "n={n} i={i}");
                let other = leaf_hash(b"x");
                assert!(!verify(&r, &other, &p));
                let mut bad = p.clone();
                bad.index = (i as u64 + 1) % n as u64;
                if n > 1 {
                    assert!(!verify(&r, &leaves[i], &bad));
                }
            }
            assert!(prove(&leaves, n).is_none());
        }
    }
}
