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
//! Tiles are up to 4 rows × one panel (16 columns), walked and stored by the simd128 kernel's
//! code (`super::wasm::drive`). Within a tile, each k-step's activations are broadcast once per
//! row and used against several column quads, the quads' sums being independent chains held in
//! registers; the k-steps stay a loop (an opaque trip count), because unrolled, LLVM hoists every
//! step's broadcasts ahead of the dots and the engine spills them to the stack (README, "In the
//! browser", has the measurements).

use core::arch::wasm32::*;
use std::sync::OnceLock;

use super::wasm::{
    add_block, drive, load_acc, quad_scales, start_acc, store_acc, store_rows, x_splat, Tile,
};
use super::{panel_width, Job, BLOCK};

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

/// An int8 tile: [`rows`] over its rows. With the single dot, four rows at a time against two
/// column quads (8 accumulators) and a decode step's one or two rows against all four (so a row
/// of one still has 4 independent chains); with the 7-bit planes, which need two accumulators
/// per quad, half as many quads.
#[inline(always)]
fn tile<const R: usize, const U8: bool, const ROW: bool>(
    job: &Job,
    r0: usize,
    p: usize,
    out: &mut [f32],
) {
    match (R, U8) {
        (1, true) => rows::<1, 4, U8, ROW>(job, r0, p, out),
        (2, true) => rows::<2, 4, U8, ROW>(job, r0, p, out),
        (3, true) => rows::<3, 2, U8, ROW>(job, r0, p, out),
        (_, true) => rows::<4, 2, U8, ROW>(job, r0, p, out),
        (1, false) => rows::<1, 2, U8, ROW>(job, r0, p, out),
        (2, false) => rows::<2, 2, U8, ROW>(job, r0, p, out),
        (3, false) => rows::<3, 1, U8, ROW>(job, r0, p, out),
        (_, false) => rows::<4, 1, U8, ROW>(job, r0, p, out),
    }
}

/// `R` rows × one panel, `QUADS` column quads at a time (at most 8 accumulators, which with the
/// weights, one broadcast and the 7-bit planes' mask stay within the 15 vector registers V8
/// allocates on x86-64, of the 16 it maps v128 onto). Each
/// k-step's activations are broadcast once per row and used against `QUADS` quads' weights, so
/// the accumulators are independent chains (one dot's latency hides behind the others). `U8`:
/// the stored weight bytes are the dot's second operand; otherwise their low 7 bits and top bit,
/// two dots. Every block sum is the exact integer, scaled and added in the scalar reference's
/// order.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "simd128,relaxed-simd")]
fn rows<const R: usize, const QUADS: usize, const U8: bool, const ROW: bool>(
    job: &Job,
    r0: usize,
    p: usize,
    out: &mut [f32],
) {
    // The quads of a pass are `q0 .. q0 + QUADS` within the panel's 4 (the loads rely on it).
    const { assert!(QUADS > 0 && 4 % QUADS == 0) };
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    let low7 = u8x16_splat(0x7f);
    let width = panel_width(w, p);
    let (mut facc, mut isum) = start_acc::<R, ROW>(job, r0, p, out, true);
    for b in 0..nb {
        let pb = &w.blocks[p * nb + b];
        let mut dx = [f32x4_splat(0.0); R];
        let mut corr = [i32x4_splat(0); R];
        let mut xs: [&[i8]; R] = [&[]; R];
        for i in 0..R {
            let row = r0 + i;
            xs[i] = &xq.qs[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            if !ROW {
                dx[i] = f32x4_splat(xq.d[row * nb + b]);
                corr[i] = i32x4_splat(xq.corr[row * nb + b]);
            }
        }
        for q0 in (0..4).step_by(QUADS) {
            // Per channel the whole-row sums carry on; `Q8_0` blocks start at their correction.
            let mut lo: [[v128; QUADS]; R] = std::array::from_fn(|i| {
                std::array::from_fn(|j| if ROW { isum[i][q0 + j] } else { corr[i] })
            });
            let mut hi = [[i32x4_splat(0); QUADS]; R];
            // An opaque trip count keeps this a loop: unrolled, LLVM hoists every step's
            // broadcasts ahead of the dots, and the engine spills them to the stack.
            for s in 0..std::hint::black_box(BLOCK / 4) {
                // The step's 4 column quads × 4 k of weights.
                let step = &pb.qs[64 * s..64 * s + 64];
                // SAFETY: `16 (q0 + j) + 16 <= 64 = step.len()` (`q0 + j < 4`), `step` is
                // initialized bytes, and `v128_load` has no alignment requirement.
                let wv: [v128; QUADS] = std::array::from_fn(|j| unsafe {
                    v128_load(step.as_ptr().add(16 * (q0 + j)) as *const v128)
                });
                for i in 0..R {
                    let xv = x_splat(xs[i], s);
                    for j in 0..QUADS {
                        if U8 {
                            // The engine reads `wv` as unsigned bytes, exactly (`unsigned_dot`).
                            lo[i][j] = i32x4_relaxed_dot_i8x16_i7x16_add(xv, wv[j], lo[i][j]);
                        } else {
                            let (wl, wh) = (v128_and(wv[j], low7), u8x16_shr(wv[j], 7));
                            lo[i][j] = i32x4_relaxed_dot_i8x16_i7x16_add(xv, wl, lo[i][j]);
                            hi[i][j] = i32x4_relaxed_dot_i8x16_i7x16_add(xv, wh, hi[i][j]);
                        }
                    }
                }
            }
            for j in 0..QUADS {
                let ws = quad_scales(&pb.scales, q0 + j);
                for i in 0..R {
                    let sum = i32x4_add(lo[i][j], i32x4_shl(hi[i][j], 7));
                    if ROW {
                        isum[i][q0 + j] = sum;
                    } else {
                        facc[i][q0 + j] = add_block(facc[i][q0 + j], sum, ws, dx[i]);
                    }
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

/// A 4-bit tile: [`rows4`] over its rows: a decode step's single row against all four column
/// quads, more rows against two (each quad's weights are two nibble planes, so at most 15
/// vectors are live: accumulators, planes, a row's two broadcasts and the nibble mask).
#[inline(always)]
fn tile4<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
    match R {
        1 => rows4::<1, 4>(job, r0, p, out),
        2 => rows4::<2, 2>(job, r0, p, out),
        3 => rows4::<3, 2>(job, r0, p, out),
        _ => rows4::<4, 2>(job, r0, p, out),
    }
}

/// `R` 4-bit rows × one panel, `QUADS` column quads at a time: per k-step, each quad's 16-byte
/// vector (4 columns × 4 k, two k-steps) splits into its low nibbles (k-step `s`) and high
/// nibbles (`s + 4`), each against the row's activations of that step, accumulated from the
/// offset correction `corr / 16`; the steps stay a loop, as in [`rows`].
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "simd128,relaxed-simd")]
fn rows4<const R: usize, const QUADS: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
    const { assert!(QUADS > 0 && 4 % QUADS == 0) };
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
        for q0 in (0..4).step_by(QUADS) {
            let mut acc = [[i32x4_splat(0); QUADS]; R];
            for i in 0..R {
                acc[i] = [corr[i]; QUADS];
            }
            // An opaque trip count keeps this a loop (see `rows`).
            for s in 0..std::hint::black_box(BLOCK / 8) {
                let step = &pb.qs[64 * s..64 * s + 64];
                let mut wl = [i32x4_splat(0); QUADS];
                let mut wh = [i32x4_splat(0); QUADS];
                for j in 0..QUADS {
                    // SAFETY: `16 (q0 + j) + 16 <= 64 = step.len()` (`q0 + j < 4`), `step` is
                    // initialized bytes, and `v128_load` has no alignment requirement.
                    let wv = unsafe { v128_load(step.as_ptr().add(16 * (q0 + j)) as *const v128) };
                    (wl[j], wh[j]) = (v128_and(wv, nibble), u8x16_shr(wv, 4));
                }
                for i in 0..R {
                    let (x0, x1) = (x_splat(xs[i], s), x_splat(xs[i], s + 4));
                    for j in 0..QUADS {
                        acc[i][j] = i32x4_relaxed_dot_i8x16_i7x16_add(x0, wl[j], acc[i][j]);
                        acc[i][j] = i32x4_relaxed_dot_i8x16_i7x16_add(x1, wh[j], acc[i][j]);
                    }
                }
            }
            for j in 0..QUADS {
                let ws = quad_scales(&pb.scales, q0 + j);
                for i in 0..R {
                    facc[i][q0 + j] = add_block(facc[i][q0 + j], acc[i][j], ws, dx[i]);
                }
            }
        }
    }
    store_acc::<R>(&facc, out, ldo, width);
}
