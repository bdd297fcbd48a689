//! `blipq caption`: one caption per image, as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use blipq::fsio::read_file;
use blipq::limits::MAX_IMAGE_BYTES;
use blipq::{BatchImage, CaptionOptions, Captioner, MAX_BATCH};
use serde::Serialize;

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout, FP32 or blipq INT8).
    #[arg(long)]
    model: PathBuf,
    /// Conditional-captioning prompt, e.g. "a picture of".
    #[arg(long)]
    prompt: Option<String>,
    /// Maximum total length in tokens (bos and prompt included). Default: generation_config.json's
    /// max_length, else 20 new tokens (transformers' default).
    #[arg(long, conflicts_with = "max_new_tokens")]
    max_length: Option<usize>,
    /// Maximum number of new tokens after the prompt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Minimum total length in tokens before the end token is allowed.
    #[arg(long)]
    min_length: Option<usize>,
    /// Beam width; 1 = greedy.
    #[arg(long)]
    num_beams: Option<usize>,
    /// Caption N images at once (same captions, more images per second on several cores).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Print `[{"image", "caption", "token_ids"}]` instead of text.
    #[arg(long)]
    json: bool,
    /// Images to caption (PNG, JPEG, WebP, GIF, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Captions a batch of images (one at a time for a batch of one), one result per image.
fn caption_batch(
    model: &Captioner,
    paths: &[PathBuf],
    opts: &CaptionOptions,
) -> anyhow::Result<Vec<anyhow::Result<blipq::Caption>>> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let files: Vec<anyhow::Result<Vec<u8>>> = paths
        .iter()
        .map(|p| Ok(read_file(p, MAX_IMAGE_BYTES)?))
        .collect();
    if let ([path], [Ok(bytes)]) = (paths, files.as_slice()) {
        let name = path.display().to_string();
        return Ok(vec![Ok(model.caption(bytes, &name, opts, &mut |_| {})?)]);
    }
    let batch: Vec<BatchImage> = files
        .iter()
        .zip(&names)
        .filter_map(|(f, name)| {
            f.as_ref()
                .ok()
                .map(|bytes| BatchImage::encoded(bytes, name))
        })
        .collect();
    let mut captions = model.caption_batch(&batch, opts)?.into_iter();
    Ok(files
        .into_iter()
        .map(|f| match f {
            Err(e) => Err(e),
            Ok(_) => match captions.next() {
                Some(c) => Ok(c?),
                None => Err(anyhow::anyhow!("no caption returned")),
            },
        })
        .collect())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let model = crate::load_model(&args.model)?;
    let opts = CaptionOptions {
        prompt: args.prompt.clone(),
        max_length: args.max_length,
        max_new_tokens: args.max_new_tokens,
        min_length: args.min_length,
        num_beams: args.num_beams,
        fixed_new_tokens: None,
    };
    model.check_options(&opts)?;
    if args.batch_size == 0 || args.batch_size > MAX_BATCH {
        anyhow::bail!(
            "--batch-size {}: give 1 to {MAX_BATCH} images per batch",
            args.batch_size
        );
    }
    if args.batch_size > 1 {
        crate::malloc::keep_large_blocks();
    }
    let pb = progress::bar(args.images.len() as u64, "captioning");
    if args.images.len() < 2 {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut rows = Vec::with_capacity(args.images.len());
    let mut failures = 0;
    for paths in args.images.chunks(args.batch_size) {
        pb.set_message(paths[0].display().to_string());
        let results = match caption_batch(&model, paths, &opts) {
            Ok(r) => r,
            // A failure of the batch itself (not of one image) fails each of its images.
            Err(e) => paths
                .iter()
                .map(|_| Err(anyhow::anyhow!("{e:#}")))
                .collect(),
        };
        for (path, result) in paths.iter().zip(results) {
            let image = path.display().to_string();
            let row = match result {
                Ok(c) => {
                    if !args.json {
                        pb.suspend(|| {
                            if args.images.len() == 1 {
                                println!("{}", c.caption);
                            } else {
                                println!("{image}\t{}", c.caption);
                            }
                        });
                    }
                    Row {
                        image,
                        caption: Some(c.caption),
                        token_ids: Some(c.token_ids),
                        error: None,
                    }
                }
                Err(e) => {
                    failures += 1;
                    pb.suspend(|| eprintln!("error: {e:#}"));
                    Row {
                        image,
                        caption: None,
                        token_ids: None,
                        error: Some(format!("{e:#}")),
                    }
                }
            };
            rows.push(row);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    if failures > 0 {
        eprintln!("{failures} of {} images failed", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
