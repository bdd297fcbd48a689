//! `blipq convert`: any weights blipq reads (`pytorch_model.bin`, one or sharded safetensors) →
//! one `model.safetensors` with Hugging Face names, in F32, F16 or BF16, plus the checkpoint's
//! other files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blipq::convert::{self, OutDType};

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (model.safetensors, model.safetensors.index.json with its shards, or
    /// pytorch_model.bin).
    #[arg(long)]
    model: PathBuf,
    /// Weight dtype to write: f32, f16 (half the size) or bf16.
    #[arg(long, default_value = "f32")]
    dtype: OutDType,
    #[command(flatten)]
    output: crate::OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let out = args.output.create(&[&args.model])?;
    let pb = progress::bar(0, "converting");
    let summary = convert::convert_dir(
        &args.model,
        &out,
        args.dtype,
        &mut progress::per_tensor(&pb),
    )
    .with_context(|| format!("converting {}", args.model.display()))?;
    pb.finish_and_clear();
    let done = out.commit()?;
    let mb = |b: usize| b as f64 / blipq::MB;
    eprintln!(
        "wrote {} ({} tensors {}, {:.1} MB from {:.1} MB{}{})",
        done.display(),
        summary.tensors,
        summary.dtype.as_str().to_uppercase(),
        mb(summary.output_bytes),
        mb(summary.input_bytes),
        if summary.dropped_tied.is_empty() {
            String::new()
        } else {
            format!(
                "; tied duplicates left out: {}",
                summary.dropped_tied.join(", ")
            )
        },
        if summary.dropped_buffers.is_empty() {
            String::new()
        } else {
            format!("; buffers left out: {}", summary.dropped_buffers.join(", "))
        },
    );
    Ok(ExitCode::SUCCESS)
}
