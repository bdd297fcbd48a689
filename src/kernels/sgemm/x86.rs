//! x86_64 AVX-512 F kernel for the packed f32 product: tiles of 12 packed activation rows × 2
//! panels (24 zmm accumulators) over k-chunks of [`KC`] for many rows, `m` rows × 4 panels over
//! the whole `k` for up to 4 rows (decode) given as rows. Compiled with `#[target_feature]`, chosen
//! at run time by [`super::Kernel::is_available`]. Given tiles (`Block::a_tiles`, packed here or
//! by the caller), it always runs the tiles, whatever `m`, and never reads `x` (then empty).
//!
//! Bounds used by the `SAFETY:` comments, all from [`super::Block`]'s contract: row `r < m` of
//! `x` (when there are no tiles) is `x[r k .. r k + k]`; panel `p < p1` is `panels[p k .. p k + k]`, each `PanelRow` 64-byte
//! aligned (so every `_mm512_load_ps` of one is aligned); output `(r, c)` is `out + r ldo + c` for
//! `r < m`, `c < n`, this item's for `16 p0 <= c < min(16 p1, n)`. A tile's masks enable only
//! the panel's valid columns (`Block::width`), so the last, partial panel never touches `c >= n`.
//!
//! F16 and BF16 panels ([`super::F16Row`], [`super::Bf16Row`], 32-byte aligned) are widened to
//! f32 exactly as they are loaded: row by row in the few-row tiles (decode reads half the
//! bytes), and a panel pair's k-chunk at a time into an f32 buffer for the 12-row tiles, which
//! then read it like f32 panels (the widening is paid once per chunk, not once per row tile).
//! Either way each output is the same chain of FMAs on the same values as for the f32 panels.

use std::arch::x86_64::*;

use super::{Bf16Row, Block, F16Row, PackedRow, PanelRow, KC, MR, PANEL, SMALL_M};

/// A panel row type the kernel loads as 16 f32 lanes.
pub(crate) trait Widen: PackedRow {
    /// Whether the rows are f32 already (the 12-row tiles read them in place).
    const IN_PLACE: bool = false;

    /// Row `p`, widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `p` must point to a live row (rows are aligned to their
    /// size by their type).
    unsafe fn load(p: *const Self) -> __m512;

    /// Rows `p .. p + kc` as f32 rows: `wide`'s first `kc`, filled here (`wide` must hold
    /// them: a shorter one panics), or, for f32 rows ([`Self::IN_PLACE`], which override this
    /// and ignore `wide`), `p` itself.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `p .. p + kc` must be live rows.
    #[inline(always)]
    unsafe fn widen(p: *const Self, kc: usize, wide: &mut [PanelRow]) -> *const PanelRow {
        debug_assert!(!Self::IN_PLACE, "f32 rows are read in place");
        for (kk, w) in wide[..kc].iter_mut().enumerate() {
            // SAFETY: `kk < kc`: a live row (the caller's contract), and `w` is an aligned,
            // writable f32 row; the CPU has AVX-512 F.
            unsafe { _mm512_store_ps(w.0.as_mut_ptr(), Self::load(p.add(kk))) };
        }
        wide.as_ptr()
    }
}

impl Widen for PanelRow {
    const IN_PLACE: bool = true;

    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        // SAFETY: a live, 64-byte aligned row of 16 f32 (the caller's contract).
        unsafe { _mm512_load_ps((*p).0.as_ptr()) }
    }

    #[inline(always)]
    unsafe fn widen(p: *const Self, _kc: usize, _wide: &mut [PanelRow]) -> *const PanelRow {
        p
    }
}

impl Widen for F16Row {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        // SAFETY: a live, 32-byte aligned row of 16 f16 (the caller's contract); `vcvtph2ps`
        // widens exactly.
        unsafe { _mm512_cvtph_ps(_mm256_load_si256(p.cast())) }
    }
}

impl Widen for Bf16Row {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        // SAFETY: a live, 32-byte aligned row of 16 bf16 (the caller's contract); a bf16 is the
        // top half of the f32 of the same value, so zero-extending and shifting widens exactly.
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_load_si256(p.cast()),
            )))
        }
    }
}

/// Runs one work item.
///
/// # Safety
/// The CPU must support AVX-512 F, and `b` must satisfy [`super::Block`]'s contract.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block_avx512<R: Widen>(b: &Block<'_, R>) {
    b.debug_assert_fits();
    let Some(a) = b.a_tiles else {
        // Few rows (decode), or no packed tiles: row groups of up to SMALL_M straight from `x`.
        for r in (0..b.m).step_by(SMALL_M) {
            // SAFETY: rows `r .. r + min(SMALL_M, m - r)` are below `m`; the contract is ours.
            unsafe { rows_direct(b, r, SMALL_M.min(b.m - r)) };
        }
        return;
    };
    // Many rows: k-chunks outside (the chunk's activations and one panel pair's weights stay in
    // cache), panel pairs, then row tiles of the packed activations; partial sums go through
    // `out`. Half-precision chunks are widened into `wide` first (f32 rows are read in place).
    let half = if R::IN_PLACE { 0 } else { KC };
    let mut wide = vec![PanelRow::ZERO; 2 * half];
    let (wide0, wide1) = wide.split_at_mut(half);
    let mut k0 = 0;
    while k0 < b.k {
        let kc = KC.min(b.k - k0);
        let mut p = b.p0;
        while p < b.p1 {
            let np = (b.p1 - p).min(2);
            let mut wp = [std::ptr::null::<PanelRow>(); 2];
            for (j, (wp, wide)) in wp
                .iter_mut()
                .zip([&mut *wide0, &mut *wide1])
                .take(np)
                .enumerate()
            {
                // SAFETY: panel `p + j < p1`, rows `k0 .. k0 + kc` of it (within `0 .. k`);
                // `wide` holds `KC >= kc` rows for half-precision panels.
                *wp = unsafe { R::widen(b.panels.as_ptr().add((p + j) * b.k + k0), kc, wide) };
            }
            for r in (0..b.m).step_by(MR) {
                let t = Tile {
                    r0: r,
                    p0: p,
                    k0,
                    kc,
                };
                // SAFETY: tile rows `r .. r + MR` (the valid ones below `m`), panels
                // `p .. p + np` (within `p0 .. p1`, their rows `k0 .. k0 + kc` as f32 at `wp`)
                // and `k0 .. k0 + kc` (within `0 .. k`) are this item's, and `a` is the item's
                // tiles (`ceil(m / MR) × k × MR` values, the contract); the CPU has AVX-512 F.
                unsafe {
                    if np == 2 {
                        tile12::<2, R>(b, a, t, [wp[0], wp[1]])
                    } else {
                        tile12::<1, R>(b, a, t, [wp[0]])
                    }
                }
            }
            p += np;
        }
        k0 += kc;
    }
}

/// [`MR`] rows of packed activations × `NP` panels (their rows `k0 .. k0 + kc` as f32 at `wp`):
/// per k step, one aligned load per panel and
/// `MR × NP` FMAs whose activation operand is a broadcast from the tile (one base pointer, so
/// the compiler folds it into the FMA). Rows at or beyond `m` (whatever the tile holds there)
/// are neither loaded from nor stored to `out`.
///
/// # Safety
/// The CPU must support AVX-512 F; `r0` must be a multiple of `MR` below `m`, panels
/// `p0 .. p0 + NP` within the item's `p0 .. p1`, `k0 + kc <= k`, `a` the item's tiles
/// (`ceil(m / MR) × k × MR` values), `wp[j]` rows `k0 .. k0 + kc` of panel `p0 + j` (in f32), and
/// `b` must satisfy [`super::Block`]'s contract.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile12<const NP: usize, R>(
    b: &Block<'_, R>,
    a: &[f32],
    t: Tile,
    wp: [*const PanelRow; NP],
) {
    debug_assert!(t.r0.is_multiple_of(MR) && t.r0 < b.m && t.p0 + NP <= b.p1 && t.k0 + t.kc <= b.k);
    debug_assert_eq!(a.len(), b.m.div_ceil(MR) * b.k * MR);
    let rows = MR.min(b.m - t.r0);
    let mut masks = [0xffffu16; NP];
    for (j, m) in masks.iter_mut().enumerate() {
        let width = b.width(t.p0 + j);
        if width < PANEL {
            *m = (1u16 << width) - 1;
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    for (i, acc) in acc.iter_mut().enumerate().take(rows) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `r0 + i < m` (i < rows), columns of panel `p0 + j` masked to its valid
            // ones: this item's elements of `out`; masked-off lanes are not accessed.
            *acc = unsafe {
                _mm512_maskz_loadu_ps(masks[j], b.out.add((t.r0 + i) * b.ldo + (t.p0 + j) * PANEL))
            };
        }
    }
    // SAFETY: tile `r0 / MR` of `a` starts at `(r0 / MR) k MR`; its k-row `k0 < k` at `k0 MR`
    // more, and `kc` rows of `MR` values from there end at most at the tile's end.
    let ap = unsafe { a.as_ptr().add((t.r0 / MR) * b.k * MR + t.k0 * MR) };
    for kk in 0..t.kc {
        let mut wv = [_mm512_setzero_ps(); NP];
        for (j, wv) in wv.iter_mut().enumerate() {
            // SAFETY: `kk < kc`: a row of panel `p0 + j`'s chunk in f32, 64-byte aligned.
            *wv = unsafe { _mm512_load_ps((*wp[j].add(kk)).0.as_ptr()) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `kk < kc`, `i < MR`: within the tile's k-chunk (above).
            let xv = _mm512_set1_ps(unsafe { *ap.add(kk * MR + i) });
            for (acc, wv) in acc.iter_mut().zip(&wv) {
                *acc = _mm512_fmadd_ps(xv, *wv, *acc);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate().take(rows) {
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: as for the masked load: only this item's valid columns of row `r0 + i`.
            unsafe {
                _mm512_mask_storeu_ps(
                    b.out.add((t.r0 + i) * b.ldo + (t.p0 + j) * PANEL),
                    masks[j],
                    *acc,
                )
            };
        }
    }
}

/// Rows `r0 .. r0 + rows` (at most [`SMALL_M`]) × all of the item's panels, 4 at a time, over
/// the whole `k`, reading `x` directly.
///
/// # Safety
/// The CPU must support AVX-512 F, `1 <= rows <= SMALL_M`, `r0 + rows <= m`, and `b` must satisfy
/// [`super::Block`]'s contract.
#[target_feature(enable = "avx512f")]
unsafe fn rows_direct<R: Widen>(b: &Block<'_, R>, r0: usize, rows: usize) {
    let mut p = b.p0;
    while p < b.p1 {
        let np = (b.p1 - p).min(4);
        let t = Tile {
            r0,
            p0: p,
            k0: 0,
            kc: b.k,
        };
        // SAFETY: the tile's rows `r0 .. r0 + rows` (below `m`), panels `p .. p + np` (within
        // `p0 .. p1`) and k-range `0 .. k` are this item's; the CPU has AVX-512 F.
        unsafe {
            match (rows, np) {
                (4, 4) => tile::<4, 4, R>(b, t),
                (3, 4) => tile::<3, 4, R>(b, t),
                (2, 4) => tile::<2, 4, R>(b, t),
                (1, 4) => tile::<1, 4, R>(b, t),
                (4, 3) => tile::<4, 3, R>(b, t),
                (3, 3) => tile::<3, 3, R>(b, t),
                (2, 3) => tile::<2, 3, R>(b, t),
                (1, 3) => tile::<1, 3, R>(b, t),
                (4, 2) => tile::<4, 2, R>(b, t),
                (3, 2) => tile::<3, 2, R>(b, t),
                (2, 2) => tile::<2, 2, R>(b, t),
                (1, 2) => tile::<1, 2, R>(b, t),
                (4, _) => tile::<4, 1, R>(b, t),
                (3, _) => tile::<3, 1, R>(b, t),
                (2, _) => tile::<2, 1, R>(b, t),
                _ => tile::<1, 1, R>(b, t),
            }
        }
        p += np;
    }
}

/// Where a tile sits: first row, first panel, k-range `k0 .. k0 + kc`.
#[derive(Clone, Copy)]
struct Tile {
    r0: usize,
    p0: usize,
    k0: usize,
    kc: usize,
}

/// `ROWS` rows × `NP` panels: accumulators start from `out`, then one aligned panel-row load per
/// panel and one broadcast per row for every k step, `ROWS × NP` FMAs.
///
/// # Safety
/// The CPU must support AVX-512 F; rows `r0 .. r0 + ROWS` must be below `m`, panels
/// `p0 .. p0 + NP` within the item's `p0 .. p1`, `k0 + kc <= k`, and `b` must satisfy
/// [`super::Block`]'s contract.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const ROWS: usize, const NP: usize, R: Widen>(b: &Block<'_, R>, t: Tile) {
    debug_assert!(t.r0 + ROWS <= b.m && t.p0 + NP <= b.p1 && t.k0 + t.kc <= b.k);
    let mut masks = [0xffffu16; NP];
    for (j, m) in masks.iter_mut().enumerate() {
        let width = b.width(t.p0 + j);
        if width < PANEL {
            *m = (1u16 << width) - 1;
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NP]; ROWS];
    for (i, acc) in acc.iter_mut().enumerate() {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `r0 + i < m`, columns `16 (p0 + j) ..` masked to the panel's valid
            // ones: elements of this item's columns of `out` (module documentation);
            // `loadu` needs no alignment and masked-off lanes are not accessed.
            *acc = unsafe {
                _mm512_maskz_loadu_ps(masks[j], b.out.add((t.r0 + i) * b.ldo + (t.p0 + j) * PANEL))
            };
        }
    }
    let mut xr = [std::ptr::null::<f32>(); ROWS];
    for (i, xr) in xr.iter_mut().enumerate() {
        // SAFETY: row `r0 + i < m` of `x`, at offset `k0 < k` in the row.
        *xr = unsafe { b.x.as_ptr().add((t.r0 + i) * b.k + t.k0) };
    }
    let mut wp = [std::ptr::null::<R>(); NP];
    for (j, wp) in wp.iter_mut().enumerate() {
        // SAFETY: panel `p0 + j < p1`, row `k0 < k` of it.
        *wp = unsafe { b.panels.as_ptr().add((t.p0 + j) * b.k + t.k0) };
    }
    for kk in 0..t.kc {
        let mut wv = [_mm512_setzero_ps(); NP];
        for (j, wv) in wv.iter_mut().enumerate() {
            // SAFETY: `k0 + kk < k`: a row of panel `p0 + j`.
            *wv = unsafe { R::load(wp[j].add(kk)) };
        }
        for i in 0..ROWS {
            // SAFETY: `k0 + kk < k`: within row `r0 + i` of `x`.
            let xv = _mm512_set1_ps(unsafe { *xr[i].add(kk) });
            for j in 0..NP {
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: as for the masked load: only this item's valid columns of row `r0 + i`.
            unsafe {
                _mm512_mask_storeu_ps(
                    b.out.add((t.r0 + i) * b.ldo + (t.p0 + j) * PANEL),
                    masks[j],
                    *acc,
                )
            };
        }
    }
}
