//! blipq's INT8 checkpoint format, read and written here only (README, "INT8 checkpoint format"):
//! safetensors where every quantized weight `W [out, in]` is `<name>` (I8, `[out, in]`) plus
//! `<name>_scale` (F16, `[out, in / BLOCK]`, or `[out, 1]` per row), everything else F32, and the
//! header's `__metadata__` says `format`, `version`, `block_size` and `source`. The blocks are
//! candle's `Q8_0`, split into their int8 values and f16 scales, so a loader repacks the very same
//! blocks ([`crate::kernels::q8::Q8Matrix::from_int8`]).

use std::collections::HashMap;

use crate::{Error, Result};

/// Width of one INT8 quantization block along a weight's input dimension (candle's `Q8_0`):
/// the kernels' block, defined once there.
pub use crate::kernels::q8::BLOCK;

/// `__metadata__` `format` of a blipq INT8 file.
pub const FORMAT: &str = "blipq-int8";
/// `__metadata__` `version` of the blipq INT8 files this build reads and writes.
pub const FORMAT_VERSION: &str = "1";

/// Whether `name` (of shape `shape`) becomes INT8: every linear weight whose input size is a
/// multiple of the block, and the word embeddings; never position/patch embeddings or norms.
pub fn is_quantizable(name: &str, shape: &[usize]) -> bool {
    let [_, cols] = shape else {
        return false;
    };
    name.ends_with(".weight")
        && cols.is_multiple_of(BLOCK)
        && (!name.contains("embedding") || name.contains("word_embeddings"))
}

/// The name of the f16 scales of int8 weight `name`.
pub fn scale_name(name: &str) -> String {
    format!("{name}_scale")
}

/// Splits `Q8_0` blocks (f16 scale + 32 int8, row-major) of a `[rows, cols]` matrix into the
/// int8 matrix and its `[rows, cols / BLOCK]` f16 scales, as the file stores them.
pub fn split_q8_0(blocks: &[u8], rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let per_row = cols / BLOCK;
    let mut q = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows * per_row * 2);
    for block in blocks.chunks_exact(2 + BLOCK) {
        scales.extend_from_slice(&block[..2]);
        q.extend_from_slice(&block[2..]);
    }
    (q, scales)
}

/// The `__metadata__` of an INT8 file made from the FP32 file whose SHA-256 is `source_sha256`.
pub fn metadata(source_sha256: &str) -> HashMap<String, String> {
    let block = BLOCK.to_string();
    [
        ("format", FORMAT),
        ("version", FORMAT_VERSION),
        ("block_size", block.as_str()),
        ("source", source_sha256),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Whether `meta` marks a blipq INT8 file.
pub fn claims_int8(meta: &HashMap<String, String>) -> bool {
    meta.get("format").map(String::as_str) == Some(FORMAT)
}

/// Checks the `__metadata__` of `file`, which holds int8 tensors or claims to be blipq INT8:
/// `format`, `version` and `block_size` must be what `blipq quantize` writes.
pub fn check_metadata(meta: &HashMap<String, String>, file: &str) -> Result<()> {
    let block = BLOCK.to_string();
    for (key, want) in [
        ("format", FORMAT),
        ("version", FORMAT_VERSION),
        ("block_size", block.as_str()),
    ] {
        match meta.get(key) {
            Some(v) if v == want => {}
            found => {
                let found =
                    found.map_or("nothing".to_string(), |v| format!("{:?}", super::short(v)));
                return Err(Error::checkpoint(
                    file,
                    format!(
                        "blipq INT8 checkpoints need __metadata__ {key} = {want:?} (this \
                         blipq reads version {FORMAT_VERSION}, blocks of {BLOCK}); found {found}"
                    ),
                ));
            }
        }
    }
    Ok(())
}
