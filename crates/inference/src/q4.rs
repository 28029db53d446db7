//! Q4_1 and Q8_0 weights times 8-bit activations, in SIMD Rust with a bit-exact portable twin.
//!
//! candle 0.11 has no SIMD kernel for Q4_1 (its scalar fallback took two thirds of our first
//! profile). These kernels keep the weights in their GGUF block bytes, quantize each
//! activation row to 8 bits per block of 32 (scale `d = max|x| / 127`, GGML's Q8_1), and
//! compute one output element as
//!
//! ```text
//! lanes[l] = fma(w_d·x_d, Σ_{k<4} q_w[4l+k]·q_x[4l+k], lanes[l])   for every block, l in 0..8
//! out      = ((lanes[0]+lanes[4]) + (lanes[2]+lanes[6])) + ((lanes[1]+lanes[5]) + (lanes[3]+lanes[7]))
//!            + Σ_blocks w_m·x_s                                       (Q4_1 only)
//! ```
//!
//! That is the *definition* of the result, not an implementation detail: the AVX2 kernel
//! computes exactly these operations (the integer sums are exact; `fma` is IEEE fused
//! multiply-add in both versions; the additions run in the order written), and the
//! portable version spells them out. So an output element is the same bits on any
//! machine, whatever else is in the batch, however many threads share the work, and with
//! or without SIMD: the property `llama.rs` and the verifier build on.
//!
//! Speed comes from what surrounds the per-block arithmetic: weights stay in their 20- or
//! 34-byte GGUF blocks (less memory traffic than unpacked scales), every weight block is
//! unpacked once and multiplied against up to four activation rows held in registers, and
//! the work is split across threads by ranges of weight rows with no transposes.

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which implementation of the kernels runs. Both give the same bits (see above); the
/// switch exists so that tests and `vouch bench` can show it on real receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// AVX2 + FMA + F16C where the CPU has them, else portable.
    Auto,
    /// The portable version everywhere.
    Portable,
}

static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Selects the kernels for the whole process (every model). Safe to flip at any time:
/// results do not change, only speed.
pub fn set_kernels(k: Kernels) {
    PORTABLE.store(k == Kernels::Portable, Ordering::Relaxed);
}

/// Name of the kernels a matrix multiplication started now would use.
pub fn kernels_in_use() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if !PORTABLE.load(Ordering::Relaxed) && kernels::avx2::available() {
            return "avx2";
        }
    }
    "portable"
}

const QK: usize = 32;
/// Bytes of one GGUF Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
const Q41_BYTES: usize = 20;
/// Bytes of one GGUF Q8_0 block: f16 scale, 32 signed bytes.
const Q80_BYTES: usize = 34;
/// Activation rows multiplied against one unpacked weight block.
const TILE: usize = 4;

/// One 32-value block of an activation row quantized to 8 bits.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct XBlock {
    /// Scale, rounded to half precision as GGML's Q8_1 stores it.
    d: f32,
    /// `d * Σq`, rounded to half precision (GGML's Q8_1 `s`).
    s: f32,
    q: [i8; QK],
}

/// Activation rows quantized for the matrices below.
#[derive(Debug, Clone)]
pub struct Q8Rows {
    blocks: usize,
    b: Vec<XBlock>,
}

impl Q8Rows {
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        let half = |v: f32| half::f16::from_f32(v).to_f32();
        let b = x
            .chunks_exact(QK)
            .map(|blk| {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let mut q = [0i8; QK];
                let mut s = 0i32;
                for (o, v) in q.iter_mut().zip(blk) {
                    *o = (v * inv).round() as i8;
                    s += *o as i32;
                }
                XBlock {
                    d: half(scale),
                    s: half(scale * s as f32),
                    q,
                }
            })
            .collect();
        Self {
            blocks: cols / QK,
            b,
        }
    }

    fn rows(&self) -> usize {
        self.b.len() / self.blocks
    }

    fn row(&self, i: usize) -> &[XBlock] {
        &self.b[i * self.blocks..(i + 1) * self.blocks]
    }
}

/// Weight block formats the kernels know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q41,
    Q80,
}

impl Format {
    fn block_bytes(self) -> usize {
        match self {
            Format::Q41 => Q41_BYTES,
            Format::Q80 => Q80_BYTES,
        }
    }
}

/// A `[rows, cols]` quantized weight matrix (rows = outputs) in its GGUF block bytes.
#[derive(Debug, Clone)]
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    raw: Vec<u8>,
}

fn f16(bytes: &[u8]) -> f32 {
    half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

impl QMatrix {
    /// From the raw bytes of a GGUF Q4_1 tensor with `rows * cols` elements.
    pub fn q4_1(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        Self::new(Format::Q41, bytes, rows, cols)
    }

    /// From the raw bytes of a GGUF Q8_0 tensor with `rows * cols` elements.
    pub fn q8_0(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        Self::new(Format::Q80, bytes, rows, cols)
    }

    fn new(format: Format, bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(QK) || bytes.len() != rows * cols / QK * format.block_bytes() {
            return None;
        }
        Some(Self {
            format,
            rows,
            cols,
            raw: bytes.to_vec(),
        })
    }

    /// The rows of several matrices of one format and width, stacked into one matrix, so
    /// that projections reading the same input run as one multiplication.
    pub fn stack(parts: &[&QMatrix]) -> Option<Self> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.cols != first.cols)
        {
            return None;
        }
        Some(Self {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            raw: parts.iter().flat_map(|p| p.raw.iter().copied()).collect(),
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols / QK * self.format.block_bytes()
    }

    /// `x [n, cols]` times this matrix transposed: `[n, rows]`, row-major.
    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.blocks * QK, self.cols, "activation width");
        let (n, rows) = (x.rows(), self.rows);
        let mut out = vec![0f32; n * rows];
        let threads = rayon::current_num_threads().max(1);
        let work = rows * n * self.cols;
        // A few ranges per thread keeps both cores busy when one is interrupted.
        let parts = if work >= 1 << 16 && threads > 1 {
            (threads * 4).min(rows.div_ceil(8))
        } else {
            1
        };
        let per = rows.div_ceil(parts);
        let sink = kernels::Sink::new(&mut out);
        let run = |p: usize| {
            let r0 = p * per;
            let r1 = (r0 + per).min(rows);
            self.rows_into(x, r0..r1, &sink);
        };
        if parts > 1 {
            (0..parts).into_par_iter().for_each(run);
        } else {
            run(0);
        }
        out
    }

    /// Computes weight rows `range` against every activation row into `sink`.
    fn rows_into(&self, x: &Q8Rows, range: std::ops::Range<usize>, sink: &kernels::Sink) {
        let (n, rb) = (x.rows(), self.row_bytes());
        let mut i = 0;
        while i < n {
            let t = (n - i).min(TILE);
            let xs: [&[XBlock]; TILE] = std::array::from_fn(|j| x.row(i + j.min(t - 1)));
            let kernel = kernels::Kernel::select(self.format, &xs, t);
            for r in range.clone() {
                let w = &self.raw[r * rb..(r + 1) * rb];
                let v = kernel.run(w, &xs);
                for (j, &vj) in v.iter().enumerate().take(t) {
                    sink.put((i + j) * self.rows + r, vj);
                }
            }
            i += t;
        }
    }
}

/// The arithmetic defined at the top of this file, portable version.
fn dot_portable(format: Format, w: &[u8], x: &[XBlock]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = 0f32;
    for (wb, xb) in w.chunks_exact(format.block_bytes()).zip(x) {
        let mut prod = [0i32; QK];
        match format {
            Format::Q41 => {
                for e in 0..16 {
                    let byte = wb[4 + e];
                    prod[e] = (byte & 0x0F) as i32 * xb.q[e] as i32;
                    prod[e + 16] = (byte >> 4) as i32 * xb.q[e + 16] as i32;
                }
            }
            Format::Q80 => {
                for e in 0..QK {
                    prod[e] = wb[2 + e] as i8 as i32 * xb.q[e] as i32;
                }
            }
        }
        let dd = f16(&wb[0..2]) * xb.d;
        for (l, lane) in lanes.iter_mut().enumerate() {
            let p = (prod[4 * l] + prod[4 * l + 1]) + (prod[4 * l + 2] + prod[4 * l + 3]);
            *lane = dd.mul_add(p as f32, *lane);
        }
        if format == Format::Q41 {
            mins += f16(&wb[2..4]) * xb.s;
        }
    }
    let l = lanes;
    (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) + mins
}

#[allow(unsafe_code)]
mod kernels {
    use super::{dot_portable, Format, XBlock, PORTABLE, TILE};
    use std::sync::atomic::Ordering;

    /// Disjoint writes into one output buffer from several threads.
    pub struct Sink {
        ptr: *mut f32,
        len: usize,
    }

    // SAFETY: `put` writes each index from exactly one task (`QMatrix::matmul` hands
    // disjoint weight-row ranges to its tasks and every index belongs to one row), and the
    // buffer outlives the parallel section that borrows the sink.
    unsafe impl Sync for Sink {}

    impl Sink {
        pub fn new(out: &mut [f32]) -> Self {
            Self {
                ptr: out.as_mut_ptr(),
                len: out.len(),
            }
        }

        #[inline]
        pub fn put(&self, i: usize, v: f32) {
            assert!(i < self.len);
            // SAFETY: in bounds (checked above); no other task writes index `i` (see the
            // `Sync` impl) and nobody reads the buffer until the tasks have joined.
            unsafe { self.ptr.add(i).write(v) }
        }
    }

    type Simd = unsafe fn(&[u8], &[&[XBlock]; TILE]) -> [f32; TILE];

    /// The kernel for one format, tile height and set of activation rows, chosen once per
    /// tile rather than per weight row.
    #[derive(Clone, Copy)]
    pub struct Kernel {
        format: Format,
        t: usize,
        nb: usize,
        simd: Option<Simd>,
    }

    impl Kernel {
        /// For `t <= TILE` activation rows `xs[..t]` (`xs[t..]` are ignored), all of one
        /// length.
        pub fn select(format: Format, xs: &[&[XBlock]; TILE], t: usize) -> Self {
            let nb = xs[0].len();
            assert!((1..=TILE).contains(&t) && xs.iter().all(|x| x.len() == nb));
            Self {
                format,
                t,
                nb,
                simd: Self::simd(format, t),
            }
        }

        #[cfg(target_arch = "x86_64")]
        fn simd(format: Format, t: usize) -> Option<Simd> {
            if !avx2::available() || PORTABLE.load(Ordering::Relaxed) {
                return None;
            }
            Some(if avx2::vnni() {
                Self::table::<true>(format, t)
            } else {
                Self::table::<false>(format, t)
            })
        }

        #[cfg(target_arch = "x86_64")]
        fn table<const VNNI: bool>(format: Format, t: usize) -> Simd {
            match (format, t) {
                (Format::Q41, 1) => avx2::q41::<1, VNNI>,
                (Format::Q41, 2) => avx2::q41::<2, VNNI>,
                (Format::Q41, 3) => avx2::q41::<3, VNNI>,
                (Format::Q41, _) => avx2::q41::<4, VNNI>,
                (Format::Q80, 1) => avx2::q80::<1, VNNI>,
                (Format::Q80, 2) => avx2::q80::<2, VNNI>,
                (Format::Q80, 3) => avx2::q80::<3, VNNI>,
                (Format::Q80, _) => avx2::q80::<4, VNNI>,
            }
        }

        #[cfg(not(target_arch = "x86_64"))]
        fn simd(_: Format, _: usize) -> Option<Simd> {
            None
        }

        /// One weight row (`nb` blocks of bytes) against the activation rows.
        #[inline]
        pub fn run(&self, w: &[u8], xs: &[&[XBlock]; TILE]) -> [f32; TILE] {
            assert!(
                w.len() == self.nb * self.format.block_bytes()
                    && xs.iter().all(|x| x.len() == self.nb)
            );
            if let Some(f) = self.simd {
                // SAFETY: `simd` only returns kernels whose CPU features were detected,
                // and the lengths they read were checked just above.
                return unsafe { f(w, xs) };
            }
            let mut out = [0f32; TILE];
            for j in 0..self.t {
                out[j] = dot_portable(self.format, w, xs[j]);
            }
            out
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub mod avx2 {
        use super::super::{XBlock, Q41_BYTES, Q80_BYTES, TILE};
        use std::arch::x86_64::*;
        use std::sync::OnceLock;

        pub fn available() -> bool {
            static OK: OnceLock<bool> = OnceLock::new();
            *OK.get_or_init(|| {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            })
        }

        /// Bytes ahead of the current weight block to prefetch in decode.
        const PREFETCH: usize = 768;

        /// AVX-VNNI: one `vpdpbusd` instead of `maddubs` + `madd`, the same exact sums.
        pub fn vnni() -> bool {
            static OK: OnceLock<bool> = OnceLock::new();
            *OK.get_or_init(|| is_x86_feature_detected!("avxvnni"))
        }

        /// Lane l: the sum of the four u8 x i8 products of bytes 4l..4l+4 (exact: at most
        /// 4 * 255 * 128 in magnitude; with `maddubs` the i16 pairs stay below 2^15 because
        /// one factor is at most 128 and the other at most 127 in every caller).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn dot4<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
            if VNNI {
                dot4_vnni(u, s)
            } else {
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
            }
        }

        #[inline]
        #[target_feature(enable = "avx2,avxvnni")]
        unsafe fn dot4_vnni(u: __m256i, s: __m256i) -> __m256i {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn f16_at(p: *const u8) -> f32 {
            let bits = (p as *const u16).read_unaligned();
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
        }

        /// The fixed reduction order of the definition.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)))
        }

        /// # Safety
        /// AVX2, FMA and F16C present (and AVX-VNNI when `VNNI`); `w` holds
        /// `xs[j].len()` Q4_1 blocks for `j < J`.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn q41<const J: usize, const VNNI: bool>(
            w: &[u8],
            xs: &[&[XBlock]; TILE],
        ) -> [f32; TILE] {
            let nb = xs[0].len();
            let low = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); J];
            let mut mins = [0f32; J];
            let wp = w.as_ptr();
            for b in 0..nb {
                let blk = wp.add(b * Q41_BYTES);
                if J == 1 {
                    // One activation row (decode): the weights stream from memory and
                    // nothing else hides their latency; ask for them early.
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                }
                let d = f16_at(blk);
                let m = f16_at(blk.add(2));
                let packed = _mm_loadu_si128(blk.add(4) as *const __m128i);
                // Low nibbles are values 0..16, high nibbles 16..32: exact u8 values.
                let wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
                for j in 0..J {
                    let xb = xs[j].get_unchecked(b);
                    let xq = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    // u8 x i8 pairs into i16 (at most 2 * 15 * 127: no saturation), then
                    // pairs of i16 into i32: lane l sums elements 4l..4l+4.
                    let p = dot4::<VNNI>(wq, xq);
                    acc[j] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(p), acc[j]);
                    mins[j] += m * xb.s;
                }
            }
            let mut out = [0f32; TILE];
            for j in 0..J {
                out[j] = hsum(acc[j]) + mins[j];
            }
            out
        }

        /// # Safety
        /// AVX2, FMA and F16C present (and AVX-VNNI when `VNNI`); `w` holds
        /// `xs[j].len()` Q8_0 blocks for `j < J`.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn q80<const J: usize, const VNNI: bool>(
            w: &[u8],
            xs: &[&[XBlock]; TILE],
        ) -> [f32; TILE] {
            let nb = xs[0].len();
            let mut acc = [_mm256_setzero_ps(); J];
            let wp = w.as_ptr();
            for b in 0..nb {
                let blk = wp.add(b * Q80_BYTES);
                if J == 1 {
                    // One activation row (decode): the weights stream from memory and
                    // nothing else hides their latency; ask for them early.
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                }
                let d = f16_at(blk);
                let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                // |w| as u8 times x with w's sign moved onto x: the same products in the
                // u8 x i8 form maddubs takes (|-128| reads as 128; |x| <= 127: no overflow).
                let aw = _mm256_sign_epi8(wv, wv);
                for j in 0..J {
                    let xb = xs[j].get_unchecked(b);
                    let xq = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    let p = dot4::<VNNI>(aw, _mm256_sign_epi8(xq, wv));
                    acc[j] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(p), acc[j]);
                }
            }
            let mut out = [0f32; TILE];
            for j in 0..J {
                out[j] = hsum(acc[j]);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut impl Rng, len: usize, r: f32) -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-r..r)).collect()
    }

    fn quantized(w: &[f32], rows: usize, cols: usize, dt: GgmlDType) -> QTensor {
        let wt = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&wt, dt).unwrap()
    }

    #[test]
    fn agrees_with_candle_and_is_batch_and_thread_independent() {
        let (rows, cols, n) = (64, 96, 7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let w = random(&mut rng, rows * cols, 1.0);
        let x = random(&mut rng, n * cols, 2.0);
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = quantized(&w, rows, cols, dt);
            let bytes = q.data().unwrap();
            let ours = match dt {
                GgmlDType::Q4_1 => QMatrix::q4_1(&bytes, rows, cols),
                _ => QMatrix::q8_0(&bytes, rows, cols),
            }
            .unwrap();
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
                assert!((a - b).abs() < 2e-2 * (1.0 + b.abs()), "{dt:?}: {a} vs {b}");
            }
            // Every row alone gives the same bits as in the batch (tiles of 4, 3, 1 rows).
            for i in 0..n {
                let alone = ours.matmul(&Q8Rows::quantize(&x[i * cols..(i + 1) * cols], cols));
                assert_eq!(
                    alone,
                    got[i * rows..(i + 1) * rows].to_vec(),
                    "{dt:?} row {i}"
                );
            }
            // One thread gives the same bits as the pool.
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| ours.matmul(&Q8Rows::quantize(&x, cols)));
            assert_eq!(one, got);
        }
        assert!(QMatrix::q4_1(&[0u8; 7], rows, cols).is_none());
        assert!(QMatrix::q8_0(&[0u8; 7], rows, cols).is_none());
    }

    #[test]
    fn simd_and_portable_kernels_give_the_same_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let cols = 32 * 18;
        for round in 0..200 {
            let x = random(&mut rng, TILE * cols, 4.0);
            let xq = Q8Rows::quantize(&x, cols);
            let xs: [&[XBlock]; TILE] = std::array::from_fn(|j| xq.row(j));
            for format in [Format::Q41, Format::Q80] {
                // Random block bytes with finite, positive-or-negative half scales.
                let nb = cols / QK;
                let mut w = vec![0u8; nb * format.block_bytes()];
                rng.fill(&mut w[..]);
                for blk in w.chunks_exact_mut(format.block_bytes()) {
                    let d = half::f16::from_f32(rng.gen_range(-0.05f32..0.05)).to_le_bytes();
                    blk[..2].copy_from_slice(&d);
                    if format == Format::Q41 {
                        let m = half::f16::from_f32(rng.gen_range(-0.5f32..0.5)).to_le_bytes();
                        blk[2..4].copy_from_slice(&m);
                    }
                }
                let t = 1 + round % TILE;
                let fast = kernels::Kernel::select(format, &xs, t).run(&w, &xs);
                for j in 0..t {
                    let slow = dot_portable(format, &w, xs[j]);
                    assert_eq!(
                        fast[j].to_bits(),
                        slow.to_bits(),
                        "{format:?} tile {t} row {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn stacked_matrices_give_the_rows_of_each() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cols = 64;
        let x = Q8Rows::quantize(&random(&mut rng, 3 * cols, 1.0), cols);
        let a = QMatrix::q4_1(
            &quantized(&random(&mut rng, 8 * cols, 1.0), 8, cols, GgmlDType::Q4_1)
                .data()
                .unwrap(),
            8,
            cols,
        )
        .unwrap();
        let b = QMatrix::q4_1(
            &quantized(&random(&mut rng, 4 * cols, 1.0), 4, cols, GgmlDType::Q4_1)
                .data()
                .unwrap(),
            4,
            cols,
        )
        .unwrap();
        let ab = QMatrix::stack(&[&a, &b]).unwrap();
        let (ya, yb, yab) = (a.matmul(&x), b.matmul(&x), ab.matmul(&x));
        for i in 0..3 {
            assert_eq!(yab[i * 12..i * 12 + 8], ya[i * 8..(i + 1) * 8]);
            assert_eq!(yab[i * 12 + 8..(i + 1) * 12], yb[i * 4..(i + 1) * 4]);
        }
    }
}
