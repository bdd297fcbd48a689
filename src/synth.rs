//! Random-init BLIP checkpoints with the real models' configs and tensor names, so that speed and
//! memory can be measured at true size without downloading weights.
//!
//! May use: `checkpoint`, `config`, `fsio`, `error`.

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::config::BlipConfig;
use crate::{Error, Result};

/// Published model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `Salesforce/blip-image-captioning-base` (ViT-B/16, 224M parameters).
    Base,
    /// `Salesforce/blip-image-captioning-large` (ViT-L/16).
    Large,
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "base" => Ok(Self::Base),
            "large" => Ok(Self::Large),
            other => Err(Error::InvalidArgument(format!(
                "unknown preset {other:?} (expected base or large)"
            ))),
        }
    }
}

/// `config.json` of a preset, in the layout of the Hub's files.
pub fn config_json(preset: Preset) -> serde_json::Value {
    let (vh, vi, vl, vheads) = match preset {
        Preset::Base => (768, 3072, 12, 12),
        Preset::Large => (1024, 4096, 24, 16),
    };
    json!({
        "architectures": ["BlipForConditionalGeneration"],
        "model_type": "blip",
        "projection_dim": 512,
        "image_text_hidden_size": 256,
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "blip_text_model",
            "vocab_size": 30524,
            "hidden_size": 768,
            "encoder_hidden_size": vh,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 512,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "initializer_range": 0.02,
            "bos_token_id": 30522,
            "sep_token_id": 102,
            "pad_token_id": 0,
            "eos_token_id": 2,
            "is_decoder": true,
            "use_cache": true
        },
        "vision_config": {
            "model_type": "blip_vision_model",
            "hidden_size": vh,
            "intermediate_size": vi,
            "num_hidden_layers": vl,
            "num_attention_heads": vheads,
            "image_size": 384,
            "patch_size": 16,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
            "initializer_range": 0.02
        }
    })
}

/// Every tensor of `BlipForConditionalGeneration` (tied LM head omitted, as transformers 5 saves
/// it) with its shape, in state-dict order.
pub fn tensor_shapes(cfg: &BlipConfig) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| out.push((name, shape));
    let v = &cfg.vision;
    let (h, p) = (v.hidden_size, v.patch_size);
    let e = "vision_model.embeddings";
    add(format!("{e}.class_embedding"), vec![1, 1, h]);
    add(format!("{e}.patch_embedding.weight"), vec![h, 3, p, p]);
    add(format!("{e}.patch_embedding.bias"), vec![h]);
    add(
        format!("{e}.position_embedding"),
        vec![1, v.num_positions(), h],
    );
    let linear = |add: &mut dyn FnMut(String, Vec<usize>), name: String, out: usize, inp: usize| {
        add(format!("{name}.weight"), vec![out, inp]);
        add(format!("{name}.bias"), vec![out]);
    };
    let norm = |add: &mut dyn FnMut(String, Vec<usize>), name: String, n: usize| {
        add(format!("{name}.weight"), vec![n]);
        add(format!("{name}.bias"), vec![n]);
    };
    for i in 0..v.num_hidden_layers {
        let l = format!("vision_model.encoder.layers.{i}");
        linear(&mut add, format!("{l}.self_attn.qkv"), 3 * h, h);
        linear(&mut add, format!("{l}.self_attn.projection"), h, h);
        norm(&mut add, format!("{l}.layer_norm1"), h);
        linear(&mut add, format!("{l}.mlp.fc1"), v.intermediate_size, h);
        linear(&mut add, format!("{l}.mlp.fc2"), h, v.intermediate_size);
        norm(&mut add, format!("{l}.layer_norm2"), h);
    }
    norm(&mut add, "vision_model.post_layernorm".into(), h);
    let t = &cfg.text;
    let th = t.hidden_size;
    let b = "text_decoder.bert";
    add(
        format!("{b}.embeddings.word_embeddings.weight"),
        vec![t.vocab_size, th],
    );
    add(
        format!("{b}.embeddings.position_embeddings.weight"),
        vec![t.max_position_embeddings, th],
    );
    norm(&mut add, format!("{b}.embeddings.LayerNorm"), th);
    for i in 0..t.num_hidden_layers {
        let l = format!("{b}.encoder.layer.{i}");
        for (part, kv_in) in [("attention", th), ("crossattention", t.encoder_hidden_size)] {
            linear(&mut add, format!("{l}.{part}.self.query"), th, th);
            linear(&mut add, format!("{l}.{part}.self.key"), th, kv_in);
            linear(&mut add, format!("{l}.{part}.self.value"), th, kv_in);
            linear(&mut add, format!("{l}.{part}.output.dense"), th, th);
            norm(&mut add, format!("{l}.{part}.output.LayerNorm"), th);
        }
        linear(
            &mut add,
            format!("{l}.intermediate.dense"),
            t.intermediate_size,
            th,
        );
        linear(
            &mut add,
            format!("{l}.output.dense"),
            th,
            t.intermediate_size,
        );
        norm(&mut add, format!("{l}.output.LayerNorm"), th);
    }
    add(
        "text_decoder.cls.predictions.bias".into(),
        vec![t.vocab_size],
    );
    linear(
        &mut add,
        "text_decoder.cls.predictions.transform.dense".into(),
        th,
        th,
    );
    norm(
        &mut add,
        "text_decoder.cls.predictions.transform.LayerNorm".into(),
        th,
    );
    out
}

/// Random weights for `cfg` as safetensors bytes: N(0, 0.02) matrices and embeddings, zero
/// biases, unit LayerNorms (transformers' init), generated one tensor at a time.
pub fn random_weights(
    cfg: &BlipConfig,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<u8>> {
    let shapes = tensor_shapes(cfg);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(shapes.len());
    for (i, (name, shape)) in shapes.iter().enumerate() {
        on_tensor(i, shapes.len(), name);
        let n: usize = shape.iter().product();
        let is_norm_weight = name.contains("LayerNorm.weight")
            || name.contains("layer_norm")
            || name.contains("post_layernorm");
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if is_norm_weight && name.ends_with(".weight") {
            vec![1.0; n]
        } else {
            Tensor::randn(0f32, 0.02, n, &Device::Cpu)?.to_vec1()?
        };
        tensors.push((
            name.clone(),
            shape.clone(),
            values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    on_tensor(shapes.len(), shapes.len(), "");
    let views = tensors
        .iter()
        .map(|(n, s, d)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(n, format!("cannot serialize: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| {
        Error::checkpoint(
            crate::checkpoint::files::SAFETENSORS_FILE,
            format!("cannot serialize: {e}"),
        )
    })
}

/// Total parameters of `cfg` (tied LM head counted once).
pub fn parameter_count(cfg: &BlipConfig) -> usize {
    tensor_shapes(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// BLIP's tokenizer files, written into every synthetic checkpoint.
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../data/blip-tokenizer/tokenizer.json");
pub const TOKENIZER_CONFIG_JSON: &[u8] =
    include_bytes!("../data/blip-tokenizer/tokenizer_config.json");

/// `processor_config.json` for a vision tower of `image_size` (BlipImageProcessor defaults).
pub fn processor_config_json(image_size: usize) -> serde_json::Value {
    json!({
        "processor_class": "BlipProcessor",
        "image_processor": {
            "image_processor_type": "BlipImageProcessor",
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"height": image_size, "width": image_size}
        }
    })
}

/// Writes a complete random-init checkpoint directory for `preset`.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_dir(
    preset: Preset,
    out: &crate::fsio::OutputDir,
    on_tensor: &mut dyn FnMut(usize, usize, &str),
) -> Result<usize> {
    let config = config_json(preset);
    let cfg = BlipConfig::from_json(&config.to_string(), "config.json")?;
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    out.write("config.json", &pretty(&config))?;
    out.write(
        "processor_config.json",
        &pretty(&processor_config_json(cfg.vision.image_size)),
    )?;
    out.write("tokenizer.json", TOKENIZER_JSON)?;
    out.write("tokenizer_config.json", TOKENIZER_CONFIG_JSON)?;
    out.write(
        crate::checkpoint::files::SAFETENSORS_FILE,
        &random_weights(&cfg, on_tensor)?,
    )?;
    Ok(parameter_count(&cfg))
}
