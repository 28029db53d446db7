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

/// Root over already-hashed leaves.
pub fn root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return leaf_hash(&[]);
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node_hash(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
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
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node_hash(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
