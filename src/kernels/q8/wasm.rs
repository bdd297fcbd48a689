//! wasm32 simd128 kernel (selected at compile time: `-C target-feature=+simd128`).
//!
//! simd128 has no 8-bit dot product, so weights and activations are widened to i16 and multiplied
//! with `i32x4.dot_i16x8_s`. A 16-byte weight vector holds 4 columns × 4 k; its low/high halves
//! widen to two columns × 4 k each, and one dot gives `[c0 k0+k1, c0 k2+k3, c1 k0+k1, c1 k2+k3]`,
//! so per block the pairs are summed once with two shuffles. Tiles are 4 rows × 16 columns, one
//! column quad at a time, to stay within the 16 xmm registers that engines map v128 onto.

use super::{panel_width, Job, BLOCK, PANEL};
use core::arch::wasm32::*;

const MR: usize = 4;

// The last 16-byte weight load of a block (`s = BLOCK / 4 - 1`, `q = 3`) ends within `qs`.
const _: () = assert!(64 * (BLOCK / 4 - 1) + 16 * 3 + 16 <= BLOCK * PANEL);

pub(super) fn gemm_simd128(job: &Job, out: &mut [f32]) {
    drive::<Simd128>(job, out);
}

pub(super) fn gemm4_simd128(job: &Job, out: &mut [f32]) {
    drive::<Simd128Int4>(job, out);
}

/// The 4-bit kernel: [`tile4`].
struct Simd128Int4;

impl Tile for Simd128Int4 {
    #[inline(always)]
    fn tile<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
        tile4::<R>(job, r0, p, out)
    }
}

/// A wasm tile kernel: rows `r0 .. r0 + R` (`R <= 4`) × panel `p`, accumulated onto `out`
/// (the tile's corner, at the job's stride).
pub(super) trait Tile {
    fn tile<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]);
}

struct Simd128;

impl Tile for Simd128 {
    #[inline(always)]
    fn tile<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
        if job.w.channel {
            tile::<R, true>(job, r0, p, out)
        } else {
            tile::<R, false>(job, r0, p, out)
        }
    }
}

/// The walk both wasm kernels share: panels outside, tiles of up to 4 rows inside.
pub(super) fn drive<T: Tile>(job: &Job, out: &mut [f32]) {
    // Safe indexing throughout (each raw load reads within a slice bounds-checked just before,
    // or a fixed-size array at a constant-bounded offset), so this only states the contract, as
    // the x86 kernels do.
    job.debug_assert_fits(out.len());
    for t in job.tiles(MR, 1) {
        let o = &mut out[t.at..];
        match t.mr {
            4 => T::tile::<4>(job, t.r, t.p, o),
            3 => T::tile::<3>(job, t.r, t.p, o),
            2 => T::tile::<2>(job, t.r, t.p, o),
            _ => T::tile::<1>(job, t.r, t.p, o),
        }
    }
}

/// A tile's f32 accumulators, 4 vectors per row, from the caller's starting values in `out`
/// (a partial last panel goes through a zero-padded copy).
#[inline(always)]
pub(super) fn load_acc<const R: usize>(out: &[f32], ldo: usize, width: usize) -> [[v128; 4]; R] {
    let mut facc = [[f32x4_splat(0.0); 4]; R];
    for (i, facc) in facc.iter_mut().enumerate() {
        let mut tmp = [0f32; PANEL];
        tmp[..width].copy_from_slice(&out[i * ldo..i * ldo + width]);
        for (q, v) in facc.iter_mut().enumerate() {
            *v = f32x4(tmp[4 * q], tmp[4 * q + 1], tmp[4 * q + 2], tmp[4 * q + 3]);
        }
    }
    facc
}

/// A tile's starting accumulators: `Q8_0` (`!ROW`) sums in f32, scaled block by block, from
/// `out`'s values; per channel (`ROW`) exact i32 sums over the whole row (`isum`, from each
/// row's offset correction where `corr`), scaled once by [`store_rows`].
#[inline(always)]
#[allow(clippy::type_complexity)]
pub(super) fn start_acc<const R: usize, const ROW: bool>(
    job: &Job,
    r0: usize,
    p: usize,
    out: &[f32],
    corr: bool,
) -> ([[v128; 4]; R], [[v128; 4]; R]) {
    let mut isum = [[i32x4_splat(0); 4]; R];
    if !ROW {
        let width = panel_width(job.w, p);
        return (load_acc::<R>(out, job.ldo, width), isum);
    }
    if corr {
        for (i, isum) in isum.iter_mut().enumerate() {
            *isum = [i32x4_splat(job.xq.corr[r0 + i]); 4];
        }
    }
    ([[f32x4_splat(0.0); 4]; R], isum)
}

/// Writes a tile's accumulators back to `out` (its first `width` columns).
#[inline(always)]
pub(super) fn store_acc<const R: usize>(
    facc: &[[v128; 4]; R],
    out: &mut [f32],
    ldo: usize,
    width: usize,
) {
    for (i, facc) in facc.iter().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (q, v) in facc.iter().enumerate() {
            for (l, t) in tmp[4 * q..4 * q + 4].iter_mut().enumerate() {
                *t = match l {
                    0 => f32x4_extract_lane::<0>(*v),
                    1 => f32x4_extract_lane::<1>(*v),
                    2 => f32x4_extract_lane::<2>(*v),
                    _ => f32x4_extract_lane::<3>(*v),
                };
            }
        }
        out[i * ldo..i * ldo + width].copy_from_slice(&tmp[..width]);
    }
}

/// Activations `4s..4s + 4` of a row's block, broadcast to every 32-bit lane: one
/// `v128.load32_splat`. The relaxed kernels call it at the point of use: an array of a block's 8
/// broadcasts, built once per block, is spilled to the stack and read back, which took half
/// their time.
#[inline(always)]
pub(super) fn x_splat(x: &[i8], s: usize) -> v128 {
    let quad = &x[4 * s..4 * s + 4];
    // SAFETY: `quad` is 4 initialized bytes (bounds-checked above); `v128_load32_splat` reads
    // exactly 4 bytes and has no alignment requirement.
    unsafe { v128_load32_splat(quad.as_ptr() as *const u32) }
}

/// The weight scales of column quad `q` of a block (`pb.scales`).
#[inline(always)]
pub(super) fn quad_scales(scales: &[f32; PANEL], q: usize) -> v128 {
    let quad = &scales[4 * q..4 * q + 4];
    // SAFETY: `quad` is 4 initialized f32 (16 bytes, bounds-checked above), and `v128_load` has
    // no alignment requirement. One load, where four lane inserts would be compiled otherwise.
    unsafe { v128_load(quad.as_ptr() as *const v128) }
}

/// `acc + sum · (ws · dx)`: one block's exact integer sums of a column quad, scaled, added in
/// the scalar reference's order.
#[inline(always)]
pub(super) fn add_block(acc: v128, sum: v128, ws: v128, dx: v128) -> v128 {
    f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(sum), f32x4_mul(ws, dx)))
}

/// A per-channel tile's end: its whole-row integer sums `isum` (column quads), scaled once by
/// the column scales (any block's: every block holds them) and the rows' token scales, added
/// onto `out`'s starting values.
#[inline(always)]
pub(super) fn store_rows<const R: usize>(
    job: &Job,
    r0: usize,
    p: usize,
    isum: &[[v128; 4]; R],
    out: &mut [f32],
) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let width = panel_width(w, p);
    let pb = &w.blocks[p * w.nb];
    let mut facc = load_acc::<R>(out, ldo, width);
    for (i, (facc, isum)) in facc.iter_mut().zip(isum).enumerate() {
        let dx = f32x4_splat(xq.d[r0 + i]);
        for (q, (facc, isum)) in facc.iter_mut().zip(isum).enumerate() {
            *facc = add_block(*facc, *isum, quad_scales(&pb.scales, q), dx);
        }
    }
    store_acc::<R>(&facc, out, ldo, width);
}

// The loops index several per-row / per-quad arrays at once: clearer with indices.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn tile<const R: usize, const ROW: bool>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    let flip = u8x16_splat(0x80);
    let width = panel_width(w, p);
    let (mut facc, mut isum) = start_acc::<R, ROW>(job, r0, p, out, false);
    for b in 0..nb {
        let pb = &w.blocks[p * nb + b];
        // The 8 k-steps of each row's block, as i16 `[x0 x1 x2 x3 x0 x1 x2 x3]` (built once per
        // block: widening at the point of use, once per column quad, is slower here).
        let mut xv = [[i16x8_splat(0); BLOCK / 4]; R];
        for (i, xv) in xv.iter_mut().enumerate() {
            let x = &xq.qs[(r0 + i) * k + b * BLOCK..(r0 + i) * k + (b + 1) * BLOCK];
            for (s, xv) in xv.iter_mut().enumerate() {
                *xv = i16x8_extend_low_i8x16(x_splat(x, s));
            }
        }
        let mut dx = [f32x4_splat(0.0); R];
        if !ROW {
            for (i, dx) in dx.iter_mut().enumerate() {
                *dx = f32x4_splat(xq.d[(r0 + i) * nb + b]);
            }
        }
        for q in 0..4 {
            let mut lo = [i32x4_splat(0); R];
            let mut hi = [i32x4_splat(0); R];
            for s in 0..BLOCK / 4 {
                let at = 64 * s + 16 * q;
                // SAFETY: `at + 16 <= 512 = qs.len()` (s < 8, q < 4; asserted at compile time
                // above), `qs` is initialized bytes, and `v128_load` has no alignment requirement.
                let wv = v128_xor(
                    unsafe { v128_load(pb.qs.as_ptr().add(at) as *const v128) },
                    flip,
                );
                let wl = i16x8_extend_low_i8x16(wv);
                let wh = i16x8_extend_high_i8x16(wv);
                for i in 0..R {
                    lo[i] = i32x4_add(lo[i], i32x4_dot_i16x8(wl, xv[i][s]));
                    hi[i] = i32x4_add(hi[i], i32x4_dot_i16x8(wh, xv[i][s]));
                }
            }
            let ws = quad_scales(&pb.scales, q);
            for i in 0..R {
                let sum = i32x4_add(
                    i32x4_shuffle::<0, 2, 4, 6>(lo[i], hi[i]),
                    i32x4_shuffle::<1, 3, 5, 7>(lo[i], hi[i]),
                );
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

/// A 4-bit tile: the nibbles of a 16-byte vector (4 columns × 4 k, two k-steps) are split with
/// a mask and a shift and widened (unsigned, `0..=15`) to i16 for `i32x4.dot_i16x8_s`, as the
/// int8 kernel widens its bytes; the block sums start at the offset correction `corr / 16`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn tile4<const R: usize>(job: &Job, r0: usize, p: usize, out: &mut [f32]) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    let nibble = u8x16_splat(0x0f);
    let width = panel_width(w, p);
    let mut facc = load_acc::<R>(out, ldo, width);
    for b in 0..nb {
        let pb = &w.blocks4[p * nb + b];
        let mut xv = [[i16x8_splat(0); BLOCK / 4]; R];
        let mut dx = [f32x4_splat(0.0); R];
        let mut corr = [i32x4_splat(0); R];
        for (i, xv) in xv.iter_mut().enumerate() {
            let row = r0 + i;
            let x = &xq.qs[row * k + b * BLOCK..row * k + (b + 1) * BLOCK];
            for (s, xv) in xv.iter_mut().enumerate() {
                *xv = i16x8_extend_low_i8x16(x_splat(x, s));
            }
            dx[i] = f32x4_splat(xq.d[row * nb + b]);
            corr[i] = i32x4_splat(xq.corr[row * nb + b] >> 4);
        }
        for q in 0..4 {
            let mut lo = [i32x4_splat(0); R];
            let mut hi = [i32x4_splat(0); R];
            for s in 0..BLOCK / 8 {
                let at = 64 * s + 16 * q;
                let bytes = &pb.qs[at..at + 16];
                // SAFETY: `bytes` is 16 initialized bytes (bounds-checked above), and
                // `v128_load` has no alignment requirement.
                let wv = unsafe { v128_load(bytes.as_ptr() as *const v128) };
                let (wl, wh) = (v128_and(wv, nibble), u8x16_shr(wv, 4));
                let (ll, lh) = (u16x8_extend_low_u8x16(wl), u16x8_extend_high_u8x16(wl));
                let (hl, hh) = (u16x8_extend_low_u8x16(wh), u16x8_extend_high_u8x16(wh));
                for i in 0..R {
                    let (x0, x1) = (xv[i][s], xv[i][s + 4]);
                    lo[i] = i32x4_add(
                        lo[i],
                        i32x4_add(i32x4_dot_i16x8(ll, x0), i32x4_dot_i16x8(hl, x1)),
                    );
                    hi[i] = i32x4_add(
                        hi[i],
                        i32x4_add(i32x4_dot_i16x8(lh, x0), i32x4_dot_i16x8(hh, x1)),
                    );
                }
            }
            let ws = quad_scales(&pb.scales, q);
            for i in 0..R {
                let sum = i32x4_add(
                    i32x4_shuffle::<0, 2, 4, 6>(lo[i], hi[i]),
                    i32x4_shuffle::<1, 3, 5, 7>(lo[i], hi[i]),
                );
                facc[i][q] = add_block(facc[i][q], i32x4_add(sum, corr[i]), ws, dx[i]);
            }
        }
    }
    store_acc::<R>(&facc, out, ldo, width);
}
