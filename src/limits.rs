//! The caps on what blipq reads from users (file sizes) and the one way an input over its cap is
//! reported. Every reader applies them: the checkpoint loaders, image decoding, the metrics'
//! JSON files and the bounded file reads of [`crate::fsio`].
//!
//! May use: `error` only (a bottom layer, below `checkpoint`, `preprocess` and `fsio`).

use crate::Error;

/// Largest `config.json`, preprocessor, generation or tokenizer config accepted (real ones are a
/// few KB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest `tokenizer.json` accepted (BERT's is 0.7 MB; big multilingual ones are ~20 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Largest image file accepted; the pixel budget of `preprocess` applies on top of it.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// Largest COCO annotations / results / benchmark results JSON accepted (COCO's whole train
/// captions file is 90 MB).
pub const MAX_ANNOTATIONS_BYTES: u64 = 512 << 20;

/// Most bytes of images the page's benchmark view takes at once from the user's own files (it
/// holds them all while a run lasts).
pub const MAX_BENCH_IMAGES_BYTES: u64 = 1 << 30;

/// A byte count in the unit every report of blipq uses ([`crate::MB`]: 2^20 bytes).
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / crate::MB)
}

/// The error for a file over its cap (in bytes where MB would round both to the same figure).
pub fn too_large(file: &str, len: u64, max: u64) -> Error {
    let (len, max) = if mb(len) == mb(max) {
        (format!("{len} bytes"), format!("{max} bytes"))
    } else {
        (mb(len), mb(max))
    };
    Error::file(
        file,
        format!("is {len}, over the limit of {max} for this kind of file"),
    )
}
