//! f32 matrix products called straight on the `gemm` crate (the kernels behind candle's own CPU
//! matmul), for the two places where going through candle's `Tensor::matmul` costs more than
//! the product: `Linear` layers and the vision encoder's self-attention
//! ([`crate::kernels::attention`]). Where the CPU has a packed kernel ([`crate::kernels::sgemm`],
//! AVX-512) that one runs instead: `Linear` weights are packed at load, attention packs each
//! head's keys and values per call.
//!
//! - **Strides instead of copies.** `gemm` takes any row/column strides, so attention reads each
//!   head's q, k and v straight out of the fused `qkv` projection and writes its context straight
//!   into the `[tokens, hidden]` output: no permutes, no `.contiguous()` copies, no transposes.
//! - **Bias as the starting value.** A `Linear` output starts as copies of the bias row and the
//!   product is accumulated onto it (`gemm`'s `read_dst`), instead of a zero fill plus a separate
//!   broadcast-add pass.
//! - **Threads on every target.** candle sizes gemm's thread pool from the OS CPU count, which is
//!   1 on wasm32 even when a rayon pool of web workers exists; here the split always follows
//!   rayon's pool (natively both are the same).

use candle_core::{Storage, Tensor};
use gemm::Parallelism;

use crate::{Error, Result};

/// A raw f32 matrix view for [`gemm_f32`]: base pointer, row stride and column stride (elements).
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) ptr: *const f32,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

/// `dst [m, n] (row stride ldd) = (accumulate ? dst : 0) + scale · lhs [m, k] · rhs [k, n]`.
///
/// # Safety
/// Every element the three views address for the given sizes (`lhs.ptr + i·rs + j·cs` for
/// `i < m, j < k`; `rhs` likewise for `k × n`; `dst + i·ldd + j` for `i < m, j < n`) must be in
/// bounds of live, initialized allocations, and `dst`'s elements must not be read or written by
/// anyone else meanwhile (nor overlap `lhs` or `rhs`).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    scale: f32,
    parallelism: Parallelism,
) {
    // SAFETY: `gemm::gemm` requires exactly this function's contract (in-bounds strided views,
    // `dst` exclusive and not aliasing the inputs), which the caller upholds; `dst`'s column
    // stride 1 and row stride `ldd` are the view the contract describes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ldd as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Split a product across rayon's pool when it has more than one thread.
fn pool_parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Runs `f` on the f32 values of a contiguous CPU tensor, or returns `None` for any other tensor
/// (another device or dtype, or a strided view), which callers send down candle's generic path.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != candle_core::DType::F32 {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    let values = cpu.as_slice::<f32>().ok()?;
    Some(f(&values[start..end]))
}

/// The starting value of a `Linear` output `[m, n]`: `m` copies of the bias row, or zeros without
/// a bias. Both the f32 and the INT8 products accumulate onto it.
pub(crate) fn bias_rows(bias: Option<&Tensor>, m: usize, n: usize) -> Result<Vec<f32>> {
    let Some(b) = bias else {
        return Ok(vec![0.0; m * n]);
    };
    if b.dims() != [n] {
        return Err(Error::Internal(format!(
            "a linear layer with {n} outputs got a bias of shape {:?}",
            b.dims()
        )));
    }
    let b = b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    let mut y = Vec::with_capacity(m * n);
    for _ in 0..m {
        y.extend_from_slice(&b);
    }
    Ok(y)
}

/// Checks the slices of `y [m, n] (+)= x [m, k] · Wᵀ`: `what` names the product in the error.
pub(crate) fn check_product(
    what: &str,
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    y: &[f32],
) -> Result<()> {
    if x.len() == m * k && y.len() == m * n {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "{what} of [{m}, {k}] by [{n}, {k}]ᵀ into {} values (input has {})",
        y.len(),
        x.len()
    )))
}

/// The frame of a `Linear` on blipq's kernels: checks `xs [.., k]`, starts the output `[.., n]`
/// from the bias rows, and hands `product(x, m, y)` the input's f32 values in place (`m × k`) to
/// accumulate `x Wᵀ` onto `y` (`m × n`). `what` names the layer kind in errors.
pub(crate) fn linear_frame(
    xs: &Tensor,
    (k, n): (usize, usize),
    bias: Option<&Tensor>,
    what: &str,
    product: impl FnOnce(&[f32], usize, &mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    let dims = xs.dims();
    let lead = match dims.split_last() {
        Some((&last, lead)) if last == k => lead,
        _ => {
            return Err(Error::Internal(format!(
                "{what} expects inputs [.., {k}], got {dims:?}"
            )))
        }
    };
    let m = lead.iter().product::<usize>();
    let mut out_dims = lead.to_vec();
    out_dims.push(n);
    let xs = xs.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let mut y = bias_rows(bias, m, n)?;
    {
        // Read the input in place: it is contiguous f32.
        let (storage, layout) = xs.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Internal(format!(
                "{what}: blipq's kernels run on the CPU only"
            )));
        };
        let start = layout.start_offset();
        product(&cpu.as_slice::<f32>()?[start..start + m * k], m, &mut y)?;
    }
    Ok(Tensor::from_vec(y, out_dims, xs.device())?)
}

/// `xs [.., k] · weightᵀ + bias` for an f32 weight `[n, k]` and bias `[n]`, computed by one `gemm`
/// call that starts from the bias. Other devices, dtypes or layouts use candle's matmul.
pub fn linear_f32(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let dims = xs.dims();
    if dims.last() != Some(&k) {
        return Err(Error::Internal(format!(
            "linear layer expects inputs [.., {k}], got {dims:?}"
        )));
    }
    let m = xs.elem_count() / k;
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("non-empty: checked above") = n;
    let xs = xs.contiguous()?;
    let fast = with_cpu_f32(&xs, |x| {
        with_cpu_f32(weight, |w| {
            let mut y = bias_rows(bias, m, n).ok()?;
            debug_assert!(x.len() == m * k && w.len() == n * k && y.len() == m * n);
            // SAFETY: x is [m, k] and w is [n, k], both contiguous and in bounds (their slices
            // hold exactly m·k and n·k values); `wᵀ` is read with row stride 1 and column stride
            // k; y is [m, n] (m·n values, row stride n), a fresh Vec that is ours alone.
            unsafe {
                gemm_f32(
                    (m, n, k),
                    y.as_mut_ptr(),
                    n,
                    true,
                    View {
                        ptr: x.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    View {
                        ptr: w.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                    1.0,
                    pool_parallelism(),
                )
            };
            Some(y)
        })
        .flatten()
    })
    .flatten();
    match fast {
        Some(y) => Ok(Tensor::from_vec(y, out_dims, xs.device())?),
        None => {
            let ys = xs.broadcast_matmul(&weight.t()?)?;
            Ok(match bias {
                Some(b) => ys.broadcast_add(b)?,
                None => ys,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::Device;

    use super::*;

    /// Element-wise `|ours - reference| <= tol · max(|reference|, 1)`, same shapes.
    pub(crate) fn assert_close(ours: &Tensor, reference: &Tensor, tol: f32) -> Result<()> {
        assert_eq!(ours.dims(), reference.dims());
        let a = ours.flatten_all()?.to_vec1::<f32>()?;
        let b = reference.flatten_all()?.to_vec1::<f32>()?;
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
        }
        Ok(())
    }

    #[test]
    fn linear_matches_matmul_plus_bias() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, n) in [
            (vec![577, 768], 2304),
            (vec![2, 5, 64], 33),
            (vec![1, 1, 7], 3),
        ] {
            let k = *shape.last().unwrap();
            let xs = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
            let w = Tensor::randn(0f32, 0.1, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let reference = xs.broadcast_matmul(&w.t()?)?;
            assert_close(&linear_f32(&xs, &w, None)?, &reference, 1e-4)?;
            let with_bias = reference.broadcast_add(&b)?;
            assert_close(&linear_f32(&xs, &w, Some(&b))?, &with_bias, 1e-4)?;
        }
        // A strided input is made contiguous; a wrong width is an error.
        let xs = Tensor::randn(0f32, 1.0, (8, 6), &dev)?.t()?;
        let w = Tensor::randn(0f32, 1.0, (4, 8), &dev)?;
        assert_close(&linear_f32(&xs, &w, None)?, &xs.matmul(&w.t()?)?, 1e-4)?;
        assert!(linear_f32(&xs, &w.narrow(1, 0, 5)?, None).is_err());
        Ok(())
    }
}
