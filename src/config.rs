//! Model and generation configuration, read from a Hugging Face BLIP checkpoint's JSON files.
//!
//! Every dimension comes from `config.json`; only values that `transformers` itself defaults and that
//! are not sizes (epsilons, activation, special token ids) fall back to Hugging Face's defaults.
//!
//! May use: `error` only.

use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// Vision tower (`vision_config`) settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: candle_nn::Activation,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Number of patch tokens plus the class token.
    pub fn num_positions(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }
}

/// Text decoder (`text_config`) settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: candle_nn::Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: u32,
    pub sep_token_id: u32,
    pub pad_token_id: u32,
}

/// The whole `BlipForConditionalGeneration` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BlipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
}

/// Largest size any `config.json` dimension may have (real BLIP-large: 4096).
pub const MAX_DIM: usize = 1 << 20;

/// Reads fields of one JSON object, naming the file and the field path in every error.
struct Fields<'a> {
    file: &'a str,
    path: &'a str,
    obj: &'a serde_json::Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(file: &'a str, path: &'a str, value: Option<&'a Value>) -> Result<Self> {
        match value {
            Some(Value::Object(obj)) => Ok(Self { file, path, obj }),
            Some(_) => Err(Error::config(
                file,
                format!("`{path}` is not a JSON object"),
            )),
            None => Err(Error::config(file, format!("missing field `{path}`"))),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                Error::config(
                    self.file,
                    format!(
                        "`{}` must be a non-negative integer, got {v}",
                        self.name(key)
                    ),
                )
            }),
        }
    }

    /// A size the model cannot be built without: missing, zero or over [`MAX_DIM`] is an error.
    fn dim(&self, key: &str) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(0) => Err(Error::config(
                self.file,
                format!("`{}` must be positive", self.name(key)),
            )),
            Some(n) if n > MAX_DIM => Err(Error::config(
                self.file,
                format!("`{}` is {n}, over the limit of {MAX_DIM}", self.name(key)),
            )),
            Some(n) => Ok(n),
            None => Err(Error::config(
                self.file,
                format!("missing field `{}`", self.name(key)),
            )),
        }
    }

    /// A layer-norm epsilon: a positive finite number, `default` when absent.
    fn eps_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    Error::config(
                        self.file,
                        format!("`{}` must be a positive number, got {v}", self.name(key)),
                    )
                }),
        }
    }

    fn token_or(&self, key: &str, default: u32) -> Result<u32> {
        match self.opt_usize(key)? {
            None => Ok(default),
            Some(n) => u32::try_from(n).map_err(|_| {
                Error::config(
                    self.file,
                    format!("`{}` ({n}) is not a token id", self.name(key)),
                )
            }),
        }
    }

    fn activation(&self, key: &str) -> Result<candle_nn::Activation> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(candle_nn::Activation::Gelu),
            Some(v) => candle_nn::Activation::deserialize(v).map_err(|_| {
                Error::config(
                    self.file,
                    format!("`{}`: unsupported activation {v}", self.name(key)),
                )
            }),
        }
    }
}

fn check_heads(file: &str, path: &str, hidden: usize, heads: usize) -> Result<()> {
    if !hidden.is_multiple_of(heads) {
        return Err(Error::config(
            file,
            format!("`{path}.hidden_size` ({hidden}) is not a multiple of `{path}.num_attention_heads` ({heads})"),
        ));
    }
    Ok(())
}

impl BlipConfig {
    /// Parses `config.json` text; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(file, format!("not valid JSON: {e}")))?;
        let v = Fields::new(file, "vision_config", root.get("vision_config"))?;
        let vision = VisionConfig {
            hidden_size: v.dim("hidden_size")?,
            intermediate_size: v.dim("intermediate_size")?,
            num_hidden_layers: v.dim("num_hidden_layers")?,
            num_attention_heads: v.dim("num_attention_heads")?,
            image_size: v.dim("image_size")?,
            patch_size: v.dim("patch_size")?,
            hidden_act: v.activation("hidden_act")?,
            layer_norm_eps: v.eps_or("layer_norm_eps", 1e-5)?,
        };
        check_heads(
            file,
            "vision_config",
            vision.hidden_size,
            vision.num_attention_heads,
        )?;
        if !vision.image_size.is_multiple_of(vision.patch_size) {
            return Err(Error::config(
                file,
                format!(
                    "`vision_config.image_size` ({}) is not a multiple of `vision_config.patch_size` ({})",
                    vision.image_size, vision.patch_size
                ),
            ));
        }
        let side = vision.image_size / vision.patch_size;
        if (side as u64) * (side as u64) > MAX_DIM as u64 {
            return Err(Error::config(
                file,
                format!(
                    "`vision_config.image_size` / `patch_size` gives {side}x{side} patches, over the limit of {MAX_DIM}"
                ),
            ));
        }
        let t = Fields::new(file, "text_config", root.get("text_config"))?;
        let text = TextConfig {
            vocab_size: t.dim("vocab_size")?,
            hidden_size: t.dim("hidden_size")?,
            // The released base checkpoint's config predates this field; the decoder cross-attends
            // to the vision tower's output, so its width is the vision hidden size.
            encoder_hidden_size: t
                .opt_usize("encoder_hidden_size")?
                .unwrap_or(vision.hidden_size),
            intermediate_size: t.dim("intermediate_size")?,
            num_hidden_layers: t.dim("num_hidden_layers")?,
            num_attention_heads: t.dim("num_attention_heads")?,
            max_position_embeddings: match t.opt_usize("max_position_embeddings")? {
                None => 512,
                Some(_) => t.dim("max_position_embeddings")?,
            },
            hidden_act: t.activation("hidden_act")?,
            layer_norm_eps: t.eps_or("layer_norm_eps", 1e-12)?,
            bos_token_id: t.token_or("bos_token_id", 30522)?,
            sep_token_id: t.token_or("sep_token_id", 102)?,
            pad_token_id: t.token_or("pad_token_id", 0)?,
        };
        check_heads(
            file,
            "text_config",
            text.hidden_size,
            text.num_attention_heads,
        )?;
        if text.encoder_hidden_size != vision.hidden_size {
            return Err(Error::config(
                file,
                format!(
                    "`text_config.encoder_hidden_size` ({}) differs from `vision_config.hidden_size` ({})",
                    text.encoder_hidden_size, vision.hidden_size
                ),
            ));
        }
        for (name, id) in [
            ("bos_token_id", text.bos_token_id),
            ("sep_token_id", text.sep_token_id),
            ("pad_token_id", text.pad_token_id),
        ] {
            if id as usize >= text.vocab_size {
                return Err(Error::config(
                    file,
                    format!(
                        "`text_config.{name}` ({id}) is outside the vocabulary ({})",
                        text.vocab_size
                    ),
                ));
            }
        }
        Ok(Self { vision, text })
    }
}

/// Decoding defaults from `generation_config.json`. Without a length there, transformers 5 makes
/// BLIP generate 20 new tokens after the prefix (bos + prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationDefaults {
    /// Total length (prefix included), when the file sets `max_length`.
    pub max_length: Option<usize>,
    /// New tokens after the prefix, used when no total length is set.
    pub max_new_tokens: usize,
    pub min_length: usize,
    pub num_beams: usize,
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        Self {
            max_length: None,
            max_new_tokens: 20,
            min_length: 0,
            num_beams: 1,
        }
    }
}

impl GenerationDefaults {
    /// Parses `generation_config.json` text; fields it lacks keep Hugging Face's defaults.
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(file, format!("not valid JSON: {e}")))?;
        let f = Fields::new(file, "generation_config", Some(&root))?;
        let d = Self::default();
        let num_beams = f.opt_usize("num_beams")?.unwrap_or(d.num_beams);
        if num_beams == 0 {
            return Err(Error::config(file, "`num_beams` must be at least 1"));
        }
        Ok(Self {
            max_length: f.opt_usize("max_length")?,
            max_new_tokens: f.opt_usize("max_new_tokens")?.unwrap_or(d.max_new_tokens),
            min_length: f.opt_usize("min_length")?.unwrap_or(d.min_length),
            num_beams,
        })
    }

    /// Total length limit for a prefix of `prefix_len` tokens.
    pub fn max_length_for(&self, prefix_len: usize) -> usize {
        self.max_length
            .unwrap_or(prefix_len.saturating_add(self.max_new_tokens))
    }
}
