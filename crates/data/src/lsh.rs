//! LSH banding over MinHash signatures.

use crate::hash::{combine, mix64, FixedState};
use crate::{DataError, DedupParams, Signature};
use rayon::prelude::*;
use std::collections::HashMap;

/// Bucket key of one band: an order-sensitive hash of the band number and its slots.
#[inline]
fn band_key(band: usize, slots: &[u32]) -> u64 {
    let mut h = mix64(0x6c73_685f_6261_6e64 ^ band as u64);
    let mut pairs = slots.chunks_exact(2);
    for p in &mut pairs {
        h = combine(h, u64::from(p[0]) | (u64::from(p[1]) << 32));
    }
    if let [last] = pairs.remainder() {
        h = combine(h, u64::from(*last));
    }
    h
}

/// End of a bucket chain in [`LshIndex`].
const NONE: u32 = u32::MAX;

/// One stored (band, item) membership: the item and the previous member of its bucket.
#[derive(Clone, Copy, Debug)]
struct Entry {
    item: u32,
    next: u32,
}

/// An incremental LSH index: for every band, the buckets of items whose band slices
/// hashed to the same key.
///
/// Items are `u32` indices chosen by the caller. Blank signatures (texts without words)
/// are never stored, so they are never anybody's candidate. Storage is compact: each
/// band maps a bucket key to the newest member, and members are chained through one
/// shared array, about 30 bytes per item and band (64 bands: roughly 2 KB per item).
#[derive(Clone, Debug)]
pub struct LshIndex {
    bands: usize,
    rows: usize,
    items: usize,
    heads: Vec<HashMap<u64, u32, FixedState>>,
    entries: Vec<Entry>,
}

impl LshIndex {
    /// An empty index with `p.bands` bands of `p.rows` slots. The parameters should pass
    /// [`DedupParams::validate`]; the index accepts only signatures of `bands * rows`
    /// slots.
    pub fn new(p: &DedupParams) -> Self {
        LshIndex {
            bands: p.bands,
            rows: p.rows,
            items: 0,
            heads: (0..p.bands).map(|_| HashMap::default()).collect(),
            entries: Vec::new(),
        }
    }

    /// Number of signature slots the index expects.
    pub fn slots(&self) -> usize {
        self.bands.saturating_mul(self.rows)
    }

    /// Number of items inserted (blank signatures not counted).
    pub fn len(&self) -> usize {
        self.items
    }

    /// Whether no item has been inserted.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Adds `item` with its signature to its bucket in every band. A blank signature is
    /// accepted and ignored. Inserting the same item twice makes it appear once in
    /// [`LshIndex::candidates`].
    pub fn insert(&mut self, item: u32, sig: &Signature) -> Result<(), DataError> {
        self.check_len(sig)?;
        if sig.is_blank() {
            return Ok(());
        }
        if !self.has_room_for(1) {
            return Err(DataError::TooManyItems(self.items.saturating_add(1)));
        }
        for (band, (map, slots)) in self
            .heads
            .iter_mut()
            .zip(sig.0.chunks_exact(self.rows.max(1)))
            .enumerate()
        {
            let at = self.entries.len() as u32;
            let head = map.entry(band_key(band, slots)).or_insert(NONE);
            self.entries.push(Entry { item, next: *head });
            *head = at;
        }
        self.items += 1;
        Ok(())
    }

    /// Every inserted item that shares at least one band bucket with `sig`, sorted
    /// ascending and without repeats. Empty for a blank signature or one of the wrong
    /// length.
    pub fn candidates(&self, sig: &Signature) -> Vec<u32> {
        if self.check_len(sig).is_err() || sig.is_blank() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (band, (map, slots)) in self
            .heads
            .iter()
            .zip(sig.0.chunks_exact(self.rows.max(1)))
            .enumerate()
        {
            let mut at = map.get(&band_key(band, slots)).copied().unwrap_or(NONE);
            while let Some(e) = self.entries.get(at as usize) {
                out.push(e.item);
                at = e.next;
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `items` more signatures fit (chain positions are `u32`).
    pub(crate) fn has_room_for(&self, items: usize) -> bool {
        items
            .checked_mul(self.bands)
            .and_then(|e| e.checked_add(self.entries.len()))
            .is_some_and(|total| total < NONE as usize)
    }

    fn check_len(&self, sig: &Signature) -> Result<(), DataError> {
        if sig.0.len() != self.slots() {
            return Err(DataError::SignatureLength {
                expected: self.slots(),
                got: sig.0.len(),
            });
        }
        Ok(())
    }
}

/// All candidate pairs among a batch of signatures, for one-shot deduplication.
///
/// Instead of hash maps, each band sorts `(bucket key, item)` and pairs up the items of
/// every run of equal keys; bands are processed in parallel and the union is sorted, so
/// the result does not depend on the thread count. Memory is one band's keys per thread
/// plus the pairs. Returns pairs `(a, b)` with `a < b`, sorted, without repeats. Items
/// with blank signatures or the wrong length are skipped. Caution: a bucket shared by `m`
/// items yields `m * (m - 1) / 2` pairs.
pub(crate) fn batch_candidates(
    items: &[(u32, &Signature)],
    bands: usize,
    rows: usize,
) -> Vec<(u32, u32)> {
    let slots = bands.saturating_mul(rows);
    let live: Vec<(u32, &Signature)> = items
        .iter()
        .filter(|(_, s)| s.0.len() == slots && !s.is_blank())
        .copied()
        .collect();
    let rows = rows.max(1);
    let mut pairs: Vec<u64> = (0..bands)
        .into_par_iter()
        .flat_map_iter(|band| {
            let mut keyed: Vec<(u64, u32)> = live
                .iter()
                .map(|(item, sig)| {
                    let start = band * rows;
                    (band_key(band, &sig.0[start..start + rows]), *item)
                })
                .collect();
            keyed.sort_unstable();
            let mut out = Vec::new();
            for run in keyed.chunk_by(|x, y| x.0 == y.0) {
                for (i, &(_, a)) in run.iter().enumerate() {
                    for &(_, b) in &run[i + 1..] {
                        // Runs are sorted by item, so a <= b; equal items (inserted twice)
                        // are dropped.
                        if a < b {
                            out.push((u64::from(a) << 32) | u64::from(b));
                        }
                    }
                }
            }
            out
        })
        .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .map(|x| ((x >> 32) as u32, x as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MinHasher;

    #[test]
    fn index_and_batch_agree() {
        let p = DedupParams::default();
        let h = MinHasher::new(&p);
        let texts = [
            "alpha beta gamma delta epsilon zeta eta theta iota kappa",
            "alpha beta gamma delta epsilon zeta eta theta iota lambda",
            "completely different words in this sentence here",
            "",
            "alpha beta gamma delta epsilon zeta eta theta iota kappa",
        ];
        let sigs: Vec<Signature> = texts.iter().map(|t| h.signature(t)).collect();
        let items: Vec<(u32, &Signature)> = sigs
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s))
            .collect();
        let batch = batch_candidates(&items, p.bands, p.rows);
        let mut idx = LshIndex::new(&p);
        let mut incremental = Vec::new();
        for (i, s) in sigs.iter().enumerate() {
            for c in idx.candidates(s) {
                incremental.push((c, i as u32));
            }
            idx.insert(i as u32, s).unwrap();
        }
        incremental.sort_unstable();
        assert_eq!(batch, incremental);
        assert!(batch.contains(&(0, 4)));
        assert!(batch.contains(&(0, 1)));
        assert!(!batch.iter().any(|&(a, b)| a == 3 || b == 3));
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn wrong_length_is_rejected() {
        let p = DedupParams::default();
        let mut idx = LshIndex::new(&p);
        let short = Signature(vec![1, 2, 3]);
        assert_eq!(
            idx.insert(0, &short),
            Err(DataError::SignatureLength {
                expected: p.perms,
                got: 3
            })
        );
        assert!(idx.candidates(&short).is_empty());
        assert!(idx.is_empty());
    }
}
