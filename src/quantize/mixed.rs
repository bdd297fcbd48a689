//! `--scheme mixed`: a per-layer precision plan chosen by a sensitivity sweep.
//!
//! The quantizable weights are put in layer groups ([`group_of`]: one transformer layer, or one
//! module such as the patch embedding). The sweep quantizes one group at a time to 4 bits
//! (`q4_0`), everything else f32, and measures on the validation images how far the model moves
//! from FP32: the cosine of the decoder's logits along FP32's own caption (teacher-forced, every
//! position), the greedy token agreement, and the vision-embedding cosine. Then, starting from
//! every group at 4 bits, the most sensitive groups (lowest logits cosine first) are raised to
//! `Q8_0` one at a time while the file stays within the size budget, until the quality floor
//! (token agreement with FP32), if given, is met. The word embeddings (the tied LM head's table)
//! stay `Q8_0`, as in the 4-bit schemes. The plan goes into the file's metadata
//! ([`crate::checkpoint::int8::PLAN_KEY`]) and, with the sweep, into the quantize report.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::Serialize;

use super::{quantize_with, Precision, QuantizeSummary};
use crate::checkpoint::int8::{self, Layout};
use crate::checkpoint::{Checkpoint, MatrixTable, Safetensors};
use crate::eval::metrics::{cosine, token_agreement};
use crate::{CaptionOptions, Captioner, Error, ModelFiles, Result};

/// The user's bounds on the plan.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MixedOptions {
    /// Largest weights file, as a fraction of the source's ([`DEFAULT_BUDGET`] if `None`).
    pub size_budget: Option<f64>,
    /// Raise groups only until the mixed model's greedy token agreement with FP32 on the
    /// validation images reaches this (`None`: raise every group the budget allows).
    pub quality_floor: Option<f64>,
}

impl MixedOptions {
    /// The size budget (the default if none was given), once both bounds are checked.
    pub fn check(&self) -> Result<f64> {
        let budget = self.size_budget.unwrap_or(DEFAULT_BUDGET);
        if !(budget > 0.0 && budget.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "size budget {budget}: give a fraction of the FP32 file above 0 (0.2 = a fifth)"
            )));
        }
        if let Some(f) = self.quality_floor {
            if !(0.0..=1.0).contains(&f) {
                return Err(Error::InvalidArgument(format!(
                    "quality floor {f}: give a token agreement between 0 and 1"
                )));
            }
        }
        Ok(budget)
    }
}

/// The size budget when none is given: a fifth of the source file.
pub const DEFAULT_BUDGET: f64 = 0.2;
/// The precision of the groups not raised, and of the sweep's one group.
const LOW: Precision = Precision::Int4(int8::BLOCK);
/// The precision of the raised groups.
const HIGH: Precision = Precision::Q8_0;

/// How one layer group fared in the sweep (alone at 4 bits), and where the plan put it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub parameters: usize,
    /// Mean cosine of the logits along FP32's captions (teacher-forced).
    pub logits_cosine: f64,
    pub token_agreement: f64,
    pub vision_cosine: f64,
    pub precision: Precision,
}

/// The plan after a step: the group raised (none for the all-4-bit start) and the model's
/// measured quality.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub raised: Option<String>,
    pub size_fraction: f64,
    pub token_agreement: Option<f64>,
    pub logits_cosine: Option<f64>,
}

/// The plan and how it was chosen (the quantize report's `mixed_plan`).
#[derive(Clone, Debug, Serialize)]
pub struct MixedPlan {
    pub low: Precision,
    pub high: Precision,
    pub size_budget: f64,
    pub quality_floor: Option<f64>,
    /// Every group, most sensitive first.
    pub groups: Vec<GroupReport>,
    pub steps: Vec<Step>,
    /// The file's estimated size as a fraction of the source's.
    pub size_fraction: f64,
    /// The final model's measured agreement with FP32 on the validation images.
    pub token_agreement: f64,
    pub logits_cosine: f64,
}

/// The layer group of a weight: its name up to its first all-digit component (a layer index:
/// `vision_model.encoder.layers.3`), or its module (the name without `.weight`).
pub fn group_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(i) => parts[..=i].join("."),
        None => name.strip_suffix(".weight").unwrap_or(name).to_string(),
    }
}

/// FP32's view of one validation image: its vision embeddings, greedy caption and the logits
/// along it.
struct Reference {
    pixels: Tensor,
    embeds: Tensor,
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

/// The decoder's logits at every position of `ids` (teacher-forced), one row per token after
/// the first.
fn logits_along(model: &Captioner, embeds: &Tensor, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    if ids.len() < 2 {
        return Ok(Vec::new());
    }
    let mut state = model.model().start_decoding(embeds)?;
    let input = Tensor::new(&ids[..ids.len() - 1], embeds.device())?.unsqueeze(0)?;
    let logits = model.model().decode_step(&input, &mut state)?;
    let vocab = *logits.dims().last().unwrap_or(&1);
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
}

/// `(token agreement, logits cosine, vision cosine)` of `model` against FP32, means over the
/// images.
fn measure(model: &Captioner, refs: &[Reference]) -> Result<(f64, f64, f64)> {
    let (mut agree, mut logits, mut vision) = (0.0, 0.0, 0.0);
    for r in refs {
        let embeds = model.encode_image(&r.pixels)?;
        vision += cosine(
            &embeds.flatten_all()?.to_vec1::<f32>()?,
            &r.embeds.flatten_all()?.to_vec1::<f32>()?,
        );
        let (ids, _) = model.generate_ids(&embeds, &CaptionOptions::default(), &mut |_| {})?;
        agree += token_agreement(&ids, &r.ids);
        let rows = logits_along(model, &embeds, &r.ids)?;
        let n = rows.len().max(1) as f64;
        logits += rows
            .iter()
            .zip(&r.logits)
            .map(|(a, b)| cosine(a, b))
            .sum::<f64>()
            / n;
    }
    let n = refs.len().max(1) as f64;
    Ok((agree / n, logits / n, vision / n))
}

/// A model from serialized weights and `files`' other parts.
fn load_from(files: &ModelFiles, bytes: Vec<u8>) -> Result<Captioner> {
    let weights = Checkpoint::Safetensors(Safetensors::new(Box::new(bytes), "mixed trial")?);
    Captioner::load(ModelFiles {
        config: files.config.clone(),
        weights,
        tokenizer: files.tokenizer.clone(),
        tokenizer_config: files.tokenizer_config.clone(),
        preprocessor: files.preprocessor.clone(),
        generation: files.generation.clone(),
    })
}

/// Progress of [`quantize_mixed`]: `(stage, done, total)` with stage `"reference"`, `"sweep"`,
/// `"plan"` or `"write"`.
pub type OnStage<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The mixed-precision checkpoint of `files` (FP32): the sweep on `images`, the plan within
/// `opts`, and the file (with `source_sha256` and the plan in its metadata). Each trial shares
/// the FP32 model's packed matrices but for those it quantizes (built from a file of those
/// alone, by the loader's own code), so the sweep holds about one FP32 model in memory; the
/// final file is loaded whole and measured once more.
pub fn quantize_mixed(
    files: &ModelFiles,
    images: &[(String, Vec<u8>)],
    opts: MixedOptions,
    importance: Option<&super::Importance>,
    source_sha256: &str,
    on_stage: OnStage,
) -> Result<(Vec<u8>, QuantizeSummary, MixedPlan)> {
    let budget = opts.check()?;
    if images.is_empty() {
        return Err(Error::InvalidArgument(
            "the mixed scheme's sensitivity sweep needs validation images".into(),
        ));
    }
    let ckpt = &files.weights;
    // The FP32 model, whose packed matrices every trial shares but for those it quantizes.
    let fp32_matrices = MatrixTable::default();
    let fp32 = &Captioner::with_matrices(files, &fp32_matrices)?;
    let fp32_matrices = fp32_matrices.entries();
    // FP32's captions, embeddings and logits on every image.
    let mut refs = Vec::with_capacity(images.len());
    for (i, (name, bytes)) in images.iter().enumerate() {
        on_stage("reference", i, images.len());
        let pixels = fp32.pixel_values(bytes, name)?;
        let embeds = fp32.encode_image(&pixels)?;
        let (ids, _) = fp32.generate_ids(&embeds, &CaptionOptions::default(), &mut |_| {})?;
        let logits = logits_along(fp32, &embeds, &ids)?;
        refs.push(Reference {
            pixels,
            embeds,
            ids,
            logits,
        });
    }
    // The groups of the weights the plan decides (the word embeddings stay `Q8_0`).
    let tied = ckpt.tied_duplicates()?;
    let mut groups: BTreeMap<String, Vec<(String, usize, usize)>> = BTreeMap::new();
    // Every weight the file quantizes: the groups' and the word embeddings.
    let mut quantizable: Vec<String> = Vec::new();
    for name in ckpt.names() {
        let Some((_, shape)) = ckpt.info(&name) else {
            continue;
        };
        if tied.contains(&name) || !super::is_quantizable(&name, &shape) {
            continue;
        }
        quantizable.push(name.clone());
        if !name.contains("word_embeddings") {
            groups
                .entry(group_of(&name))
                .or_default()
                .push((name, shape[0], shape[1]));
        }
    }
    let group_of_name: BTreeMap<&str, &str> = groups
        .iter()
        .flat_map(|(g, ws)| ws.iter().map(move |(n, _, _)| (n.as_str(), g.as_str())))
        .collect();
    let serialize = |precision: &dyn Fn(&str) -> Option<Precision>| -> Result<Vec<u8>> {
        let (bytes, _) = quantize_with(
            ckpt,
            (Layout::Mixed, source_sha256, &[]),
            &|name| precision(name).unwrap_or(HIGH),
            importance,
            &mut |_, _, _| {},
        )?;
        Ok(bytes)
    };
    // A trial model: the FP32 model's own matrices, but those `precision` quantizes, which are
    // quantized and loaded as from a whole file (by the same code), then measured. Nothing but
    // the quantized matrices and the small tensors is built again.
    let quantizable: Vec<&str> = quantizable.iter().map(String::as_str).collect();
    let trial = |precision: &dyn Fn(&str) -> Option<Precision>| -> Result<(f64, f64, f64)> {
        let stored = |name: &str| precision(name).unwrap_or(HIGH);
        let names: Vec<&str> = quantizable
            .iter()
            .copied()
            .filter(|n| stored(n) != Precision::F32)
            .collect();
        let bytes = super::quantized_subset(ckpt, Layout::Mixed, &names, &stored, importance)?;
        let subset = Checkpoint::Safetensors(Safetensors::new(Box::new(bytes), "mixed trial")?);
        let mut matrices = fp32_matrices.clone();
        for name in names {
            let (_, shape) = ckpt.lookup(name)?;
            let m = subset.load_matrix(name, shape[0], shape[1], &candle_core::Device::Cpu)?;
            // Only a matrix the model loads can be swapped (a name it does not ask for would
            // leave the trial silently FP32).
            if matrices.insert(name.to_string(), m).is_none() {
                return Err(Error::Internal(format!(
                    "mixed trial: `{name}` is not a matrix of the FP32 model"
                )));
            }
        }
        let model = Captioner::with_matrices(files, &MatrixTable::new(matrices))?;
        measure(&model, &refs)
    };
    // The smallest file (every group 4-bit), as written: its header and alignment on top of the
    // tensors' bytes are carried into every size estimate below.
    let source_bytes = ckpt.stored_bytes().max(1) as f64;
    let all_low = serialize(&|name| group_of_name.contains_key(name).then_some(LOW))?.len();
    let smallest = all_low as f64 / source_bytes;
    if smallest > budget {
        return Err(Error::InvalidArgument(format!(
            "size budget {:.1}% of the FP32 file is below the smallest mixed file, {:.1}% (every \
             layer 4-bit): give a larger size budget",
            100.0 * budget,
            100.0 * smallest
        )));
    }
    // The sweep: each group alone at 4 bits, everything else f32.
    let mut reports = Vec::with_capacity(groups.len());
    for (i, (group, weights)) in groups.iter().enumerate() {
        on_stage("sweep", i, groups.len());
        let (agree, logits, vision) = trial(&|name| {
            Some(match group_of_name.get(name) {
                Some(g) if g == group => LOW,
                _ => Precision::F32,
            })
        })?;
        reports.push(GroupReport {
            group: group.clone(),
            parameters: weights.iter().map(|(_, r, c)| r * c).sum(),
            logits_cosine: logits,
            token_agreement: agree,
            vision_cosine: vision,
            precision: LOW,
        });
    }
    on_stage("sweep", groups.len(), groups.len());
    reports.sort_by(|a, b| a.logits_cosine.total_cmp(&b.logits_cosine));
    // The plan: raise the most sensitive groups that fit the budget until the floor is met.
    let mut raised: Vec<String> = Vec::new();
    let mut size = all_low as f64;
    let plan_precision = |raised: &[String], name: &str| -> Option<Precision> {
        match group_of_name.get(name) {
            Some(g) if raised.iter().any(|r| r == g) => Some(HIGH),
            Some(_) => Some(LOW),
            None => None,
        }
    };
    let measure_plan = |raised: &[String]| trial(&|name| plan_precision(raised, name));
    let mut steps = Vec::new();
    let mut last = if opts.quality_floor.is_some() {
        Some(measure_plan(&raised)?)
    } else {
        None
    };
    steps.push(Step {
        raised: None,
        size_fraction: size / source_bytes,
        token_agreement: last.map(|m| m.0),
        logits_cosine: last.map(|m| m.1),
    });
    for (i, report) in reports.iter_mut().enumerate() {
        on_stage("plan", i, groups.len());
        if let (Some(floor), Some(m)) = (opts.quality_floor, last) {
            if m.0 >= floor {
                break;
            }
        }
        let extra: f64 = groups[&report.group]
            .iter()
            .map(|(_, r, c)| (HIGH.bytes(*r, *c) - LOW.bytes(*r, *c)) as f64)
            .sum();
        if (size + extra) / source_bytes > budget {
            continue;
        }
        size += extra;
        raised.push(report.group.clone());
        report.precision = HIGH;
        if opts.quality_floor.is_some() {
            last = Some(measure_plan(&raised)?);
        }
        steps.push(Step {
            raised: Some(report.group.clone()),
            size_fraction: size / source_bytes,
            token_agreement: last.map(|m| m.0),
            logits_cosine: last.map(|m| m.1),
        });
    }
    on_stage("write", 0, 1);
    let plan_json: BTreeMap<&str, Precision> = reports
        .iter()
        .map(|r| (r.group.as_str(), r.precision))
        .collect();
    let plan_text = serde_json::to_string(&plan_json)
        .map_err(|e| Error::Internal(format!("mixed plan: {e}")))?;
    let (bytes, summary) = quantize_with(
        ckpt,
        (
            Layout::Mixed,
            source_sha256,
            &[(int8::PLAN_KEY, plan_text.as_str())],
        ),
        &|name| plan_precision(&raised, name).unwrap_or(HIGH),
        importance,
        &mut |_, _, _| {},
    )?;
    let (agree, logits, _) = measure(&load_from(files, bytes.clone())?, &refs)?;
    on_stage("write", 1, 1);
    let plan = MixedPlan {
        low: LOW,
        high: HIGH,
        size_budget: budget,
        quality_floor: opts.quality_floor,
        groups: reports,
        steps,
        size_fraction: bytes.len() as f64 / source_bytes,
        token_agreement: agree,
        logits_cosine: logits,
    };
    Ok((bytes, summary, plan))
}

#[cfg(test)]
mod tests {
    use super::group_of;

    #[test]
    fn groups_are_layers_or_modules() {
        assert_eq!(
            group_of("vision_model.encoder.layers.3.mlp.fc1.weight"),
            "vision_model.encoder.layers.3"
        );
        assert_eq!(
            group_of("text_decoder.bert.encoder.layer.11.crossattention.self.query.weight"),
            "text_decoder.bert.encoder.layer.11"
        );
        assert_eq!(
            group_of("text_decoder.cls.predictions.transform.dense.weight"),
            "text_decoder.cls.predictions.transform.dense"
        );
    }
}
