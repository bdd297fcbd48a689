//! `blipq quantize`: FP32 checkpoint -> INT8 checkpoint, then FP32-vs-INT8 validation written to
//! `quantized_results.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blipq::fsio::read_file;
use blipq::limits::MAX_IMAGE_BYTES;
use blipq::preprocess::{decode_rgb, has_image_extension, DEFAULT_MAX_PIXELS};
use blipq::quantize::{self, Validation};
use blipq::Captioner;
use serde_json::json;

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// FP32 checkpoint directory (model.safetensors, a sharded model.safetensors.index.json
    /// with its shards, or pytorch_model.bin).
    #[arg(long)]
    model: PathBuf,
    /// Where the INT8 checkpoint goes.
    #[command(flatten)]
    output: crate::OutputArgs,
    /// Extra images to validate on (the image files of a directory, each checked before anything
    /// is written); the built-in photos and synthetic images are always used.
    #[arg(long)]
    validation_images: Option<PathBuf>,
    /// Skip the FP32-vs-INT8 validation.
    #[arg(long)]
    no_validate: bool,
    /// How to store the weights: q8_0 (blipq's INT8: int8 blocks of 32 with an f16 scale,
    /// computed by the INT8 kernels), int8-channel (int8 with one f32 scale per output channel,
    /// activations quantized per token: PyTorch's and ONNX Runtime's dynamic recipe), q4_0
    /// (4-bit blocks of 32 with an f16 scale), q4_g128 (4-bit groups of 128), mixed (a
    /// per-layer plan of q8_0 and q4_0 from a sensitivity sweep on the validation images), f16
    /// or bf16 (every weight in half precision: half the size, computed in f32).
    #[arg(long, default_value = "q8_0")]
    scheme: quantize::Scheme,
    /// mixed: the largest weights file, as a fraction of the FP32 file [default: 0.2].
    #[arg(long)]
    size_budget: Option<f64>,
    /// mixed: stop raising layers to q8_0 once the token agreement with FP32 on the validation
    /// images reaches this (0 to 1); without it, every layer the budget allows is raised.
    #[arg(long)]
    quality_floor: Option<f64>,
}

/// Photos compiled into the binary so validation always has real images.
const BUILTIN_PHOTOS: [(&str, &[u8]); 3] = [
    (
        "astronaut.jpg",
        include_bytes!("../../../data/validation/astronaut.jpg"),
    ),
    (
        "coffee.jpg",
        include_bytes!("../../../data/validation/coffee.jpg"),
    ),
    (
        "chelsea.png",
        include_bytes!("../../../data/validation/chelsea.png"),
    ),
];

/// Most files read from --validation-images.
const MAX_VALIDATION_IMAGES: usize = 10_000;

/// The validation set, every image read (bounded) and decoded once up front, so that a bad
/// --validation-images fails before anything is written.
fn validation_images(extra: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut images: Vec<(String, Vec<u8>)> = BUILTIN_PHOTOS
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    images.extend(quantize::synthetic_images(160)?);
    if let Some(dir) = extra {
        let mut paths: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(dir)
            .with_context(|| format!("--validation-images {}", dir.display()))?
        {
            let p = e
                .with_context(|| format!("--validation-images {}", dir.display()))?
                .path();
            let image = p
                .file_name()
                .is_some_and(|n| has_image_extension(&n.to_string_lossy()));
            if p.is_file() && image {
                if paths.len() == MAX_VALIDATION_IMAGES {
                    bail!(
                        "--validation-images {}: more than {MAX_VALIDATION_IMAGES} files",
                        dir.display()
                    );
                }
                paths.push(p);
            }
        }
        if paths.is_empty() {
            bail!("--validation-images {}: no image files (.png, .jpg, .jpeg, .webp, .gif, .bmp) in this folder", dir.display());
        }
        paths.sort();
        for p in paths {
            let name = p.display().to_string();
            let bytes = read_file(&p, MAX_IMAGE_BYTES)?;
            decode_rgb(&bytes, &name, DEFAULT_MAX_PIXELS)
                .with_context(|| format!("--validation-images {}", dir.display()))?;
            images.push((name, bytes));
        }
    }
    Ok(images)
}

/// RFC 3339 UTC timestamp without pulling in a date crate.
fn timestamp_utc() -> String {
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mixed = args.scheme == quantize::Scheme::Mixed;
    if !mixed && (args.size_budget.is_some() || args.quality_floor.is_some()) {
        bail!("--size-budget and --quality-floor are options of --scheme mixed");
    }
    // Every input first: nothing is written before they all check out. The mixed scheme's
    // sweep always uses the validation images.
    let images = if args.no_validate && !mixed {
        Vec::new()
    } else {
        validation_images(args.validation_images.as_deref())?
    };
    let out = args.output.create(&[&args.model])?;
    let pb = progress::bar(0, "quantizing");
    let (metrics, plan) = if mixed {
        let opts = quantize::mixed::MixedOptions {
            size_budget: args.size_budget,
            quality_floor: args.quality_floor,
        };
        let mut on_stage = |stage: &str, done: usize, total: usize| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            pb.set_message(match stage {
                "reference" => "FP32 captions of the validation images",
                "sweep" => "sensitivity sweep (one layer group at 4 bits)",
                "plan" => "choosing the plan",
                _ => "writing",
            });
        };
        let (m, plan) =
            quantize::quantize_dir_mixed(&args.model, &out, &images, opts, &mut on_stage)
                .with_context(|| format!("quantizing {}", args.model.display()))?;
        (m, Some(plan))
    } else {
        let m = quantize::quantize_dir(
            &args.model,
            &out,
            args.scheme,
            &mut progress::per_tensor(&pb),
        )
        .with_context(|| format!("quantizing {}", args.model.display()))?;
        (m, None)
    };
    pb.finish_and_clear();
    if let Some(plan) = &plan {
        let raised = plan
            .groups
            .iter()
            .filter(|g| g.precision == plan.high)
            .count();
        eprintln!(
            "mixed plan: {raised} of {} layer groups q8_0, the rest q4_0; {:.1}% of the FP32 \
             file (budget {:.1}%); token agreement with FP32 {:.3}",
            plan.groups.len(),
            100.0 * plan.size_fraction,
            100.0 * plan.size_budget,
            plan.token_agreement
        );
    }
    eprintln!(
        "quantized {} ({:.2} MB -> {:.2} MB, {:.2}x smaller, {} tensors {}, {} kept F32)",
        args.model.display(),
        metrics.original_size_mb,
        metrics.quantized_size_mb,
        metrics.size_reduction_ratio,
        metrics.quantized_tensors,
        args.scheme.as_str(),
        metrics.kept_tensors
    );
    let validation: Option<Validation> = if args.no_validate {
        None
    } else {
        let fp32 = Captioner::load_dir(&args.model).context("loading the FP32 model")?;
        let int8 = Captioner::load_dir(out.path()).context("loading the model just made")?;
        let pb = progress::bar(images.len() as u64, "validating");
        let v = quantize::validate(&fp32, &int8, &images, &mut |i, _| pb.set_position(i as u64));
        pb.finish_and_clear();
        eprintln!(
            "validation: {}/{} images, token agreement {:.3}, embedding cosine {:.5}",
            v.successful_samples, v.total_samples, v.token_agreement, v.embedding_cosine
        );
        let failed: Vec<String> = v
            .samples
            .iter()
            .filter_map(|s| Some(format!("{}: {}", s.image, s.error.as_ref()?)))
            .collect();
        if !failed.is_empty() {
            bail!(
                "validation failed on {} of {} images, so nothing was written to {}:\n  {}",
                failed.len(),
                v.total_samples,
                args.output.out.display(),
                failed.join("\n  ")
            );
        }
        Some(v)
    };
    let report = json!({
        "quantization_info": {
            "method": match args.scheme {
                quantize::Scheme::Q8_0 => "blipq-int8 (Q8_0: int8 weights, f16 scale per block of 32)",
                quantize::Scheme::Int8Channel => "blipq-int8 per channel (int8 weights, f32 scale per output channel; activations per token)",
                quantize::Scheme::Q4_0 => "4-bit q4_0 (blocks of 32 with an f16 scale; word embeddings Q8_0)",
                quantize::Scheme::Q4G128 => "4-bit q4_g128 (groups of 128 with an f16 scale; word embeddings Q8_0)",
                quantize::Scheme::Mixed => "mixed (a per-layer plan of q8_0 and q4_0 from a sensitivity sweep; see mixed_plan)",
                quantize::Scheme::F16 => "f16 (every weight in IEEE half precision; computed in f32)",
                quantize::Scheme::Bf16 => "bf16 (every weight in bfloat16; computed in f32)",
            },
            "timestamp": timestamp_utc(),
            "device": "cpu",
            "model_path": args.model.display().to_string(),
            "output_path": args.output.out.display().to_string(),
        },
        "model_metrics": metrics,
        "validation": validation,
    });
    let mut report = report;
    if let Some(plan) = plan {
        report["mixed_plan"] = json!(plan);
    }
    out.write(
        "quantized_results.json",
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let done = out.commit()?;
    eprintln!(
        "wrote {} (model.safetensors, quantized_results.json and the config files)",
        done.display()
    );
    Ok(ExitCode::SUCCESS)
}
