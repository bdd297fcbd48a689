//! This machine's limits, and how close blipq's vision encoder and decoder run to them.
//!
//!     cargo bench --bench ceilings                                   # limits only
//!     cargo bench --bench ceilings -- /tmp/blip-base /tmp/blip-base-int8   # and models
//!     cargo bench --bench ceilings -- --readme=README.md /tmp/blip-base /tmp/blip-base-int8
//!
//! `--readme=FILE` also replaces the table between FILE's `ceilings` markers.
//!
//! For 1 and 2 threads (`BLIPQ_THREADS=1,2,4` to change): peak f32 FMA and int8 dot-product
//! throughput and memory read bandwidth (`blipq::kernels::ceiling`); then, per model, the median of
//! `BLIPQ_REPS` (default 3) captions of one bundled image with exactly 20 new tokens: vision
//! GFLOP/s against the f32 peak (FP32) or the int8 peak (INT8; its attention products run in
//! f32), and decode GB/s of weights read per token against the bandwidth. Prints markdown.

mod common;

use common::median;

use std::path::PathBuf;

use blipq::eval::bench::{bytes_per_weight, Work};
use blipq::kernels::ceiling;
use blipq::{CaptionOptions, Captioner};

/// Prints a report line and keeps it for the README.
fn emit(report: &mut String, line: String) {
    println!("{line}");
    report.push_str(&line);
    report.push('\n');
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: Vec<usize> = std::env::var("BLIPQ_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|t| t.trim().parse())
        .collect::<Result<_, _>>()?;
    let reps: usize = std::env::var("BLIPQ_REPS").map_or(Ok(3), |r| r.parse())?;
    // `cargo bench` passes `--bench`; `--readme=FILE` names the README; the rest are models.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let readme = args
        .iter()
        .find_map(|a| a.strip_prefix("--readme=").map(PathBuf::from));
    let models: Vec<PathBuf> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    let mut report = String::new();
    let mut out = |line: String| emit(&mut report, line);
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/demo-eval/scene_000000.png"
    ))?;
    let loaded: Vec<(String, Captioner)> = models
        .iter()
        .map(|m| Ok((m.display().to_string(), Captioner::load_dir(m)?)))
        .collect::<blipq::Result<_>>()?;

    out("| threads | f32 peak (GFLOP/s) | int8 peak (GOP/s) | memory read (GB/s) |".into());
    out("|---|---|---|---|".into());
    let mut limits = Vec::new();
    for &t in &threads {
        let c = ceiling::measure(t)?;
        out(format!(
            "| {t} | {:.0} ({}) | {:.0} ({}) | {:.1} |",
            c.f32_flops / 1e9,
            c.f32_isa,
            c.int8_ops / 1e9,
            c.int8_isa,
            c.read_bytes_per_s / 1e9
        ));
        limits.push(c);
    }
    if !loaded.is_empty() {
        measure_models(&loaded, &limits, &image, reps, &mut report)?;
    }
    if let Some(path) = readme {
        let (begin, end) = ("<!-- ceilings:begin -->", "<!-- ceilings:end -->");
        let text = std::fs::read_to_string(&path)?;
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            return Err(format!("{} has no {begin} ... {end} markers", path.display()).into());
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "?".into());
        let date = std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let new = format!(
            "{}{begin}\n{cpu}, {date}, {reps} captions per model:\n\n{report}{}",
            &text[..a],
            &text[b..]
        );
        std::fs::write(&path, new)?;
        println!("updated {}", path.display());
    }
    Ok(())
}

/// Times each model on each thread count and appends its row to `report` (and stdout).
fn measure_models(
    loaded: &[(String, Captioner)],
    limits: &[ceiling::Ceilings],
    image: &[u8],
    reps: usize,
    report: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = |line: String| emit(report, line);
    out(String::new());
    out("| model | threads | vision s | vision GFLOP/s (% of peak) | decode s (20 tokens) | decode GB/s (% of bandwidth) |".into());
    out("|---|---|---|---|---|---|".into());
    let opts = CaptionOptions {
        fixed_new_tokens: Some(20),
        ..Default::default()
    };
    for c in limits {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(c.threads)
            .build()?;
        for (name, cap) in loaded {
            let work = Work::of(cap.config());
            let quantized = cap.info().is_quantized;
            let (mut vision, mut decode) = (Vec::new(), Vec::new());
            pool.install(|| -> blipq::Result<()> {
                cap.caption(image, "bench.png", &opts, &mut |_| {})?;
                for _ in 0..reps {
                    let caption = cap.caption(image, "bench.png", &opts, &mut |_| {})?;
                    vision.push(caption.timings.vision_s);
                    decode.push(caption.timings.decode_s / caption.new_tokens.max(1) as f64);
                }
                Ok(())
            })?;
            let (v, d) = (median(vision), median(decode));
            let flops = 2.0 * work.vision_macs / v;
            let peak = if quantized { c.int8_ops } else { c.f32_flops };
            let bytes = work.decode_weights_per_token * bytes_per_weight(quantized) / d;
            out(format!(
                "| {name} | {} | {v:.3} | {:.0} ({:.0}% of {}) | {:.3} | {:.1} ({:.0}%) |",
                c.threads,
                flops / 1e9,
                100.0 * flops / peak,
                if quantized { "int8" } else { "f32" },
                d * 20.0,
                bytes / 1e9,
                100.0 * bytes / c.read_bytes_per_s
            ));
        }
    }
    Ok(())
}
