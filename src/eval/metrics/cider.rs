//! CIDEr-D exactly as `pycocoevalcap/cider/cider_scorer.py` computes it (n = 4, sigma = 6).
//!
//! - Document frequency: for every image, each distinct 1..4-gram of its references counts once;
//!   idf uses log(number of images) - log(max(1, df)), so it depends on the *evaluated set* and a
//!   single image always scores 0.
//! - Each sentence becomes per-order tf-idf vectors; the similarity of hypothesis and reference is
//!   the clipped dot product sum(min(h, r) * r) / (|h| |r|), times the Gaussian length penalty
//!   exp(-delta^2 / (2 sigma^2)). `delta` is the difference in *bigram* counts, because the original
//!   counts `length` when the n-gram index is 1 (i.e. bigrams); we keep that quirk.
//! - Per image: the mean over the four orders, summed over references, divided by their number,
//!   times 10. The corpus score is the mean over images.

use std::collections::HashMap;

use super::py_split;

const N: usize = 4;
const SIGMA: f64 = 6.0;

/// A sentence's 1..4-gram counts in first-occurrence order (orders 1 to 4, left to right): the
/// order of the original's dicts, which is the order its floating-point sums are taken in, so
/// the scores are the same bits in every run.
#[derive(Default)]
struct Counts<'a> {
    grams: Vec<(&'a [&'a str], usize)>,
    index: HashMap<&'a [&'a str], usize>,
}

impl<'a> Counts<'a> {
    fn keys(&self) -> impl Iterator<Item = &'a [&'a str]> + '_ {
        self.grams.iter().map(|&(g, _)| g)
    }
}

fn ngram_counts<'a>(words: &'a [&'a str]) -> Counts<'a> {
    let mut counts = Counts::default();
    for k in 1..=N {
        for gram in words.windows(k) {
            match counts.index.get(gram) {
                Some(&i) => counts.grams[i].1 += 1,
                None => {
                    counts.index.insert(gram, counts.grams.len());
                    counts.grams.push((gram, 1));
                }
            }
        }
    }
    counts
}

/// A sentence as tf-idf vectors per n-gram order (in [`Counts`] order, with a lookup by n-gram),
/// their norms and its "length" (bigram count).
struct Vector<'a> {
    weights: [Vec<(&'a [&'a str], f64)>; N],
    lookup: [HashMap<&'a [&'a str], f64>; N],
    norms: [f64; N],
    length: usize,
}

/// `counts2vec`.
fn to_vector<'a>(counts: &Counts<'a>, df: &HashMap<&[&str], usize>, log_images: f64) -> Vector<'a> {
    let mut v = Vector {
        weights: Default::default(),
        lookup: Default::default(),
        norms: [0.0; N],
        length: 0,
    };
    for &(gram, tf) in &counts.grams {
        let n = gram.len() - 1;
        let idf_log = (df.get(gram).copied().unwrap_or(0) as f64).max(1.0).ln();
        let w = tf as f64 * (log_images - idf_log);
        v.weights[n].push((gram, w));
        v.lookup[n].insert(gram, w);
        v.norms[n] += w.powi(2);
        if n == 1 {
            v.length += tf;
        }
    }
    v.norms.iter_mut().for_each(|x| *x = x.sqrt());
    v
}

/// `sim`: per-order clipped cosine similarity with the length penalty.
fn similarity(hyp: &Vector, reference: &Vector) -> [f64; N] {
    let delta = hyp.length as f64 - reference.length as f64;
    let penalty = std::f64::consts::E.powf(-(delta.powi(2)) / (2.0 * SIGMA.powi(2)));
    let mut val = [0.0; N];
    for (n, v) in val.iter_mut().enumerate() {
        for &(gram, h) in &hyp.weights[n] {
            let r = reference.lookup[n].get(gram).copied().unwrap_or(0.0);
            *v += h.min(r) * r;
        }
        if hyp.norms[n] != 0.0 && reference.norms[n] != 0.0 {
            *v /= hyp.norms[n] * reference.norms[n];
        }
        *v *= penalty;
    }
    val
}

/// CIDEr-D over a corpus: returns (mean, per-image scores). Each image needs at least one reference.
pub(crate) fn cider(hypotheses: &[&str], references: &[Vec<&str>]) -> (f64, Vec<f64>) {
    let hyp_words: Vec<Vec<&str>> = hypotheses.iter().map(|h| py_split(h)).collect();
    let ref_words: Vec<Vec<Vec<&str>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| py_split(r)).collect())
        .collect();
    let hyp_counts: Vec<Counts> = hyp_words.iter().map(|w| ngram_counts(w)).collect();
    let ref_counts: Vec<Vec<Counts>> = ref_words
        .iter()
        .map(|rs| rs.iter().map(|w| ngram_counts(w)).collect())
        .collect();

    let df = document_frequency(&ref_counts);
    let log_images = (references.len() as f64).ln();
    let scores: Vec<f64> = hyp_counts
        .iter()
        .zip(&ref_counts)
        .map(|(hyp, refs)| image_score(hyp, refs, &df, log_images))
        .collect();
    let mean = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    (mean, scores)
}

/// `compute_doc_freq`: in how many images' reference sets each n-gram appears.
fn document_frequency<'a>(ref_counts: &[Vec<Counts<'a>>]) -> HashMap<&'a [&'a str], usize> {
    let mut df = HashMap::new();
    for refs in ref_counts {
        let mut seen: Vec<&[&str]> = refs.iter().flat_map(|c| c.keys()).collect();
        seen.sort_unstable();
        seen.dedup();
        for gram in seen {
            *df.entry(gram).or_insert(0) += 1;
        }
    }
    df
}

fn image_score(
    hyp: &Counts,
    refs: &[Counts],
    df: &HashMap<&[&str], usize>,
    log_images: f64,
) -> f64 {
    if refs.is_empty() {
        return 0.0;
    }
    let hyp_vec = to_vector(hyp, df, log_images);
    let mut sum = [0.0; N];
    for reference in refs {
        let ref_vec = to_vector(reference, df, log_images);
        let sim = similarity(&hyp_vec, &ref_vec);
        for n in 0..N {
            sum[n] += sim[n];
        }
    }
    let mean = sum.iter().sum::<f64>() / N as f64;
    mean / refs.len() as f64 * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_image_scores_zero() {
        let (mean, scores) = cider(&["a dog"], &[vec!["a dog"]]);
        assert_eq!(mean, 0.0);
        assert_eq!(scores, vec![0.0]);
    }

    #[test]
    fn identical_captions_score_high() {
        let hyps = ["a dog runs", "a cat sleeps", "two birds fly"];
        let refs = vec![
            vec!["a dog runs"],
            vec!["a cat sleeps"],
            vec!["two birds fly"],
        ];
        let (mean, _) = cider(&hyps, &refs);
        assert!(mean > 5.0, "{mean}");
    }
}
