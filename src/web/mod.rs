//! The browser API (wasm32 only): a wasm-bindgen `Captioner` class over the engine.
//!
//! ```js
//! import init, { Captioner, version, wasmMemoryBytes } from "./blipq.js";
//! await init();
//! // One entry per checkpoint file, keyed by file name (a leading directory is ignored).
//! const captioner = new Captioner({
//!   "config.json": configBytes,                 // Uint8Array or ArrayBuffer
//!   "model.safetensors": weightBytes,           // stays in JS; copied in one tensor at a time
//!   "tokenizer.json": tokenizerBytes,
//!   "preprocessor_config.json": preprocBytes,   // or "processor_config.json"
//!   "tokenizer_config.json": tokCfgBytes,       // optional
//!   "generation_config.json": genCfgBytes,      // optional
//! });
//! const out = captioner.caption(imageBytes, { maxLength: 20, numBeams: 1 }, (partial) => show(partial));
//! // out = { caption, tokenIds, newTokens, timings: { preprocess_s, vision_s, decode_s, total_s } }
//! captioner.info();   // { total_parameters, is_quantized, dtype, weights_bytes, image_size, ... }
//! captioner.free();   // releases the model's wasm memory
//! ```
//!
//! The threaded build (scripts/web.sh: `+atomics`, shared memory) also exports
//! `initThreadPool(n)`; call it right after `init()` in a worker, on a cross-origin isolated
//! page, to run the engine's rayon kernels on `n` threads: this worker and `n - 1` Web Workers
//! ([`pool`]; www/worker.js does).
//! `rayonThreads()` reports the pool's size in either build.
//!
//! Every engine error becomes a thrown JS `Error` carrying the engine's message; nothing here
//! panics on user input. The weight file is never copied into wasm memory as a whole:
//! [`JsBytes`] keeps the JS `Uint8Array` and hands the loader one tensor's bytes at a time, so
//! loading holds the converted weights plus, transiently, two copies of the tensor being loaded
//! (its raw bytes and candle's buffer), not two copies of the whole file.
//!
//! May use: the library's public API (`Captioner`, `checkpoint::files`, `eval`, `kernels` for the
//! build's kernel names, `threads` to mark the pool's owner); it converts JS values to and from library types and holds no logic of its
//! own.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::checkpoint::files::{
    model_files_from_entries, FileData, PTH_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE,
};
use crate::checkpoint::{ByteSource, Checkpoint, SafetensorsHeader, StoredDType};
use crate::eval::bench::{self, Failure, Item, ModelInfoReport, ModelResults, Sample};
use crate::{CaptionOptions, Captioner, Error, ModelFiles, ModelInfo, Result, Timings};

/// Name the image is given in error messages.
const IMAGE_NAME: &str = "(input image)";

fn js_err(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn arg_err(msg: impl std::fmt::Display) -> JsValue {
    js_err(Error::InvalidArgument(msg.to_string()))
}

/// A weight file held by JS (outside wasm memory); [`ByteSource::read`] copies only the
/// requested range into wasm memory.
pub struct JsBytes {
    array: js_sys::Uint8Array,
    len: usize,
}

// SAFETY: `ByteSource` requires Send + Sync so that native code can share memory maps across
// threads. The stable wasm32 build is single-threaded (no `atomics`, no shared memory). The
// threaded build (`+atomics`, scripts/web.sh) runs rayon tasks on other Web Workers, whose JS
// heaps do not hold this `Uint8Array`; but the loader reads checkpoints only on the thread that
// called `new Captioner` (rayon runs compute kernels on plain slices only), so a `JsBytes` is
// still never touched from a second thread.
unsafe impl Send for JsBytes {}
// SAFETY: as for `Send` above.
unsafe impl Sync for JsBytes {}

impl JsBytes {
    pub fn new(array: js_sys::Uint8Array) -> Self {
        let len = array.length() as usize;
        Self { array, len }
    }
}

impl ByteSource for JsBytes {
    fn len(&self) -> usize {
        self.len
    }
    fn read(&self, start: usize, end: usize) -> Result<Cow<'_, [u8]>> {
        if start > end || end > self.len {
            return Err(Error::InvalidArgument(format!(
                "byte range {start}..{end} outside a buffer of {} bytes",
                self.len
            )));
        }
        // wasm32 has 32-bit usize, so the casts are lossless.
        Ok(Cow::Owned(
            self.array.subarray(start as u32, end as u32).to_vec(),
        ))
    }
}

/// Options of one `caption()` call, as a JS object. Missing or `null` fields take the checkpoint's
/// generation defaults; snake_case spellings are accepted too.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsCaptionOptions {
    prompt: Option<String>,
    #[serde(alias = "max_length")]
    max_length: Option<usize>,
    #[serde(alias = "max_new_tokens")]
    max_new_tokens: Option<usize>,
    #[serde(alias = "min_length")]
    min_length: Option<usize>,
    #[serde(alias = "num_beams")]
    num_beams: Option<usize>,
    #[serde(alias = "fixed_new_tokens")]
    fixed_new_tokens: Option<usize>,
}

impl From<JsCaptionOptions> for CaptionOptions {
    fn from(o: JsCaptionOptions) -> Self {
        CaptionOptions {
            prompt: o.prompt,
            max_length: o.max_length,
            max_new_tokens: o.max_new_tokens,
            min_length: o.min_length,
            num_beams: o.num_beams,
            fixed_new_tokens: o.fixed_new_tokens,
        }
    }
}

/// Option names `caption()` understands (serde-wasm-bindgen ignores `deny_unknown_fields`, so a
/// misspelt `maxLenght` would otherwise be dropped silently).
const OPTION_NAMES: [&str; 11] = [
    "prompt",
    "maxLength",
    "max_length",
    "maxNewTokens",
    "max_new_tokens",
    "minLength",
    "min_length",
    "numBeams",
    "num_beams",
    "fixedNewTokens",
    "fixed_new_tokens",
];

fn check_option_names(options: &JsValue) -> std::result::Result<(), JsValue> {
    if !options.is_object() {
        return Err(arg_err("caption options must be an object"));
    }
    for key in js_sys::Object::keys(options.unchecked_ref::<js_sys::Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !OPTION_NAMES.contains(&key.as_str()) {
            return Err(arg_err(format!(
                "caption options: unknown option `{key}` (expected one of prompt, maxLength, \
                 maxNewTokens, minLength, numBeams, fixedNewTokens)"
            )));
        }
    }
    Ok(())
}

/// Caption options from JS: `undefined`/`null` for the defaults, else an object of known names.
fn caption_options(options: JsValue) -> std::result::Result<CaptionOptions, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(CaptionOptions::default());
    }
    check_option_names(&options)?;
    Ok(serde_wasm_bindgen::from_value::<JsCaptionOptions>(options)
        .map_err(|e| arg_err(format!("caption options: {e}")))?
        .into())
}

/// What `caption()` returns to JS.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsCaption {
    caption: String,
    token_ids: Vec<u32>,
    new_tokens: usize,
    /// Field names as in the benchmark reports: `preprocess_s`, `vision_s`, `decode_s`, `total_s`.
    timings: Timings,
}

/// What `info()` returns to JS: [`crate::ModelInfo`] plus configuration facts.
#[derive(Serialize)]
struct JsInfo<'a> {
    version: &'static str,
    #[serde(flatten)]
    model: &'a ModelInfo,
    image_size: [u32; 2],
    vision_hidden_size: usize,
    vision_layers: usize,
    patch_size: usize,
    text_hidden_size: usize,
    text_layers: usize,
    vocab_size: usize,
    bos_token_id: u32,
    sep_token_id: u32,
    /// `null` when generation_config.json sets no total length.
    default_max_length: Option<usize>,
    default_max_new_tokens: usize,
    default_min_length: usize,
    default_num_beams: usize,
}

fn to_js<T: Serialize>(value: &T) -> std::result::Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| arg_err(format!("could not convert the result to JS: {e}")))
}

/// The bytes of one file entry: a `Uint8Array` or an `ArrayBuffer`.
fn as_uint8_array(name: &str, value: &JsValue) -> std::result::Result<js_sys::Uint8Array, JsValue> {
    if let Some(a) = value.dyn_ref::<js_sys::Uint8Array>() {
        Ok(a.clone())
    } else if let Some(b) = value.dyn_ref::<js_sys::ArrayBuffer>() {
        Ok(js_sys::Uint8Array::new(b))
    } else {
        Err(arg_err(format!(
            "file `{name}` must be a Uint8Array or an ArrayBuffer"
        )))
    }
}

impl FileData for JsBytes {
    fn len(&self) -> usize {
        self.len
    }
    fn into_bytes(self) -> Vec<u8> {
        self.array.to_vec()
    }
    fn into_source(self) -> Box<dyn ByteSource> {
        Box::new(self)
    }
}

/// A JS object `{fileName: bytes}` as entries (`null`/`undefined` values skipped); `call` names
/// the function in the error for anything else.
fn js_entries(files: &JsValue, call: &str) -> std::result::Result<Vec<(String, JsBytes)>, JsValue> {
    if !files.is_object() {
        return Err(arg_err(format!(
            "{call} expects an object mapping file names to Uint8Array"
        )));
    }
    let mut entries = Vec::new();
    for entry in js_sys::Object::entries(files.unchecked_ref()).iter() {
        let pair: js_sys::Array = entry.unchecked_into();
        let key = pair
            .get(0)
            .as_string()
            .ok_or_else(|| arg_err("file names must be strings"))?;
        let value = pair.get(1);
        if value.is_undefined() || value.is_null() {
            continue;
        }
        let bytes = JsBytes::new(as_uint8_array(&key, &value)?);
        entries.push((key, bytes));
    }
    Ok(entries)
}

/// Collects a checkpoint's files from a JS object `{fileName: bytes}` by the same rule as a
/// directory on disk ([`crate::checkpoint::files`]), then checks that the weights fit in wasm memory before
/// any of them is copied in.
fn model_files(files: &JsValue) -> std::result::Result<ModelFiles, JsValue> {
    let entries = js_entries(files, "new Captioner(files)")?;
    let files = model_files_from_entries(entries).map_err(js_err)?;
    let needed = match &files.weights {
        Checkpoint::Safetensors(weights) => loaded_bytes_estimate(&weights.header),
        // Every float tensor becomes f32 (4 bytes a value); other dtypes are not loaded.
        Checkpoint::Pth(p) => p
            .tensors()
            .values()
            .filter(|t| t.dtype.stored().is_some())
            .map(|t| t.elem_count() as f64 * 4.0)
            .sum(),
    };
    check_fits_in_wasm_memory(files.weights.file(), needed, wasm_memory_bytes()).map_err(js_err)?;
    Ok(files)
}

/// Wasm memory `quantizeCheckpoint` needs beyond what is in use: the output tensors (for `q8_0`
/// an int8 value and a 1/16 share of an f16 scale per quantized value, f32 for the rest; two
/// bytes a value for the half schemes) twice (the tensors, then the serialized file), plus the
/// largest tensor as f32 while it is converted.
///
/// The mixed scheme's sweep holds the FP32 model (the source's size in f32) and one trial's
/// quantized matrices, and at the end the file and its model (each under the f32 size).
///
/// Calibration first runs the FP32 model (its f32 weights), then lets it go: the estimate is the
/// larger of the two.
fn quantize_bytes_estimate(
    ckpt: &Checkpoint,
    scheme: crate::quantize::Scheme,
    calibrate: bool,
) -> f64 {
    let f32_bytes = || {
        ckpt.names()
            .iter()
            .filter_map(|n| ckpt.info(n))
            .map(|(_, shape)| shape.iter().product::<usize>() as f64 * 4.0)
            .sum::<f64>()
    };
    let work = quantize_work_estimate(ckpt, scheme);
    if calibrate {
        work.max(f32_bytes())
    } else {
        work
    }
}

fn quantize_work_estimate(ckpt: &Checkpoint, scheme: crate::quantize::Scheme) -> f64 {
    if scheme == crate::quantize::Scheme::Mixed {
        let (mut all, mut largest) = (0.0f64, 0.0f64);
        for name in ckpt.names() {
            if let Some((_, shape)) = ckpt.info(&name) {
                let n = shape.iter().product::<usize>() as f64 * 4.0;
                all += n;
                largest = largest.max(n);
            }
        }
        return 2.0 * all + largest;
    }
    let (mut out, mut largest) = (0.0f64, 0.0f64);
    for name in ckpt.names() {
        let Some((_, shape)) = ckpt.info(&name) else {
            continue;
        };
        let n = shape.iter().product::<usize>() as f64;
        out += if !scheme.is_int8() {
            n * 2.0
        } else if crate::quantize::is_quantizable(&name, &shape) {
            n * (1.0 + 2.0 / crate::checkpoint::BLOCK as f64)
        } else {
            n * 4.0
        };
        largest = largest.max(n * 4.0);
    }
    2.0 * out + largest
}

/// What `quantizeCheckpoint()` returns besides the files.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsQuantized {
    /// SHA-256 of the INT8 `model.safetensors`.
    sha256: String,
    /// SHA-256 of the source weights file (recorded in the INT8 file's metadata).
    source_sha256: String,
    summary: crate::quantize::QuantizeSummary,
    /// The mixed scheme's plan and how the sweep chose it (as in `quantized_results.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<crate::quantize::mixed::MixedPlan>,
}

/// `quantizeCheckpoint`'s options: the mixed scheme's `blipq quantize --size-budget` and
/// `--quality-floor`, and `--calibrate` for the 4-bit schemes and int8-channel.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsQuantizeOptions {
    size_budget: Option<f64>,
    quality_floor: Option<f64>,
    #[serde(default)]
    calibrate: bool,
}

/// `quantizeCheckpoint(files, onProgress?, scheme?, options?)` → `{files, sha256, sourceSha256,
/// summary, plan?}`: the INT8 (`scheme` `"q8_0"`, the default, or `"int8-channel"`), 4-bit
/// (`"q4_0"`, `"q4_g128"`), mixed (`"mixed"`), F16 or BF16 checkpoint of an FP32/F16/BF16 one,
/// made by the code of `blipq quantize --scheme` ([`crate::quantize::quantize_model`], for mixed
/// [`crate::quantize::quantize_model_mixed`] with the built-in validation images, which the CLI
/// uses when given no folder), so its `model.safetensors` is byte for byte the CLI's.
/// `options`: `{sizeBudget?, qualityFloor?}` (mixed only) as `--size-budget` and
/// `--quality-floor`, `{calibrate: true}` (4-bit schemes, int8-channel) as `--calibrate` (on the built-in
/// validation images); the result's `plan` is the mixed plan (as in `quantized_results.json`).
/// `files` are the source's files keyed by name (as for `new Captioner`); the result's `files`
/// holds the INT8 `model.safetensors` and the source's other files that a derived checkpoint
/// keeps ([`crate::checkpoint::files::copied_files`]; the same objects, not copies).
/// `onProgress(stage, done, total)` follows the work: `"calibrate"` (images the FP32 model ran
/// on, when calibrating), `"hash"` (bytes of the source weights hashed), then `"quantize"`
/// (tensors done); for mixed, after `"hash"`: `"reference"` (FP32
/// captions of the images), `"sweep"` (layer groups tried alone at 4 bits), `"plan"` (groups
/// considered) and `"write"`. Throws for an INT8 source, a checkpoint that does
/// not load, or one whose INT8 file cannot be made within wasm memory.
#[wasm_bindgen(js_name = quantizeCheckpoint, unchecked_return_type = "QuantizedCheckpoint")]
pub fn quantize_checkpoint_js(
    #[wasm_bindgen(unchecked_param_type = "CheckpointFiles")] files: JsValue,
    #[wasm_bindgen(
        js_name = onProgress,
        unchecked_optional_param_type = "((stage: string, done: number, total: number) => void) | null"
    )]
    on_progress: Option<js_sys::Function>,
    #[wasm_bindgen(
        unchecked_optional_param_type = "\"q8_0\" | \"int8-channel\" | \"q4_0\" | \"q4_g128\" | \"mixed\" | \"f16\" | \"bf16\" | null"
    )]
    scheme: Option<String>,
    #[wasm_bindgen(
        unchecked_optional_param_type = "{ sizeBudget?: number; qualityFloor?: number; calibrate?: boolean } | null"
    )]
    options: Option<JsValue>,
) -> std::result::Result<JsValue, JsValue> {
    use crate::checkpoint::files::{base_name, copied_files};
    console_error_panic_hook::set_once();
    let scheme: crate::quantize::Scheme = match scheme {
        Some(s) => s.parse().map_err(js_err)?,
        None => Default::default(),
    };
    let options: JsQuantizeOptions = match options {
        Some(o) if !o.is_undefined() && !o.is_null() => serde_wasm_bindgen::from_value(o)
            .map_err(|e| arg_err(format!("quantizeCheckpoint options: {e}")))?,
        _ => JsQuantizeOptions::default(),
    };
    crate::quantize::check_calibration(scheme, options.calibrate).map_err(js_err)?;
    let mixed = scheme == crate::quantize::Scheme::Mixed;
    if !mixed && (options.size_budget.is_some() || options.quality_floor.is_some()) {
        return Err(arg_err(
            "quantizeCheckpoint options: sizeBudget and qualityFloor are options of the mixed \
             scheme",
        ));
    }
    let entries = js_entries(&files, "quantizeCheckpoint(files)")?;
    let kept: Vec<(String, js_sys::Uint8Array)> = entries
        .iter()
        .filter(|(k, _)| copied_files().any(|f| f == base_name(k)))
        .map(|(k, b)| (base_name(k).to_string(), b.array.clone()))
        .collect();
    // The weights as stored, hashed for the metadata as `blipq quantize` hashes the file.
    let weights_name = {
        let present = entries.iter().map(|(k, _)| base_name(k)).collect();
        crate::checkpoint::files::plan(&present, "model folder")
            .map_err(js_err)?
            .weights
            .0
    };
    let weights_bytes = entries
        .iter()
        .find(|(k, _)| base_name(k) == weights_name)
        .map(|(_, b)| JsBytes::new(b.array.clone()))
        .ok_or_else(|| arg_err(format!("{weights_name} is missing")))?;
    let model = model_files_from_entries(entries).map_err(js_err)?;
    check_fits_in_wasm_memory(
        model.weights.file(),
        quantize_bytes_estimate(&model.weights, scheme, options.calibrate),
        wasm_memory_bytes(),
    )
    .map_err(js_err)?;
    // The first exception `onProgress` throws, rethrown once the work is done.
    let callback_error: std::cell::RefCell<Option<JsValue>> = Default::default();
    let report = |stage: &str, done: usize, total: usize| {
        let Some(f) = &on_progress else { return };
        if callback_error.borrow().is_some() {
            return;
        }
        let (stage, done, total) = (
            JsValue::from_str(stage),
            JsValue::from_f64(done as f64),
            JsValue::from_f64(total as f64),
        );
        if let Err(e) = f.call3(&JsValue::NULL, &stage, &done, &total) {
            *callback_error.borrow_mut() = Some(e);
        }
    };
    let mut source_sha = String::new();
    let mut hash = || {
        let sha = crate::quantize::sha256_source(&weights_bytes, &mut |done, total| {
            report("hash", done, total)
        })?;
        source_sha = sha.clone();
        Ok(sha)
    };
    let images = if mixed || options.calibrate {
        crate::quantize::builtin_validation_images().map_err(js_err)?
    } else {
        Vec::new()
    };
    let importance = if options.calibrate {
        Some(
            crate::quantize::calibrate::activation_importance(
                &model,
                &images,
                &mut |done, total| report("calibrate", done, total),
            )
            .map_err(js_err)?,
        )
    } else {
        None
    };
    let (bytes, summary, plan) = if mixed {
        let opts = crate::quantize::mixed::MixedOptions {
            size_budget: options.size_budget,
            quality_floor: options.quality_floor,
        };
        let (bytes, summary, plan) = crate::quantize::quantize_model_mixed(
            &model,
            &images,
            opts,
            importance.as_ref(),
            &mut hash,
            &mut |stage, done, total| report(stage, done, total),
        )
        .map_err(js_err)?;
        (bytes, summary, Some(plan))
    } else {
        let (bytes, summary) = crate::quantize::quantize_model(
            &model,
            scheme,
            importance.as_ref(),
            &mut hash,
            &mut |done, total, _name| report("quantize", done, total),
        )
        .map_err(js_err)?;
        (bytes, summary, None)
    };
    if let Some(e) = callback_error.into_inner() {
        return Err(e);
    }
    let out = js_sys::Object::new();
    let set = |name: &str, value: &JsValue| {
        js_sys::Reflect::set(&out, &JsValue::from_str(name), value).map(|_| ())
    };
    set(
        SAFETENSORS_FILE,
        &js_sys::Uint8Array::from(&bytes[..]).into(),
    )?;
    for (name, array) in &kept {
        set(name, array)?;
    }
    let result = to_js(&JsQuantized {
        sha256: crate::quantize::sha256_hex(&bytes),
        source_sha256: source_sha,
        summary,
        plan,
    })?;
    js_sys::Reflect::set(&result, &JsValue::from_str("files"), &out)?;
    Ok(result)
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** What `quantizeCheckpoint()` returns: the INT8 checkpoint's files and what was done. */
export interface QuantizedCheckpoint { files: Record<string, Uint8Array>; sha256: string; sourceSha256: string; summary: { quantized_tensors: number; kept_tensors: number; output_bytes: number }; plan?: MixedPlan; }
/** The mixed scheme's plan: every layer group (most sensitive first) with its sweep figures and precision, the steps that raised groups, and the final file's size and agreement with FP32. */
export interface MixedPlan { low: string; high: string; size_budget: number; quality_floor: number | null; groups: { group: string; parameters: number; logits_cosine: number; token_agreement: number; vision_cosine: number; precision: string }[]; steps: { raised: string | null; size_fraction: number; token_agreement: number | null; logits_cosine: number | null }[]; size_fraction: number; token_agreement: number; logits_cosine: number; }
/** What `hubModel()` returns for a Hub name. */
export interface HubModel { url: string; label: string; }
/** What `checkpointFileNames()` returns. */
export interface CheckpointFileNames { weights: string[]; shardedIndex: string; required: string[]; preprocessor: string[]; optional: string[]; extra: string[]; }
/** A checkpoint directory's files, keyed by file name. */
export type CheckpointFiles = Record<string, Uint8Array | ArrayBuffer>;
/** One benchmark image: file name, COCO image id, reference captions. */
export interface BenchItem { file: string; image_id: number | string | null; references: string[]; }
/** One captioned image of a benchmark run. */
export interface BenchSample {
  image: string; image_id: number | string | null; caption: string; token_ids: number[];
  new_tokens: number; timings: Timings;
  /** The vision encoder's class-token output, base64 of little-endian f32 (embedding cosine). */
  image_embedding_cls?: string;
}
export interface BenchModelRun {
  label: string;
  samples: BenchSample[];
  failures?: { image: string; error: string }[];
  info: { total_parameters: number; is_quantized: boolean; dtype: string };
  modelSizeBytes: number;
  modelPath: string;
  peakMemoryBytes?: number | null;
  device?: string;
}
export interface BenchInput { items: BenchItem[]; models: BenchModelRun[]; }
/** What `Captioner.bench` returns: one model's samples and failures, in item order. */
export interface BenchRunResult { samples: BenchSample[]; failures: { image: string; error: string }[]; }
/** The text of the files `blipq bench` writes. */
export interface BenchReport {
  models: { label: string; resultsJson: string; captionsJson: string }[];
  comparisonMarkdown: string;
  comparisonJson: string;
  /** `size_vs_quality.svg` and `speed_vs_quality.svg`. */
  charts: { file: string; svg: string }[];
}
/** Decoding options; missing fields take the checkpoint's generation defaults. */
export interface CaptionOptions {
  prompt?: string;
  maxLength?: number;
  maxNewTokens?: number;
  minLength?: number;
  numBeams?: number;
  fixedNewTokens?: number;
}
export interface Timings { preprocess_s: number; vision_s: number; decode_s: number; total_s: number; }
export interface CaptionResult { caption: string; tokenIds: number[]; newTokens: number; timings: Timings; }
export interface ModelInfo {
  version: string;
  total_parameters: number;
  is_quantized: boolean;
  dtype: string;
  weights_bytes: number;
  image_size: [number, number];
  vision_hidden_size: number;
  vision_layers: number;
  patch_size: number;
  text_hidden_size: number;
  text_layers: number;
  vocab_size: number;
  bos_token_id: number;
  sep_token_id: number;
  default_max_length: number | null;
  default_max_new_tokens: number;
  default_min_length: number;
  default_num_beams: number;
}
"#;

/// A loaded BLIP checkpoint. JS: `new Captioner(files)`.
#[wasm_bindgen(js_name = Captioner)]
pub struct WasmCaptioner {
    inner: Captioner,
}

#[wasm_bindgen(js_class = Captioner)]
impl WasmCaptioner {
    /// `new Captioner(files: Record<string, Uint8Array | ArrayBuffer>)`: loads a checkpoint from its
    /// files, keyed by file name: `config.json`, `model.safetensors`, `tokenizer.json`,
    /// `preprocessor_config.json` (or `processor_config.json`), and optionally
    /// `tokenizer_config.json` and `generation_config.json`. Other names are ignored. Throws an
    /// `Error` naming the file and the problem.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "CheckpointFiles")] files: JsValue,
    ) -> std::result::Result<WasmCaptioner, JsValue> {
        console_error_panic_hook::set_once();
        let files = model_files(&files)?;
        let inner = Captioner::load(files).map_err(js_err)?;
        Ok(Self { inner })
    }

    /// `caption(image: Uint8Array, options?: {prompt?, maxLength?, maxNewTokens?, minLength?,
    /// numBeams?, fixedNewTokens?}, onToken?: (partialText: string) => void)` →
    /// `{caption, tokenIds, newTokens, timings: {preprocess_s, vision_s, decode_s, total_s}}`.
    ///
    /// `image` holds encoded PNG/JPEG/WebP/GIF/BMP bytes. `onToken` is called after each decoding
    /// step with the best caption so far; if it throws, the exception is rethrown once the
    /// caption is finished.
    #[wasm_bindgen(unchecked_return_type = "CaptionResult")]
    pub fn caption(
        &self,
        image: &[u8],
        #[wasm_bindgen(unchecked_optional_param_type = "CaptionOptions | null")] options: JsValue,
        #[wasm_bindgen(
            js_name = onToken,
            unchecked_optional_param_type = "((partialText: string) => void) | null"
        )]
        on_token: Option<js_sys::Function>,
    ) -> std::result::Result<JsValue, JsValue> {
        let opts = caption_options(options)?;
        let mut callback_error: Option<JsValue> = None;
        let mut on_text = |text: &str| {
            if let (Some(f), None) = (&on_token, &callback_error) {
                if let Err(e) = f.call1(&JsValue::NULL, &JsValue::from_str(text)) {
                    callback_error = Some(e);
                }
            }
        };
        let out = self
            .inner
            .caption(image, IMAGE_NAME, &opts, &mut on_text)
            .map_err(js_err)?;
        if let Some(e) = callback_error {
            return Err(e);
        }
        to_js(&JsCaption {
            caption: out.caption,
            token_ids: out.token_ids,
            new_tokens: out.new_tokens,
            timings: out.timings,
        })
    }

    /// `bench(items: BenchItem[], images: (Uint8Array | string)[], options, warmup, onItem?)` →
    /// `{samples, failures}`: one model's benchmark run over `items` (`benchItems()`'s), exactly
    /// the loop of `blipq bench` ([`bench::run`]: untimed warm-up captions of the first readable
    /// image, then every item in order; a failure is recorded and the run goes on). `images[i]` is
    /// item `i`'s encoded bytes, or a string saying why they could not be fetched (recorded as
    /// its failure). `onItem(done, {sample} | {failure})` follows each item; if it throws, the
    /// exception is rethrown once the run is finished.
    #[wasm_bindgen(unchecked_return_type = "BenchRunResult")]
    pub fn bench(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BenchItem[]")] items: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(Uint8Array | string)[]")] images: js_sys::Array,
        #[wasm_bindgen(unchecked_param_type = "CaptionOptions | null")] options: JsValue,
        warmup: u32,
        #[wasm_bindgen(
            js_name = onItem,
            unchecked_optional_param_type = "((done: number, outcome: { sample?: BenchSample; failure?: { image: string; error: string } }) => void) | null"
        )]
        on_item: Option<js_sys::Function>,
    ) -> std::result::Result<JsValue, JsValue> {
        let items: Vec<Item> = serde_wasm_bindgen::from_value(items)
            .map_err(|e| arg_err(format!("bench: items: {e}")))?;
        if images.length() as usize != items.len() {
            return Err(arg_err(format!(
                "bench: {} images for {} items",
                images.length(),
                items.len()
            )));
        }
        let opts = bench::RunOptions {
            caption: caption_options(options)?,
            warmup: warmup as usize,
            batch_size: 1,
        };
        self.inner.check_options(&opts.caption).map_err(js_err)?;
        let mut next = 0u32;
        let mut read = |item: &Item| {
            let value = images.get(next);
            next += 1;
            if let Some(a) = value.dyn_ref::<js_sys::Uint8Array>() {
                Ok(a.to_vec())
            } else {
                Err(value
                    .as_string()
                    .unwrap_or_else(|| format!("{}: no image bytes were given", item.file)))
            }
        };
        let mut callback_error: Option<JsValue> = None;
        let mut on_outcome = |done: usize, outcome: bench::Outcome<'_>| {
            let (Some(f), None) = (&on_item, &callback_error) else {
                return;
            };
            let value = match outcome {
                bench::Outcome::Captioned(sample) => {
                    to_js(&serde_json::json!({ "sample": sample }))
                }
                bench::Outcome::Failed(failure) => {
                    to_js(&serde_json::json!({ "failure": failure }))
                }
            };
            let called =
                value.and_then(|v| f.call2(&JsValue::NULL, &JsValue::from(done as u32), &v));
            if let Err(e) = called {
                callback_error = Some(e);
            }
        };
        let run = bench::run(&self.inner, &items, &mut read, &opts, &mut on_outcome);
        if let Some(e) = callback_error {
            return Err(e);
        }
        to_js(&serde_json::json!({ "samples": run.samples, "failures": run.failures }))
    }

    /// `info()` → `{version, total_parameters, is_quantized, dtype, weights_bytes, image_size:
    /// [height, width], vision_hidden_size, vision_layers, patch_size, text_hidden_size,
    /// text_layers, vocab_size, bos_token_id, sep_token_id, default_max_length (or null),
    /// default_max_new_tokens, default_min_length, default_num_beams}` (snake_case, as in the benchmark reports).
    #[wasm_bindgen(unchecked_return_type = "ModelInfo")]
    pub fn info(&self) -> std::result::Result<JsValue, JsValue> {
        let info = self.inner.info();
        let cfg = self.inner.config();
        let pre = self.inner.image_processor();
        let defaults = self.inner.defaults();
        to_js(&JsInfo {
            version: env!("CARGO_PKG_VERSION"),
            model: info,
            image_size: [pre.height, pre.width],
            vision_hidden_size: cfg.vision.hidden_size,
            vision_layers: cfg.vision.num_hidden_layers,
            patch_size: cfg.vision.patch_size,
            text_hidden_size: cfg.text.hidden_size,
            text_layers: cfg.text.num_hidden_layers,
            vocab_size: cfg.text.vocab_size,
            bos_token_id: cfg.text.bos_token_id,
            sep_token_id: cfg.text.sep_token_id,
            default_max_length: defaults.max_length,
            default_max_new_tokens: defaults.max_new_tokens,
            default_min_length: defaults.min_length,
            default_num_beams: defaults.num_beams,
        })
    }
}

/// `checkpointFileNames()` → `{weights, shardedIndex, required, preprocessor, optional, extra}`: the names of a
/// checkpoint's files as the engine reads them ([`crate::checkpoint::files`]), so the page fetches
/// exactly those: `required` (fetched first, in order), `weights` (the weights the page reads, the
/// first present wins: `model.safetensors`, a sharded checkpoint's index — then the shards it
/// names, [`shard_names`] — or `pytorch_model.bin`), `preprocessor` (the first present wins) and
/// `optional` (a 404 is fine); `extra` are files a derived checkpoint carries along unread
/// (fetched, optionally, only to make one: `quantizeCheckpoint`).
#[wasm_bindgen(js_name = checkpointFileNames, unchecked_return_type = "CheckpointFileNames")]
pub fn checkpoint_file_names() -> std::result::Result<JsValue, JsValue> {
    use crate::checkpoint::files::{
        EXTRA_FILES, OPTIONAL_FILES, PREPROCESSOR_FILES, REQUIRED_FILES,
    };
    to_js(&serde_json::json!({
        "weights": [SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, PTH_FILE],
        "shardedIndex": SAFETENSORS_INDEX_FILE,
        "required": REQUIRED_FILES,
        "preprocessor": PREPROCESSOR_FILES,
        "optional": OPTIONAL_FILES,
        "extra": EXTRA_FILES,
    }))
}

/// `checkFileSize(kind, name, size)`: throws the engine's "too large" error when a file the
/// user picked is over blipq's cap for its kind, so the page refuses it before reading it:
/// `"image"` ([`crate::limits::MAX_IMAGE_BYTES`], as image decoding), `"annotations"` (a COCO
/// captions file, [`crate::limits::MAX_ANNOTATIONS_BYTES`], as `blipq bench --annotations`) or
/// `"benchmark images"` (the total of the images picked for one benchmark run,
/// [`crate::limits::MAX_BENCH_IMAGES_BYTES`]). An unknown kind or a size that is not a
/// non-negative number also throws.
#[wasm_bindgen(js_name = checkFileSize)]
pub fn check_file_size(kind: &str, name: &str, size: f64) -> std::result::Result<(), JsValue> {
    use crate::limits::{MAX_ANNOTATIONS_BYTES, MAX_BENCH_IMAGES_BYTES, MAX_IMAGE_BYTES};
    let max = match kind {
        "image" => MAX_IMAGE_BYTES,
        "annotations" => MAX_ANNOTATIONS_BYTES,
        "benchmark images" => MAX_BENCH_IMAGES_BYTES,
        _ => {
            return Err(js_err(Error::InvalidArgument(format!(
                "checkFileSize: unknown kind \"{kind}\" (expected image, annotations or \
                 benchmark images)"
            ))))
        }
    };
    if !(size >= 0.0 && size.is_finite()) {
        return Err(js_err(Error::InvalidArgument(format!(
            "checkFileSize: size of {name} is {size}, not a byte count"
        ))));
    }
    if size > max as f64 {
        return Err(js_err(crate::limits::too_large(name, size as u64, max)));
    }
    Ok(())
}

/// `shardNames(index: Uint8Array)` → the shard files a `model.safetensors.index.json` names, in
/// order, so the page fetches exactly those (the engine checks them against the index again when
/// it loads). Throws for an index that breaks the rules ([`crate::checkpoint::sharded`]).
#[wasm_bindgen(js_name = shardNames)]
pub fn shard_names(index: &[u8]) -> std::result::Result<Vec<String>, JsValue> {
    use crate::checkpoint::sharded::Index;
    let max = crate::limits::MAX_CONFIG_BYTES;
    if index.len() as u64 > max {
        return Err(js_err(crate::limits::too_large(
            SAFETENSORS_INDEX_FILE,
            index.len() as u64,
            max,
        )));
    }
    let text = std::str::from_utf8(index).map_err(|_| {
        js_err(Error::checkpoint(
            SAFETENSORS_INDEX_FILE,
            "is not UTF-8 text",
        ))
    })?;
    Ok(Index::parse(text, SAFETENSORS_INDEX_FILE)
        .map_err(js_err)?
        .shards)
}

/// `hubModel(spec, endpoint?)` → `{url, label}` for a Hugging Face Hub name (`owner/name` or
/// `owner/name@revision`: a branch, a commit or `refs/pr/N`), or `null` when `spec` is a URL or
/// path instead. `url` is the folder the Hub serves the files from (`endpoint`, default
/// `https://huggingface.co`, then `/<owner>/<name>/resolve/<revision>/`); `label` is the name.
/// Throws for a malformed name, saying what is wrong.
#[wasm_bindgen(js_name = hubModel, unchecked_return_type = "HubModel | null")]
pub fn hub_model(spec: &str, endpoint: Option<String>) -> std::result::Result<JsValue, JsValue> {
    use crate::checkpoint::hub::{HubModel, HUB_ENDPOINT};
    match HubModel::parse(spec).map_err(js_err)? {
        None => Ok(JsValue::NULL),
        Some(m) => to_js(&serde_json::json!({
            "url": m.folder_url(endpoint.as_deref().unwrap_or(HUB_ENDPOINT)),
            "label": m.label(),
        })),
    }
}

/// `version()` → the crate version, e.g. `"0.1.0"`.
#[wasm_bindgen]
pub fn version() -> String {
    console_error_panic_hook::set_once();
    env!("CARGO_PKG_VERSION").to_string()
}

/// `wasmMemoryBytes()` → the current size of this module's linear memory in bytes.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    // The threaded build's memory is shared: its buffer is a SharedArrayBuffer, which is no
    // ArrayBuffer (and whose constructor is not even a global on pages that are not
    // cross-origin isolated), so read `byteLength` by name.
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| js_sys::Reflect::get(&m.buffer(), &JsValue::from_str("byteLength")).ok())
        .and_then(|n| n.as_f64())
        .unwrap_or(0.0)
}

/// `initThreadPool(n)`, threaded build only (`+atomics`, see scripts/web.sh): rayon's global pool
/// on this worker and `n - 1` Web Workers ([`pool`]). The stable build has no such export:
/// feature-detect it.
#[cfg(target_feature = "atomics")]
pub mod pool;

/// Which of the page's two wasm builds this module is: `"relaxed-simd"` (the cargo feature of
/// the same name: the INT8 kernel on relaxed SIMD) or `"simd128"` (loads in every engine with
/// fixed-width SIMD). The worker picks one by feature detection (www/worker.js).
pub const WASM_BUILD: &str = if cfg!(feature = "relaxed-simd") {
    "relaxed-simd"
} else {
    "simd128"
};

/// `wasmBuild()` → [`WASM_BUILD`], for the page's status line and the benchmark report.
#[wasm_bindgen(js_name = wasmBuild)]
pub fn wasm_build() -> String {
    WASM_BUILD.to_string()
}

/// `browserDevice()` → the device string of browser runs in the reports (`blipq bench` writes
/// `cpu`): this build and the threads rayon's pool runs on, e.g.
/// `wasm32 relaxed-simd (browser, 2 threads)`. The worker that ran a benchmark sends its own.
#[wasm_bindgen(js_name = browserDevice)]
pub fn browser_device() -> String {
    let threads = rayon::current_num_threads();
    let s = if threads == 1 { "" } else { "s" };
    format!("wasm32 {WASM_BUILD} (browser, {threads} thread{s})")
}

/// `rayonThreads()` → how many threads rayon's global pool runs on: the `initThreadPool` size
/// once that resolved, else 1 (this thread alone). Calling it fixes the pool, so call it only
/// after `initThreadPool` (or when there will be none).
#[wasm_bindgen(js_name = rayonThreads)]
pub fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

/// wasm32 linear memory is addressed with 32 bits: 4 GiB at most.
pub const WASM32_MAX_MEMORY_BYTES: f64 = 4_294_967_296.0;

/// Bytes the loaded weights will occupy in wasm memory: F32 for every float tensor (F16, BF16 and
/// F64 are converted), the INT8 kernels' packed blocks (an f32 scale and 32 int8 values: 36
/// bytes per 32 values) for INT8 ones.
pub fn loaded_bytes_estimate(header: &SafetensorsHeader) -> f64 {
    let int8_bytes_per_value = std::mem::size_of::<crate::kernels::q8::PanelBlock>() as f64
        / (crate::kernels::q8::PANEL * crate::checkpoint::BLOCK) as f64;
    header
        .tensors
        .values()
        .map(|e| {
            let n = e.shape.iter().product::<usize>() as f64;
            match e.dtype {
                StoredDType::I8 => n * int8_bytes_per_value,
                // Two 4-bit weights per byte, packed with an f32 scale per 32.
                StoredDType::U8 => {
                    2.0 * n * std::mem::size_of::<crate::kernels::q8::Panel4Block>() as f64
                        / (crate::kernels::q8::PANEL * crate::checkpoint::BLOCK) as f64
                }
                _ => n * 4.0,
            }
        })
        .sum()
}

/// `checkWeightsPrefix(prefix: Uint8Array)` → the number of leading bytes of a
/// `model.safetensors` download still needed to judge it, or 0 once judged fine. Throws the
/// engine's own error when the header breaks the format's rules or the weights cannot fit in
/// wasm memory next to what is in use, so a download can stop after the header.
#[wasm_bindgen(js_name = checkWeightsPrefix)]
pub fn check_weights_prefix(prefix: &[u8]) -> std::result::Result<u32, JsValue> {
    if prefix.len() < 8 {
        return Ok(8);
    }
    let n = SafetensorsHeader::header_len(prefix, SAFETENSORS_FILE).map_err(js_err)?;
    if prefix.len() < 8 + n {
        return Ok((8 + n) as u32);
    }
    let header =
        SafetensorsHeader::parse_layout(&prefix[8..8 + n], SAFETENSORS_FILE).map_err(js_err)?;
    check_fits_in_wasm_memory(
        SAFETENSORS_FILE,
        loaded_bytes_estimate(&header),
        wasm_memory_bytes(),
    )
    .map_err(js_err)?;
    Ok(0)
}

/// Refuses, with a plain message, a model whose weights cannot fit into wasm32's 4 GiB next to
/// what is already in use (instead of letting an allocation abort the module half-way).
pub fn check_fits_in_wasm_memory(file: &str, needed: f64, in_use: f64) -> Result<()> {
    use crate::MB;
    if needed + in_use > WASM32_MAX_MEMORY_BYTES {
        return Err(Error::checkpoint(
            file,
            format!(
                "model too large for wasm memory: its weights need about {:.0} MB once loaded, \
                 {:.0} MB are already in use, and WebAssembly (wasm32) memory is limited to {:.0} MB; \
                 use the INT8 checkpoint or the native `blipq` CLI",
                needed / MB,
                in_use / MB,
                WASM32_MAX_MEMORY_BYTES / MB
            ),
        ));
    }
    Ok(())
}

/// `bleu4(caption: string, references: string[])` → BLEU-4 (0..1) of one caption against its
/// references, tokenized and scored as `pycocoevalcap` does for a one-image set (the same
/// [`crate::eval::metrics::bleu4`] the native reports use). 0 when `references` is empty.
#[wasm_bindgen(js_name = bleu4)]
pub fn bleu4_js(
    caption: &str,
    #[wasm_bindgen(unchecked_param_type = "string[]")] references: JsValue,
) -> std::result::Result<f64, JsValue> {
    let refs: Vec<String> = serde_wasm_bindgen::from_value(references)
        .map_err(|_| arg_err("bleu4: references must be an array of strings"))?;
    Ok(crate::eval::metrics::bleu4(caption, &refs))
}

/// `benchItems(annotationsJson: string, fileName?: string)` → the benchmark items of a COCO
/// captions file, `[{file, image_id, references}]`, in evaluation order (as `blipq bench` reads
/// `--annotations`). Errors name `fileName` (default `captions.json`).
#[wasm_bindgen(js_name = benchItems, unchecked_return_type = "BenchItem[]")]
pub fn bench_items(
    annotations_json: &str,
    #[wasm_bindgen(js_name = fileName)] file_name: Option<String>,
) -> std::result::Result<JsValue, JsValue> {
    let file = file_name.unwrap_or_else(|| "captions.json".into());
    let ann = crate::eval::metrics::parse_annotations(annotations_json, &file).map_err(js_err)?;
    to_js(&bench::items_from_annotations(&ann))
}

/// One model's raw benchmark run, as the page collects it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsBenchModel {
    label: String,
    samples: Vec<Sample>,
    #[serde(default)]
    failures: Vec<Failure>,
    /// `info()` of the model: only the fields of [`ModelInfo`] are read.
    info: ModelInfo,
    /// Size of the weight file in bytes.
    model_size_bytes: f64,
    /// Where the model came from (a URL or a folder name).
    model_path: String,
    /// Peak wasm linear memory of the run, bytes (`null` if unknown).
    #[serde(default)]
    peak_memory_bytes: Option<f64>,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsBenchInput {
    items: Vec<Item>,
    models: Vec<JsBenchModel>,
}

/// What `benchReport` returns: the files `blipq bench` writes, as text.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsBenchReport {
    models: Vec<JsBenchModelReport>,
    comparison_markdown: String,
    comparison_json: String,
    /// `size_vs_quality.svg` and `speed_vs_quality.svg` ([`crate::eval::chart`]).
    charts: Vec<JsChart>,
}

#[derive(Serialize)]
struct JsChart {
    file: &'static str,
    svg: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsBenchModelReport {
    label: String,
    /// `<label>_results.json`
    results_json: String,
    /// `<label>_captions.json` (COCO results format)
    captions_json: String,
}

/// The per-model results of a browser benchmark, computed exactly as `blipq bench` does
/// ([`bench::model_results`]).
fn bench_report_results(items: &[Item], models: Vec<JsBenchModel>) -> Result<Vec<ModelResults>> {
    models
        .into_iter()
        .map(|m| {
            let info = ModelInfoReport::new(
                &m.info,
                m.model_size_bytes / crate::MB,
                m.device.unwrap_or_else(browser_device),
                m.model_path,
            );
            let run = bench::Run {
                samples: m.samples,
                failures: m.failures,
            };
            let peak_mb = m.peak_memory_bytes.map(|b| b / crate::MB);
            bench::model_results(&m.label, items, run, 1, peak_mb, info)
        })
        .collect()
}

/// `benchReport({items, models: [{label, samples, failures?, info, modelSizeBytes, modelPath,
/// peakMemoryBytes?, device?}]})` → `{models: [{label, resultsJson, captionsJson}],
/// comparisonMarkdown, comparisonJson, charts: [{file, svg}]}`: the text of
/// `<label>_results.json`, `<label>_captions.json`, `comparison.md`, `comparison.json` and the
/// trade-off charts (`size_vs_quality.svg`, `speed_vs_quality.svg`) exactly as `blipq bench`
/// writes them. `items` are `benchItems()`'s; `samples` are `{image, image_id, caption, token_ids,
/// new_tokens, timings}` per captioned image; the first model is the reference of the
/// improvement column.
#[wasm_bindgen(js_name = benchReport, unchecked_return_type = "BenchReport")]
pub fn bench_report(
    #[wasm_bindgen(unchecked_param_type = "BenchInput")] input: JsValue,
) -> std::result::Result<JsValue, JsValue> {
    // Through JSON text so that image ids keep serde_json's integer/string distinction and
    // errors carry serde_json's path-less but precise messages.
    let text: String = js_sys::JSON::stringify(&input)
        .map_err(|_| arg_err("benchReport: the input cannot be converted to JSON"))?
        .into();
    let input: JsBenchInput = serde_json::from_str(&text)
        .map_err(|e| arg_err(format!("benchReport: malformed input: {e}")))?;
    if input.models.is_empty() {
        return Err(arg_err("benchReport: `models` is empty"));
    }
    let results = bench_report_results(&input.items, input.models).map_err(js_err)?;
    let report = JsBenchReport {
        models: results
            .iter()
            .map(|r| {
                Ok(JsBenchModelReport {
                    label: r.label.clone(),
                    results_json: pretty(r)?,
                    captions_json: pretty(&bench::coco_results(&r.samples))?,
                })
            })
            .collect::<std::result::Result<_, JsValue>>()?,
        comparison_markdown: bench::comparison_markdown(&results),
        comparison_json: pretty(&bench::comparison_json(&results))?,
        charts: crate::eval::chart::tradeoff_charts(&results)
            .into_iter()
            .map(|(file, svg)| JsChart { file, svg })
            .collect(),
    };
    to_js(&report)
}

/// `serde_json::to_string_pretty`, as `blipq bench` writes its files.
fn pretty<T: Serialize>(value: &T) -> std::result::Result<String, JsValue> {
    serde_json::to_string_pretty(value)
        .map_err(|e| arg_err(format!("benchReport: could not write the report: {e}")))
}
