//! GELU and softmax as rayon-parallel, vectorizable CPU ops, and the split of a projection's rows
//! into per-head layouts.
//!
//! Outside the linear layers, BLIP-base's vision encoder spends most of its time in `exp` (the
//! 12 × 577 × 577 attention softmax per layer) and `erf` (GELU over 577 × 3072 per layer). candle
//! evaluates both with scalar libm calls, and GELU on one thread: together about as long as all
//! of a layer's INT8 matmuls. Here both use branch-free polynomial approximations that the
//! compiler turns into SIMD code, split across rayon's pool. Natively each loop is compiled per
//! x86-64 level and chosen at run time ([`crate::kernels::isa`]: AVX-512, AVX2 + FMA, baseline); in
//! wasm it is simd128.
//!
//! Accuracy: `exp` is Cephes' `expf` polynomial (about 2 ulp); `erf` is Abramowitz & Stegun 7.1.26
//! (absolute error 1.5e-7, plus f32 rounding), so GELU is within 1e-6·max(|x|, 1) of the exact one. The
//! Hugging Face parity tests (hidden states and logits within 1e-4, identical token ids) hold.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use candle_nn::Activation;
use rayon::prelude::*;

use crate::kernels::isa::multiversion;
use crate::{Error, Result};

/// Elements per rayon task for element-wise ops: scheduling costs nothing next to the work, and
/// both cores still get a share of the text decoder's `[beams, 3072]` activations.
const CHUNK: usize = 2048;

/// `hidden_act` applied to `xs`; the exact (erf) GELU runs as [`gelu_erf`] on f32 CPU tensors.
pub fn activation(xs: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu if is_cpu_f32(xs) => Ok(xs.contiguous()?.apply_op1_no_bwd(&GELU_ERF)?),
        _ => Ok(xs.apply(&act)?),
    }
}

/// [`activation`] computed in place on `xs`'s own buffer, for an output the caller has just
/// computed and shares with nobody (a `Linear` output): saves a second buffer the size of the
/// MLP's widest activation. Falls back to [`activation`] wherever the in-place op does not apply.
pub fn activation_in_place(xs: Tensor, act: Activation) -> Result<Tensor> {
    if act == Activation::Gelu && is_cpu_f32(&xs) && xs.is_contiguous() {
        xs.inplace_op1(&GeluErfInPlace)?;
        Ok(xs)
    } else {
        activation(&xs, act)
    }
}

/// Softmax over the last dimension (`candle_nn::ops::softmax_last_dim` on other devices/dtypes).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(xs) {
        Ok(xs.contiguous()?.apply_op1_no_bwd(&SOFTMAX_LAST_DIM)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(xs)?)
    }
}

pub(crate) fn is_cpu_f32(xs: &Tensor) -> bool {
    xs.dtype() == candle_core::DType::F32 && xs.device().is_cpu()
}

/// `a * b + c`, fused on x86-64 (one instruction in the AVX2 and AVX-512 versions of the loops,
/// [`crate::kernels::isa`]; an exact library call on the rare CPU without FMA, so every x86 CPU
/// gives the same bits). wasm32's simd128 has no FMA and `f32::mul_add` would be a slow software
/// call, so it is a plain multiply and add there.
pub(crate) trait MulAdd {
    fn madd(self, b: f32, c: f32) -> f32;
}

impl MulAdd for f32 {
    #[inline(always)]
    fn madd(self, b: f32, c: f32) -> f32 {
        if cfg!(any(target_feature = "fma", target_arch = "x86_64")) {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }
}

/// `e^x`: Cephes `expf` range reduction and polynomial, branch-free. Exactly 0 below -87.3 (so a
/// `-inf` attention mask still gives 0), +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is exact in the first part.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * LOG2E).round_ties_even();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p.madd(r, 1.398_199_9e-3);
    let p = p.madd(r, 8.333_452e-3);
    let p = p.madd(r, 4.166_579_6e-2);
    let p = p.madd(r, 1.666_666_5e-1);
    let p = p.madd(r, 0.5);
    let y = p.madd(r * r, r) + 1.0;
    // 2^n built from its exponent bits; n is an integer in [-126, 128] after the clamp. Adding
    // 1.5·2^23 puts n in the low mantissa bits: an integer read that vectorizes, unlike `as i32`
    // (saturating, NaN-checked, compiled lane by lane).
    let n_int = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    let out = y * scale;
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        out
    }
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.madd(a, 1.0);
    let poly = 1.061_405_4_f32.madd(t, -1.453_152);
    let poly = poly.madd(t, 1.421_413_8);
    let poly = poly.madd(t, -0.284_496_74);
    let poly = poly.madd(t, 0.254_829_6);
    let y = 1.0 - poly * t * exp(-a * a);
    y.copysign(x)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, the exact GELU of `nn.GELU()` / `ACT2FN["gelu"]`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `xs [b, n, heads · d]` (each row the heads' values side by side, as a projection writes them)
/// in the per-head layout attention reads: `[b, heads, n, d]`, or with `transpose`
/// `[b, heads, d, n]` (the decoder's cross-attention keys). The same values as candle's
/// `reshape`, `transpose` and `contiguous`, in one pass split across rayon's pool by (image,
/// head) instead of candle's one-threaded strided copies (two for transposed keys). Transposed
/// keys are read row by row and written down their columns: 64 output rows per head, whose
/// lines stay in cache while consecutive tokens fill them.
pub fn split_heads(xs: &Tensor, heads: usize, transpose: bool) -> Result<Tensor> {
    let (b, n, h) = xs.dims3()?;
    if heads == 0 || !h.is_multiple_of(heads) {
        return Err(Error::Internal(format!(
            "split_heads: {h} values per row do not split into {heads} heads"
        )));
    }
    let d = h / heads;
    if b * n * d == 0 || !is_cpu_f32(xs) {
        let t = xs.reshape((b, n, heads, d))?.transpose(1, 2)?;
        let t = if transpose { t.transpose(2, 3)? } else { t };
        return Ok(t.contiguous()?);
    }
    let xs = xs.contiguous()?;
    let mut dst = vec![0f32; b * n * h];
    {
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Internal("split_heads: expected a CPU tensor".into()));
        };
        let src = contiguous_f32("split_heads", cpu, layout)?;
        dst.par_chunks_mut(n * d).enumerate().for_each(|(bh, out)| {
            let (image, head) = (bh / heads, bh % heads);
            let rows = &src[image * n * h + head * d..];
            if transpose {
                for (t, row) in rows.chunks(h).take(n).enumerate() {
                    for (dd, &v) in row[..d].iter().enumerate() {
                        out[dd * n + t] = v;
                    }
                }
            } else {
                for (t, out) in out.chunks_exact_mut(d).enumerate() {
                    out.copy_from_slice(&rows[t * h..][..d]);
                }
            }
        });
    }
    let shape = if transpose {
        (b, heads, d, n)
    } else {
        (b, heads, n, d)
    };
    Ok(Tensor::from_vec(dst, shape, xs.device())?)
}

/// The f32 slice a contiguous layout covers.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(src) = storage else {
        candle_core::bail!("{op}: expected an f32 tensor")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&src[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A new buffer the size of `src`, filled chunk by chunk in parallel by `f(src_chunk, dst_chunk)`.
fn par_map_chunks(src: &[f32], chunk: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut dst = vec![0f32; src.len()];
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| f(s, d));
    dst
}

#[inline(always)]
fn gelu_into_body(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = gelu(s);
    }
}

multiversion! {
    /// `dst[i] = gelu(src[i])`.
    fn gelu_into(dst: &mut [f32], src: &[f32]) = gelu_into_body;
}

#[inline(always)]
fn gelu_slice_body(xs: &mut [f32]) {
    for x in xs {
        *x = gelu(*x);
    }
}

multiversion! {
    /// `x = gelu(x)` for every value.
    fn gelu_slice(xs: &mut [f32]) = gelu_slice_body;
}

/// An f32 CPU op as a candle op: `map(values, last_dim)` computes the output values of a
/// contiguous input.
struct MapF32 {
    name: &'static str,
    map: fn(&[f32], usize) -> Vec<f32>,
}

impl CustomOp1 for MapF32 {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name, storage, layout)?;
        let dim = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        Ok((
            CpuStorage::F32((self.map)(src, dim)),
            layout.shape().clone(),
        ))
    }
}

const GELU_ERF: MapF32 = MapF32 {
    name: "blipq-gelu-erf",
    map: |src, _| par_map_chunks(src, CHUNK, |s, d| gelu_into(d, s)),
};

struct GeluErfInPlace;

impl candle_core::InplaceOp1 for GeluErfInPlace {
    fn name(&self) -> &'static str {
        "blipq-gelu-erf-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("{}: expected an f32 tensor", self.name())
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: input must be contiguous", self.name())
        };
        values[start..end]
            .par_chunks_mut(CHUNK)
            .for_each(gelu_slice);
        Ok(())
    }
}

/// Lanes of the independent accumulators in the row reductions: lets the compiler keep a full
/// SIMD register per partial result instead of a serial chain.
pub(crate) const LANES: usize = 16;

multiversion! {
    /// Softmax of one row, in place.
    pub fn softmax_in_place(row: &mut [f32]) = softmax_row;
}

multiversion! {
    /// Softmax of one row written down a column: `dst[i · stride + column] = softmax(row)[i]`
    /// (the row itself is left holding the unnormalized exponentials). The same values, bit for
    /// bit, as [`softmax_in_place`]: the attention writes its probabilities straight into the
    /// k-major tile its next product reads.
    pub(crate) fn softmax_to_column(row: &mut [f32], dst: &mut [f32], stride: usize, column: usize) = softmax_to_column_body;
}

#[inline(always)]
fn softmax_to_column_body(row: &mut [f32], dst: &mut [f32], stride: usize, column: usize) {
    let inv = softmax_exp(row);
    for (d, x) in dst.chunks_exact_mut(stride).zip(row.iter()) {
        d[column] = *x * inv;
    }
}

#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let inv = softmax_exp(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Softmax's first two passes: `row[i] = exp(row[i] - max)`; returns `1 / Σ row`.
#[inline(always)]
fn softmax_exp(row: &mut [f32]) -> f32 {
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = row.as_chunks::<LANES>();
    for c in chunks {
        for (m, &x) in lane_max.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = rest
        .iter()
        .chain(&lane_max)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    // A fully masked row (all -inf) gives NaN in PyTorch too; keep that behaviour.
    let mut lane_sum = [0f32; LANES];
    let (chunks, rest) = row.as_chunks_mut::<LANES>();
    for c in chunks {
        for (x, acc) in c.iter_mut().zip(lane_sum.iter_mut()) {
            *x = exp(*x - max);
            *acc += *x;
        }
    }
    let mut sum: f32 = 0.0;
    for x in rest.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    1.0 / (sum + lane_sum.iter().sum::<f32>())
}

const SOFTMAX_LAST_DIM: MapF32 = MapF32 {
    name: "blipq-softmax-last-dim",
    map: |src, dim| {
        // Several short rows per task (decoder self-attention rows are a few elements long).
        let rows_per_task = CHUNK.div_ceil(dim).max(1);
        par_map_chunks(src, rows_per_task * dim, |s, d| {
            d.copy_from_slice(s);
            for row in d.chunks_mut(dim) {
                softmax_in_place(row);
            }
        })
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Both layouts are exactly candle's reshape, transpose and `contiguous`, on odd sizes (a
    /// partial block of tokens, several images), and sizes that do not split are errors.
    #[test]
    fn split_heads_equals_candle_transposes() -> Result<()> {
        let dev = Device::Cpu;
        for (b, n, heads, d) in [(1, 1, 1, 1), (2, 37, 3, 5), (1, 577, 12, 64), (3, 16, 2, 8)] {
            let xs = Tensor::randn(0f32, 1.0, (b, n, heads * d), &dev)?;
            let split = xs.reshape((b, n, heads, d))?.transpose(1, 2)?;
            for (transpose, want) in [(false, split.clone()), (true, split.transpose(2, 3)?)] {
                let got = split_heads(&xs, heads, transpose)?;
                assert_eq!(got.dims(), want.dims());
                assert_eq!(
                    got.flatten_all()?.to_vec1::<f32>()?,
                    want.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                    "({b}, {n}, {heads}, {d}) transpose {transpose}"
                );
            }
        }
        let empty = Tensor::zeros((2, 0, 12), candle_core::DType::F32, &dev)?;
        assert_eq!(split_heads(&empty, 3, true)?.dims(), [2, 3, 4, 0]);
        let xs = Tensor::zeros((1, 4, 10), candle_core::DType::F32, &dev)?;
        assert!(split_heads(&xs, 3, false).is_err());
        assert!(split_heads(&xs, 0, true).is_err());
        Ok(())
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-30))
            .fold(0.0, f32::max)
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let xs: Vec<f32> = (-87_000..88_000).map(|i| i as f32 * 1e-3 + 1e-4).collect();
        let ours: Vec<f32> = xs.iter().map(|&x| exp(x)).collect();
        let std: Vec<f32> = xs.iter().map(|&x| x.exp()).collect();
        assert!(
            max_rel_diff(&ours, &std) < 5e-7,
            "{}",
            max_rel_diff(&ours, &std)
        );
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(100.0).is_infinite());
    }

    #[test]
    fn gelu_matches_candles_exact_gelu() -> Result<()> {
        let xs = Tensor::randn(0f32, 3.0, (3, 5000), &Device::Cpu)?;
        let ours = activation(&xs, Activation::Gelu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let exact = xs.gelu_erf()?.flatten_all()?.to_vec1::<f32>()?;
        let input = xs.flatten_all()?.to_vec1::<f32>()?;
        for ((o, e), x) in ours.iter().zip(&exact).zip(&input) {
            assert!(
                (o - e).abs() <= 1e-6 * x.abs().max(1.0),
                "gelu({x}): {o} vs {e}"
            );
        }
        // Non-contiguous input is made contiguous first rather than failing.
        let t = xs.t()?;
        let ours_t = activation(&t, Activation::Gelu)?.to_vec2::<f32>()?;
        assert_eq!(ours_t.len(), 5000);
        Ok(())
    }

    #[test]
    fn gelu_in_place_equals_gelu() -> Result<()> {
        let xs = Tensor::randn(0f32, 3.0, (7, 3000), &Device::Cpu)?;
        let want = activation(&xs, Activation::Gelu)?.to_vec2::<f32>()?;
        let fresh = xs.copy()?;
        let got = activation_in_place(fresh, Activation::Gelu)?.to_vec2::<f32>()?;
        assert_eq!(got, want);
        // Strided input: falls back to the copying op and leaves the input alone.
        let t = xs.t()?;
        let got_t = activation_in_place(t.clone(), Activation::Gelu)?;
        assert_eq!(got_t.t()?.to_vec2::<f32>()?, want);
        assert_eq!(t.t()?.to_vec2::<f32>()?, xs.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn softmax_matches_candle_including_masked_and_short_rows() -> Result<()> {
        for (rows, dim) in [(7, 577), (40, 3), (5, 1), (2, 16), (3, 33)] {
            let xs = (Tensor::randn(0f32, 4.0, (rows, dim), &Device::Cpu)? * 3.0)?;
            let ours = softmax_last_dim(&xs)?.flatten_all()?.to_vec1::<f32>()?;
            let theirs = candle_nn::ops::softmax_last_dim(&xs)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (o, t) in ours.iter().zip(&theirs) {
                assert!((o - t).abs() < 1e-6, "{rows}x{dim}: {o} vs {t}");
            }
        }
        // Written down a column: the same bits as in place, the other columns untouched.
        let xs = (Tensor::randn(0f32, 4.0, (4, 37), &Device::Cpu)? * 3.0)?.to_vec2::<f32>()?;
        let mut tile = vec![-1f32; 37 * 5];
        for (c, row) in xs.iter().enumerate() {
            let (mut in_place, mut scratch) = (row.clone(), row.clone());
            softmax_in_place(&mut in_place);
            softmax_to_column(&mut scratch, &mut tile, 5, c);
            for (i, p) in in_place.iter().enumerate() {
                assert_eq!(tile[i * 5 + c].to_bits(), p.to_bits(), "row {c}, value {i}");
            }
        }
        assert!(tile.chunks(5).all(|t| t[4] == -1.0));
        // A causal mask's -inf entries give exactly 0.
        let masked = Tensor::new(&[[0f32, 1.0, f32::NEG_INFINITY]], &Device::Cpu)?;
        let p = softmax_last_dim(&masked)?.to_vec2::<f32>()?;
        assert_eq!(p[0][2], 0.0);
        assert!((p[0][0] + p[0][1] - 1.0).abs() < 1e-6);
        Ok(())
    }

    /// Every instruction-set version of the element-wise loops gives the same bits as the
    /// baseline one ([`crate::kernels::isa`]).
    #[test]
    fn every_isa_level_gives_the_same_bits() -> Result<()> {
        use crate::kernels::isa::{detected, with_level, Level};
        let xs = (Tensor::randn(0f32, 4.0, 4099, &Device::Cpu)? * 3.0)?.to_vec1::<f32>()?;
        let (q, k, v) = (
            &xs[..2 * 40],
            &xs[100..100 + 17 * 40],
            &xs[1000..1000 + 17 * 40],
        );
        let run = || {
            let mut g = vec![0f32; xs.len()];
            gelu_into(&mut g, &xs);
            let mut gi = xs.clone();
            gelu_slice(&mut gi);
            let mut sm = xs.clone();
            for row in sm.chunks_mut(577) {
                softmax_in_place(row);
            }
            // The same softmax written down columns of a 3-wide tile.
            let mut column = vec![0f32; 3 * xs.len()];
            for (i, row) in xs.clone().chunks_mut(577).enumerate() {
                softmax_to_column(row, &mut column[i / 3 * 3 * 577..], 3, i % 3);
            }
            let mut att = vec![0f32; 2 * 40];
            crate::kernels::attention::attend_head(&mut att, q, k, v, 40);
            [g, gi, sm, column, att].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        let base = with_level(Level::Base, run);
        for level in [Level::V3, Level::V4]
            .into_iter()
            .filter(|&l| l <= detected())
        {
            assert!(
                with_level(level, run) == base,
                "{level:?} differs from the baseline"
            );
        }
        Ok(())
    }
}
