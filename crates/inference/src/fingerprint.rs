//! Activation fingerprint: a compact commitment to the final hidden states.
//!
//! For each chunk of positions (the prompt, then every [`CHUNK_TOKENS`] generated
//! positions) the provider takes the [`TOP_K`] entries of largest magnitude in the
//! chunk's hidden states, flattened, and commits to them as one polynomial over the prime
//! field GF(65497): the x of an entry is its flat index reduced by an injective modulus
//! `m` (the largest `m <= 65497` under which the chunk's top-k indices stay distinct),
//! the y is the value rounded to IEEE half precision (its 16 bits are always below 65497
//! for finite values). The proof is `m` and the k monomial coefficients: 2 + 2k bytes,
//! 258 B for k = 128.
//!
//! The verifier recomputes the hidden states, takes *its own* top-k, evaluates the
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
pub const SCHEME: &str = "topk128-gf65497-f16-chunk32-v1";

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

/// Commits to one chunk of hidden states (any number of rows, flattened).
pub fn commit_chunk(values: &[f32]) -> ChunkProof {
    let idx = top_k(values, TOP_K);
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

/// Splits hidden-state rows into fingerprint chunks: the prompt's rows, then generated
/// rows in groups of [`CHUNK_TOKENS`]. `rows` is `[prompt_len + generated] * hidden`.
pub fn chunk_ranges(prompt_rows: usize, total_rows: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(1 + total_rows.saturating_sub(prompt_rows) / CHUNK_TOKENS + 1);
    out.push(0..prompt_rows);
    let mut s = prompt_rows;
    while s < total_rows {
        let e = (s + CHUNK_TOKENS).min(total_rows);
        out.push(s..e);
        s = e;
    }
    out
}

/// Commits to every chunk of a run's hidden states.
pub fn commit(hidden: &[f32], hidden_dim: usize, prompt_rows: usize) -> Vec<ChunkProof> {
    let total = hidden.len() / hidden_dim;
    chunk_ranges(prompt_rows, total)
        .into_iter()
        .map(|r| commit_chunk(&hidden[r.start * hidden_dim..r.end * hidden_dim]))
        .collect()
}

/// How close a recomputed chunk must be. An entry of the verifier's top-k *matches* when
/// the committed value decoded at its index is within `abs + rel * |own value|`; a chunk
/// passes when at least `min_matches` of the k entries match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
    pub min_matches: usize,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            abs: 1e-3,
            rel: 4e-3,
            min_matches: 115,
        }
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
        self.matches >= tol.min_matches.min(self.k)
    }
}

/// Compares the verifier's own hidden states for a chunk with the provider's proof.
pub fn compare_chunk(proof: &ChunkProof, own: &[f32], tol: &Tolerance) -> ChunkComparison {
    let idx = top_k(own, TOP_K);
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
        let p = commit_chunk(&v);
        assert_eq!(p.to_bytes().len(), 258);
        let c = compare_chunk(&p, &v, &Tolerance::default());
        assert_eq!(c.matches, 128);
        assert!(c.max_rel_err < 1e-3);
    }

    #[test]
    fn large_prompt_chunks_find_a_modulus() {
        let v = random_rows(2, 700 * 576);
        let p = commit_chunk(&v);
        assert!(p.modulus as u32 <= PRIME);
        assert_eq!(compare_chunk(&p, &v, &Tolerance::default()).matches, 128);
    }

    #[test]
    fn different_states_fail() {
        let v = random_rows(3, 32 * 576);
        let w = random_rows(4, 32 * 576);
        let p = commit_chunk(&v);
        let c = compare_chunk(&p, &w, &Tolerance::default());
        assert!(c.matches < 5, "{c:?}");
        // A 1% change in every value is also caught.
        let scaled: Vec<f32> = v.iter().map(|x| x * 1.01).collect();
        assert!(!compare_chunk(&p, &scaled, &Tolerance::default()).passes(&Tolerance::default()));
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
            assert_eq!(compare_chunk(&p, &v, &Tolerance::default()).matches, 0);
        }
    }
}
