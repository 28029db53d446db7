//! Spot-check audits: the provider commits to its execution trace while generating; an
//! auditor derives random challenges *after* the commitment, the provider opens the trace
//! rows those challenges need (with Merkle proofs), and the auditor recomputes one layer
//! at one position per challenge instead of the whole answer.
//!
//! ## The commitment
//!
//! Over the `P` positions fed to the model (prompt and every output token but the last)
//! and the `L` layers, the trace has residual rows `x[l][p]` (`l in 0..=L`) and key/value
//! rows `kv[l][p]` (`l in 0..L`); see `vouch_inference::trace`. Each family of rows is a
//! Merkle tree over positions; the `2L + 1` tree roots are the leaves of a top tree, in
//! the order `X_0 .. X_L, KV_0 .. KV_{L-1}`; the root signed in the receipt binds the
//! scheme, `L`, `P` and the top root.
//!
//! ## The checks
//!
//! - **Embedding, every position**: the auditor computes `x[0]` from the token ids itself
//!   and rebuilds `X_0`; nothing is opened for it (an edited token is always caught).
//! - **Layer check `(l, p)`**: opened `x[l][p]`, `kv[l][0..=p]` and `x[l+1][p]`. The
//!   auditor runs layer `l` at position `p` over the opened keys and values of the
//!   positions before it (the engine's own code, so an honest trace is reproduced to the
//!   bit) and compares the key/value row it gets with `kv[l][p]` and the residual it gets
//!   with `x[l+1][p]`.
//! - **Sampling check `i`**: opened `x[L][prompt + i - 1]`; final norm, output matrix, and
//!   the sampling rule with the receipt's seed must give output token `i`.
//!
//! Challenges come from `BLAKE3(receipt id, seed)`, where the seed is chain randomness
//! fixed after the receipt was committed; the layers of the layer checks are a random
//! permutation repeated, so `k >= L` layer checks visit every layer. The detection rates
//! and the economics are in docs/verification.md ("Spot checks").

use crate::{prepare, VerifyError};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use vouch_crypto::merkle;
use vouch_inference::llama::LayerInput;
use vouch_inference::sampling;
use vouch_inference::trace::{self, TraceHashes, TraceValues};
use vouch_inference::ChatModel;
use vouch_types::{Hash32, Receipt, TraceCommitment};

pub const SCHEME: &str = "trace-resid-kv-f32-blake3-v1";
const ROOT_DOMAIN: &str = "vouch 2026 trace root v1";
const CHALLENGE_DOMAIN: &str = "vouch 2026 spot challenge v1";
/// A recomputed row must match the opened one to this relative L2 distance. Our engine
/// reproduces honest rows exactly (distance 0); the slack is for conforming engines that
/// sum in another order.
pub const ROW_TOLERANCE: f32 = 1e-4;
/// Most values an opening may carry (a hostile provider cannot make an auditor allocate
/// without limit): 2^26 f32 = 256 MiB.
const MAX_OPEN_VALUES: usize = 1 << 26;

/// Root over the trees of one trace (see the module docs for the layout).
fn root_of(layers: usize, positions: usize, top: &Hash32) -> Hash32 {
    Hash32::digest(
        ROOT_DOMAIN,
        &[
            SCHEME.as_bytes(),
            &(layers as u32).to_le_bytes(),
            &(positions as u32).to_le_bytes(),
            top.as_bytes(),
        ],
    )
}

/// Index of a residual tree / key-value tree in the top tree.
fn x_tree(l: usize) -> usize {
    l
}
fn kv_tree(layers: usize, l: usize) -> usize {
    layers + 1 + l
}

/// The roots of the `2L + 1` trees.
fn tree_roots(h: &TraceHashes) -> Vec<Hash32> {
    h.x.iter()
        .chain(h.kv.iter())
        .map(|t| merkle::root(t))
        .collect()
}

/// The commitment a receipt carries for a trace.
pub fn commitment(h: &TraceHashes) -> TraceCommitment {
    let layers = h.layers();
    let positions = h.positions();
    TraceCommitment {
        scheme: SCHEME.to_string(),
        layers: layers as u32,
        positions: positions as u32,
        root: root_of(layers, positions, &merkle::root(&tree_roots(h))),
    }
}

/// One challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Recompute layer `layer` at position `pos`.
    Layer { layer: u32, pos: u32 },
    /// Recompute the logits that chose output token `index`.
    Sample { index: u32 },
}

/// Sampling checks among `k` checks: an eighth, at least one once `k >= 2` (a sampling
/// check streams the 28 MB output matrix; a layer check one 2 MB layer).
pub fn sampling_checks(k: usize) -> usize {
    if k >= 2 {
        (k / 8).max(1)
    } else {
        0
    }
}

/// The number of checks an audit runs for an answer of `n_out` tokens: one per 16 tokens,
/// between 8 and 32. With it an audit costs under 1% of generating the answer from 64
/// tokens on (docs/verification.md, "Spot checks", has the figures and the economics).
pub fn recommended_checks(n_out: usize) -> usize {
    (n_out / 16).clamp(8, 32)
}

/// Challenges for a receipt: `k` drawn checks, [`sampling_checks`] of them sampling checks
/// at distinct output indices before the last, the rest layer checks at distinct (layer,
/// position) pairs with layers visited in a random order, round after round; and the
/// sampling step of the last output token, which no trace row binds.
pub fn challenges(r: &Receipt, seed: &Hash32, k: usize) -> Result<Vec<Check>, VerifyError> {
    let t = r
        .trace
        .as_ref()
        .ok_or_else(|| VerifyError::Trace("the receipt carries no trace commitment".into()))?;
    let (layers, positions) = (t.layers as usize, t.positions as usize);
    let n_out = r.output_tokens.len();
    if layers == 0 || positions == 0 || n_out == 0 {
        return Err(VerifyError::Trace("empty trace".into()));
    }
    let d = Hash32::digest(CHALLENGE_DOMAIN, &[r.id().as_bytes(), seed.as_bytes()]);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*d.as_bytes());
    // The last output token is never fed back through the model, so no trace row binds
    // it: its sampling step is checked by every audit, beside the `k` drawn checks.
    let last = n_out as u32 - 1;
    let n_sample = sampling_checks(k).min(n_out - 1);
    let n_layer = (k - n_sample.min(k)).min(layers * positions);
    let mut out = Vec::with_capacity(k + 1);
    let mut outs: Vec<u32> = (0..last).collect();
    outs.shuffle(&mut rng);
    out.extend(
        outs[..n_sample]
            .iter()
            .map(|&index| Check::Sample { index }),
    );
    if k > 0 {
        out.push(Check::Sample { index: last });
    }
    let mut seen = BTreeSet::new();
    let mut order: Vec<usize> = Vec::new();
    while seen.len() < n_layer {
        if order.is_empty() {
            order = (0..layers).collect();
            order.shuffle(&mut rng);
        }
        let l = order.pop().expect("refilled");
        // A layer whose positions are all taken gives its turn away.
        if (0..positions).all(|p| seen.contains(&(l, p))) {
            continue;
        }
        loop {
            let p = rng.gen_range(0..positions);
            if seen.insert((l, p)) {
                break;
            }
        }
    }
    out.extend(seen.into_iter().map(|(l, p)| Check::Layer {
        layer: l as u32,
        pos: p as u32,
    }));
    Ok(out)
}

/// The rows a set of checks needs opened: residual rows by layer (layer 0 is never
/// opened, the auditor computes it) and, per layer, the key/value rows `0..n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub x: BTreeMap<usize, BTreeSet<usize>>,
    pub kv: BTreeMap<usize, usize>,
}

impl Needs {
    pub fn of(checks: &[Check], prompt_len: usize, layers: usize) -> Self {
        let mut n = Needs::default();
        for c in checks {
            match *c {
                Check::Layer { layer, pos } => {
                    let (l, p) = (layer as usize, pos as usize);
                    if l > 0 {
                        n.x.entry(l).or_default().insert(p);
                    }
                    n.x.entry(l + 1).or_default().insert(p);
                    let e = n.kv.entry(l).or_default();
                    *e = (*e).max(p + 1);
                }
                Check::Sample { index } => {
                    n.x.entry(layers)
                        .or_default()
                        .insert(prompt_len + index as usize - 1);
                }
            }
        }
        n
    }
    fn x_values(&self, hidden: usize) -> usize {
        self.x.values().map(|s| s.len() * hidden).sum()
    }
    fn kv_values(&self, kv_dim: usize) -> usize {
        self.kv.values().map(|&n| n * kv_dim).sum()
    }
}

/// What the provider sends back for a set of challenges: the rows in the canonical order
/// of [`Needs`] (residual rows by layer then position; keys then values of each layer's
/// rows `0..n`), a multiproof per opened tree (residual trees first, then key/value
/// trees, each by layer) and one for the top tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    pub x: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub proofs: Vec<Vec<Hash32>>,
    pub top: Vec<Hash32>,
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}
fn put_hashes(out: &mut Vec<u8>, v: &[Hash32]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for h in v {
        out.extend_from_slice(h.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn f32s(&mut self) -> Option<Vec<f32>> {
        let n = self.u32()?;
        if n > MAX_OPEN_VALUES {
            return None;
        }
        let b = self.take(n.checked_mul(4)?)?;
        Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
    fn hashes(&mut self) -> Option<Vec<Hash32>> {
        let n = self.u32()?;
        let b = self.take(n.checked_mul(32)?)?;
        Some(
            b.chunks_exact(32)
                .map(|c| Hash32(c.try_into().expect("32 bytes")))
                .collect(),
        )
    }
}

impl Opening {
    /// Binary form (what travels between nodes, and what "bytes per audit" counts).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 * (self.x.len() + self.k.len() + self.v.len()) + 64);
        put_f32s(&mut out, &self.x);
        put_f32s(&mut out, &self.k);
        put_f32s(&mut out, &self.v);
        out.extend_from_slice(&(self.proofs.len() as u32).to_le_bytes());
        for p in &self.proofs {
            put_hashes(&mut out, p);
        }
        put_hashes(&mut out, &self.top);
        out
    }

    /// Length of [`Opening::to_bytes`] without encoding.
    pub fn wire_len(&self) -> usize {
        4 * (3 + self.x.len() + self.k.len() + self.v.len())
            + 4
            + self.proofs.iter().map(|p| 4 + 32 * p.len()).sum::<usize>()
            + 4
            + 32 * self.top.len()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, VerifyError> {
        let bad = || VerifyError::Trace("malformed opening".into());
        let mut r = Reader(b);
        let x = r.f32s().ok_or_else(bad)?;
        let k = r.f32s().ok_or_else(bad)?;
        let v = r.f32s().ok_or_else(bad)?;
        let n = r.u32().ok_or_else(bad)?;
        if n > 1 << 16 {
            return Err(bad());
        }
        let proofs = (0..n)
            .map(|_| r.hashes())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        let top = r.hashes().ok_or_else(bad)?;
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            x,
            k,
            v,
            proofs,
            top,
        })
    }
}

/// Builds the opening for `checks` from a trace's values and leaf hashes (the provider's
/// side; a cheating provider in the tests builds it from an altered trace).
pub fn open_trace(
    values: &TraceValues,
    hashes: &TraceHashes,
    checks: &[Check],
    prompt_len: usize,
) -> Result<Opening, VerifyError> {
    let layers = hashes.layers();
    let positions = hashes.positions();
    let needs = Needs::of(checks, prompt_len, layers);
    check_needs(&needs, layers, positions)?;
    let mut o = Opening {
        x: Vec::with_capacity(needs.x_values(values.hidden)),
        k: Vec::with_capacity(needs.kv_values(values.kv_dim)),
        v: Vec::with_capacity(needs.kv_values(values.kv_dim)),
        proofs: Vec::new(),
        top: Vec::new(),
    };
    for (&l, ps) in &needs.x {
        let idx: Vec<usize> = ps.iter().copied().collect();
        for &p in &idx {
            o.x.extend_from_slice(values.x_row(l, p));
        }
        o.proofs
            .push(merkle::prove_many(&hashes.x[l], &idx).expect("needs are in range"));
    }
    for (&l, &n) in &needs.kv {
        o.k.extend_from_slice(values.k_rows(l, 0..n));
        o.v.extend_from_slice(values.v_rows(l, 0..n));
        let idx: Vec<usize> = (0..n).collect();
        o.proofs
            .push(merkle::prove_many(&hashes.kv[l], &idx).expect("needs are in range"));
    }
    let roots = tree_roots(hashes);
    o.top = merkle::prove_many(&roots, &top_known(&needs, layers)).expect("in range");
    Ok(o)
}

/// Trees whose roots the auditor computes itself (sorted): `X_0` always, and every
/// opened tree.
fn top_known(needs: &Needs, layers: usize) -> Vec<usize> {
    let mut t: BTreeSet<usize> = BTreeSet::new();
    t.insert(x_tree(0));
    t.extend(needs.x.keys().map(|&l| x_tree(l)));
    t.extend(needs.kv.keys().map(|&l| kv_tree(layers, l)));
    t.into_iter().collect()
}

fn check_needs(needs: &Needs, layers: usize, positions: usize) -> Result<(), VerifyError> {
    let x_ok = needs
        .x
        .iter()
        .all(|(&l, ps)| l <= layers && ps.iter().all(|&p| p < positions));
    let kv_ok = needs.kv.iter().all(|(&l, &n)| l < layers && n <= positions);
    if x_ok && kv_ok {
        Ok(())
    } else {
        Err(VerifyError::Trace(
            "a challenge lies outside the trace".into(),
        ))
    }
}

/// The provider's side of an audit: recomputes the trace of its own receipt with one
/// prefill, confirms it reproduces the committed root, and opens it at `checks`.
pub fn open(model: &mut ChatModel, r: &Receipt, checks: &[Check]) -> Result<Opening, VerifyError> {
    let ids = prepare(r, model)?;
    let values = model.trace_values(&ids, &r.output_tokens)?;
    let hashes = values.hashes();
    if Some(&commitment(&hashes)) != r.trace.as_ref() {
        return Err(VerifyError::Trace(
            "the recomputed trace does not reproduce the receipt's commitment".into(),
        ));
    }
    open_trace(&values, &hashes, checks, ids.len())
}

/// What a spot-check audit measured.
#[derive(Debug, Clone, Default)]
pub struct SpotReport {
    pub layer_checks: usize,
    pub sample_checks: usize,
    /// Largest relative L2 distance between a recomputed row and the opened one.
    pub max_rel_err: f32,
    /// Size of the opening in bytes.
    pub opening_bytes: usize,
    pub seconds: f64,
}

fn rel_err(own: &[f32], opened: &[f32]) -> f32 {
    let (mut d, mut n) = (0f64, 0f64);
    for (a, b) in own.iter().zip(opened) {
        let e = (*a as f64) - (*b as f64);
        d += e * e;
        n += (*a as f64) * (*a as f64);
    }
    if d == 0.0 {
        0.0
    } else if !d.is_finite() || n == 0.0 {
        f32::INFINITY
    } else {
        (d / n).sqrt() as f32
    }
}

/// The auditor's side: checks `opening` against the receipt's trace commitment and runs
/// every check in `checks` (which the auditor derived itself with [`challenges`]).
pub fn check_spot(
    r: &Receipt,
    model: &mut ChatModel,
    checks: &[Check],
    opening: &Opening,
) -> Result<SpotReport, VerifyError> {
    let start = Instant::now();
    let ids = prepare(r, model)?;
    // Every output token must fit the constraint (checked at all positions: it needs no
    // model); the sampled positions then pick from the masked logits.
    let masks = crate::constraint_masks(r, model)?;
    let t = r
        .trace
        .as_ref()
        .ok_or_else(|| VerifyError::Trace("the receipt carries no trace commitment".into()))?;
    let layers = model.n_layer();
    let (hidden, kv_dim) = (model.hidden_dim(), model.kv_dim());
    let n_out = r.output_tokens.len();
    let positions = ids.len() + n_out - 1;
    if t.scheme != SCHEME || t.layers as usize != layers || t.positions as usize != positions {
        return Err(VerifyError::Trace(format!(
            "trace commitment ({}, {} layers, {} positions) does not fit this model and receipt ({SCHEME}, {layers} layers, {positions} positions)",
            t.scheme, t.layers, t.positions
        )));
    }
    for c in checks {
        let ok = match *c {
            Check::Layer { layer, pos } => (layer as usize) < layers && (pos as usize) < positions,
            Check::Sample { index } => (index as usize) < n_out,
        };
        if !ok {
            return Err(VerifyError::Trace(format!(
                "challenge {c:?} lies outside the trace"
            )));
        }
    }
    let needs = Needs::of(checks, ids.len(), layers);
    let bad =
        |what: &str| VerifyError::Trace(format!("opening does not match the challenges: {what}"));
    if opening.x.len() != needs.x_values(hidden)
        || opening.k.len() != needs.kv_values(kv_dim)
        || opening.v.len() != needs.kv_values(kv_dim)
        || opening.proofs.len() != needs.x.len() + needs.kv.len()
    {
        return Err(bad("wrong number of rows or proofs"));
    }
    // Tokens at every position; layer 0 is the auditor's own.
    let tokens: Vec<u32> = ids
        .iter()
        .chain(&r.output_tokens[..n_out - 1])
        .copied()
        .collect();
    let mut x0: Vec<f32> = Vec::with_capacity(tokens.len() * hidden);
    for &t in &tokens {
        x0.extend_from_slice(
            model
                .embedding_row(t)
                .expect("prepare checked the vocabulary"),
        );
    }
    let x0_leaves: Vec<Hash32> = {
        use rayon::prelude::*;
        x0.par_chunks(hidden)
            .enumerate()
            .map(|(p, row)| trace::residual_leaf(0, p, row))
            .collect()
    };
    // Rebuild each opened tree's root from the opened rows.
    let mut known: BTreeMap<usize, Hash32> = BTreeMap::new();
    known.insert(x_tree(0), merkle::root(&x0_leaves));
    let mut x_rows: BTreeMap<(usize, usize), &[f32]> = BTreeMap::new();
    let mut proofs = opening.proofs.iter();
    let mut at = 0;
    for (&l, ps) in &needs.x {
        let mut leaves = Vec::with_capacity(ps.len());
        for &p in ps {
            let row = &opening.x[at * hidden..(at + 1) * hidden];
            at += 1;
            leaves.push((p, trace::residual_leaf(l, p, row)));
            x_rows.insert((l, p), row);
        }
        let root = merkle::root_from_many(positions, &leaves, proofs.next().expect("counted"))
            .ok_or_else(|| bad("a residual proof does not fit"))?;
        known.insert(x_tree(l), root);
    }
    let mut kv_at: BTreeMap<usize, usize> = BTreeMap::new();
    let mut off = 0;
    for (&l, &n) in &needs.kv {
        kv_at.insert(l, off);
        let leaves: Vec<(usize, Hash32)> = {
            use rayon::prelude::*;
            (0..n)
                .into_par_iter()
                .map(|p| {
                    let a = (off + p) * kv_dim;
                    (
                        p,
                        trace::kv_leaf(l, p, &opening.k[a..a + kv_dim], &opening.v[a..a + kv_dim]),
                    )
                })
                .collect()
        };
        let root = merkle::root_from_many(positions, &leaves, proofs.next().expect("counted"))
            .ok_or_else(|| bad("a key/value proof does not fit"))?;
        known.insert(kv_tree(layers, l), root);
        off += n;
    }
    let known: Vec<(usize, Hash32)> = known.into_iter().collect();
    let top = merkle::root_from_many(2 * layers + 1, &known, &opening.top)
        .ok_or_else(|| bad("the top proof does not fit"))?;
    if root_of(layers, positions, &top) != t.root {
        return Err(VerifyError::SpotCheck {
            what: "commitment".into(),
            detail: "the opened rows are not the committed trace (or a token was edited after the trace was made)".into(),
        });
    }
    let mut rep = SpotReport {
        opening_bytes: opening.wire_len(),
        ..Default::default()
    };
    // Layer checks, batched per layer.
    let mut by_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for c in checks {
        if let Check::Layer { layer, pos } = *c {
            by_layer
                .entry(layer as usize)
                .or_default()
                .push(pos as usize);
        }
    }
    for (&l, ps) in &by_layer {
        let base = kv_at[&l] * kv_dim;
        let items: Vec<LayerInput<'_>> = ps
            .iter()
            .map(|&p| LayerInput {
                pos: p,
                x: if l == 0 {
                    &x0[p * hidden..(p + 1) * hidden]
                } else {
                    x_rows[&(l, p)]
                },
                k_prev: &opening.k[base..base + p * kv_dim],
                v_prev: &opening.v[base..base + p * kv_dim],
            })
            .collect();
        let outs = model.recompute_layer(l, &items)?;
        for (&p, o) in ps.iter().zip(&outs) {
            let a = base + p * kv_dim;
            let ek = rel_err(&o.k, &opening.k[a..a + kv_dim]);
            let ev = rel_err(&o.v, &opening.v[a..a + kv_dim]);
            let ex = rel_err(&o.x, x_rows[&(l + 1, p)]);
            let worst = ek.max(ev).max(ex);
            if worst > ROW_TOLERANCE || worst.is_nan() {
                let which = if ex >= ek.max(ev) {
                    "output residual"
                } else {
                    "key/value row"
                };
                return Err(VerifyError::SpotCheck {
                    what: format!("layer {l} at position {p}"),
                    detail: format!(
                        "recomputed {which} differs from the committed one (relative distance {worst:.2e}, tolerance {ROW_TOLERANCE:.0e})"
                    ),
                });
            }
            rep.max_rel_err = rep.max_rel_err.max(worst);
            rep.layer_checks += 1;
        }
    }
    // Sampling checks, one batched pass through the output matrix.
    let samples: Vec<usize> = checks
        .iter()
        .filter_map(|c| match *c {
            Check::Sample { index } => Some(index as usize),
            _ => None,
        })
        .collect();
    if !samples.is_empty() {
        let rows: Vec<f32> = samples
            .iter()
            .flat_map(|&i| x_rows[&(layers, ids.len() + i - 1)].iter().copied())
            .collect();
        let logits = model.head(&rows)?;
        let vocab = model.vocab();
        for (j, &i) in samples.iter().enumerate() {
            // The penalties count the output tokens before position i.
            let mut history = sampling::History::new();
            if r.sampling.has_penalties() {
                r.output_tokens[..i].iter().for_each(|&t| history.push(t));
            }
            sampling::check(
                &crate::rule_logits(
                    &logits[j * vocab..(j + 1) * vocab],
                    &r.sampling,
                    &history,
                    masks.as_ref().map(|m| &m[i]),
                ),
                &r.sampling,
                i as u32,
                r.output_tokens[i],
            )
            .map_err(|source| VerifyError::Sampling {
                position: i,
                source,
            })?;
            rep.sample_checks += 1;
        }
    }
    rep.seconds = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// A whole audit on one machine (the provider and the auditor in one process, as in the
/// tests and `vouch bench audit`): challenges from `seed`, opening, check.
pub fn audit_local(
    model: &mut ChatModel,
    r: &Receipt,
    seed: &Hash32,
    k: usize,
) -> Result<SpotReport, VerifyError> {
    let checks = challenges(r, seed, k)?;
    debug_assert!(k == 0 || !checks.is_empty());
    let opening = open(model, r, &checks)?;
    check_spot(r, model, &checks, &opening)
}
