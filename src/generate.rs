//! Caption decoding, token for token as `transformers`' `generate`: greedy search and beam search
//! (the vectorised beam search of transformers 5, including its early-stopping heuristic), with
//! `max_length` / `min_length` counted over the whole sequence (bos and prompt included).
//!
//! Decoding runs for a batch of images at once ([`generate_batch`]); one image is the batch of
//! one ([`generate`]). The decoder's rows are the running sequences of all unfinished images
//! (greedy: one per image; beam search: `num_beams` per image), grouped by image; each image has
//! its own search state (`Beams` for beam search) and its rows leave the batch as soon as it
//! finishes. Every row is computed independently of the others (see
//! [`crate::model::DecoderState`] and the kernels' notes), so an image's tokens are the same
//! whichever images share its batch — with blipq's own kernels; the `gemm` crate's f32 fallback
//! (CPUs without AVX-512) sums one row and many rows in different orders.
//!
//! May use: `model` (the decoder's step and state), `threads` (keeping the pool awake while it
//! decodes) and `error`.

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

/// Generates from `prefix` (bos followed by any prompt tokens) for one image (`image_embeds`
/// `[1, tokens, hidden]`) and returns the whole sequence, prefix included, as `generate` does.
/// `on_step` sees the best sequence so far after each step.
pub fn generate(
    model: &BlipForConditionalGeneration,
    image_embeds: &Tensor,
    prefix: &[u32],
    opts: &GenerationOptions,
    tokens: SpecialTokens,
    on_step: &mut dyn FnMut(&[u32]),
) -> Result<Vec<u32>> {
    let images = image_embeds.dim(0)?;
    if images != 1 {
        return Err(Error::InvalidArgument(format!(
            "generate takes the embeddings of one image, got {images}: use generate_batch"
        )));
    }
    let mut out = generate_batch(model, image_embeds, prefix, opts, tokens, &mut |_, seq| {
        on_step(seq)
    })?;
    out.pop()
        .ok_or_else(|| Error::Internal("generation produced no sequence".into()))
}

/// Generates from the same `prefix` for every image of `image_embeds` `[images, tokens, hidden]`
/// at once and returns each image's sequence, in order, token for token what [`generate`] returns
/// for that image alone. `on_step(image, seq)` sees an image's best sequence so far after each of
/// its steps.
pub fn generate_batch(
    model: &BlipForConditionalGeneration,
    image_embeds: &Tensor,
    prefix: &[u32],
    opts: &GenerationOptions,
    tokens: SpecialTokens,
    on_step: &mut dyn FnMut(usize, &[u32]),
) -> Result<Vec<Vec<u32>>> {
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
    let images = image_embeds.dim(0)?;
    if images == 0 {
        return Ok(Vec::new());
    }
    let search = Search {
        model,
        images,
        prefix,
        opts,
        tokens,
    };
    let mut state = model.start_decoding(image_embeds)?;
    // The steps alternate many small parallel products with serial pieces: keep the pool's
    // workers polling between them (after the image's key and value projections, large products
    // that gain nothing from it).
    let _awake = crate::threads::keep_awake();
    if opts.num_beams == 1 {
        greedy(&search, &mut state, on_step)
    } else {
        beam_search(&search, &mut state, on_step)
    }
}

/// What a search is given: the model, the number of images, the prompt's tokens (every image's
/// sequence starts with them), the options and the special tokens.
#[derive(Clone, Copy)]
struct Search<'a> {
    model: &'a BlipForConditionalGeneration,
    images: usize,
    prefix: &'a [u32],
    opts: &'a GenerationOptions,
    tokens: SpecialTokens,
}

/// A [`Search`]'s fields, in their order.
type SearchParts<'a> = (
    &'a BlipForConditionalGeneration,
    usize,
    &'a [u32],
    &'a GenerationOptions,
    SpecialTokens,
);

impl<'a> Search<'a> {
    fn parts(&self) -> SearchParts<'a> {
        (self.model, self.images, self.prefix, self.opts, self.tokens)
    }
}

/// `rows` sequences of `len` tokens, `[rows, len]`.
fn ids_tensor(flat: Vec<u32>, rows: usize, device: &Device) -> Result<Tensor> {
    let len = flat.len() / rows.max(1);
    Ok(Tensor::from_vec(flat, (rows, len), device)?)
}

/// Keeps the rows (and, when some images left, the images) listed in `rows` / `images`,
/// positions in the current batch.
fn shrink(state: &mut DecoderState, rows: &[u32], images: &[u32], before: usize) -> Result<()> {
    state.reorder(rows)?;
    if images.len() < before {
        state.retain_images(images)?;
    }
    Ok(())
}

fn greedy(
    search: &Search,
    state: &mut DecoderState,
    on_step: &mut dyn FnMut(usize, &[u32]),
) -> Result<Vec<Vec<u32>>> {
    let (model, images, prefix, opts, tokens) = search.parts();
    let mut seqs = vec![prefix.to_vec(); images];
    let max_length = match opts.fixed_new_tokens {
        Some(n) => prefix.len() + n,
        None => opts.max_length,
    };
    // The image of each row; all running sequences have the same length.
    let mut active: Vec<usize> = (0..images).collect();
    let mut input: Vec<u32> = seqs.iter().flatten().copied().collect();
    let mut len = prefix.len();
    let device = state.device();
    while len < max_length {
        let logits = model.decode_step(&ids_tensor(input, active.len(), &device)?, state)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut keep: Vec<u32> = Vec::with_capacity(active.len());
        for (row, (&image, mut logits)) in active.iter().zip(rows).enumerate() {
            if opts.fixed_new_tokens.is_some() || len < opts.min_length {
                if let Some(l) = logits.get_mut(tokens.eos as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let next = argmax(&logits);
            seqs[image].push(next);
            on_step(image, &seqs[image]);
            if next != tokens.eos || opts.fixed_new_tokens.is_some() {
                keep.push(row as u32);
            }
        }
        len += 1;
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            shrink(state, &keep, &keep, active.len())?;
            active = keep.iter().map(|&r| active[r as usize]).collect();
        }
        input = active.iter().map(|&i| seqs[i][len - 1]).collect();
    }
    Ok(seqs)
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

/// One image's beam search, step by step: its running beams, the finished-hypotheses table and
/// the early-stopping state, exactly as transformers keeps them per batch entry.
#[derive(Debug, Clone)]
struct Beams {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    finished: Vec<Finished>,
    heuristic_unsatisfied: bool,
    cur_len: usize,
}

impl Beams {
    fn new(prefix: &[u32], nb: usize) -> Self {
        // Only the first beam is live at the start, so the identical copies do not all expand.
        let mut running_scores = vec![NEG; nb];
        running_scores[0] = 0.0;
        Self {
            running: vec![prefix.to_vec(); nb],
            running_scores,
            finished: (0..nb)
                .map(|_| Finished {
                    seq: prefix.to_vec(),
                    score: NEG,
                    done: false,
                })
                .collect(),
            heuristic_unsatisfied: true,
            cur_len: prefix.len(),
        }
    }

    /// The best running sequence.
    fn best_running(&self) -> &[u32] {
        &self.running[0]
    }

    /// The best finished hypothesis; its length is where it stopped.
    fn into_best(mut self) -> Vec<u32> {
        self.finished.swap_remove(0).seq
    }

    /// One step from the log-probabilities of this image's `num_beams` rows. Returns, when the
    /// search goes on, which current row each next running beam extends (the cache reorder);
    /// `None` when the search is over.
    fn step(
        &mut self,
        mut log_probs: Vec<Vec<f32>>,
        prompt_len: usize,
        opts: &GenerationOptions,
        tokens: SpecialTokens,
    ) -> Option<Vec<u32>> {
        let nb = opts.num_beams;
        let max_length = opts.max_length;
        // transformers keeps 2 * num_beams candidates per step so that enough unfinished ones
        // remain.
        let keep = 2 * nb;
        let vocab = log_probs.first().map_or(0, Vec::len);
        if self.cur_len < opts.min_length {
            for row in &mut log_probs {
                if let Some(l) = row.get_mut(tokens.eos as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let acc: Vec<f32> = log_probs
            .iter()
            .zip(&self.running_scores)
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
        let cur_len = self.cur_len;
        let hits_stop: Vec<bool> = candidates
            .iter()
            .map(|c| c.token == tokens.eos || cur_len + 1 >= max_length)
            .collect();
        let running = &self.running;
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
        let all_done = self.finished.iter().all(|f| f.done);
        let mut merged = self.finished.clone();
        for (i, c) in candidates.iter().enumerate() {
            let just_finished = hits_stop[i] && i < nb;
            let mut score = c.score / lp;
            if all_done && opts.early_stopping == EarlyStopping::Always {
                score += NEG;
            }
            if !self.heuristic_unsatisfied {
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
        self.finished = top_k(&merged_scores, nb)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();

        self.running = next_running;
        self.running_scores = next_scores;
        self.cur_len += 1;
        let cur_len = self.cur_len;

        // Early-stop heuristic, as transformers computes it.
        let best_len = if opts.early_stopping == EarlyStopping::Never && opts.length_penalty > 0.0 {
            max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible =
            self.running_scores[0] / (best_len as f64).powf(opts.length_penalty) as f32;
        let min_finished = self
            .finished
            .iter()
            .map(|f| f.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = self
            .finished
            .iter()
            .any(|f| best_possible > if f.done { min_finished } else { NEG });
        self.heuristic_unsatisfied &= improvable;
        let open_beam =
            !(self.finished.iter().all(|f| f.done) && opts.early_stopping == EarlyStopping::Always);
        let can_continue = !hits_stop.iter().all(|&h| h);
        (self.heuristic_unsatisfied && open_beam && can_continue).then_some(reorder)
    }
}

fn beam_search(
    search: &Search,
    state: &mut DecoderState,
    on_step: &mut dyn FnMut(usize, &[u32]),
) -> Result<Vec<Vec<u32>>> {
    let (model, images, prefix, opts, tokens) = search.parts();
    let device = state.device();
    let nb = opts.num_beams;
    let prompt_len = prefix.len();
    if prompt_len >= opts.max_length {
        return Ok(vec![prefix.to_vec(); images]);
    }
    let mut beams: Vec<Option<Beams>> = vec![Some(Beams::new(prefix, nb)); images];
    let mut results: Vec<Vec<u32>> = vec![Vec::new(); images];
    // The image of each group of `nb` rows.
    let mut active: Vec<usize> = (0..images).collect();

    // Prefill once per image, for a single copy: every beam starts identical, so their logits
    // are equal; then each image's row is copied to its `nb` beams.
    let ids = ids_tensor(prefix.repeat(images), images, &device)?;
    let logits = model.decode_step(&ids, state)?;
    let copies: Vec<u32> = (0..images as u32)
        .flat_map(|i| std::iter::repeat_n(i, nb))
        .collect();
    state.reorder(&copies)?;
    let mut logits = logits.index_select(&Tensor::new(copies.as_slice(), &device)?, 0)?;
    loop {
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let mut log_probs: Vec<Vec<f32>> = log_probs.to_vec2()?;
        let mut rows: Vec<u32> = Vec::with_capacity(active.len() * nb);
        let mut kept: Vec<u32> = Vec::with_capacity(active.len());
        let mut last: Vec<u32> = Vec::with_capacity(active.len() * nb);
        for (pos, &image) in active.iter().enumerate() {
            let group: Vec<Vec<f32>> = log_probs.drain(..nb).collect();
            let Some(b) = beams[image].as_mut() else {
                continue;
            };
            let outcome = b.step(group, prompt_len, opts, tokens);
            on_step(image, b.best_running());
            match outcome {
                Some(reorder) => {
                    rows.extend(reorder.iter().map(|&r| (pos * nb) as u32 + r));
                    kept.push(pos as u32);
                    last.extend(b.running.iter().map(|s| *s.last().unwrap_or(&tokens.eos)));
                }
                None => {
                    if let Some(done) = beams[image].take() {
                        results[image] = done.into_best();
                    }
                }
            }
        }
        if kept.is_empty() {
            break;
        }
        shrink(state, &rows, &kept, active.len())?;
        active = kept.iter().map(|&p| active[p as usize]).collect();
        let ids = Tensor::from_vec(last, (active.len() * nb, 1), &device)?;
        logits = model.decode_step(&ids, state)?;
    }
    Ok(results)
}
