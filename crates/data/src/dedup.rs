//! Exact and near-duplicate detection over a collection of items.

use crate::hash::FixedState;
use crate::lsh::batch_candidates;
use crate::{item_id, DataError, DedupParams, LshIndex, MinHasher, Signature};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use vouch_types::Hash32;

/// A confirmed near-duplicate pair of items with different content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NearPair {
    /// The earlier item (lower index).
    pub a: u32,
    /// The later item; always `a < b`.
    pub b: u32,
    /// Estimated Jaccard similarity of the two shingle sets (fraction of equal MinHash
    /// slots).
    pub jaccard: f64,
    /// The score returned by the confirmation hook (for example an embedding cosine
    /// similarity), or `None` when no hook ran.
    pub confirm: Option<f32>,
}

/// What deduplication found.
///
/// Indices refer to the input order, which is the order of contribution: the lowest
/// index of a cluster is the original and earns the credit, the others are its
/// duplicates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Number of input items.
    pub items: usize,
    /// Content id ([`item_id`]) of every input item, in input order.
    pub ids: Vec<Hash32>,
    /// `(duplicate, original)` for every item whose content id occurred before; the
    /// original is the first occurrence. Sorted by duplicate.
    pub exact: Vec<(u32, u32)>,
    /// Near-duplicate pairs among first occurrences of distinct contents, sorted by
    /// `(a, b)`.
    pub near: Vec<NearPair>,
    /// Connected components of the exact and near pairs with at least two members; each
    /// sorted ascending, and the clusters sorted by their first (original) member.
    pub clusters: Vec<Vec<u32>>,
    /// Items that would earn credit: the original of each cluster and every item in no
    /// cluster, ascending.
    pub unique: Vec<u32>,
    /// Distinct candidate pairs the LSH bands proposed for comparison.
    pub candidates_checked: usize,
}

/// The confirmation hook: called with `(a, b, jaccard)`, `a < b`, for a pair whose
/// estimated Jaccard similarity reached the threshold; `Some(score)` accepts the pair,
/// `None` rejects it (the estimate lets a caller spend its costly check on borderline
/// pairs only).
pub type Confirm<'a> = Option<&'a mut dyn FnMut(u32, u32, f64) -> Option<f32>>;

/// Finds exact and near duplicates among `texts`.
///
/// Exact duplicates are items with equal [`item_id`]s. Among the first occurrences of
/// distinct contents, pairs proposed by LSH banding whose estimated Jaccard similarity is
/// at least `p.jaccard` are near-duplicate candidates; `confirm`, if given, is called for
/// each of them (in ascending `(a, b)` order, on the calling thread) and decides whether
/// it is reported, which is where the caller plugs in embedding similarity. Texts without
/// any word are only ever exact duplicates of identical texts.
///
/// To check a new batch against an existing collection, pass the existing texts first
/// and the new ones after them: a new item that duplicates an existing one then lands in
/// the existing item's cluster, whose original is the existing (lower) index. Or keep a
/// [`Collection`], which gives the same report without recomputing old signatures.
///
/// Signatures and band buckets are computed in parallel with rayon; the report is
/// identical for any number of threads.
pub fn dedup(
    texts: &[&str],
    p: &DedupParams,
    mut confirm: Confirm<'_>,
) -> Result<Report, DataError> {
    p.validate()?;
    let n = texts.len();
    u32::try_from(n).map_err(|_| DataError::TooManyItems(n))?;
    let ids: Vec<Hash32> = texts.par_iter().map(|t| item_id(t)).collect();

    let mut first: HashMap<Hash32, u32, FixedState> =
        HashMap::with_capacity_and_hasher(n, FixedState::default());
    let mut exact = Vec::new();
    let mut reps = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let i = i as u32;
        match first.get(id) {
            Some(&orig) => exact.push((i, orig)),
            None => {
                first.insert(*id, i);
                reps.push(i);
            }
        }
    }
    drop(first);

    let hasher = MinHasher::new(p);
    let sigs: Vec<Signature> = reps
        .par_iter()
        .map(|&i| hasher.signature(texts[i as usize]))
        .collect();
    let keyed: Vec<(u32, &Signature)> = reps.iter().copied().zip(&sigs).collect();
    let candidates = batch_candidates(&keyed, p.bands, p.rows);

    // Item index -> position in `sigs`.
    let mut slot = vec![u32::MAX; n];
    for (k, &i) in reps.iter().enumerate() {
        slot[i as usize] = k as u32;
    }
    let sig_of = |i: u32| &sigs[slot[i as usize] as usize];
    let passing: Vec<(u32, u32, f64)> = candidates
        .par_iter()
        .filter_map(|&(a, b)| {
            let j = sig_of(a).jaccard(sig_of(b));
            (j >= p.jaccard).then_some((a, b, j))
        })
        .collect();

    let mut near = Vec::with_capacity(passing.len());
    for (a, b, jaccard) in passing {
        let score = match confirm.as_mut() {
            Some(f) => match f(a, b, jaccard) {
                Some(s) => Some(s),
                None => continue,
            },
            None => None,
        };
        near.push(NearPair {
            a,
            b,
            jaccard,
            confirm: score,
        });
    }

    let mut uf = MinUnion::new(n);
    for &(d, o) in &exact {
        uf.union(d, o);
    }
    for np in &near {
        uf.union(np.a, np.b);
    }
    Ok(assemble(ids, exact, near, candidates.len(), &mut uf))
}

/// Builds clusters and credit from the pairs.
fn assemble(
    ids: Vec<Hash32>,
    exact: Vec<(u32, u32)>,
    near: Vec<NearPair>,
    candidates_checked: usize,
    uf: &mut MinUnion,
) -> Report {
    let n = ids.len();
    let mut unique = Vec::new();
    let mut members: Vec<(u32, u32)> = Vec::new();
    for i in 0..n as u32 {
        let root = uf.find(i);
        if root == i {
            unique.push(i);
        }
        members.push((root, i));
    }
    let mut sizes = vec![0u32; n];
    for &(root, _) in &members {
        sizes[root as usize] += 1;
    }
    members.retain(|&(root, _)| sizes[root as usize] >= 2);
    members.sort_unstable();
    let clusters = members
        .chunk_by(|x, y| x.0 == y.0)
        .map(|run| run.iter().map(|&(_, i)| i).collect())
        .collect();
    Report {
        items: n,
        ids,
        exact,
        near,
        clusters,
        unique,
        candidates_checked,
    }
}

/// Union-find whose root is always the smallest member, i.e. the cluster's original.
#[derive(Clone, Debug, Default)]
struct MinUnion {
    parent: Vec<u32>,
}

impl MinUnion {
    fn new(n: usize) -> Self {
        MinUnion {
            parent: (0..n as u32).collect(),
        }
    }

    fn push(&mut self) -> u32 {
        let i = self.parent.len() as u32;
        self.parent.push(i);
        i
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra < rb {
            self.parent[rb as usize] = ra;
        } else if rb < ra {
            self.parent[ra as usize] = rb;
        }
    }
}

/// What [`Collection::add`] decided about one new item, at the time it was added.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// The item's index in the collection.
    pub index: u32,
    /// The item's content id.
    pub id: Hash32,
    /// The first earlier item with the same content id, if any.
    pub exact_of: Option<u32>,
    /// Confirmed near-duplicate pairs between this item and earlier items (`b` is this
    /// item), sorted by `a`.
    pub near: Vec<NearPair>,
    /// The original (lowest index) of the item's cluster right after it was added; equal
    /// to `index` when the item is new content. A later item can join two clusters, so
    /// [`Collection::report`] is authoritative.
    pub original: u32,
}

/// A growing, deduplicated collection: existing items keep their signatures in an
/// [`LshIndex`], and each new batch is checked against everything before it.
///
/// Adding items batch by batch produces the same [`Collection::report`] as calling
/// [`dedup`] once on all texts in the same order (the confirmation hook is called for the
/// same pairs, though in a different order).
#[derive(Clone, Debug)]
pub struct Collection {
    params: DedupParams,
    hasher: MinHasher,
    lsh: LshIndex,
    first: HashMap<Hash32, u32, FixedState>,
    ids: Vec<Hash32>,
    /// Signature of each first occurrence; `None` for exact duplicates.
    sigs: Vec<Option<Signature>>,
    exact: Vec<(u32, u32)>,
    near: Vec<NearPair>,
    candidates_checked: usize,
    uf: MinUnion,
}

impl Collection {
    /// An empty collection; fails if the parameters do not validate.
    pub fn new(p: &DedupParams) -> Result<Self, DataError> {
        p.validate()?;
        Ok(Collection {
            params: p.clone(),
            hasher: MinHasher::new(p),
            lsh: LshIndex::new(p),
            first: HashMap::default(),
            ids: Vec::new(),
            sigs: Vec::new(),
            exact: Vec::new(),
            near: Vec::new(),
            candidates_checked: 0,
            uf: MinUnion::default(),
        })
    }

    /// The parameters the collection was built with.
    pub fn params(&self) -> &DedupParams {
        &self.params
    }

    /// Number of items added so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no item has been added.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends `texts` (indices continue from [`Collection::len`]) and reports, for each,
    /// its exact original and near duplicates among all earlier items, including earlier
    /// items of the same batch. `confirm` works as in [`dedup`]. Signatures of the batch
    /// are computed in parallel; the rest runs in input order. On error nothing is added.
    pub fn add(
        &mut self,
        texts: &[&str],
        mut confirm: Confirm<'_>,
    ) -> Result<Vec<Verdict>, DataError> {
        let start = self.ids.len();
        let total = start.saturating_add(texts.len());
        if u32::try_from(total).is_err() || !self.lsh.has_room_for(texts.len()) {
            return Err(DataError::TooManyItems(total));
        }
        let ids: Vec<Hash32> = texts.par_iter().map(|t| item_id(t)).collect();
        // Decide first occurrences sequentially, then hash only those in parallel.
        let mut exact_of = Vec::with_capacity(texts.len());
        for (k, id) in ids.iter().enumerate() {
            let i = (start + k) as u32;
            exact_of.push(match self.first.get(id) {
                Some(&orig) => Some(orig),
                None => {
                    self.first.insert(*id, i);
                    None
                }
            });
        }
        let sigs: Vec<Option<Signature>> = texts
            .par_iter()
            .zip(&exact_of)
            .map(|(t, e)| e.is_none().then(|| self.hasher.signature(t)))
            .collect();

        let mut verdicts = Vec::with_capacity(texts.len());
        for ((id, orig), sig) in ids.into_iter().zip(exact_of).zip(sigs) {
            let i = self.uf.push();
            self.ids.push(id);
            let mut near = Vec::new();
            if let Some(o) = orig {
                self.exact.push((i, o));
                self.uf.union(i, o);
            } else if let Some(sig) = &sig {
                let cands = self.lsh.candidates(sig);
                self.candidates_checked += cands.len();
                for a in cands {
                    let Some(Some(other)) = self.sigs.get(a as usize) else {
                        continue;
                    };
                    let jaccard = other.jaccard(sig);
                    if jaccard < self.params.jaccard {
                        continue;
                    }
                    let score = match confirm.as_mut() {
                        Some(f) => match f(a, i, jaccard) {
                            Some(s) => Some(s),
                            None => continue,
                        },
                        None => None,
                    };
                    self.uf.union(a, i);
                    near.push(NearPair {
                        a,
                        b: i,
                        jaccard,
                        confirm: score,
                    });
                }
                self.lsh.insert(i, sig)?;
            }
            self.sigs.push(sig);
            self.near.extend(near.iter().cloned());
            verdicts.push(Verdict {
                index: i,
                id,
                exact_of: orig,
                near,
                original: self.uf.find(i),
            });
        }
        Ok(verdicts)
    }

    /// The report over everything added so far, equal to [`dedup`] over all texts in the
    /// order they were added.
    pub fn report(&self) -> Report {
        let mut near = self.near.clone();
        near.sort_by_key(|np| (np.a, np.b));
        let mut uf = self.uf.clone();
        assemble(
            self.ids.clone(),
            self.exact.clone(),
            near,
            self.candidates_checked,
            &mut uf,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_union_keeps_smallest_root() {
        let mut uf = MinUnion::new(6);
        uf.union(4, 5);
        uf.union(5, 2);
        uf.union(3, 4);
        assert_eq!(uf.find(5), 2);
        assert_eq!(uf.find(3), 2);
        uf.union(0, 3);
        assert_eq!(uf.find(4), 0);
        assert_eq!(uf.find(1), 1);
    }

    #[test]
    fn small_example() {
        let base = "the committee met on tuesday to discuss the budget for next year and agreed on most points";
        let near = "the committee met on tuesday to discuss the budget for next year and agreed on all points";
        let texts = [
            base,
            "something else entirely, with other words in it",
            near,
            base,
            "",
        ];
        let r = dedup(&texts, &DedupParams::default(), None).unwrap();
        assert_eq!(r.exact, vec![(3, 0)]);
        assert_eq!(r.near.len(), 1);
        assert_eq!((r.near[0].a, r.near[0].b), (0, 2));
        assert_eq!(r.clusters, vec![vec![0, 2, 3]]);
        assert_eq!(r.unique, vec![0, 1, 4]);
    }
}
