//! ROUGE-L exactly as `pycocoevalcap/rouge/rouge.py` computes it.
//!
//! Per image: the longest common subsequence with each reference gives a precision (LCS / hypothesis
//! length) and a recall (LCS / reference length); the *maximum* precision and the *maximum* recall
//! are taken separately (possibly from different references) and combined as
//! F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2. The corpus score is the mean over images.
//! Sentences are split on single spaces (`str.split(" ")`), so an empty hypothesis is one empty
//! token, as in Python.

/// `self.beta` in `rouge.py`.
const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two token lists (`my_lcs`).
fn lcs(a: &[&str], b: &[&str]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    // One row of the DP table over the shorter sequence is enough.
    let mut row = vec![0usize; short.len() + 1];
    for x in long {
        let mut diagonal = 0;
        for (j, y) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[short.len()]
}

/// ROUGE-L of one hypothesis against its references (`calc_score`); 0 when there are none.
pub(crate) fn image_score(hypothesis: &str, references: &[&str]) -> f64 {
    let candidate: Vec<&str> = hypothesis.split(' ').collect();
    let mut prec_max: f64 = 0.0;
    let mut rec_max: f64 = 0.0;
    for reference in references {
        let tokens: Vec<&str> = reference.split(' ').collect();
        let common = lcs(&tokens, &candidate) as f64;
        prec_max = prec_max.max(common / candidate.len() as f64);
        rec_max = rec_max.max(common / tokens.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        let beta2 = BETA.powi(2);
        ((1.0 + beta2) * prec_max * rec_max) / (rec_max + beta2 * prec_max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_lengths() {
        assert_eq!(lcs(&["a", "b", "c", "d"], &["a", "c", "d"]), 3);
        assert_eq!(lcs(&["x"], &["a", "b"]), 0);
        assert_eq!(lcs(&[], &["a"]), 0);
    }

    #[test]
    fn max_precision_and_recall_come_from_different_references() {
        // P max from ref 1 (3/3), R max from ref 2 (2/2).
        let s = image_score("a b c", &["a b c d e f", "a b"]);
        let (p, r) = (1.0, 1.0);
        let b2 = 1.44;
        assert!((s - (1.0 + b2) * p * r / (r + b2 * p)).abs() < 1e-12);
    }

    #[test]
    fn empty_hypothesis_matches_empty_reference() {
        // Python: "".split(" ") == [""], so an empty reference matches an empty hypothesis.
        assert_eq!(image_score("", &[""]), 1.0);
        assert_eq!(image_score("", &["a dog"]), 0.0);
    }
}
