//! blipq: BLIP image captioning in Rust, FP32 and INT8, native and wasm32.
//!
//! [`Captioner`] loads a Hugging Face `BlipForConditionalGeneration` checkpoint (F32/F16/BF16
//! safetensors, `pytorch_model.bin`, or blipq's INT8 safetensors) and captions images exactly as
//! `transformers` does; [`quantize`] writes INT8 checkpoints.

pub mod captioner;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod convert;
pub mod error;
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod fsio;
pub mod generate;
pub mod kernels;
pub mod limits;
pub mod model;
pub mod preprocess;
#[cfg(all(feature = "python", not(target_arch = "wasm32")))]
mod python;
pub mod quantize;
pub mod synth;
pub mod threads;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use captioner::{
    BatchImage, Caption, CaptionOptions, Captioner, ModelFiles, ModelInfo, Timings, MAX_BATCH,
};
pub use error::{Error, Result};

/// Bytes per MB in every size and memory figure blipq reports (CLI, JSON reports, the page):
/// 2^20.
pub const MB: f64 = 1_048_576.0;

/// How the reports say what [`MB`] is.
pub const MB_UNIT: &str = "MB = 2^20 bytes";
