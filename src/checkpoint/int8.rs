//! blipq's INT8 checkpoint formats, read and written here only (README, "INT8 checkpoint format"):
//! safetensors where every quantized weight `W [out, in]` is `<name>` (I8, `[out, in]`) plus
//! `<name>_scale`, everything else F32, and the header's `__metadata__` says `format`, `version`
//! and `source`. Two layouts ([`Layout`]):
//! - `Q8_0` (the default, `block_size = "32"`): scales F16 `[out, in / BLOCK]` (or `[out, 1]` per
//!   row); the blocks are candle's `Q8_0`, split into their int8 values and f16 scales, so a
//!   loader repacks the very same blocks ([`crate::kernels::q8::Q8Matrix::from_int8`]);
//! - per channel (`blipq_scheme = "int8-channel"`): scales F32 `[out, 1]`, one per output
//!   channel, and activations quantized per token at run time
//!   ([`crate::kernels::q8::Q8Matrix::from_int8_channel`]);
//! - 4-bit (`blipq_scheme = "q4_0"` or `"q4_g128"`): every linear weight U8 `[out, in / 2]`, two
//!   values `q + 8` per byte in candle's `Q4_0` order, with F16 scales `[out, in / group]`
//!   (group 32, or 128 where `in` allows); the word embeddings (and the tied LM head) stay
//!   `Q8_0` ([`crate::kernels::q8::Q8Matrix::from_int4`]).

use std::collections::HashMap;

use crate::{Error, Result};

/// Width of one INT8 quantization block along a weight's input dimension (candle's `Q8_0`):
/// the kernels' block, defined once there.
pub use crate::kernels::q8::BLOCK;

/// `__metadata__` `format` of a blipq INT8 file.
pub const FORMAT: &str = "blipq-int8";
/// `__metadata__` `version` of the blipq INT8 files this build reads and writes.
pub const FORMAT_VERSION: &str = "1";
/// `__metadata__` key naming the scheme of a file `blipq quantize` wrote other than `Q8_0`
/// (`int8-channel`, `f16`, `bf16`).
pub const SCHEME_KEY: &str = "blipq_scheme";
/// The [`SCHEME_KEY`] of a per-channel INT8 file.
pub const CHANNEL_SCHEME: &str = "int8-channel";
/// The [`SCHEME_KEY`] of a 4-bit file in blocks of 32 (candle's `Q4_0`).
pub const Q4_0_SCHEME: &str = "q4_0";
/// The [`SCHEME_KEY`] of a 4-bit file in groups of 128.
pub const Q4_G128_SCHEME: &str = "q4_g128";
/// The [`SCHEME_KEY`] of a per-layer mixed-precision file.
pub const MIXED_SCHEME: &str = "mixed";
/// The `__metadata__` key holding a mixed file's plan (JSON).
pub const PLAN_KEY: &str = "blipq_plan";

/// How an INT8 file's weights are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// candle's `Q8_0`: an f16 scale per block of [`BLOCK`] (or per row), activations per block.
    Blocks,
    /// One f32 scale per output channel, activations per token (`int8-channel`).
    Channel,
    /// 4-bit linear weights with an f16 scale per `group` values (32: `q4_0`, 128: `q4_g128`),
    /// word embeddings `Q8_0`.
    Int4 { group: usize },
    /// A per-layer plan (`mixed`): each weight 4-bit (U8, as `q4_0`), `Q8_0` (I8) or F32, as
    /// the plan in the metadata (`blipq_plan`) says.
    Mixed,
}

impl Layout {
    /// The scheme name the file's metadata carries (`None` for `Q8_0`, which carries none).
    pub fn scheme(self) -> Option<&'static str> {
        match self {
            Layout::Blocks => None,
            Layout::Channel => Some(CHANNEL_SCHEME),
            Layout::Int4 { group: 32 } => Some(Q4_0_SCHEME),
            Layout::Int4 { .. } => Some(Q4_G128_SCHEME),
            Layout::Mixed => Some(MIXED_SCHEME),
        }
    }

    /// Whether the file may hold 4-bit (U8) weights.
    pub fn has_int4(self) -> bool {
        matches!(self, Layout::Int4 { .. } | Layout::Mixed)
    }
}

/// The 4-bit group of a weight with `cols` inputs in a file of `group`: the group where it
/// divides `cols`, else blocks of [`BLOCK`] (quantizable weights have `cols` a multiple of it).
pub fn int4_group(group: usize, cols: usize) -> usize {
    if cols.is_multiple_of(group) {
        group
    } else {
        BLOCK
    }
}

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

/// The `__metadata__` of an INT8 file of `layout` made from the FP32 file whose SHA-256 is
/// `source_sha256`.
pub fn metadata(layout: Layout, source_sha256: &str) -> HashMap<String, String> {
    let block = BLOCK.to_string();
    let kind = match layout.scheme() {
        None => ("block_size", block.as_str()),
        Some(scheme) => (SCHEME_KEY, scheme),
    };
    [
        ("format", FORMAT),
        ("version", FORMAT_VERSION),
        kind,
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
/// `format`, `version` and `block_size` (or `blipq_scheme = "int8-channel"`) must be what
/// `blipq quantize` writes. Returns the file's layout.
pub fn check_metadata(meta: &HashMap<String, String>, file: &str) -> Result<Layout> {
    let block = BLOCK.to_string();
    let layout = match meta.get(SCHEME_KEY).map(String::as_str) {
        None | Some("q8_0") => Layout::Blocks,
        Some(CHANNEL_SCHEME) => Layout::Channel,
        Some(Q4_0_SCHEME) => Layout::Int4 { group: 32 },
        Some(Q4_G128_SCHEME) => Layout::Int4 { group: 128 },
        Some(MIXED_SCHEME) => Layout::Mixed,
        Some(other) => {
            return Err(Error::checkpoint(
                file,
                format!(
                    "blipq quantized checkpoint of scheme {:?}: this blipq reads q8_0, \
                     {CHANNEL_SCHEME}, {Q4_0_SCHEME}, {Q4_G128_SCHEME} and {MIXED_SCHEME}",
                    super::short(other)
                ),
            ))
        }
    };
    let mut keys = vec![("format", FORMAT), ("version", FORMAT_VERSION)];
    if layout == Layout::Blocks {
        keys.push(("block_size", block.as_str()));
    }
    for (key, want) in keys {
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
    Ok(layout)
}
