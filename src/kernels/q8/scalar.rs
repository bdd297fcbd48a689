//! The portable reference INT8 kernel, which every SIMD kernel equals exactly in the tests.

use super::{panel_width, Job, BLOCK, PANEL};

/// The reference kernel: same arithmetic as the SIMD ones, unfused so it is exact on every
/// target. `Q8_0` blocks: exact i32 block sums, then `acc += (d_w · d_x) · sum` in f32, block after
/// block. Per-channel matrices: one exact i32 sum over the whole row, scaled once.
pub(super) fn gemm_scalar(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let (w, xq) = (job.w, job.xq);
    let (k, nb, groups) = (w.k, w.nb, xq.groups);
    for t in job.tiles(1, 1) {
        let x = &xq.qs[t.r * k..(t.r + 1) * k];
        let dx = &xq.d[t.r * groups..(t.r + 1) * groups];
        for j in 0..t.np {
            let (p, at) = (t.p + j, t.at + j * PANEL);
            let width = panel_width(w, p);
            // Start from `out`, like the SIMD kernels, so the f32 sums happen in the same order.
            let mut acc = [0f32; PANEL];
            acc[..width].copy_from_slice(&out[at..at + width]);
            let mut row_sums = [0i32; PANEL];
            for b in 0..nb {
                let pb = &w.blocks[p * nb + b];
                let xb = &x[b * BLOCK..(b + 1) * BLOCK];
                for (c, acc) in acc.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for (i, &xv) in xb.iter().enumerate() {
                        let wv = (pb.qs[64 * (i / 4) + 4 * c + i % 4] ^ 0x80) as i8;
                        sum += xv as i32 * wv as i32;
                    }
                    if w.channel {
                        row_sums[c] += sum;
                    } else {
                        *acc += pb.scales[c] * dx[b] * sum as f32;
                    }
                }
            }
            if w.channel {
                let scales = &w.blocks[p * nb].scales;
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc += scales[c] * dx[0] * row_sums[c] as f32;
                }
            }
            out[at..at + width].copy_from_slice(&acc[..width]);
        }
    }
}

/// The reference 4-bit kernel: exact i32 block sums of `q_x · q_w` (`q_w = u - 8` from the
/// nibbles), then `acc += (d_w · d_x) · sum` in f32, block after block, as for `Q8_0`.
pub(super) fn gemm4_scalar(job: &Job, out: &mut [f32]) {
    job.debug_assert_fits(out.len());
    let (w, xq) = (job.w, job.xq);
    let (k, nb) = (w.k, w.nb);
    for t in job.tiles(1, 1) {
        let x = &xq.qs[t.r * k..(t.r + 1) * k];
        let dx = &xq.d[t.r * nb..(t.r + 1) * nb];
        for j in 0..t.np {
            let (p, at) = (t.p + j, t.at + j * PANEL);
            let width = panel_width(w, p);
            let mut acc = [0f32; PANEL];
            acc[..width].copy_from_slice(&out[at..at + width]);
            for b in 0..nb {
                let pb = &w.blocks4[p * nb + b];
                let xb = &x[b * BLOCK..(b + 1) * BLOCK];
                for (c, acc) in acc.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for (i, &xv) in xb.iter().enumerate() {
                        let byte = pb.qs[64 * ((i % 16) / 4) + 4 * c + i % 4];
                        let u = if i < 16 { byte & 0x0f } else { byte >> 4 };
                        sum += xv as i32 * (u as i32 - 8);
                    }
                    *acc += pb.scales[c] * dx[b] * sum as f32;
                }
            }
            out[at..at + width].copy_from_slice(&acc[..width]);
        }
    }
}
