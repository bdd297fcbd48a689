//! Activation quantization: the `m × k` f32 rows of one product to `Q8_0` blocks (int8 values,
//! an f16-rounded scale per 32, and the offset correction the unsigned-weight kernels need),
//! exactly as candle's `BlockQ8_0::from_float`; or, for per-channel weights
//! ([`super::Q8Matrix::is_channel`]), per token: one f32 scale `max |x| / 127` and one correction
//! per row. Compiled per x86-64 level ([`crate::kernels::isa`]).

use half::f16;
use rayon::prelude::*;

use super::{BLOCK, SMALL_M};
use crate::kernels::isa::multiversion;

/// Activation rows quantized to `Q8_0` for one product.
pub(crate) struct QuantRows {
    /// `m × k` int8 values, row-major.
    pub(crate) qs: Vec<i8>,
    /// Scale groups per row: `nb` (blocks of 32) or 1 (per token).
    pub(crate) groups: usize,
    /// `m × groups` scales: per block (`f16`-rounded, as candle stores them), or per token (f32).
    pub(crate) d: Vec<f32>,
    /// `m × groups`: `-128 · Σ q` per group, the correction for the +128 offset of the packed
    /// weights (the VNNI and relaxed-SIMD kernels need it; the others flip the offset bit back).
    #[cfg_attr(
        not(any(target_arch = "x86_64", feature = "relaxed-simd")),
        allow(dead_code)
    )]
    pub(crate) corr: Vec<i32>,
}

/// Quantizes one block exactly like candle's portable `BlockQ8_0::from_float`; returns `(d, Σ q)`.
///
/// Written so that it compiles to SIMD code (this runs over every activation of every INT8
/// layer): the max is a compare-select, and the float-to-int conversion avoids `as i8`, whose
/// saturating, NaN-checked semantics are compiled lane by lane. `|x · id| <= 127` by construction,
/// so rounding and then reading the low byte of `r + 1.5·2^23` gives the same value as
/// candle's `round(x · id) as i8`.
#[inline(always)]
fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23

    // Eight running maxima, then a halving tree: both become vector max instructions, where a
    // single running maximum is a serial chain of 32 scalar ones.
    let mut lanes = [0f32; 8];
    for c in x.as_chunks::<8>().0 {
        for (m, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    for half in [4, 2, 1] {
        for i in 0..half {
            let other = lanes[i + half];
            lanes[i] = if other > lanes[i] { other } else { lanes[i] };
        }
    }
    let amax = lanes[0];
    let d = amax / ((1 << 7) - 1) as f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = round_half_away(v * id);
        *q = (r + MAGIC).to_bits() as u8 as i8;
        sum += *q as i32;
    }
    (f16::from_f32(d).to_f32(), sum)
}

/// `f32::round` (halves away from zero), bit for bit, as `trunc(v ± (0.5 − 2^-25))` (how LLVM
/// itself lowers `round` on x86): wasm32 has no instruction for `round`, which becomes a call
/// per value there, but has a vector `trunc`. Adding the largest float below one half rounds
/// up exactly the values whose fraction is at least one half, at every magnitude; infinities
/// come back unchanged and NaN stays NaN (tested against `f32::round` across the whole range).
#[inline(always)]
fn round_half_away(v: f32) -> f32 {
    const BELOW_HALF: f32 = 0.5 - f32::EPSILON / 4.0;
    (v + BELOW_HALF.copysign(v)).trunc()
}

/// One activation row (`k` values, whole blocks) into its int8 values, block scales and offset
/// corrections.
#[inline(always)]
fn quantize_row_body(x: &[f32], q: &mut [i8], d: &mut [f32], c: &mut [i32]) {
    // Rows are whole blocks (k is a multiple of BLOCK), so the remainders are empty.
    for (((x, q), d), c) in x
        .as_chunks::<BLOCK>()
        .0
        .iter()
        .zip(q.as_chunks_mut::<BLOCK>().0.iter_mut())
        .zip(d.iter_mut())
        .zip(c.iter_mut())
    {
        let (scale, sum) = quantize_block(x, q);
        *d = scale;
        *c = -128 * sum;
    }
}

multiversion! {
    fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32], c: &mut [i32]) = quantize_row_body;
}

/// One activation row quantized per token: `d = max |x| / 127` (f32), `q = round(x / d)`, and
/// the row's correction `-128 · Σ q`. The same vectorizable steps as [`quantize_block`].
#[inline(always)]
fn quantize_token_body(x: &[f32], q: &mut [i8], d: &mut [f32], c: &mut [i32]) {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let mut lanes = [0f32; 16];
    for chunk in x.as_chunks::<16>().0 {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let mut amax = 0f32;
    for &v in lanes.iter().chain(x.as_chunks::<16>().1) {
        let a = v.abs();
        amax = if a > amax { a } else { amax };
    }
    let scale = amax / 127.0;
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // `|v · id| <= 127` (up to rounding of `id`, which `round` absorbs): see `quantize_block`.
        let r = round_half_away(v * id).clamp(-127.0, 127.0);
        *q = (r + MAGIC).to_bits() as u8 as i8;
        sum += *q as i32;
    }
    d[0] = scale;
    c[0] = -128 * sum;
}

multiversion! {
    fn quantize_token(x: &[f32], q: &mut [i8], d: &mut [f32], c: &mut [i32]) = quantize_token_body;
}

/// One activation row's slices: `((x, q), (d, corr))`.
type RowParts<'a> = ((&'a [f32], &'a mut [i8]), (&'a mut [f32], &'a mut [i32]));

impl QuantRows {
    /// Quantizes `m` rows of `k` values: per block of 32, or with `per_token` one scale per row.
    pub(crate) fn new(x: &[f32], m: usize, k: usize, per_token: bool) -> Self {
        let nb = if per_token { 1 } else { k / BLOCK };
        let mut qs = vec![0i8; m * k];
        let mut d = vec![0f32; m * nb];
        let mut corr = vec![0i32; m * nb];
        let row = |((x, q), (d, c)): RowParts| {
            if per_token {
                quantize_token(x, q, d, c)
            } else {
                quantize_row(x, q, d, c)
            }
        };
        if m > SMALL_M {
            x.par_chunks_exact(k)
                .zip(qs.par_chunks_exact_mut(k))
                .zip(
                    d.par_chunks_exact_mut(nb)
                        .zip(corr.par_chunks_exact_mut(nb)),
                )
                .with_min_len(8)
                .for_each(row);
        } else {
            x.chunks_exact(k)
                .zip(qs.chunks_exact_mut(k))
                .zip(d.chunks_exact_mut(nb).zip(corr.chunks_exact_mut(nb)))
                .for_each(row);
        }
        Self {
            qs,
            groups: nb,
            d,
            corr,
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::kernels::isa::{detected, with_level, Level};
    use crate::kernels::q8::Q8_0_BYTES;
    use crate::Result;

    /// The `round` replacement equals `f32::round` bit for bit: every 61st float of the whole
    /// range (NaN, infinities and subnormals included), every half-integer tie and its neighbours
    /// up to 2^24, and the values next to one half.
    #[test]
    fn round_half_away_is_round() {
        let check = |v: f32| {
            for v in [v, -v] {
                if v.is_nan() {
                    // A NaN's sign and payload are not specified through arithmetic.
                    assert!(round_half_away(v).is_nan(), "{:#x}", v.to_bits());
                    continue;
                }
                assert_eq!(
                    round_half_away(v).to_bits(),
                    v.round().to_bits(),
                    "{v:e} ({:#x})",
                    v.to_bits()
                );
            }
        };
        let step = if cfg!(miri) { 1_000_003 } else { 61 };
        (0..=u32::MAX)
            .step_by(step)
            .map(f32::from_bits)
            .for_each(check);
        let ties = if cfg!(miri) { 64 } else { 1 << 24 };
        for i in 0..ties {
            let tie = i as f32 + 0.5;
            [tie, tie.next_up(), tie.next_down()]
                .into_iter()
                .for_each(check);
        }
        [
            0.5f32.next_down(),
            0.5,
            0.5f32.next_up(),
            1.5f32.next_down(),
        ]
        .into_iter()
        .for_each(check);
        [0.0, f32::MIN_POSITIVE, f32::MAX, f32::INFINITY, f32::NAN]
            .into_iter()
            .for_each(check);
    }

    /// The vectorizable quantizer gives candle's `Q8_0` quantization bit for bit at every
    /// instruction-set level, including values that land exactly on .5 after scaling and all-zero
    /// blocks.
    #[test]
    fn activation_quantization_is_candles() -> Result<()> {
        let mut seed = 0x2545_f491_u32;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32 - 0.5) * 8.0
        };
        // Fewer under Miri, which interprets candle's quantizer too.
        let count = if cfg!(miri) { 50 } else { 2000 };
        let mut blocks: Vec<[f32; BLOCK]> = (0..count)
            .map(|_| std::array::from_fn(|_| rand()))
            .collect();
        blocks.push([0.0; BLOCK]);
        // amax 127 gives id 1: the values k + 0.5 are ties, rounded away from zero.
        blocks.push(std::array::from_fn(|i| {
            if i == 0 {
                127.0
            } else {
                i as f32 - 16.5
            }
        }));
        let flat: Vec<f32> = blocks.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat.clone(), (blocks.len(), BLOCK), &Device::Cpu)?;
        let theirs = QTensor::quantize(&t, GgmlDType::Q8_0)?.data()?.to_vec();
        // Every instruction-set version of the row quantizer (`crate::kernels::isa`).
        let levels = [Level::Base, Level::V3, Level::V4];
        for level in levels.into_iter().filter(|&l| l <= detected()) {
            let (mut qs, mut d, mut corr) = (
                vec![0i8; flat.len()],
                vec![0f32; blocks.len()],
                vec![0i32; blocks.len()],
            );
            with_level(level, || quantize_row(&flat, &mut qs, &mut d, &mut corr));
            for (b, candle) in theirs.chunks_exact(Q8_0_BYTES).enumerate() {
                let want: Vec<i8> = candle[2..].iter().map(|&b| b as i8).collect();
                let ours = &qs[b * BLOCK..][..BLOCK];
                assert_eq!(ours, want.as_slice(), "{level:?}: {:?}", blocks[b]);
                assert_eq!(d[b], f16::from_le_bytes([candle[0], candle[1]]).to_f32());
                assert_eq!(corr[b], -128 * want.iter().map(|&q| q as i32).sum::<i32>());
            }
        }
        Ok(())
    }
}
