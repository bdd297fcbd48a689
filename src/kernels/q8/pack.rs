//! The packed weight layout's constructors and readers: `Q8_0` weights (candle's block bytes, a
//! `QTensor`, or blipq's int8 + f16-scale checkpoint tensors) repacked into [`super::PanelBlock`]s,
//! and read back (a dequantized row for embeddings, candle's block bytes for tests).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::{Panel4Block, PanelBlock, Q8Matrix, BLOCK, PANEL, Q8_0_BYTES, ZERO_BLOCK, ZERO_BLOCK4};
use crate::{Error, Result};

impl Q8Matrix {
    /// Packs a matrix given block by block: `block(row, b)` returns the scale and the 32 int8
    /// values (as bytes) of block `b` of weight row `row`.
    fn pack<'a>(
        n: usize,
        k: usize,
        channel: bool,
        block: impl Fn(usize, usize) -> (f32, &'a [u8]),
    ) -> Result<Self> {
        if n == 0 || k == 0 || !k.is_multiple_of(BLOCK) {
            return Err(Error::InvalidArgument(format!(
                "INT8 weight [{n}, {k}]: sizes must be non-zero and k a multiple of {BLOCK}"
            )));
        }
        let nb = k / BLOCK;
        let panels = n.div_ceil(PANEL);
        let mut blocks = vec![ZERO_BLOCK; panels * nb];
        for (i, pb) in blocks.iter_mut().enumerate() {
            let (p, b) = (i / nb, i % nb);
            for c in 0..PANEL.min(n - p * PANEL) {
                let (scale, qs) = block(p * PANEL + c, b);
                pb.scales[c] = scale;
                for s in 0..BLOCK / 4 {
                    for j in 0..4 {
                        pb.qs[64 * s + 4 * c + j] = qs[4 * s + j] ^ 0x80;
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            nb,
            channel,
            blocks,
            blocks4: Vec::new(),
        })
    }

    /// A 4-bit matrix from nibbles in candle's (ggml's) `Q4_0` block order — for each row, per
    /// block of 32 values, 16 bytes whose low nibbles hold values `0..16` and high nibbles values
    /// `16..32`, each `q + 8` — and f16 scales (little-endian bytes), one per `group` values
    /// along a row (`group` 32: `Q4_0`; or a multiple of 32, such as 128).
    pub fn from_int4(q: &[u8], scales: &[u8], n: usize, k: usize, group: usize) -> Result<Self> {
        if n == 0
            || k == 0
            || group == 0
            || !group.is_multiple_of(BLOCK)
            || !k.is_multiple_of(group)
            || q.len() != n * k / 2
            || scales.len() != 2 * n * (k / group)
        {
            return Err(Error::InvalidArgument(format!(
                "4-bit data ({} bytes) and scales ({} bytes) in groups of {group} do not fit \
                 [{n}, {k}] (k must be a non-zero multiple of the group, the group of {BLOCK})",
                q.len(),
                scales.len()
            )));
        }
        let nb = k / BLOCK;
        let per_group = group / BLOCK;
        let groups = k / group;
        let panels = n.div_ceil(PANEL);
        let mut blocks4 = vec![ZERO_BLOCK4; panels * nb];
        for (i, pb) in blocks4.iter_mut().enumerate() {
            let (p, b) = (i / nb, i % nb);
            for c in 0..PANEL.min(n - p * PANEL) {
                let row = p * PANEL + c;
                let g = row * groups + b / per_group;
                pb.scales[c] = f16::from_le_bytes([scales[2 * g], scales[2 * g + 1]]).to_f32();
                let src = &q[row * k / 2 + b * BLOCK / 2..][..BLOCK / 2];
                for s in 0..BLOCK / 8 {
                    for j in 0..4 {
                        // Byte `4 s + j` of the ggml block holds values `4 s + j` (low) and
                        // `16 + 4 s + j` (high): the layout's pair for k-step `s`, lane `j`.
                        pb.qs[64 * s + 4 * c + j] = src[4 * s + j];
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            nb,
            channel: false,
            blocks: Vec::new(),
            blocks4,
        })
    }

    /// Whether the weights are 4-bit (`q4_0`, `q4_g128`).
    pub fn is_int4(&self) -> bool {
        !self.blocks4.is_empty()
    }

    /// The 4-bit block of weight row `row`, block `b`: its scale and 32 values `q` in `-8..=7`.
    /// Panel `p`'s 4-bit blocks as int8 blocks into `out` (`nb` blocks): the same weights and
    /// scales in the `Q8_0` layout (each nibble `u = q + 8` stored as `q + 128`), so the int8
    /// kernels compute the 4-bit product with the same integer sums (the AMX kernel's 4-bit
    /// path, which expands one panel at a time into a buffer that stays in L1/L2).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn expand_panel4(&self, p: usize, out: &mut [PanelBlock]) {
        let blocks = &self.blocks4[p * self.nb..(p + 1) * self.nb];
        for (src, dst) in blocks.iter().zip(out.iter_mut()) {
            dst.scales = src.scales;
            let (lo, hi) = dst.qs.split_at_mut(src.qs.len());
            for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(&src.qs) {
                // k-step s < 4 in the low nibble, s + 4 in the high one (`Panel4Block`).
                *l = (b & 0x0f) + 120;
                *h = (b >> 4) + 120;
            }
        }
    }

    fn block4(&self, row: usize, b: usize) -> (f32, [i8; BLOCK]) {
        let pb = &self.blocks4[(row / PANEL) * self.nb + b];
        let c = row % PANEL;
        let q = std::array::from_fn(|i| {
            let byte = pb.qs[64 * ((i % 16) / 4) + 4 * c + i % 4];
            let u = if i < 16 { byte & 0x0f } else { byte >> 4 };
            u as i8 - 8
        });
        (pb.scales[c], q)
    }

    /// A 4-bit matrix back in candle's `Q4_0` nibble order and its scales, one per block of 32
    /// (`None` for an int8 matrix): for tests and inspection.
    pub fn to_int4(&self) -> Option<(Vec<u8>, Vec<f32>)> {
        if !self.is_int4() {
            return None;
        }
        let mut q = Vec::with_capacity(self.n * self.k / 2);
        let mut scales = Vec::with_capacity(self.n * self.nb);
        for r in 0..self.n {
            for b in 0..self.nb {
                let (d, v) = self.block4(r, b);
                scales.push(d);
                q.extend((0..BLOCK / 2).map(|i| (v[i] + 8) as u8 | ((v[i + 16] + 8) as u8) << 4));
            }
        }
        Some((q, scales))
    }

    /// From candle's `Q8_0` block bytes (`n × k/32` blocks of 34 bytes, row-major).
    pub fn from_q8_0_bytes(data: &[u8], n: usize, k: usize) -> Result<Self> {
        let nb = k / BLOCK;
        if data.len() != n * nb * Q8_0_BYTES || !k.is_multiple_of(BLOCK) {
            return Err(Error::InvalidArgument(format!(
                "{} bytes of Q8_0 blocks do not make a [{n}, {k}] matrix",
                data.len()
            )));
        }
        Self::pack(n, k, false, |r, b| {
            let at = (r * nb + b) * Q8_0_BYTES;
            let d = f16::from_le_bytes([data[at], data[at + 1]]).to_f32();
            (d, &data[at + 2..at + Q8_0_BYTES])
        })
    }

    /// From a 2-D `Q8_0` `QTensor`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        if q.dtype() != GgmlDType::Q8_0 {
            return Err(Error::InvalidArgument(format!(
                "expected a Q8_0 tensor, found {:?}",
                q.dtype()
            )));
        }
        let (n, k) = q.shape().dims2()?;
        Self::from_q8_0_bytes(&q.data()?, n, k)
    }

    /// From int8 values `[n, k]` (as bytes) and their f16 scales (little-endian bytes): one per
    /// 32-block (`[n, k/32]`) or, with `per_row`, one per row (`[n, 1]`).
    pub fn from_int8(q: &[u8], scales: &[u8], n: usize, k: usize, per_row: bool) -> Result<Self> {
        let nb = k / BLOCK;
        let want_scales = if per_row { n } else { n * nb };
        if q.len() != n * k || scales.len() != 2 * want_scales {
            return Err(Error::InvalidArgument(format!(
                "int8 data ({} bytes) and scales ({} bytes) do not fit [{n}, {k}]",
                q.len(),
                scales.len()
            )));
        }
        Self::pack(n, k, false, |r, b| {
            let s = if per_row { r } else { r * nb + b };
            let d = f16::from_le_bytes([scales[2 * s], scales[2 * s + 1]]).to_f32();
            (d, &q[r * k + b * BLOCK..r * k + (b + 1) * BLOCK])
        })
    }

    /// A per-channel (`int8-channel`) matrix: int8 values `[n, k]` (as bytes) and one f32 scale
    /// per row; products quantize the activations per token.
    pub fn from_int8_channel(q: &[u8], scales: &[f32], n: usize, k: usize) -> Result<Self> {
        if q.len() != n * k || scales.len() != n {
            return Err(Error::InvalidArgument(format!(
                "int8 data ({} bytes) and {} row scales do not fit [{n}, {k}]",
                q.len(),
                scales.len()
            )));
        }
        if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "row {r}'s scale is {}: scales must be finite",
                scales[r]
            )));
        }
        Self::pack(n, k, true, |r, b| {
            (scales[r], &q[r * k + b * BLOCK..r * k + (b + 1) * BLOCK])
        })
    }

    /// Whether the matrix is per channel (one scale per row, activations per token) rather than
    /// `Q8_0` blocks.
    pub fn is_channel(&self) -> bool {
        self.channel
    }

    /// The int8 values `[n, k]` and one f32 scale per row of a per-channel matrix (`None` for
    /// `Q8_0` blocks): what `from_int8_channel` was given.
    pub fn to_int8_channel(&self) -> Option<(Vec<i8>, Vec<f32>)> {
        if !self.channel {
            return None;
        }
        let mut q = Vec::with_capacity(self.n * self.k);
        let mut scales = Vec::with_capacity(self.n);
        for r in 0..self.n {
            for b in 0..self.nb {
                let (d, qs) = self.block(r, b);
                if b == 0 {
                    scales.push(d);
                }
                q.extend_from_slice(&qs);
            }
        }
        Some((q, scales))
    }

    /// Output size (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input size (weight columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held in memory.
    pub fn size_in_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<PanelBlock>()
            + self.blocks4.len() * std::mem::size_of::<Panel4Block>()
    }

    /// Where weight `(row, b, i)` sits: its block and the byte index in `qs`.
    fn locate(&self, row: usize, b: usize, i: usize) -> (&PanelBlock, usize) {
        let pb = &self.blocks[(row / PANEL) * self.nb + b];
        (pb, 64 * (i / 4) + 4 * (row % PANEL) + i % 4)
    }

    /// The `Q8_0` block of weight row `row`, block `b`: scale and the 32 int8 values.
    fn block(&self, row: usize, b: usize) -> (f32, [i8; BLOCK]) {
        let mut q = [0i8; BLOCK];
        let (pb, _) = self.locate(row, b, 0);
        for (i, q) in q.iter_mut().enumerate() {
            let (_, at) = self.locate(row, b, i);
            *q = (pb.qs[at] ^ 0x80) as i8;
        }
        (pb.scales[row % PANEL], q)
    }

    /// Dequantizes weight row `row` (an embedding lookup) into `out` (`k` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        if row >= self.n || out.len() != self.k {
            return Err(Error::Internal(format!(
                "row {row} of a [{}, {}] INT8 matrix into {} values",
                self.n,
                self.k,
                out.len()
            )));
        }
        for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            let (d, q) = if self.is_int4() {
                self.block4(row, b)
            } else {
                self.block(row, b)
            };
            for (o, q) in out.iter_mut().zip(q) {
                *o = q as f32 * d;
            }
        }
        Ok(())
    }

    /// The matrix back in candle's `Q8_0` block bytes (for tests and inspection; empty for a
    /// 4-bit matrix).
    pub fn to_q8_0_bytes(&self) -> Vec<u8> {
        if self.is_int4() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.n * self.nb * Q8_0_BYTES);
        for r in 0..self.n {
            for b in 0..self.nb {
                let (d, q) = self.block(r, b);
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(q.iter().map(|&q| q as u8));
            }
        }
        out
    }
}
