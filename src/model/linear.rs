//! Linear layers and embeddings whose weight is either f32 or INT8 (`Q8_0` blocks): one code path
//! for both precisions, chosen per tensor by what the checkpoint stores. INT8 products run on
//! blipq's own tiled kernels ([`crate::kernels::q8`]), not candle's `QMatMul`; f32 products run on
//! weights packed at load for the widest kernel the CPU has ([`crate::kernels::sgemm`]). Both start
//! the output from the bias.

use candle_core::Tensor;

use crate::checkpoint::{ActivationStats, Matrix, Weights};
use crate::Result;

/// `nn.Linear`: `y = x W^T + b` with `W` f32 or INT8.
#[derive(Debug, Clone)]
pub struct Linear {
    /// f32 packed for the f32 kernels, or INT8; shared (a tied LM head and the word embeddings
    /// hold the same packed table).
    weight: Matrix,
    bias: Option<Tensor>,
    /// The weight's name and the recorder of a model built to record its layers' inputs
    /// ([`Weights::recording`]).
    probe: Option<(String, ActivationStats)>,
}

impl Linear {
    /// Loads `<prefix>.weight` `[out, in]` and `<prefix>.bias` `[out]`.
    pub fn new(in_dim: usize, out_dim: usize, vb: Weights) -> Result<Self> {
        let weight = vb.matrix(out_dim, in_dim, "weight")?;
        let bias = vb.get(&[out_dim], "bias")?;
        Ok(Self {
            weight,
            bias: Some(bias),
            probe: vb.stats().map(|s| (vb.path("weight"), s.clone())),
        })
    }

    pub fn from_matrix(weight: Matrix, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight,
            bias,
            probe: None,
        })
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, Matrix::Q8(_))
    }

    /// Whether the weight is `matrix` itself (one table in memory), not a copy.
    pub fn shares_weight(&self, matrix: &Matrix) -> bool {
        match (&self.weight, matrix) {
            (Matrix::F32(a), Matrix::F32(b)) => std::sync::Arc::ptr_eq(a, b),
            (Matrix::Q8(a), Matrix::Q8(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some((name, stats)) = &self.probe {
            stats.record(name, xs)?;
        }
        match &self.weight {
            Matrix::F32(w) => w.forward_with_bias(xs, self.bias.as_ref()),
            Matrix::Q8(q) => q.forward_with_bias(xs, self.bias.as_ref()),
        }
    }
}

/// `nn.Embedding` whose table is f32 or INT8; INT8 rows are dequantized one looked-up row at a time.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Matrix,
    /// The table's tensor name in the checkpoint.
    name: String,
}

impl Embedding {
    /// Loads `<prefix>.weight` `[vocab, hidden]`.
    pub fn new(vocab: usize, hidden: usize, vb: Weights) -> Result<Self> {
        Ok(Self {
            table: vb.matrix(vocab, hidden, "weight")?,
            name: vb.path("weight"),
        })
    }

    /// The table itself, for a language-model head tied to it.
    pub fn matrix(&self) -> &Matrix {
        &self.table
    }

    /// The table's tensor name in the checkpoint.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match &self.table {
            Matrix::F32(w) => w.embedding(ids)?,
            Matrix::Q8(q) => q.embedding(ids)?,
        })
    }
}

/// A LayerNorm loaded from `<prefix>.weight` and `<prefix>.bias`.
pub fn layer_norm(size: usize, eps: f64, vb: Weights) -> Result<candle_nn::LayerNorm> {
    let weight = vb.get(&[size], "weight")?;
    let bias = vb.get(&[size], "bias")?;
    Ok(candle_nn::LayerNorm::new(weight, bias, eps))
}
