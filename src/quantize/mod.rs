//! FP32 -> INT8 checkpoints (the format is [`crate::checkpoint::int8`]'s) and the validation that
//! compares the two models on a few images.
//!
//! Blocks are quantized by candle's own `Q8_0` quantizer and then split into int8 values and f16
//! scales, so loading the INT8 file repacks the very same blocks: quantize -> load is exact.
//!
//! May use: `checkpoint` (the INT8 format, `checkpoint::int8`), `convert` (the F16 / BF16
//! schemes), `captioner` (the FP32-vs-INT8 validation), `eval::metrics` (token agreement),
//! `fsio`, `clock`, `error`.

pub mod calibrate;
#[cfg(not(target_arch = "wasm32"))]
pub mod job;
pub mod mixed;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use safetensors::Dtype;
use serde::Serialize;

use crate::checkpoint::int8::{self, split_q8_0, Layout, BLOCK};
use crate::checkpoint::writer::{self, OutTensor};
use crate::checkpoint::Checkpoint;
use crate::{Caption, CaptionOptions, Captioner, Error, Result};

/// Greedy token agreement ([`crate::eval::metrics::token_agreement`], shared with the benchmark
/// report).
pub use crate::eval::metrics::token_agreement;

/// The format this writes (`crate::checkpoint::int8`, its one home).
pub use crate::checkpoint::int8::{is_quantizable, FORMAT, FORMAT_VERSION};

/// How `blipq quantize` stores the weights (`--scheme`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// blipq's INT8 format ([`crate::checkpoint::int8`]): candle's `Q8_0` blocks of 32 int8
    /// values with an f16 scale, for every quantizable `nn.Linear`; computed by the INT8 kernels.
    #[default]
    Q8_0,
    /// Symmetric int8 weights with one f32 scale per output channel, activations quantized per
    /// token at run time (the recipe of PyTorch's `quantize_dynamic` and ONNX Runtime's dynamic
    /// quantization): the INT8 kernels sum whole rows in int32 and scale once.
    #[serde(rename = "int8-channel")]
    Int8Channel,
    /// 4-bit blocks of 32 with an f16 scale (candle's / llama.cpp's `Q4_0`) for every linear
    /// weight; the word embeddings (and the tied LM head) stay `Q8_0`.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit groups of 128 values with an f16 scale (the group size of GPTQ/AWQ checkpoints),
    /// where a weight's input size allows, else blocks of 32; word embeddings `Q8_0`.
    #[serde(rename = "q4_g128")]
    Q4G128,
    /// A per-layer plan from a sensitivity sweep on the validation images: the most sensitive
    /// layer groups `Q8_0`, the rest 4-bit, within a size budget ([`mixed`]).
    #[serde(rename = "mixed")]
    Mixed,
    /// Every weight rounded to IEEE half precision: half the size, computed in f32.
    F16,
    /// Every weight rounded to bfloat16: half the size, f32's range, computed in f32.
    Bf16,
}

impl std::str::FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "int8" => Ok(Self::Q8_0),
            "int8-channel" | "int8_channel" => Ok(Self::Int8Channel),
            "q4_0" | "int4" => Ok(Self::Q4_0),
            "q4_g128" => Ok(Self::Q4G128),
            "mixed" => Ok(Self::Mixed),
            "f16" | "fp16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(Error::InvalidArgument(format!(
                "scheme \"{s}\": expected q8_0, int8-channel, q4_0, q4_g128, mixed, f16 or bf16"
            ))),
        }
    }
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Int8Channel => int8::CHANNEL_SCHEME,
            Self::Q4_0 => int8::Q4_0_SCHEME,
            Self::Q4G128 => int8::Q4_G128_SCHEME,
            Self::Mixed => int8::MIXED_SCHEME,
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// Whether the scheme stores 4-bit weights.
    pub fn has_int4(self) -> bool {
        matches!(self, Self::Q4_0 | Self::Q4G128 | Self::Mixed)
    }

    /// What `--calibrate` does for the scheme ([`calibrate`]; the value of
    /// [`CALIBRATION_KEY`]), `None` where it does nothing.
    pub fn calibration_method(self) -> Option<&'static str> {
        self.layout().and_then(calibration_method)
    }

    /// The layout of the INT8 (and 4-bit) file the scheme writes; `None` for the
    /// half-precision ones, which are plain checkpoints.
    pub fn layout(self) -> Option<Layout> {
        match self {
            Self::Q8_0 => Some(Layout::Blocks),
            Self::Int8Channel => Some(Layout::Channel),
            Self::Q4_0 => Some(Layout::Int4 { group: BLOCK }),
            Self::Q4G128 => Some(Layout::Int4 { group: 128 }),
            Self::Mixed => Some(Layout::Mixed),
            Self::F16 | Self::Bf16 => None,
        }
    }

    /// Whether the scheme stores int8 weights (computed by the INT8 kernels).
    pub fn is_int8(self) -> bool {
        self.half().is_none()
    }

    /// The dtype a half-precision scheme writes; `None` for the INT8 ones.
    fn half(self) -> Option<crate::convert::OutDType> {
        match self {
            Self::Q8_0 | Self::Int8Channel | Self::Q4_0 | Self::Q4G128 | Self::Mixed => None,
            Self::F16 => Some(crate::convert::OutDType::F16),
            Self::Bf16 => Some(crate::convert::OutDType::BF16),
        }
    }
}

/// The metadata key naming the scheme of a file `blipq quantize` wrote other than `q8_0` (next
/// to `source`, the SHA-256 of the file it was made from).
pub use crate::checkpoint::int8::SCHEME_KEY;

/// What the quantizer did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuantizeSummary {
    pub quantized_tensors: usize,
    pub kept_tensors: usize,
    pub output_bytes: usize,
}

/// How one quantizable weight is stored (in reports: `f32`, `q8_0`, `int8-channel`, `q4_0`,
/// `q4_g128`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Kept in f32.
    F32,
    /// candle's `Q8_0` blocks (int8, an f16 scale per 32).
    Q8_0,
    /// int8 with an f32 scale per output channel.
    Int8Channel,
    /// 4 bits in groups of this many values (32: candle's `Q4_0`), an f16 scale per group.
    Int4(usize),
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Precision::F32 => s.serialize_str("f32"),
            Precision::Q8_0 => s.serialize_str("q8_0"),
            Precision::Int8Channel => s.serialize_str(int8::CHANNEL_SCHEME),
            Precision::Int4(BLOCK) => s.serialize_str(int8::Q4_0_SCHEME),
            Precision::Int4(group) => s.serialize_str(&format!("q4_g{group}")),
        }
    }
}

impl Precision {
    /// The precision of a quantizable weight in a file of `layout`: the layout's own, except
    /// that a 4-bit file keeps the word embeddings (the tied LM head's table) `Q8_0`.
    pub fn of(layout: Layout, name: &str) -> Self {
        match layout {
            Layout::Blocks => Precision::Q8_0,
            Layout::Channel => Precision::Int8Channel,
            Layout::Int4 { .. } | Layout::Mixed if name.contains("word_embeddings") => {
                Precision::Q8_0
            }
            Layout::Int4 { group } => Precision::Int4(group),
            Layout::Mixed => Precision::Int4(BLOCK),
        }
    }

    /// Bytes of a `[rows, cols]` weight stored this way (scales included).
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let n = rows * cols;
        match self {
            Precision::F32 => 4 * n,
            Precision::Q8_0 => n + 2 * n / BLOCK,
            Precision::Int8Channel => n + 4 * rows,
            Precision::Int4(group) => n / 2 + 2 * n / int8::int4_group(group, cols),
        }
    }
}

/// Serializes the INT8 version of `ckpt` in `layout` (`Q8_0` blocks, per channel or 4-bit).
/// `source_sha256` names the FP32 file in the metadata; `on_tensor(done, total, name)` reports
/// progress.
pub fn quantize_checkpoint(
    ckpt: &Checkpoint,
    layout: Layout,
    source_sha256: &str,
    importance: Option<&Importance>,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Vec<u8>, QuantizeSummary)> {
    quantize_with(
        ckpt,
        (layout, source_sha256, &[]),
        &|name| Precision::of(layout, name),
        importance,
        on_tensor,
    )
}

/// The metadata key a calibrated file ([`calibrate`]) carries, saying how it was calibrated.
pub const CALIBRATION_KEY: &str = "blipq_calibration";
/// [`CALIBRATION_KEY`]'s value in a calibrated 4-bit (or mixed) file.
pub const CALIBRATION_METHOD: &str = "activation-weighted 4-bit scales";
/// [`CALIBRATION_KEY`]'s value in a calibrated `int8-channel` file.
pub const SMOOTHING_METHOD: &str =
    "SmoothQuant smoothing (alpha 0.75, powers of two) of the vision LayerNorm -> qkv and fc1 pairs";

pub use calibrate::Importance;

/// What calibration does to a file of `layout` ([`CALIBRATION_KEY`]'s value), `None` where it
/// does nothing: 4-bit files get activation-weighted scales, per-channel ones are smoothed.
fn calibration_method(layout: Layout) -> Option<&'static str> {
    match layout {
        Layout::Int4 { .. } | Layout::Mixed => Some(CALIBRATION_METHOD),
        Layout::Channel => Some(SMOOTHING_METHOD),
        Layout::Blocks => None,
    }
}

/// Serializes `ckpt` with each quantizable weight (`is_quantizable`) stored as `precision(name)`
/// says, every other tensor f32; the metadata is `layout`'s ([`int8::metadata`]) with
/// `source_sha256` and the `extra` keys. With `importance` ([`calibrate`]), 4-bit weights get
/// activation-weighted scales (a weight without statistics: uniform weights), a per-channel file
/// is smoothed ([`calibrate::smoothing`]), and the metadata says so ([`CALIBRATION_KEY`]).
pub fn quantize_with(
    ckpt: &Checkpoint,
    (layout, source_sha256, extra): (Layout, &str, &[(&str, &str)]),
    precision: &dyn Fn(&str) -> Precision,
    importance: Option<&Importance>,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Vec<u8>, QuantizeSummary)> {
    let names = ckpt.names();
    let mut out: Vec<(String, OutTensor)> = Vec::with_capacity(names.len() + 100);
    let mut summary = QuantizeSummary::default();
    // Tied duplicates (a `torch.save` file's second name for the word embeddings or the LM-head
    // bias) are left out, as `blipq convert` and transformers leave them out: the loader ties
    // them again.
    let tied = ckpt.tied_duplicates()?;
    let method = match importance {
        Some(_) => Some(calibration_method(layout).ok_or_else(|| {
            Error::Internal(format!("calibration does nothing for a {layout:?} file"))
        })?),
        None => None,
    };
    let smoothing = match importance {
        Some(imp) if method == Some(SMOOTHING_METHOD) => {
            let factors = calibrate::smoothing(ckpt, imp)?;
            if factors.is_empty() {
                return Err(Error::checkpoint(
                    ckpt.file(),
                    "has no vision LayerNorm -> qkv or fc1 pair with activation statistics: \
                     there is nothing to smooth",
                ));
            }
            factors
        }
        _ => Default::default(),
    };
    for (i, name) in names.iter().enumerate() {
        on_tensor(i, names.len(), name);
        // `position_ids` is an integer buffer transformers rebuilds; it holds no weights.
        if (name.ends_with(".position_ids") && ckpt.info(name).is_none()) || tied.contains(name) {
            continue;
        }
        let (dtype, shape) = ckpt.lookup(name)?;
        if dtype.is_quantized() {
            return Err(Error::checkpoint(
                ckpt.file(),
                format!(
                    "tensor `{name}` is already quantized ({}): quantize an FP32 checkpoint",
                    dtype.as_str()
                ),
            ));
        }
        let precision = if is_quantizable(name, &shape) {
            precision(name)
        } else {
            Precision::F32
        };
        if precision == Precision::F32 {
            summary.kept_tensors += 1;
        } else {
            summary.quantized_tensors += 1;
        }
        let stored = (precision, smoothing.get(name.as_str()).map(Vec::as_slice));
        out.extend(stored_tensors(ckpt, name, &shape, stored, importance)?);
    }
    on_tensor(names.len(), names.len(), "");
    let bytes = writer::serialize(
        out,
        int8::metadata(layout, source_sha256)
            .into_iter()
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .chain(method.map(|m| (CALIBRATION_KEY.to_string(), m.to_string())))
            .collect(),
        crate::checkpoint::files::SAFETENSORS_FILE,
    )?;
    summary.output_bytes = bytes.len();
    Ok((bytes, summary))
}

/// The tensors that store weight `name` (`shape`) as `precision`: the f32 values, or the
/// quantized values and their scales (`<name>_scale`), after multiplying the last dimension by
/// `factors` if given (smoothing, [`calibrate::smoothing`]); with `importance`, 4-bit scales are
/// activation-weighted ([`calibrate`]; uniform weights for a name without statistics).
fn stored_tensors(
    ckpt: &Checkpoint,
    name: &str,
    shape: &[usize],
    (precision, factors): (Precision, Option<&[f32]>),
    importance: Option<&Importance>,
) -> Result<Vec<(String, OutTensor)>> {
    let t = ckpt.load_f32(name, shape, &Device::Cpu)?;
    let t = match factors {
        Some(f) => calibrate::scale_last_dim(&t, f)?,
        None => t,
    };
    let tensor = |dtype, shape: Vec<usize>, data| OutTensor { dtype, shape, data };
    let (rows, cols) = match shape {
        [rows, cols] if precision == Precision::F32 || is_quantizable(name, shape) => {
            (*rows, *cols)
        }
        _ if precision == Precision::F32 => (0, 0),
        _ => {
            return Err(Error::Internal(format!(
                "`{name}` {shape:?} is not a quantizable weight"
            )))
        }
    };
    let (values, scales) = match precision {
        Precision::F32 => {
            return Ok(vec![(
                name.to_string(),
                tensor(Dtype::F32, shape.to_vec(), f32_bytes(&t)?),
            )])
        }
        Precision::Int4(group) => {
            let group = int8::int4_group(group, cols);
            let (q, scales) = match importance {
                Some(imp) => match imp.get(name) {
                    Some(w) => calibrate::quantize_int4_weighted(&t, group, &w.mean_square)?,
                    None => calibrate::quantize_int4_weighted(&t, group, &vec![1f32; cols])?,
                },
                None => quantize_int4(&t, group)?,
            };
            (
                tensor(Dtype::U8, vec![rows, cols / 2], q),
                tensor(Dtype::F16, vec![rows, cols / group], scales),
            )
        }
        Precision::Int8Channel => {
            let (q, scales) = quantize_channels(&t)?;
            (
                tensor(Dtype::I8, shape.to_vec(), q),
                tensor(
                    Dtype::F32,
                    vec![rows, 1],
                    scales.iter().flat_map(|d| d.to_le_bytes()).collect(),
                ),
            )
        }
        Precision::Q8_0 => {
            let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
            let (qs, scales) = split_q8_0(&q.data()?, rows, cols);
            (
                tensor(Dtype::I8, shape.to_vec(), qs),
                tensor(Dtype::F16, vec![rows, cols / BLOCK], scales),
            )
        }
    };
    Ok(vec![
        (name.to_string(), values),
        (int8::scale_name(name), scales),
    ])
}

/// A safetensors file of `layout` holding only weights `names` (each `[rows, cols]` as
/// `precision(name)` stores it): the quantized matrices of a mixed-scheme trial, loaded by the
/// same code as a whole file's ([`mixed`]).
pub fn quantized_subset(
    ckpt: &Checkpoint,
    layout: Layout,
    names: &[&str],
    precision: &dyn Fn(&str) -> Precision,
    importance: Option<&Importance>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * names.len());
    for &name in names {
        let (_, shape) = ckpt.lookup(name)?;
        out.extend(stored_tensors(
            ckpt,
            name,
            &shape,
            (precision(name), None),
            importance,
        )?);
    }
    writer::serialize(
        out,
        int8::metadata(layout, "").into_iter().collect(),
        crate::checkpoint::files::SAFETENSORS_FILE,
    )
}

/// A `[rows, cols]` matrix quantized per row: `d = max |w| / 127` (f32), `q = round(w / d)`;
/// returns the int8 values (as bytes, row-major) and the row scales.
pub fn quantize_channels(t: &Tensor) -> Result<(Vec<u8>, Vec<f32>)> {
    let (_, cols) = t.dims2()?;
    let w: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / cols.max(1));
    for row in w.chunks_exact(cols) {
        let d = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        q.extend(
            row.iter()
                .map(|v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8),
        );
        scales.push(d);
    }
    Ok((q, scales))
}

/// A `[rows, cols]` matrix quantized to 4 bits in groups of `group` values along each row, by
/// candle's `Q4_0` rule: `d = m / -8` where `m` is the group's value of largest magnitude (with
/// its sign), `u = min(15, trunc(w / d + 8.5))`, so `q = u - 8` in `-8..=7`. Returns the nibbles
/// in candle's `Q4_0` byte order (per block of 32: byte `i` holds values `i` and `i + 16`) and
/// the f16 scales (little-endian bytes, `[rows, cols / group]`). With `group` 32 this is
/// candle's `Q4_0` exactly.
pub fn quantize_int4(t: &Tensor, group: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let (_, cols) = t.dims2()?;
    check_int4_group(group, cols)?;
    let w: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let mut q = Vec::with_capacity(w.len() / 2);
    let mut scales = Vec::with_capacity(2 * w.len() / group);
    for g in w.chunks_exact(group) {
        let m = g
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = m / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        scales.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let u = |v: f32| ((v * id + 8.5) as u8).min(15);
        for b in g.chunks_exact(BLOCK) {
            q.extend((0..BLOCK / 2).map(|i| u(b[i]) | u(b[i + BLOCK / 2]) << 4));
        }
    }
    Ok((q, scales))
}

/// Whether 4-bit groups of `group` values divide rows of `cols` into whole blocks of 32.
fn check_int4_group(group: usize, cols: usize) -> Result<()> {
    if group == 0 || !group.is_multiple_of(BLOCK) || !cols.is_multiple_of(group) {
        return Err(Error::InvalidArgument(format!(
            "4-bit groups of {group} do not divide rows of {cols} values into blocks of {BLOCK}"
        )));
    }
    Ok(())
}

fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Whether a checkpoint's metadata marks it as a blipq INT8 file.
pub fn is_blipq_int8(ckpt: &Checkpoint) -> bool {
    int8::claims_int8(&ckpt.metadata())
}

/// FP32-vs-INT8 agreement on a set of images (`quantized_results.json`'s `validation`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    pub total_samples: usize,
    pub successful_samples: usize,
    pub success_rate: f64,
    /// Mean seconds per image of the INT8 model.
    pub avg_inference_time: f64,
    /// Mean seconds per image of the FP32 model.
    pub fp32_avg_inference_time: f64,
    /// Mean fraction of greedy token positions where INT8 and FP32 agree.
    pub token_agreement: f64,
    /// Mean cosine similarity of the vision encoder outputs.
    pub embedding_cosine: f64,
    pub samples: Vec<ValidationSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationSample {
    pub image: String,
    pub fp32_caption: Option<String>,
    pub int8_caption: Option<String>,
    pub token_agreement: Option<f64>,
    pub embedding_cosine: Option<f64>,
    pub error: Option<String>,
}

/// Cosine similarity of two tensors, flattened.
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.flatten_all()?.to_vec1()?;
    Ok(crate::eval::metrics::cosine(&a, &b))
}

fn validate_one(
    fp32: &Captioner,
    int8: &Captioner,
    name: &str,
    bytes: &[u8],
) -> Result<(Caption, Caption, f64)> {
    let opts = CaptionOptions::default();
    let a = fp32.caption(bytes, name, &opts, &mut |_| {})?;
    let b = int8.caption(bytes, name, &opts, &mut |_| {})?;
    let pixels = fp32.pixel_values(bytes, name)?;
    let cos = cosine(&fp32.encode_image(&pixels)?, &int8.encode_image(&pixels)?)?;
    if !cos.is_finite() {
        return Err(Error::image(
            name,
            "the vision encoders' outputs are not finite (NaN or infinite): the model is broken",
        ));
    }
    Ok((a, b, cos))
}

/// Runs both models on `images` (name, bytes); a failing image is recorded, not fatal.
pub fn validate(
    fp32: &Captioner,
    int8: &Captioner,
    images: &[(String, Vec<u8>)],
    on_image: &mut dyn FnMut(usize, usize),
) -> Validation {
    let mut v = Validation {
        total_samples: images.len(),
        ..Default::default()
    };
    let (mut t8, mut t32, mut agree, mut cos) = (0.0, 0.0, 0.0, 0.0);
    for (i, (name, bytes)) in images.iter().enumerate() {
        on_image(i, images.len());
        let sample = match validate_one(fp32, int8, name, bytes) {
            Ok((a, b, c)) => {
                let ag = token_agreement(&a.token_ids, &b.token_ids);
                v.successful_samples += 1;
                t32 += a.timings.total_s;
                t8 += b.timings.total_s;
                agree += ag;
                cos += c;
                ValidationSample {
                    image: name.clone(),
                    fp32_caption: Some(a.caption),
                    int8_caption: Some(b.caption),
                    token_agreement: Some(ag),
                    embedding_cosine: Some(c),
                    error: None,
                }
            }
            Err(e) => ValidationSample {
                image: name.clone(),
                fp32_caption: None,
                int8_caption: None,
                token_agreement: None,
                embedding_cosine: None,
                error: Some(e.to_string()),
            },
        };
        v.samples.push(sample);
    }
    on_image(images.len(), images.len());
    let n = v.successful_samples.max(1) as f64;
    v.success_rate = if images.is_empty() {
        0.0
    } else {
        v.successful_samples as f64 / images.len() as f64
    };
    v.avg_inference_time = t8 / n;
    v.fp32_avg_inference_time = t32 / n;
    v.token_agreement = agree / n;
    v.embedding_cosine = cos / n;
    v
}

/// Photos compiled in so that validation (and the mixed scheme's sweep, in the page too) always
/// has real images.
const BUILTIN_PHOTOS: [(&str, &[u8]); 3] = [
    (
        "astronaut.jpg",
        include_bytes!("../../data/validation/astronaut.jpg"),
    ),
    (
        "coffee.jpg",
        include_bytes!("../../data/validation/coffee.jpg"),
    ),
    (
        "chelsea.png",
        include_bytes!("../../data/validation/chelsea.png"),
    ),
];

/// The built-in validation set: the three photos of `data/validation` (compiled in) and three
/// synthetic images ([`synthetic_images`] at 160 pixels). `blipq quantize` adds a folder's
/// images to these; the page uses these alone.
pub fn builtin_validation_images() -> Result<Vec<(String, Vec<u8>)>> {
    let mut images: Vec<(String, Vec<u8>)> = BUILTIN_PHOTOS
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    images.extend(synthetic_images(160)?);
    Ok(images)
}

/// Deterministic synthetic test images (PNG): a colour gradient, a checkerboard and seeded noise.
pub fn synthetic_images(size: u32) -> Result<Vec<(String, Vec<u8>)>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let gradient = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x * 255 / size) as u8, (y * 255 / size) as u8, 128])
    });
    let checker = image::RgbImage::from_fn(size, size, |x, y| {
        if (x / 16 + y / 16) % 2 == 0 {
            image::Rgb([230, 40, 40])
        } else {
            image::Rgb([20, 20, 200])
        }
    });
    let noisy =
        image::RgbImage::from_fn(size, size, |_, _| image::Rgb([noise(), noise(), noise()]));
    [
        ("synthetic-gradient.png", gradient),
        ("synthetic-checker.png", checker),
        ("synthetic-noise.png", noisy),
    ]
    .into_iter()
    .map(|(n, img)| {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png)
            .map_err(|e| Error::image(n, format!("cannot encode: {e}")))?;
        Ok((n.to_string(), buf.into_inner()))
    })
    .collect()
}

/// Result of quantizing a checkpoint directory (`quantized_results.json`'s `model_metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetrics {
    /// How the weights are stored (`--scheme`).
    pub scheme: Scheme,
    /// The FP32 weights file, in MB of 2^20 bytes ([`crate::MB`], said by `size_unit`).
    pub original_size_mb: f64,
    /// The INT8 weights file, in MB of 2^20 bytes.
    pub quantized_size_mb: f64,
    /// `"MB = 2^20 bytes"`: the unit of the two sizes.
    pub size_unit: &'static str,
    pub size_reduction_ratio: f64,
    pub quantization_time_seconds: f64,
    pub quantized_tensors: usize,
    pub kept_tensors: usize,
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes hashed per step by [`sha256_source`].
const HASH_CHUNK: usize = 16 << 20;

/// SHA-256 of a byte source (a file held by the page, a memory map), read in chunks of 16 MiB,
/// lowercase hex; `on_bytes(done, total)` follows each chunk.
pub fn sha256_source(
    src: &dyn crate::checkpoint::ByteSource,
    on_bytes: &mut dyn FnMut(usize, usize),
) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let total = src.len();
    let mut at = 0;
    while at < total {
        let end = (at + HASH_CHUNK).min(total);
        h.update(&*src.read(at, end)?);
        at = end;
        on_bytes(at, total);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of a file, streamed, lowercase hex.
#[cfg(not(target_arch = "wasm32"))]
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let mut f = crate::fsio::open_regular(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path.display(), e))?;
    Ok(hex(&h.finalize()))
}

/// The INT8 `model.safetensors` of a checkpoint's files: every input is checked first (configs
/// parsed, weights present with the right shapes) and an INT8 input is refused; only then is
/// `source_sha256()` asked for the SHA-256 of the weights file as stored (a sharded checkpoint's:
/// of its index), which goes into the metadata. The one
/// path of `blipq quantize` ([`quantize_dir`]) and the page's "Make INT8"
/// (`quantizeCheckpoint`), so both write the same bytes.
pub fn quantize_model(
    files: &crate::ModelFiles,
    scheme: Scheme,
    importance: Option<&Importance>,
    source_sha256: &mut dyn FnMut() -> Result<String>,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Vec<u8>, QuantizeSummary)> {
    check_calibration(scheme, importance.is_some())?;
    crate::captioner::Parts::check(files)?;
    let ckpt = &files.weights;
    if is_blipq_int8(ckpt) {
        return Err(Error::checkpoint(
            ckpt.file(),
            "is already a blipq INT8 checkpoint",
        ));
    }
    let sha = source_sha256()?;
    let Some(dtype) = scheme.half() else {
        let layout = match scheme.layout() {
            Some(Layout::Mixed) => {
                return Err(Error::InvalidArgument(
                    "the mixed scheme chooses its plan with a sensitivity sweep on validation \
                     images: make it with `quantize_model_mixed`"
                        .into(),
                ))
            }
            Some(layout) => layout,
            None => {
                return Err(Error::Internal(format!(
                    "{} has no INT8 layout",
                    scheme.as_str()
                )))
            }
        };
        return quantize_checkpoint(ckpt, layout, &sha, importance, on_tensor);
    };
    let metadata = [(SCHEME_KEY, scheme.as_str()), ("source", sha.as_str())];
    let (bytes, s) = crate::convert::convert_checkpoint(ckpt, dtype, &metadata, on_tensor)?;
    Ok((
        bytes,
        QuantizeSummary {
            quantized_tensors: s.tensors,
            kept_tensors: 0,
            output_bytes: s.output_bytes,
        },
    ))
}

/// Refuses calibration for a scheme it does nothing for.
pub fn check_calibration(scheme: Scheme, calibrate: bool) -> Result<()> {
    if calibrate && scheme.calibration_method().is_none() {
        return Err(Error::InvalidArgument(format!(
            "calibration chooses 4-bit scales (q4_0, q4_g128, mixed) or smooths activations \
             into per-channel weights (int8-channel); it does nothing for {}",
            scheme.as_str()
        )));
    }
    Ok(())
}

/// The mixed-precision `model.safetensors` of a checkpoint's files (the path of `blipq quantize
/// --scheme mixed`, [`quantize_dir_mixed`], and of the page's "Make mixed"): the inputs checked
/// and an INT8 input refused as in [`quantize_model`], then the sensitivity sweep on `images` and
/// the plan within `opts` ([`mixed::quantize_mixed`]).
pub fn quantize_model_mixed(
    files: &crate::ModelFiles,
    images: &[(String, Vec<u8>)],
    opts: mixed::MixedOptions,
    importance: Option<&Importance>,
    source_sha256: &mut dyn FnMut() -> Result<String>,
    on_stage: mixed::OnStage,
) -> Result<(Vec<u8>, QuantizeSummary, mixed::MixedPlan)> {
    crate::captioner::Parts::check(files)?;
    if is_blipq_int8(&files.weights) {
        return Err(Error::checkpoint(
            files.weights.file(),
            "is already a blipq quantized checkpoint",
        ));
    }
    opts.check()?;
    let sha = source_sha256()?;
    mixed::quantize_mixed(files, images, opts, importance, &sha, on_stage)
}

/// Quantizes the checkpoint in `model_dir` into `out` (not yet committed): INT8
/// `model.safetensors` plus unchanged copies of the config, tokenizer and processor files. Every
/// input is read and checked (configs parsed, weights finite) before anything is written.
#[cfg(not(target_arch = "wasm32"))]
pub fn quantize_dir(
    model_dir: &std::path::Path,
    out: &crate::fsio::OutputDir,
    scheme: Scheme,
    importance: Option<&Importance>,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<ModelMetrics> {
    let sw = crate::clock::Stopwatch::start();
    let files = crate::ModelFiles::from_dir(model_dir)?;
    // A sharded checkpoint is named by its index file: its hash stands for the shards'.
    let weights = std::path::PathBuf::from(files.weights.file());
    let (bytes, summary) = quantize_model(
        &files,
        scheme,
        importance,
        &mut || sha256_file(&weights),
        on_tensor,
    )?;
    crate::checkpoint::files::write_derived(model_dir, out, &bytes)?;
    Ok(ModelMetrics::of(scheme, &files, &bytes, &summary, &sw))
}

/// `quantize_dir` for the mixed scheme: the sensitivity sweep on `images` ([`mixed`]), the plan
/// within `opts`, the file; returns the plan too. `on_stage(stage, done, total)` follows the
/// work ([`mixed::OnStage`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn quantize_dir_mixed(
    model_dir: &std::path::Path,
    out: &crate::fsio::OutputDir,
    images: &[(String, Vec<u8>)],
    opts: mixed::MixedOptions,
    importance: Option<&Importance>,
    on_stage: mixed::OnStage,
) -> Result<(ModelMetrics, mixed::MixedPlan)> {
    let sw = crate::clock::Stopwatch::start();
    let files = crate::ModelFiles::from_dir(model_dir)?;
    let weights = std::path::PathBuf::from(files.weights.file());
    let (bytes, summary, plan) = quantize_model_mixed(
        &files,
        images,
        opts,
        importance,
        &mut || sha256_file(&weights),
        on_stage,
    )?;
    crate::checkpoint::files::write_derived(model_dir, out, &bytes)?;
    Ok((
        ModelMetrics::of(Scheme::Mixed, &files, &bytes, &summary, &sw),
        plan,
    ))
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelMetrics {
    /// The metrics of `bytes`, made from `files` with `scheme`.
    fn of(
        scheme: Scheme,
        files: &crate::ModelFiles,
        bytes: &[u8],
        summary: &QuantizeSummary,
        sw: &crate::clock::Stopwatch,
    ) -> Self {
        let original = files.weights.stored_bytes() as f64;
        let quantized = bytes.len() as f64;
        ModelMetrics {
            scheme,
            original_size_mb: original / crate::MB,
            quantized_size_mb: quantized / crate::MB,
            size_unit: crate::MB_UNIT,
            size_reduction_ratio: original / quantized,
            quantization_time_seconds: sw.seconds(),
            quantized_tensors: summary.quantized_tensors,
            kept_tensors: summary.kept_tensors,
        }
    }
}
