//! Execution traces: what a provider commits to while it generates, so that a verifier can
//! later check single (layer, position) steps instead of re-running the whole answer.
//!
//! A trace of a sequence of `P` positions (the prompt and every output token but the
//! last) through a model of `L` layers holds, for each position `p`:
//!
//! - `x[l][p]` for `l in 0..=L`: the residual stream entering layer `l` (`x[L]` leaves the
//!   last layer, before the final norm), `hidden` values;
//! - `kv[l][p]` for `l in 0..L`: the key row (after the rotary embedding) and the value row
//!   that layer `l` computed at `p`, `2 * kv_dim` values.
//!
//! Values are the engine's own f32 bits, unrounded: the engine computes every row the
//! same way whether it ran in a prefill, a decode step, alone or batched, on any number of
//! threads, so an honest recomputation reproduces them exactly (see docs/verification.md).
//! Each row is hashed with its layer and position into a leaf; the Merkle trees over the
//! leaves live in `vouch-verify` (`spot`).

use crate::llama::TraceTap;
use rayon::prelude::*;
use vouch_types::Hash32;

pub const RESIDUAL_DOMAIN: &str = "vouch 2026 trace residual v1";
pub const KV_DOMAIN: &str = "vouch 2026 trace kv v1";

/// The little-endian bytes of `values` (borrowed as they are on little-endian machines).
fn bytes_of(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Leaf hash of the residual row entering `layer` at `pos`.
pub fn residual_leaf(layer: usize, pos: usize, x: &[f32]) -> Hash32 {
    Hash32::digest(
        RESIDUAL_DOMAIN,
        &[
            &(layer as u32).to_le_bytes(),
            &(pos as u32).to_le_bytes(),
            &bytes_of(x),
        ],
    )
}

/// Leaf hash of the key and value rows of `layer` at `pos`.
pub fn kv_leaf(layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Hash32 {
    Hash32::digest(
        KV_DOMAIN,
        &[
            &(layer as u32).to_le_bytes(),
            &(pos as u32).to_le_bytes(),
            &bytes_of(k),
            &bytes_of(v),
        ],
    )
}

/// The leaf hashes of one sequence's trace: `x[l][p]` for `l in 0..=L`, `kv[l][p]` for
/// `l in 0..L`. This is all a provider keeps at generation time (64 B per layer and
/// position); values are recomputed when a challenge comes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHashes {
    pub x: Vec<Vec<Hash32>>,
    pub kv: Vec<Vec<Hash32>>,
}

impl TraceHashes {
    pub fn new(n_layer: usize) -> Self {
        Self {
            x: vec![Vec::new(); n_layer + 1],
            kv: vec![Vec::new(); n_layer],
        }
    }
    /// Positions covered (every layer must agree; checked by the commitment).
    pub fn positions(&self) -> usize {
        self.x.first().map_or(0, |r| r.len())
    }
    pub fn layers(&self) -> usize {
        self.kv.len()
    }
    /// Drops everything from position `p` on (a step that is recomputed from scratch).
    pub fn truncate(&mut self, p: usize) {
        for r in self.x.iter_mut().chain(self.kv.iter_mut()) {
            r.truncate(p);
        }
    }
}

/// Hashes the rows of a ragged batch into each sequence's [`TraceHashes`].
/// `spans[i] = (start position, new rows)` of sequence `i`, in batch order.
pub struct BatchHasher<'a> {
    pub spans: Vec<(usize, usize)>,
    pub out: Vec<&'a mut TraceHashes>,
    pub hidden: usize,
    pub kv_dim: usize,
}

/// Rows at which hashing goes parallel (a prefill; a decode step is a few rows).
const PAR_ROWS: usize = 16;

impl BatchHasher<'_> {
    fn each_row(
        &self,
        width: usize,
        data: &[&[f32]],
        f: impl Fn(usize, &[&[f32]]) -> Hash32 + Sync,
    ) -> Vec<Hash32> {
        let rows: usize = self.spans.iter().map(|s| s.1).sum();
        let pos_of: Vec<usize> = self
            .spans
            .iter()
            .flat_map(|&(start, m)| start..start + m)
            .collect();
        let one = |r: usize| {
            let parts: Vec<&[f32]> = data
                .iter()
                .map(|d| &d[r * width..(r + 1) * width])
                .collect();
            f(pos_of[r], &parts)
        };
        if rows >= PAR_ROWS {
            (0..rows).into_par_iter().map(one).collect()
        } else {
            (0..rows).map(one).collect()
        }
    }

    fn scatter(
        &mut self,
        hashes: Vec<Hash32>,
        pick: impl Fn(&mut TraceHashes) -> &mut Vec<Hash32>,
    ) {
        let mut it = hashes.into_iter();
        for (i, &(start, m)) in self.spans.iter().enumerate() {
            let dst = pick(self.out[i]);
            dst.truncate(start);
            dst.extend(it.by_ref().take(m));
        }
    }
}

impl TraceTap for BatchHasher<'_> {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        let hashes = self.each_row(self.hidden, &[x], |pos, p| residual_leaf(layer, pos, p[0]));
        self.scatter(hashes, |t| &mut t.x[layer]);
    }
    fn kv(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let hashes = self.each_row(self.kv_dim, &[k, v], |pos, p| {
            kv_leaf(layer, pos, p[0], p[1])
        });
        self.scatter(hashes, |t| &mut t.kv[layer]);
    }
}

/// The full values of one sequence's trace, captured by a single prefill (what a provider
/// recomputes to answer a challenge). `x[l]` is `[P * hidden]`, `k[l]`/`v[l]` `[P * kv_dim]`.
#[derive(Debug, Clone, Default)]
pub struct TraceValues {
    pub hidden: usize,
    pub kv_dim: usize,
    pub x: Vec<Vec<f32>>,
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl TraceValues {
    pub fn new(n_layer: usize, hidden: usize, kv_dim: usize) -> Self {
        Self {
            hidden,
            kv_dim,
            x: vec![Vec::new(); n_layer + 1],
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
        }
    }
    pub fn positions(&self) -> usize {
        self.x.first().map_or(0, |r| r.len() / self.hidden.max(1))
    }
    pub fn x_row(&self, layer: usize, pos: usize) -> &[f32] {
        &self.x[layer][pos * self.hidden..(pos + 1) * self.hidden]
    }
    pub fn k_rows(&self, layer: usize, range: std::ops::Range<usize>) -> &[f32] {
        &self.k[layer][range.start * self.kv_dim..range.end * self.kv_dim]
    }
    pub fn v_rows(&self, layer: usize, range: std::ops::Range<usize>) -> &[f32] {
        &self.v[layer][range.start * self.kv_dim..range.end * self.kv_dim]
    }
    /// Leaf hashes of every row.
    pub fn hashes(&self) -> TraceHashes {
        let p = self.positions();
        TraceHashes {
            x: (0..self.x.len())
                .map(|l| {
                    (0..p)
                        .into_par_iter()
                        .map(|pos| residual_leaf(l, pos, self.x_row(l, pos)))
                        .collect()
                })
                .collect(),
            kv: (0..self.k.len())
                .map(|l| {
                    (0..p)
                        .into_par_iter()
                        .map(|pos| {
                            kv_leaf(
                                l,
                                pos,
                                self.k_rows(l, pos..pos + 1),
                                self.v_rows(l, pos..pos + 1),
                            )
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

impl TraceTap for TraceValues {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        self.x[layer].extend_from_slice(x);
    }
    fn kv(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.k[layer].extend_from_slice(k);
        self.v[layer].extend_from_slice(v);
    }
}
