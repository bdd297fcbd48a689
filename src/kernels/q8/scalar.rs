//! The portable reference INT8 kernel, which every SIMD kernel equals exactly in the tests.

use super::{panel_width, Job, BLOCK, PANEL};

/// The reference kernel: same arithmetic as the SIMD ones (exact i32 block sums, then
/// `acc += (d_w · d_x) · sum` in f32, block after block), unfused so it is exact on every target.
pub(super) fn gemm_scalar(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let (w, xq) = (job.w, job.xq);
    let (k, nb) = (w.k, w.nb);
    for t in job.tiles(1, 1) {
        let x = &xq.qs[t.r * k..(t.r + 1) * k];
        let dx = &xq.d[t.r * nb..(t.r + 1) * nb];
        for j in 0..t.np {
            let (p, at) = (t.p + j, t.at + j * PANEL);
            let width = panel_width(w, p);
            // Start from `out`, like the SIMD kernels, so the f32 sums happen in the same order.
            let mut acc = [0f32; PANEL];
            acc[..width].copy_from_slice(&out[at..at + width]);
            for b in 0..nb {
                let pb = &w.blocks[p * nb + b];
                let xb = &x[b * BLOCK..(b + 1) * BLOCK];
                for (c, acc) in acc.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for (i, &xv) in xb.iter().enumerate() {
                        let wv = (pb.qs[64 * (i / 4) + 4 * c + i % 4] ^ 0x80) as i8;
                        sum += xv as i32 * wv as i32;
                    }
                    *acc += pb.scales[c] * dx[b] * sum as f32;
                }
            }
            out[at..at + width].copy_from_slice(&acc[..width]);
        }
    }
}
