//! `blipq quantize`: FP32 checkpoint -> INT8 checkpoint, then FP32-vs-INT8 validation written to
//! `quantized_results.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use blipq::quantize::{self, Validation};
use blipq::Captioner;
use serde_json::json;

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// FP32 checkpoint directory (model.safetensors or pytorch_model.bin).
    #[arg(long)]
    model: PathBuf,
    /// Output directory for the INT8 checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Extra images to validate on (a directory); the built-in photos and synthetic images are always used.
    #[arg(long)]
    validation_images: Option<PathBuf>,
    /// Skip the FP32-vs-INT8 validation.
    #[arg(long)]
    no_validate: bool,
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

fn validation_images(extra: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut images: Vec<(String, Vec<u8>)> = BUILTIN_PHOTOS
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    images.extend(quantize::synthetic_images(160)?);
    if let Some(dir) = extra {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).with_context(|| format!("{}", p.display()))?;
            images.push((p.display().to_string(), bytes));
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
    let pb = progress::bar(0, "quantizing");
    let metrics = quantize::quantize_dir(&args.model, &args.out, &mut |done, total, name| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        pb.set_message(name.to_string());
    })
    .with_context(|| format!("quantizing {}", args.model.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "wrote {} ({:.2} MB -> {:.2} MB, {:.2}x smaller, {} tensors INT8, {} kept F32)",
        args.out.join("model.safetensors").display(),
        metrics.original_size_mb,
        metrics.quantized_size_mb,
        metrics.size_reduction_ratio,
        metrics.quantized_tensors,
        metrics.kept_tensors
    );
    let validation: Option<Validation> = if args.no_validate {
        None
    } else {
        let fp32 = Captioner::load_dir(&args.model).context("loading the FP32 model")?;
        let int8 = Captioner::load_dir(&args.out).context("loading the INT8 model just written")?;
        let images = validation_images(args.validation_images.as_deref())?;
        let pb = progress::bar(images.len() as u64, "validating");
        let v = quantize::validate(&fp32, &int8, &images, &mut |i, _| pb.set_position(i as u64));
        pb.finish_and_clear();
        eprintln!(
            "validation: {}/{} images, token agreement {:.3}, embedding cosine {:.5}",
            v.successful_samples, v.total_samples, v.token_agreement, v.embedding_cosine
        );
        Some(v)
    };
    let report = json!({
        "quantization_info": {
            "method": "blipq-int8 (Q8_0: int8 weights, f16 scale per block of 32)",
            "timestamp": timestamp_utc(),
            "device": "cpu",
            "model_path": args.model.display().to_string(),
            "output_path": args.out.display().to_string(),
        },
        "model_metrics": metrics,
        "validation": validation,
    });
    let path = args.out.join("quantized_results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}", path.display()))?;
    eprintln!("wrote {}", path.display());
    let ok = validation
        .as_ref()
        .is_none_or(|v| v.successful_samples == v.total_samples);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
