//! x86_64 kernels: AVX-512 VNNI (`vpdpbusd`, 6 rows × 32 columns per tile) and an AVX2 fallback
//! (`vpmaddubsw` with the sign trick, 3 rows × 16 columns). Both are compiled for their features
//! with `#[target_feature]` and chosen at run time by [`super::Kernel::is_available`].
//!
//! Safety contract of the entry points (`gemm_*`): the CPU has the features and the caller
//! ([`super::Q8Matrix::gemm_block`]) has checked that the job's rows, panels and output are in
//! bounds (see [`super::Job::fits`] for the exact conditions, which the entry points re-check in
//! debug builds). Inside, the only `unsafe` operations are the intrinsics'
//! loads and stores through pointers derived from those checked slices, and calls of the
//! `#[target_feature]` tile functions.
//!
//! Bounds used by the `SAFETY:` comments below, all following from that contract:
//! - activations: for a row `r < rows.end`, `r * k + k <= xq.qs.len()`, and `x4` reads 4 bytes at
//!   `b * BLOCK + 4 * s < k` (`b < nb`, `s < BLOCK / 4`) within the row;
//! - weights: for a panel `p < panels.end`, blocks `p * nb .. p * nb + nb` are in `w.blocks`;
//!   a `PanelBlock` is 64-byte aligned, `scales` is at offset 0 (64 bytes) and `qs` at offset 64,
//!   so every 64-byte (zmm) or 32-byte (ymm) step into them is aligned for the aligned loads;
//! - output: row `i` of a tile at tile row `t = r - rows.start`, column `col` of the block,
//!   touches `out[(t + i) * ldo + col ..][..width]` with `col + width <= block width <= ldo`, and
//!   `(rows.len() - 1) * ldo + block width <= out.len()`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{panel_width, Job, PanelBlock, TileAt, BLOCK, PANEL};

/// Rows per AVX-512 tile: 6 rows × 2 panels = 12 i32 + 12 f32 accumulators and 2 weight vectors
/// fit the 32 zmm registers; each 64-byte weight load feeds 6 `vpdpbusd`.
const MR_512: usize = 6;
/// k-blocks per chunk (768 values).
const KC_512: usize = 24;
/// Rows per AVX2 tile: 3 rows × 2 halves = 6 i32 + 6 f32 accumulators fit 16 ymm registers.
const MR_256: usize = 3;

/// Reads 4 int8 activations (k-step `s` of block `b`) as one i32, to broadcast.
///
/// # Safety
/// `x .. x + b * BLOCK + 4 * s + 4` must be in bounds of one live allocation of initialized
/// bytes (here: `x` is the start of an activation row, `b < nb`, `s < BLOCK / 4`).
#[inline(always)]
unsafe fn x4(x: *const i8, b: usize, s: usize) -> i32 {
    // SAFETY: the caller guarantees the 4 bytes are in bounds; the read is unaligned, so the
    // i8 pointer's alignment does not matter, and every bit pattern is a valid i32.
    unsafe { (x.add(b * BLOCK + 4 * s) as *const i32).read_unaligned() }
}

/// Walks the job: k-chunks outside, then panel pairs (kept in L1), row tiles inside.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the job must satisfy the bounds of
/// [`super::Job::fits`] for `out` (see the module documentation).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_avx512(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let nb = job.w.nb;
    // Long rows are cut into k-chunks so a panel pair's weights (2 × KC_512 × 576 bytes) stay in
    // L1 while every row tile of the chunk passes; partial sums go through `out`. A per-channel
    // matrix sums whole rows in i32 before its one scaling, so its rows are not cut.
    let chunk = if job.w.channel { nb } else { KC_512 };
    let mut b0 = 0;
    while b0 < nb {
        let bs = b0..(b0 + chunk).min(nb);
        for t in job.tiles(MR_512, 2) {
            // SAFETY: `t.at` is a tile's corner in the job's output, within `out`
            // ([`super::TileAt`]).
            let o = unsafe { out.as_mut_ptr().add(t.at) };
            let a = (job, t, o, bs.clone());
            // SAFETY: this function's target features are those of `tile512`. The tile's rows
            // and panels lie within the job's, `bs` within `0..nb` (all of it for a per-channel
            // matrix), and `o` is the tile's corner in `out` (module documentation).
            unsafe {
                if job.w.channel {
                    tile512_any::<true>(a)
                } else {
                    tile512_any::<false>(a)
                }
            }
        }
        b0 = bs.end;
    }
}

/// [`tile512`] for the tile's shape.
///
/// # Safety
/// As for [`tile512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile512_any<const ROW: bool>(a: TileArgs) {
    let t = a.1;
    // SAFETY: the caller's contract is `tile512`'s, for the tile `t` of these sizes.
    unsafe {
        match (t.mr, t.np) {
            (6, 2) => tile512::<6, 2, ROW>(a),
            (5, 2) => tile512::<5, 2, ROW>(a),
            (4, 2) => tile512::<4, 2, ROW>(a),
            (3, 2) => tile512::<3, 2, ROW>(a),
            (2, 2) => tile512::<2, 2, ROW>(a),
            (1, 2) => tile512::<1, 2, ROW>(a),
            (6, _) => tile512::<6, 1, ROW>(a),
            (5, _) => tile512::<5, 1, ROW>(a),
            (4, _) => tile512::<4, 1, ROW>(a),
            (3, _) => tile512::<3, 1, ROW>(a),
            (2, _) => tile512::<2, 1, ROW>(a),
            _ => tile512::<1, 1, ROW>(a),
        }
    }
}

/// Arguments of a tile: the job, the tile, the output pointer at its corner (first row, first
/// column) and the k-blocks to sum (always added onto `out`).
type TileArgs<'a> = (&'a Job<'a>, TileAt, *mut f32, Range<usize>);

/// `MR` rows × `NP` panels. Per block: i32 accumulators start at the +128-offset correction,
/// 8 `vpdpbusd` steps of 4 k, then one f32 FMA by `d_w · d_x`. With `ROW` (a per-channel
/// matrix), the i32 accumulators run over every block and are scaled once at the end.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; rows `r0 .. r0 + MR` and panels
/// `p0 .. p0 + NP` must be rows and panels of `xq` and `w`, `bs` within `0..nb` (with `ROW`,
/// exactly `0..nb` and a per-channel `w` with per-token `xq`), and for every
/// tile row `i < MR`, `out + i * ldo ..` must be valid for reads and writes of the valid columns
/// of the `NP` panels (`panel_width` of each, `PANEL` apart), with no other live reference to them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile512<const MR: usize, const NP: usize, const ROW: bool>((job, t, out, bs): TileArgs) {
    let (w, xq, r0, p0, ldo) = (job.w, job.xq, t.r, t.p, job.ldo);
    let (k, nb, groups) = (w.k, w.nb, xq.groups);
    debug_assert!((r0 + MR) * k <= xq.qs.len() && (p0 + NP) * nb <= w.blocks.len());
    debug_assert!(bs.end <= nb);
    debug_assert!(!ROW || (bs == (0..nb) && groups == 1 && w.channel));
    let mut masks = [0xffffu16; NP];
    for (j, m) in masks.iter_mut().enumerate() {
        let width = panel_width(w, p0 + j);
        if width < PANEL {
            *m = (1u16 << width) - 1;
        }
    }
    // Accumulate onto `out`: the caller's starting values (bias or zeros), or the previous
    // k-chunks' partial sums.
    let mut facc = [[_mm512_setzero_ps(); NP]; MR];
    for (i, facc) in facc.iter_mut().enumerate() {
        for j in 0..NP {
            // SAFETY: the mask enables only panel `j`'s valid columns, which the caller
            // guarantees are in bounds of `out` row `i`; masked-off lanes are not accessed.
            // `loadu` has no alignment requirement.
            facc[j] = unsafe { _mm512_maskz_loadu_ps(masks[j], out.add(i * ldo + j * PANEL)) };
        }
    }
    let mut xr = [std::ptr::null::<i8>(); MR];
    for (i, xr) in xr.iter_mut().enumerate() {
        // SAFETY: row `r0 + i` is a row of `xq`, so `(r0 + i) * k < xq.qs.len()`.
        *xr = unsafe { xq.qs.as_ptr().add((r0 + i) * k) };
    }
    let mut wp = [std::ptr::null::<PanelBlock>(); NP];
    for (j, wp) in wp.iter_mut().enumerate() {
        // SAFETY: panel `p0 + j` is a panel of `w`, so `(p0 + j) * nb < w.blocks.len()`.
        *wp = unsafe { w.blocks.as_ptr().add((p0 + j) * nb) };
    }
    let mut acc = [[_mm512_setzero_si512(); NP]; MR];
    for b in bs {
        // The accumulators start at the +128-offset correction of the row's group: each block's,
        // or the whole row's (`ROW`, once).
        if !ROW || b == 0 {
            for (i, acc) in acc.iter_mut().enumerate() {
                let g = if ROW { 0 } else { b };
                let c = _mm512_set1_epi32(xq.corr[(r0 + i) * groups + g]);
                for a in acc.iter_mut() {
                    *a = c;
                }
            }
        }
        for s in 0..BLOCK / 4 {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (j, wv) in wv.iter_mut().enumerate() {
                // SAFETY: `b < nb`, so block `b` of panel `p0 + j` is in `w.blocks`; bytes
                // `64 s .. 64 s + 64` of its `qs` (s < 8) are in bounds and 64-byte aligned
                // (module documentation).
                *wv = unsafe {
                    _mm512_load_si512((*wp[j].add(b)).qs.as_ptr().add(64 * s) as *const _)
                };
            }
            for i in 0..MR {
                // SAFETY: `xr[i]` starts row `r0 + i` of `xq.qs` (k bytes), `b < nb`, `s < 8`.
                let xv = _mm512_set1_epi32(unsafe { x4(xr[i], b, s) });
                for j in 0..NP {
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xv);
                }
            }
        }
        if !ROW {
            // SAFETY: block `b` of each panel is in `w.blocks` (as above).
            let ws = load_scales::<NP>(|j| unsafe { &(*wp[j].add(b)).scales });
            scale512(&mut facc, &acc, &ws, |i| xq.d[(r0 + i) * nb + b]);
        }
    }
    if ROW {
        // SAFETY: block 0 of each panel is in `w.blocks` (`nb >= 1`); a per-channel matrix
        // holds its column scales in every block.
        let ws = load_scales::<NP>(|j| unsafe { &(*wp[j]).scales });
        scale512(&mut facc, &acc, &ws, |i| xq.d[r0 + i]);
    }
    for j in 0..NP {
        for (i, facc) in facc.iter().enumerate() {
            // SAFETY: as for the masked load above: only panel `j`'s valid columns of `out`
            // row `i` are written, which the caller guarantees are ours and in bounds.
            unsafe { _mm512_mask_storeu_ps(out.add(i * ldo + j * PANEL), masks[j], facc[j]) };
        }
    }
}

/// The 16 weight scales of each panel's block: `scales(j)` gives panel `j`'s.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_scales<'a, const NP: usize>(scales: impl Fn(usize) -> &'a [f32; PANEL]) -> [__m512; NP] {
    // SAFETY: `loadu` reads one whole `[f32; 16]` array: in bounds, no alignment requirement.
    std::array::from_fn(|j| unsafe { _mm512_loadu_ps(scales(j).as_ptr()) })
}

/// `facc[i][j] += f32(acc[i][j]) · (d_w · d_x(i))` with the weight scales `ws[j]` of panel `j`.
#[target_feature(enable = "avx512f")]
#[inline]
fn scale512<const MR: usize, const NP: usize>(
    facc: &mut [[__m512; NP]; MR],
    acc: &[[__m512i; NP]; MR],
    ws: &[__m512; NP],
    dx: impl Fn(usize) -> f32,
) {
    for i in 0..MR {
        let dx = _mm512_set1_ps(dx(i));
        for j in 0..NP {
            let scale = _mm512_mul_ps(ws[j], dx);
            facc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), scale, facc[i][j]);
        }
    }
}

/// `facc[i][h] += f32(acc[i][h]) · (d_w · d_x(i))` with the weight scales of block `pb`.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn scale256<const MR: usize>(
    facc: &mut [[__m256; 2]; MR],
    acc: &[[__m256i; 2]; MR],
    pb: &PanelBlock,
    dx: impl Fn(usize) -> f32,
) {
    for i in 0..MR {
        let dx = _mm256_set1_ps(dx(i));
        for h in 0..2 {
            // SAFETY: `scales[8 h .. 8 h + 8]` (h < 2) is in bounds and 32-byte aligned.
            let ws = unsafe { _mm256_load_ps(pb.scales.as_ptr().add(8 * h)) };
            let scale = _mm256_mul_ps(ws, dx);
            facc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][h]), scale, facc[i][h]);
        }
    }
}

/// AVX2 walk: one panel at a time, row tiles inside.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the job must satisfy the bounds of
/// [`super::Job::fits`] for `out` (see the module documentation).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_avx2(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    for t in job.tiles(MR_256, 1) {
        // SAFETY: `t.at` is a tile's corner in the job's output, within `out`
        // ([`super::TileAt`]).
        let o = unsafe { out.as_mut_ptr().add(t.at) };
        // SAFETY: this function's target features are those of `tile256`. The tile's rows lie
        // within the job's, its panel too, and `o` is the tile's corner in `out` (module
        // documentation).
        unsafe {
            match t.mr {
                3 if job.w.channel => tile256::<3, true>(job, t.r, t.p, o),
                2 if job.w.channel => tile256::<2, true>(job, t.r, t.p, o),
                _ if job.w.channel => tile256::<1, true>(job, t.r, t.p, o),
                3 => tile256::<3, false>(job, t.r, t.p, o),
                2 => tile256::<2, false>(job, t.r, t.p, o),
                _ => tile256::<1, false>(job, t.r, t.p, o),
            }
        }
    }
}

/// `MR` rows × one panel (two 8-column halves). `vpmaddubsw` needs an unsigned operand and
/// saturates at i16: with `|w| (≤ 128) × (x · sign w)` (`|x| ≤ 127`) a pair sums to at most
/// 2 · 128 · 127 = 32512, so it never saturates; `vpmaddwd` by 1 then widens to i32. With `ROW`
/// (a per-channel matrix, per-token `xq`), the i32 sums run over the whole row, scaled once.
///
/// # Safety
/// The CPU must support AVX2 and FMA; rows `r0 .. r0 + MR` must be rows of `xq`, `p` a panel of
/// `w`, and for every tile row `i < MR`, `out + i * ldo ..` must be valid for reads and writes
/// of `panel_width(w, p)` values, with no other live reference to them.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile256<const MR: usize, const ROW: bool>(job: &Job, r0: usize, p: usize, out: *mut f32) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    debug_assert!(!ROW || (xq.groups == 1 && w.channel));
    debug_assert!((r0 + MR) * k <= xq.qs.len() && (p + 1) * nb <= w.blocks.len());
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let ones = _mm256_set1_epi16(1);
    let width = panel_width(w, p);
    // Accumulate onto `out` (the caller's starting values); a partial last panel goes through a
    // zero-padded copy.
    let mut facc = [[_mm256_setzero_ps(); 2]; MR];
    for (i, facc) in facc.iter_mut().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (c, t) in tmp[..width].iter_mut().enumerate() {
            // SAFETY: `c < width`: one of the valid columns of `out` row `i` (caller's contract).
            *t = unsafe { *out.add(i * ldo + c) };
        }
        for (h, v) in facc.iter_mut().enumerate() {
            // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); `loadu` is unaligned.
            *v = unsafe { _mm256_loadu_ps(tmp.as_ptr().add(8 * h)) };
        }
    }
    let mut xr = [std::ptr::null::<i8>(); MR];
    for (i, xr) in xr.iter_mut().enumerate() {
        // SAFETY: row `r0 + i` is a row of `xq`, so `(r0 + i) * k < xq.qs.len()`.
        *xr = unsafe { xq.qs.as_ptr().add((r0 + i) * k) };
    }
    // SAFETY: `p` is a panel of `w`, so `p * nb < w.blocks.len()`.
    let wp = unsafe { w.blocks.as_ptr().add(p * nb) };
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    for b in 0..nb {
        // SAFETY: `b < nb`: block `b` of panel `p`, in `w.blocks`, which `w` borrows for the
        // whole call and nobody writes.
        let pb = unsafe { &*wp.add(b) };
        if !ROW {
            acc = [[_mm256_setzero_si256(); 2]; MR];
        }
        for s in 0..BLOCK / 4 {
            let mut wabs = [_mm256_setzero_si256(); 2];
            let mut wsig = [_mm256_setzero_si256(); 2];
            for h in 0..2 {
                // SAFETY: bytes `64 s + 32 h ..` + 32 of `qs` (s < 8, h < 2) are in its 512,
                // and 32-byte aligned (module documentation).
                let raw = unsafe {
                    _mm256_load_si256(pb.qs.as_ptr().add(64 * s + 32 * h) as *const __m256i)
                };
                wsig[h] = _mm256_xor_si256(raw, flip);
                wabs[h] = _mm256_abs_epi8(wsig[h]);
            }
            for i in 0..MR {
                // SAFETY: `xr[i]` starts row `r0 + i` of `xq.qs` (k bytes), `b < nb`, `s < 8`.
                let xv = _mm256_set1_epi32(unsafe { x4(xr[i], b, s) });
                for h in 0..2 {
                    let prod = _mm256_maddubs_epi16(wabs[h], _mm256_sign_epi8(xv, wsig[h]));
                    acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(prod, ones));
                }
            }
        }
        if !ROW {
            // SAFETY: `pb` is a block of `w.blocks` (above).
            unsafe { scale256(&mut facc, &acc, pb, |i| xq.d[(r0 + i) * nb + b]) };
        }
    }
    if ROW {
        // SAFETY: block 0 of panel `p` is in `w.blocks` (`nb >= 1`); a per-channel matrix holds
        // its column scales in every block.
        unsafe { scale256(&mut facc, &acc, &*wp, |i| xq.d[r0 + i]) };
    }
    for (i, facc) in facc.iter().enumerate() {
        if width == PANEL {
            for (h, v) in facc.iter().enumerate() {
                // SAFETY: a full panel: columns `8 h .. 8 h + 8` (h < 2) of `out` row `i` are
                // among its `width = PANEL` valid ones (caller's contract); unaligned store.
                unsafe { _mm256_storeu_ps(out.add(i * ldo + 8 * h), *v) };
            }
        } else {
            // A partial last panel: spill and copy the valid columns.
            let mut tmp = [0f32; PANEL];
            for (h, v) in facc.iter().enumerate() {
                // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); unaligned store.
                unsafe { _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * h), *v) };
            }
            for (c, &v) in tmp[..width].iter().enumerate() {
                // SAFETY: `c < width`: one of the valid columns of `out` row `i`.
                unsafe { *out.add(i * ldo + c) = v };
            }
        }
    }
}

/// The 4-bit AVX-512 walk: as [`gemm_avx512`] (k-chunks outside, panel pairs, row tiles
/// inside), over [`super::Panel4Block`]s.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the job (of a 4-bit matrix) must satisfy the
/// bounds of [`super::Job::fits`] for `out` (see the module documentation; the 4-bit blocks
/// are 320 bytes, `qs` at offset 64, so every 64-byte step into them is aligned).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm4_avx512(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let nb = job.w.nb;
    let mut b0 = 0;
    while b0 < nb {
        let bs = b0..(b0 + KC_512).min(nb);
        for t in job.tiles(MR_512, 2) {
            // SAFETY: `t.at` is a tile's corner in the job's output, within `out`
            // ([`super::TileAt`]).
            let o = unsafe { out.as_mut_ptr().add(t.at) };
            let a = (job, t, o, bs.clone());
            // SAFETY: this function's target features are those of `tile4_512`. The tile's rows
            // and panels lie within the job's, `bs` within `0..nb`, and `o` is the tile's corner
            // in `out` (module documentation).
            unsafe {
                match (t.mr, t.np) {
                    (6, 2) => tile4_512::<6, 2>(a),
                    (5, 2) => tile4_512::<5, 2>(a),
                    (4, 2) => tile4_512::<4, 2>(a),
                    (3, 2) => tile4_512::<3, 2>(a),
                    (2, 2) => tile4_512::<2, 2>(a),
                    (1, 2) => tile4_512::<1, 2>(a),
                    (6, _) => tile4_512::<6, 1>(a),
                    (5, _) => tile4_512::<5, 1>(a),
                    (4, _) => tile4_512::<4, 1>(a),
                    (3, _) => tile4_512::<3, 1>(a),
                    (2, _) => tile4_512::<2, 1>(a),
                    _ => tile4_512::<1, 1>(a),
                }
            }
        }
        b0 = bs.end;
    }
}

/// `MR` rows × `NP` panels of a 4-bit matrix. Per block: i32 accumulators start at the
/// nibble-offset correction `-8 · Σ q_x` (`corr / 16`); for each of the 4 byte steps the low
/// nibbles (k-step `s`) and high nibbles (k-step `s + 4`) are split out with a mask and a
/// shift, and `vpdpbusd` multiplies them (unsigned, `0..=15`) with the activations; then one
/// f32 FMA by `d_w · d_x`.
///
/// # Safety
/// As for [`tile512`], with `w` a 4-bit matrix (its blocks in `w.blocks4`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile4_512<const MR: usize, const NP: usize>((job, t, out, bs): TileArgs) {
    let (w, xq, r0, p0, ldo) = (job.w, job.xq, t.r, t.p, job.ldo);
    let (k, nb) = (w.k, w.nb);
    debug_assert!((r0 + MR) * k <= xq.qs.len() && (p0 + NP) * nb <= w.blocks4.len());
    debug_assert!(bs.end <= nb);
    let mut masks = [0xffffu16; NP];
    for (j, m) in masks.iter_mut().enumerate() {
        let width = panel_width(w, p0 + j);
        if width < PANEL {
            *m = (1u16 << width) - 1;
        }
    }
    let mut facc = [[_mm512_setzero_ps(); NP]; MR];
    for (i, facc) in facc.iter_mut().enumerate() {
        for j in 0..NP {
            // SAFETY: the mask enables only panel `j`'s valid columns, which the caller
            // guarantees are in bounds of `out` row `i`; masked-off lanes are not accessed.
            facc[j] = unsafe { _mm512_maskz_loadu_ps(masks[j], out.add(i * ldo + j * PANEL)) };
        }
    }
    let mut xr = [std::ptr::null::<i8>(); MR];
    for (i, xr) in xr.iter_mut().enumerate() {
        // SAFETY: row `r0 + i` is a row of `xq`, so `(r0 + i) * k < xq.qs.len()`.
        *xr = unsafe { xq.qs.as_ptr().add((r0 + i) * k) };
    }
    let mut wp = [std::ptr::null::<super::Panel4Block>(); NP];
    for (j, wp) in wp.iter_mut().enumerate() {
        // SAFETY: panel `p0 + j` is a panel of `w`, so `(p0 + j) * nb < w.blocks4.len()`.
        *wp = unsafe { w.blocks4.as_ptr().add((p0 + j) * nb) };
    }
    let nibble = _mm512_set1_epi8(0x0f);
    for b in bs {
        let mut acc = [[_mm512_setzero_si512(); NP]; MR];
        for (i, acc) in acc.iter_mut().enumerate() {
            let c = _mm512_set1_epi32(xq.corr[(r0 + i) * nb + b] >> 4);
            for a in acc.iter_mut() {
                *a = c;
            }
        }
        for s in 0..BLOCK / 8 {
            let mut lo = [_mm512_setzero_si512(); NP];
            let mut hi = [_mm512_setzero_si512(); NP];
            for j in 0..NP {
                // SAFETY: `b < nb`, so block `b` of panel `p0 + j` is in `w.blocks4`; bytes
                // `64 s .. 64 s + 64` of its `qs` (s < 4) are in bounds and 64-byte aligned.
                let v = unsafe {
                    _mm512_load_si512((*wp[j].add(b)).qs.as_ptr().add(64 * s) as *const _)
                };
                lo[j] = _mm512_and_si512(v, nibble);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
            }
            for i in 0..MR {
                // SAFETY: `xr[i]` starts row `r0 + i` of `xq.qs` (k bytes), `b < nb`, `s + 4 < 8`.
                let (xl, xh) = unsafe { (x4(xr[i], b, s), x4(xr[i], b, s + 4)) };
                let (xl, xh) = (_mm512_set1_epi32(xl), _mm512_set1_epi32(xh));
                for j in 0..NP {
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], lo[j], xl);
                    acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], hi[j], xh);
                }
            }
        }
        // SAFETY: block `b` of each panel is in `w.blocks4` (as above).
        let ws = load_scales::<NP>(|j| unsafe { &(*wp[j].add(b)).scales });
        scale512(&mut facc, &acc, &ws, |i| xq.d[(r0 + i) * nb + b]);
    }
    for j in 0..NP {
        for (i, facc) in facc.iter().enumerate() {
            // SAFETY: as for the masked load above: only panel `j`'s valid columns of `out`
            // row `i` are written, which the caller guarantees are ours and in bounds.
            unsafe { _mm512_mask_storeu_ps(out.add(i * ldo + j * PANEL), masks[j], facc[j]) };
        }
    }
}

/// The 4-bit AVX2 walk: one panel at a time, row tiles inside.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the job (of a 4-bit matrix) must satisfy the bounds of
/// [`super::Job::fits`] for `out` (see the module documentation).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm4_avx2(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    for t in job.tiles(MR_256, 1) {
        // SAFETY: `t.at` is a tile's corner in the job's output, within `out`
        // ([`super::TileAt`]).
        let o = unsafe { out.as_mut_ptr().add(t.at) };
        // SAFETY: this function's target features are those of `tile4_256`. The tile's rows
        // lie within the job's, its panel too, and `o` is the tile's corner in `out`.
        unsafe {
            match t.mr {
                3 => tile4_256::<3>(job, t.r, t.p, o),
                2 => tile4_256::<2>(job, t.r, t.p, o),
                _ => tile4_256::<1>(job, t.r, t.p, o),
            }
        }
    }
}

/// `MR` rows × one panel of a 4-bit matrix (two 8-column halves): the nibbles (unsigned,
/// `0..=15`) are `vpmaddubsw`'s unsigned operand as they are — a pair sums to at most
/// 2 · 15 · 127, far from saturating — and the offset is removed with `corr / 16`.
///
/// # Safety
/// As for [`tile256`], with `w` a 4-bit matrix (its blocks in `w.blocks4`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile4_256<const MR: usize>(job: &Job, r0: usize, p: usize, out: *mut f32) {
    let (w, xq, ldo) = (job.w, job.xq, job.ldo);
    let (k, nb) = (w.k, w.nb);
    debug_assert!((r0 + MR) * k <= xq.qs.len() && (p + 1) * nb <= w.blocks4.len());
    let nibble = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let width = panel_width(w, p);
    let mut facc = [[_mm256_setzero_ps(); 2]; MR];
    for (i, facc) in facc.iter_mut().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (c, t) in tmp[..width].iter_mut().enumerate() {
            // SAFETY: `c < width`: one of the valid columns of `out` row `i` (caller's contract).
            *t = unsafe { *out.add(i * ldo + c) };
        }
        for (h, v) in facc.iter_mut().enumerate() {
            // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); `loadu` is unaligned.
            *v = unsafe { _mm256_loadu_ps(tmp.as_ptr().add(8 * h)) };
        }
    }
    let mut xr = [std::ptr::null::<i8>(); MR];
    for (i, xr) in xr.iter_mut().enumerate() {
        // SAFETY: row `r0 + i` is a row of `xq`, so `(r0 + i) * k < xq.qs.len()`.
        *xr = unsafe { xq.qs.as_ptr().add((r0 + i) * k) };
    }
    // SAFETY: `p` is a panel of `w`, so `p * nb < w.blocks4.len()`.
    let wp = unsafe { w.blocks4.as_ptr().add(p * nb) };
    for b in 0..nb {
        // SAFETY: `b < nb`: block `b` of panel `p`, in `w.blocks4`, which `w` borrows for the
        // whole call and nobody writes.
        let pb = unsafe { &*wp.add(b) };
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        for (i, acc) in acc.iter_mut().enumerate() {
            let c = _mm256_set1_epi32(xq.corr[(r0 + i) * nb + b] >> 4);
            *acc = [c, c];
        }
        for s in 0..BLOCK / 8 {
            let mut lo = [_mm256_setzero_si256(); 2];
            let mut hi = [_mm256_setzero_si256(); 2];
            for h in 0..2 {
                // SAFETY: bytes `64 s + 32 h ..` + 32 of `qs` (s < 4, h < 2) are in its 256, and
                // 32-byte aligned (the block is 64-byte aligned, `qs` at offset 64).
                let raw = unsafe {
                    _mm256_load_si256(pb.qs.as_ptr().add(64 * s + 32 * h) as *const __m256i)
                };
                lo[h] = _mm256_and_si256(raw, nibble);
                hi[h] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble);
            }
            for i in 0..MR {
                // SAFETY: `xr[i]` starts row `r0 + i` of `xq.qs` (k bytes), `b < nb`, `s + 4 < 8`.
                let (xl, xh) = unsafe { (x4(xr[i], b, s), x4(xr[i], b, s + 4)) };
                let (xl, xh) = (_mm256_set1_epi32(xl), _mm256_set1_epi32(xh));
                for h in 0..2 {
                    let prod = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo[h], xl),
                        _mm256_maddubs_epi16(hi[h], xh),
                    );
                    acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(prod, ones));
                }
            }
        }
        for i in 0..MR {
            let dx = _mm256_set1_ps(xq.d[(r0 + i) * nb + b]);
            for h in 0..2 {
                // SAFETY: `loadu` of 8 of the block's 16 scales (h < 2): in bounds, unaligned.
                let ws = unsafe { _mm256_loadu_ps(pb.scales.as_ptr().add(8 * h)) };
                let scale = _mm256_mul_ps(ws, dx);
                facc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][h]), scale, facc[i][h]);
            }
        }
    }
    for (i, facc) in facc.iter().enumerate() {
        let mut tmp = [0f32; PANEL];
        for (h, v) in facc.iter().enumerate() {
            // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); unaligned store.
            unsafe { _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * h), *v) };
        }
        for (c, &v) in tmp[..width].iter().enumerate() {
            // SAFETY: `c < width`: one of the valid columns of `out` row `i`.
            unsafe { *out.add(i * ldo + c) = v };
        }
    }
}
