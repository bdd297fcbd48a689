//! BLIP's ViT vision encoder (`vision_model.*`): patch embedding, pre-norm transformer layers and a
//! final LayerNorm; returns the last hidden state that the text decoder cross-attends to.

use candle_core::{Module, Tensor, D};
use candle_nn::LayerNorm;

use crate::checkpoint::Weights;
use crate::config::VisionConfig;
use crate::kernels::attention::self_attention;
use crate::kernels::matmul::linear_f32;
use crate::kernels::ops::activation_in_place;
use crate::model::linear::{layer_norm, Linear};
use crate::Result;

/// `vision_model.embeddings`: class token, patch projection and learned positions.
#[derive(Debug, Clone)]
pub struct VisionEmbeddings {
    class_embedding: Tensor,
    /// The stride-`patch` convolution as a matrix `[hidden, 3 * patch * patch]`: a patch convolution
    /// is exactly a matmul over flattened patches, and candle's matmul is far faster than its conv.
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
}

impl VisionEmbeddings {
    pub fn new(cfg: &VisionConfig, vb: Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let p = cfg.patch_size;
        let class_embedding = vb.get(&[1, 1, h], "class_embedding")?;
        let patch_weight = vb
            .get(&[h, 3, p, p], "patch_embedding.weight")?
            .reshape((h, 3 * p * p))?;
        let patch_bias = vb.get(&[h], "patch_embedding.bias")?;
        let position_embedding = vb.get(&[1, cfg.num_positions(), h], "position_embedding")?;
        Ok(Self {
            class_embedding,
            patch_weight,
            patch_bias,
            position_embedding,
            patch_size: p,
        })
    }

    /// `pixel_values` `[batch, 3, H, W]` -> embeddings `[batch, 1 + patches, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, height, width) = pixel_values.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        let patches = pixel_values
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        // One product per image: the `gemm` crate may block `k` differently for a different
        // number of rows, and an image's embeddings must not depend on its batch.
        let patch_embeds = (0..b)
            .map(|i| linear_f32(&patches.get(i)?, &self.patch_weight, Some(&self.patch_bias)))
            .collect::<Result<Vec<_>>>()?;
        let patch_embeds = Tensor::stack(&patch_embeds, 0)?;
        let hidden = self.class_embedding.dim(D::Minus1)?;
        let class_embeds = self.class_embedding.broadcast_as((b, 1, hidden))?;
        let embeddings = Tensor::cat(&[&class_embeds, &patch_embeds], 1)?;
        let positions = self.position_embedding.narrow(1, 0, embeddings.dim(1)?)?;
        Ok(embeddings.broadcast_add(&positions)?)
    }
}

/// `self_attn`: fused `qkv` projection, softmax attention, output `projection`.
#[derive(Debug, Clone)]
pub struct VisionAttention {
    qkv: Linear,
    projection: Linear,
    num_heads: usize,
    scale: f64,
}

impl VisionAttention {
    pub fn new(cfg: &VisionConfig, vb: Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let head_dim = h / cfg.num_attention_heads;
        Ok(Self {
            qkv: Linear::new(h, 3 * h, vb.pp("qkv"))?,
            projection: Linear::new(h, h, vb.pp("projection"))?,
            num_heads: cfg.num_attention_heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ctx = self_attention(&self.qkv.forward(xs)?, self.num_heads, self.scale)?;
        self.projection.forward(&ctx)
    }
}

/// `mlp`: `fc1`, activation, `fc2`.
#[derive(Debug, Clone)]
pub struct VisionMlp {
    fc1: Linear,
    fc2: Linear,
    act: candle_nn::Activation,
}

impl VisionMlp {
    pub fn new(cfg: &VisionConfig, vb: Weights) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&activation_in_place(self.fc1.forward(xs)?, self.act)?)
    }
}

/// `encoder.layers.N`: pre-norm attention and MLP blocks with residuals.
#[derive(Debug, Clone)]
pub struct VisionEncoderLayer {
    self_attn: VisionAttention,
    layer_norm1: LayerNorm,
    mlp: VisionMlp,
    layer_norm2: LayerNorm,
}

impl VisionEncoderLayer {
    pub fn new(cfg: &VisionConfig, vb: Weights) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            self_attn: VisionAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(cfg.hidden_size, eps, vb.pp("layer_norm1"))?,
            mlp: VisionMlp::new(cfg, vb.pp("mlp"))?,
            layer_norm2: layer_norm(cfg.hidden_size, eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let attn = self.self_attn.forward(&self.layer_norm1.forward(xs)?)?;
        let xs = (attn + xs)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((mlp + xs)?)
    }
}

/// `vision_model`: embeddings, `encoder.layers`, `post_layernorm`.
#[derive(Debug, Clone)]
pub struct VisionModel {
    embeddings: VisionEmbeddings,
    layers: Vec<VisionEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, vb: Weights) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| VisionEncoderLayer::new(cfg, vb.pp("encoder.layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: VisionEmbeddings::new(cfg, vb.pp("embeddings"))?,
            layers,
            post_layernorm: layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
        })
    }

    /// `pixel_values` `[batch, 3, H, W]` -> last hidden state `[batch, 1 + patches, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(pixel_values)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        Ok(self.post_layernorm.forward(&xs)?)
    }
}
