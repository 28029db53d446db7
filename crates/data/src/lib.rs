//! Deduplication for the Vouch data layer.
//!
//! Contributors submit text items; the network must credit each piece of content once.
//! This crate finds out which items are the same, in three steps:
//!
//! * **Content ids.** Every item gets [`item_id`], a domain-separated BLAKE3 hash of its
//!   exact bytes. Items with the same id are exact duplicates and collapse at once.
//! * **MinHash over word shingles.** Each distinct item is [`normalize`]d (lowercase,
//!   punctuation and whitespace runs turned into single spaces) and cut into shingles of
//!   `shingle_words` consecutive words. A [`MinHasher`] keeps, for each of `perms` seeded
//!   hash functions, the smallest hash over the shingles; the fraction of equal slots of
//!   two [`Signature`]s estimates the Jaccard similarity of their shingle sets.
//! * **LSH banding.** The signature is cut into `bands` bands of `rows` slots, and items
//!   whose band slices coincide in at least one band become candidate pairs
//!   ([`LshIndex`]). A pair of Jaccard similarity `s` becomes a candidate with
//!   probability `1 - (1 - s^rows)^bands` (the S-curve,
//!   [`DedupParams::candidate_probability`]), so only likely pairs are compared instead of
//!   all of them. Candidates whose estimated Jaccard reaches the threshold are near
//!   duplicates.
//!
//! An optional confirmation hook sees every pair that passed the threshold and may veto
//! it or attach a score; the node plugs MiniLM embedding cosine similarity in there.
//! Exact and near pairs are joined into clusters, and the input order is the order of
//! contribution: the lowest index of a cluster is its original, the rest are duplicates.
//!
//! The core is pure and deterministic: no clock, no files, no global randomness. The hash
//! functions are seeded only from [`DedupParams::seed`] (through ChaCha) and fixed
//! constants, and parallel work (rayon) is merged in a fixed order, so a report is
//! identical across runs, thread counts and machines. [`corpus`] generates labelled
//! synthetic corpora for measuring precision and recall.

pub mod corpus;
mod dedup;
mod hash;
mod lsh;
mod minhash;

pub use dedup::{dedup, Collection, Confirm, NearPair, Report, Verdict};
pub use lsh::LshIndex;
pub use minhash::{MinHasher, Signature};

use serde::{Deserialize, Serialize};
use vouch_types::Hash32;

/// Domain string of [`item_id`]: a data item's content id can never equal any other kind
/// of Vouch hash.
pub const ITEM_DOMAIN: &str = "vouch 2026 data item v1";

/// The content id of one data item: BLAKE3 in domain [`ITEM_DOMAIN`] over the exact UTF-8
/// bytes of the text. Two items are exact duplicates when their ids are equal; any change,
/// even of whitespace or case, gives a different id.
pub fn item_id(text: &str) -> Hash32 {
    Hash32::digest(ITEM_DOMAIN, &[text.as_bytes()])
}

/// The normalised form from which shingles are cut.
///
/// Words are the maximal runs of alphanumeric characters (Unicode `Alphabetic` or
/// `Numeric`) of the original text; each word is lowercased and the words are joined with
/// single spaces. So every run of other characters (spaces, punctuation, symbols) becomes
/// one space, and there is no leading or trailing space. A text without any alphanumeric
/// character normalises to the empty string.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            gap = true;
        }
    }
    out
}

/// Why deduplication could not run.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum DataError {
    /// Shingles must contain at least one word.
    #[error("invalid dedup params: shingle_words must be at least 1")]
    ShingleWords,
    /// The signature must have at least one slot and bands and rows must be positive.
    #[error("invalid dedup params: perms, bands and rows must all be at least 1 (perms {perms}, bands {bands}, rows {rows})")]
    ZeroSize {
        /// Configured number of MinHash permutations.
        perms: usize,
        /// Configured number of LSH bands.
        bands: usize,
        /// Configured number of rows per band.
        rows: usize,
    },
    /// The LSH bands must tile the signature exactly.
    #[error("invalid dedup params: bands * rows must equal perms ({bands} * {rows} != {perms})")]
    Banding {
        /// Configured number of MinHash permutations.
        perms: usize,
        /// Configured number of LSH bands.
        bands: usize,
        /// Configured number of rows per band.
        rows: usize,
    },
    /// The near-duplicate threshold is a Jaccard similarity in (0, 1].
    #[error("invalid dedup params: jaccard threshold must be in (0, 1], got {0}")]
    Jaccard(f64),
    /// Item indices are `u32`, and an [`LshIndex`] holds fewer than 2^32 (item, band)
    /// entries (with 64 bands, about 67 million items).
    #[error("too many items: {0} (indices are u32 and the LSH index holds under 2^32 item-band entries)")]
    TooManyItems(usize),
    /// A signature does not have the length the index was built for.
    #[error("signature has {got} slots, expected {expected}")]
    SignatureLength {
        /// Slots the index expects (bands * rows).
        expected: usize,
        /// Slots the signature has.
        got: usize,
    },
}

/// Tuning of deduplication.
///
/// The defaults (3-word shingles, 128 permutations in 64 bands of 2 rows, threshold 0.35)
/// are tuned on [`corpus::labelled`]: lightly edited copies there have shingle Jaccard
/// similarity of about 0.39 and up, independently written documents on the same topic at
/// most about 0.18, and the threshold sits between the two. With 2 rows per band the
/// S-curve is above 0.999 at 0.35, so banding practically never hides a pair above the
/// threshold; the price is more candidate checks for pairs around 0.1–0.3, each a
/// comparison of 128 slots. The crate's tests print the precision and recall reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DedupParams {
    /// Words per shingle (default 3).
    pub shingle_words: usize,
    /// MinHash permutations, i.e. signature slots (default 128).
    pub perms: usize,
    /// LSH bands (default 64).
    pub bands: usize,
    /// Signature slots per band (default 2); `bands * rows` must equal `perms`.
    pub rows: usize,
    /// A candidate pair is a near duplicate when its estimated Jaccard similarity is at
    /// least this (default 0.35).
    pub jaccard: f64,
    /// Seed of the MinHash permutations. Signatures are only comparable between hashers
    /// with the same seed, permutation count and shingle length.
    pub seed: u64,
}

impl Default for DedupParams {
    fn default() -> Self {
        DedupParams {
            shingle_words: 3,
            perms: 128,
            bands: 64,
            rows: 2,
            jaccard: 0.35,
            seed: 0x766f_7563_6864_6475,
        }
    }
}

impl DedupParams {
    /// Checks that the parameters describe a usable configuration.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.shingle_words == 0 {
            return Err(DataError::ShingleWords);
        }
        if self.perms == 0 || self.bands == 0 || self.rows == 0 {
            return Err(DataError::ZeroSize {
                perms: self.perms,
                bands: self.bands,
                rows: self.rows,
            });
        }
        if self.bands.checked_mul(self.rows) != Some(self.perms) {
            return Err(DataError::Banding {
                perms: self.perms,
                bands: self.bands,
                rows: self.rows,
            });
        }
        if !(self.jaccard > 0.0 && self.jaccard <= 1.0) {
            return Err(DataError::Jaccard(self.jaccard));
        }
        Ok(())
    }

    /// The LSH S-curve: the probability that a pair whose shingle sets have Jaccard
    /// similarity `s` shares at least one band, `1 - (1 - s^rows)^bands`. (`s` is clamped
    /// to [0, 1].) This is the chance the pair is compared at all; it must be close to 1
    /// above the threshold for good recall and small for unrelated pairs to keep the
    /// number of comparisons low.
    pub fn candidate_probability(&self, s: f64) -> f64 {
        let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
        let rows = i32::try_from(self.rows).unwrap_or(i32::MAX);
        let bands = i32::try_from(self.bands).unwrap_or(i32::MAX);
        1.0 - (1.0 - s.powi(rows)).powi(bands)
    }

    /// The similarity at which the S-curve is steepest, roughly `(1/bands)^(1/rows)`:
    /// pairs well above it are almost always compared, pairs well below almost never.
    pub fn lsh_midpoint(&self) -> f64 {
        if self.bands == 0 || self.rows == 0 {
            return 1.0;
        }
        (1.0 / self.bands as f64).powf(1.0 / self.rows as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_examples() {
        assert_eq!(normalize("Hello,   World!"), "hello world");
        assert_eq!(normalize("  --a--b--  "), "a b");
        assert_eq!(normalize("It's 2026.\nNew\tline"), "it s 2026 new line");
        assert_eq!(normalize("ÉCOLE Straße"), "école straße");
        assert_eq!(normalize("?!  ..."), "");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn item_id_is_stable_and_exact() {
        assert_eq!(item_id("abc"), item_id("abc"));
        assert_ne!(item_id("abc"), item_id("abc "));
        assert_ne!(item_id("abc"), item_id("Abc"));
        assert_eq!(item_id("abc"), Hash32::digest(ITEM_DOMAIN, &[b"abc"]));
    }

    #[test]
    fn validate_rejects_bad_params() {
        assert_eq!(DedupParams::default().validate(), Ok(()));
        let p = DedupParams {
            shingle_words: 0,
            ..Default::default()
        };
        assert_eq!(p.validate(), Err(DataError::ShingleWords));
        let p = DedupParams {
            bands: 30,
            ..Default::default()
        };
        assert!(matches!(p.validate(), Err(DataError::Banding { .. })));
        let p = DedupParams {
            perms: 0,
            bands: 0,
            ..Default::default()
        };
        assert!(matches!(p.validate(), Err(DataError::ZeroSize { .. })));
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let p = DedupParams {
                jaccard: bad,
                ..Default::default()
            };
            assert!(matches!(p.validate(), Err(DataError::Jaccard(_))));
        }
        let p = DedupParams {
            bands: usize::MAX,
            rows: 2,
            ..Default::default()
        };
        assert!(matches!(p.validate(), Err(DataError::Banding { .. })));
    }

    #[test]
    fn s_curve_is_monotone() {
        let p = DedupParams::default();
        assert_eq!(p.candidate_probability(0.0), 0.0);
        assert_eq!(p.candidate_probability(1.0), 1.0);
        let mut last = 0.0;
        for i in 1..=100 {
            let q = p.candidate_probability(i as f64 / 100.0);
            assert!(q >= last);
            last = q;
        }
        let m = p.lsh_midpoint();
        assert!(p.candidate_probability(m) > 0.3 && p.candidate_probability(m) < 0.8);
    }

    #[test]
    fn params_round_trip_and_fill_defaults() {
        let p = DedupParams::default();
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<DedupParams>(&s).unwrap(), p);
        let partial: DedupParams = serde_json::from_str(r#"{"jaccard":0.6}"#).unwrap();
        assert_eq!(partial.jaccard, 0.6);
        assert_eq!(partial.perms, p.perms);
    }
}
