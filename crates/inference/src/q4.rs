//! Q4_1 x Q8 matrix multiplication in safe Rust.
//!
//! candle 0.11 has no SIMD kernel for Q4_1 (it falls back to a scalar loop that took two
//! thirds of our profile). This one keeps the weights in their GGUF bytes, quantizes each
//! activation row to 8 bits per block of 32 (scale `d = max|x| / 127`), and computes every
//! output element as `Σ_b (w_d·x_d·Σ q_w q_x + w_m·x_d·Σ q_x)`. The inner sum is integer
//! arithmetic, exact whatever the compiler vectorizes it into; the outer sum over blocks
//! runs in a fixed order. So an output element is the same bits whatever else is in the
//! batch and however many threads share the work: the property `llama.rs` builds on.

use rayon::prelude::*;

const QK: usize = 32;
/// Bytes of one GGUF Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// A `[rows, cols]` Q4_1 weight matrix (rows = outputs), unpacked into scales, mins and
/// nibble bytes.
#[derive(Debug, Clone)]
pub struct Q41Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    m: Vec<f32>,
    qs: Vec<[u8; 16]>,
}

/// A `[rows, cols]` Q8_0 weight matrix (the tied embedding / LM head of SmolLM2).
#[derive(Debug, Clone)]
pub struct Q80Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    qs: Vec<[i8; QK]>,
}

impl Q80Matrix {
    /// From the raw bytes of a GGUF Q8_0 tensor (f16 scale + 32 i8 per block).
    pub fn from_gguf_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(QK) || bytes.len() != rows * cols / QK * 34 {
            return None;
        }
        let mut d = Vec::with_capacity(rows * cols / QK);
        let mut qs = Vec::with_capacity(rows * cols / QK);
        for b in bytes.chunks_exact(34) {
            d.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.push(std::array::from_fn(|j| b[2 + j] as i8));
        }
        Some(Self { rows, cols, d, qs })
    }

    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        let nb = self.cols / QK;
        par_matmul(self.rows, self.cols, x, |r, i| {
            let (w0, x0) = (r * nb, i * nb);
            let mut acc = 0f32;
            for b in 0..nb {
                let (wi, xi) = (w0 + b, x0 + b);
                acc += self.d[wi] * x.d[xi] * block_dot_q8(&self.qs[wi], &x.q[xi]) as f32;
            }
            acc
        })
    }
}

/// Runs `dot(weight_row, activation_row)` for every pair, split across threads by groups
/// of weight rows (each element computed by exactly one thread). Returns `[n, rows]`.
fn par_matmul(
    rows: usize,
    cols: usize,
    x: &Q8Rows,
    dot: impl Fn(usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    assert_eq!(x.blocks * QK, cols, "activation width");
    let n = x.rows();
    let group = 16usize;
    let mut t = vec![0f32; rows * n];
    let work = |(g, out): (usize, &mut [f32])| {
        let r0 = g * group;
        for (k, col) in out.chunks_mut(n).enumerate() {
            for (i, o) in col.iter_mut().enumerate() {
                *o = dot(r0 + k, i);
            }
        }
    };
    // Split across threads once there is enough work to pay for the hand-off.
    if rows * n * cols >= 1 << 19 {
        t.par_chunks_mut(group * n).enumerate().for_each(work);
    } else {
        t.chunks_mut(group * n).enumerate().for_each(work);
    }
    if n == 1 {
        return t;
    }
    let mut out = vec![0f32; n * rows];
    for r in 0..rows {
        for i in 0..n {
            out[i * rows + r] = t[r * n + i];
        }
    }
    out
}

/// Activation rows quantized for [`Q41Matrix::matmul`].
#[derive(Debug, Clone)]
pub struct Q8Rows {
    blocks: usize,
    /// Block scale, rounded to half precision as GGML's Q8_1 stores it.
    d: Vec<f32>,
    /// `d * Σq`, rounded to half precision (GGML's Q8_1 `s`).
    s: Vec<f32>,
    q: Vec<[i8; QK]>,
}

impl Q8Rows {
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        let n = x.len() / QK;
        let mut d = Vec::with_capacity(n);
        let mut sums = Vec::with_capacity(n);
        let mut q = Vec::with_capacity(n);
        for blk in x.chunks_exact(QK) {
            let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut qb = [0i8; QK];
            let mut s = 0i32;
            for (o, v) in qb.iter_mut().zip(blk) {
                *o = (v * inv).round() as i8;
                s += *o as i32;
            }
            let half = |v: f32| half::f16::from_f32(v).to_f32();
            d.push(half(scale));
            sums.push(half(scale * s as f32));
            q.push(qb);
        }
        Self {
            blocks: cols / QK,
            d,
            s: sums,
            q,
        }
    }
    fn rows(&self) -> usize {
        self.d.len() / self.blocks
    }
}

/// Integer dot product of one Q8_0 weight block with one 8-bit activation block.
#[inline]
fn block_dot_q8(w: &[i8; QK], x: &[i8; QK]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            return avx2::block_dot_q8(w, x);
        }
    }
    block_dot_q8_portable(w, x)
}

fn block_dot_q8_portable(w: &[i8; QK], x: &[i8; QK]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Integer dot product of one Q4_1 block's nibbles with one 8-bit activation block.
/// Exact integer arithmetic: the SIMD and the portable versions give the same result.
#[inline]
fn block_dot(w: &[u8; 16], x: &[i8; QK]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            return avx2::block_dot(w, x);
        }
    }
    block_dot_portable(w, x)
}

fn block_dot_portable(w: &[u8; 16], x: &[i8; QK]) -> i32 {
    let mut acc = 0i32;
    for j in 0..16 {
        acc += (w[j] & 0x0F) as i32 * x[j] as i32 + (w[j] >> 4) as i32 * x[j + 16] as i32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::QK;
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
    }

    #[inline]
    pub fn block_dot(w: &[u8; 16], x: &[i8; QK]) -> i32 {
        // SAFETY: only called when `available()` found AVX2; loads are unaligned loads of
        // exactly 16 and 32 bytes from arrays of those sizes.
        unsafe { dot(w, x) }
    }

    #[inline]
    pub fn block_dot_q8(w: &[i8; QK], x: &[i8; QK]) -> i32 {
        // SAFETY: as above, AVX2 was detected and both loads read exactly 32 bytes.
        unsafe { dot_q8(w, x) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot_q8(w: &[i8; QK], x: &[i8; QK]) -> i32 {
        let wv = _mm256_loadu_si256(w.as_ptr() as *const __m256i);
        let xv = _mm256_loadu_si256(x.as_ptr() as *const __m256i);
        // |w| (unsigned) times x with w's sign moved onto x: the same products, in the
        // u8 x i8 form maddubs takes. Activations are in -127..=127, so no overflow.
        let aw = _mm256_sign_epi8(wv, wv);
        let sx = _mm256_sign_epi8(xv, wv);
        let p16 = _mm256_maddubs_epi16(aw, sx);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        hsum(p32)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn hsum(p32: __m256i) -> i32 {
        let s128 = _mm_add_epi32(
            _mm256_castsi256_si128(p32),
            _mm256_extracti128_si256(p32, 1),
        );
        let s64 = _mm_add_epi32(s128, _mm_unpackhi_epi64(s128, s128));
        let s32 = _mm_add_epi32(s64, _mm_shuffle_epi32(s64, 0b01));
        _mm_cvtsi128_si32(s32)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot(w: &[u8; 16], x: &[i8; QK]) -> i32 {
        let packed = _mm_loadu_si128(w.as_ptr() as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        let wq = _mm256_set_m128i(hi, lo); // weights 0..16 then 16..32, as u8
        let xq = _mm256_loadu_si256(x.as_ptr() as *const __m256i);
        // u8 x i8 -> pairs summed into i16 (at most 2 * 15 * 128, no saturation), then
        // pairs of i16 summed into i32.
        let p16 = _mm256_maddubs_epi16(wq, xq);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        hsum(p32)
    }
}

impl Q41Matrix {
    /// From the raw bytes of a GGUF Q4_1 tensor with `rows * cols` elements.
    pub fn from_gguf_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(QK) || bytes.len() != rows * cols / QK * BLOCK_BYTES {
            return None;
        }
        let n = rows * cols / QK;
        let mut d = Vec::with_capacity(n);
        let mut m = Vec::with_capacity(n);
        let mut qs = Vec::with_capacity(n);
        for b in bytes.chunks_exact(BLOCK_BYTES) {
            d.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
            m.push(half::f16::from_le_bytes([b[2], b[3]]).to_f32());
            let mut q = [0u8; 16];
            q.copy_from_slice(&b[4..20]);
            qs.push(q);
        }
        Some(Self {
            rows,
            cols,
            d,
            m,
            qs,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// One output element: weight row `r` against activation row `i`.
    #[inline]
    fn dot(&self, r: usize, x: &Q8Rows, i: usize) -> f32 {
        let nb = self.cols / QK;
        let (w0, x0) = (r * nb, i * nb);
        let mut acc = 0f32;
        for b in 0..nb {
            let (wi, xi) = (w0 + b, x0 + b);
            let isum = block_dot(&self.qs[wi], &x.q[xi]) as f32;
            acc += self.d[wi] * x.d[xi] * isum + self.m[wi] * x.s[xi];
        }
        acc
    }

    /// `x [n, cols]` times this matrix transposed: `[n, rows]`, row-major.
    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        par_matmul(self.rows, self.cols, x, |r, i| self.dot(r, x, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use rand::{Rng, SeedableRng};

    #[test]
    fn agrees_with_candle_and_is_batch_independent() {
        let (rows, cols, n) = (64, 96, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let wt = Tensor::from_slice(&w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let ours = Q41Matrix::from_gguf_bytes(&q.data().unwrap(), rows, cols).unwrap();
        let reference: Vec<f32> = QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&Tensor::from_slice(&x, (n, cols), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = ours.matmul(&Q8Rows::quantize(&x, cols));
        for (a, b) in got.iter().zip(&reference) {
            assert!((a - b).abs() < 2e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // Row 3 alone gives the same bits as row 3 in the batch.
        let alone = ours.matmul(&Q8Rows::quantize(&x[3 * cols..4 * cols], cols));
        assert_eq!(alone, got[3 * rows..4 * rows].to_vec());
        assert!(Q41Matrix::from_gguf_bytes(&[0u8; 7], rows, cols).is_none());
    }

    #[test]
    fn simd_and_portable_block_dots_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for _ in 0..1000 {
            let w: [u8; 16] = std::array::from_fn(|_| rng.gen());
            let x: [i8; QK] = std::array::from_fn(|_| rng.gen_range(-127..=127));
            assert_eq!(block_dot(&w, &x), block_dot_portable(&w, &x));
            let w8: [i8; QK] = std::array::from_fn(|_| rng.gen_range(-128..=127));
            assert_eq!(block_dot_q8(&w8, &x), block_dot_q8_portable(&w8, &x));
        }
    }
}
