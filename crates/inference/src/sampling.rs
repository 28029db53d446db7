//! The sampling rule, as a pure function of (logits, parameters, seed, position).
//!
//! Each output position `i` draws one uniform number `u_i` from BLAKE3(seed, i), so a
//! verifier can check any position on its own, in any order, without replaying an RNG
//! stream. Temperature 0 means greedy (lowest id wins an exact tie). Otherwise the
//! candidates are sorted by probability (then id), cut to the smallest prefix whose mass
//! reaches `top_p`, renormalized, and the token whose cumulative interval contains `u_i`
//! is chosen.

use vouch_types::Sampling;

/// Logit slack accepted by [`check`] for greedy decoding: the claimed token's logit may
/// be this much below the verifier's maximum (near ties across machines).
pub const GREEDY_LOGIT_MARGIN: f32 = 1e-3;
/// Probability slack accepted by [`check`] at interval edges and at the top-p cut.
pub const PROB_MARGIN: f64 = 1e-4;
/// Tokens less likely than this are never candidates (part of the rule; it spares sorting
/// the whole vocabulary at every position: their total mass is below 1e-4 for any
/// vocabulary under 100k tokens).
pub const MIN_PROB: f64 = 1e-9;

/// The output tokens generated so far, as the penalties see them: a count per token.
/// Generation and verification push every output token in order and ask
/// [`History::apply`] for the logits the rule picks from at the next position.
#[derive(Debug, Clone, Default)]
pub struct History {
    counts: std::collections::HashMap<u32, u32>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
    }
    /// The model's logits less the penalties: `presence_penalty` once for every token
    /// that appeared and `frequency_penalty` per appearance. Borrowed unchanged when the
    /// sampling has no penalties.
    pub fn apply<'a>(&self, logits: &'a [f32], s: &Sampling) -> std::borrow::Cow<'a, [f32]> {
        if !s.has_penalties() || self.counts.is_empty() {
            return std::borrow::Cow::Borrowed(logits);
        }
        let mut v = logits.to_vec();
        for (&t, &c) in &self.counts {
            if let Some(l) = v.get_mut(t as usize) {
                *l -= s.presence_penalty + s.frequency_penalty * c as f32;
            }
        }
        std::borrow::Cow::Owned(v)
    }
}

/// The uniform draw for output position `index`.
pub fn uniform(seed: u64, index: u32) -> f64 {
    let mut h = blake3::Hasher::new_derive_key("vouch 2026 sampling uniform v1");
    h.update(&seed.to_le_bytes());
    h.update(&index.to_le_bytes());
    let b = h.finalize();
    let mut a = [0u8; 8];
    a.copy_from_slice(&b.as_bytes()[..8]);
    (u64::from_le_bytes(a) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Sorted nucleus: (token, probability) by probability descending then id, cut at top-p,
/// with probabilities renormalized over the nucleus. Also returns the total mass of the
/// nucleus before renormalizing and the full sorted list's cumulative mass at each rank.
struct Nucleus {
    order: Vec<(u32, f64)>,
    kept: usize,
}

fn nucleus(logits: &[f32], temperature: f32, top_p: f32) -> Nucleus {
    let t = temperature as f64;
    let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - mx) / t).exp())
        .collect();
    let z: f64 = weights.iter().sum();
    let mut order: Vec<(u32, f64)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (i as u32, w / z))
        .filter(|p| p.1 >= MIN_PROB)
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top_p = (top_p as f64).clamp(0.0, 1.0);
    let mut cum = 0.0;
    let mut kept = order.len();
    for (i, p) in order.iter().enumerate() {
        cum += p.1;
        if cum >= top_p {
            kept = i + 1;
            break;
        }
    }
    Nucleus { order, kept }
}

/// Picks the token for output position `index`.
pub fn sample(logits: &[f32], s: &Sampling, index: u32) -> u32 {
    if s.is_greedy() {
        return argmax(logits);
    }
    let nu = nucleus(logits, s.temperature, s.top_p);
    let mass: f64 = nu.order[..nu.kept].iter().map(|p| p.1).sum();
    let target = uniform(s.seed, index) * mass;
    let mut cum = 0.0;
    for p in &nu.order[..nu.kept] {
        cum += p.1;
        if target < cum {
            return p.0;
        }
    }
    nu.order[nu.kept - 1].0
}

/// Why a claimed token is not what the sampling rule gives.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleMismatch {
    #[error("greedy decoding picks token {expected} (logit {best:.4}), the receipt has {claimed} (logit {claimed_logit:.4})")]
    NotArgmax {
        expected: u32,
        claimed: u32,
        best: f32,
        claimed_logit: f32,
    },
    #[error("token {claimed} lies outside the top-p nucleus (mass before it {mass_before:.6})")]
    OutsideNucleus { claimed: u32, mass_before: f64 },
    #[error("seeded draw u={u:.6} selects token {expected}, the receipt has {claimed} (interval {lo:.6}..{hi:.6})")]
    WrongDraw {
        claimed: u32,
        expected: u32,
        u: f64,
        lo: f64,
        hi: f64,
    },
    #[error("token id {0} is outside the vocabulary")]
    OutOfVocab(u32),
}

/// Checks that `claimed` is what the rule gives at `index`, allowing the documented
/// margins for near ties (the verifier's logits come from its own run, never the
/// provider's).
pub fn check(logits: &[f32], s: &Sampling, index: u32, claimed: u32) -> Result<(), SampleMismatch> {
    let Some(&claimed_logit) = logits.get(claimed as usize) else {
        return Err(SampleMismatch::OutOfVocab(claimed));
    };
    if s.is_greedy() {
        let best = argmax(logits);
        let best_logit = logits[best as usize];
        if best == claimed || claimed_logit >= best_logit - GREEDY_LOGIT_MARGIN {
            return Ok(());
        }
        return Err(SampleMismatch::NotArgmax {
            expected: best,
            claimed,
            best: best_logit,
            claimed_logit,
        });
    }
    let nu = nucleus(logits, s.temperature, s.top_p);
    let Some(rank) = nu.order.iter().position(|p| p.0 == claimed) else {
        return Err(SampleMismatch::OutsideNucleus {
            claimed,
            mass_before: nu.order.iter().map(|p| p.1).sum(),
        });
    };
    let mass_before: f64 = nu.order[..rank].iter().map(|p| p.1).sum();
    if rank >= nu.kept && mass_before >= s.top_p as f64 + PROB_MARGIN {
        return Err(SampleMismatch::OutsideNucleus {
            claimed,
            mass_before,
        });
    }
    let mass: f64 = nu.order[..nu.kept.max(rank + 1)].iter().map(|p| p.1).sum();
    let lo = mass_before / mass;
    let hi = (mass_before + nu.order[rank].1) / mass;
    let u = uniform(s.seed, index);
    if u >= lo - PROB_MARGIN && u < hi + PROB_MARGIN {
        return Ok(());
    }
    Err(SampleMismatch::WrongDraw {
        claimed,
        expected: sample(logits, s, index),
        u,
        lo,
        hi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, p: f32, seed: u64) -> Sampling {
        Sampling {
            temperature: t,
            top_p: p,
            seed,
            max_tokens: 16,
            ..Sampling::greedy(16)
        }
    }

    #[test]
    fn penalties_lower_repeated_tokens_and_change_the_pick() {
        let logits = vec![3.0, 2.5, 0.0];
        let mut s = params(0.0, 1.0, 0);
        let mut h = History::new();
        h.push(0);
        h.push(0);
        // No penalty: borrowed as is.
        assert!(matches!(
            h.apply(&logits, &s),
            std::borrow::Cow::Borrowed(_)
        ));
        s.presence_penalty = 0.2;
        s.frequency_penalty = 0.2;
        let p = h.apply(&logits, &s);
        assert!((p[0] - 2.4).abs() < 1e-6, "{}", p[0]);
        assert_eq!(p[1], 2.5);
        assert_eq!(sample(&p, &s, 0), 1);
        // The unpenalized pick fails the check against the penalized logits.
        assert!(check(&p, &s, 0, 0).is_err());
        // Negative penalties favour repeats.
        s.presence_penalty = -1.0;
        s.frequency_penalty = 0.0;
        assert_eq!(sample(&h.apply(&[2.0, 2.5], &s), &s, 0), 0);
    }

    #[test]
    fn uniform_is_deterministic_and_in_range() {
        assert_eq!(uniform(7, 3), uniform(7, 3));
        assert_ne!(uniform(7, 3), uniform(7, 4));
        assert_ne!(uniform(7, 3), uniform(8, 3));
        for i in 0..1000 {
            let u = uniform(1, i);
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn sampled_tokens_pass_their_own_check() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        for seed in 0..20 {
            for (t, p) in [(0.0, 1.0), (0.7, 0.9), (1.0, 1.0), (1.5, 0.5)] {
                let s = params(t, p, seed);
                for idx in 0..20 {
                    let tok = sample(&logits, &s, idx);
                    check(&logits, &s, idx, tok).unwrap();
                }
            }
        }
    }

    #[test]
    fn wrong_tokens_are_rejected() {
        let logits = vec![0.0, 5.0, 1.0, 4.9];
        let g = params(0.0, 1.0, 0);
        assert_eq!(sample(&logits, &g, 0), 1);
        assert!(matches!(
            check(&logits, &g, 0, 3),
            Err(SampleMismatch::NotArgmax { .. })
        ));
        assert!(matches!(
            check(&logits, &g, 0, 9),
            Err(SampleMismatch::OutOfVocab(9))
        ));
        // With top_p small, only token 1 is in the nucleus.
        let s = params(1.0, 0.3, 5);
        assert!(matches!(
            check(&logits, &s, 0, 0),
            Err(SampleMismatch::OutsideNucleus { .. })
        ));
        // With everything in play, some seed gives a draw that excludes token 1.
        let s = params(1.0, 1.0, 0);
        let bad = (0..64).find(|&i| sample(&logits, &s, i) != 1).unwrap();
        assert!(matches!(
            check(&logits, &s, bad, 1),
            Err(SampleMismatch::WrongDraw { .. })
        ));
    }
}
