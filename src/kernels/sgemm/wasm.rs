//! wasm32 kernels on the packed f32 layout ([`super`]): simd128 (`f32x4.mul` then `f32x4.add`)
//! in every wasm build, and `f32x4.relaxed_madd` in the `relaxed-simd` build (engines lower it to
//! one fused multiply-add where the CPU has FMA, else to the same multiply and add).
//!
//! A tile is [`MR`] rows × one panel (16 columns, 4 vectors): per k step, 4 weight loads, one
//! broadcast activation per row and `4 · MR` multiply-adds. Two rows keep 8 accumulators, the 4
//! weight vectors and a broadcast within the 16 vector registers engines map v128 onto on x86.
//! Rows are read straight from `x`; each element is summed in k order from the output's value,
//! like the scalar reference, so the simd128 kernel equals it up to the reference's own
//! rounding, and the relaxed one differs only where it fuses.
//!
//! Safety contract of the entry points: `b` satisfies [`super::Block`]'s contract. The raw
//! accesses below stay within it: activations `x[r * k + kk]` for rows `r < m` and `kk < k`;
//! panel rows `p * k + kk` for `p0 <= p < p1` (each a 64-byte [`super::PanelRow`]); output
//! elements `(r, 16 p + c)` for `r < m` and `c < width(p)`, which are this item's alone.

use core::arch::wasm32::*;

use super::{Block, PANEL};

/// Rows per tile.
const MR: usize = 2;

/// # Safety
/// `b` must satisfy [`super::Block`]'s contract.
pub(super) unsafe fn block_simd128(b: &Block) {
    // SAFETY: the contract is the caller's.
    unsafe { block::<false>(b) }
}

/// # Safety
/// `b` must satisfy [`super::Block`]'s contract.
#[cfg(feature = "relaxed-simd")]
#[target_feature(enable = "relaxed-simd")]
pub(super) unsafe fn block_relaxed(b: &Block) {
    // SAFETY: the contract is the caller's.
    unsafe { block::<true>(b) }
}

/// `a · b + c`: fused where the engine fuses `relaxed_madd` (`RELAXED`), else rounded twice.
#[inline(always)]
fn madd<const RELAXED: bool>(a: v128, b: v128, c: v128) -> v128 {
    #[cfg(feature = "relaxed-simd")]
    if RELAXED {
        return f32x4_relaxed_madd(a, b, c);
    }
    f32x4_add(f32x4_mul(a, b), c)
}

/// Row pairs outside, the item's panels inside: a pair's activations stay in L1 while the
/// item's panels (at most `GROUP × k × 64` bytes) stream from L2.
///
/// # Safety
/// `b` must satisfy [`super::Block`]'s contract.
#[inline(always)]
unsafe fn block<const RELAXED: bool>(b: &Block) {
    b.debug_assert_fits();
    let mut r = 0;
    while r < b.m {
        let rows = (b.m - r).min(MR);
        for p in b.p0..b.p1 {
            // SAFETY: rows `r .. r + rows` are below `m` and `p` is one of the item's panels.
            unsafe {
                if rows == 2 {
                    tile::<2, RELAXED>(b, r, p)
                } else {
                    tile::<1, RELAXED>(b, r, p)
                }
            }
        }
        r += rows;
    }
}

/// Rows `r0 .. r0 + R` × panel `p`, accumulated onto the output.
///
/// # Safety
/// `r0 + R <= m`, `p0 <= p < p1`, and `b` must satisfy [`super::Block`]'s contract.
#[inline(always)]
unsafe fn tile<const R: usize, const RELAXED: bool>(b: &Block, r0: usize, p: usize) {
    let k = b.k;
    let width = b.width(p);
    let panel = &b.panels[p * k..(p + 1) * k];
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    for (i, acc) in acc.iter_mut().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (c, t) in tmp[..width].iter_mut().enumerate() {
            // SAFETY: row `r0 + i < m`, column `16 p + c` with `c < width(p)`: this item's
            // output (module documentation).
            *t = unsafe { *b.out.add((r0 + i) * b.ldo + p * PANEL + c) };
        }
        for (q, a) in acc.iter_mut().enumerate() {
            *a = f32x4(tmp[4 * q], tmp[4 * q + 1], tmp[4 * q + 2], tmp[4 * q + 3]);
        }
    }
    let x: [*const f32; R] = std::array::from_fn(|i| b.x[(r0 + i) * k..].as_ptr());
    for (kk, row) in panel.iter().enumerate() {
        let w = row.0.as_ptr() as *const v128;
        // SAFETY: a `PanelRow` is 16 initialized f32 (64 bytes): 4 vectors; `v128_load` has no
        // alignment requirement.
        let wv = unsafe {
            [
                v128_load(w),
                v128_load(w.add(1)),
                v128_load(w.add(2)),
                v128_load(w.add(3)),
            ]
        };
        for i in 0..R {
            // SAFETY: `kk < k` and row `r0 + i < m`, so `x[(r0 + i) * k + kk]` is in `b.x`.
            let xv = f32x4_splat(unsafe { *x[i].add(kk) });
            for q in 0..4 {
                acc[i][q] = madd::<RELAXED>(xv, wv[q], acc[i][q]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (q, a) in acc.iter().enumerate() {
            // SAFETY: `tmp` holds 16 f32, so 4 unaligned 16-byte stores at `4 q` fit.
            unsafe { v128_store(tmp.as_mut_ptr().add(4 * q) as *mut v128, *a) };
        }
        for (c, t) in tmp[..width].iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { *b.out.add((r0 + i) * b.ldo + p * PANEL + c) = *t };
        }
    }
}
