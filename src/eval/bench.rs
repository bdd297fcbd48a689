//! Benchmark bookkeeping shared by `blipq bench` and the web page: per-image samples, the
//! per-model results JSON ([`ModelResults`]: `model_info`, `performance_metrics`,
//! `quality_metrics`, ...) and the comparison table with its improvement column. Sizes and memory
//! are in MB of 2^20 bytes ([`crate::MB`]); the table says so under it.

use serde::{Deserialize, Serialize};

use crate::captioner::{BatchImage, Caption, CaptionOptions, Captioner, ModelInfo};
use crate::eval::metrics::{self, Annotations, ImageCaptions, ImageId};
use crate::{Result, Timings};

/// One benchmark item: an image and, when annotated, its id and reference captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// File name (relative to the images directory).
    pub file: String,
    pub image_id: Option<ImageId>,
    pub references: Vec<String>,
}

/// Items of a COCO annotations file, in evaluation order; images without a `file_name` are
/// named by their id.
pub fn items_from_annotations(ann: &Annotations) -> Vec<Item> {
    let refs = ann.references();
    let files: std::collections::HashMap<&ImageId, &str> = ann
        .images
        .iter()
        .filter_map(|i| i.file_name.as_deref().map(|f| (&i.id, f)))
        .collect();
    ann.image_order()
        .into_iter()
        .map(|id| Item {
            file: files
                .get(id)
                .map(|f| f.to_string())
                .unwrap_or_else(|| id.to_string().trim_matches('"').to_string()),
            image_id: Some(id.clone()),
            references: refs
                .get(id)
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// A captioned image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub image: String,
    pub image_id: Option<ImageId>,
    pub caption: String,
    pub token_ids: Vec<u32>,
    pub new_tokens: usize,
    pub timings: Timings,
    /// The vision encoder's class-token output for the image ([`Caption::image_cls`]), for the
    /// comparison's embedding cosine: in JSON, base64 of its little-endian f32 bytes (exact and
    /// compact); absent in results written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "f32_base64")]
    pub image_embedding_cls: Vec<f32>,
}

/// A `Vec<f32>` as base64 text of its little-endian bytes.
mod f32_base64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_str(&base64::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::decode(&text)
            .map_err(|e| D::Error::custom(format!("image_embedding_cls: not base64 ({e})")))?;
        if bytes.len() % 4 != 0 {
            return Err(D::Error::custom(format!(
                "image_embedding_cls: {} bytes is not whole f32 values",
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// An image that could not be captioned, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub image: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub decode_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerformanceMetrics {
    pub total_samples: usize,
    #[serde(default)]
    pub failed_samples: usize,
    /// Images captioned together ([`crate::Captioner::caption_batch`]); 1 = one at a time.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Seconds per image, end to end. In batches, an image's time is its own preprocessing plus
    /// an equal share of its batch's vision and decoding time, so the sum over images is the
    /// batches' wall time.
    pub avg_inference_time: f64,
    /// Images per second of the summed per-image times: with batches, images per second of the
    /// batched runs' wall time.
    pub throughput_images_per_sec: f64,
    /// Generated tokens per second of end-to-end time.
    pub tokens_per_second: f64,
    /// Peak resident memory of the process (MB), when measured.
    pub memory_usage_mb: Option<f64>,
    pub individual_times: Vec<f64>,
    /// Mean seconds per image in each stage.
    pub breakdown: Breakdown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    /// BLEU-4, 0..1.
    pub bleu_score: f64,
    #[serde(flatten)]
    pub scores: metrics::CaptionScores,
    pub evaluation_method: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfoReport {
    pub total_parameters: usize,
    pub model_size_mb: f64,
    pub device: String,
    pub is_quantized: bool,
    pub dtype: String,
    pub model_path: String,
}

impl ModelInfoReport {
    /// The report's model facts: `info` from the loaded model, plus where it came from, its
    /// weight file's size (MB of 2^20 bytes) and the device string (`cpu`, or the browser build).
    pub fn new(info: &ModelInfo, model_size_mb: f64, device: String, model_path: String) -> Self {
        Self {
            total_parameters: info.total_parameters,
            model_size_mb,
            device,
            is_quantized: info.is_quantized,
            dtype: info.dtype.clone(),
            model_path,
        }
    }
}

/// Everything measured for one model (`<label>_results.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelResults {
    pub label: String,
    pub performance_metrics: PerformanceMetrics,
    pub quality_metrics: Option<QualityMetrics>,
    pub model_info: ModelInfoReport,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub samples: Vec<Sample>,
}

fn one() -> usize {
    1
}

/// How one benchmark item ended, as [`run`] reports it to its progress callback.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Captioned(&'a Sample),
    Failed(&'a Failure),
}

/// The samples and failures of one model's run over a list of items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
}

impl Run {
    fn record(
        &mut self,
        item: &Item,
        outcome: std::result::Result<Caption, String>,
    ) -> Outcome<'_> {
        match outcome {
            Ok(c) => {
                self.samples.push(Sample {
                    image: item.file.clone(),
                    image_id: item.image_id.clone(),
                    caption: c.caption,
                    token_ids: c.token_ids,
                    new_tokens: c.new_tokens,
                    timings: c.timings,
                    image_embedding_cls: c.image_cls,
                });
                Outcome::Captioned(&self.samples[self.samples.len() - 1])
            }
            Err(error) => {
                self.failures.push(Failure {
                    image: item.file.clone(),
                    error,
                });
                Outcome::Failed(&self.failures[self.failures.len() - 1])
            }
        }
    }
}

/// How [`run`] captions: the caption options, untimed warm-up captions first, and how many
/// images at a time.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub caption: CaptionOptions,
    /// Untimed captions of the first readable image before the first timed one, rounded up to
    /// whole batches. Warming stops at the first error (that image then fails in the timed run).
    pub warmup: usize,
    /// Images captioned together ([`Captioner::caption_batch`]); 0 or 1 = one at a time.
    pub batch_size: usize,
}

/// Captions every item with `model` — `read` gives an item's image bytes, or the message of why
/// it cannot — and collects the
/// samples and failures, in item order: the benchmark loop of `blipq bench` and of the page's
/// benchmark worker. An unreadable image or a failed caption is recorded as that item's failure
/// and the run goes on; a batch that fails as a whole is recorded for each of its images.
/// `on_item(done, outcome)` follows each item.
pub fn run(
    model: &Captioner,
    items: &[Item],
    read: &mut dyn FnMut(&Item) -> std::result::Result<Vec<u8>, String>,
    opts: &RunOptions,
    on_item: &mut dyn FnMut(usize, Outcome<'_>),
) -> Run {
    let batch_size = opts.batch_size.max(1);
    let mut run = Run::default();
    let mut warmed = false;
    let mut done = 0;
    for chunk in items.chunks(batch_size) {
        let images: Vec<std::result::Result<Vec<u8>, String>> =
            chunk.iter().map(&mut *read).collect();
        if !warmed {
            if let Some(bytes) = images.iter().find_map(|r| r.as_ref().ok()) {
                warm_up(model, bytes, opts, batch_size);
                warmed = true;
            }
        }
        let mut captions = caption_chunk(model, chunk, &images, opts, batch_size).into_iter();
        for (item, image) in chunk.iter().zip(images) {
            let outcome = match image {
                Err(e) => Err(e),
                Ok(_) => captions
                    .next()
                    .unwrap_or_else(|| Err("no caption returned".into())),
            };
            done += 1;
            on_item(done, run.record(item, outcome));
        }
    }
    run
}

/// `opts.warmup` untimed captions of `bytes` (whole batches when batching); stops at an error.
fn warm_up(model: &Captioner, bytes: &[u8], opts: &RunOptions, batch_size: usize) {
    if batch_size == 1 {
        for _ in 0..opts.warmup {
            if model
                .caption(bytes, "warmup", &opts.caption, &mut |_| {})
                .is_err()
            {
                return;
            }
        }
    } else {
        let batch = vec![BatchImage::encoded(bytes, "warmup"); batch_size];
        for _ in 0..opts.warmup.div_ceil(batch_size) {
            if model.caption_batch(&batch, &opts.caption).is_err() {
                return;
            }
        }
    }
}

/// The captions of a chunk's readable images, in order (one at a time, or as one batch), each
/// error as its message.
fn caption_chunk(
    model: &Captioner,
    chunk: &[Item],
    images: &[std::result::Result<Vec<u8>, String>],
    opts: &RunOptions,
    batch_size: usize,
) -> Vec<std::result::Result<Caption, String>> {
    let readable = chunk
        .iter()
        .zip(images)
        .filter_map(|(item, r)| r.as_ref().ok().map(|bytes| (item, bytes)));
    if batch_size == 1 {
        return readable
            .map(|(item, bytes)| {
                model
                    .caption(bytes, &item.file, &opts.caption, &mut |_| {})
                    .map_err(|e| e.to_string())
            })
            .collect();
    }
    let batch: Vec<BatchImage> = readable
        .map(|(item, bytes)| BatchImage::encoded(bytes, &item.file))
        .collect();
    match model.caption_batch(&batch, &opts.caption) {
        Ok(captions) => captions
            .into_iter()
            .map(|c| c.map_err(|e| e.to_string()))
            .collect(),
        Err(e) => vec![Err(e.to_string()); batch.len()],
    }
}

/// One model's `<label>_results.json` from its run: [`performance`] (with the batch size),
/// [`quality`] against `items`' references, and the model facts.
pub fn model_results(
    label: &str,
    items: &[Item],
    run: Run,
    batch_size: usize,
    peak_memory_mb: Option<f64>,
    model_info: ModelInfoReport,
) -> Result<ModelResults> {
    Ok(ModelResults {
        label: label.to_string(),
        performance_metrics: PerformanceMetrics {
            batch_size: batch_size.max(1),
            ..performance(&run.samples, run.failures.len(), peak_memory_mb)
        },
        quality_metrics: quality(&run.samples, items)?,
        model_info,
        failures: run.failures,
        samples: run.samples,
    })
}

/// Speed figures from the samples of one run (images one at a time; set `batch_size` after for
/// batched runs: the figures come from the per-image times either way).
pub fn performance(
    samples: &[Sample],
    failed: usize,
    peak_rss_mb: Option<f64>,
) -> PerformanceMetrics {
    let n = samples.len();
    let times: Vec<f64> = samples.iter().map(|s| s.timings.total_s).collect();
    let total: f64 = times.iter().sum();
    let tokens: usize = samples.iter().map(|s| s.new_tokens).sum();
    let mean = |f: fn(&Timings) -> f64| {
        if n == 0 {
            0.0
        } else {
            samples.iter().map(|s| f(&s.timings)).sum::<f64>() / n as f64
        }
    };
    PerformanceMetrics {
        total_samples: n,
        failed_samples: failed,
        batch_size: 1,
        avg_inference_time: if n == 0 { 0.0 } else { total / n as f64 },
        throughput_images_per_sec: if total > 0.0 { n as f64 / total } else { 0.0 },
        tokens_per_second: if total > 0.0 {
            tokens as f64 / total
        } else {
            0.0
        },
        memory_usage_mb: peak_rss_mb,
        individual_times: times,
        breakdown: Breakdown {
            preprocess_s: mean(|t| t.preprocess_s),
            vision_s: mean(|t| t.vision_s),
            decode_s: mean(|t| t.decode_s),
        },
    }
}

/// Caption metrics of the samples that have references (None when none have).
pub fn quality(samples: &[Sample], items: &[Item]) -> Result<Option<QualityMetrics>> {
    let refs: std::collections::HashMap<&ImageId, &Vec<String>> = items
        .iter()
        .filter(|i| !i.references.is_empty())
        .filter_map(|i| i.image_id.as_ref().map(|id| (id, &i.references)))
        .collect();
    let images: Vec<ImageCaptions> = samples
        .iter()
        .filter_map(|s| {
            let id = s.image_id.as_ref()?;
            let r = refs.get(id)?;
            Some(ImageCaptions {
                image_id: id.clone(),
                hypothesis: s.caption.clone(),
                references: (*r).clone(),
            })
        })
        .collect();
    if images.is_empty() {
        return Ok(None);
    }
    let eval = metrics::evaluate(&images)?;
    Ok(Some(QualityMetrics {
        bleu_score: eval.scores.bleu_4,
        scores: eval.scores,
        evaluation_method: metrics::EVALUATION_METHOD.to_string(),
    }))
}

/// COCO results `[{"image_id", "caption"}]` of the annotated samples.
pub fn coco_results(samples: &[Sample]) -> Vec<metrics::CocoCaption> {
    samples
        .iter()
        .filter_map(|s| {
            Some(metrics::CocoCaption {
                image_id: s.image_id.clone()?,
                caption: s.caption.clone(),
            })
        })
        .collect()
}

/// One row of the comparison: how to read a value from a model's results (given the first
/// model's, the reference) and how to compare two values.
struct Row {
    label: &'static str,
    value: fn(&ModelResults, &ModelResults) -> Option<f64>,
    decimals: usize,
    compare: Compare,
}

#[derive(Clone, Copy)]
enum Compare {
    /// Lower is better; shown as "N.NNx faster".
    Speedup,
    /// Higher is better; shown as a ratio.
    Ratio,
    /// Lower is better; shown as a percentage change.
    Reduction,
    /// Higher is better; shown as the share kept.
    Retention,
    /// Already relative to the reference: no improvement column.
    Relative,
}

const ROWS: [Row; 10] = [
    Row {
        label: "Inference speed (s/image)",
        value: |r, _| Some(r.performance_metrics.avg_inference_time),
        decimals: 3,
        compare: Compare::Speedup,
    },
    Row {
        label: "Throughput (img/s)",
        value: |r, _| Some(r.performance_metrics.throughput_images_per_sec),
        decimals: 2,
        compare: Compare::Ratio,
    },
    Row {
        label: "Memory (MB)",
        value: |r, _| r.performance_metrics.memory_usage_mb,
        decimals: 1,
        compare: Compare::Reduction,
    },
    Row {
        label: "Model size (MB)",
        value: |r, _| Some(r.model_info.model_size_mb),
        decimals: 1,
        compare: Compare::Reduction,
    },
    Row {
        label: "Bytes / parameter",
        value: |r, _| bytes_per_parameter(r),
        decimals: 2,
        compare: Compare::Reduction,
    },
    Row {
        label: "BLEU-4",
        value: |r, _| r.quality_metrics.as_ref().map(|q| q.bleu_score),
        decimals: 4,
        compare: Compare::Retention,
    },
    Row {
        label: "CIDEr",
        value: |r, _| r.quality_metrics.as_ref().map(|q| q.scores.cider),
        decimals: 4,
        compare: Compare::Retention,
    },
    Row {
        label: "Token agreement with the first",
        value: |r, base| token_agreement(r, base),
        decimals: 4,
        compare: Compare::Relative,
    },
    Row {
        label: "Vision embedding cosine with the first",
        value: |r, base| embedding_cosine(r, base),
        decimals: 6,
        compare: Compare::Relative,
    },
    Row {
        label: "Tokens/s",
        value: |r, _| Some(r.performance_metrics.tokens_per_second),
        decimals: 1,
        compare: Compare::Ratio,
    },
];

/// Bytes of the weights file per parameter (4 for f32; 1 to 1.2 for blipq's INT8, by the share
/// kept in f32).
fn bytes_per_parameter(r: &ModelResults) -> Option<f64> {
    let n = r.model_info.total_parameters;
    (n > 0).then(|| r.model_info.model_size_mb * crate::MB / n as f64)
}

/// Mean of `score(r's sample, base's sample)` over the images both runs captioned (where it
/// gives a value); `None` when there is none.
fn mean_over_shared_images(
    r: &ModelResults,
    base: &ModelResults,
    score: impl Fn(&Sample, &Sample) -> Option<f64>,
) -> Option<f64> {
    let theirs: std::collections::HashMap<&str, &Sample> =
        base.samples.iter().map(|s| (s.image.as_str(), s)).collect();
    let scores: Vec<f64> = r
        .samples
        .iter()
        .filter_map(|s| score(s, theirs.get(s.image.as_str())?))
        .collect();
    (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
}

/// Mean, over the images both runs captioned, of the fraction of greedy token positions where
/// `r`'s caption agrees with `base`'s ([`metrics::token_agreement`]); `None` when they share
/// no image.
pub(crate) fn token_agreement(r: &ModelResults, base: &ModelResults) -> Option<f64> {
    mean_over_shared_images(r, base, |a, b| {
        Some(metrics::token_agreement(&a.token_ids, &b.token_ids))
    })
}

/// Mean, over the images both runs captioned, of the cosine similarity of the vision encoder's
/// class-token outputs ([`Sample::image_embedding_cls`]); `None` when they share no image with
/// embeddings of one size.
fn embedding_cosine(r: &ModelResults, base: &ModelResults) -> Option<f64> {
    mean_over_shared_images(r, base, |a, b| {
        let (a, b) = (&a.image_embedding_cls, &b.image_embedding_cls);
        (!a.is_empty() && a.len() == b.len()).then(|| metrics::cosine(a, b))
    })
}

/// The improvement of `new` over `base` for one row, as text.
fn improvement(compare: Compare, base: Option<f64>, new: Option<f64>) -> String {
    let (Some(b), Some(n)) = (base, new) else {
        return "n/a".into();
    };
    if matches!(compare, Compare::Relative) {
        return "—".into();
    }
    if b == 0.0 || n == 0.0 {
        return "n/a".into();
    }
    match compare {
        Compare::Speedup => format!("{:.2}x faster", b / n),
        Compare::Ratio => format!("{:.2}x", n / b),
        Compare::Reduction => format!("{:+.1}%", (n - b) / b * 100.0),
        Compare::Retention => format!("{:.1}% retained", n / b * 100.0),
        Compare::Relative => "—".into(),
    }
}

/// The comparison as a Markdown table: one column per model, then one improvement column per
/// model after the first (relative to the first).
pub fn comparison_markdown(models: &[ModelResults]) -> String {
    let mut header = vec!["Metric".to_string()];
    header.extend(models.iter().map(|m| m.label.clone()));
    if let Some(base) = models.first() {
        header.extend(
            models
                .iter()
                .skip(1)
                .map(|m| format!("Improvement ({} vs {})", m.label, base.label)),
        );
    }
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in &ROWS {
        let Some(first) = models.first() else { break };
        let mut cells = vec![row.label.to_string()];
        cells.extend(models.iter().map(|m| match (row.value)(m, first) {
            Some(v) => format!("{v:.prec$}", prec = row.decimals),
            None => "n/a".into(),
        }));
        if let Some(base) = models.first() {
            cells.extend(
                models.iter().skip(1).map(|m| {
                    improvement(row.compare, (row.value)(base, base), (row.value)(m, base))
                }),
            );
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(&format!("\n{}.\n", crate::MB_UNIT));
    out
}

/// `comparison.json`: per-model headline numbers and the improvements relative to the first.
pub fn comparison_json(models: &[ModelResults]) -> serde_json::Value {
    let per_model: Vec<serde_json::Value> = models
        .iter()
        .map(|m| {
            let mut row = serde_json::Map::new();
            row.insert("label".into(), m.label.clone().into());
            row.insert("model_path".into(), m.model_info.model_path.clone().into());
            for r in &ROWS {
                row.insert(r.label.into(), (r.value)(m, &models[0]).into());
            }
            serde_json::Value::Object(row)
        })
        .collect();
    let improvements: Vec<serde_json::Value> = match models.first() {
        None => vec![],
        Some(base) => models
            .iter()
            .skip(1)
            .map(|m| {
                let mut row = serde_json::Map::new();
                row.insert(
                    "label".into(),
                    format!("{} vs {}", m.label, base.label).into(),
                );
                for r in &ROWS {
                    row.insert(
                        r.label.into(),
                        improvement(r.compare, (r.value)(base, base), (r.value)(m, base)).into(),
                    );
                }
                serde_json::Value::Object(row)
            })
            .collect(),
    };
    serde_json::json!({ "models": per_model, "improvements": improvements })
}

/// The work one caption costs, counted from the configuration: what "% of this machine's limit"
/// divides by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Work {
    /// Multiply-adds of the vision encoder for one image (patch embedding, projections, MLPs and
    /// attention).
    pub vision_macs: f64,
    /// Of those, the attention products (`q kᵀ` and `p v`), which run in f32 in every model.
    pub vision_attention_macs: f64,
    /// Weight values the decoder reads per generated token: self-attention, the cross-attention
    /// query and output (its keys and values are computed once per image), the MLP, the head's
    /// transform and the vocabulary projection.
    pub decode_weights_per_token: f64,
}

impl Work {
    pub fn of(cfg: &crate::config::BlipConfig) -> Self {
        let v = &cfg.vision;
        let (h, mlp) = (v.hidden_size as f64, v.intermediate_size as f64);
        let patches = (v.image_size / v.patch_size).pow(2) as f64;
        let tokens = patches + 1.0;
        let per_layer = tokens * (4.0 * h * h + 2.0 * h * mlp);
        let attention = v.num_hidden_layers as f64 * 2.0 * tokens * tokens * h;
        let patch_embed = patches * 3.0 * (v.patch_size * v.patch_size) as f64 * h;
        let t = &cfg.text;
        let (th, tmlp) = (t.hidden_size as f64, t.intermediate_size as f64);
        let text_layer = 6.0 * th * th + 2.0 * th * tmlp;
        Self {
            vision_macs: patch_embed + v.num_hidden_layers as f64 * per_layer + attention,
            vision_attention_macs: attention,
            decode_weights_per_token: t.num_hidden_layers as f64 * text_layer
                + th * th
                + t.vocab_size as f64 * th,
        }
    }
}

/// Bytes one weight value occupies in blipq's kernels' layouts: 4 for f32; for INT8, a packed
/// block's 512 values and 16 f32 scales in 576 bytes.
pub fn bytes_per_weight(quantized: bool) -> f64 {
    if quantized {
        576.0 / 512.0
    } else {
        4.0
    }
}
