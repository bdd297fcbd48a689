//! BLIP's BERT-style text decoder (`text_decoder.*`): causal self-attention with a KV cache,
//! cross-attention to the image whose keys and values are computed once per image, and the
//! language-model head (tied to the word embeddings when the checkpoint omits it).

use candle_core::{Device, Module, Tensor};
use candle_nn::LayerNorm;

use crate::checkpoint::Weights;
use crate::config::TextConfig;
use crate::kernels::attention::{attention_few_queries, attention_keys_transposed};
use crate::kernels::ops::{activation_in_place, softmax_last_dim, split_heads};
use crate::model::linear::{layer_norm, Embedding, Linear};
use crate::{Error, Result};

/// Everything the decoder remembers between steps for a batch of sequences (greedy rows or beams)
/// of one or more images. The rows are grouped by image, in image order, the same number per
/// image: rows `r · i .. r · (i + 1)` look at image `i`, where `r = rows / images`.
#[derive(Debug, Clone)]
pub struct DecoderState {
    /// Per layer: cross-attention keys `[images, heads, head_dim, image_tokens]` (transposed,
    /// [`attention_keys_transposed`]) and values `[images, heads, image_tokens, head_dim]`,
    /// computed once per image and shared by all the rows of that image.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Per layer: self-attention keys and values `[batch, heads, past, head_dim]`.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    past_len: usize,
}

impl DecoderState {
    /// Tokens already consumed.
    pub fn past_len(&self) -> usize {
        self.past_len
    }

    /// The device the cached tensors live on.
    pub fn device(&self) -> Device {
        self.cross_kv
            .first()
            .map_or(Device::Cpu, |(k, _)| k.device().clone())
    }

    /// Images whose keys and values are cached.
    pub fn images(&self) -> Result<usize> {
        Ok(match self.cross_kv.first() {
            Some((k, _)) => k.dim(0)?,
            None => 0,
        })
    }

    /// Keeps only the images listed in `indices` (positions among the current ones, in the new
    /// order): a batch drops the images that have finished. The rows must be reordered to match
    /// ([`DecoderState::reorder`]).
    pub fn retain_images(&mut self, indices: &[u32]) -> Result<()> {
        let Some((k0, _)) = self.cross_kv.first() else {
            return Ok(());
        };
        let idx = Tensor::new(indices, k0.device())?;
        for (k, v) in self.cross_kv.iter_mut() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// Keeps (and duplicates) the cached sequences listed in `indices`, for beam search and for
    /// dropping the rows of finished images.
    pub fn reorder(&mut self, indices: &[u32]) -> Result<()> {
        let Some(Some((k0, _))) = self.self_kv.first() else {
            return Ok(());
        };
        let idx = Tensor::new(indices, k0.device())?;
        for (k, v) in self.self_kv.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

/// `bert.embeddings`: word + absolute position embeddings, LayerNorm.
#[derive(Debug, Clone)]
pub struct TextEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Tensor,
    layer_norm: LayerNorm,
}

impl TextEmbeddings {
    pub fn new(cfg: &TextConfig, vb: Weights) -> Result<Self> {
        Ok(Self {
            word_embeddings: Embedding::new(
                cfg.vocab_size,
                cfg.hidden_size,
                vb.pp("word_embeddings"),
            )?,
            position_embeddings: vb.get(
                &[cfg.max_position_embeddings, cfg.hidden_size],
                "position_embeddings.weight",
            )?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `ids` `[batch, len]` at positions `past..past + len`.
    pub fn forward(&self, ids: &Tensor, past: usize) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let max = self.position_embeddings.dim(0)?;
        if past + len > max {
            return Err(Error::InvalidArgument(format!(
                "sequence of {} tokens exceeds the model's max_position_embeddings ({max})",
                past + len
            )));
        }
        let words = self.word_embeddings.forward(ids)?;
        let positions = self.position_embeddings.narrow(0, past, len)?;
        Ok(self.layer_norm.forward(&words.broadcast_add(&positions)?)?)
    }
}

/// `attention.self` / `crossattention.self`: query, key and value projections.
#[derive(Debug, Clone)]
pub struct TextSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl TextSelfAttention {
    pub fn new(cfg: &TextConfig, kv_dim: usize, vb: Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            query: Linear::new(h, h, vb.pp("query"))?,
            key: Linear::new(kv_dim, h, vb.pp("key"))?,
            value: Linear::new(kv_dim, h, vb.pp("value"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// `[batch, len, hidden]` -> `[batch, heads, len, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, n, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    fn scaled_query(&self, xs: &Tensor) -> Result<Tensor> {
        let q = self.query.forward(xs)?;
        Ok((q * (1.0 / (self.head_dim as f64).sqrt()))?)
    }

    /// Causal self-attention over the cache plus the new tokens; updates the cache.
    pub fn forward_self(
        &self,
        xs: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (b, len, h) = xs.dims3()?;
        let q = self.split_heads(&self.scaled_query(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let total = k.dim(2)?;
        let ctx = if len == 1 {
            // One new token per sequence: no mask needed, heads of all beams in one batch.
            let heads = b * self.num_heads;
            attention_few_queries(
                &q.reshape((heads, 1, self.head_dim))?,
                &k.reshape((heads, total, self.head_dim))?,
                &v.reshape((heads, total, self.head_dim))?,
            )?
            .reshape((b, self.num_heads, 1, self.head_dim))?
        } else {
            let scores =
                q.matmul(&k.t()?)?
                    .broadcast_add(&causal_mask(len, total, xs.device())?)?;
            softmax_last_dim(&scores)?.matmul(&v)?
        };
        let ctx = ctx.transpose(1, 2)?.reshape((b, len, h))?;
        *cache = Some((k, v));
        Ok(ctx)
    }

    /// Keys and values of the image tokens of `image_embeds` `[images, tokens, hidden]`: keys
    /// `[images, heads, head_dim, tokens]` (transposed), values `[images, heads, tokens,
    /// head_dim]`.
    pub fn image_kv(&self, image_embeds: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = split_heads(&self.key.forward(image_embeds)?, self.num_heads, true)?;
        let v = split_heads(&self.value.forward(image_embeds)?, self.num_heads, false)?;
        Ok((k, v))
    }

    /// Cross-attention of every sequence in the batch to its own image's keys/values
    /// `[images, heads, tokens, head_dim]` (rows grouped by image, as in [`DecoderState`]): the
    /// rows and positions of one image are folded together so that each (image, head) is one
    /// attention over all of them. Every query row is computed on its own, so a row's result does
    /// not depend on the other rows or images of the batch.
    pub fn forward_cross(&self, xs: &Tensor, kv: &(Tensor, Tensor)) -> Result<Tensor> {
        let (b, len, h) = xs.dims3()?;
        let (images, heads, d, tokens) = kv.0.dims4()?;
        if images == 0 || b % images != 0 {
            return Err(Error::Internal(format!(
                "cross-attention of {b} rows to {images} images: the rows must be grouped by \
                 image, the same number per image"
            )));
        }
        let per_image = b / images * len;
        let q = self
            .scaled_query(xs)?
            .reshape((images, per_image, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((images * heads, per_image, d))?;
        let kt = kv.0.reshape((images * heads, d, tokens))?;
        let v = kv.1.reshape((images * heads, tokens, d))?;
        let ctx = attention_keys_transposed(&q, &kt, &v)?
            .reshape((images, heads, per_image, d))?
            .transpose(1, 2)?
            .reshape((b, len, h))?;
        Ok(ctx)
    }
}

/// Mask `[len, total]` letting new token `i` (absolute `total - len + i`) see positions up to itself.
fn causal_mask(len: usize, total: usize, device: &Device) -> Result<Tensor> {
    let past = total - len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (len, total), device)?)
}

/// `attention.output` / `crossattention.output` / `output`: dense, residual, LayerNorm.
#[derive(Debug, Clone)]
pub struct TextOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl TextOutput {
    pub fn new(cfg: &TextConfig, in_dim: usize, vb: Weights) -> Result<Self> {
        Ok(Self {
            dense: Linear::new(in_dim, cfg.hidden_size, vb.pp("dense"))?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self
            .layer_norm
            .forward(&(self.dense.forward(xs)? + residual)?)?)
    }
}

/// `encoder.layer.N`: self-attention, cross-attention, feed-forward.
#[derive(Debug, Clone)]
pub struct TextLayer {
    attention: TextSelfAttention,
    attention_output: TextOutput,
    crossattention: TextSelfAttention,
    crossattention_output: TextOutput,
    intermediate: Linear,
    act: candle_nn::Activation,
    output: TextOutput,
}

impl TextLayer {
    pub fn new(cfg: &TextConfig, vb: Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attention: TextSelfAttention::new(cfg, h, vb.pp("attention.self"))?,
            attention_output: TextOutput::new(cfg, h, vb.pp("attention.output"))?,
            crossattention: TextSelfAttention::new(
                cfg,
                cfg.encoder_hidden_size,
                vb.pp("crossattention.self"),
            )?,
            crossattention_output: TextOutput::new(cfg, h, vb.pp("crossattention.output"))?,
            intermediate: Linear::new(h, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
            act: cfg.hidden_act,
            output: TextOutput::new(cfg, cfg.intermediate_size, vb.pp("output"))?,
        })
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        self_kv: &mut Option<(Tensor, Tensor)>,
        cross_kv: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let a = self.attention.forward_self(xs, self_kv)?;
        let xs = self.attention_output.forward(&a, xs)?;
        let c = self.crossattention.forward_cross(&xs, cross_kv)?;
        let xs = self.crossattention_output.forward(&c, &xs)?;
        let i = activation_in_place(self.intermediate.forward(&xs)?, self.act)?;
        self.output.forward(&i, &xs)
    }
}

/// `cls.predictions`: transform (dense, activation, LayerNorm) and the vocabulary projection.
#[derive(Debug, Clone)]
pub struct LmPredictionHead {
    dense: Linear,
    act: candle_nn::Activation,
    layer_norm: LayerNorm,
    decoder: Linear,
}

impl LmPredictionHead {
    pub fn new(cfg: &TextConfig, word_embeddings: &Embedding, vb: Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        // `decoder.bias` is tied to `bias`; files may hold either name.
        let bias_name = if vb.contains("bias") {
            "bias"
        } else {
            "decoder.bias"
        };
        let bias = vb.get(&[cfg.vocab_size], bias_name)?;
        // Recent transformers versions drop the tied decoder weight from the file. The released
        // base checkpoint's pytorch_model.bin stores it apart from the word embeddings with the
        // same values: transformers then ties the two, and so does this (one table in memory, not
        // two). Only a decoder weight whose values differ is used as such (as transformers does).
        let weight = if vb.contains("decoder.weight")
            && !vb.same_values("decoder.weight", word_embeddings.name())?
        {
            vb.matrix(cfg.vocab_size, h, "decoder.weight")?
        } else {
            word_embeddings.matrix().clone()
        };
        Ok(Self {
            dense: Linear::new(h, h, vb.pp("transform.dense"))?,
            act: cfg.hidden_act,
            layer_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("transform.LayerNorm"))?,
            decoder: Linear::from_matrix(weight, Some(bias))?,
        })
    }

    /// Whether the vocabulary projection is the word-embedding table itself (tied).
    pub fn is_tied_to(&self, word_embeddings: &Embedding) -> bool {
        self.decoder.shares_weight(word_embeddings.matrix())
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = activation_in_place(self.dense.forward(xs)?, self.act)?;
        self.decoder.forward(&self.layer_norm.forward(&xs)?)
    }
}

/// `text_decoder`: `bert` (embeddings + layers) and `cls` (LM head).
#[derive(Debug, Clone)]
pub struct TextLMHeadModel {
    embeddings: TextEmbeddings,
    layers: Vec<TextLayer>,
    cls: LmPredictionHead,
}

impl TextLMHeadModel {
    pub fn new(cfg: &TextConfig, vb: Weights) -> Result<Self> {
        let embeddings = TextEmbeddings::new(cfg, vb.pp("bert.embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TextLayer::new(cfg, vb.pp("bert.encoder.layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let cls =
            LmPredictionHead::new(cfg, &embeddings.word_embeddings, vb.pp("cls.predictions"))?;
        Ok(Self {
            embeddings,
            layers,
            cls,
        })
    }

    /// Whether the language-model head uses the word-embedding table itself (tied weights: one
    /// table in memory) rather than a weight of its own.
    pub fn lm_head_is_tied(&self) -> bool {
        self.cls.is_tied_to(&self.embeddings.word_embeddings)
    }

    /// Starts decoding for one or more images: computes every layer's cross-attention keys/values
    /// once per image. `image_embeds` is `[images, tokens, encoder_hidden]`.
    pub fn start(&self, image_embeds: &Tensor) -> Result<DecoderState> {
        let cross_kv = self
            .layers
            .iter()
            .map(|l| l.crossattention.image_kv(image_embeds))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderState {
            cross_kv,
            self_kv: vec![None; self.layers.len()],
            past_len: 0,
        })
    }

    /// Feeds `ids` `[batch, len]` and returns the logits of the last position, `[batch, vocab]`.
    pub fn forward(&self, ids: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let mut xs = self.embeddings.forward(ids, state.past_len)?;
        for ((layer, self_kv), cross_kv) in self
            .layers
            .iter()
            .zip(state.self_kv.iter_mut())
            .zip(state.cross_kv.iter())
        {
            xs = layer.forward(&xs, self_kv, cross_kv)?;
        }
        state.past_len += len;
        let last = xs.narrow(1, len - 1, 1)?.squeeze(1)?;
        self.cls.forward(&last)
    }
}
