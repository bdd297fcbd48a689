//! wasm32 relaxed-SIMD kernel (cargo feature `relaxed-simd`, the page's second wasm build):
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
//! Tiles are 4 rows × one panel (16 columns), one column quad at a time, walked and stored by the
//! simd128 kernel's code (`super::wasm::drive`).

use core::arch::wasm32::*;
use std::ops::Range;

use super::wasm::{add_block, drive, load_acc, quad_scales, store_acc, x4, Tile};
use super::{panel_width, Q8Matrix, QuantRows, BLOCK, PANEL};

// The last 16-byte weight load of a block (`s = BLOCK / 4 - 1`, `q = 3`) ends within `qs`.
const _: () = assert!(64 * (BLOCK / 4 - 1) + 16 * 3 + 16 <= BLOCK * PANEL);

pub(super) fn gemm_relaxed(
    w: &Q8Matrix,
    xq: &QuantRows,
    rows: Range<usize>,
    panels: Range<usize>,
    out: &mut [f32],
    ldo: usize,
) {
    drive::<Relaxed>(w, xq, rows, panels, out, ldo);
}

struct Relaxed;

impl Tile for Relaxed {
    #[inline(always)]
    fn tile<const R: usize>(
        w: &Q8Matrix,
        xq: &QuantRows,
        r0: usize,
        p: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        tile::<R>(w, xq, r0, p, out, ldo)
    }
}

// The loops index several per-row / per-quad arrays at once: clearer with indices.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "simd128,relaxed-simd")]
fn tile<const R: usize>(
    w: &Q8Matrix,
    xq: &QuantRows,
    r0: usize,
    p: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, nb) = (w.k, w.nb);
    let low7 = u8x16_splat(0x7f);
    let width = panel_width(w, p);
    let mut facc = load_acc::<R>(out, ldo, width);
    for b in 0..nb {
        let pb = &w.blocks[p * nb + b];
        // The 8 k-steps of each row's block, each 4 activations broadcast to every column.
        let mut xv = [[i32x4_splat(0); BLOCK / 4]; R];
        let mut dx = [f32x4_splat(0.0); R];
        let mut corr = [i32x4_splat(0); R];
        for i in 0..R {
            let row = r0 + i;
            let x = &xq.qs[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            for (s, xv) in xv[i].iter_mut().enumerate() {
                *xv = i32x4_splat(x4(x, s));
            }
            dx[i] = f32x4_splat(xq.d[row * nb + b]);
            corr[i] = i32x4_splat(xq.corr[row * nb + b]);
        }
        for q in 0..4 {
            let mut lo = corr;
            let mut hi = [i32x4_splat(0); R];
            for s in 0..BLOCK / 4 {
                let at = 64 * s + 16 * q;
                // SAFETY: `at + 16 <= 512 = qs.len()` (s < 8, q < 4; asserted at compile time
                // above), `qs` is initialized bytes, and `v128_load` has no alignment requirement.
                let wv = unsafe { v128_load(pb.qs.as_ptr().add(at) as *const v128) };
                let wl = v128_and(wv, low7);
                let wh = u8x16_shr(wv, 7);
                for i in 0..R {
                    lo[i] = i32x4_relaxed_dot_i8x16_i7x16_add(xv[i][s], wl, lo[i]);
                    hi[i] = i32x4_relaxed_dot_i8x16_i7x16_add(xv[i][s], wh, hi[i]);
                }
            }
            let ws = quad_scales(pb, q);
            for i in 0..R {
                let sum = i32x4_add(lo[i], i32x4_shl(hi[i], 7));
                facc[i][q] = add_block(facc[i][q], sum, ws, dx[i]);
            }
        }
    }
    store_acc::<R>(&facc, out, ldo, width);
}
