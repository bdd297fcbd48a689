//! The engine's front door: a loaded BLIP checkpoint (model, tokenizer, image processor and
//! generation defaults) that turns image bytes into captions, with per-stage timings.

use candle_core::{Device, Tensor};

use crate::checkpoint::{Checkpoint, Weights};
use crate::clock::Stopwatch;
use crate::config::{BlipConfig, GenerationDefaults};
use crate::generate::{generate, GenerationOptions, SpecialTokens};
use crate::model::BlipForConditionalGeneration;
use crate::preprocess::{self, ImageProcessorConfig};
use crate::tokenizer::CaptionTokenizer;
use crate::{Error, Result};

/// The text files of a checkpoint directory, by role, plus its weights.
pub struct ModelFiles {
    /// `config.json`.
    pub config: String,
    pub weights: Checkpoint,
    /// `tokenizer.json` bytes.
    pub tokenizer: Vec<u8>,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<String>,
    /// `preprocessor_config.json`, or transformers 5's `processor_config.json`.
    pub preprocessor: (String, String),
    /// `generation_config.json`, if present.
    pub generation: Option<String>,
}

/// What to generate for one image; `None` fields take the checkpoint's generation defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptionOptions {
    /// Conditional captioning prefix, e.g. "a picture of".
    pub prompt: Option<String>,
    /// Total length limit, prefix (bos + prompt) included.
    pub max_length: Option<usize>,
    /// New tokens after the prefix; used when `max_length` is not given.
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub num_beams: Option<usize>,
    /// Benchmarks: ignore the end token and produce exactly this many new tokens.
    pub fixed_new_tokens: Option<usize>,
}

/// Seconds spent in each stage of captioning one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
}

/// A caption with the ids `generate` would return (leading bos and prompt included).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Caption {
    pub caption: String,
    pub token_ids: Vec<u32>,
    /// Tokens generated after the prefix (bos + prompt).
    pub new_tokens: usize,
    pub timings: Timings,
}

/// Size facts about a loaded model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub total_parameters: usize,
    /// Any linear layer or embedding held as INT8.
    pub is_quantized: bool,
    pub dtype: String,
    /// Bytes of weight data in the checkpoint file(s).
    pub weights_bytes: usize,
}

pub struct Captioner {
    model: BlipForConditionalGeneration,
    config: BlipConfig,
    tokenizer: CaptionTokenizer,
    image_processor: ImageProcessorConfig,
    defaults: GenerationDefaults,
    info: ModelInfo,
    device: Device,
    /// Largest image (in pixels) accepted before decoding.
    pub max_pixels: u64,
}

/// Names of the files a checkpoint directory holds.
pub const CONFIG_FILE: &str = "config.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const PTH_FILE: &str = "pytorch_model.bin";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const PREPROCESSOR_FILES: [&str; 2] = ["preprocessor_config.json", "processor_config.json"];
pub const GENERATION_FILE: &str = "generation_config.json";

#[cfg(not(target_arch = "wasm32"))]
fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))
}

#[cfg(not(target_arch = "wasm32"))]
fn read_optional(path: &std::path::Path) -> Result<Option<String>> {
    if path.exists() {
        read_text(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelFiles {
    /// Reads a Hugging Face checkpoint directory (weights memory-mapped).
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir.display(),
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a checkpoint directory"),
            ));
        }
        let st = dir.join(SAFETENSORS_FILE);
        let pth = dir.join(PTH_FILE);
        let weights = if st.exists() {
            Checkpoint::open(&st)?
        } else if pth.exists() {
            Checkpoint::open(&pth)?
        } else {
            return Err(Error::io(
                dir.display(),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no {SAFETENSORS_FILE} or {PTH_FILE} in this directory"),
                ),
            ));
        };
        let tok_path = dir.join(TOKENIZER_FILE);
        let tokenizer = std::fs::read(&tok_path).map_err(|e| Error::io(tok_path.display(), e))?;
        let preprocessor = PREPROCESSOR_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::io(
                    dir.join(PREPROCESSOR_FILES[0]).display(),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "neither {} nor {} found",
                            PREPROCESSOR_FILES[0], PREPROCESSOR_FILES[1]
                        ),
                    ),
                )
            })?;
        Ok(Self {
            config: read_text(&dir.join(CONFIG_FILE))?,
            weights,
            tokenizer,
            tokenizer_config: read_optional(&dir.join(TOKENIZER_CONFIG_FILE))?,
            preprocessor: (
                preprocessor.display().to_string(),
                read_text(&preprocessor)?,
            ),
            generation: read_optional(&dir.join(GENERATION_FILE))?,
        })
    }
}

/// Counts parameters and INT8 use from the checkpoint header (tied weights counted once).
fn model_info(ckpt: &Checkpoint) -> ModelInfo {
    let mut total = 0usize;
    let mut bytes = 0usize;
    let mut quantized = false;
    for name in ckpt.names() {
        let Some((dtype, shape)) = ckpt.info(&name) else {
            continue;
        };
        let n: usize = shape.iter().product();
        bytes += n * dtype.size_in_bytes();
        if name.ends_with("_scale") {
            continue;
        }
        quantized |= dtype == crate::checkpoint::StoredDType::I8;
        total += n;
    }
    ModelInfo {
        total_parameters: total,
        is_quantized: quantized,
        dtype: if quantized { "int8" } else { "float32" }.to_string(),
        weights_bytes: bytes,
    }
}

impl Captioner {
    /// Loads a checkpoint directory.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Self> {
        Self::load(ModelFiles::from_dir(dir)?)
    }

    /// Builds the captioner from a checkpoint's files; the weight source is released afterwards.
    pub fn load(files: ModelFiles) -> Result<Self> {
        let device = Device::Cpu;
        let config = BlipConfig::from_json(&files.config, CONFIG_FILE)?;
        let (pre_name, pre_text) = &files.preprocessor;
        let image_processor = ImageProcessorConfig::from_json(pre_text, pre_name)?;
        let defaults = match &files.generation {
            Some(text) => GenerationDefaults::from_json(text, GENERATION_FILE)?,
            None => GenerationDefaults::default(),
        };
        let tokenizer = CaptionTokenizer::new(
            &files.tokenizer,
            files.tokenizer_config.as_deref(),
            TOKENIZER_FILE,
        )?;
        if tokenizer.vocab_size() > config.text.vocab_size {
            return Err(Error::config(
                TOKENIZER_FILE,
                format!(
                    "has {} tokens but config.json's text_config.vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.text.vocab_size
                ),
            ));
        }
        let info = model_info(&files.weights);
        let model =
            BlipForConditionalGeneration::new(&config, Weights::new(&files.weights, &device))?;
        Ok(Self {
            model,
            config,
            tokenizer,
            image_processor,
            defaults,
            info,
            device,
            max_pixels: preprocess::DEFAULT_MAX_PIXELS,
        })
    }

    pub fn config(&self) -> &BlipConfig {
        &self.config
    }
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn defaults(&self) -> GenerationDefaults {
        self.defaults
    }
    pub fn image_processor(&self) -> &ImageProcessorConfig {
        &self.image_processor
    }
    pub fn model(&self) -> &BlipForConditionalGeneration {
        &self.model
    }
    pub fn tokenizer(&self) -> &CaptionTokenizer {
        &self.tokenizer
    }

    /// Decodes and preprocesses an image into `pixel_values` `[1, 3, H, W]`.
    pub fn pixel_values(&self, image: &[u8], name: &str) -> Result<Tensor> {
        let values = preprocess::preprocess(image, name, &self.image_processor, self.max_pixels)?;
        let (h, w) = (
            self.image_processor.height as usize,
            self.image_processor.width as usize,
        );
        Ok(Tensor::from_vec(values, (1, 3, h, w), &self.device)?)
    }

    /// The vision encoder's last hidden state for `pixel_values`.
    pub fn encode_image(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.model.encode_image(pixel_values)
    }

    /// Decoding options with the checkpoint's defaults filled in, for a prefix of `prefix_len` tokens.
    pub fn generation_options(
        &self,
        opts: &CaptionOptions,
        prefix_len: usize,
    ) -> Result<GenerationOptions> {
        let num_beams = opts.num_beams.unwrap_or(self.defaults.num_beams);
        if num_beams == 0 {
            return Err(Error::InvalidArgument(
                "num_beams must be at least 1".into(),
            ));
        }
        let max_length = match (opts.max_length, opts.max_new_tokens) {
            (Some(n), _) => n,
            (None, Some(n)) => prefix_len + n,
            (None, None) => self.defaults.max_length_for(prefix_len),
        };
        Ok(GenerationOptions {
            max_length,
            min_length: opts.min_length.unwrap_or(self.defaults.min_length),
            num_beams,
            fixed_new_tokens: opts.fixed_new_tokens,
            ..GenerationOptions::default()
        })
    }

    /// The decoder's input prefix for an optional prompt.
    pub fn prefix(&self, prompt: Option<&str>) -> Result<Vec<u32>> {
        self.tokenizer.prefix(prompt, self.config.text.bos_token_id)
    }

    /// Token ids for an image already encoded by [`Captioner::encode_image`], as `generate` returns
    /// them; `on_step` sees the best sequence so far after each step.
    pub fn generate_ids(
        &self,
        image_embeds: &Tensor,
        opts: &CaptionOptions,
        on_step: &mut dyn FnMut(&[u32]),
    ) -> Result<(Vec<u32>, usize)> {
        let prefix = self.prefix(opts.prompt.as_deref())?;
        let gen = self.generation_options(opts, prefix.len())?;
        let tokens = SpecialTokens {
            bos: self.config.text.bos_token_id,
            eos: self.config.text.sep_token_id,
        };
        let ids = generate(&self.model, image_embeds, &prefix, &gen, tokens, on_step)?;
        Ok((ids, prefix.len()))
    }

    /// Captions one image; `on_token` sees the partial caption text after each generated token.
    pub fn caption(
        &self,
        image: &[u8],
        name: &str,
        opts: &CaptionOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Caption> {
        let total = Stopwatch::start();
        let sw = Stopwatch::start();
        let pixel_values = self.pixel_values(image, name)?;
        let preprocess_s = sw.seconds();
        let sw = Stopwatch::start();
        let image_embeds = self.encode_image(&pixel_values)?;
        let vision_s = sw.seconds();
        let sw = Stopwatch::start();
        let mut stream = |ids: &[u32]| {
            if let Ok(text) = self.tokenizer.decode(ids) {
                on_token(&text);
            }
        };
        let (token_ids, prefix_len) = self.generate_ids(&image_embeds, opts, &mut stream)?;
        let caption = self.tokenizer.decode(&token_ids)?;
        let decode_s = sw.seconds();
        Ok(Caption {
            caption,
            new_tokens: token_ids.len() - prefix_len,
            token_ids,
            timings: Timings {
                preprocess_s,
                vision_s,
                decode_s,
                total_s: total.seconds(),
            },
        })
    }
}
