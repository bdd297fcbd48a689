//! `blipq bench`: FP32 vs INT8 (or any set of models) on a captioned data set or a folder of
//! images. Each model runs in its own child process (`blipq bench-worker`) so that peak memory
//! is measured per model; the parent collects the results and writes the reports.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use blipq::eval::bench::{self, Item, ModelInfoReport, ModelResults, Outcome, RunOptions};
use blipq::eval::report;
use blipq::fsio::{read_file, read_text};
use blipq::limits::{MAX_ANNOTATIONS_BYTES, MAX_IMAGE_BYTES};
use blipq::{CaptionOptions, MAX_BATCH};

use crate::progress;

/// Most untimed warm-up captions per model.
const MAX_WARMUP: usize = 100;

/// `--threads` may oversubscribe the cores at most this much.
const MAX_THREADS_PER_CORE: usize = 4;

/// The bundled demo: models and eval set, relative to the repository root.
const DEMO_MODELS: [&str; 2] = ["models/demo", "models/demo-int8"];
const DEMO_ANNOTATIONS: &str = "data/demo-eval/captions.json";
const DEMO_IMAGES: &str = "data/demo-eval";

#[derive(clap::Args, Clone)]
pub struct Options {
    /// COCO captions file (`{"images": [...], "annotations": [...]}`): enables quality metrics.
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Directory of images (the annotations' file_name values are relative to it).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Untimed captions before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Measure only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long)]
    num_beams: Option<usize>,
    #[arg(long)]
    prompt: Option<String>,
    /// Ignore the end token and generate exactly N new tokens, so runtimes compare on equal work.
    #[arg(long)]
    fixed_new_tokens: Option<usize>,
    /// CPU threads for each model (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Caption N images at once (one vision pass and one decoding loop per batch); images/s is
    /// then measured over the batches' wall time. 1 = one image at a time.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
}

/// Checks the options every process (parent and workers) relies on.
fn check_options(o: &Options) -> anyhow::Result<()> {
    if o.warmup > MAX_WARMUP {
        bail!(
            "--warmup {}: give at most {MAX_WARMUP} untimed captions",
            o.warmup
        );
    }
    if o.batch_size == 0 || o.batch_size > MAX_BATCH {
        bail!(
            "--batch-size {}: give 1 to {MAX_BATCH} images per batch",
            o.batch_size
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory; repeat to compare models (the first is the reference).
    /// Default: the bundled demo FP32 and INT8 models.
    #[arg(long = "model")]
    models: Vec<PathBuf>,
    /// Results JSON of another runtime (e.g. tools/peer_pytorch.py) to show beside blipq's.
    #[arg(long = "baseline")]
    baselines: Vec<PathBuf>,
    /// Output directory for the reports.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    #[command(flatten)]
    opts: Options,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    label: String,
    /// Where to write this model's results JSON.
    #[arg(long)]
    result: PathBuf,
    #[command(flatten)]
    opts: Options,
}

/// Resolves a bundled path: as given when it exists, else relative to the source checkout.
fn bundled(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.exists() {
        return p;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn with_defaults(mut args: Args) -> Args {
    if args.models.is_empty() {
        args.models = DEMO_MODELS.iter().map(|m| bundled(m)).collect();
        if args.opts.annotations.is_none() && args.opts.images.is_none() {
            args.opts.annotations = Some(bundled(DEMO_ANNOTATIONS));
            args.opts.images = Some(bundled(DEMO_IMAGES));
        }
    }
    args
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = with_defaults(args);
    for m in &args.models {
        if !m.is_dir() {
            bail!("model {}: not a checkpoint directory", m.display());
        }
    }
    check_options(&args.opts)?;
    if let Some(t) = args.opts.threads {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = MAX_THREADS_PER_CORE * cores;
        if t == 0 || t > max {
            bail!("--threads {t}: give 1 to {max} ({MAX_THREADS_PER_CORE} per core of this machine's {cores})");
        }
    }
    let mut results: Vec<ModelResults> = Vec::new();
    for b in &args.baselines {
        results.push(report::read_results(b).context("--baseline")?);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let exe = std::env::current_exe().context("locating the blipq executable")?;
    let mut own: Vec<ModelResults> = Vec::new();
    for (model, label) in args.models.iter().zip(report::labels(&args.models)) {
        let result = args.out.join(format!("{label}_results.json"));
        eprintln!("== {label}: {}", model.display());
        let mut cmd = Command::new(&exe);
        cmd.arg("bench-worker")
            .arg("--model")
            .arg(model)
            .args(["--label", &label])
            .arg("--result")
            .arg(&result);
        forward_options(&mut cmd, &args.opts);
        if let Some(t) = args.opts.threads {
            cmd.env("RAYON_NUM_THREADS", t.to_string());
        }
        let status = cmd.status().context("starting the benchmark worker")?;
        if !status.success() {
            bail!("benchmark of {} failed ({status})", model.display());
        }
        let text = read_text(&result, MAX_ANNOTATIONS_BYTES)?;
        let r: ModelResults = serde_json::from_str(&text)?;
        report::write_captions(&args.out, &r)?;
        own.push(r);
    }
    // blipq's models first (the first is the reference), then any baselines.
    let table = report::write_reports(&args.out, &own, &results)?;
    println!("{table}");
    let failed: usize = own
        .iter()
        .map(|r| r.performance_metrics.failed_samples)
        .sum();
    eprintln!("reports written to {}", args.out.display());
    if failed > 0 {
        let total: usize = own
            .iter()
            .map(|r| r.performance_metrics.failed_samples + r.performance_metrics.total_samples)
            .sum();
        eprintln!(
            "error: {failed} of {total} image runs failed; see `failures` in the results JSON"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn forward_options(cmd: &mut Command, o: &Options) {
    let mut opt = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            cmd.arg(flag).arg(v);
        }
    };
    opt(
        "--annotations",
        o.annotations.as_ref().map(|p| p.display().to_string()),
    );
    opt(
        "--images",
        o.images.as_ref().map(|p| p.display().to_string()),
    );
    opt("--warmup", Some(o.warmup.to_string()));
    opt("--limit", o.limit.map(|v| v.to_string()));
    opt("--max-length", o.max_length.map(|v| v.to_string()));
    opt("--num-beams", o.num_beams.map(|v| v.to_string()));
    opt("--prompt", o.prompt.clone());
    opt(
        "--fixed-new-tokens",
        o.fixed_new_tokens.map(|v| v.to_string()),
    );
    opt("--batch-size", Some(o.batch_size.to_string()));
}

/// The items to caption: from annotations, or every image file of a directory.
fn load_items(o: &Options) -> anyhow::Result<(Vec<Item>, PathBuf)> {
    if o.annotations.is_none() && o.images.is_none() {
        bail!("give --annotations and/or --images (or no arguments for the bundled demo)");
    }
    Ok(report::load_items(
        o.annotations.as_deref(),
        o.images.as_deref(),
        o.limit,
    )?)
}

pub fn run_worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let o = &args.opts;
    check_options(o)?;
    if o.batch_size > 1 {
        crate::malloc::keep_large_blocks();
    }
    let (items, images_dir) = load_items(o)?;
    let model = crate::load_model(&args.model)?;
    let opts = CaptionOptions {
        prompt: o.prompt.clone(),
        max_length: o.max_length,
        num_beams: o.num_beams,
        fixed_new_tokens: o.fixed_new_tokens,
        ..Default::default()
    };
    model.check_options(&opts)?;
    let pb = progress::bar(items.len() as u64, &args.label);
    let run = bench::run(
        &model,
        &items,
        &mut |item| {
            read_file(&images_dir.join(&item.file), MAX_IMAGE_BYTES).map_err(|e| e.to_string())
        },
        &RunOptions {
            caption: opts,
            warmup: o.warmup,
            batch_size: o.batch_size,
        },
        &mut |done, outcome| {
            if let Outcome::Failed(f) = outcome {
                pb.suspend(|| eprintln!("{}: {}", f.image, f.error));
            }
            pb.set_position(done as u64);
        },
    );
    pb.finish_and_clear();
    let results = bench::model_results(
        &args.label,
        &items,
        run,
        o.batch_size,
        report::peak_rss_mb(),
        ModelInfoReport::new(
            model.info(),
            report::weights_file_mb(&args.model),
            "cpu".into(),
            args.model.display().to_string(),
        ),
    )?;
    let text = serde_json::to_string_pretty(&results)?;
    std::fs::write(&args.result, text).with_context(|| format!("{}", args.result.display()))?;
    Ok(ExitCode::SUCCESS)
}
