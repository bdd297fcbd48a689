//! `blipq eval`: COCO caption metrics of a results file against an annotations file.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// COCO captions annotations (`{"images", "annotations"}`).
    #[arg(long)]
    annotations: PathBuf,
    /// COCO results (`[{"image_id", "caption"}]`).
    #[arg(long)]
    results: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let eval = blipq::eval::metrics::evaluate_coco_files(&args.annotations, &args.results)?;
    println!("{}", serde_json::to_string_pretty(&eval.scores)?);
    Ok(ExitCode::SUCCESS)
}
