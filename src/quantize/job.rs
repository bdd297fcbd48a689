//! One whole quantization, as `blipq quantize` and the Python package's `blipq.quantize` run it
//! (native only): the validation images (built-in photos, synthetic images and an optional
//! folder, all read and decoded before anything is written), the quantized checkpoint written
//! into a new folder that appears only once complete, the FP32-vs-quantized validation and the
//! report `quantized_results.json`.
//!
//! May use: `quantize` (its formats, sweep and validation), `fsio`, `limits`, `preprocess`,
//! `captioner`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{mixed, quantize_dir, quantize_dir_mixed, validate, ModelMetrics, Scheme, Validation};
use crate::fsio::{read_file, OutputDir};
use crate::limits::MAX_IMAGE_BYTES;
use crate::preprocess::{decode_rgb, has_image_extension, DEFAULT_MAX_PIXELS};
use crate::{Captioner, Error, Result};

/// Most files read from a validation-images folder.
pub const MAX_VALIDATION_IMAGES: usize = 10_000;

/// What to quantize, where to, and how.
#[derive(Clone, Default)]
pub struct Request {
    /// The FP32 (or F16/BF16) checkpoint folder.
    pub model: PathBuf,
    /// The new folder: new or empty, never a source or inside one.
    pub out: PathBuf,
    /// Replace the contents of a non-empty `out` (never a source).
    pub force: bool,
    pub scheme: Scheme,
    /// Run the FP32-vs-quantized validation (the mixed scheme's sweep uses the images anyway).
    pub validate: bool,
    /// A folder of extra validation images.
    pub validation_images: Option<PathBuf>,
    /// The validation set, when the caller has already read it with [`validation_images`] (to
    /// report a bad folder in its own words); else it is read here.
    pub images: Option<Vec<(String, Vec<u8>)>>,
    /// mixed: the largest weights file as a fraction of the FP32 file.
    pub size_budget: Option<f64>,
    /// mixed: stop raising layers once the token agreement reaches this.
    pub quality_floor: Option<f64>,
    /// 4-bit schemes: choose the scales with the FP32 model's activations on the validation
    /// images ([`super::calibrate`]).
    pub calibrate: bool,
}

/// What a quantization is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Step `done` of `total` of a stage, with what it is working on.
    Progress {
        stage: &'a str,
        done: usize,
        total: usize,
        what: &'a str,
    },
    /// A summary line (the plan, the sizes, the validation's figures).
    Message(&'a str),
}

/// A finished quantization.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The folder written.
    pub path: PathBuf,
    /// `quantized_results.json` as written.
    pub report: serde_json::Value,
}

/// The validation set: the built-in photos, three synthetic images and every image file of
/// `extra`, each read (bounded) and decoded once up front, so that a bad folder fails before
/// anything is written.
pub fn validation_images(extra: Option<&Path>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut images = super::builtin_validation_images()?;
    let Some(dir) = extra else {
        return Ok(images);
    };
    let what = |msg: String| Error::file(format!("validation images {}", dir.display()), msg);
    let mut paths: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))? {
        let p = e.map_err(|e| Error::io(dir.display(), e))?.path();
        let image = p
            .file_name()
            .is_some_and(|n| has_image_extension(&n.to_string_lossy()));
        if p.is_file() && image {
            if paths.len() == MAX_VALIDATION_IMAGES {
                return Err(what(format!("more than {MAX_VALIDATION_IMAGES} files")));
            }
            paths.push(p);
        }
    }
    if paths.is_empty() {
        return Err(what(
            "no image files (.png, .jpg, .jpeg, .webp, .gif, .bmp) in this folder".into(),
        ));
    }
    paths.sort();
    for p in paths {
        let name = p.display().to_string();
        let bytes = read_file(&p, MAX_IMAGE_BYTES)?;
        decode_rgb(&bytes, &name, DEFAULT_MAX_PIXELS)?;
        images.push((name, bytes));
    }
    Ok(images)
}

/// RFC 3339 UTC timestamp of now, without a date crate.
pub fn timestamp_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How `quantized_results.json` names a scheme's method.
pub fn method(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Q8_0 => "blipq-int8 (Q8_0: int8 weights, f16 scale per block of 32)",
        Scheme::Int8Channel => "blipq-int8 per channel (int8 weights, f32 scale per output channel; activations per token)",
        Scheme::Q4_0 => "4-bit q4_0 (blocks of 32 with an f16 scale; word embeddings Q8_0)",
        Scheme::Q4G128 => "4-bit q4_g128 (groups of 128 with an f16 scale; word embeddings Q8_0)",
        Scheme::Mixed => "mixed (a per-layer plan of q8_0 and q4_0 from a sensitivity sweep; see mixed_plan)",
        Scheme::F16 => "f16 (every weight in IEEE half precision; computed in f32)",
        Scheme::Bf16 => "bf16 (every weight in bfloat16; computed in f32)",
    }
}

/// Quantizes `req.model` into `req.out` and validates the result; `on_event` follows the work
/// and may ask it to stop (`ControlFlow::Break`: the job ends at the next stage with
/// [`Error::Stopped`], writing nothing). Every input is checked before anything is written, and
/// the folder appears only once the checkpoint, its validation (when asked) and the report are
/// complete: a failed validation leaves nothing behind.
pub fn run(
    mut req: Request,
    on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<Outcome> {
    let mixed = req.scheme == Scheme::Mixed;
    if !mixed && (req.size_budget.is_some() || req.quality_floor.is_some()) {
        return Err(Error::InvalidArgument(
            "size_budget and quality_floor are options of the mixed scheme".into(),
        ));
    }
    super::check_calibration(req.scheme, req.calibrate)?;
    if req.validation_images.is_some() && !req.validate && !mixed && !req.calibrate {
        return Err(Error::InvalidArgument(
            "validation images were given but validation is turned off".into(),
        ));
    }
    let images = match req.images.take() {
        Some(images) => images,
        None if req.validate || mixed || req.calibrate => {
            validation_images(req.validation_images.as_deref())?
        }
        None => Vec::new(),
    };
    let out = OutputDir::create(&req.out, &[&req.model], req.force)?;
    let stop = std::cell::Cell::new(false);
    let mut event = |e: Event<'_>| {
        if !stop.get() && on_event(e).is_break() {
            stop.set(true);
        }
    };
    let stopped = || -> Result<()> {
        match stop.get() {
            true => Err(Error::Stopped(format!(
                "asked to stop, so nothing was written to {}",
                req.out.display()
            ))),
            false => Ok(()),
        }
    };
    let (metrics, plan) = quantize_into(&req, &out, &images, &mut event)?;
    stopped()?;
    let validation = if req.validate {
        Some(validate_into(&req, &out, &images, &mut event)?)
    } else {
        None
    };
    stopped()?;
    let mut report = json!({
        "quantization_info": {
            "method": method(req.scheme),
            "timestamp": timestamp_utc(),
            "device": "cpu",
            "model_path": req.model.display().to_string(),
            "output_path": req.out.display().to_string(),
            "calibration": req.calibrate.then(|| json!({
                "method": req.scheme.calibration_method(),
                "images": images.len(),
            })),
        },
        "model_metrics": metrics,
        "validation": validation,
    });
    if let Some(plan) = plan {
        report["mixed_plan"] = json!(plan);
    }
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Internal(format!("quantized_results.json: {e}")))?;
    out.write("quantized_results.json", text.as_bytes())?;
    let path = out.commit()?;
    Ok(Outcome { path, report })
}

/// The checkpoint itself, written into `out` (not yet committed).
fn quantize_into(
    req: &Request,
    out: &OutputDir,
    images: &[(String, Vec<u8>)],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(ModelMetrics, Option<mixed::MixedPlan>)> {
    let importance = match req.calibrate {
        true => {
            let files = crate::ModelFiles::from_dir(&req.model)?;
            Some(super::calibrate::activation_importance(
                &files,
                images,
                &mut |done, total| {
                    on_event(Event::Progress {
                        stage: "calibrating",
                        done,
                        total,
                        what: "FP32 activations on the validation images",
                    })
                },
            )?)
        }
        false => None,
    };
    let importance = importance.as_ref();
    let (metrics, plan) = if req.scheme == Scheme::Mixed {
        let opts = mixed::MixedOptions {
            size_budget: req.size_budget,
            quality_floor: req.quality_floor,
        };
        let mut on_stage = |stage: &str, done: usize, total: usize| {
            let what = match stage {
                "reference" => "FP32 captions of the validation images",
                "sweep" => "sensitivity sweep (one layer group at 4 bits)",
                "plan" => "choosing the plan",
                _ => "writing",
            };
            on_event(Event::Progress {
                stage: "quantizing",
                done,
                total,
                what,
            });
        };
        let (m, plan) =
            quantize_dir_mixed(&req.model, out, images, opts, importance, &mut on_stage)?;
        let raised = plan
            .groups
            .iter()
            .filter(|g| g.precision == plan.high)
            .count();
        on_event(Event::Message(&format!(
            "mixed plan: {raised} of {} layer groups q8_0, the rest q4_0; {:.1}% of the FP32 \
             file (budget {:.1}%); token agreement with FP32 {:.3}",
            plan.groups.len(),
            100.0 * plan.size_fraction,
            100.0 * plan.size_budget,
            plan.token_agreement
        )));
        (m, Some(plan))
    } else {
        let mut on_tensor = |done: usize, total: usize, name: &str| {
            on_event(Event::Progress {
                stage: "quantizing",
                done,
                total,
                what: name,
            })
        };
        let m = quantize_dir(&req.model, out, req.scheme, importance, &mut on_tensor)?;
        (m, None)
    };
    on_event(Event::Message(&format!(
        "quantized {} ({:.2} MB -> {:.2} MB, {:.2}x smaller, {} tensors {}, {} kept F32)",
        req.model.display(),
        metrics.original_size_mb,
        metrics.quantized_size_mb,
        metrics.size_reduction_ratio,
        metrics.quantized_tensors,
        req.scheme.as_str(),
        metrics.kept_tensors
    )));
    Ok((metrics, plan))
}

/// The source and the model just written in `out`, side by side on `images`; any image that
/// fails fails the whole quantization.
fn validate_into(
    req: &Request,
    out: &OutputDir,
    images: &[(String, Vec<u8>)],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Validation> {
    let fp32 = Captioner::load_dir(&req.model)?;
    let quantized = Captioner::load_dir(out.path())?;
    let v = validate(&fp32, &quantized, images, &mut |done, total| {
        on_event(Event::Progress {
            stage: "validating",
            done,
            total,
            what: "",
        })
    });
    on_event(Event::Message(&format!(
        "validation: {}/{} images, token agreement {:.3}, embedding cosine {:.5}",
        v.successful_samples, v.total_samples, v.token_agreement, v.embedding_cosine
    )));
    let failed: Vec<String> = v
        .samples
        .iter()
        .filter_map(|s| Some(format!("{}: {}", s.image, s.error.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        return Err(Error::file(
            req.out.display(),
            format!(
                "validation failed on {} of {} images, so nothing was written:\n  {}",
                failed.len(),
                v.total_samples,
                failed.join("\n  ")
            ),
        ));
    }
    Ok(v)
}
