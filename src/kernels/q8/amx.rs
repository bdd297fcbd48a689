//! x86_64 AMX-INT8 kernel (Sapphire Rapids and later): the tile unit computes each `Q8_0`
//! block's integer products for 16 rows × 16 columns at once (`tdpbsud` on one 16 × 16 i32 tile),
//! and AVX-512 applies the block's scales, with the same f32 arithmetic as the AVX-512 VNNI
//! kernel, so the two give identical results.
//!
//! Operands, without any repacking: the A tiles are 16 activation rows × one block (32 signed
//! bytes per row, read in place from the quantized rows at stride `k`); the B tiles are one
//! [`super::PanelBlock`]'s `qs` as they are (8 rows of 4 k × 16 columns, unsigned with the +128 offset,
//! which is the layout `tdpbsud` expects). The offset is removed with the activation's
//! correction (`-128 · Σ q_x`) before the block's scales: `(Σ q_x (q_w + 128) + corr) · d_w d_x`.
//!
//! One kernel tile is 16 rows × one panel, all k-blocks, with the 16 f32 sums in registers.
//! Even and odd blocks use their own tiles (sums tmm0/1, activations tmm4/5, weights tmm6/7), so
//! the tile unit computes block `b` while AVX-512 scales block `b - 1`. The tile
//! configuration sets the rows, so a last row tile may have 1..16 rows; a partial last panel is
//! masked at the output.
//!
//! A 4-bit matrix (`q4_0`, `q4_g128`) runs the same tiles: each panel's blocks are expanded to
//! int8 ([`super::Q8Matrix::expand_panel4`]: `q + 128`, the block's or group's scale) into a
//! buffer of one panel, once for all of a job's rows, which the B loads then read.
//!
//! A per-channel matrix (`int8-channel`) needs no scaling between blocks: its kernel tile is up
//! to 32 rows × two panels, four 16 × 16 sums (tmm0..3) accumulated in the tile unit over every
//! block, each pair of tile loads (activations tmm4/5, weights tmm6/7) feeding two products,
//! then scaled once.
//!
//! Linux hands out the tile state only on request: [`available`] asks for it once per process
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`) and reports AMX only if granted.
//! Every kernel call loads its tile configuration and releases the tiles when done.
//!
//! Safety contract of [`gemm_amx`]: as for the other x86 kernels (see `x86.rs`): the CPU has
//! AVX-512 F/BW/VNNI and AMX-TILE/INT8 with the tile state granted ([`available`]), and the
//! caller ([`super::Q8Matrix::gemm_block`]) has checked the bounds of [`super::Job::fits`]. The tile instructions are inline assembly (no stable
//! intrinsics); each reads or writes only the memory its operands name, at most `rows` lines of
//! `colsb` bytes at the given stride, which the `SAFETY:` comments bound.

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

use super::{panel_width, Job, PanelBlock, QuantRows, TileAt, BLOCK, PANEL};

/// Rows of one tile (and of one row tile of the kernel).
const TILE_ROWS: usize = 16;
/// Bytes of one tile row: 16 i32 accumulators, or 4 k × 16 columns of weights.
const TILE_BYTES: usize = 64;
/// Blocks in flight: accumulator tiles in rotation (the epilogue of block `b` runs after the
/// tile products of block `b + DEPTH - 1` are issued). Measured: 4 is no faster than 2.
const DEPTH: usize = 2;

/// One block's tile products: `tilezero` the sums `$c`, load the activations into `$a` and the
/// weights into `$w`, `tdpbsud`, and store the sums for the epilogue.
macro_rules! block_product {
    ($c:literal, $a:literal, $w:literal, $x:expr, $wb:expr, $k:expr, $out:expr) => {
        asm!(
            concat!("tilezero tmm", $c),
            concat!("tileloadd tmm", $a, ", [{a} + {k}*1]"),
            concat!("tileloadd tmm", $w, ", [{wb} + {s}*1]"),
            concat!("tdpbsud tmm", $c, ", tmm", $a, ", tmm", $w),
            concat!("tilestored [{t} + {s}*1], tmm", $c),
            a = in(reg) $x, wb = in(reg) $wb, k = in(reg) $k, t = in(reg) $out,
            s = in(reg) TILE_BYTES,
            options(nostack),
        )
    };
}

/// Whether this CPU and OS run the AMX kernel: AVX-512 F/BW/VNNI (the epilogue, and the kernel
/// for few rows), AMX-TILE and AMX-INT8 in `cpuid`, and the tile state granted by Linux.
/// Detected once; the request for the tile state is made at most once per process.
pub(super) fn available() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        // cpuid leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        let edx = __cpuid_count(7, 0).edx;
        let amx = edx & (1 << 24) != 0 && edx & (1 << 25) != 0;
        avx512 && amx && request_tile_state()
    })
}

/// Asks Linux for permission to use the AMX tile data state (process-wide, all threads).
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, feature)` takes two integers and touches no
    // memory of ours; on kernels without AMX support it fails with an error code.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The 64-byte `ldtilecfg` operand: palette 1, then bytes per row and rows of each tile.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Palette 1 with the given tiles: `(tile, rows, bytes per row)`.
    fn of(tiles: impl IntoIterator<Item = (usize, usize, usize)>) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for (tile, rows, colsb) in tiles {
            c[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + tile] = rows as u8;
        }
        Self(c)
    }

    /// Accumulators tmm0/1 and activations tmm4/5 of `mr` rows, weights tmm6/7 of one block.
    /// Consecutive blocks rotate through them ([`DEPTH`] blocks in flight), so the tile unit
    /// computes the next blocks while AVX-512 scales an earlier one.
    fn new(mr: usize) -> Self {
        let sums = (0..DEPTH).map(|t| (t, mr, TILE_BYTES));
        let operands = (0..2)
            .flat_map(|parity| [(4 + parity, mr, BLOCK), (6 + parity, BLOCK / 4, TILE_BYTES)]);
        Self::of(sums.chain(operands))
    }

    /// A per-channel matrix's 2 × 2 tiles: sums tmm0/1 (row tile 0 × panels 0/1) of `mr0`
    /// rows and tmm2/3 (row tile 1) of `mr1` rows, activations tmm4 (`mr0` rows) and tmm5
    /// (`mr1` rows) of one block, weights tmm6/7 (one block of panels 0/1).
    fn channel(mr0: usize, mr1: usize) -> Self {
        Self::of([
            (0, mr0, TILE_BYTES),
            (1, mr0, TILE_BYTES),
            (2, mr1, TILE_BYTES),
            (3, mr1, TILE_BYTES),
            (4, mr0, BLOCK),
            (5, mr1, BLOCK),
            (6, BLOCK / 4, TILE_BYTES),
            (7, BLOCK / 4, TILE_BYTES),
        ])
    }
}

/// One block's accumulator tile, stored for the epilogue: row `i` at `[i]`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct TileOut([[i32; PANEL]; TILE_ROWS]);

/// The activation rows' per-block scales and corrections, transposed to block-major order for
/// the epilogue: `[b][i]` for block `b` and row `i` of the kernel's rows (padded to whole tiles
/// with copies of the last row), so a block's 16 rows are 16 consecutive values at fixed offsets.
struct RowScales {
    d: Vec<f32>,
    corr: Vec<i32>,
    /// Rows per block: the kernel's rows rounded up to whole tiles.
    stride: usize,
}

impl RowScales {
    /// `groups`: scale groups per row (`xq.groups`: blocks, or 1 per token).
    fn new(xq: &QuantRows, rows: &Range<usize>) -> Self {
        let (stride, groups) = (rows.len().next_multiple_of(TILE_ROWS), xq.groups);
        let (mut d, mut corr) = (vec![0f32; groups * stride], vec![0i32; groups * stride]);
        for i in 0..stride {
            let r = (rows.start + i).min(rows.end - 1);
            for g in 0..groups {
                d[g * stride + i] = xq.d[r * groups + g];
                corr[g * stride + i] = xq.corr[r * groups + g];
            }
        }
        Self { d, corr, stride }
    }
}

/// Walks the job: panels outside (a panel's weights stay in L1/L2 while the rows pass), row
/// tiles of 16 inside, all k-blocks of a tile at once with the sums in registers.
///
/// # Safety
/// See the module documentation: AMX available ([`available`]) and the bounds of
/// [`super::Job::fits`] for `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_amx(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let scales = RowScales::new(job.xq, &job.rows);
    let base = out.as_mut_ptr();
    let corner = |at: TileAt| Tile {
        job,
        scales: &scales,
        i0: at.r - job.rows.start,
        at,
        // SAFETY: `at.at` is a tile's corner in the job's output, within `out`
        // ([`super::TileAt`]).
        out: unsafe { base.add(at.at) },
    };
    if job.w.channel {
        let mut sums = [TileOut([[0; PANEL]; TILE_ROWS]); 4];
        let mut configured = (0, 0);
        for at in job.tiles(2 * TILE_ROWS, 2) {
            let mr0 = at.mr.min(TILE_ROWS);
            // A tile of one row tile computes its second on the same rows (never stored).
            let mr1 = if at.mr > TILE_ROWS {
                at.mr - TILE_ROWS
            } else {
                mr0
            };
            if configured != (mr0, mr1) {
                // SAFETY: a valid palette-1 configuration (1 <= rows <= 16, bytes <= 64).
                unsafe { load_config(&TileConfig::channel(mr0, mr1)) };
                configured = (mr0, mr1);
            }
            // SAFETY: this function's target features are those of `tile_channel`; the tile's
            // rows lie within the job's (`i0 + 32 <= scales.stride` where it has a second row
            // tile, `i0 + 16` otherwise), its panels too, its corner is in `out` (`corner`), the
            // loaded configuration is `TileConfig::channel(mr0, mr1)` for its rows, and a
            // per-channel matrix's `scales` have one group per row (`Job::fits`).
            unsafe { tile_channel(&corner(at), &mut sums) };
        }
    } else {
        let mut configured = 0;
        let mut tiles = [TileOut([[0; PANEL]; TILE_ROWS]); DEPTH];
        // A 4-bit matrix's panel, expanded to int8 blocks once for all the job's rows (the
        // tiles walk panels outside, rows inside).
        let (int4, nb) = (job.w.is_int4(), job.w.nb);
        let mut expanded = vec![super::ZERO_BLOCK; if int4 { nb } else { 0 }];
        let mut expanded_panel = None;
        for at in job.tiles(TILE_ROWS, 1) {
            if configured != at.mr {
                // SAFETY: a valid palette-1 configuration (every tile within 16 rows × 64
                // bytes).
                unsafe { load_config(&TileConfig::new(at.mr)) };
                configured = at.mr;
            }
            let blocks = if int4 {
                if expanded_panel != Some(at.p) {
                    job.w.expand_panel4(at.p, &mut expanded);
                    expanded_panel = Some(at.p);
                }
                &expanded[..]
            } else {
                &job.w.blocks[at.p * nb..(at.p + 1) * nb]
            };
            // SAFETY: this function's target features are those of `tile`; the tile's rows
            // lie within the job's (`i0 + 16 <= scales.stride`), its panel too, `blocks` are
            // the panel's `nb` int8 blocks, its corner is in `out` (`corner`), and the loaded
            // configuration is `TileConfig::new(at.mr)`.
            unsafe { tile(&corner(at), blocks, &mut tiles) };
        }
    }
    // SAFETY: `tilerelease` only resets the tile state this thread configured above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Loads a tile configuration (`ldtilecfg`, which also zeroes every tile).
///
/// # Safety
/// AMX with the tile state granted; `cfg` is a valid palette-1 configuration.
#[inline]
unsafe fn load_config(cfg: &TileConfig) {
    // SAFETY: `ldtilecfg` reads the 64 bytes of `cfg` (the caller's contract: a valid
    // configuration).
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
}

/// Panel `p`'s mask of valid output columns.
fn panel_mask(w: &super::Q8Matrix, p: usize) -> u16 {
    match panel_width(w, p) {
        PANEL => 0xffff,
        width => (1u16 << width) - 1,
    }
}

/// A tile's f32 accumulators: rows `i < mr` loaded from `out + i * ldo` (the columns of
/// `mask`), the rest zero.
///
/// # Safety
/// AVX-512 F; the columns of `mask` at `out + i * ldo` must be readable for every `i < mr`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_rows(out: *const f32, ldo: usize, mask: u16, mr: usize) -> [__m512; TILE_ROWS] {
    let mut facc = [_mm512_setzero_ps(); TILE_ROWS];
    for (i, facc) in facc.iter_mut().enumerate().take(mr) {
        // SAFETY: masked-off lanes are not accessed; the enabled ones are readable (the
        // function's contract).
        *facc = unsafe { _mm512_maskz_loadu_ps(mask, out.add(i * ldo)) };
    }
    facc
}

/// Stores rows `i < mr` of a tile's accumulators into `out + i * ldo` (the columns of `mask`).
///
/// # Safety
/// AVX-512 F; the columns of `mask` at `out + i * ldo` must be writable for every `i < mr`,
/// with no other live reference to them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_rows(out: *mut f32, ldo: usize, mask: u16, mr: usize, facc: &[__m512; TILE_ROWS]) {
    for (i, facc) in facc.iter().enumerate().take(mr) {
        // SAFETY: only the enabled columns of row `i < mr` are written (the contract).
        unsafe { _mm512_mask_storeu_ps(out.add(i * ldo), mask, *facc) };
    }
}

/// One kernel tile: the job, its activations' transposed scales, the tile's first row in
/// `scales`, the tile, and the output pointer at its corner.
struct Tile<'a> {
    job: &'a Job<'a>,
    scales: &'a RowScales,
    i0: usize,
    at: TileAt,
    out: *mut f32,
}

/// The scaling of one block, as the VNNI kernel's: `facc += f32(Σ + corr) · (d_w · d_x)` for
/// the 16 rows (rows beyond the tile's are computed on copies of its last row's scales and
/// never stored).
///
/// # Safety
/// AVX-512 F; `d` and `corr` point to 16 readable values each.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn scale_block(
    facc: &mut [__m512; TILE_ROWS],
    sums: &TileOut,
    ws: __m512,
    d: *const f32,
    corr: *const i32,
) {
    for (i, facc) in facc.iter_mut().enumerate() {
        // SAFETY: `sums.0[i]` is a 64-byte aligned row of 16 i32; `i < 16` values of `d` and
        // `corr` are readable (the caller's contract).
        unsafe {
            let acc = _mm512_load_si512(sums.0[i].as_ptr() as *const _);
            let acc = _mm512_add_epi32(acc, _mm512_set1_epi32(*corr.add(i)));
            let scale = _mm512_mul_ps(ws, _mm512_set1_ps(*d.add(i)));
            *facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, *facc);
        }
    }
}

/// Rows `r0 .. r0 + mr` × panel `p` (its int8 blocks `blocks`: the matrix's own, or a 4-bit
/// panel expanded), all k-blocks, accumulated onto `out`.
///
/// # Safety
/// AVX-512 F/BW/VNNI and AMX with the tile state granted; the loaded tile configuration is
/// `TileConfig::new(mr)`, `1 <= mr <= 16`; the rows are rows of `xq` and `i0 + 16 <=
/// scales.stride`; `p` is a panel of `w`; for every tile row `i < mr`, `out + i * ldo ..` is
/// valid for reads and writes of `panel_width(w, p)` values, with no other live reference to
/// them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile(t: &Tile, blocks: &[PanelBlock], tiles: &mut [TileOut; DEPTH]) {
    let Tile {
        job,
        scales,
        i0,
        at,
        out,
    } = *t;
    let (w, xq, ldo, r0, mr, p) = (job.w, job.xq, job.ldo, at.r, at.mr, at.p);
    let (k, nb) = (w.k, w.nb);
    debug_assert!((1..=TILE_ROWS).contains(&mr));
    debug_assert!((r0 + mr) * k <= xq.qs.len() && blocks.len() == nb);
    debug_assert!(i0 + TILE_ROWS <= scales.stride && scales.d.len() == nb * scales.stride);
    let mask = panel_mask(w, p);
    // Accumulate onto `out`: the caller's starting values (bias, zeros or earlier sums).
    // SAFETY: the panel's valid columns of `out` rows `i < mr` are ours (the caller's contract).
    let mut facc = unsafe { load_rows(out, ldo, mask, mr) };
    // SAFETY: row `r0` is a row of `xq`, so `r0 * k < xq.qs.len()`.
    let xa = unsafe { xq.qs.as_ptr().add(r0 * k) };
    let wp = blocks.as_ptr();
    // Block `b`'s 16 row scales and corrections start at `b * stride + i0`.
    let scale_at = |b: usize| b * scales.stride + i0;
    for b in 0..nb + DEPTH - 1 {
        if b < nb {
            let stored = tiles[b % DEPTH].0.as_mut_ptr() as *mut u8;
            // SAFETY: the A load reads `mr` rows of 32 bytes at stride `k` from `xa + 32 b`:
            // bytes `32 b .. 32 b + 32` of rows `r0 .. r0 + mr` of `xq.qs` (`b < nb`,
            // `k = 32 nb`), in bounds; the B load reads 8 rows of 64 bytes, the 512 bytes of
            // block `b`'s `qs`, in `blocks` (`nb` long); the store writes `mr` rows of 64 bytes into
            // `tiles[b % DEPTH]`, 1024 bytes we own mutably. The tiles are configured for these
            // shapes (the function's contract).
            unsafe {
                let a = xa.add(b * BLOCK);
                let wb = (*wp.add(b)).qs.as_ptr();
                if b % DEPTH == 0 {
                    block_product!("0", "4", "6", a, wb, k, stored);
                } else {
                    block_product!("1", "5", "7", a, wb, k, stored);
                }
            }
        }
        // An earlier block's sums, while the tile unit works on the later ones.
        if b + 1 >= DEPTH {
            let pb = b + 1 - DEPTH;
            // SAFETY: block `pb < nb` is in `blocks`; its 16 `scales` are at the
            // block's start, 64-byte aligned. `scale_at(pb) + 16 <= nb * stride`: 16 readable
            // values of `scales.d` and `scales.corr` (the function's contract).
            unsafe {
                let ws = _mm512_load_ps((*wp.add(pb)).scales.as_ptr());
                let at = scale_at(pb);
                scale_block(
                    &mut facc,
                    &tiles[pb % DEPTH],
                    ws,
                    scales.d.as_ptr().add(at),
                    scales.corr.as_ptr().add(at),
                );
            }
        }
    }
    // SAFETY: as for the load above.
    unsafe { store_rows(out, ldo, mask, mr, &facc) };
}

/// A per-channel matrix's tile of up to 32 rows (two row tiles) × up to two panels: every
/// block's products accumulated in the tile unit (four sums, each pair of tile loads feeding
/// two products), then each 16 × 16 sum scaled once and accumulated onto `out`. A missing
/// second row tile or panel is computed on the first one's operands and never stored.
///
/// # Safety
/// As for [`tile`], with a per-channel `w` and per-token activations (`scales` of one group:
/// `scales.d.len() == scales.stride`), up to 32 rows (`i0 + 32 <= scales.stride` when there
/// are more than 16) and `at.np` panels, and the configuration `TileConfig::channel(mr0, mr1)`
/// (`mr0 = min(mr, 16)`, `mr1` the second row tile's rows, or `mr0` without one).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile_channel(t: &Tile, sums: &mut [TileOut; 4]) {
    let Tile {
        job,
        scales,
        i0,
        at,
        out,
    } = *t;
    let (w, xq, ldo, r0, mr, p, np) = (job.w, job.xq, job.ldo, at.r, at.mr, at.p, at.np);
    let (k, nb) = (w.k, w.nb);
    debug_assert!((1..=2 * TILE_ROWS).contains(&mr) && (1..=2).contains(&np) && w.channel);
    debug_assert!((r0 + mr) * k <= xq.qs.len() && (p + np) * nb <= w.blocks.len());
    debug_assert!(i0 + mr.next_multiple_of(TILE_ROWS) <= scales.stride);
    debug_assert!(scales.d.len() == scales.stride);
    let row_tiles = mr.div_ceil(TILE_ROWS);
    // SAFETY: rows `r0` and, with a second row tile, `r0 + 16` are rows of `xq`, so their
    // starts are below `xq.qs.len()`; panels `p` and, with a second, `p + 1` are panels of
    // `w`, so their first blocks are in `w.blocks`.
    let (xa0, xa1, wp0, wp1) = unsafe {
        let xa0 = xq.qs.as_ptr().add(r0 * k);
        let wp0 = w.blocks.as_ptr().add(p * nb);
        (
            xa0,
            if row_tiles > 1 {
                xa0.add(TILE_ROWS * k)
            } else {
                xa0
            },
            wp0,
            if np > 1 { wp0.add(nb) } else { wp0 },
        )
    };
    // SAFETY: `tilezero` writes only the tile registers, configured for the tile's rows.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
    for b in 0..nb {
        // SAFETY: each A load reads its configured rows (those of its row tile) of 32 bytes at
        // stride `k` from the row tile's start + 32 b: bytes `32 b .. 32 b + 32` of rows of
        // `xq.qs` (`b < nb`, `k = 32 nb`), in bounds; each B load reads the 512 bytes of block
        // `b`'s `qs` of its panel, in `w.blocks`. The tiles are configured for these shapes
        // (the function's contract).
        unsafe {
            let (a0, w0, w1) = (
                xa0.add(b * BLOCK),
                (*wp0.add(b)).qs.as_ptr(),
                (*wp1.add(b)).qs.as_ptr(),
            );
            if row_tiles > 1 {
                asm!(
                    "tileloadd tmm4, [{a0} + {k}*1]",
                    "tileloadd tmm6, [{w0} + {s}*1]",
                    "tileloadd tmm7, [{w1} + {s}*1]",
                    "tileloadd tmm5, [{a1} + {k}*1]",
                    "tdpbsud tmm0, tmm4, tmm6",
                    "tdpbsud tmm1, tmm4, tmm7",
                    "tdpbsud tmm2, tmm5, tmm6",
                    "tdpbsud tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) xa1.add(b * BLOCK),
                    w0 = in(reg) w0,
                    w1 = in(reg) w1,
                    k = in(reg) k,
                    s = in(reg) TILE_BYTES,
                    options(nostack),
                )
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {k}*1]",
                    "tileloadd tmm6, [{w0} + {s}*1]",
                    "tileloadd tmm7, [{w1} + {s}*1]",
                    "tdpbsud tmm0, tmm4, tmm6",
                    "tdpbsud tmm1, tmm4, tmm7",
                    a0 = in(reg) a0,
                    w0 = in(reg) w0,
                    w1 = in(reg) w1,
                    k = in(reg) k,
                    s = in(reg) TILE_BYTES,
                    options(nostack),
                )
            }
        };
    }
    let [s0, s1, s2, s3] = sums;
    // SAFETY: each store writes its tile's configured rows (at most 16) of 64 bytes into a
    // `TileOut` (1024 bytes) we own mutably.
    unsafe {
        asm!(
            "tilestored [{t0} + {s}*1], tmm0",
            "tilestored [{t1} + {s}*1], tmm1",
            "tilestored [{t2} + {s}*1], tmm2",
            "tilestored [{t3} + {s}*1], tmm3",
            t0 = in(reg) s0.0.as_mut_ptr() as *mut u8,
            t1 = in(reg) s1.0.as_mut_ptr() as *mut u8,
            t2 = in(reg) s2.0.as_mut_ptr() as *mut u8,
            t3 = in(reg) s3.0.as_mut_ptr() as *mut u8,
            s = in(reg) TILE_BYTES,
            options(nostack),
        )
    };
    for rt in 0..row_tiles {
        let rows = (mr - rt * TILE_ROWS).min(TILE_ROWS);
        let i = i0 + rt * TILE_ROWS;
        for (pp, sum) in [&*s0, &*s1, &*s2, &*s3][2 * rt..2 * rt + np]
            .iter()
            .enumerate()
        {
            let mask = panel_mask(w, p + pp);
            // SAFETY: row tile `rt`'s rows and panel `p + pp`'s valid columns of `out` are the
            // tile's (the caller's contract, [`super::TileAt`]): `rt * 16` rows and `pp * 16`
            // columns past its corner. Block 0 of the panel holds its column scales, 64-byte
            // aligned; `i + 16 <= scales.stride`: 16 readable row scales and corrections.
            unsafe {
                let o = out.add(rt * TILE_ROWS * ldo + pp * PANEL);
                let mut facc = load_rows(o, ldo, mask, rows);
                let ws = _mm512_load_ps((*wp0.add(pp * nb)).scales.as_ptr());
                scale_block(
                    &mut facc,
                    sum,
                    ws,
                    scales.d.as_ptr().add(i),
                    scales.corr.as_ptr().add(i),
                );
                store_rows(o, ldo, mask, rows, &facc);
            }
        }
    }
}
