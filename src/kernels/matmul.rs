//! f32 matrix products called straight on the `gemm` crate (the kernels behind candle's own CPU
//! matmul), for the two places where going through candle's `Tensor::matmul` costs more than
//! the product: `Linear` layers and the vision encoder's self-attention. Where the CPU has a
//! packed kernel ([`crate::kernels::sgemm`], AVX-512) that one runs instead: `Linear` weights are
//! packed at load, attention packs each head's keys and values per call.
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
use rayon::prelude::*;

use crate::kernels::ops::softmax_in_place;
use crate::kernels::sgemm::{self, SharedOut};
use crate::{Error, Result};

/// A raw f32 matrix view for [`gemm_f32`]: base pointer, row stride and column stride (elements).
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst [m, n] (row stride ldd) = (accumulate ? dst : 0) + scale · lhs [m, k] · rhs [k, n]`.
///
/// # Safety
/// Every element the three views address for the given sizes (`lhs.ptr + i·rs + j·cs` for
/// `i < m, j < k`; `rhs` likewise for `k × n`; `dst + i·ldd + j` for `i < m, j < n`) must be in
/// bounds of live, initialized allocations, and `dst`'s elements must not be read or written by
/// anyone else meanwhile (nor overlap `lhs` or `rhs`).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
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
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
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

/// Full self-attention of the vision encoder, from the fused projection's output:
/// `qkv [b, n, 3h]` (q | k | v, each `heads × head_dim`) → `softmax(scale · q kᵀ) v` as
/// `[b, n, h]`, the heads side by side, ready for the output projection.
///
/// One rayon task per (image, head): a product for the `[n, n]` scores (kept in a per-thread
/// buffer that fits L2 at n = 577), an in-place softmax per row, and a product writing the head's
/// `head_dim` columns of the output. The products run on the packed f32 kernel where the CPU has
/// one ([`crate::kernels::sgemm`]), else on `gemm` with strides. Other devices, dtypes or layouts
/// use candle's ops.
pub fn self_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, n, h3) = qkv.dims3()?;
    let h = h3 / 3;
    if h3 % 3 != 0 || heads == 0 || h % heads != 0 {
        return Err(Error::Internal(format!(
            "self-attention over {heads} heads cannot split a fused qkv of width {h3}"
        )));
    }
    let d = h / heads;
    let packed = sgemm::Kernel::best();
    let fast = with_cpu_f32(qkv, |qkv| {
        debug_assert_eq!(qkv.len(), b * n * h3);
        if packed.is_packed() {
            attention_packed(packed, qkv, (b, n, heads, d), scale as f32)
        } else {
            Ok(attention_gemm(qkv, (b, n, heads, d), scale))
        }
    })
    .transpose()?;
    match fast {
        Some(out) => Ok(Tensor::from_vec(out, (b, n, h), qkv.device())?),
        None => {
            let qkv = qkv.reshape((b, n, 3, heads, d))?.permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)?.contiguous()? * scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
            Ok(probs
                .matmul(&v)?
                .permute((0, 2, 1, 3))?
                .reshape((b, n, h))?)
        }
    }
}

/// [`self_attention`] on the `gemm` crate (CPUs without a packed kernel, wasm32).
fn attention_gemm(
    qkv: &[f32],
    (b, n, heads, d): (usize, usize, usize, usize),
    scale: f64,
) -> Vec<f32> {
    let (h, h3) = (heads * d, 3 * heads * d);
    let mut out = vec![0f32; b * n * h];
    let shared = SharedOut::new(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |scores, task| {
            let (img, head) = (task / heads, task % heads);
            let base = img * n * h3 + head * d;
            let (q, k, v) = (&qkv[base..], &qkv[base + h..], &qkv[base + 2 * h..]);
            // The extents the two products address (checked once per task, debug builds):
            // n rows of stride 3h, d columns, in q, k and v (v's start is the latest); the
            // [n, n] scores; n rows of stride h, d columns of the output from its corner.
            debug_assert!(n == 0 || (n - 1) * h3 + d <= v.len());
            debug_assert_eq!(scores.len(), n * n);
            debug_assert!(n == 0 || img * n * h + head * d + (n - 1) * h + d <= b * n * h);
            let rows = View {
                ptr: std::ptr::null(),
                rs: h3 as isize,
                cs: 1,
            };
            let out = shared;
            // SAFETY: q, k and v rows are n rows of stride 3h within this image's block of
            // qkv, d columns each; kᵀ reads k with row stride 1, column stride 3h. scores is
            // this task's [n, n] buffer; the context goes to rows of stride h, columns
            // [head·d, (head+1)·d) of this image, which no other task writes.
            unsafe {
                gemm_f32(
                    (n, n, d),
                    scores.as_mut_ptr(),
                    n,
                    false,
                    View {
                        ptr: q.as_ptr(),
                        ..rows
                    },
                    View {
                        ptr: k.as_ptr(),
                        rs: 1,
                        cs: h3 as isize,
                    },
                    scale as f32,
                    Parallelism::None,
                );
            }
            for row in scores.chunks_exact_mut(n) {
                softmax_in_place(row);
            }
            // SAFETY: scores is this task's [n, n] buffer (row stride n), read only; v is n
            // rows of stride 3h, d columns, within this image's block of qkv (asserted
            // above); the destination is rows of stride h, columns [head·d, (head+1)·d) of
            // image `img` in `out`, in bounds (asserted above), written by this task alone
            // and not read by anyone until every task has finished.
            unsafe {
                gemm_f32(
                    (n, d, n),
                    out.ptr().add(img * n * h + head * d),
                    h,
                    false,
                    View {
                        ptr: scores.as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    View {
                        ptr: v.as_ptr(),
                        ..rows
                    },
                    1.0,
                    Parallelism::None,
                );
            }
        },
    );
    out
}

/// [`self_attention`] on the packed f32 kernel, a block of query rows at a time: per (image,
/// head), the keys are packed once as the "weights" of `q kᵀ` (n columns over d) and the values
/// as those of `p v` (d columns over n); then for each block of [`sgemm::MR`] queries, its scores
/// (`MR × n`, in L1), their softmax, and their context written straight into the head's columns
/// of the output. No `n × n` matrix is ever stored, so everything stays in cache at n = 577.
/// Buffers are reused per thread.
fn attention_packed(
    kernel: sgemm::Kernel,
    qkv: &[f32],
    (b, n, heads, d): (usize, usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    let (h, h3) = (heads * d, 3 * heads * d);
    let rows = sgemm::MR;
    let mut out = vec![0f32; b * n * h];
    let shared = SharedOut::new(out.as_mut_ptr());
    (0..b * heads).into_par_iter().try_for_each_init(
        || {
            (
                vec![0f32; rows * n],
                vec![0f32; rows * d],
                (Vec::new(), Vec::new()),
                sgemm::Scratch::default(),
            )
        },
        |(scores, q, (keys, values), scratch), task| {
            let (img, head) = (task / heads, task % heads);
            let base = img * n * h3 + head * d;
            let at = |t: usize, which: usize, j: usize| qkv[base + t * h3 + which * h + j];
            sgemm::pack_panels_into(keys, n, d, |key, j| at(key, 1, j));
            sgemm::pack_panels_into(values, d, n, |j, key| at(key, 2, j));
            for r0 in (0..n).step_by(rows) {
                let m = rows.min(n - r0);
                let (q, scores) = (&mut q[..m * d], &mut scores[..m * n]);
                for (t, row) in q.chunks_exact_mut(d).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = at(r0 + t, 0, j) * scale;
                    }
                }
                scores.fill(0.0);
                // SAFETY: `scores` is this task's `[m, n]` buffer (row stride n), borrowed
                // mutably.
                unsafe {
                    sgemm::product_serial(
                        kernel,
                        q,
                        (m, d, n),
                        keys,
                        scores.as_mut_ptr(),
                        n,
                        scratch,
                    )?
                };
                for row in scores.chunks_exact_mut(n) {
                    softmax_in_place(row);
                }
                let out = shared;
                // SAFETY: the destination is rows `r0 .. r0 + m` (stride `h`), columns
                // `head·d .. head·d + d` of image `img` in `out` (`b·n·h` values): in bounds,
                // written by this task alone and read by no one until every task has finished.
                unsafe {
                    sgemm::product_serial(
                        kernel,
                        scores,
                        (m, n, d),
                        values,
                        out.ptr().add((img * n + r0) * h + head * d),
                        h,
                        scratch,
                    )?
                };
            }
            Ok::<_, Error>(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;

    fn assert_close(ours: &Tensor, reference: &Tensor, tol: f32) -> Result<()> {
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

    /// The reference: candle's matmul/softmax path on the same fused projection.
    fn reference_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
        let (b, n, h3) = qkv.dims3()?;
        let (h, d) = (h3 / 3, h3 / 3 / heads);
        let qkv = qkv.reshape((b, n, 3, heads, d))?.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        Ok(probs
            .matmul(&v)?
            .permute((0, 2, 1, 3))?
            .reshape((b, n, h))?)
    }

    #[test]
    fn self_attention_matches_matmul_softmax_matmul() -> Result<()> {
        let dev = Device::Cpu;
        for (b, n, heads, d) in [(1, 577, 12, 64), (2, 9, 3, 8), (3, 1, 2, 4)] {
            let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * heads * d), &dev)?;
            let scale = 1.0 / (d as f64).sqrt();
            let ours = self_attention(&qkv, heads, scale)?;
            let reference = reference_attention(&qkv, heads, scale)?;
            assert_close(&ours, &reference, 1e-5)?;
            // Each implementation, whichever `self_attention` picks on this machine.
            let flat = qkv.flatten_all()?.to_vec1::<f32>()?;
            let shape = (b, n, heads * d);
            let gemm = attention_gemm(&flat, (b, n, heads, d), scale);
            assert_close(&Tensor::from_vec(gemm, shape, &dev)?, &reference, 1e-5)?;
            for kernel in sgemm::Kernel::ALL {
                if kernel.is_available() && kernel.is_packed() {
                    let packed = attention_packed(kernel, &flat, (b, n, heads, d), scale as f32)?;
                    assert_close(&Tensor::from_vec(packed, shape, &dev)?, &reference, 1e-5)?;
                }
            }
        }
        let qkv = Tensor::zeros((1, 4, 10), candle_core::DType::F32, &dev)?;
        assert!(self_attention(&qkv, 3, 1.0).is_err());
        Ok(())
    }
}
