//! INT8 matrix multiplication for `Q8_0` weights: a packed weight layout and register-tiled GEMM
//! kernels (AMX-INT8, AVX-512 VNNI, AVX2, wasm32 simd128 and relaxed SIMD, portable scalar), used
//! by every INT8 `Linear`.
//!
//! candle's own CPU `Q8_0` matmul calls one dot product per output element, one activation row at
//! a time, so the weights are streamed from memory again for every row and nothing stays in
//! registers. Here each weight matrix is repacked once at load time into *panels* of
//! [`PANEL`] output columns; a kernel computes a tile of several rows × one or two panels with all
//! accumulators in registers, so every weight byte loaded feeds several rows.
//!
//! Numerics are those of candle's `Q8_0 × Q8_0` path: each activation row is quantized per 32-value
//! block exactly like `BlockQ8_0::from_float` (including the f16 rounding of its scale), and
//! `y[m, n] = Σ_b d_x[m, b] · d_w[n, b] · Σ_{i<32} q_x · q_w` in f32. The integer block sums are
//! exact in every kernel; only the order of the f32 accumulation across blocks can differ from
//! candle's.
//!
//! Layout of one [`PanelBlock`] (panel `p`, k-block `b`, 576 bytes, 64-byte aligned):
//! `scales[16]` (f32 weight scale per column) then `qs[512]`: for k-step `s` (4 consecutive k),
//! column `c`, lane `j`: `qs[64 s + 4 c + j] = (q_w[16 p + c, 32 b + 4 s + j] as u8) ^ 0x80`. One
//! 512-bit vector is 4 k × 16 columns, the operand shape of `vpdpbusd`. The bytes are stored
//! offset by +128 (unsigned) because `vpdpbusd` multiplies *unsigned* by signed bytes: the kernels
//! subtract `128 · Σ q_x` per block (precomputed with the activation), or flip the bit back.
//!
//! Per-channel weights (`int8-channel`, [`Q8Matrix::is_channel`]) use the same layout with one
//! scale per output column (repeated in every block) and activations quantized per token
//! ([`QuantRows`] with one group per row): `y[m, n] = d_x[m] · d_w[n] · Σ_i q_x · q_w`, one exact
//! int32 sum over the whole row, scaled once. Every kernel has this mode (`ROW`), which skips the
//! per-block scaling.
//!
//! 4-bit weights (`q4_0`, `q4_g128`: [`Q8Matrix::is_int4`]) are packed the same way at half the
//! bytes ([`Panel4Block`]): the same panels of 16 columns and k-blocks of 32, each weight as an
//! unsigned nibble `u = q + 8`, two k-steps per byte (see [`Panel4Block`]); the kernels split the
//! nibbles in registers and take the same `Q8_0` activations, with the correction `-8 · Σ q_x`
//! (`corr / 16`) for the offset. Decoding reads half the bytes of `Q8_0`. The AMX kernel, for
//! many rows, expands one panel at a time into int8 blocks (`q + 128`, the same scales) and
//! runs its `Q8_0` tiles on them: the same integer sums and f32 steps, so the same results.
//!
//! Files: this one (layout, kernel choice, splitting a product into tiles across threads),
//! `pack.rs` (weights into and out of the layout), `quant.rs` (activation rows to `Q8_0`),
//! `scalar.rs` (the reference kernel), and one per ISA: `x86.rs` (AVX2, AVX-512 VNNI), `amx.rs`,
//! `wasm.rs` (simd128), `wasm_relaxed.rs` (relaxed SIMD).

#[cfg(target_arch = "x86_64")]
mod amx;
mod pack;
mod quant;
mod scalar;
#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
mod wasm_relaxed;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use quant::QuantRows;
use scalar::gemm_scalar;

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::isa::{self, Level};
use crate::kernels::matmul::{check_product, linear_frame};
use crate::{Error, Result};

/// Values per quantization block along `k` (candle's `QK8_0`).
pub const BLOCK: usize = 32;
/// Output columns per packed panel: one 512-bit vector of i32/f32 lanes.
pub const PANEL: usize = 16;
/// Bytes of one candle `BlockQ8_0`: f16 scale, then 32 int8 values.
const Q8_0_BYTES: usize = 2 + BLOCK;
/// Up to this many activation rows the product is split across threads by columns (decode: one row
/// per beam); beyond it, by rows, unless there are fewer chunks of [`ROW_CHUNK`] rows than
/// threads (batched decode), when columns again.
const SMALL_M: usize = 4;
/// Columns per parallel work item in the small-`m` case (a multiple of 2 panels).
const SMALL_M_CHUNK: usize = 8 * PANEL;
/// Rows per parallel work item in the large-`m` case: a chunk of quantized activations
/// (`ROW_CHUNK × k` bytes) stays in L2 while every column panel streams past it.
const ROW_CHUNK: usize = 48;
/// The AMX kernel takes blocks of at least this many rows (one full tile); fewer go to AVX-512
/// VNNI, where a tile would be mostly empty.
pub const AMX_MIN_ROWS: usize = 16;

/// One k-block of one panel; see the module documentation for the layout.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct PanelBlock {
    pub(crate) scales: [f32; PANEL],
    pub(crate) qs: [u8; BLOCK * PANEL],
}

/// One k-block of one panel of 4-bit weights (320 bytes, 64-byte aligned): `scales[16]` (f32
/// weight scale per column, the block's or its group's) then `qs[256]`: for k-step `s < 4`
/// (4 consecutive k), column `c`, lane `j`, `qs[64 s + 4 c + j]` holds `u(q_w[16 p + c,
/// 32 b + 4 s + j])` in its low nibble and `u(q_w[16 p + c, 32 b + 16 + 4 s + j])` in its high
/// nibble, `u(q) = q + 8` in `0..=15`: 64 bytes give the `vpdpbusd` operands of two k-steps.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Panel4Block {
    pub(crate) scales: [f32; PANEL],
    pub(crate) qs: [u8; BLOCK * PANEL / 2],
}

const ZERO_BLOCK4: Panel4Block = Panel4Block {
    scales: [0.0; PANEL],
    // Zero weights: u = 8 in both nibbles.
    qs: [0x88; BLOCK * PANEL / 2],
};

const ZERO_BLOCK: PanelBlock = PanelBlock {
    scales: [0.0; PANEL],
    // Zero weights, stored with the +128 offset.
    qs: [0x80; BLOCK * PANEL],
};

/// A `[n, k]` integer weight matrix repacked into panels for the GEMM kernels: int8 `Q8_0`
/// blocks, int8 per channel, or 4-bit blocks.
#[derive(Clone)]
pub struct Q8Matrix {
    n: usize,
    k: usize,
    /// `k / BLOCK`.
    nb: usize,
    /// One scale per output column and activations per token (`int8-channel`), instead of
    /// candle's `Q8_0` blocks.
    channel: bool,
    /// `panels × nb` blocks, panel-major (empty for a 4-bit matrix).
    blocks: Vec<PanelBlock>,
    /// `panels × nb` 4-bit blocks, panel-major (empty for an int8 matrix).
    blocks4: Vec<Panel4Block>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_int4() {
            "4-bit"
        } else if self.channel {
            "per channel"
        } else {
            "Q8_0"
        };
        write!(f, "Q8Matrix[{}, {}, {kind}]", self.n, self.k)
    }
}

/// An instruction-set-specific implementation of the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, also the reference the others are tested against.
    Scalar,
    /// x86_64 AVX2 + FMA (`vpmaddubsw` with the sign trick).
    Avx2,
    /// x86_64 AVX-512 F/BW + VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// x86_64 AMX-INT8 (`tdpbsud` on 16 × 16 tiles) with an AVX-512 epilogue, for products of
    /// at least [`AMX_MIN_ROWS`] rows; fewer rows (decoding) run the AVX-512 VNNI kernel.
    /// Gives the same results as [`Kernel::Avx512Vnni`].
    Amx,
    /// wasm32 simd128 (`i32x4.dot_i16x8_s`), chosen at compile time.
    Simd128,
    /// wasm32 relaxed SIMD (`i32x4.relaxed_dot_i8x16_i7x16_add_s` on 7-bit weight planes, exact
    /// on every engine): the build with the cargo feature `relaxed-simd`, which only engines
    /// with relaxed SIMD can load.
    RelaxedSimd,
    /// The same build's single-dot kernel (the stored weight bytes as the dot's unsigned
    /// operand), available only where a probe finds the engine computes that exactly, as V8 does
    /// where it lowers the dot to `vpdpbusd` (AVX-VNNI CPUs).
    RelaxedSimdU8,
}

impl Kernel {
    /// Whether this CPU (or wasm build) can run the kernel (x86 kernels: within the
    /// `BLIPQ_ISA` cap too, [`crate::kernels::isa::ENV_CAP`]).
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                isa::cap() >= Level::V3
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                isa::cap() >= Level::V4
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => isa::cap() >= Level::V4 && amx::available(),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => true,
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd => true,
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimdU8 => wasm_relaxed::unsigned_dot(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this machine can run, fastest last.
    pub fn available() -> Vec<Kernel> {
        [
            Kernel::Scalar,
            Kernel::Simd128,
            Kernel::RelaxedSimd,
            Kernel::RelaxedSimdU8,
            Kernel::Avx2,
            Kernel::Avx512Vnni,
            Kernel::Amx,
        ]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
    }

    /// The fastest available kernel, detected once.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| *Kernel::available().last().unwrap_or(&Kernel::Scalar))
    }
}

impl Q8Matrix {
    /// Embedding lookup: `ids` of any shape -> `[..ids, k]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut out = vec![0f32; flat.len() * self.k];
        for (&id, row) in flat.iter().zip(out.chunks_exact_mut(self.k)) {
            self.dequantize_row(id as usize, row)?;
        }
        let mut dims = ids.dims().to_vec();
        dims.push(self.k);
        Ok(Tensor::from_vec(out, dims, ids.device())?)
    }

    /// `xs [.., k] -> xs W^T [.., n]` with the fastest kernel.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_with_bias(xs, None)
    }

    /// `xs [.., k] -> xs W^T + bias [.., n]` with the fastest kernel. The output starts as copies
    /// of the bias row and the kernels accumulate onto it: no zero fill, no separate bias pass.
    pub fn forward_with_bias(&self, xs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        linear_frame(xs, (self.k, self.n), bias, "INT8 linear", |x, m, y| {
            self.matmul_acc(Kernel::best(), x, m, y)
        })
    }

    /// `y [m, n] = x [m, k] · W^T` with the fastest kernel.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.matmul_with(Kernel::best(), x, m, y)
    }

    /// `y [m, n] = x [m, k] · W^T` with a given kernel (an error if this CPU lacks it).
    pub fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        y.fill(0.0);
        self.matmul_acc(kernel, x, m, y)
    }

    /// `y [m, n] += x [m, k] · W^T` with a given kernel (an error if this CPU lacks it).
    pub fn matmul_acc(&self, kernel: Kernel, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        if !kernel.is_available() {
            return Err(Error::Internal(format!(
                "INT8 kernel {kernel:?} is not supported here"
            )));
        }
        check_product("INT8 matmul", (m, self.k, self.n), x, y)?;
        if m == 0 {
            return Ok(());
        }
        let xq = QuantRows::new(x, m, self.k, self.channel);
        let panels = self.n.div_ceil(PANEL);
        // Few rows (decode, also batched: a few rows per image): the weights dominate, split
        // them by columns, as long as splitting by rows would leave threads idle and columns
        // make more work items (a batched decode step, not one image's vision). Either split
        // computes every output element in the same order, so the result does not depend on it.
        let row_items = m.div_ceil(ROW_CHUNK);
        let column_items = panels.div_ceil(SMALL_M_CHUNK / PANEL);
        if m <= SMALL_M || (row_items < rayon::current_num_threads() && column_items > row_items) {
            // Split by columns. Each work item
            // accumulates onto its own `[m, SMALL_M_CHUNK]` slab (a copy of its part of `y`),
            // copied back into `y` afterwards (tiny).
            let per = SMALL_M_CHUNK / PANEL;
            let chunks = panels.div_ceil(per);
            let mut slabs = vec![0f32; chunks * m * SMALL_M_CHUNK];
            let slab_columns = |i: usize| {
                let c0 = i * SMALL_M_CHUNK;
                (c0, SMALL_M_CHUNK.min(self.n - c0))
            };
            for (i, slab) in slabs.chunks_exact_mut(m * SMALL_M_CHUNK).enumerate() {
                let (c0, w) = slab_columns(i);
                for r in 0..m {
                    slab[r * SMALL_M_CHUNK..r * SMALL_M_CHUNK + w]
                        .copy_from_slice(&y[r * self.n + c0..r * self.n + c0 + w]);
                }
            }
            slabs
                .par_chunks_mut(m * SMALL_M_CHUNK)
                .enumerate()
                .try_for_each(|(i, slab)| {
                    let ps = i * per..((i + 1) * per).min(panels);
                    self.gemm_block(kernel, &xq, (0..m, ps), slab, SMALL_M_CHUNK)
                })?;
            for (i, slab) in slabs.chunks_exact(m * SMALL_M_CHUNK).enumerate() {
                let (c0, w) = slab_columns(i);
                for r in 0..m {
                    y[r * self.n + c0..r * self.n + c0 + w]
                        .copy_from_slice(&slab[r * SMALL_M_CHUNK..r * SMALL_M_CHUNK + w]);
                }
            }
            Ok(())
        } else {
            // Many rows (the vision encoder): split by rows, each item owning its output rows.
            y.par_chunks_mut(ROW_CHUNK * self.n)
                .enumerate()
                .try_for_each(|(i, out)| {
                    let r0 = i * ROW_CHUNK;
                    let rows = r0..r0 + out.len() / self.n;
                    self.gemm_block(kernel, &xq, (rows, 0..panels), out, self.n)
                })
        }
    }

    /// Adds rows `rows` × the columns of `panels` of the product onto `out` (see [`Job`]).
    fn gemm_block(
        &self,
        kernel: Kernel,
        xq: &QuantRows,
        (rows, panels): (Range<usize>, Range<usize>),
        out: &mut [f32],
        ldo: usize,
    ) -> Result<()> {
        let job = Job {
            w: self,
            xq,
            rows,
            panels,
            ldo,
        };
        if job.rows.is_empty() || job.width() == 0 {
            return Ok(());
        }
        // The SIMD kernels store through raw pointers: this check is what keeps them in bounds.
        job.check(out.len())?;
        // `matmul_acc`, the only caller, returned an error for a kernel this CPU lacks.
        debug_assert!(kernel.is_available());
        if self.is_int4() {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for the int8 AMX kernel below (`gemm_amx` expands each 4-bit panel
                // to int8 blocks before its tiles read it).
                Kernel::Amx if job.rows.len() >= AMX_MIN_ROWS => unsafe {
                    amx::gemm_amx(&job, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `matmul_acc` checked `is_available`: AVX-512 F/BW/VNNI were detected at
                // run time (AMX implies them); `job.check` verified the bounds (as below).
                Kernel::Amx | Kernel::Avx512Vnni => unsafe { x86::gemm4_avx512(&job, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, with AVX2 and FMA detected at run time.
                Kernel::Avx2 => unsafe { x86::gemm4_avx2(&job, out) },
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                Kernel::Simd128 => wasm::gemm4_simd128(&job, out),
                #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
                Kernel::RelaxedSimd | Kernel::RelaxedSimdU8 => {
                    wasm_relaxed::gemm4_relaxed(&job, out)
                }
                _ => scalar::gemm4_scalar(&job, out),
            }
            return Ok(());
        }
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_acc` checked `is_available`, i.e. detected AMX-TILE/INT8 (with the
            // tile state granted) and AVX-512 F/BW/VNNI at run time; the bounds as below.
            Kernel::Amx if job.rows.len() >= AMX_MIN_ROWS => unsafe { amx::gemm_amx(&job, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_acc` checked `is_available`, i.e. detected AVX-512 F/BW/VNNI at run
            // time (`Kernel::Amx` implies them, `amx::available`), and `job.check` above verified
            // the bounds of the kernels' contract: rows and panels are in `xq` and `self`, and
            // the output tile in `out`, which is borrowed mutably for the call.
            Kernel::Amx | Kernel::Avx512Vnni => unsafe { x86::gemm_avx512(&job, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, with AVX2 and FMA detected at run time.
            Kernel::Avx2 => unsafe { x86::gemm_avx2(&job, out) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => wasm::gemm_simd128(&job, out),
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd | Kernel::RelaxedSimdU8 => {
                wasm_relaxed::gemm_relaxed(&job, out, kernel == Kernel::RelaxedSimdU8)
            }
            _ => gemm_scalar(&job, out),
        }
        Ok(())
    }
}

/// One kernel call: rows `rows` × the columns of panels `panels` of `xq · w^T`, added onto an
/// output whose element `(r, c)` is `out[(r - rows.start) * ldo + c - panels.start * PANEL]`
/// (columns `>= n` are untouched).
pub(crate) struct Job<'a> {
    pub(crate) w: &'a Q8Matrix,
    pub(crate) xq: &'a QuantRows,
    pub(crate) rows: Range<usize>,
    pub(crate) panels: Range<usize>,
    pub(crate) ldo: usize,
}

/// A tile of a [`Job`]: rows `r .. r + mr` × panels `p .. p + np`, whose first output value is
/// `out[at]`. For a job that [`Job::fits`] its output, `r < rows.end` and the tile's column
/// `col` is below the job's width, so `at = (r - rows.start) * ldo + col` is below
/// `(rows.len() - 1) * ldo + width <= out.len()`, and every row `i < mr` of the tile has its
/// valid columns of each panel within `out[at + i * ldo ..]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileAt {
    pub(crate) r: usize,
    pub(crate) mr: usize,
    pub(crate) p: usize,
    pub(crate) np: usize,
    pub(crate) at: usize,
}

impl Job<'_> {
    /// Output columns the job touches.
    fn width(&self) -> usize {
        (self.w.n.min(self.panels.end * PANEL)).saturating_sub(self.panels.start * PANEL)
    }

    /// Whether the job's rows and panels exist and its output tile lies within `out_len`
    /// values: the bounds contract of every kernel (`gemm_*`).
    fn fits(&self, out_len: usize) -> bool {
        let (w, xq) = (self.w, self.xq);
        let width = self.width();
        !self.rows.is_empty()
            && width > 0
            && width <= self.ldo
            && out_len >= (self.rows.len() - 1) * self.ldo + width
            && self.rows.end * w.k <= xq.qs.len()
            && xq.groups == if w.channel { 1 } else { w.nb }
            && self.rows.end * xq.groups <= xq.d.len()
            && self.rows.end * xq.groups <= xq.corr.len()
            && self.panels.end <= w.n.div_ceil(PANEL)
            && self.panels.end * w.nb <= w.blocks.len().max(w.blocks4.len())
            && (w.blocks4.is_empty() || !w.channel)
    }

    /// [`Job::fits`] as an error naming the tile.
    fn check(&self, out_len: usize) -> Result<()> {
        if self.fits(out_len) {
            return Ok(());
        }
        Err(Error::Internal(format!(
            "INT8 tile rows {:?} panels {:?} does not fit its output ({out_len} values, stride {})",
            self.rows, self.panels, self.ldo
        )))
    }

    /// The contract, re-checked in debug builds at each kernel's entry (once per call), with
    /// the shape invariants of [`Q8Matrix`] the SIMD kernels' pointer arithmetic relies on.
    #[inline]
    pub(crate) fn debug_assert_fits(&self, out_len: usize) {
        let w = self.w;
        debug_assert!(
            w.nb > 0 && w.k == w.nb * BLOCK,
            "k = {} is not whole blocks",
            w.k
        );
        debug_assert_eq!(
            w.blocks.len().max(w.blocks4.len()),
            w.n.div_ceil(PANEL) * w.nb,
            "packed panel count"
        );
        debug_assert!(w.blocks.is_empty() || w.blocks4.is_empty());
        debug_assert!(
            self.fits(out_len),
            "INT8 tile rows {:?} panels {:?} beyond its operands or output ({out_len} values, stride {})",
            self.rows,
            self.panels,
            self.ldo
        );
    }

    /// The job's tiles: groups of up to `np` panels outside (their weights stay in cache while
    /// the rows pass), tiles of up to `mr` rows inside.
    pub(crate) fn tiles(&self, mr: usize, np: usize) -> impl Iterator<Item = TileAt> + '_ {
        let (rows, panels) = (self.rows.clone(), self.panels.clone());
        panels.clone().step_by(np).flat_map(move |p| {
            let col = (p - panels.start) * PANEL;
            let rows = rows.clone();
            rows.clone().step_by(mr).map(move |r| TileAt {
                r,
                mr: (rows.end - r).min(mr),
                p,
                np: (panels.end - p).min(np),
                at: (r - rows.start) * self.ldo + col,
            })
        })
    }
}

/// Number of valid output columns of panel `p` (the last panel may be partial).
#[inline]
pub(crate) fn panel_width(w: &Q8Matrix, p: usize) -> usize {
    PANEL.min(w.n - p * PANEL)
}
