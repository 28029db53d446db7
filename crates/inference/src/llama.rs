//! Llama-family decoder (SmolLM2 and friends) from a quantized GGUF file.
//!
//! The forward pass works on a *ragged batch*: any number of sequences, each with its
//! own KV cache and any number of new tokens. The linear layers run once over the
//! concatenation of all new tokens (candle's quantized matmul, which computes every
//! output element from one row and one column, so a row's result does not depend on
//! what else is in the batch); attention runs per sequence with a fixed summation order.
//! Consequence, and the reason this file exists: the final hidden state of a position is
//! the same bits whether it was computed in a prefill, in a decode step with a KV cache,
//! without a cache, alone or batched, on one thread or two. The verifier relies on it
//! (see docs/verification.md), and tolerances only have to absorb differences between
//! machines and backends.

use crate::q4::{Q8Rows, QMatrix};
use crate::InferenceError;
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;
use std::io::{Read, Seek};

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

/// A weight matrix: Q4_1 and Q8_0 run on our own kernels (`q4.rs`), anything else on
/// candle's.
enum Linear {
    Q(QMatrix),
    Candle(QMatMul),
}

impl Linear {
    /// `x [n, cols]` (and its 8-bit quantization, shared by matrices with the same input)
    /// times the matrix transposed.
    fn forward(
        &self,
        x: &[f32],
        xq: &Q8Rows,
        n: usize,
        cols: usize,
    ) -> Result<Vec<f32>, InferenceError> {
        match self {
            Linear::Q(m) => Ok(m.matmul(xq)),
            Linear::Candle(m) => {
                let t = Tensor::from_slice(x, (n, cols), &Device::Cpu)?;
                Ok(m.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// Projections that read the same input: stacked into one matrix when our kernels run
/// them all (one pass over the input, one hand-off to the threads), else run one by one.
enum Proj {
    Stacked { m: QMatrix, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Proj {
    fn new(parts: Vec<Linear>) -> Self {
        let qs: Option<Vec<&QMatrix>> = parts
            .iter()
            .map(|l| match l {
                Linear::Q(m) => Some(m),
                Linear::Candle(_) => None,
            })
            .collect();
        match qs.and_then(|qs| Some((QMatrix::stack(&qs)?, qs))) {
            Some((m, qs)) => Proj::Stacked {
                widths: qs.iter().map(|q| q.rows()).collect(),
                m,
            },
            None => Proj::Separate(parts),
        }
    }

    /// One output `[n, width_k]` per projection.
    fn forward(
        &self,
        x: &[f32],
        xq: &Q8Rows,
        n: usize,
        cols: usize,
    ) -> Result<Vec<Vec<f32>>, InferenceError> {
        match self {
            Proj::Separate(ls) => ls.iter().map(|l| l.forward(x, xq, n, cols)).collect(),
            Proj::Stacked { m, widths } => {
                let y = m.matmul(xq);
                let mut outs: Vec<Vec<f32>> =
                    widths.iter().map(|w| Vec::with_capacity(n * w)).collect();
                for row in y.chunks_exact(m.rows()) {
                    let mut at = 0;
                    for (o, w) in outs.iter_mut().zip(widths) {
                        o.extend_from_slice(&row[at..at + w]);
                        at += w;
                    }
                }
                Ok(outs)
            }
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// Query, key and value projections.
    qkv: Proj,
    wo: Linear,
    /// Gate and up projections of the MLP.
    gate_up: Proj,
    w_down: Linear,
}

/// Weights of one model, shared read-only by all sequences.
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    /// cos/sin per (position, frequency), filled lazily up to the longest position seen.
    rope_freqs: Vec<f32>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("cfg", &self.cfg).finish()
    }
}

/// Per-sequence KV cache: for each layer, keys and values of every position so far,
/// laid out `[position][kv_head][head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
            len: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl LlamaConfig {
    /// Width of one position's key (or value) row.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Sees the intermediate values of a forward pass (see [`Llama::forward_tapped`]). Rows
/// come in batch order: sequence by sequence, new tokens in order.
pub trait TraceTap {
    /// The residual stream entering layer `layer`, `[rows * hidden]`; `layer == n_layer`
    /// is the residual leaving the last layer (before the final norm).
    fn residual(&mut self, layer: usize, x: &[f32]);
    /// Keys (after the rotary embedding) and values of layer `layer`, `[rows * kv_dim]`.
    fn kv(&mut self, layer: usize, k: &[f32], v: &[f32]);
}

/// A tap that looks at nothing.
pub struct NoTap;

impl TraceTap for NoTap {
    fn residual(&mut self, _: usize, _: &[f32]) {}
    fn kv(&mut self, _: usize, _: &[f32], _: &[f32]) {}
}

/// One position to recompute in [`Llama::recompute_layer`].
#[derive(Debug, Clone, Copy)]
pub struct LayerInput<'a> {
    pub pos: usize,
    /// Residual entering the layer at `pos`.
    pub x: &'a [f32],
    /// Keys and values of the layer at positions `0..pos`, `[pos * kv_dim]` each.
    pub k_prev: &'a [f32],
    pub v_prev: &'a [f32],
}

/// What [`Llama::recompute_layer`] computes for one position.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutput {
    /// Residual leaving the layer.
    pub x: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// New tokens for one sequence in a ragged batch.
#[derive(Debug)]
pub struct SeqStep<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, InferenceError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| InferenceError::Format(format!("GGUF metadata has no {key}")))
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize, InferenceError> {
    Ok(md(ct, key)?
        .to_u32()
        .map_err(|e| InferenceError::Format(format!("{key}: {e}")))? as usize)
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> Result<f32, InferenceError> {
    md(ct, key)?
        .to_f32()
        .map_err(|e| InferenceError::Format(format!("{key}: {e}")))
}

/// Dot product with eight fixed accumulators: vectorizes, and always sums in one order.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut tail = 0f32;
    for i in n8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `e^x` from IEEE operations only (no libm), so that it vectorizes and gives the same bits
/// on every machine: `x = k·ln2 + r` with `k` rounded to nearest and `|r| <= ln2/2`, then
/// `e^r` by its degree-6 Taylor polynomial (relative error below 2e-7) and `2^k` built in
/// the exponent bits. Inputs are clamped to [-87, 88] (results stay normal and finite).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to nearest
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    p * scale
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (row, orow) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let ms = dot(row, row) / w.len() as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, xv), wv) in orow.iter_mut().zip(row).zip(w) {
            *o = xv * scale * wv;
        }
    }
}

impl Llama {
    /// Loads the model from an opened GGUF file.
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
    ) -> Result<Self, InferenceError> {
        let arch = md(ct, "general.architecture")?
            .to_string()
            .map_err(|e| InferenceError::Format(e.to_string()))?
            .clone();
        if arch != "llama" {
            return Err(InferenceError::Unsupported(format!(
                "architecture {arch:?} (only \"llama\")"
            )));
        }
        let n_head = md_u32(ct, "llama.attention.head_count")?;
        let hidden = md_u32(ct, "llama.embedding_length")?;
        let cfg = LlamaConfig {
            n_layer: md_u32(ct, "llama.block_count")?,
            hidden,
            n_head,
            n_kv_head: md_u32(ct, "llama.attention.head_count_kv")?,
            head_dim: hidden / n_head,
            ffn: md_u32(ct, "llama.feed_forward_length")?,
            vocab: md_u32(ct, "llama.vocab_size").or_else(|_| {
                Ok::<usize, InferenceError>(
                    md(ct, "tokenizer.ggml.tokens")?
                        .to_vec()
                        .map_err(|e| InferenceError::Format(e.to_string()))?
                        .len(),
                )
            })?,
            context: md_u32(ct, "llama.context_length")?,
            rope_base: md_f32(ct, "llama.rope.freq_base").unwrap_or(10000.0),
            rms_eps: md_f32(ct, "llama.attention.layer_norm_rms_epsilon")?,
        };
        if cfg.head_dim * cfg.n_head != cfg.hidden
            || cfg.n_kv_head == 0
            || !cfg.n_head.is_multiple_of(cfg.n_kv_head)
            || !cfg.head_dim.is_multiple_of(2)
        {
            return Err(InferenceError::Format(format!(
                "inconsistent shape in {cfg:?}"
            )));
        }
        let dev = Device::Cpu;
        let mut tensor = |name: &str| -> Result<QTensor, InferenceError> {
            ct.tensor(reader, name, &dev)
                .map_err(|e| InferenceError::Format(format!("tensor {name}: {e}")))
        };
        let f32_vec = |t: &QTensor, len: usize, name: &str| -> Result<Vec<f32>, InferenceError> {
            let v = t
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| InferenceError::Format(format!("{name}: {e}")))?;
            if v.len() != len {
                return Err(InferenceError::Format(format!(
                    "{name}: {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        let qmm = |t: QTensor, rows: usize, cols: usize, name: &str| {
            let dims = t.shape().dims().to_vec();
            if dims != [rows, cols] {
                return Err(InferenceError::Format(format!(
                    "{name}: shape {dims:?}, expected [{rows}, {cols}]"
                )));
            }
            QMatMul::from_qtensor(t).map_err(|e| InferenceError::Format(format!("{name}: {e}")))
        };
        let linear =
            |t: QTensor, rows: usize, cols: usize, name: &str| -> Result<Linear, InferenceError> {
                if t.shape().dims() == [rows, cols] {
                    let bytes = t
                        .data()
                        .map_err(|e| InferenceError::Format(format!("{name}: {e}")))?;
                    match t.dtype() {
                        GgmlDType::Q4_1 => {
                            if let Some(m) = QMatrix::q4_1(&bytes, rows, cols) {
                                return Ok(Linear::Q(m));
                            }
                        }
                        GgmlDType::Q8_0 => {
                            if let Some(m) = QMatrix::q8_0(&bytes, rows, cols) {
                                return Ok(Linear::Q(m));
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Linear::Candle(qmm(t, rows, cols, name)?))
            };
        let embed_q = tensor("token_embd.weight")?;
        let embed = f32_vec(&embed_q, cfg.vocab * cfg.hidden, "token_embd.weight")?;
        let norm = f32_vec(
            &tensor("output_norm.weight")?,
            cfg.hidden,
            "output_norm.weight",
        )?;
        let lm_head = match tensor("output.weight") {
            Ok(t) => linear(t, cfg.vocab, cfg.hidden, "output.weight")?,
            Err(_) => linear(embed_q, cfg.vocab, cfg.hidden, "token_embd.weight")?,
        };
        let kv = cfg.n_kv_head * cfg.head_dim;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let n = |s: &str| format!("{p}.{s}.weight");
            layers.push(Layer {
                attn_norm: f32_vec(&tensor(&n("attn_norm"))?, cfg.hidden, &n("attn_norm"))?,
                ffn_norm: f32_vec(&tensor(&n("ffn_norm"))?, cfg.hidden, &n("ffn_norm"))?,
                qkv: Proj::new(vec![
                    linear(tensor(&n("attn_q"))?, cfg.hidden, cfg.hidden, &n("attn_q"))?,
                    linear(tensor(&n("attn_k"))?, kv, cfg.hidden, &n("attn_k"))?,
                    linear(tensor(&n("attn_v"))?, kv, cfg.hidden, &n("attn_v"))?,
                ]),
                wo: linear(
                    tensor(&n("attn_output"))?,
                    cfg.hidden,
                    cfg.hidden,
                    &n("attn_output"),
                )?,
                gate_up: Proj::new(vec![
                    linear(tensor(&n("ffn_gate"))?, cfg.ffn, cfg.hidden, &n("ffn_gate"))?,
                    linear(tensor(&n("ffn_up"))?, cfg.ffn, cfg.hidden, &n("ffn_up"))?,
                ]),
                w_down: linear(tensor(&n("ffn_down"))?, cfg.hidden, cfg.ffn, &n("ffn_down"))?,
            });
        }
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            rope_freqs: Vec::new(),
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }

    fn ensure_rope(&mut self, max_pos: usize) {
        let half = self.cfg.head_dim / 2;
        let have = self.rope_freqs.len() / (2 * half);
        if have >= max_pos {
            return;
        }
        let target = max_pos
            .next_power_of_two()
            .min(self.cfg.context.max(max_pos));
        for pos in have..target {
            for i in 0..half {
                let theta = 1f32
                    / self
                        .cfg
                        .rope_base
                        .powf((2 * i) as f32 / self.cfg.head_dim as f32);
                let a = pos as f32 * theta;
                self.rope_freqs.push(a.cos());
                self.rope_freqs.push(a.sin());
            }
        }
    }

    /// Interleaved rotary embedding (GGUF llama convention) on `heads` heads of one row.
    fn rope(&self, row: &mut [f32], pos: usize) {
        let half = self.cfg.head_dim / 2;
        let freqs = &self.rope_freqs[pos * 2 * half..(pos + 1) * 2 * half];
        for head in row.chunks_exact_mut(self.cfg.head_dim) {
            for i in 0..half {
                let (c, s) = (freqs[2 * i], freqs[2 * i + 1]);
                let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = x0 * c - x1 * s;
                head[2 * i + 1] = x0 * s + x1 * c;
            }
        }
    }

    /// Runs the new tokens of every sequence through the model, appending to their caches.
    /// Returns the final (normed) hidden states of all new tokens, concatenated in
    /// sequence order, `[total_new_tokens * hidden]`.
    pub fn forward(&mut self, steps: &mut [SeqStep<'_>]) -> Result<Vec<f32>, InferenceError> {
        self.forward_tapped(steps, &mut NoTap)
    }

    /// [`Llama::forward`], showing `tap` the residual stream entering every layer (and
    /// leaving the last one) and every layer's keys and values: what a trace commits to.
    pub fn forward_tapped(
        &mut self,
        steps: &mut [SeqStep<'_>],
        tap: &mut dyn TraceTap,
    ) -> Result<Vec<f32>, InferenceError> {
        let cfg = self.cfg.clone();
        let h = cfg.hidden;
        let n: usize = steps.iter().map(|s| s.tokens.len()).sum();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut max_pos = 0;
        for s in steps.iter() {
            let end = s.cache.len + s.tokens.len();
            if end > cfg.context {
                return Err(InferenceError::ContextOverflow {
                    needed: end,
                    context: cfg.context,
                });
            }
            max_pos = max_pos.max(end);
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
                return Err(InferenceError::BadToken(bad));
            }
        }
        self.ensure_rope(max_pos);
        // Absolute position of every new row.
        let mut positions = Vec::with_capacity(n);
        for s in steps.iter() {
            positions.extend(s.cache.len..s.cache.len + s.tokens.len());
        }
        let mut x = Vec::with_capacity(n * h);
        for s in steps.iter() {
            for &t in s.tokens {
                x.extend_from_slice(&self.embed[t as usize * h..(t as usize + 1) * h]);
            }
        }
        let mut xn = vec![0f32; n * h];
        for li in 0..cfg.n_layer {
            tap.residual(li, &x);
            self.layer(li, &mut x, &mut xn, &positions, steps, tap)?;
        }
        tap.residual(cfg.n_layer, &x);
        for s in steps.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        rms_norm(&x, &self.norm, cfg.rms_eps, &mut xn);
        Ok(xn)
    }

    /// One decoder layer over the rows `x` (one per new token, sequence by sequence, at
    /// `positions`): appends their keys and values to layer `li` of each sequence's cache
    /// (whose `len` is the number of positions before the new ones) and adds the layer's
    /// output to `x`. Only `tokens.len()` of each step is read.
    fn layer(
        &self,
        li: usize,
        x: &mut [f32],
        xn: &mut [f32],
        positions: &[usize],
        steps: &mut [SeqStep<'_>],
        tap: &mut dyn TraceTap,
    ) -> Result<(), InferenceError> {
        let cfg = &self.cfg;
        let layer = &self.layers[li];
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let kv_dim = cfg.n_kv_head * hd;
        let n = positions.len();
        let group = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        rms_norm(x, &layer.attn_norm, cfg.rms_eps, xn);
        let xq = Q8Rows::quantize(xn, h);
        let mut qkv = layer.qkv.forward(xn, &xq, n, h)?.into_iter();
        let (mut q, mut k, v) = match (qkv.next(), qkv.next(), qkv.next()) {
            (Some(q), Some(k), Some(v)) => (q, k, v),
            _ => unreachable!("three projections"),
        };
        for (r, &pos) in positions.iter().enumerate() {
            self.rope(&mut q[r * h..(r + 1) * h], pos);
            self.rope(&mut k[r * kv_dim..(r + 1) * kv_dim], pos);
        }
        tap.kv(li, &k, &v);
        // Append keys/values, then attend, one sequence at a time.
        let mut attn = vec![0f32; n * h];
        let mut row0 = 0;
        for s in steps.iter_mut() {
            let m = s.tokens.len();
            let start = s.cache.len;
            s.cache.k[li].truncate(start * kv_dim);
            s.cache.v[li].truncate(start * kv_dim);
            if s.cache.k[li].len() != start * kv_dim || s.cache.v[li].len() != start * kv_dim {
                return Err(InferenceError::InvalidRequest(format!(
                    "layer {li} cache holds fewer than {start} positions"
                )));
            }
            s.cache.k[li].extend_from_slice(&k[row0 * kv_dim..(row0 + m) * kv_dim]);
            s.cache.v[li].extend_from_slice(&v[row0 * kv_dim..(row0 + m) * kv_dim]);
            let kc = &s.cache.k[li];
            let vc = &s.cache.v[li];
            let out = &mut attn[row0 * h..(row0 + m) * h];
            let qs = &q[row0 * h..(row0 + m) * h];
            let work = |(idx, o): (usize, &mut [f32])| {
                let (r, head) = (idx / cfg.n_head, idx % cfg.n_head);
                let kvh = head / group;
                let qh = &qs[r * h + head * hd..r * h + (head + 1) * hd];
                let upto = start + r + 1;
                let mut scores = Vec::with_capacity(upto);
                let mut mx = f32::NEG_INFINITY;
                for j in 0..upto {
                    let kj = &kc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                    let sc = dot(qh, kj) * scale;
                    mx = mx.max(sc);
                    scores.push(sc);
                }
                for sc in scores.iter_mut() {
                    *sc = exp(*sc - mx);
                }
                let mut sum = 0f32;
                for sc in &scores {
                    sum += sc;
                }
                let inv = 1.0 / sum;
                o.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let vj = &vc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                    let p = p * inv;
                    for (od, vd) in o.iter_mut().zip(vj) {
                        *od += p * vd;
                    }
                }
            };
            let chunks = out.chunks_mut(hd).enumerate();
            // Heads in parallel once the keys to score are worth a hand-off (a decode
            // step with a few hundred positions already is). Each head's sums run in
            // the same order either way.
            if m * (start + m) * cfg.n_head > 2048 {
                chunks.collect::<Vec<_>>().into_par_iter().for_each(work);
            } else {
                chunks.for_each(work);
            }
            row0 += m;
        }
        let o = layer.wo.forward(&attn, &Q8Rows::quantize(&attn, h), n, h)?;
        for (xv, ov) in x.iter_mut().zip(&o) {
            *xv += ov;
        }
        rms_norm(x, &layer.ffn_norm, cfg.rms_eps, xn);
        let xq = Q8Rows::quantize(xn, h);
        let mut gu = layer.gate_up.forward(xn, &xq, n, h)?.into_iter();
        let (gate, mut up) = match (gu.next(), gu.next()) {
            (Some(g), Some(u)) => (g, u),
            _ => unreachable!("two projections"),
        };
        for (u, g) in up.iter_mut().zip(&gate) {
            *u *= g / (1.0 + exp(-g));
        }
        let down = layer
            .w_down
            .forward(&up, &Q8Rows::quantize(&up, cfg.ffn), n, cfg.ffn)?;
        for (xv, dv) in x.iter_mut().zip(&down) {
            *xv += dv;
        }
        Ok(())
    }

    /// Recomputes layer `li` for single positions, as a spot check does: each item gives
    /// the residual entering the layer at `pos` and the keys and values of that layer at
    /// positions `0..pos` (`pos * kv_dim` values each). All items run in one ragged batch,
    /// through the same code as [`Llama::forward`], so an honest trace is reproduced to
    /// the bit. Returns, per item, the residual leaving the layer and the position's own
    /// key and value rows.
    pub fn recompute_layer(
        &mut self,
        li: usize,
        items: &[LayerInput<'_>],
    ) -> Result<Vec<LayerOutput>, InferenceError> {
        let cfg = self.cfg.clone();
        let kv_dim = cfg.n_kv_head * cfg.head_dim;
        if li >= cfg.n_layer {
            return Err(InferenceError::InvalidRequest(format!(
                "layer {li} of {}",
                cfg.n_layer
            )));
        }
        let mut max_pos = 0;
        for it in items {
            if it.x.len() != cfg.hidden
                || it.k_prev.len() != it.pos * kv_dim
                || it.v_prev.len() != it.pos * kv_dim
                || it.pos >= cfg.context
            {
                return Err(InferenceError::InvalidRequest(format!(
                    "layer input at position {} has the wrong shape",
                    it.pos
                )));
            }
            max_pos = max_pos.max(it.pos + 1);
        }
        self.ensure_rope(max_pos);
        let mut caches: Vec<KvCache> = items
            .iter()
            .map(|it| {
                let mut c = KvCache::new(cfg.n_layer);
                c.k[li] = it.k_prev.to_vec();
                c.v[li] = it.v_prev.to_vec();
                c.len = it.pos;
                c
            })
            .collect();
        let one = [0u32];
        let mut steps: Vec<SeqStep<'_>> = caches
            .iter_mut()
            .map(|cache| SeqStep {
                cache,
                tokens: &one,
            })
            .collect();
        let positions: Vec<usize> = items.iter().map(|it| it.pos).collect();
        let mut x: Vec<f32> = items.iter().flat_map(|it| it.x.iter().copied()).collect();
        let mut xn = vec![0f32; x.len()];
        self.layer(li, &mut x, &mut xn, &positions, &mut steps, &mut NoTap)?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, it)| LayerOutput {
                x: x[i * cfg.hidden..(i + 1) * cfg.hidden].to_vec(),
                k: caches[i].k[li][it.pos * kv_dim..].to_vec(),
                v: caches[i].v[li][it.pos * kv_dim..].to_vec(),
            })
            .collect())
    }

    /// Logits from residual rows leaving the last layer (final norm, then the output
    /// matrix): the sampling step of a trace.
    pub fn head(&self, residual: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let mut xn = vec![0f32; residual.len()];
        rms_norm(residual, &self.norm, self.cfg.rms_eps, &mut xn);
        self.logits(&xn)
    }

    /// The embedding row of `token` (the residual entering layer 0).
    pub fn embedding(&self, token: u32) -> Option<&[f32]> {
        let h = self.cfg.hidden;
        let t = token as usize;
        (t < self.cfg.vocab).then(|| &self.embed[t * h..(t + 1) * h])
    }

    /// Logits for `rows` hidden states, `[rows * vocab]`.
    pub fn logits(&self, hidden: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let rows = hidden.len() / self.cfg.hidden;
        if rows == 0 {
            return Ok(Vec::new());
        }
        self.lm_head.forward(
            hidden,
            &Q8Rows::quantize(hidden, self.cfg.hidden),
            rows,
            self.cfg.hidden,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_is_accurate_over_the_range_the_model_uses() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }
}
