//! Judging captions and runs: caption-quality metrics with the COCO caption evaluation's rules
//! ([`metrics`]), the benchmark core ([`bench`]: the run loop, per-model results and the
//! comparison) and its trade-off charts ([`chart`]), and natively the report folder and benchmark inputs on disk ([`report`]), shared by `blipq bench` / `blipq eval`, the page and the tests.
//!
//! May use: `captioner` (the bench core runs it), `config`, `limits`, `fsio` (native reads and
//! the report folder), `preprocess` (image file names), `checkpoint::files` (weight-file sizes),
//! `error`; `metrics/` uses none of the model code.

pub mod bench;
pub mod chart;
pub mod metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
