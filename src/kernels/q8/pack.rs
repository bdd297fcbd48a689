//! The packed weight layout's constructors and readers: `Q8_0` weights (candle's block bytes, a
//! `QTensor`, or blipq's int8 + f16-scale checkpoint tensors) repacked into [`super::PanelBlock`]s,
//! and read back (a dequantized row for embeddings, candle's block bytes for tests).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::{PanelBlock, Q8Matrix, BLOCK, PANEL, Q8_0_BYTES, ZERO_BLOCK};
use crate::{Error, Result};

impl Q8Matrix {
    /// Packs a matrix given block by block: `block(row, b)` returns the scale and the 32 int8
    /// values (as bytes) of block `b` of weight row `row`.
    fn pack<'a>(
        n: usize,
        k: usize,
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
        Ok(Self { n, k, nb, blocks })
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
        Self::pack(n, k, |r, b| {
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
        Self::pack(n, k, |r, b| {
            let s = if per_row { r } else { r * nb + b };
            let d = f16::from_le_bytes([scales[2 * s], scales[2 * s + 1]]).to_f32();
            (d, &q[r * k + b * BLOCK..r * k + (b + 1) * BLOCK])
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

    /// Bytes held in memory.
    pub fn size_in_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<PanelBlock>()
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
            let (d, q) = self.block(row, b);
            for (o, q) in out.iter_mut().zip(q) {
                *o = q as f32 * d;
            }
        }
        Ok(())
    }

    /// The matrix back in candle's `Q8_0` block bytes (for tests and inspection).
    pub fn to_q8_0_bytes(&self) -> Vec<u8> {
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
