//! wasm32 relaxed-SIMD kernels (cargo feature `relaxed-simd`, the page's second wasm build):
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s`, which engines lower to `vpdpbusd` (AVX-VNNI) or a
//! `pmaddubsw` sequence. A module holding it fails validation where relaxed SIMD is missing, so
//! this file is compiled only into the build the page loads after feature detection.
//!
//! Exactness. The instruction multiplies signed bytes `a` by bytes `b` whose result is
//! engine-defined when `b`'s top bit is set, and the `pmaddubsw` lowering saturates pairwise sums
//! at i16. So `b` only ever holds 7-bit values: the stored weight byte `w = q_w + 128` (the
//! panel layout of [`super`], in `0..=255`) is split into its low 7 bits and its top bit,
//! `w = lo + 128 · hi`, and with `a` = the activations (`|q_x| <= 127`):
//!
//! `Σ q_x q_w = Σ q_x lo + 128 · Σ q_x hi − 128 · Σ q_x`
//!
//! where the last term is the per-block correction the activation quantizer precomputes
//! (`QuantRows::corr`). Every pairwise sum is at most `2 · 127 · 127 < 2^15`, so both lowerings
//! give the exact integer block sum and the kernel equals the scalar reference bit for bit.
//!
//! One dot per 16 products instead of two, where the engine allows it. Engines that lower the
//! instruction to `vpdpbusd` (V8 on CPUs with AVX-VNNI) read `b` as *unsigned* bytes and never
//! saturate: there the stored weight byte itself can be `b`, and `Σ q_x w − 128 · Σ q_x` is the
//! block sum, as in the x86 VNNI kernel. [`unsigned_dot`] probes the engine once, on operands
//! that tell the three behaviours apart (unsigned and exact; signed; saturating at i16), and
//! [`super::Kernel::RelaxedSimdU8`] is available only where it computed every probe exactly as
//! unsigned bytes; elsewhere [`super::Kernel::RelaxedSimd`], the 7-bit planes, is the best.
//!
//! Tiles are 4 rows × one panel (16 columns), one column quad at a time, walked and stored by the
//! simd128 kernel's code (`super::wasm::drive`).

use core::arch::wasm32::*;
use std::sync::OnceLock;

use super::wasm::{add_block, drive, load_acc, quad_scales, store_acc, store_rows, x_splat, Tile};
use super::{panel_width, Job, BLOCK, PANEL};

// The last 16-byte weight load of a block (`s = BLOCK / 4 - 1`, `q = 3`) ends within `qs`.
const _: () = assert!(64 * (BLOCK / 4 - 1) + 16 * 3 + 16 <= BLOCK * PANEL);

/// The 7-bit planes, or with `single_dot` the single-dot kernel (only where [`unsigned_dot`]
/// holds: the caller checks).
pub(super) fn gemm_relaxed(job: &Job, out: &mut [f32], single_dot: bool) {
    if single_dot {
        drive::<Relaxed<true>>(job, out);
    } else {
        drive::<Relaxed<false>>(job, out);
    }
}

/// The 4-bit kernel: the nibbles are `0..=15`, so the dot's second operand never has its top bit
/// set and the instruction is exact on every engine, in one dot per 16 products.
pub(super) fn gemm4_relaxed(job: &Job, out: &mut [f32]) {
    drive::<RelaxedInt4>(job, out);
}

struct RelaxedInt4;

impl Tile for RelaxedInt4 {
    #[inline(always)]
    fn tile<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
        tile4::<R>(job, r0, p, out)
    }
}

/// `U8`: the stored weight bytes as the dot's second operand (one dot per 16 products);
/// otherwise the two 7-bit planes.
struct Relaxed<const U8: bool>;

impl<const U8: bool> Tile for Relaxed<U8> {
    #[inline(always)]
    fn tile<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
        if job.w.channel {
            tile::<R, U8, true>(job, r0, p, out)
        } else {
            tile::<R, U8, false>(job, r0, p, out)
        }
    }
}

/// Whether this engine computes `i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c)` as `c` plus the
/// exact dot product of `a` (signed) with `b` read as unsigned bytes, for every `b` — what the
/// `vpdpbusd` lowering does. Probed once with the extremes of both operands (`|a| = 127`,
/// `b` of 0, 1, 127, 128, 129, 254, 255) in every sign pattern, which a signed reading of `b` or
/// an i16-saturating one would get wrong.
pub(super) fn unsigned_dot() -> bool {
    static UNSIGNED: OnceLock<bool> = OnceLock::new();
    *UNSIGNED.get_or_init(|| {
        let bs: [u8; 7] = [0, 1, 127, 128, 129, 254, 255];
        let mut cases = Vec::new();
        for &hi in &bs[3..] {
            // All-maximal lanes (the largest sums either way), and mixed lanes.
            cases.push(([127i8; 16], [hi; 16]));
            cases.push(([-127i8; 16], [hi; 16]));
            cases.push((
                std::array::from_fn(|i| if i % 3 == 0 { -127 } else { 127 }),
                std::array::from_fn(|i| bs[(i + hi as usize) % bs.len()]),
            ));
        }
        cases.iter().all(|(a, b)| {
            let c = [7i32, -7, 1 << 20, -(1 << 20)];
            let got = relaxed_dot(*a, *b, c);
            (0..4).all(|l| {
                let exact: i32 = (0..4)
                    .map(|j| a[4 * l + j] as i32 * b[4 * l + j] as i32)
                    .sum();
                got[l] == c[l] + exact
            })
        })
    })
}

/// One relaxed dot on arrays, kept opaque to the optimizer so the engine computes it.
#[target_feature(enable = "simd128,relaxed-simd")]
fn relaxed_dot(a: [i8; 16], b: [u8; 16], c: [i32; 4]) -> [i32; 4] {
    let (a, b, c) = std::hint::black_box((a, b, c));
    // SAFETY: each array is 16 initialized bytes, read unaligned (no alignment requirement).
    let (av, bv, cv) = unsafe {
        (
            v128_load(a.as_ptr() as *const v128),
            v128_load(b.as_ptr() as *const v128),
            v128_load(c.as_ptr() as *const v128),
        )
    };
    let r = i32x4_relaxed_dot_i8x16_i7x16_add(av, bv, cv);
    std::hint::black_box([
        i32x4_extract_lane::<0>(r),
        i32x4_extract_lane::<1>(r),
        i32x4_extract_lane::<2>(r),
        i32x4_extract_lane::<3>(r),
    ])
}

// The loops index several per-row / per-quad arrays at once: clearer with indices.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "simd128,relaxed-simd")]
fn tile<const R: usize, const U8: bool, const ROW: bool>(
    job: &Job,
    r0: usize,
    p: usize,
    out: &mut [f32],
) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    let low7 = u8x16_splat(0x7f);
    let width = panel_width(w, p);
    // `Q8_0`: f32 sums, scaled block by block. Per channel (`ROW`): exact i32 sums over the
    // whole row (`isum`, starting at the row's offset correction), scaled once by `store_rows`.
    let mut facc = if ROW {
        [[f32x4_splat(0.0); 4]; R]
    } else {
        load_acc::<R>(out, ldo, width)
    };
    let mut isum = [[i32x4_splat(0); 4]; R];
    if ROW {
        for (i, isum) in isum.iter_mut().enumerate() {
            *isum = [i32x4_splat(xq.corr[r0 + i]); 4];
        }
    }
    for b in 0..nb {
        let pb = &w.blocks[p * nb + b];
        let mut dx = [f32x4_splat(0.0); R];
        let mut corr = [i32x4_splat(0); R];
        // Each row's block of activations, read 4 at a time by `x_splat`.
        let mut xs: [&[i8]; R] = [&[]; R];
        for i in 0..R {
            let row = r0 + i;
            xs[i] = &xq.qs[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            if !ROW {
                dx[i] = f32x4_splat(xq.d[row * nb + b]);
                corr[i] = i32x4_splat(xq.corr[row * nb + b]);
            }
        }
        for q in 0..4 {
            let mut lo = corr;
            let mut hi = [i32x4_splat(0); R];
            for s in 0..BLOCK / 4 {
                let at = 64 * s + 16 * q;
                // SAFETY: `at + 16 <= 512 = qs.len()` (s < 8, q < 4; asserted at compile time
                // above), `qs` is initialized bytes, and `v128_load` has no alignment requirement.
                let wv = unsafe { v128_load(pb.qs.as_ptr().add(at) as *const v128) };
                if U8 {
                    // The engine reads `wv` as unsigned bytes, exactly (`unsigned_dot`).
                    for i in 0..R {
                        lo[i] = i32x4_relaxed_dot_i8x16_i7x16_add(x_splat(xs[i], s), wv, lo[i]);
                    }
                    continue;
                }
                let wl = v128_and(wv, low7);
                let wh = u8x16_shr(wv, 7);
                for i in 0..R {
                    let xv = x_splat(xs[i], s);
                    lo[i] = i32x4_relaxed_dot_i8x16_i7x16_add(xv, wl, lo[i]);
                    hi[i] = i32x4_relaxed_dot_i8x16_i7x16_add(xv, wh, hi[i]);
                }
            }
            let ws = quad_scales(&pb.scales, q);
            for i in 0..R {
                let sum = i32x4_add(lo[i], i32x4_shl(hi[i], 7));
                if ROW {
                    isum[i][q] = i32x4_add(isum[i][q], sum);
                } else {
                    facc[i][q] = add_block(facc[i][q], sum, ws, dx[i]);
                }
            }
        }
    }
    if ROW {
        store_rows::<R>(job, r0, p, &isum, out);
    } else {
        store_acc::<R>(&facc, out, ldo, width);
    }
}

/// A 4-bit tile: per column quad, the low nibbles (k-step `s`) and high nibbles (`s + 4`) of a
/// 16-byte vector against the row's activations, accumulated from the offset correction
/// `corr / 16`.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "simd128,relaxed-simd")]
fn tile4<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    let nibble = u8x16_splat(0x0f);
    let width = panel_width(w, p);
    let mut facc = load_acc::<R>(out, ldo, width);
    for b in 0..nb {
        let pb = &w.blocks4[p * nb + b];
        let mut dx = [f32x4_splat(0.0); R];
        let mut corr = [i32x4_splat(0); R];
        let mut xs: [&[i8]; R] = [&[]; R];
        for i in 0..R {
            let row = r0 + i;
            xs[i] = &xq.qs[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            dx[i] = f32x4_splat(xq.d[row * nb + b]);
            corr[i] = i32x4_splat(xq.corr[row * nb + b] >> 4);
        }
        for q in 0..4 {
            let mut acc = corr;
            for s in 0..BLOCK / 8 {
                let at = 64 * s + 16 * q;
                let bytes = &pb.qs[at..at + 16];
                // SAFETY: `bytes` is 16 initialized bytes (bounds-checked above), and
                // `v128_load` has no alignment requirement.
                let wv = unsafe { v128_load(bytes.as_ptr() as *const v128) };
                let (wl, wh) = (v128_and(wv, nibble), u8x16_shr(wv, 4));
                for i in 0..R {
                    acc[i] = i32x4_relaxed_dot_i8x16_i7x16_add(x_splat(xs[i], s), wl, acc[i]);
                    acc[i] = i32x4_relaxed_dot_i8x16_i7x16_add(x_splat(xs[i], s + 4), wh, acc[i]);
                }
            }
            let ws = quad_scales(&pb.scales, q);
            for i in 0..R {
                facc[i][q] = add_block(facc[i][q], acc[i], ws, dx[i]);
            }
        }
    }
    store_acc::<R>(&facc, out, ldo, width);
}
