//! `blipq synth`: a random-init checkpoint with a real model's config and tensor names.

use std::path::PathBuf;
use std::process::ExitCode;

use blipq::fsio::OutputDir;
use blipq::synth::{self, Preset};

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// `base` (Salesforce/blip-image-captioning-base, 224M parameters) or `large`.
    #[arg(long)]
    preset: Preset,
    /// Output checkpoint directory (new or empty; written completely or not at all).
    #[arg(long)]
    out: PathBuf,
    /// Replace the contents of a non-empty --out.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let out = OutputDir::create(&args.out, &[], args.force)?;
    let pb = progress::bar(0, "generating");
    let params = synth::write_dir(args.preset, &out, &mut |done, total, name| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        pb.set_message(name.to_string());
    })?;
    pb.finish_and_clear();
    out.commit()?;
    eprintln!(
        "wrote {} ({:.1}M parameters, random init)",
        args.out.display(),
        params as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
