//! The engine's front door: a loaded BLIP checkpoint (model, tokenizer, image processor and
//! generation defaults) that turns image bytes into captions, with per-stage timings.
//!
//! May use: `checkpoint`, `config`, `tokenizer`, `preprocess`, `model`, `generate`, `clock` (the
//! layers below it; nothing of `eval`, `quantize`, `web` or the CLI).

use candle_core::{Device, Tensor};

use crate::checkpoint::{ActivationStats, Checkpoint, MatrixTable, Weights};
use crate::clock::Stopwatch;
use crate::config::{BlipConfig, GenerationDefaults};
use crate::generate::{generate, generate_batch, GenerationOptions, SpecialTokens};
use crate::model::BlipForConditionalGeneration;
use crate::preprocess::{self, ImageData, ImageProcessorConfig};
use crate::tokenizer::CaptionTokenizer;
use crate::{Error, Result};

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
    /// The vision encoder's output for the image's class token (row 0 of `image_embeds`, the
    /// image summary BLIP's retrieval heads use): what the benchmark compares between models
    /// (embedding cosine). Not part of a caption's JSON.
    #[serde(skip)]
    pub image_cls: Vec<f32>,
}

/// Row 0 (the class token) of image `i` of `image_embeds` `[batch, tokens, hidden]`.
fn class_token(image_embeds: &Tensor, i: usize) -> Result<Vec<f32>> {
    Ok(image_embeds.get(i)?.get(0)?.to_vec1::<f32>()?)
}

/// Size facts about a loaded model.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub total_parameters: usize,
    /// Any linear layer or embedding held as INT8.
    pub is_quantized: bool,
    pub dtype: String,
    /// Bytes of weight data in the checkpoint file(s).
    #[serde(default)]
    pub weights_bytes: usize,
}

/// Largest beam width accepted: each beam keeps its own key/value cache and candidate scores.
pub const MAX_BEAMS: usize = 64;

/// Most images [`Captioner::caption_batch`] takes at once: the batch's activations and every
/// image's cross-attention keys and values (about 42 MB per image at BLIP-base size) are held
/// together.
pub const MAX_BATCH: usize = 32;

/// One image of a batch: its data (usually an encoded file) and a name for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BatchImage<'a> {
    pub image: ImageData<'a>,
    pub name: &'a str,
}

impl<'a> BatchImage<'a> {
    /// An encoded image file's bytes.
    pub fn encoded(bytes: &'a [u8], name: &'a str) -> Self {
        Self {
            image: ImageData::Encoded(bytes),
            name,
        }
    }
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

pub use crate::checkpoint::files::{
    ModelFiles, CONFIG_FILE, GENERATION_FILE, PREPROCESSOR_FILES, PTH_FILE, SAFETENSORS_FILE,
    TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};

/// Counts parameters and INT8 use from the checkpoint header (tied weights counted once: a
/// `torch.save` file's tied duplicates, [`Checkpoint::tied_duplicates`], are not counted).
fn model_info(ckpt: &Checkpoint) -> Result<ModelInfo> {
    let mut total = 0usize;
    let mut bytes = 0usize;
    let mut quantized = false;
    let tied = ckpt.tied_duplicates()?;
    for name in ckpt.names() {
        if tied.contains(&name) {
            continue;
        }
        let Some((dtype, shape)) = ckpt.info(&name) else {
            continue;
        };
        let n: usize = shape.iter().product();
        bytes += n * dtype.size_in_bytes();
        if name.ends_with("_scale") {
            continue;
        }
        quantized |= dtype.is_quantized();
        // A packed 4-bit byte holds two weights.
        total += if dtype == crate::checkpoint::StoredDType::U8 {
            2 * n
        } else {
            n
        };
    }
    Ok(ModelInfo {
        total_parameters: total,
        is_quantized: quantized,
        dtype: if quantized { "int8" } else { "float32" }.to_string(),
        weights_bytes: bytes,
    })
}

/// A checkpoint's configuration files, parsed and checked against each other and the weights'
/// header, without loading any weights.
pub struct Parts {
    pub config: BlipConfig,
    pub image_processor: ImageProcessorConfig,
    pub defaults: GenerationDefaults,
    pub tokenizer: CaptionTokenizer,
}

impl Parts {
    /// Parses every configuration file of `files` and checks that they fit together: tokenizer
    /// ids within the vocabulary, the processor's image size equal to the vision encoder's, and
    /// INT8 weights carrying blipq's INT8 metadata.
    pub fn check(files: &ModelFiles) -> Result<Self> {
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
        if let Some(max_id) = tokenizer.max_id() {
            if max_id as usize >= config.text.vocab_size {
                return Err(Error::config(
                    TOKENIZER_FILE,
                    format!(
                        "has token id {max_id}, outside config.json's text_config.vocab_size ({})",
                        config.text.vocab_size
                    ),
                ));
            }
        }
        let side = config.vision.image_size as u32;
        if (image_processor.height, image_processor.width) != (side, side) {
            return Err(Error::config(
                pre_name,
                format!(
                    "`size` is {}x{} but config.json's vision_config.image_size is {side}: the \
                     vision encoder's position embeddings only fit {side}x{side} images",
                    image_processor.height, image_processor.width
                ),
            ));
        }
        files.weights.check_format()?;
        Ok(Self {
            config,
            image_processor,
            defaults,
            tokenizer,
        })
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
        Self::from_files(&files)
    }

    /// Builds the captioner from a checkpoint's files, which the caller keeps.
    pub fn from_files(files: &ModelFiles) -> Result<Self> {
        Self::build(files, None, None)
    }

    /// A captioner whose linear layers record the mean square of their input features into
    /// `stats` as it runs (calibration: [`crate::quantize::calibrate`]).
    pub fn recording(files: &ModelFiles, stats: &ActivationStats) -> Result<Self> {
        Self::build(files, Some(stats), None)
    }

    /// A captioner whose weight matrices come from `table` where it holds them, the rest from
    /// `files` (which fill the table): models that share most matrices, built once each
    /// (the mixed scheme's trials, [`crate::quantize::mixed`]).
    pub fn with_matrices(files: &ModelFiles, table: &MatrixTable) -> Result<Self> {
        Self::build(files, None, Some(table))
    }

    fn build(
        files: &ModelFiles,
        stats: Option<&ActivationStats>,
        matrices: Option<&MatrixTable>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let Parts {
            config,
            image_processor,
            defaults,
            tokenizer,
        } = Parts::check(files)?;
        let info = model_info(&files.weights)?;
        let mut weights = Weights::new(&files.weights, &device);
        if let Some(stats) = stats {
            weights = weights.recording(stats);
        }
        if let Some(table) = matrices {
            weights = weights.with_matrices(table);
        }
        let model = BlipForConditionalGeneration::new(&config, weights)?;
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

    /// The special tokens decoding needs.
    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            bos: self.config.text.bos_token_id,
            eos: self.config.text.sep_token_id,
        }
    }

    /// Decodes and preprocesses an image into `pixel_values` `[1, 3, H, W]`.
    pub fn pixel_values<'i>(&self, image: impl Into<ImageData<'i>>, name: &str) -> Result<Tensor> {
        let values = preprocess::preprocess_image(
            image.into(),
            name,
            &self.image_processor,
            self.max_pixels,
        )?;
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

    /// Decoding options with the checkpoint's defaults filled in, for a prefix of `prefix_len`
    /// tokens, checked against the model: at least one new token, and every position (prefix
    /// included) within `max_position_embeddings`.
    pub fn generation_options(
        &self,
        opts: &CaptionOptions,
        prefix_len: usize,
    ) -> Result<GenerationOptions> {
        fn bad<T>(msg: String) -> Result<T> {
            Err(Error::InvalidArgument(msg))
        }
        let num_beams = opts.num_beams.unwrap_or(self.defaults.num_beams);
        if num_beams == 0 || num_beams > MAX_BEAMS {
            return bad(format!(
                "num_beams is {num_beams}; it must be between 1 and {MAX_BEAMS}"
            ));
        }
        let max_positions = self.config.text.max_position_embeddings;
        if prefix_len >= max_positions {
            return bad(format!(
                "the prompt is {prefix_len} tokens with bos, which leaves no room for new tokens \
                 within the model's max_position_embeddings ({max_positions})"
            ));
        }
        let total = |what: &str, n: usize| match prefix_len.checked_add(n) {
            Some(t) if n > 0 && t <= max_positions => Ok(t),
            _ => bad(format!(
                "{what} is {n}; with the prefix of {prefix_len} tokens it must be between 1 and {}",
                max_positions - prefix_len
            )),
        };
        let max_length = match (opts.max_length, opts.max_new_tokens) {
            (Some(n), _) => {
                if n <= prefix_len || n > max_positions {
                    return bad(format!(
                        "max_length is {n}; it counts the prefix of {prefix_len} tokens (bos and \
                         prompt), so it must be between {} and the model's \
                         max_position_embeddings ({max_positions})",
                        prefix_len + 1
                    ));
                }
                n
            }
            (None, Some(n)) => total("max_new_tokens", n)?,
            (None, None) => {
                let n = self.defaults.max_length_for(prefix_len).min(max_positions);
                if n <= prefix_len {
                    return bad(format!(
                        "{GENERATION_FILE}'s max_length ({n}) leaves no room for new tokens after \
                         the prefix of {prefix_len} tokens: give max_length or max_new_tokens"
                    ));
                }
                n
            }
        };
        if let Some(n) = opts.fixed_new_tokens {
            total("fixed_new_tokens", n)?;
        }
        Ok(GenerationOptions {
            max_length,
            min_length: opts.min_length.unwrap_or(self.defaults.min_length),
            num_beams,
            fixed_new_tokens: opts.fixed_new_tokens,
            ..GenerationOptions::default()
        })
    }

    /// Checks decoding options against the model before any image is captioned.
    pub fn check_options(&self, opts: &CaptionOptions) -> Result<()> {
        let prefix = self.prefix(opts.prompt.as_deref())?;
        self.generation_options(opts, prefix.len()).map(|_| ())
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
        let tokens = self.special_tokens();
        let ids = generate(&self.model, image_embeds, &prefix, &gen, tokens, on_step)?;
        Ok((ids, prefix.len()))
    }

    /// Captions one image; `on_token` sees the partial caption text after each generated token.
    pub fn caption<'i>(
        &self,
        image: impl Into<ImageData<'i>>,
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
            image_cls: class_token(&image_embeds, 0)?,
            timings: Timings {
                preprocess_s,
                vision_s,
                decode_s,
                total_s: total.seconds(),
            },
        })
    }

    /// Captions several images at once, with the same options: the vision encoder takes them one
    /// at a time ([`BlipForConditionalGeneration::encode_image`]) and the decoder takes all their
    /// sequences together (each image's
    /// cross-attention keys and values computed once; an image leaves the batch when it
    /// finishes). The token ids are those [`Captioner::caption`] gives each image alone.
    ///
    /// Returns one result per image, in order: an image that cannot be read or preprocessed fails
    /// alone and the others are captioned without it. Bad options (checked before any image is
    /// read), more than [`MAX_BATCH`] images, or a failure of the batched model itself fail the
    /// whole call.
    ///
    /// Timings: `preprocess_s` is the image's own; `vision_s` and `decode_s` are the batch's
    /// vision and decoding (and detokenizing) times divided equally among the captioned images,
    /// and `total_s` is the sum of the three. The captioned images' `total_s` thus add up to the
    /// batch's wall time (less the failed images' preprocessing), so images/s computed from them
    /// measures the batched run.
    pub fn caption_batch(
        &self,
        images: &[BatchImage],
        opts: &CaptionOptions,
    ) -> Result<Vec<Result<Caption>>> {
        if images.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} images: the batch size must be between 1 and {MAX_BATCH}",
                images.len()
            )));
        }
        let prefix = self.prefix(opts.prompt.as_deref())?;
        let gen = self.generation_options(opts, prefix.len())?;
        let mut prepared: Vec<(Result<Tensor>, f64)> = Vec::with_capacity(images.len());
        for image in images {
            let sw = Stopwatch::start();
            let values = self.pixel_values(image.image, image.name);
            prepared.push((values, sw.seconds()));
        }
        let pixels: Vec<Tensor> = prepared
            .iter()
            .filter_map(|(p, _)| p.as_ref().ok().cloned())
            .collect();
        let mut captions = Vec::new().into_iter();
        let mut classes = Vec::new().into_iter();
        let (mut vision_s, mut decode_s) = (0.0, 0.0);
        if !pixels.is_empty() {
            let sw = Stopwatch::start();
            let image_embeds = self.encode_image(&Tensor::cat(&pixels, 0)?)?;
            vision_s = sw.seconds();
            let sw = Stopwatch::start();
            let ids = generate_batch(
                &self.model,
                &image_embeds,
                &prefix,
                &gen,
                self.special_tokens(),
                &mut |_, _| {},
            )?;
            let decoded: Vec<(Vec<u32>, Result<String>)> = ids
                .into_iter()
                .map(|t| {
                    let text = self.tokenizer.decode(&t);
                    (t, text)
                })
                .collect();
            decode_s = sw.seconds();
            let share = pixels.len() as f64;
            (vision_s, decode_s) = (vision_s / share, decode_s / share);
            captions = decoded.into_iter();
            classes = (0..pixels.len())
                .map(|i| class_token(&image_embeds, i))
                .collect::<Result<Vec<_>>>()?
                .into_iter();
        }
        let mut out = Vec::with_capacity(images.len());
        for (values, preprocess_s) in prepared {
            let result = match values {
                Err(e) => Err(e),
                Ok(_) => match captions.next() {
                    None => Err(Error::Internal(
                        "batched decoding returned fewer sequences than images".into(),
                    )),
                    Some((token_ids, text)) => text.map(|caption| Caption {
                        caption,
                        new_tokens: token_ids.len() - prefix.len(),
                        token_ids,
                        image_cls: classes.next().unwrap_or_default(),
                        timings: Timings {
                            preprocess_s,
                            vision_s,
                            decode_s,
                            total_s: preprocess_s + vision_s + decode_s,
                        },
                    }),
                },
            };
            out.push(result);
        }
        Ok(out)
    }
}
