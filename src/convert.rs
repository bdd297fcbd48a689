//! Checkpoint conversion (`blipq convert`): any weights blipq reads — `pytorch_model.bin`, one
//! `model.safetensors` or a sharded one — into one `model.safetensors` with Hugging Face's tensor
//! names in F32, F16 or BF16, so a checkpoint can be hosted as plain safetensors, or at half
//! size.
//!
//! What it writes is what transformers' `save_pretrained` would: every weight under its own
//! name, tied duplicates left out (the names of [`crate::checkpoint::TIED_KEYS`] where they
//! share storage with another tensor, or are stored apart with the same values as the tensor they
//! are tied to; the loader ties them again), integer buffers
//! (`position_ids`) left out, `{"format": "pt"}` as metadata. Every weight is read and checked
//! (finite values) before the output exists. F16 / BF16 round each weight to the nearest
//! representable value (a value beyond F16's range is an error naming the tensor, not an
//! infinity in the file).
//!
//! May use: `checkpoint`, `fsio`, `clock`, `captioner` (the input check), `error`.

use candle_core::{DType, Device};
use serde::Serialize;

use crate::checkpoint::writer::{self, OutTensor};
use crate::checkpoint::{int8, Checkpoint};
use crate::{Error, Result};

/// The dtype `blipq convert` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutDType {
    F32,
    F16,
    BF16,
}

impl std::str::FromStr for OutDType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            _ => Err(Error::InvalidArgument(format!(
                "dtype \"{s}\": expected f32, f16 or bf16"
            ))),
        }
    }
}

impl OutDType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }
    fn candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
        }
    }
    fn safetensors(self) -> safetensors::Dtype {
        match self {
            Self::F32 => safetensors::Dtype::F32,
            Self::F16 => safetensors::Dtype::F16,
            Self::BF16 => safetensors::Dtype::BF16,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertSummary {
    pub dtype: OutDType,
    /// Tensors written.
    pub tensors: usize,
    /// Tied duplicates left out.
    pub dropped_tied: Vec<String>,
    /// Integer buffers left out (`position_ids`).
    pub dropped_buffers: Vec<String>,
    /// Bytes of the weight files read (every shard).
    pub input_bytes: usize,
    /// Bytes of the `model.safetensors` written.
    pub output_bytes: usize,
}

/// Serializes `ckpt` as one safetensors file of `dtype`, with `{"format": "pt"}` and
/// `extra_metadata` as its metadata. `on_tensor(done, total, name)` reports progress.
pub fn convert_checkpoint(
    ckpt: &Checkpoint,
    dtype: OutDType,
    extra_metadata: &[(&str, &str)],
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Vec<u8>, ConvertSummary)> {
    if int8::claims_int8(&ckpt.metadata()) {
        return Err(Error::checkpoint(
            ckpt.file(),
            "is a blipq INT8 checkpoint: convert reads full-precision weights (F32, F16, BF16, F64)",
        ));
    }
    let device = Device::Cpu;
    let dropped_tied = ckpt.tied_duplicates()?;
    let mut dropped_buffers = Vec::new();
    let names = ckpt.names();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        on_tensor(i, names.len(), name);
        if dropped_tied.contains(name) {
            continue;
        }
        // `position_ids` is an integer buffer transformers rebuilds; it holds no weights.
        if name.ends_with(".position_ids") && ckpt.info(name).is_none() {
            dropped_buffers.push(name.clone());
            continue;
        }
        let (stored, shape) = ckpt.lookup(name)?;
        if stored.is_quantized() {
            return Err(Error::tensor(
                name,
                format!(
                    "is quantized ({}) in {}: convert reads full-precision weights",
                    stored.as_str(),
                    ckpt.file()
                ),
            ));
        }
        let t = ckpt
            .load_f32(name, &shape, &device)?
            .to_dtype(dtype.candle())?;
        if dtype == OutDType::F16 {
            // Beyond F16's range a value rounds to infinity: refuse it rather than write it.
            let back = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if let Some(i) = back.iter().position(|x| !x.is_finite()) {
                return Err(Error::tensor(
                    name,
                    format!("value at index {i} is beyond F16's range (±65504): use bf16 or f32"),
                ));
            }
        }
        out.push((name.clone(), shape, tensor_bytes(&t)?));
    }
    on_tensor(names.len(), names.len(), "");
    let tensors = out.len();
    let mut metadata = std::collections::BTreeMap::from([("format".to_string(), "pt".to_string())]);
    metadata.extend(
        extra_metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let out = out
        .into_iter()
        .map(|(name, shape, data)| {
            let dtype = dtype.safetensors();
            (name, OutTensor { dtype, shape, data })
        })
        .collect();
    let bytes = writer::serialize(out, metadata, crate::checkpoint::files::SAFETENSORS_FILE)?;
    let summary = ConvertSummary {
        dtype,
        tensors,
        dropped_tied,
        dropped_buffers,
        input_bytes: ckpt.stored_bytes(),
        output_bytes: bytes.len(),
    };
    Ok((bytes, summary))
}

/// A tensor's values as little-endian bytes of its dtype.
fn tensor_bytes(t: &candle_core::Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        _ => t
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    })
}

/// Converts the checkpoint in `model_dir` into `out` (not yet committed): one
/// `model.safetensors` of `dtype` plus unchanged copies of the config, tokenizer and processor
/// files. Every input is read and checked (configs parsed, weights finite) before anything is
/// written.
#[cfg(not(target_arch = "wasm32"))]
pub fn convert_dir(
    model_dir: &std::path::Path,
    out: &crate::fsio::OutputDir,
    dtype: OutDType,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<ConvertSummary> {
    let files = crate::ModelFiles::from_dir(model_dir)?;
    crate::captioner::Parts::check(&files)?;
    let (bytes, summary) = convert_checkpoint(&files.weights, dtype, &[], on_tensor)?;
    crate::checkpoint::files::write_derived(model_dir, out, &bytes)?;
    Ok(summary)
}
