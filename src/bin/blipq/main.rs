//! `blipq`: caption images, quantize checkpoints, benchmark and evaluate BLIP models on the CPU.

mod bench;
mod caption;
mod convert;
mod eval;
mod malloc;
mod progress;
mod quantize;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "blipq",
    version,
    about = "BLIP image captioning in Rust, FP32 and INT8"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Caption images with a BLIP checkpoint.
    Caption(caption::Args),
    /// Write an INT8 copy of an FP32 checkpoint and validate it against the original.
    Quantize(quantize::Args),
    /// Write any checkpoint blipq reads (pytorch_model.bin, sharded or single safetensors) as
    /// one model.safetensors in F32, F16 or BF16.
    Convert(convert::Args),
    /// Measure speed, memory, size and caption quality of models side by side.
    /// With no arguments: the bundled demo model, FP32 vs INT8, on the bundled eval set.
    Bench(bench::Args),
    /// Caption metrics (BLEU-1..4, ROUGE-L, CIDEr) of COCO results against COCO annotations.
    Eval(eval::Args),
    /// Write a random-init checkpoint with a real BLIP's config and tensor names.
    Synth(synth::Args),
    /// Internal: benchmark one model in this process (used by `bench`).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

fn main() -> ExitCode {
    malloc::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = blipq::kernels::isa::env_cap() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // The parallel kernels start on this thread instead of being handed to a pool thread each
    // time (see `blipq::threads`); the pool is built before anything runs in parallel.
    if let Err(e) = blipq::threads::use_this_thread() {
        eprintln!("warning: {e}");
    }
    let result = match cli.command {
        Command::Caption(args) => caption::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchWorker(args) => bench::run_worker(args),
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the model folder `dir`, an error naming it if that fails.
fn load_model(dir: &std::path::Path) -> anyhow::Result<blipq::Captioner> {
    use anyhow::Context;
    blipq::Captioner::load_dir(dir).with_context(|| format!("loading model {}", dir.display()))
}

/// The output folder of a command that writes a checkpoint.
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Output directory: new or empty, never a source or inside one. It appears only once
    /// complete (written into a temporary sibling, then renamed).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Replace the contents of a non-empty --out (never a source).
    #[arg(long)]
    pub force: bool,
}

impl OutputArgs {
    /// Prepares the folder (see [`blipq::fsio::OutputDir::create`]), refusing any of `sources`.
    pub fn create(&self, sources: &[&std::path::Path]) -> anyhow::Result<blipq::fsio::OutputDir> {
        Ok(blipq::fsio::OutputDir::create(
            &self.out, sources, self.force,
        )?)
    }
}
