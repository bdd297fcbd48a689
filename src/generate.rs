//! Caption decoding, token for token as `transformers`' `generate`: greedy search and beam search
//! (the vectorised beam search of transformers 5, including its early-stopping heuristic), with
//! `max_length` / `min_length` counted over the whole sequence (bos and prompt included).

use candle_core::{Device, Tensor, D};

use crate::model::{BlipForConditionalGeneration, DecoderState};
use crate::{Error, Result};

/// When beam search may stop, as `generation_config.early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop once the best running beam cannot beat the worst finished one at the current length.
    #[default]
    Heuristic,
    /// Stop as soon as `num_beams` hypotheses are finished.
    Always,
    /// Canonical beam search: only stop when no running beam can improve, even at `max_length`.
    Never,
}

/// How to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Maximum total length, counting bos and prompt tokens.
    pub max_length: usize,
    /// The end token is forbidden until the sequence has this many tokens.
    pub min_length: usize,
    /// 1 = greedy.
    pub num_beams: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    /// Benchmarking: ignore the end token and generate exactly this many new tokens (greedy only).
    pub fixed_new_tokens: Option<usize>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_length: 20,
            min_length: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            fixed_new_tokens: None,
        }
    }
}

/// Special tokens decoding needs.
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens {
    pub bos: u32,
    pub eos: u32,
}

/// Generates from `prefix` (bos followed by any prompt tokens) and returns the whole sequence,
/// prefix included, as `generate` does. `on_step` sees the best sequence so far after each step.
pub fn generate(
    model: &BlipForConditionalGeneration,
    image_embeds: &Tensor,
    prefix: &[u32],
    opts: &GenerationOptions,
    tokens: SpecialTokens,
    on_step: &mut dyn FnMut(&[u32]),
) -> Result<Vec<u32>> {
    if prefix.is_empty() {
        return Err(Error::InvalidArgument(
            "generation needs at least the bos token".into(),
        ));
    }
    if opts.num_beams == 0 {
        return Err(Error::InvalidArgument(
            "num_beams must be at least 1".into(),
        ));
    }
    if opts.fixed_new_tokens.is_some() && opts.num_beams > 1 {
        return Err(Error::InvalidArgument(
            "a fixed number of new tokens is only supported with greedy decoding (num_beams = 1)"
                .into(),
        ));
    }
    let mut state = model.start_decoding(image_embeds)?;
    if opts.num_beams == 1 {
        greedy(model, &mut state, prefix, opts, tokens, on_step)
    } else {
        beam_search(model, &mut state, prefix, opts, tokens, on_step)
    }
}

fn ids_tensor(rows: &[&[u32]], device: &Device) -> Result<Tensor> {
    let len = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), len), device)?)
}

fn greedy(
    model: &BlipForConditionalGeneration,
    state: &mut DecoderState,
    prefix: &[u32],
    opts: &GenerationOptions,
    tokens: SpecialTokens,
    on_step: &mut dyn FnMut(&[u32]),
) -> Result<Vec<u32>> {
    let device = state.device();
    let mut seq = prefix.to_vec();
    let max_length = match opts.fixed_new_tokens {
        Some(n) => prefix.len() + n,
        None => opts.max_length,
    };
    let mut input = seq.clone();
    while seq.len() < max_length {
        let logits = model.decode_step(&ids_tensor(&[&input], &device)?, state)?;
        let mut logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        if opts.fixed_new_tokens.is_some() || seq.len() < opts.min_length {
            logits[tokens.eos as usize] = f32::NEG_INFINITY;
        }
        let next = argmax(&logits);
        seq.push(next);
        on_step(&seq);
        if next == tokens.eos && opts.fixed_new_tokens.is_none() {
            break;
        }
        input = vec![next];
    }
    Ok(seq)
}

/// Index of the first maximum, as `torch.argmax`.
fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// One candidate continuation: which running beam it extends, the token, its accumulated log-prob.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
}

/// A slot of the finished-hypotheses table.
#[derive(Debug, Clone)]
struct Finished {
    seq: Vec<u32>,
    score: f32,
    done: bool,
}

/// Indices of the `k` largest values, descending; ties keep the lower index first.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    if k < values.len() {
        idx.select_nth_unstable_by(k, |&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        idx.truncate(k);
    }
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

/// Penalty added by transformers to rule a candidate out while keeping it sortable.
const NEG: f32 = -1.0e9;

fn beam_search(
    model: &BlipForConditionalGeneration,
    state: &mut DecoderState,
    prefix: &[u32],
    opts: &GenerationOptions,
    tokens: SpecialTokens,
    on_step: &mut dyn FnMut(&[u32]),
) -> Result<Vec<u32>> {
    let device = state.device();
    let nb = opts.num_beams;
    let prompt_len = prefix.len();
    let max_length = opts.max_length;
    if prompt_len >= max_length {
        return Ok(prefix.to_vec());
    }
    // transformers keeps 2 * num_beams candidates per step so that enough unfinished ones remain.
    let keep = 2 * nb;
    let mut running: Vec<Vec<u32>> = vec![prefix.to_vec(); nb];
    // Only the first beam is live at the start, so the identical copies do not all expand.
    let mut running_scores = vec![NEG; nb];
    running_scores[0] = 0.0;
    let mut finished: Vec<Finished> = (0..nb)
        .map(|_| Finished {
            seq: prefix.to_vec(),
            score: NEG,
            done: false,
        })
        .collect();
    let mut heuristic_unsatisfied = true;
    let mut cur_len = prompt_len;

    // Prefill once for a single copy: every beam starts identical, so their logits are equal.
    let mut logits = model.decode_step(&ids_tensor(&[prefix], &device)?, state)?;
    state.reorder(&vec![0u32; nb])?;
    logits = logits.broadcast_as((nb, logits.dim(1)?))?.contiguous()?;
    loop {
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let mut log_probs: Vec<Vec<f32>> = log_probs.to_vec2()?;
        let vocab = log_probs[0].len();
        if cur_len < opts.min_length {
            for row in &mut log_probs {
                row[tokens.eos as usize] = f32::NEG_INFINITY;
            }
        }
        let acc: Vec<f32> = log_probs
            .iter()
            .zip(&running_scores)
            .flat_map(|(row, &s)| row.iter().map(move |&lp| lp + s))
            .collect();
        let candidates: Vec<Candidate> = top_k(&acc, keep)
            .into_iter()
            .map(|i| Candidate {
                beam: i / vocab,
                token: (i % vocab) as u32,
                score: acc[i],
            })
            .collect();
        let hits_stop: Vec<bool> = candidates
            .iter()
            .map(|c| c.token == tokens.eos || cur_len + 1 >= max_length)
            .collect();
        let extend = |c: &Candidate| {
            let mut s = running[c.beam].clone();
            s.push(c.token);
            s
        };

        // Next running beams: the best candidates that did not stop.
        let penalized: Vec<f32> = candidates
            .iter()
            .zip(&hits_stop)
            .map(|(c, &h)| if h { c.score + NEG } else { c.score })
            .collect();
        let next = top_k(&penalized, nb);
        let next_running: Vec<Vec<u32>> = next.iter().map(|&i| extend(&candidates[i])).collect();
        let next_scores: Vec<f32> = next.iter().map(|&i| penalized[i]).collect();
        let reorder: Vec<u32> = next.iter().map(|&i| candidates[i].beam as u32).collect();

        // Finished hypotheses: only the top num_beams candidates may enter.
        let lp = ((cur_len + 1 - prompt_len) as f64).powf(opts.length_penalty) as f32;
        let all_done = finished.iter().all(|f| f.done);
        let mut merged = finished.clone();
        for (i, c) in candidates.iter().enumerate() {
            let just_finished = hits_stop[i] && i < nb;
            let mut score = c.score / lp;
            if all_done && opts.early_stopping == EarlyStopping::Always {
                score += NEG;
            }
            if !heuristic_unsatisfied {
                score += NEG;
            }
            if !just_finished {
                score += NEG;
            }
            merged.push(Finished {
                seq: extend(c),
                score,
                done: just_finished,
            });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|f| f.score).collect();
        finished = top_k(&merged_scores, nb)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();

        running = next_running;
        running_scores = next_scores;
        cur_len += 1;
        on_step(&running[0]);

        // Early-stop heuristic, as transformers computes it.
        let best_len = if opts.early_stopping == EarlyStopping::Never && opts.length_penalty > 0.0 {
            max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible = running_scores[0] / (best_len as f64).powf(opts.length_penalty) as f32;
        let min_finished = finished
            .iter()
            .map(|f| f.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = finished
            .iter()
            .any(|f| best_possible > if f.done { min_finished } else { NEG });
        heuristic_unsatisfied &= improvable;
        let open_beam =
            !(finished.iter().all(|f| f.done) && opts.early_stopping == EarlyStopping::Always);
        let can_continue = !hits_stop.iter().all(|&h| h);
        if !(heuristic_unsatisfied && open_beam && can_continue) {
            break;
        }
        state.reorder(&reorder)?;
        let last: Vec<u32> = running
            .iter()
            .map(|s| *s.last().unwrap_or(&tokens.eos))
            .collect();
        let ids = Tensor::from_vec(last, (nb, 1), &device)?;
        logits = model.decode_step(&ids, state)?;
    }
    // The best finished hypothesis; its length is where it stopped.
    Ok(finished.swap_remove(0).seq)
}
