//! `blipq quantize`: FP32 checkpoint -> INT8 checkpoint, then FP32-vs-INT8 validation written to
//! `quantized_results.json`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use blipq::quantize::{self, job};

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
    /// Calibrate on the validation images (the file format is the same). 4-bit schemes (q4_0,
    /// q4_g128, mixed): choose each group's scale to minimise its rounding error weighted by the
    /// FP32 model's activations, instead of mapping the group's largest weight to -8.
    /// int8-channel: SmoothQuant-style smoothing, moving the activations' range into the weights
    /// of the vision encoder's qkv and fc1 through the LayerNorm before each.
    #[arg(long)]
    calibrate: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mixed = args.scheme == quantize::Scheme::Mixed;
    if !mixed && (args.size_budget.is_some() || args.quality_floor.is_some()) {
        bail!("--size-budget and --quality-floor are options of --scheme mixed");
    }
    quantize::check_calibration(args.scheme, args.calibrate).context("--calibrate")?;
    if args.no_validate && !mixed && !args.calibrate && args.validation_images.is_some() {
        bail!("--validation-images: there is no validation with --no-validate");
    }
    // A bad --validation-images folder is reported as such, before anything is written.
    let images = match &args.validation_images {
        Some(dir) => Some(job::validation_images(Some(dir)).context("--validation-images")?),
        None => None,
    };
    let req = job::Request {
        model: args.model.clone(),
        out: args.output.out.clone(),
        force: args.output.force,
        scheme: args.scheme,
        validate: !args.no_validate,
        validation_images: args.validation_images.clone(),
        images,
        size_budget: args.size_budget,
        quality_floor: args.quality_floor,
        calibrate: args.calibrate,
    };
    let pb = progress::bar(0, "quantizing");
    let mut stage = String::from("quantizing");
    let done = job::run(req, &mut |event| {
        match event {
            job::Event::Progress {
                stage: s,
                done,
                total,
                what,
            } => {
                if s != stage {
                    pb.reset();
                    pb.set_prefix(s.to_string());
                    stage = s.to_string();
                }
                pb.set_length(total as u64);
                pb.set_position(done as u64);
                pb.set_message(what.to_string());
            }
            job::Event::Message(line) => pb.suspend(|| eprintln!("{line}")),
        }
        ControlFlow::Continue(())
    });
    pb.finish_and_clear();
    let done = done.with_context(|| format!("quantizing {}", args.model.display()))?;
    eprintln!(
        "wrote {} (model.safetensors, quantized_results.json and the config files)",
        done.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
