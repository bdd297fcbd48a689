//! BLEU-1..4 exactly as `pycocoevalcap/bleu/bleu_scorer.py` computes it with option `"closest"`.
//!
//! Corpus level: clipped n-gram matches and hypothesis n-gram counts are summed over all images,
//! the reference length is the sum of each image's *closest* reference length (ties go to the
//! shorter reference), and BLEU-n = (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9))^(1/n),
//! times the brevity penalty exp(1 - 1/ratio) when ratio = (hyp_len + 1e-15) / (ref_len + 1e-9) < 1.
//! Per-image scores are the same formula over one image's counts.

use std::collections::HashMap;

use super::py_split;

/// Highest n-gram order.
pub(crate) const N: usize = 4;

/// Python's `1e-15` ("tiny") and `1e-9` ("small") from `bleu_scorer.py`: they keep a zero count
/// from dividing by zero and make a zero match count give a zero score.
const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// The counts BLEU needs from one image (or, summed, from a corpus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BleuStats {
    pub testlen: usize,
    pub reflen: usize,
    pub guess: [usize; N],
    pub correct: [usize; N],
}

impl BleuStats {
    fn add(&mut self, other: &BleuStats) {
        self.testlen += other.testlen;
        self.reflen += other.reflen;
        for k in 0..N {
            self.guess[k] += other.guess[k];
            self.correct[k] += other.correct[k];
        }
    }
}

/// N-gram counts of a whitespace-split sentence (`precook`).
fn ngram_counts<'w, 'a>(words: &'w [&'a str]) -> HashMap<&'w [&'a str], usize> {
    let mut counts = HashMap::new();
    for k in 1..=N {
        for gram in words.windows(k) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Counts for one hypothesis against its references (`cook_refs` + `cook_test`, option "closest").
pub(crate) fn image_stats(hypothesis: &str, references: &[&str]) -> BleuStats {
    let ref_words: Vec<Vec<&str>> = references.iter().map(|r| py_split(r)).collect();
    let mut max_counts: HashMap<&[&str], usize> = HashMap::new();
    for words in &ref_words {
        for (gram, count) in ngram_counts(words) {
            let entry = max_counts.entry(gram).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    let test_words = py_split(hypothesis);
    let testlen = test_words.len();
    let mut stats = BleuStats {
        testlen,
        reflen: closest_length(ref_words.iter().map(Vec::len), testlen),
        ..BleuStats::default()
    };
    for k in 0..N {
        stats.guess[k] = (testlen + 1).saturating_sub(k + 1);
    }
    for (gram, count) in ngram_counts(&test_words) {
        let clip = max_counts.get(gram).copied().unwrap_or(0);
        stats.correct[gram.len() - 1] += count.min(clip);
    }
    stats
}

/// `min((abs(l - testlen), l) for l in reflens)[1]`: the closest length, ties to the shorter.
fn closest_length(lengths: impl Iterator<Item = usize>, testlen: usize) -> usize {
    lengths
        .min_by_key(|&l| (l.abs_diff(testlen), l))
        .unwrap_or(0)
}

/// BLEU-1..4 from (per-image or summed) counts.
pub(crate) fn score(stats: &BleuStats) -> [f64; N] {
    let mut bleus = [0.0; N];
    let mut product = 1.0;
    for (k, bleu) in bleus.iter_mut().enumerate() {
        product *= (stats.correct[k] as f64 + TINY) / (stats.guess[k] as f64 + SMALL);
        *bleu = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (stats.testlen as f64 + TINY) / (stats.reflen as f64 + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        bleus.iter_mut().for_each(|b| *b *= penalty);
    }
    bleus
}

/// Corpus BLEU-1..4 over the images' counts.
pub(crate) fn corpus(stats: &[BleuStats]) -> [f64; N] {
    let mut total = BleuStats::default();
    stats.iter().for_each(|s| total.add(s));
    score(&total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_match_scores_one() {
        let s = image_stats("a dog runs on the grass", &["a dog runs on the grass"]);
        let b = score(&s);
        for v in b {
            assert!((v - 1.0).abs() < 1e-9, "{b:?}");
        }
    }

    #[test]
    fn closest_reference_ties_to_shorter() {
        assert_eq!(closest_length([3, 5].into_iter(), 4), 3);
        assert_eq!(closest_length([5, 3].into_iter(), 4), 3);
        assert_eq!(closest_length([6, 2].into_iter(), 5), 6);
    }

    #[test]
    fn clipping() {
        let s = image_stats("the the the the", &["the cat", "the the dog"]);
        assert_eq!(s.correct[0], 2);
        assert_eq!(s.correct[1], 1);
        assert_eq!(s.guess, [4, 3, 2, 1]);
        assert_eq!(s.reflen, 3);
    }

    #[test]
    fn empty_hypothesis_scores_zero() {
        let b = score(&image_stats("", &["a cat"]));
        assert!(b.iter().all(|&v| v < 1e-9));
    }
}
