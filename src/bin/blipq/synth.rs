//! `blipq synth`: a random-init checkpoint with a real model's config and tensor names.

use std::process::ExitCode;

use blipq::synth::{self, Preset};

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// `base` (Salesforce/blip-image-captioning-base, 224M parameters) or `large`.
    #[arg(long)]
    preset: Preset,
    #[command(flatten)]
    output: crate::OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let out = args.output.create(&[])?;
    let pb = progress::bar(0, "generating");
    let params = synth::write_dir(args.preset, &out, &mut progress::per_tensor(&pb))?;
    pb.finish_and_clear();
    out.commit()?;
    eprintln!(
        "wrote {} ({:.1}M parameters, random init)",
        args.output.out.display(),
        params as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
