//! Word shingles and MinHash signatures.

use crate::hash::mix64;
use crate::DedupParams;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Start value of every word and shingle hash.
const WORD_START: u64 = 0x776f_7264_7368_696e;
/// Odd multiplier of the word and shingle hashes.
const WORD_MUL: u64 = 0x9fb2_1c65_1e98_df25;
/// Multipliers of the MurmurHash3 32-bit finalizer used by the permutations.
const PERM_MUL_A: u32 = 0x85eb_ca6b;
const PERM_MUL_B: u32 = 0xc2b2_ae35;
/// Permutations processed together in the MinHash loop (kept in registers).
const LANES: usize = 16;

/// Hash of one word given as its lowercased UTF-8 bytes, read 8 bytes at a time.
///
/// With `ascii_lower`, the bytes are ASCII letters and digits that still need
/// lowercasing, which for these bytes is setting bit 0x20 (digits already have it).
#[inline(always)]
fn word_hash(bytes: &[u8], ascii_lower: bool) -> u64 {
    let lower = if ascii_lower {
        0x2020_2020_2020_2020
    } else {
        0
    };
    let mut h = WORD_START;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = ((h ^ (u64::from_le_bytes(w) | lower)).wrapping_mul(WORD_MUL)).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let mask = u64::MAX >> (64 - 8 * rest.len() as u32);
        h = ((h ^ (u64::from_le_bytes(w) | (lower & mask))).wrapping_mul(WORD_MUL)).rotate_left(31);
    }
    mix64(h ^ (bytes.len() as u64))
}

/// Calls `f` with the hash of every word of [`crate::normalize`]`(text)`, in order,
/// without building the normalised string.
#[inline]
pub(crate) fn for_each_word(text: &str, mut f: impl FnMut(u64)) {
    if text.is_ascii() {
        let bytes = text.as_bytes();
        let mut start = None;
        for (i, b) in bytes.iter().enumerate() {
            match (b.is_ascii_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    f(word_hash(&bytes[s..i], true));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            f(word_hash(&bytes[s..], true));
        }
    } else {
        let mut word: Vec<u8> = Vec::with_capacity(32);
        let mut buf = [0u8; 4];
        for c in text.chars() {
            if c.is_alphanumeric() {
                if c.is_ascii() {
                    word.push(c.to_ascii_lowercase() as u8);
                } else {
                    for lc in c.to_lowercase() {
                        word.extend_from_slice(lc.encode_utf8(&mut buf).as_bytes());
                    }
                }
            } else if !word.is_empty() {
                f(word_hash(&word, false));
                word.clear();
            }
        }
        if !word.is_empty() {
            f(word_hash(&word, false));
        }
    }
}

/// Value of a shingle under one permutation: the shingle hash folded to 32 bits, XORed
/// with the permutation's key, then the MurmurHash3 32-bit finalizer (a bijection, so two
/// shingles tie only if their folded hashes are equal). 32-bit lanes let the compiler
/// run many permutations per vector instruction.
#[inline(always)]
fn perm_value(x32: u32, key: u32) -> u32 {
    let mut h = x32 ^ key;
    h ^= h >> 16;
    h = h.wrapping_mul(PERM_MUL_A);
    h ^= h >> 13;
    h = h.wrapping_mul(PERM_MUL_B);
    h ^ (h >> 16)
}

/// Folds a 64-bit shingle hash to the 32 bits the permutations use.
#[inline(always)]
fn fold32(x: u64) -> u32 {
    (x ^ (x >> 32)) as u32
}

/// A MinHash signature: one `u32` slot per permutation, holding the smallest permuted
/// shingle hash of the text.
///
/// Slots are 32 bits (and the permutations see 32-bit folds of the 64-bit shingle
/// hashes): two different shingles look equal with probability about 2^-32, far below
/// the estimator's own noise (about `sqrt(J(1-J)/perms)`), at half the memory of 64-bit
/// slots. A text without words has every slot at `u32::MAX` (a *blank* signature), which
/// is never similar to anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(pub Vec<u32>);

impl Signature {
    /// Whether this is the signature of a text without words (all slots `u32::MAX`).
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(|&v| v == u32::MAX)
    }

    /// Estimated Jaccard similarity of the two shingle sets: the fraction of slots in
    /// which the signatures agree. Returns 0.0 when the lengths differ or either
    /// signature is blank, so a text without words never resembles another.
    pub fn jaccard(&self, other: &Signature) -> f64 {
        if self.0.len() != other.0.len() || self.is_blank() || other.is_blank() {
            return 0.0;
        }
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / self.0.len() as f64
    }
}

/// Computes shingles and MinHash signatures for one parameter set.
///
/// The 32-bit permutation keys are drawn from ChaCha20 seeded with [`DedupParams::seed`], so
/// two hashers built from equal parameters produce identical signatures.
#[derive(Clone, Debug)]
pub struct MinHasher {
    shingle_words: usize,
    keys: Vec<u32>,
}

impl MinHasher {
    /// Builds the hasher for `p.perms` permutations over `p.shingle_words`-word shingles.
    /// The parameters are not validated here (see [`DedupParams::validate`]); a
    /// `shingle_words` of 0 is treated as 1.
    pub fn new(p: &DedupParams) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(p.seed);
        let keys = (0..p.perms).map(|_| rng.next_u32()).collect();
        MinHasher {
            shingle_words: p.shingle_words.max(1),
            keys,
        }
    }

    /// Number of slots of the signatures this hasher produces.
    pub fn perms(&self) -> usize {
        self.keys.len()
    }

    /// Words per shingle.
    pub fn shingle_words(&self) -> usize {
        self.shingle_words
    }

    /// The set of shingle hashes of `text`, sorted and without repeats.
    ///
    /// A shingle is a run of `shingle_words` consecutive words of the normalised text,
    /// hashed order-sensitively from the words' hashes. A text with at least one word but
    /// fewer than `shingle_words` has a single shingle made of all its words; a text
    /// without words has none.
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let mut out = self.shingle_list(text);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Shingle hashes of `text` in text order, repeats included (MinHash does not need
    /// them sorted). Built in place over the word hashes.
    fn shingle_list(&self, text: &str) -> Vec<u64> {
        let mut words = Vec::with_capacity(text.len() / 5 + 1);
        for_each_word(text, |h| words.push(h));
        let k = self.shingle_words;
        if words.len() <= k {
            if !words.is_empty() {
                let h = shingle_hash(&words);
                words.clear();
                words.push(h);
            }
            return words;
        }
        let n = words.len() + 1 - k;
        // Shingle i reads words i..i+k and overwrites word i, which no later shingle reads.
        for i in 0..n {
            words[i] = shingle_hash(&words[i..i + k]);
        }
        words.truncate(n);
        words
    }

    /// The MinHash signature of `text`: for every permutation, the minimum permuted hash
    /// over the text's shingles. Blank (all `u32::MAX`) when the text has no words.
    pub fn signature(&self, text: &str) -> Signature {
        self.signature_of_shingles(&self.shingle_list(text))
    }

    /// The MinHash signature of a set (or list) of shingle hashes, such as
    /// [`MinHasher::shingles`] returns; repeats do not matter.
    pub fn signature_of_shingles(&self, shingles: &[u64]) -> Signature {
        let folded: Vec<u32> = shingles.iter().map(|&x| fold32(x)).collect();
        let mut slots = vec![u32::MAX; self.keys.len()];
        let mut slot_chunks = slots.chunks_exact_mut(LANES);
        let mut key_chunks = self.keys.chunks_exact(LANES);
        // Fixed-width blocks of permutations stay in registers while the shingles stream
        // past, which lets the compiler vectorise the block.
        for (out, keys) in (&mut slot_chunks).zip(&mut key_chunks) {
            let mut block = [0u32; LANES];
            block.copy_from_slice(keys);
            let mut acc = [u32::MAX; LANES];
            for &x in &folded {
                for (a, &k) in acc.iter_mut().zip(&block) {
                    *a = (*a).min(perm_value(x, k));
                }
            }
            out.copy_from_slice(&acc);
        }
        for (slot, &key) in slot_chunks
            .into_remainder()
            .iter_mut()
            .zip(key_chunks.remainder())
        {
            for &x in &folded {
                *slot = (*slot).min(perm_value(x, key));
            }
        }
        Signature(slots)
    }
}

/// Order-sensitive hash of a run of word hashes: multiply-xor over the words, then the
/// SplitMix64 finalizer.
#[inline(always)]
fn shingle_hash(words: &[u64]) -> u64 {
    let h = words
        .iter()
        .fold(WORD_START, |h, &w| (h ^ w).wrapping_mul(WORD_MUL));
    mix64(h ^ words.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize;

    fn word_hashes(text: &str) -> Vec<u64> {
        let mut v = Vec::new();
        for_each_word(text, |h| v.push(h));
        v
    }

    fn hash_word(w: &str) -> u64 {
        word_hash(w.as_bytes(), false)
    }

    #[test]
    fn word_hashes_follow_normalize() {
        for text in [
            "Hello, World! It's   2026.",
            "ÉCOLE Straße -- naïve café",
            "İstanbul ΣΊΣΥΦΟΣ",
            "",
            "...",
            "one",
        ] {
            let norm = normalize(text);
            let expect: Vec<u64> = if norm.is_empty() {
                Vec::new()
            } else {
                norm.split(' ').map(hash_word).collect()
            };
            assert_eq!(word_hashes(text), expect, "{text:?}");
        }
        assert_eq!(word_hashes("Foo BAR"), word_hashes("foo bar"));
    }

    #[test]
    fn shingles_of_short_and_empty_texts() {
        let h = MinHasher::new(&DedupParams::default());
        assert!(h.shingles("").is_empty());
        assert!(h.shingles(" ?! ").is_empty());
        assert_eq!(h.shingles("a b").len(), 1);
        assert_ne!(h.shingles("a b"), h.shingles("b a"));
        assert_eq!(h.shingles("a b c").len(), 1);
        assert_eq!(h.shingles("a b c d").len(), 2);
        // Repeated shingles count once.
        assert_eq!(h.shingles("a b c a b c a b c").len(), 3);
        assert!(h.signature("").is_blank());
        assert!(!h.signature("a").is_blank());
    }

    #[test]
    fn signatures_are_reproducible() {
        let p = DedupParams::default();
        let a = MinHasher::new(&p).signature("the quick brown fox jumps over the lazy dog");
        let b = MinHasher::new(&p).signature("The quick brown fox, jumps over the lazy dog!");
        assert_eq!(a, b);
        assert_eq!(a.0.len(), p.perms);
        assert_eq!(a.jaccard(&b), 1.0);
        let other = MinHasher::new(&DedupParams {
            seed: 1,
            ..p.clone()
        });
        assert_ne!(other.signature("the quick brown fox"), a);
    }

    #[test]
    fn blocked_loop_matches_naive_minimum() {
        for perms in [1, 16, 20, 128] {
            let h = MinHasher::new(&DedupParams {
                perms,
                ..DedupParams::default()
            });
            let text = "one two three four five six seven eight nine ten eleven";
            let sh = h.shingles(text);
            let naive: Vec<u32> = h
                .keys
                .iter()
                .map(|&k| sh.iter().map(|&x| perm_value(fold32(x), k)).min().unwrap())
                .collect();
            assert_eq!(h.signature(text).0, naive, "perms {perms}");
        }
    }

    #[test]
    fn signature_values_do_not_drift() {
        // Signatures may be stored and compared across versions and machines: any change
        // to normalisation, hashing or key derivation must show up here.
        let h = MinHasher::new(&DedupParams::default());
        let sig = h.signature("The quick brown fox jumps over the lazy dog.");
        assert_eq!(sig.0[..4], PINNED_FOX[..]);
        // The ASCII fast path and the general path agree.
        let ascii = h.signature("naive cafe au lait, long words: abcdefghijklmnopq");
        let unicode = h.signature("NAIVE Cafe — au lait « long words » ABCDEFGHIJKLMNOPQ");
        assert_eq!(ascii, unicode);
    }

    const PINNED_FOX: [u32; 4] = [1_907_570, 1_430_712_318, 149_724_397, 291_940_105];

    #[test]
    fn blank_signatures_never_match() {
        let h = MinHasher::new(&DedupParams::default());
        let e = h.signature("");
        assert_eq!(e.jaccard(&e), 0.0);
        assert_eq!(e.jaccard(&h.signature("x y z")), 0.0);
        assert_eq!(
            Signature(vec![1, 2]).jaccard(&Signature(vec![1, 2, 3])),
            0.0
        );
    }
}
