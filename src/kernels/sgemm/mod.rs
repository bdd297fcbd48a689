//! f32 matrix products for `Linear` layers whose weight is packed once, at load, into panels of
//! [`PANEL`] output columns, with register-tiled kernels chosen at run time (AVX-512 where the CPU
//! has it; simd128, or relaxed SIMD in that wasm build; a portable reference in tests).
//!
//! Where no packed kernel runs (x86 CPUs without AVX-512, other CPUs), the matrix stays row-major and
//! the product is the `gemm` crate's ([`crate::kernels::matmul::linear_f32`]), so a binary built on
//! one machine runs everywhere and takes the widest kernel the CPU it runs on has.
//!
//! Layout: panel `p` holds columns `16 p .. 16 p + 16` of `y = x Wᵀ` (rows `16 p + c` of `W
//! [n, k]`) as `k` rows of 16 f32, `panel[p][kk][c] = W[16 p + c, kk]`, 64-byte aligned, the last
//! panel zero-padded. One panel row is one 512-bit vector: a kernel step loads it once and
//! multiplies it by one broadcast activation per tile row, so every weight loaded feeds every row
//! of the tile (up to [`MR`]), and a matrix-vector product (decode) streams the weights once, in
//! order.
//!
//! Work is split across rayon's pool by groups of [`GROUP`] panels: each group's weights are read
//! from memory once, whatever the number of rows.
//!
//! F16 and BF16 weights keep their stored precision in the same panel layout (32-byte rows,
//! [`F16Row`], [`Bf16Row`]) where the kernel widens them as it loads ([`Kernel::holds_half`]:
//! AVX-512 and the reference): half the memory, and half the bytes a decode step streams, with
//! the f32 matrix's results bit for bit (widening is exact; the FMAs are the same). The other
//! kernels get them widened to f32 at load.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::isa;
use crate::kernels::matmul::{check_product, linear_f32, linear_frame};
use crate::{Error, Result};

/// Output columns per packed panel: one 512-bit vector of f32 lanes.
pub const PANEL: usize = 16;
/// Most rows per tile of the large-`m` kernels (`MR × 2` panels of accumulators).
pub const MR: usize = 12;
/// Up to this many rows the tiles are `m × 4` panels over the whole `k` (decode, beams).
const SMALL_M: usize = 4;
/// Panels per parallel work item.
const GROUP: usize = 8;
/// k values per pass of the large-`m` kernels: a tile's activations (`MR × KC` f32) stay in L1
/// and a panel pair's weights (`2 × KC` rows) in L2 while every row tile of the group passes.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 256;

/// One k-row of one panel.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct PanelRow(pub(crate) [f32; PANEL]);

/// One k-row of one panel of an F16 weight: the bits of 16 IEEE half-precision values.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct F16Row(pub(crate) [u16; PANEL]);

/// One k-row of one panel of a BF16 weight: the bits of 16 bfloat16 values.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct Bf16Row(pub(crate) [u16; PANEL]);

/// A panel row as the kernels store it: f32, or the weight's own half precision, which the
/// kernels that hold it ([`Kernel::holds_half`]) widen to f32 as they load it. Widening is exact, so a half-precision matrix gives the
/// same bits as the f32 matrix of its values, with half the bytes to hold and to stream.
pub(crate) trait PackedRow: Copy + Send + Sync + 'static {
    /// The stored element (`f32`, or a half-precision value's bits).
    type Elem: Copy;
    /// A row of zeros (the last panel's padding).
    const ZERO: Self;
    /// Column `c`'s value, widened to f32.
    fn get(&self, c: usize) -> f32;
    /// Sets column `c`.
    fn set(&mut self, c: usize, v: Self::Elem);
    /// Runs one work item with `kernel`.
    ///
    /// # Safety
    /// The CPU must have `kernel`, `kernel` must read this row type (f32 rows: every packed
    /// kernel; half-precision rows: [`Kernel::holds_half`]), and `b`
    /// must satisfy [`Block`]'s contract.
    unsafe fn run(b: &Block<'_, Self>, kernel: Kernel);
}

impl PackedRow for PanelRow {
    type Elem = f32;
    const ZERO: Self = PanelRow([0.0; PANEL]);
    #[inline(always)]
    fn get(&self, c: usize) -> f32 {
        self.0[c]
    }
    fn set(&mut self, c: usize, v: f32) {
        self.0[c] = v;
    }
    unsafe fn run(b: &Block<'_, Self>, kernel: Kernel) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that the CPU has AVX-512 F; the contract is the
            // caller's.
            Kernel::Avx512 => unsafe { x86::block_avx512(b) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            // SAFETY: the contract is the caller's (simd128 is this build's baseline).
            Kernel::Simd128 => unsafe { wasm::block_simd128(b) },
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            // SAFETY: the contract is the caller's; only engines with relaxed SIMD load this build.
            Kernel::RelaxedSimd => unsafe { wasm::block_relaxed(b) },
            // SAFETY: the contract is the caller's.
            _ => unsafe { block_scalar(b) },
        }
    }
}

/// The [`PackedRow`] impl of a half-precision row type (`$ty` the `half` crate's type of its
/// values): AVX-512 where the CPU has it (it widens each row as it loads it), else the reference.
macro_rules! half_row {
    ($row:ident, $ty:ty) => {
        impl PackedRow for $row {
            type Elem = u16;
            const ZERO: Self = $row([0; PANEL]);
            #[inline(always)]
            fn get(&self, c: usize) -> f32 {
                <$ty>::from_bits(self.0[c]).to_f32()
            }
            fn set(&mut self, c: usize, v: u16) {
                self.0[c] = v;
            }
            unsafe fn run(b: &Block<'_, Self>, kernel: Kernel) {
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the caller checked that the CPU has AVX-512 F; the contract is
                    // the caller's.
                    Kernel::Avx512 => unsafe { x86::block_avx512(b) },
                    // SAFETY: the contract is the caller's.
                    _ => unsafe { block_scalar(b) },
                }
            }
        }
    };
}
half_row!(F16Row, half::f16);
half_row!(Bf16Row, half::bf16);

/// A kernel for the f32 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust on the packed layout: the reference the SIMD kernel is tested against.
    Scalar,
    /// The `gemm` crate on the row-major matrix (AVX2/FMA, NEON or simd128, as compiled).
    Gemm,
    /// x86_64 AVX-512 F on the packed layout.
    Avx512,
    /// wasm32 simd128 on the packed layout (multiply, then add).
    Simd128,
    /// wasm32 relaxed SIMD on the packed layout (`f32x4.relaxed_madd`): the `relaxed-simd` build.
    RelaxedSimd,
}

impl Kernel {
    /// Whether this CPU (or wasm build) can run the kernel (AVX-512: within the `BLIPQ_ISA` cap
    /// too, [`crate::kernels::isa::ENV_CAP`]; the `gemm` crate makes its own choice).
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar | Kernel::Gemm => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => isa::cap() >= isa::Level::V4 && is_x86_feature_detected!("avx512f"),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128 => true,
            #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
            Kernel::RelaxedSimd => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel, available here or not.
    pub const ALL: [Kernel; 5] = [
        Kernel::Scalar,
        Kernel::Gemm,
        Kernel::Avx512,
        Kernel::Simd128,
        Kernel::RelaxedSimd,
    ];

    /// Whether the kernel reads the packed layout (else the row-major one).
    pub fn is_packed(self) -> bool {
        !matches!(self, Kernel::Gemm)
    }

    /// Whether the kernel reads its activations from [`pack_tiles`]' layout when a product has
    /// more than a few rows (else straight from the row-major `x`).
    pub(crate) fn takes_tiles(self) -> bool {
        self == Kernel::Avx512
    }

    /// Whether the kernel reads F16 and BF16 weights as they are stored (widening each panel row
    /// to f32 as it loads it); the others hold them widened to f32, twice the memory.
    pub fn holds_half(self) -> bool {
        matches!(self, Kernel::Scalar | Kernel::Avx512)
    }

    /// The kernel `Linear` layers use: AVX-512 where the CPU has it, relaxed SIMD or simd128 in
    /// wasm, else the `gemm` crate; detected once. `BLIPQ_F32_KERNEL=gemm` forces the latter (to
    /// compare them).
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("BLIPQ_F32_KERNEL").ok();
            if forced.as_deref() == Some("gemm") {
                return Kernel::Gemm;
            }
            [Kernel::Avx512, Kernel::RelaxedSimd, Kernel::Simd128]
                .into_iter()
                .find(|k| k.is_available())
                .unwrap_or(Kernel::Gemm)
        })
    }
}

/// A weight matrix `[n, k]` multiplied in f32, in the layout its kernel reads: f32, or F16/BF16
/// as stored where the kernel widens it as it loads ([`Kernel::holds_half`]), with the same results.
#[derive(Clone)]
pub struct F32Matrix {
    n: usize,
    k: usize,
    kernel: Kernel,
    weights: Layout,
}

#[derive(Clone)]
enum Layout {
    /// Row-major `[n, k]`, for the `gemm` crate.
    Rows(Tensor),
    /// `panels × k` rows, panel-major (see the module documentation).
    Panels(Vec<PanelRow>),
    /// The same, of F16 values.
    F16Panels(Vec<F16Row>),
    /// The same, of BF16 values.
    Bf16Panels(Vec<Bf16Row>),
}

impl std::fmt::Debug for F32Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "F32Matrix[{}, {}] ({:?})", self.n, self.k, self.kernel)
    }
}

/// A raw pointer to an output that parallel work items share, each writing its own elements only
/// (columns of a product, heads of attention).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: raw pointers are `!Send` only as a conservative default. A `SharedOut` points into an
// output its creator borrows mutably for the whole parallel loop (`matmul_acc`,
// `self_attention`: each joins every item before returning or reading it), and each item writes
// a disjoint set of elements.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: items sharing a `&SharedOut` only copy the pointer and write disjoint
// elements through it.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(ptr: *mut f32) -> Self {
        Self(ptr)
    }

    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not its field).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

impl F32Matrix {
    /// Takes a `[n, k]` float tensor, packed for [`Kernel::best`].
    pub fn new(weight: Tensor) -> Result<Self> {
        Self::with_kernel(weight, Kernel::best())
    }

    /// Takes a `[n, k]` float tensor in the layout `kernel` reads (an error if this CPU lacks
    /// it): F16 and BF16 stay half precision where the kernel reads them so, anything else
    /// becomes f32.
    pub fn with_kernel(weight: Tensor, kernel: Kernel) -> Result<Self> {
        if !kernel.is_available() {
            return Err(Error::Internal(format!(
                "f32 kernel {kernel:?} is not supported here"
            )));
        }
        let (n, k) = weight.dims2()?;
        if n == 0 || k == 0 {
            return Err(Error::InvalidArgument(format!(
                "f32 weight [{n}, {k}]: sizes must be non-zero"
            )));
        }
        let weights = match weight.dtype() {
            DType::F16 if kernel.holds_half() => {
                Layout::F16Panels(half_panels(&weight, n, k, half::f16::to_bits)?)
            }
            DType::BF16 if kernel.holds_half() => {
                Layout::Bf16Panels(half_panels(&weight, n, k, half::bf16::to_bits)?)
            }
            _ => Self::f32_layout(weight, n, k, kernel)?,
        };
        Ok(Self {
            n,
            k,
            kernel,
            weights,
        })
    }

    /// The f32 layout `kernel` reads.
    fn f32_layout(weight: Tensor, n: usize, k: usize, kernel: Kernel) -> Result<Layout> {
        let weight = weight.to_dtype(DType::F32)?;
        Ok(if kernel.is_packed() {
            let rows = weight.flatten_all()?.to_vec1::<f32>()?;
            let mut packed = Vec::new();
            pack_panels_into(&mut packed, n, k, |c, kk| rows[c * k + kk]);
            Layout::Panels(packed)
        } else {
            Layout::Rows(weight.contiguous()?)
        })
    }

    /// Output size (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input size (weight columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel its products use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Bytes held in memory.
    pub fn size_in_bytes(&self) -> usize {
        match &self.weights {
            Layout::Rows(t) => t.elem_count() * 4,
            Layout::Panels(p) => std::mem::size_of_val(p.as_slice()),
            Layout::F16Panels(p) => std::mem::size_of_val(p.as_slice()),
            Layout::Bf16Panels(p) => std::mem::size_of_val(p.as_slice()),
        }
    }

    /// Embedding lookup: `ids` of any shape -> `[..ids, k]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.k);
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?;
        match &self.weights {
            Layout::Rows(t) => Ok(t.index_select(&flat, 0)?.reshape(dims)?),
            Layout::Panels(p) => self.rows_of(p, &flat.to_vec1()?, dims, ids.device()),
            Layout::F16Panels(p) => self.rows_of(p, &flat.to_vec1()?, dims, ids.device()),
            Layout::Bf16Panels(p) => self.rows_of(p, &flat.to_vec1()?, dims, ids.device()),
        }
    }

    /// Rows `ids` of the packed matrix, as a tensor of shape `dims`.
    fn rows_of<R: PackedRow>(
        &self,
        panels: &[R],
        ids: &[u32],
        dims: Vec<usize>,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.k];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            let id = id as usize;
            if id >= self.n {
                return Err(Error::Internal(format!(
                    "id {id} is outside an embedding table of {} rows",
                    self.n
                )));
            }
            let panel = &panels[(id / PANEL) * self.k..][..self.k];
            for (o, pr) in row.iter_mut().zip(panel) {
                *o = pr.get(id % PANEL);
            }
        }
        Ok(Tensor::from_vec(out, dims, device)?)
    }

    /// `xs [.., k] -> xs Wᵀ + bias [.., n]`. The output starts as copies of the bias row and the
    /// kernels accumulate onto it.
    pub fn forward_with_bias(&self, xs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if let Layout::Rows(w) = &self.weights {
            return linear_f32(xs, w, bias);
        }
        linear_frame(xs, (self.k, self.n), bias, "linear layer", |x, m, y| {
            self.matmul_acc(x, m, y)
        })
    }

    /// `y [m, n] += x [m, k] · Wᵀ` with the matrix's kernel.
    pub fn matmul_acc(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        check_product("f32 matmul", (m, self.k, self.n), x, y)?;
        if m == 0 {
            return Ok(());
        }
        match &self.weights {
            Layout::Panels(p) => self.product(p, x, m, y),
            Layout::F16Panels(p) => self.product(p, x, m, y),
            Layout::Bf16Panels(p) => self.product(p, x, m, y),
            Layout::Rows(w) => {
                let xs = Tensor::from_slice(x, (m, self.k), w.device())?;
                let ys = linear_f32(&xs, w, None)?.flatten_all()?.to_vec1::<f32>()?;
                for (y, v) in y.iter_mut().zip(ys) {
                    *y += v;
                }
            }
        }
        Ok(())
    }

    /// [`Self::matmul_acc`] on the packed panels, `m > 0` and the sizes checked.
    fn product<R: PackedRow>(&self, panels: &[R], x: &[f32], m: usize, y: &mut [f32]) {
        let groups = self.n.div_ceil(PANEL).div_ceil(GROUP);
        let a_tiles = (m > SMALL_M && self.kernel.takes_tiles()).then(|| pack_tiles(x, m, self.k));
        let out = SharedOut(y.as_mut_ptr());
        let block = |g: usize| {
            let tile = Block {
                x,
                m,
                k: self.k,
                n: self.n,
                panels,
                p0: g * GROUP,
                p1: ((g + 1) * GROUP).min(self.n.div_ceil(PANEL)),
                out: out.ptr(),
                ldo: self.n,
                a_tiles: a_tiles.as_deref(),
            };
            // SAFETY: `tile` satisfies `Block`'s contract: `x` holds `m × k` values (checked
            // above), `panels` is this matrix's packing of `[n, k]` (`ceil(n / 16) × k` rows),
            // `p0 < p1 <= ceil(n / 16)`, and `out` is `y`, `m × n` values (checked above),
            // borrowed mutably by this function for the whole loop; each group writes only its
            // own columns `16 p0 .. min(16 p1, n)`, so no two items touch the same element; and
            // `a_tiles`, when given, is `pack_tiles` of `x`.
            // `R` is f32, or half precision only where the kernel holds it so (`with_kernel`).
            unsafe { R::run(&tile, self.kernel) }
        };
        if rayon::current_num_threads() > 1 && groups > 1 {
            (0..groups).into_par_iter().for_each(block);
        } else {
            (0..groups).for_each(block);
        }
    }
}

/// A half-precision `[n, k]` weight's bits (`bits` of each value) packed into panels.
fn half_panels<T: candle_core::WithDType, R: PackedRow<Elem = u16>>(
    weight: &Tensor,
    n: usize,
    k: usize,
    bits: fn(T) -> u16,
) -> Result<Vec<R>> {
    let values = weight.flatten_all()?.to_vec1::<T>()?;
    let mut packed = Vec::new();
    pack_panels_into(&mut packed, n, k, |c, kk| bits(values[c * k + kk]));
    Ok(packed)
}

/// `x [m, k]` in tiles of [`MR`] rows, k-major inside a tile (`a[t][kk][i] = x[MR t + i, kk]`),
/// the last tile's missing rows zero: a kernel broadcasts a tile's activations from one pointer.
pub(crate) fn pack_tiles(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut a = Vec::new();
    pack_tiles_into(&mut a, x, m, k);
    a
}

/// [`pack_tiles`] into a reused buffer.
fn pack_tiles_into(a: &mut Vec<f32>, x: &[f32], m: usize, k: usize) {
    a.clear();
    a.resize(m.div_ceil(MR) * k * MR, 0.0);
    if k == 0 {
        return;
    }
    for (tile, rows) in a.chunks_exact_mut(k * MR).zip(x[..m * k].chunks(k * MR)) {
        let (tile, _) = tile.as_chunks_mut::<MR>();
        for (i, row) in rows.chunks_exact(k).enumerate() {
            for (t, &v) in tile.iter_mut().zip(row) {
                t[i] = v;
            }
        }
    }
}

/// Resizes `panels` to `ceil(n / PANEL) × k` zero rows (reusing its allocation) and calls
/// `fill(c0, width, panel)` for each panel: its first column `c0`, its `width` valid columns
/// (the last panel's may be fewer than [`PANEL`]) and its `k` rows.
fn fill_panels<R: PackedRow>(
    panels: &mut Vec<R>,
    n: usize,
    k: usize,
    mut fill: impl FnMut(usize, usize, &mut [R]),
) {
    panels.clear();
    panels.resize(n.div_ceil(PANEL) * k, R::ZERO);
    if k == 0 {
        return;
    }
    for (p, panel) in panels.chunks_exact_mut(k).enumerate() {
        fill(p * PANEL, PANEL.min(n - p * PANEL), panel);
    }
}

/// Packs `W [n, k]` whose row `c` is `src[c · stride ..][..k]` into panels, reusing `panels`'
/// allocation (attention's keys, read from the fused projection's rows).
///
/// `src` must hold the `n` rows (`(n - 1) · stride + k` values when `n > 0`).
pub(crate) fn pack_panels_from_rows(
    panels: &mut Vec<PanelRow>,
    src: &[f32],
    stride: usize,
    n: usize,
    k: usize,
) {
    fill_panels(panels, n, k, |c0, width, panel| {
        let src = &src[c0 * stride..][..(width - 1) * stride + k];
        // A panel row at a time (its values from `width` rows of `src`), so the writes are
        // whole rows: a transposition of a 16 × k block that stays in L1.
        for (kk, pr) in panel.iter_mut().enumerate() {
            for (c, v) in pr.0[..width].iter_mut().enumerate() {
                *v = src[c * stride + kk];
            }
        }
    });
}

/// Packs `W [n, k]` given transposed, `W[c, kk] = src[kk · stride + c]`, into panels, reusing
/// `panels`' allocation: each panel row is a run of consecutive values of `src` (attention's
/// values, the "weights" of `p · v`).
///
/// `src` must hold the `k` runs (`(k - 1) · stride + n` values when `k > 0`).
pub(crate) fn pack_panels_from_columns(
    panels: &mut Vec<PanelRow>,
    src: &[f32],
    stride: usize,
    n: usize,
    k: usize,
) {
    fill_panels(panels, n, k, |c0, width, panel| {
        for (kk, pr) in panel.iter_mut().enumerate() {
            let run = &src[kk * stride + c0..];
            if width == PANEL {
                pr.0 = run[..PANEL].try_into().expect("a panel's width");
            } else {
                pr.0[..width].copy_from_slice(&run[..width]);
            }
        }
    });
}

/// Packs `W [n, k]`, given element by element (`w(c, kk) = W[c, kk]`), into panels, reusing
/// `panels`' allocation (the weight matrices, at load).
pub(crate) fn pack_panels_into<R: PackedRow>(
    panels: &mut Vec<R>,
    n: usize,
    k: usize,
    w: impl Fn(usize, usize) -> R::Elem,
) {
    // Column by column within a panel: `w` is read along k, its rows' order in memory.
    fill_panels(panels, n, k, |c0, width, panel| {
        for c in 0..width {
            for (kk, pr) in panel.iter_mut().enumerate() {
                pr.set(c, w(c0 + c, kk));
            }
        }
    });
}

/// Reusable buffers of [`product_serial`].
#[derive(Default)]
pub(crate) struct Scratch {
    tiles: Vec<f32>,
}

/// The activations of a [`product_serial`].
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// `x [m, k]`, row-major.
    Rows(&'a [f32]),
    /// `x` already in [`pack_tiles`]' layout (`ceil(m / MR) × k × MR` values; the values of rows
    /// at or beyond `m` do not matter): only for kernels that [`Kernel::takes_tiles`].
    Tiles(&'a [f32]),
}

/// `out [m, n] (row stride ldo) += x [m, k] · Wᵀ` on the calling thread, `W` given as panels
/// ([`pack_panels_into`]'s layout, e.g. from [`pack_panels_from_rows`]): attention's products,
/// one (image, head) per rayon task.
///
/// # Safety
/// `out` must be valid for reads and writes of `m` rows of `n` f32 at row stride `ldo >= n`,
/// with no other access to those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product_serial(
    kernel: Kernel,
    x: Lhs<'_>,
    (m, k, n): (usize, usize, usize),
    panels: &[PanelRow],
    out: *mut f32,
    ldo: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    let inputs_fit = match x {
        Lhs::Rows(x) => x.len() == m * k,
        Lhs::Tiles(a) => kernel.takes_tiles() && a.len() == m.div_ceil(MR) * k * MR,
    };
    if !inputs_fit || panels.len() != n.div_ceil(PANEL) * k || ldo < n || !kernel.is_packed() {
        return Err(Error::Internal(format!(
            "a packed f32 product [{m}, {k}] · [{n}, {k}]ᵀ got {} inputs{}, {} panel rows, \
             stride {ldo} ({kernel:?})",
            match x {
                Lhs::Rows(x) | Lhs::Tiles(x) => x.len(),
            },
            if matches!(x, Lhs::Tiles(_)) {
                " as tiles"
            } else {
                ""
            },
            panels.len()
        )));
    }
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let (x, a_tiles) = match x {
        Lhs::Rows(x) if m > SMALL_M && kernel.takes_tiles() => {
            pack_tiles_into(&mut scratch.tiles, x, m, k);
            (x, Some(scratch.tiles.as_slice()))
        }
        Lhs::Rows(x) => (x, None),
        Lhs::Tiles(a) => (&[][..], Some(a)),
    };
    let block = Block {
        x,
        m,
        k,
        n,
        panels,
        p0: 0,
        p1: n.div_ceil(PANEL),
        out,
        ldo,
        a_tiles,
    };
    if !kernel.is_available() {
        return Err(Error::Internal(format!(
            "f32 kernel {kernel:?} is not supported here"
        )));
    }
    // SAFETY: the sizes of `x` (or of its tiles), `panels` and `ldo` were checked above, the
    // output's are the caller's contract (all columns `0 .. n` are this call's), the CPU has the
    // kernel, and `a_tiles`, when given, is `pack_tiles` of `x` or the caller's tiles (then `x`
    // is empty and, the kernel taking tiles, unread); the rows are f32.
    unsafe { PanelRow::run(&block, kernel) };
    Ok(())
}

/// One work item: columns of panels `p0 .. p1` of `y [m, n] += x [m, k] · Wᵀ`.
///
/// Contract (`run`'s safety): `x` holds `m × k` values (or none when `a_tiles` is given, which
/// only kernels that [`Kernel::takes_tiles`] get), `panels` holds `ceil(n / PANEL) × k`
/// rows, `p0 < p1 <= ceil(n / PANEL)`, and `out` is valid for reads and writes of `m` rows of
/// `n` f32 at row stride `ldo >= n`, of which columns `PANEL · p0 .. min(PANEL · p1, n)` are this item's alone;
/// `a_tiles`, when given, is [`pack_tiles`] of `x`.
pub(crate) struct Block<'a, R = PanelRow> {
    pub(crate) x: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) panels: &'a [R],
    pub(crate) p0: usize,
    pub(crate) p1: usize,
    pub(crate) out: *mut f32,
    /// The output's row stride (`>= n`).
    pub(crate) ldo: usize,
    /// For more than [`SMALL_M`] rows (the AVX-512 kernel): `x` packed in tiles of [`MR`] rows,
    /// `a[t][kk][i] = x[MR t + i, kk]` ([`pack_tiles`]; the kernel neither stores nor needs the
    /// results of rows beyond `m`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) a_tiles: Option<&'a [f32]>,
}

impl<R> Block<'_, R> {
    /// Checks the contract's sizes (debug builds; once per item).
    #[inline]
    pub(crate) fn debug_assert_fits(&self) {
        debug_assert!(self.a_tiles.is_some() || self.x.len() == self.m * self.k);
        debug_assert!(self
            .a_tiles
            .is_none_or(|a| a.len() == self.m.div_ceil(MR) * self.k * MR));
        debug_assert_eq!(self.panels.len(), self.n.div_ceil(PANEL) * self.k);
        debug_assert!(self.p0 < self.p1 && self.p1 <= self.n.div_ceil(PANEL));
        debug_assert!(self.ldo >= self.n);
    }

    /// Valid output columns of panel `p`.
    #[inline]
    pub(crate) fn width(&self, p: usize) -> usize {
        PANEL.min(self.n - p * PANEL)
    }
}

/// The reference: `out[r, c] += Σ_kk x[r, kk] · W[c, kk]`, summed in `kk` order from `out`'s
/// value, like the SIMD kernels (which fuse each step, so they differ by rounding only).
///
/// # Safety
/// `b` must satisfy [`Block`]'s contract.
unsafe fn block_scalar<R: PackedRow>(b: &Block<'_, R>) {
    b.debug_assert_fits();
    for r in 0..b.m {
        let x = &b.x[r * b.k..(r + 1) * b.k];
        for p in b.p0..b.p1 {
            let panel = &b.panels[p * b.k..(p + 1) * b.k];
            for c in 0..b.width(p) {
                // SAFETY: `r < m` and `PANEL p + c < n`: an element of this item's columns of
                // the `m × n` output (contract), written by this item alone.
                let o = unsafe { &mut *b.out.add(r * b.ldo + p * PANEL + c) };
                let mut acc = *o;
                for (xv, pr) in x.iter().zip(panel) {
                    acc += xv * pr.get(c);
                }
                *o = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// The packed table's rows are the weight's rows (a tied embedding reads them), and sizes
    /// that do not fit are errors.
    #[test]
    fn embedding_rows_and_errors() -> Result<()> {
        let dev = Device::Cpu;
        let (n, k) = (37, 5);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.25 - 7.0).collect();
        let wt = Tensor::from_vec(w.clone(), (n, k), &dev)?;
        let ids = Tensor::new(&[[0u32, 36], [17, 16]], &dev)?;
        for kernel in [Kernel::Scalar, Kernel::Gemm] {
            let m = F32Matrix::with_kernel(wt.clone(), kernel)?;
            let e = m.embedding(&ids)?;
            assert_eq!(e.dims(), [2, 2, k]);
            let e = e.flatten_all()?.to_vec1::<f32>()?;
            for (i, id) in [0usize, 36, 17, 16].into_iter().enumerate() {
                assert_eq!(&e[i * k..(i + 1) * k], &w[id * k..(id + 1) * k]);
            }
            assert!(m
                .matmul_acc(&[0.0; 4], 1, &mut [0.0; 37])
                .unwrap_err()
                .to_string()
                .contains("[1, 5]"));
        }
        let packed = F32Matrix::with_kernel(wt, Kernel::Scalar)?;
        assert!(packed.embedding(&Tensor::new(&[37u32], &dev)?).is_err());
        assert!(F32Matrix::new(Tensor::zeros((0, 3), DType::F32, &dev)?).is_err());
        Ok(())
    }

    /// The two packers of rows read straight from memory give [`pack_panels_into`]'s panels, on
    /// sizes with a partial last panel, rows of a longer stride, and nothing to pack.
    #[test]
    fn strided_packers_equal_the_element_packer() {
        for (n, k, stride) in [(37, 5, 9), (16, 64, 64), (3, 1, 7), (0, 4, 4), (5, 0, 3)] {
            let src: Vec<f32> = (0..n.max(k) * stride + stride)
                .map(|i| (i % 97) as f32 * 0.5 - 20.0)
                .collect();
            let bits = |p: &[PanelRow]| -> Vec<u32> {
                p.iter().flat_map(|r| r.0.map(f32::to_bits)).collect()
            };
            let (mut want, mut got) = (Vec::new(), vec![PanelRow([1.0; PANEL]); 3]);
            pack_panels_into(&mut want, n, k, |c, kk| src[c * stride + kk]);
            pack_panels_from_rows(&mut got, &src, stride, n, k);
            assert_eq!(bits(&got), bits(&want), "rows {n}x{k}, stride {stride}");
            pack_panels_into(&mut want, n, k, |c, kk| src[kk * stride + c]);
            pack_panels_from_columns(&mut got, &src, stride, n, k);
            assert_eq!(bits(&got), bits(&want), "columns {n}x{k}, stride {stride}");
        }
    }

    /// Activations given as tiles give the bits of the same activations given as rows, whatever
    /// the tile holds beyond the last row; tiles of the wrong size, or for a kernel that reads
    /// rows, are errors.
    #[test]
    fn product_serial_takes_rows_or_tiles() -> Result<()> {
        let (k, n) = (37, 21);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 31) as f32 - 15.0) / 8.0)
            .collect();
        let mut panels = Vec::new();
        pack_panels_from_rows(&mut panels, &w, k, n, k);
        for m in [1, 5, 12, 13, 30] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 5 % 23) as f32 - 11.0) / 4.0)
                .collect();
            let mut tiles = pack_tiles(&x, m, k);
            // Rows beyond `m` in the last tile: not zeros, and not read into any output.
            let last = (m.div_ceil(MR) - 1) * k * MR;
            for kk in 0..k {
                for i in m % MR..MR {
                    if m % MR != 0 {
                        tiles[last + kk * MR + i] = 1e30;
                    }
                }
            }
            for kernel in Kernel::ALL {
                if !kernel.is_available() || !kernel.is_packed() {
                    continue;
                }
                let mut scratch = Scratch::default();
                let mut product = |x: Lhs<'_>| {
                    let mut out = vec![0.5f32; m * n];
                    // SAFETY: `out` is `[m, n]`, row stride n, borrowed mutably.
                    unsafe {
                        product_serial(
                            kernel,
                            x,
                            (m, k, n),
                            &panels,
                            out.as_mut_ptr(),
                            n,
                            &mut scratch,
                        )
                    }
                    .map(|()| out)
                };
                let rows = product(Lhs::Rows(&x))?;
                let tiled = product(Lhs::Tiles(&tiles));
                if kernel.takes_tiles() {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&tiled?), bits(&rows), "{kernel:?}, m = {m}");
                } else {
                    assert!(tiled.unwrap_err().to_string().contains("as tiles"));
                }
                let short = product(Lhs::Tiles(&tiles[1..]));
                assert!(short.is_err());
            }
        }
        Ok(())
    }
}
