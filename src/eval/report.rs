//! The benchmark on disk (native only): the items of an annotations file or an image folder,
//! model labels, the facts measured about a model's files and process, a run reassembled from
//! pieces captioned elsewhere, and the report folder. `blipq bench` and the Python package's
//! `python -m blipq.ray bench` both go through here, so their reports are the same files made by
//! the same code.
//!
//! May use: `eval::bench`, `eval::chart`, `eval::metrics`, `fsio`, `limits`, `preprocess` (image
//! file names), `checkpoint::files`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::files::{PTH_FILE, SAFETENSORS_FILE};
use crate::eval::bench::{self, Failure, Item, ModelResults, Outcome, Run, Sample};
use crate::fsio::read_text;
use crate::limits::MAX_ANNOTATIONS_BYTES;
use crate::{Error, Result};

/// Most images one benchmark takes (an annotations file or a folder).
pub const MAX_ITEMS: usize = 1_000_000;

/// The items to caption and the folder their files are in: every image of the annotations file
/// `annotations` (file names relative to `images`, or to the annotations' folder), or without
/// annotations every image file of `images`, sorted by name; the first `limit` only when given.
pub fn load_items(
    annotations: Option<&Path>,
    images: Option<&Path>,
    limit: Option<usize>,
) -> Result<(Vec<Item>, PathBuf)> {
    let images_dir = match (images, annotations) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(a)) => a.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "no images to benchmark: give an annotations file and/or an images folder".into(),
            ))
        }
    };
    let mut items = match annotations {
        Some(a) => {
            let text = read_text(a, MAX_ANNOTATIONS_BYTES)?;
            let ann = crate::eval::metrics::parse_annotations(&text, &a.display().to_string())?;
            bench::items_from_annotations(&ann)
        }
        None => {
            let mut files: Vec<String> = Vec::new();
            let entries =
                std::fs::read_dir(&images_dir).map_err(|e| Error::io(images_dir.display(), e))?;
            for e in entries {
                let e = e.map_err(|e| Error::io(images_dir.display(), e))?;
                let name = e.file_name().to_string_lossy().to_string();
                if e.path().is_file() && crate::preprocess::has_image_extension(&name) {
                    if files.len() == MAX_ITEMS {
                        return Err(Error::file(
                            images_dir.display(),
                            format!("more than {MAX_ITEMS} images"),
                        ));
                    }
                    files.push(name);
                }
            }
            files.sort();
            files
                .into_iter()
                .map(|file| Item {
                    file,
                    image_id: None,
                    references: vec![],
                })
                .collect()
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(Error::InvalidArgument(format!(
            "{} images: a benchmark takes at most {MAX_ITEMS}",
            items.len()
        )));
    }
    if let Some(n) = limit {
        items.truncate(n);
    }
    if items.is_empty() {
        return Err(Error::file(
            images_dir.display(),
            "no images to benchmark here (image files: .png, .jpg, .jpeg, .webp, .gif, .bmp)",
        ));
    }
    Ok((items, images_dir))
}

/// A short unique label per model: its folder's name (`model2`... when it has none), with the
/// model's position appended when an earlier model has the same name.
pub fn labels(models: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let base = m
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| format!("model{}", i + 1));
        let label = if out.contains(&base) {
            format!("{base}-{}", i + 1)
        } else {
            base
        };
        out.push(label);
    }
    out
}

/// Size of a checkpoint folder's weight file in MB ([`crate::MB`]); 0 when it has none of the
/// single-file kinds.
pub fn weights_file_mb(dir: &Path) -> f64 {
    [SAFETENSORS_FILE, PTH_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len() as f64 / crate::MB)
        .next()
        .unwrap_or(0.0)
}

/// Peak resident memory of this process in MB (Linux `VmHWM`); None where not available.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / crate::MB)
}

/// How one item of a benchmark ended, tagged with its position in the item list: what a worker
/// that captioned some of the items sends back (`python -m blipq.ray` actors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    pub index: usize,
    #[serde(flatten)]
    pub outcome: PieceOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PieceOutcome {
    Sample(Sample),
    Failure(Failure),
}

impl Piece {
    /// Item `index`'s outcome, as [`bench::run`] reports it to its progress callback.
    pub fn new(index: usize, outcome: Outcome<'_>) -> Self {
        Piece {
            index,
            outcome: match outcome {
                Outcome::Captioned(s) => PieceOutcome::Sample(s.clone()),
                Outcome::Failed(f) => PieceOutcome::Failure(f.clone()),
            },
        }
    }
}

/// The run over all `items` from pieces captioned anywhere, in item order (as one process
/// would have recorded it). Every item must have exactly one piece.
pub fn assemble(items: &[Item], pieces: Vec<Piece>) -> Result<Run> {
    let mut slots: Vec<Option<PieceOutcome>> = vec![None; items.len()];
    for p in pieces {
        let slot = slots.get_mut(p.index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a result for item {} of a list of {}",
                p.index,
                items.len()
            ))
        })?;
        let image = match &p.outcome {
            PieceOutcome::Sample(s) => s.image.clone(),
            PieceOutcome::Failure(f) => f.image.clone(),
        };
        if *image != items[p.index].file {
            return Err(Error::InvalidArgument(format!(
                "the result for item {} is of {image}, not of {}",
                p.index, items[p.index].file
            )));
        }
        if slot.replace(p.outcome).is_some() {
            return Err(Error::InvalidArgument(format!(
                "two results for item {} ({image})",
                p.index
            )));
        }
    }
    let mut run = Run::default();
    for (item, slot) in items.iter().zip(slots) {
        match slot {
            Some(PieceOutcome::Sample(s)) => run.samples.push(s),
            Some(PieceOutcome::Failure(f)) => run.failures.push(f),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no result for item {}",
                    item.file
                )))
            }
        }
    }
    Ok(run)
}

/// A results JSON file (`<label>_results.json` of blipq, or of another runtime such as
/// `tools/peer_pytorch.py`).
pub fn read_results(path: &Path) -> Result<ModelResults> {
    let text = read_text(path, MAX_ANNOTATIONS_BYTES)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::file(path.display(), format!("not a blipq results JSON: {e}")))
}

/// Writes one model's `<label>_results.json` into `out`.
pub fn write_model_results(out: &Path, r: &ModelResults) -> Result<PathBuf> {
    let path = out.join(format!("{}_results.json", r.label));
    write_json(&path, r)?;
    Ok(path)
}

/// Writes one model's COCO captions `<label>_captions.json` (`[{"image_id", "caption"}]`) into
/// `out`.
pub fn write_captions(out: &Path, r: &ModelResults) -> Result<PathBuf> {
    let path = out.join(format!("{}_captions.json", r.label));
    write_json(&path, &bench::coco_results(&r.samples))?;
    Ok(path)
}

/// Writes the report folder of a benchmark: each of blipq's `own` models' COCO captions
/// `<label>_captions.json` ([`write_captions`]; their results JSONs are written by [`write_model_results`]), and over
/// `own` (the reference first) then `baselines`, `comparison.md`, `comparison.json` and the
/// trade-off charts. Returns the Markdown table.
pub fn write_reports(
    out: &Path,
    own: &[ModelResults],
    baselines: &[ModelResults],
) -> Result<String> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
    for r in own {
        write_captions(out, r)?;
    }
    let models: Vec<ModelResults> = own.iter().chain(baselines).cloned().collect();
    let table = bench::comparison_markdown(&models);
    write_bytes(&out.join("comparison.md"), table.as_bytes())?;
    write_json(
        &out.join("comparison.json"),
        &bench::comparison_json(&models),
    )?;
    for (file, svg) in crate::eval::chart::tradeoff_charts(&models) {
        write_bytes(&out.join(file), svg.as_bytes())?;
    }
    Ok(table)
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path.display(), format!("cannot write JSON: {e}")))?;
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path.display(), e))
}
