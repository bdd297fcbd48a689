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

/// The int8 AVX-512 kernel: long rows are cut into k-chunks so a panel pair's weights
/// (2 × KC_512 × 576 bytes) stay in L1 while every row tile of the chunk passes (partial sums go
/// through `out`); a per-channel matrix sums whole rows in i32 before its one scaling, so its
/// rows are not cut.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the job must satisfy the bounds of
/// [`super::Job::fits`] for `out` (see the module documentation).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_avx512(job: &Job, out: &mut [f32]) {
    // SAFETY: the caller's contract is `walk512`'s; `tile512_any` tiles int8 matrices (with
    // `ROW` exactly the per-channel ones, walked in one k-chunk).
    unsafe {
        if job.w.channel {
            walk512(job, out, job.w.nb, tile512_any::<true>)
        } else {
            walk512(job, out, chunk512(job), tile512_any::<false>)
        }
    }
}

/// k-blocks per chunk: [`KC_512`], or whole rows for a job of one row tile (a decode step),
/// whose weights are used once and gain nothing from staying in L1.
fn chunk512(job: &Job) -> usize {
    if job.rows.len() <= MR_512 {
        job.w.nb
    } else {
        KC_512
    }
}

/// The AVX-512 walk: k-chunks of `chunk` blocks outside, then panel pairs (kept in L1), row
/// tiles inside, each computed by `tile` (a kernel's dispatch on the tile's shape).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, the job must satisfy the bounds of
/// [`super::Job::fits`] for `out` (module documentation), and `tile` must be a tile function
/// for the job's kind of matrix and chunking (whose contract is [`tile512`]'s).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn walk512(job: &Job, out: &mut [f32], chunk: usize, tile: unsafe fn(TileArgs)) {
    job.debug_assert_fits(out.len());
    let nb = job.w.nb;
    let mut b0 = 0;
    while b0 < nb {
        let bs = b0..(b0 + chunk).min(nb);
        for t in job.tiles(MR_512, 2) {
            // SAFETY: `t.at` is a tile's corner in the job's output, within `out`
            // ([`super::TileAt`]).
            let o = unsafe { out.as_mut_ptr().add(t.at) };
            // SAFETY: the tile's rows and panels lie within the job's, `bs` within `0..nb`, and
            // `o` is the tile's corner in `out` (module documentation); `tile` fits the job.
            unsafe { tile((job, t, o, bs.clone())) };
        }
        b0 = bs.end;
    }
}

/// Calls `$tile::<MR, NP, ..>` for the shape of the tile in `$a` ([`TileArgs`]).
macro_rules! by_shape {
    ($tile:ident, $a:expr $(, $extra:ident)?) => {{
        let a = $a;
        match (a.1.mr, a.1.np) {
            (6, 2) => $tile::<6, 2 $(, $extra)?>(a),
            (5, 2) => $tile::<5, 2 $(, $extra)?>(a),
            (4, 2) => $tile::<4, 2 $(, $extra)?>(a),
            (3, 2) => $tile::<3, 2 $(, $extra)?>(a),
            (2, 2) => $tile::<2, 2 $(, $extra)?>(a),
            (1, 2) => $tile::<1, 2 $(, $extra)?>(a),
            (6, _) => $tile::<6, 1 $(, $extra)?>(a),
            (5, _) => $tile::<5, 1 $(, $extra)?>(a),
            (4, _) => $tile::<4, 1 $(, $extra)?>(a),
            (3, _) => $tile::<3, 1 $(, $extra)?>(a),
            (2, _) => $tile::<2, 1 $(, $extra)?>(a),
            _ => $tile::<1, 1 $(, $extra)?>(a),
        }
    }};
}

/// [`tile512`] for the tile's shape.
///
/// # Safety
/// As for [`tile512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile512_any<const ROW: bool>(a: TileArgs) {
    // SAFETY: the caller's contract is `tile512`'s, for the tile of these sizes.
    unsafe { by_shape!(tile512, a, ROW) }
}

/// Panel `j`'s mask of valid output columns, for panels `p0 ..`.
fn panel_masks<const NP: usize>(w: &super::Q8Matrix, p0: usize) -> [u16; NP] {
    std::array::from_fn(|j| match panel_width(w, p0 + j) {
        PANEL => 0xffff,
        width => (1u16 << width) - 1,
    })
}

/// A tile's f32 accumulators, loaded from `out` (the valid columns of each panel).
///
/// # Safety
/// AVX-512 F; for every row `i < MR` and panel `j < NP`, the columns of `masks[j]` at
/// `out + i * ldo + j * PANEL` must be readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_tile<const MR: usize, const NP: usize>(
    out: *const f32,
    ldo: usize,
    masks: &[u16; NP],
) -> [[__m512; NP]; MR] {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            // SAFETY: masked-off lanes are not accessed; the enabled ones are readable (the
            // function's contract); `loadu` has no alignment requirement.
            unsafe { _mm512_maskz_loadu_ps(masks[j], out.add(i * ldo + j * PANEL)) }
        })
    })
}

/// Stores a tile's accumulators into `out` (the valid columns of each panel).
///
/// # Safety
/// AVX-512 F; for every row `i < MR` and panel `j < NP`, the columns of `masks[j]` at
/// `out + i * ldo + j * PANEL` must be writable, with no other live reference to them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_tile<const MR: usize, const NP: usize>(
    out: *mut f32,
    ldo: usize,
    masks: &[u16; NP],
    facc: &[[__m512; NP]; MR],
) {
    for (i, facc) in facc.iter().enumerate() {
        for j in 0..NP {
            // SAFETY: only the enabled columns are written, which are ours (the contract).
            unsafe { _mm512_mask_storeu_ps(out.add(i * ldo + j * PANEL), masks[j], facc[j]) };
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
    let masks = panel_masks::<NP>(w, p0);
    // Accumulate onto `out`: the caller's starting values (bias or zeros), or the previous
    // k-chunks' partial sums.
    // SAFETY: the valid columns of each panel of the tile's rows are ours (the caller's contract).
    let mut facc = unsafe { load_tile::<MR, NP>(out, ldo, &masks) };
    let xr = row_starts::<MR>(xq, r0, k);
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
        if MR <= 3 {
            for wp in &wp {
                prefetch_ahead(wp.wrapping_add(b + PREFETCH_BLOCKS));
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
    // SAFETY: as for the load above.
    unsafe { store_tile::<MR, NP>(out, ldo, &masks, &facc) };
}

/// How many blocks ahead of the one it multiplies a tile of up to 3 rows (a decode step, greedy
/// or 3 beams) asks for its weights: 10 KB of a 4-bit panel, 18 KB of an int8 one. A decode step
/// reads each weight once, so its products wait on memory unless the next blocks are already
/// on their way. Measured with `cargo bench --bench decode` (2026-12-07): 4-bit products went
/// from 0.73–0.77x to 0.58–0.67x `Q8_0`'s time, and `Q8_0`'s own got 5–15% faster; 8, 16 and 64
/// blocks did no better.
const PREFETCH_BLOCKS: usize = 32;

/// Asks for the cache lines of the block at `p` (a hint: `p` may lie past the weights, where the
/// request is dropped without a fault).
#[inline(always)]
fn prefetch_ahead<T>(p: *const T) {
    let p = p as *const i8;
    for line in 0..std::mem::size_of::<T>().div_ceil(64) {
        // SAFETY: a prefetch reads nothing into the program and never faults, whatever the
        // address; `wrapping_add` only computes it.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line)) };
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

/// Where each of the rows `r0 .. r0 + MR` of the quantized activations starts.
fn row_starts<const MR: usize>(xq: &super::QuantRows, r0: usize, k: usize) -> [*const i8; MR] {
    // `wrapping_add` computes the address without asserting it is in bounds; the kernels only
    // read through it within rows the job's bounds check covered.
    std::array::from_fn(|i| xq.qs.as_ptr().wrapping_add((r0 + i) * k))
}

/// An AVX2 tile's f32 accumulators (two 8-column halves per row) from the first `width`
/// columns of `out`'s rows (a partial panel through a zero-padded copy).
///
/// # Safety
/// AVX2; for every row `i < MR`, `out + i * ldo ..` must be readable for `width <= PANEL`
/// values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load_tile256<const MR: usize>(
    out: *const f32,
    ldo: usize,
    width: usize,
) -> [[__m256; 2]; MR] {
    std::array::from_fn(|i| {
        let mut tmp = [0f32; PANEL];
        for (c, t) in tmp[..width].iter_mut().enumerate() {
            // SAFETY: `c < width`: one of the readable columns of `out` row `i` (the contract).
            *t = unsafe { *out.add(i * ldo + c) };
        }
        // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); `loadu` is unaligned.
        std::array::from_fn(|h| unsafe { _mm256_loadu_ps(tmp.as_ptr().add(8 * h)) })
    })
}

/// Stores an AVX2 tile's accumulators into the first `width` columns of `out`'s rows.
///
/// # Safety
/// AVX2; for every row `i < MR`, `out + i * ldo ..` must be writable for `width <= PANEL`
/// values, with no other live reference to them.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_tile256<const MR: usize>(
    out: *mut f32,
    ldo: usize,
    width: usize,
    facc: &[[__m256; 2]; MR],
) {
    for (i, facc) in facc.iter().enumerate() {
        if width == PANEL {
            for (h, v) in facc.iter().enumerate() {
                // SAFETY: a full panel: columns `8 h .. 8 h + 8` (h < 2) of `out` row `i` are
                // writable (the contract); unaligned store.
                unsafe { _mm256_storeu_ps(out.add(i * ldo + 8 * h), *v) };
            }
        } else {
            let mut tmp = [0f32; PANEL];
            for (h, v) in facc.iter().enumerate() {
                // SAFETY: `8 h + 8 <= PANEL = tmp.len()` (h < 2); unaligned store.
                unsafe { _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * h), *v) };
            }
            for (c, &v) in tmp[..width].iter().enumerate() {
                // SAFETY: `c < width`: one of the writable columns of `out` row `i`.
                unsafe { *out.add(i * ldo + c) = v };
            }
        }
    }
}

/// The AVX2 walk: one panel at a time, row tiles inside.
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
    // Accumulate onto `out` (the caller's starting values).
    // SAFETY: the first `width` columns of the tile's rows are ours (the caller's contract).
    let mut facc = unsafe { load_tile256::<MR>(out, ldo, width) };
    let xr = row_starts::<MR>(xq, r0, k);
    // SAFETY: `p` is a panel of `w`, so `p * nb < w.blocks.len()`.
    let wp = unsafe { w.blocks.as_ptr().add(p * nb) };
    let decode = job.rows.len() <= MR_256;
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    for b in 0..nb {
        if decode {
            prefetch_ahead(wp.wrapping_add(b + PREFETCH_BLOCKS));
        }
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
    // SAFETY: as for the load above.
    unsafe { store_tile256::<MR>(out, ldo, width, &facc) };
}

/// The 4-bit AVX-512 kernel: walked as [`gemm_avx512`]'s `Q8_0` blocks, over
/// [`super::Panel4Block`]s.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the job (of a 4-bit matrix) must satisfy the
/// bounds of [`super::Job::fits`] for `out` (see the module documentation; the 4-bit blocks
/// are 320 bytes, `qs` at offset 64, so every 64-byte step into them is aligned).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm4_avx512(job: &Job, out: &mut [f32]) {
    // SAFETY: the caller's contract is `walk512`'s; `tile4_any` tiles 4-bit matrices.
    unsafe { walk512(job, out, chunk512(job), tile4_any) }
}

/// [`tile4_512`] for the tile's shape.
///
/// # Safety
/// As for [`tile4_512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile4_any(a: TileArgs) {
    // SAFETY: the caller's contract is `tile4_512`'s, for the tile of these sizes.
    unsafe { by_shape!(tile4_512, a) }
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
    let masks = panel_masks::<NP>(w, p0);
    // Accumulate onto `out`: the caller's starting values (bias or zeros), or the previous
    // k-chunks' partial sums.
    // SAFETY: the valid columns of each panel of the tile's rows are ours (the caller's contract).
    let mut facc = unsafe { load_tile::<MR, NP>(out, ldo, &masks) };
    let xr = row_starts::<MR>(xq, r0, k);
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
        if MR <= 3 {
            for wp in &wp {
                prefetch_ahead(wp.wrapping_add(b + PREFETCH_BLOCKS));
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
    // SAFETY: as for the load above.
    unsafe { store_tile::<MR, NP>(out, ldo, &masks, &facc) };
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
    // Accumulate onto `out` (the caller's starting values).
    // SAFETY: the first `width` columns of the tile's rows are ours (the caller's contract).
    let mut facc = unsafe { load_tile256::<MR>(out, ldo, width) };
    let xr = row_starts::<MR>(xq, r0, k);
    // SAFETY: `p` is a panel of `w`, so `p * nb < w.blocks4.len()`.
    let wp = unsafe { w.blocks4.as_ptr().add(p * nb) };
    let decode = job.rows.len() <= MR_256;
    for b in 0..nb {
        if decode {
            prefetch_ahead(wp.wrapping_add(b + PREFETCH_BLOCKS));
        }
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
    // SAFETY: as for the load above.
    unsafe { store_tile256::<MR>(out, ldo, width, &facc) };
}
