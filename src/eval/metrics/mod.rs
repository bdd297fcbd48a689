//! Caption-quality metrics with the COCO caption evaluation's rules: a port of `pycocoevalcap`'s
//! PTB tokenizer, BLEU-1..4, ROUGE-L and CIDEr-D, checked against the real package
//! (`tools/record_metrics.py` records the expected values, `tests/metrics.rs` compares).
//!
//! Everything works on strings, so it also runs in wasm32; [`evaluate_coco_files`] is a native-only
//! convenience.
//!
//! What is evaluated, as `COCOEvalCap` with `params["image_id"] = results.getImgIds()` (the official
//! example) does: exactly the images that have a result. Consequences:
//! - images of the annotations without a result are ignored;
//! - a result whose image has no reference caption is an error (`pycocotools` refuses it too);
//! - two results for one image are an error (`pycocoevalcap` asserts one hypothesis per image);
//! - images are taken in the annotations' `"images"` order, then in order of first reference. Order
//!   matters only to the tokenizer, whose sentence-boundary look-ahead can see the next caption.
//!
//! BLEU and CIDEr are corpus-level (BLEU sums counts over images; CIDEr's idf comes from the
//! evaluated images' references), so a subset's score is not the mean of per-image scores.

mod bleu;
mod cider;
mod coco;
mod pattern;
mod rouge;
pub mod tokenize;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use coco::{parse_annotations, parse_results, Annotations, CocoCaption, ImageId, ImageInfo};

use crate::{Error, Result};

/// Value for the reports' `evaluation_method` field.
pub const EVALUATION_METHOD: &str =
    "pycocoevalcap (PTB tokenizer, BLEU closest, ROUGE-L, CIDEr-D), Rust port";

/// Corpus scores under `pycocoevalcap`'s keys. BLEU and ROUGE-L are in 0..1, CIDEr in 0..10.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionScores {
    #[serde(rename = "Bleu_1")]
    pub bleu_1: f64,
    #[serde(rename = "Bleu_2")]
    pub bleu_2: f64,
    #[serde(rename = "Bleu_3")]
    pub bleu_3: f64,
    #[serde(rename = "Bleu_4")]
    pub bleu_4: f64,
    #[serde(rename = "ROUGE_L")]
    pub rouge_l: f64,
    #[serde(rename = "CIDEr")]
    pub cider: f64,
}

impl CaptionScores {
    fn new(bleu: [f64; bleu::N], rouge_l: f64, cider: f64) -> Self {
        let [bleu_1, bleu_2, bleu_3, bleu_4] = bleu;
        CaptionScores {
            bleu_1,
            bleu_2,
            bleu_3,
            bleu_4,
            rouge_l,
            cider,
        }
    }
}

/// One image's scores, like an entry of `COCOEvalCap.evalImgs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    pub image_id: ImageId,
    #[serde(flatten)]
    pub scores: CaptionScores,
}

/// Corpus scores plus per-image scores, in evaluation order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub scores: CaptionScores,
    pub per_image: Vec<ImageScores>,
}

/// One image to evaluate: its generated caption and its reference captions (raw text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageCaptions {
    pub image_id: ImageId,
    pub hypothesis: String,
    pub references: Vec<String>,
}

/// Tokenizes as `pycocoevalcap` does (all references in one batch, all hypotheses in another) and
/// scores. Every image needs at least one reference.
pub fn evaluate(images: &[ImageCaptions]) -> Result<Evaluation> {
    if let Some(bad) = images.iter().find(|i| i.references.is_empty()) {
        return Err(Error::metrics(
            "references",
            format!("image {} has no reference captions", bad.image_id),
        ));
    }
    let all_refs: Vec<&str> = images
        .iter()
        .flat_map(|i| i.references.iter().map(String::as_str))
        .collect();
    let mut tokenized_refs = tokenize::tokenize_batch(&all_refs).into_iter();
    let refs: Vec<Vec<String>> = images
        .iter()
        .map(|i| tokenized_refs.by_ref().take(i.references.len()).collect())
        .collect();
    let hyps = tokenize::tokenize_batch(
        &images
            .iter()
            .map(|i| i.hypothesis.as_str())
            .collect::<Vec<_>>(),
    );
    let ids: Vec<ImageId> = images.iter().map(|i| i.image_id.clone()).collect();
    Ok(score_tokenized(&ids, &hyps, &refs))
}

/// Scores already tokenized captions (space-separated tokens, as `PTBTokenizer` output). `ids`,
/// `hypotheses` and `references` are parallel; an image without references scores 0.
pub fn score_tokenized<S: AsRef<str>>(
    ids: &[ImageId],
    hypotheses: &[S],
    references: &[Vec<S>],
) -> Evaluation {
    let hyps: Vec<&str> = hypotheses.iter().map(AsRef::as_ref).collect();
    let refs: Vec<Vec<&str>> = references
        .iter()
        .map(|r| r.iter().map(AsRef::as_ref).collect())
        .collect();
    let bleu_stats: Vec<bleu::BleuStats> = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| bleu::image_stats(h, r))
        .collect();
    let rouge: Vec<f64> = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| rouge::image_score(h, r))
        .collect();
    let (cider_mean, cider) = cider::cider(&hyps, &refs);
    let per_image = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ImageScores {
            image_id: id.clone(),
            scores: CaptionScores::new(bleu::score(&bleu_stats[i]), rouge[i], cider[i]),
        })
        .collect();
    let rouge_mean = if rouge.is_empty() {
        0.0
    } else {
        rouge.iter().sum::<f64>() / rouge.len() as f64
    };
    Evaluation {
        scores: CaptionScores::new(bleu::corpus(&bleu_stats), rouge_mean, cider_mean),
        per_image,
    }
}

/// Fraction of positions (over the longer sequence) with equal tokens.
pub fn token_agreement(a: &[u32], b: &[u32]) -> f64 {
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / n as f64
}

/// Cosine similarity of two vectors (of equal length), accumulated in f64; 0 for a zero vector.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += *x as f64 * *y as f64;
        na += (*x as f64).powi(2);
        nb += (*y as f64).powi(2);
    }
    dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)
}

/// BLEU-4 of one caption against its references, tokenized and scored as `pycocoevalcap` would for a
/// one-image set (the web page shows it per image). 0 without references.
pub fn bleu4<S: AsRef<str>>(hypothesis: &str, references: &[S]) -> f64 {
    let refs = tokenize::tokenize_batch(references);
    let hyp = tokenize::tokenize(hypothesis);
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    if refs.is_empty() {
        return 0.0;
    }
    bleu::score(&bleu::image_stats(&hyp, &refs))[bleu::N - 1]
}

/// Evaluates a COCO results file against a COCO annotations file, both given as JSON text.
/// Serializes to `{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}`.
pub fn evaluate_coco(annotations: &str, results: &str) -> Result<CaptionScores> {
    Ok(evaluate_coco_detailed(annotations, results)?.scores)
}

/// As [`evaluate_coco`], with per-image scores.
pub fn evaluate_coco_detailed(annotations: &str, results: &str) -> Result<Evaluation> {
    evaluate_named(annotations, "annotations", results, "results")
}

/// Reads and evaluates COCO files (native only); errors name the files.
#[cfg(not(target_arch = "wasm32"))]
pub fn evaluate_coco_files(
    annotations: &std::path::Path,
    results: &std::path::Path,
) -> Result<Evaluation> {
    let read =
        |p: &std::path::Path| crate::fsio::read_text(p, crate::limits::MAX_ANNOTATIONS_BYTES);
    evaluate_named(
        &read(annotations)?,
        &annotations.display().to_string(),
        &read(results)?,
        &results.display().to_string(),
    )
}

fn evaluate_named(
    annotations: &str,
    ann_file: &str,
    results: &str,
    res_file: &str,
) -> Result<Evaluation> {
    let annotations = parse_annotations(annotations, ann_file)?;
    let results = parse_results(results, res_file)?;
    let images = pair_results(&annotations, &results, res_file)?;
    evaluate(&images)
}

/// Matches results to references in evaluation order (see the module doc).
pub fn pair_results(
    annotations: &Annotations,
    results: &[CocoCaption],
    res_file: &str,
) -> Result<Vec<ImageCaptions>> {
    if results.is_empty() {
        return Err(Error::metrics(res_file, "no results to evaluate"));
    }
    let refs = annotations.references();
    let mut hyps: HashMap<&ImageId, &str> = HashMap::new();
    for r in results {
        if !refs.contains_key(&r.image_id) {
            return Err(Error::metrics(
                res_file,
                format!(
                    "image {} has no reference captions in the annotations",
                    r.image_id
                ),
            ));
        }
        if hyps.insert(&r.image_id, &r.caption).is_some() {
            return Err(Error::metrics(
                res_file,
                format!(
                    "more than one result for image {} (COCO evaluation takes exactly one)",
                    r.image_id
                ),
            ));
        }
    }
    Ok(annotations
        .image_order()
        .into_iter()
        .filter_map(|id| {
            let hypothesis = hyps.get(id)?;
            Some(ImageCaptions {
                image_id: id.clone(),
                hypothesis: hypothesis.to_string(),
                references: refs
                    .get(id)
                    .map(|r| r.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// Python's `str.split()` (no argument): splits on runs of Unicode whitespace as Python defines it,
/// which includes the no-break space some PTB tokens carry.
pub(crate) fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

fn is_py_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\u{1C}'..='\u{20}' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}'
        | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_split_matches_python() {
        assert_eq!(py_split("  a \u{a0}b\tc "), vec!["a", "b", "c"]);
        assert!(py_split("").is_empty());
    }

    #[test]
    fn scores_serialize_with_coco_keys() {
        let json = serde_json::to_value(CaptionScores::default()).unwrap_or_default();
        let keys: Vec<&String> = json
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 6);
        for k in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
            assert!(json.get(k).is_some(), "{k}");
        }
    }
}
