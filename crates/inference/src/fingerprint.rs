//! Activation fingerprint: a compact commitment to the final hidden states.
//!
//! The positions of a run (prompt and output alike) are cut into chunks of
//! [`CHUNK_TOKENS`]. In each chunk every row (position) contributes its `TOP_K / rows`
//! entries of largest magnitude (4 per row in a full chunk of 32), so that every position
//! is committed to: a flat top-k over the chunk would be taken over by the few positions
//! with huge activations (the first tokens act as attention sinks) and would barely see
//! an edited word. The selected entries are committed as one polynomial over the prime
//! field GF(65497): the x of an entry is its flat index in the chunk reduced by an
//! injective modulus `m` (the largest `m <= 65497` under which the indices stay
//! distinct), the y is the value rounded to IEEE half precision (its 16 bits are always
//! below 65497 for finite values). The proof is `m` and the monomial coefficients:
//! 2 + 2·128 = 258 B for a full chunk.
//!
//! The verifier recomputes the hidden states, makes *its own* selection, evaluates the
//! polynomial at each of its indices and compares the decoded half with its own value.
//! An index outside the provider's top-k evaluates to an unrelated field element, so it
//! counts as a mismatch; a model, quantization or input that moves the hidden states
//! moves both the top-k set and the values. The tolerance is in [`Tolerance`]; its
//! calibration is in docs/verification.md.

use half::f16;
use vouch_types::ChunkProof;

pub const PRIME: u32 = 65497;
pub const TOP_K: usize = 128;
pub const CHUNK_TOKENS: usize = 32;
pub const SCHEME: &str = "rowtop4-gf65497-f16-chunk32-v1";

fn mul(a: u32, b: u32) -> u32 {
    ((a as u64 * b as u64) % PRIME as u64) as u32
}
fn add(a: u32, b: u32) -> u32 {
    (a + b) % PRIME
}
fn sub(a: u32, b: u32) -> u32 {
    (a + PRIME - b) % PRIME
}
fn inv(a: u32) -> u32 {
    // Fermat: a^(p-2).
    let (mut base, mut e, mut r) = (a, PRIME - 2, 1u32);
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Indices of the `k` entries of largest magnitude, ties broken by lower index.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    let key = |i: usize| values[i].abs();
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let cmp = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// Entries selected in a chunk of `rows` rows of `dim` values: the top `TOP_K / rows` of
/// each row (at least 1), as flat indices, row by row.
pub fn select(values: &[f32], dim: usize) -> Vec<usize> {
    let rows = values.len() / dim;
    if rows == 0 {
        return Vec::new();
    }
    let per_row = (TOP_K / rows).clamp(1, dim);
    let mut out = Vec::with_capacity(rows * per_row);
    for r in 0..rows {
        out.extend(
            top_k(&values[r * dim..(r + 1) * dim], per_row)
                .into_iter()
                .map(|i| r * dim + i),
        );
    }
    out
}

/// Number of committed entries in a chunk of `rows` rows.
pub fn points_in_chunk(rows: usize, dim: usize) -> usize {
    if rows == 0 {
        0
    } else {
        rows * (TOP_K / rows).clamp(1, dim)
    }
}

/// Half-precision bits of `v`, clamped to the finite range (NaN becomes 0).
pub fn encode_value(v: f32) -> u16 {
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-65504.0, 65504.0)
    };
    f16::from_f32(v).to_bits()
}

fn injective_modulus(indices: &[usize]) -> Option<u32> {
    let mut seen = vec![false; PRIME as usize];
    let lo = indices.len().max(2) as u32;
    for m in (lo..=PRIME).rev() {
        let mut ok = true;
        let mut touched = Vec::with_capacity(indices.len());
        for &i in indices {
            let x = i % m as usize;
            if seen[x] {
                ok = false;
                break;
            }
            seen[x] = true;
            touched.push(x);
        }
        for x in touched {
            seen[x] = false;
        }
        if ok {
            return Some(m);
        }
    }
    None
}

/// Monomial coefficients of the polynomial of degree < n through (xs, ys), in GF(p).
fn interpolate(xs: &[u32], ys: &[u32]) -> Vec<u32> {
    let n = xs.len();
    // Newton divided differences.
    let mut dd = ys.to_vec();
    for j in 1..n {
        for i in (j..n).rev() {
            dd[i] = mul(sub(dd[i], dd[i - 1]), inv(sub(xs[i], xs[i - j])));
        }
    }
    // Expand Newton form to monomials: p = dd[n-1]; p = p*(x - x_i) + dd[i].
    let mut coeffs = vec![0u32; n];
    for i in (0..n).rev() {
        // coeffs <- coeffs * (x - xs[i]) + dd[i]
        let mut next = vec![0u32; n];
        for d in 0..n {
            if coeffs[d] == 0 {
                continue;
            }
            if d + 1 < n {
                next[d + 1] = add(next[d + 1], coeffs[d]);
            }
            next[d] = sub(next[d], mul(coeffs[d], xs[i]));
        }
        next[0] = add(next[0], dd[i]);
        coeffs = next;
    }
    coeffs
}

fn evaluate(coeffs: &[u16], x: u32) -> u32 {
    coeffs
        .iter()
        .rev()
        .fold(0u32, |acc, &c| add(mul(acc, x), c as u32 % PRIME))
}

/// Commits to one chunk of hidden states (`rows * dim` values).
pub fn commit_chunk(values: &[f32], dim: usize) -> ChunkProof {
    let idx = select(values, dim);
    let m = injective_modulus(&idx).expect("k <= 65497 distinct indices always have a modulus");
    let xs: Vec<u32> = idx.iter().map(|&i| (i % m as usize) as u32).collect();
    let ys: Vec<u32> = idx
        .iter()
        .map(|&i| encode_value(values[i]) as u32)
        .collect();
    let coeffs = interpolate(&xs, &ys)
        .into_iter()
        .map(|c| c as u16)
        .collect();
    ChunkProof {
        modulus: m as u16,
        coeffs,
    }
}

/// Splits `total_rows` positions into fingerprint chunks of [`CHUNK_TOKENS`].
pub fn chunk_ranges(total_rows: usize) -> Vec<std::ops::Range<usize>> {
    (0..total_rows.div_ceil(CHUNK_TOKENS))
        .map(|c| c * CHUNK_TOKENS..((c + 1) * CHUNK_TOKENS).min(total_rows))
        .collect()
}

/// Commits to every chunk of a run's hidden states (`rows * hidden_dim` values).
pub fn commit(hidden: &[f32], hidden_dim: usize) -> Vec<ChunkProof> {
    chunk_ranges(hidden.len() / hidden_dim)
        .into_iter()
        .map(|r| {
            commit_chunk(
                &hidden[r.start * hidden_dim..r.end * hidden_dim],
                hidden_dim,
            )
        })
        .collect()
}

/// How close a recomputed chunk must be. An entry of the verifier's selection *matches*
/// when the committed value decoded at its index is within `abs + rel * |own value|`; a
/// chunk passes when the share of matching entries is at least `min_match_fraction`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
    pub min_match_fraction: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            abs: 1e-3,
            rel: 4e-3,
            min_match_fraction: 0.9,
        }
    }
}

impl Tolerance {
    /// Matches needed in a chunk of `k` committed entries.
    pub fn needed(&self, k: usize) -> usize {
        ((k as f32) * self.min_match_fraction).ceil() as usize
    }
}

/// Outcome of comparing one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkComparison {
    pub matches: usize,
    pub k: usize,
    /// Largest relative error among matching entries.
    pub max_rel_err: f32,
    /// Mean relative error over all k entries, mismatches counted as 1.0.
    pub mean_rel_err: f32,
}

impl ChunkComparison {
    pub fn passes(&self, tol: &Tolerance) -> bool {
        self.matches >= tol.needed(self.k)
    }
}

/// Compares the verifier's own hidden states for a chunk with the provider's proof.
pub fn compare_chunk(
    proof: &ChunkProof,
    own: &[f32],
    dim: usize,
    tol: &Tolerance,
) -> ChunkComparison {
    let idx = select(own, dim);
    let m = proof.modulus as usize;
    let mut matches = 0;
    let mut max_rel = 0f32;
    let mut sum_rel = 0f32;
    for &i in &idx {
        let v = own[i];
        let y = if m == 0 {
            u32::MAX
        } else {
            evaluate(&proof.coeffs, (i % m) as u32)
        };
        let rel = if y < 0x7C00 || (0x8000..0xFC00).contains(&y) {
            let d = f16::from_bits(y as u16).to_f32();
            let err = (d - v).abs();
            if err <= tol.abs + tol.rel * v.abs() {
                matches += 1;
                let r = err / v.abs().max(1e-6);
                max_rel = max_rel.max(r);
                r
            } else {
                1.0
            }
        } else {
            1.0
        };
        sum_rel += rel.min(1.0);
    }
    ChunkComparison {
        matches,
        k: idx.len(),
        max_rel_err: max_rel,
        mean_rel_err: if idx.is_empty() {
            0.0
        } else {
            sum_rel / idx.len() as f32
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_rows(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-4.0f32..4.0)).collect()
    }

    #[test]
    fn polynomial_reproduces_points() {
        let xs: Vec<u32> = (0..128).map(|i| i * 7 + 3).collect();
        let ys: Vec<u32> = (0..128).map(|i| (i * 911 + 5) % PRIME).collect();
        let c: Vec<u16> = interpolate(&xs, &ys)
            .into_iter()
            .map(|c| c as u16)
            .collect();
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(evaluate(&c, *x), *y);
        }
    }

    #[test]
    fn honest_chunk_matches_fully_and_is_258_bytes() {
        let v = random_rows(1, 32 * 576);
        let p = commit_chunk(&v, 576);
        assert_eq!(p.to_bytes().len(), 258);
        let c = compare_chunk(&p, &v, 576, &Tolerance::default());
        assert_eq!(c.matches, 128);
        assert!(c.max_rel_err < 1e-3);
    }

    #[test]
    fn partial_chunks_commit_every_row() {
        for rows in [1, 3, 20, 31] {
            let v = random_rows(rows as u64, rows * 576);
            let p = commit_chunk(&v, 576);
            assert_eq!(p.coeffs.len(), points_in_chunk(rows, 576));
            assert!(p.coeffs.len() <= TOP_K && p.coeffs.len() >= rows);
            let c = compare_chunk(&p, &v, 576, &Tolerance::default());
            assert_eq!(c.matches, c.k);
        }
        assert_eq!(chunk_ranges(70), vec![0..32, 32..64, 64..70]);
    }

    #[test]
    fn one_changed_row_is_visible() {
        let v = random_rows(9, 32 * 576);
        let p = commit_chunk(&v, 576);
        let mut w = v.clone();
        for x in &mut w[5 * 576..6 * 576] {
            *x *= 1.05;
        }
        assert_eq!(
            compare_chunk(&p, &w, 576, &Tolerance::default()).matches,
            124
        );
    }

    #[test]
    fn different_states_fail() {
        let v = random_rows(3, 32 * 576);
        let w = random_rows(4, 32 * 576);
        let p = commit_chunk(&v, 576);
        let c = compare_chunk(&p, &w, 576, &Tolerance::default());
        assert!(c.matches < 5, "{c:?}");
        // A 1% change in every value is also caught.
        let scaled: Vec<f32> = v.iter().map(|x| x * 1.01).collect();
        assert!(
            !compare_chunk(&p, &scaled, 576, &Tolerance::default()).passes(&Tolerance::default())
        );
    }

    #[test]
    fn garbage_proofs_do_not_panic() {
        let v = random_rows(5, 576);
        for p in [
            ChunkProof {
                modulus: 0,
                coeffs: vec![],
            },
            ChunkProof {
                modulus: 1,
                coeffs: vec![65535; 3],
            },
        ] {
            assert_eq!(compare_chunk(&p, &v, 576, &Tolerance::default()).matches, 0);
        }
    }
}
