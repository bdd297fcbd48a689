//! Attention, the two shapes the model needs: the vision encoder's full self-attention over its
//! fused `qkv` projection ([`self_attention`]: per (image, head), scores, softmax and context on
//! the packed f32 kernel or `gemm`, never materializing more than a block of scores), and the
//! decoder's few-query attention over cached keys and values ([`attention_few_queries`]: one new
//! token per beam, dot products and a weighted sum per head; [`attention_keys_transposed`] for
//! the image's keys, stored transposed, whose scores are computed a block of keys at a time).

use candle_core::{CpuStorage, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::kernels::isa::multiversion;
use crate::kernels::matmul::{gemm_f32, with_cpu_f32, View};
use crate::kernels::ops::{
    contiguous_f32, is_cpu_f32, softmax_in_place, softmax_row, softmax_to_column, MulAdd, LANES,
};
use crate::kernels::sgemm::{self, SharedOut};
use crate::{Error, Result};

/// Full self-attention of the vision encoder, from the fused projection's output:
/// `qkv [b, n, 3h]` (q | k | v, each `heads × head_dim`) → `softmax(scale · q kᵀ) v` as
/// `[b, n, h]`, the heads side by side, ready for the output projection.
///
/// One rayon task per (image, head): a product for the `[n, n]` scores (kept in a per-thread
/// buffer that fits L2 at n = 577), a softmax per row (in place, or written into the next
/// product's tile layout, [`attention_packed`]), and a product writing the head's
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
/// Buffers are reused per thread. Where the kernel reads its activations as tiles
/// ([`sgemm::Kernel::takes_tiles`]), the scaled queries and the softmax's probabilities are
/// written in that layout directly (the same values, no separate transposing pass).
fn attention_packed(
    kernel: sgemm::Kernel,
    qkv: &[f32],
    shape: (usize, usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    attention_packed_as(kernel, kernel.takes_tiles(), qkv, shape, scale)
}

/// [`attention_packed`], writing the activations as tiles or not (`tiles` only for a kernel
/// that takes them; tests compare the two).
fn attention_packed_as(
    kernel: sgemm::Kernel,
    tiles: bool,
    qkv: &[f32],
    (b, n, heads, d): (usize, usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    let (h, h3) = (heads * d, 3 * heads * d);
    let rows = sgemm::MR;
    let mut out = vec![0f32; b * n * h];
    if out.is_empty() {
        return Ok(out);
    }
    let shared = SharedOut::new(out.as_mut_ptr());
    (0..b * heads).into_par_iter().try_for_each_init(
        || {
            (
                (vec![0f32; rows * n], vec![0f32; rows * d]),
                vec![0f32; if tiles { rows * n } else { 0 }],
                (Vec::new(), Vec::new()),
                sgemm::Scratch::default(),
            )
        },
        |((scores, q), probs, (keys, values), scratch), task| {
            let (img, head) = (task / heads, task % heads);
            // This head's q, k and v columns of the image's `n` rows (stride 3h).
            let image = &qkv[img * n * h3..][..n * h3];
            let (qs, ks, vs) = (
                &image[head * d..],
                &image[h + head * d..],
                &image[2 * h + head * d..],
            );
            sgemm::pack_panels_from_rows(keys, ks, h3, n, d);
            sgemm::pack_panels_from_columns(values, vs, h3, d, n);
            for r0 in (0..n).step_by(rows) {
                let m = rows.min(n - r0);
                let queries = &qs[r0 * h3..][..(m - 1) * h3 + d];
                let (q, scores) = if tiles {
                    // k-major, a tile row at a time: `q[j · MR + t]` is query `r0 + t`'s value
                    // `j`.
                    for (j, dst) in q.chunks_exact_mut(rows).enumerate() {
                        for (t, v) in dst[..m].iter_mut().enumerate() {
                            *v = queries[t * h3 + j] * scale;
                        }
                    }
                    (sgemm::Lhs::Tiles(q), &mut scores[..m * n])
                } else {
                    for (dst, row) in q.chunks_exact_mut(d).zip(queries.chunks(h3)) {
                        for (v, &x) in dst.iter_mut().zip(&row[..d]) {
                            *v = x * scale;
                        }
                    }
                    (sgemm::Lhs::Rows(&q[..m * d]), &mut scores[..m * n])
                };
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
                let probs = if tiles {
                    for (t, row) in scores.chunks_exact_mut(n).enumerate() {
                        softmax_to_column(row, probs, rows, t);
                    }
                    sgemm::Lhs::Tiles(probs)
                } else {
                    for row in scores.chunks_exact_mut(n) {
                        softmax_in_place(row);
                    }
                    sgemm::Lhs::Rows(scores)
                };
                let out = shared;
                // SAFETY: the destination is rows `r0 .. r0 + m` (stride `h`), columns
                // `head·d .. head·d + d` of image `img` in `out` (`b·n·h` values): in bounds,
                // written by this task alone and read by no one until every task has finished.
                unsafe {
                    sgemm::product_serial(
                        kernel,
                        probs,
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

/// `softmax(q kᵀ) v` per head for a few query rows (the decoder's one new token per beam):
/// `q` `[heads, rows, d]` (already scaled), `k`, `v` `[heads, keys, d]` → `[heads, rows, d]`.
///
/// Batched gemm is built for big tiles; for 1–3 query rows candle falls back to its slow generic
/// kernel and pays its threading set-up per head, 12 layers × 2 attentions per generated token.
/// Here each head is a row of dot products, a softmax and a weighted sum of value rows, with
/// the heads split across rayon's pool. Other devices and dtypes take the matmul path.
pub fn attention_few_queries(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    few_queries(q, k, v, FewQueryAttention { transposed: false })
}

/// [`attention_few_queries`] or [`attention_keys_transposed`], as `op` says.
fn few_queries(q: &Tensor, k: &Tensor, v: &Tensor, op: FewQueryAttention) -> Result<Tensor> {
    if is_cpu_f32(q) && is_cpu_f32(k) && is_cpu_f32(v) {
        return Ok(q
            .contiguous()?
            .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?);
    }
    let kt = if op.transposed { k.clone() } else { k.t()? };
    Ok(candle_nn::ops::softmax_last_dim(&q.matmul(&kt)?)?.matmul(v)?)
}

/// `Σ a·b` with [`LANES`] independent partial sums (vectorizable, unlike a serial fold).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l = x.madd(*y, *l);
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    tail + lanes.iter().sum::<f32>()
}

/// One head of [`attention_few_queries`]: `q` `[rows, d]`, `k`, `v` `[keys, d]` → `out` `[rows, d]`
/// (zeroed).
#[inline(always)]
fn attend_head_body(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], d: usize) {
    let mut probs = vec![0f32; k.len() / d];
    for (out, q) in out.chunks_mut(d).zip(q.chunks(d)) {
        for (s, k) in probs.iter_mut().zip(k.chunks(d)) {
            *s = dot(q, k);
        }
        softmax_row(&mut probs);
        weighted_sum(out, &probs, v);
    }
}

multiversion! {
    pub(crate) fn attend_head(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], d: usize) = attend_head_body;
}

/// Few-query attention over keys stored transposed, `kt` `[heads, d, keys]` (the decoder's
/// cross-attention: the image's keys are transposed once per image): `q` `[heads, rows, d]`,
/// `v` `[heads, keys, d]` → `softmax(q kt) v` `[heads, rows, d]`.
///
/// With the keys transposed, the scores of a block of keys are whole vectors: each query value
/// is multiplied into a row of `kt` and accumulated in registers, with no horizontal sum per
/// key (the dot products of [`attention_few_queries`] end in one per key, which at 577 image
/// tokens cost more than the products). Each score is the same `madd` chain over the head
/// dimension in order, whichever block computes it.
pub fn attention_keys_transposed(q: &Tensor, kt: &Tensor, v: &Tensor) -> Result<Tensor> {
    few_queries(q, kt, v, FewQueryAttention { transposed: true })
}

/// Keys whose scores one block keeps in registers while the head dimension streams past.
const KEY_BLOCK: usize = 4 * LANES;

/// Scores `out[i] = Σ_j q[j] · kt[j · keys + k0 + i]` for `N` keys from `k0`, accumulated in
/// order of `j`.
#[inline(always)]
fn scores_block<const N: usize>(out: &mut [f32], q: &[f32], kt: &[f32], keys: usize, k0: usize) {
    let mut acc = [0f32; N];
    for (j, &qj) in q.iter().enumerate() {
        let row: &[f32; N] = kt[j * keys + k0..][..N].try_into().expect("N keys");
        for (a, &k) in acc.iter_mut().zip(row) {
            *a = qj.madd(k, *a);
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// One head of [`attention_keys_transposed`]: `q` `[rows, d]`, `kt` `[d, keys]`, `v`
/// `[keys, d]` → `out` `[rows, d]` (zeroed).
#[inline(always)]
fn attend_head_t_body(out: &mut [f32], q: &[f32], kt: &[f32], v: &[f32], d: usize) {
    let keys = kt.len() / d;
    let mut probs = vec![0f32; keys];
    for (out, q) in out.chunks_mut(d).zip(q.chunks(d)) {
        for (k0, width) in blocks(keys) {
            let scores = &mut probs[k0..];
            match width {
                KEY_BLOCK => scores_block::<KEY_BLOCK>(scores, q, kt, keys, k0),
                LANES => scores_block::<LANES>(scores, q, kt, keys, k0),
                _ => scores_block::<1>(scores, q, kt, keys, k0),
            }
        }
        softmax_row(&mut probs);
        weighted_sum(out, &probs, v);
    }
}

/// `out += Σ_i p[i] · v[i]` over the value rows (`out.len()` values each), a block of output
/// columns at a time held in registers across the rows. Every output value is the same `madd`
/// chain over the rows in order, whichever block computes it.
#[inline(always)]
fn weighted_sum(out: &mut [f32], probs: &[f32], v: &[f32]) {
    let d = out.len();
    for (c0, width) in blocks(d) {
        let out = &mut out[c0..];
        match width {
            KEY_BLOCK => weighted_sum_block::<KEY_BLOCK>(out, probs, v, d, c0),
            LANES => weighted_sum_block::<LANES>(out, probs, v, d, c0),
            _ => weighted_sum_block::<1>(out, probs, v, d, c0),
        }
    }
}

/// `0 .. len` cut into `(start, width)` blocks: of [`KEY_BLOCK`] while they fit, then of
/// [`LANES`], then single values.
fn blocks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let width = [KEY_BLOCK, LANES, 1]
            .into_iter()
            .find(|w| start + w <= len)?;
        start += width;
        Some((start - width, width))
    })
}

/// Output columns `c0 .. c0 + N` of [`weighted_sum`] (value rows of `d` values).
#[inline(always)]
fn weighted_sum_block<const N: usize>(
    out: &mut [f32],
    probs: &[f32],
    v: &[f32],
    d: usize,
    c0: usize,
) {
    let mut acc: [f32; N] = out[..N].try_into().expect("N columns");
    for (i, &p) in probs.iter().enumerate() {
        let row: &[f32; N] = v[i * d + c0..][..N].try_into().expect("N columns");
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = p.madd(v, *a);
        }
    }
    out[..N].copy_from_slice(&acc);
}

multiversion! {
    pub(crate) fn attend_head_t(out: &mut [f32], q: &[f32], kt: &[f32], v: &[f32], d: usize) = attend_head_t_body;
}

/// The few-query attention op; `transposed`: the keys come as `[heads, d, keys]`.
struct FewQueryAttention {
    transposed: bool,
}

impl candle_core::CustomOp3 for FewQueryAttention {
    fn name(&self) -> &'static str {
        "blipq-few-query-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous_f32(self.name(), qs, ql)?,
            contiguous_f32(self.name(), ks, kl)?,
            contiguous_f32(self.name(), vs, vl)?,
        );
        let (heads, rows, d) = ql.shape().dims3()?;
        let (k_heads, keys, k_d) = match kl.shape().dims3()? {
            (h, d, keys) if self.transposed => (h, keys, d),
            dims => dims,
        };
        if (k_heads, k_d) != (heads, d) || vl.shape().dims() != [heads, keys, d] || keys == 0 {
            candle_core::bail!(
                "{}: q {:?}, k {:?}, v {:?} do not fit",
                self.name(),
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let mut out = vec![0f32; heads * rows * d];
        out.par_chunks_mut(rows * d)
            .zip(q.par_chunks(rows * d))
            .zip(k.par_chunks(keys * d).zip(v.par_chunks(keys * d)))
            .for_each(|((out, q), (k, v))| {
                if self.transposed {
                    attend_head_t(out, q, k, v, d)
                } else {
                    attend_head(out, q, k, v, d)
                }
            });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;
    use crate::kernels::matmul::tests::assert_close;

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
        for (b, n, heads, d) in [(1, 577, 12, 64), (2, 9, 3, 8), (3, 1, 2, 4), (2, 30, 2, 20)] {
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
                    if kernel.takes_tiles() {
                        // The queries and probabilities written as tiles: the bits of the same
                        // kernel given them as rows.
                        let rows = attention_packed_as(
                            kernel,
                            false,
                            &flat,
                            (b, n, heads, d),
                            scale as f32,
                        )?;
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert!(
                            bits(&packed) == bits(&rows),
                            "{kernel:?} {b}x{n}x{heads}x{d}"
                        );
                    }
                    assert_close(&Tensor::from_vec(packed, shape, &dev)?, &reference, 1e-5)?;
                }
            }
        }
        let qkv = Tensor::zeros((1, 4, 10), candle_core::DType::F32, &dev)?;
        assert!(self_attention(&qkv, 3, 1.0).is_err());
        // No tokens: an empty result of the right shape.
        let qkv = Tensor::zeros((2, 0, 24), candle_core::DType::F32, &dev)?;
        assert_eq!(self_attention(&qkv, 2, 1.0)?.dims(), [2, 0, 8]);
        Ok(())
    }

    /// Both key layouts ([`attention_few_queries`], [`attention_keys_transposed`]) give the
    /// matmul path's attention, for key counts with full blocks of 64, of 16 and single keys
    /// left over, and head sizes likewise.
    #[test]
    fn few_query_attention_matches_matmul_softmax_matmul() -> Result<()> {
        for (heads, rows, keys, d) in [(12, 1, 577, 64), (4, 3, 83, 40), (2, 2, 1, 16)] {
            let q = Tensor::randn(0f32, 0.5, (heads, rows, d), &Device::Cpu)?;
            let k = Tensor::randn(0f32, 0.5, (heads, keys, d), &Device::Cpu)?;
            let v = Tensor::randn(0f32, 1.0, (heads, keys, d), &Device::Cpu)?;
            let kt = k.transpose(1, 2)?.contiguous()?;
            let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
            let reference = probs.matmul(&v)?.flatten_all()?.to_vec1::<f32>()?;
            for ours in [
                attention_few_queries(&q, &k, &v)?,
                attention_keys_transposed(&q, &kt, &v)?,
            ] {
                for (o, r) in ours.flatten_all()?.to_vec1::<f32>()?.iter().zip(&reference) {
                    assert!(
                        (o - r).abs() < 1e-5,
                        "{heads}x{rows}x{keys}x{d}: {o} vs {r}"
                    );
                }
            }
        }
        let q = Tensor::zeros((2, 1, 8), candle_core::DType::F32, &Device::Cpu)?;
        let k = Tensor::zeros((3, 4, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert!(attention_few_queries(&q, &k, &k).is_err());
        Ok(())
    }

    /// Keys stored transposed: the blocks cover the keys in order, and every score is the
    /// same bits whichever block computed it (a key's score does not depend on where the key
    /// count cuts the blocks); shapes that do not fit are errors.
    #[test]
    fn transposed_key_scores_do_not_depend_on_the_blocks() -> Result<()> {
        let (keys, d) = (83, 8);
        let q: Vec<f32> = (0..d).map(|j| 0.3 - 0.07 * j as f32).collect();
        let kt: Vec<f32> = (0..d * keys)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        assert_eq!(
            blocks(83).collect::<Vec<_>>(),
            [(0, 64), (64, 16), (80, 1), (81, 1), (82, 1)]
        );
        let mut block = vec![0f32; KEY_BLOCK];
        scores_block::<KEY_BLOCK>(&mut block, &q, &kt, keys, 3);
        for (i, b) in block.iter().enumerate() {
            let mut single = [0f32];
            scores_block::<1>(&mut single, &q, &kt, keys, 3 + i);
            assert_eq!(b.to_bits(), single[0].to_bits(), "key {}", 3 + i);
        }
        let q = Tensor::zeros((2, 1, 8), candle_core::DType::F32, &Device::Cpu)?;
        let kt = Tensor::zeros((2, 4, 8), candle_core::DType::F32, &Device::Cpu)?;
        let v = Tensor::zeros((2, 8, 4), candle_core::DType::F32, &Device::Cpu)?;
        assert!(attention_keys_transposed(&q, &kt, &v).is_err());
        Ok(())
    }
}
