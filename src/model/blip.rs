//! `BlipForConditionalGeneration`: the vision encoder and the text decoder under their Hugging Face
//! prefixes (`vision_model.*`, `text_decoder.*`).

use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::config::BlipConfig;
use crate::model::text::{DecoderState, TextLMHeadModel};
use crate::model::vision::VisionModel;
use crate::Result;

#[derive(Debug, Clone)]
pub struct BlipForConditionalGeneration {
    vision_model: VisionModel,
    text_decoder: TextLMHeadModel,
}

impl BlipForConditionalGeneration {
    pub fn new(cfg: &BlipConfig, vb: Weights) -> Result<Self> {
        Ok(Self {
            vision_model: VisionModel::new(&cfg.vision, vb.pp("vision_model"))?,
            text_decoder: TextLMHeadModel::new(&cfg.text, vb.pp("text_decoder"))?,
        })
    }

    /// Image embeddings (the vision encoder's last hidden state) `[images, tokens, hidden]` for
    /// `pixel_values` `[images, 3, H, W]`.
    ///
    /// Several images are encoded one at a time: one image's patch tokens already fill the
    /// kernels' tiles, while a batch's activations (every image's tokens through each layer in
    /// turn) fall out of the caches and made the encoder slower per image. Each image's
    /// embeddings are then exactly those it gets alone.
    pub fn encode_image(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let images = pixel_values.dim(0)?;
        if images <= 1 {
            return self.vision_model.forward(pixel_values);
        }
        let embeds = (0..images)
            .map(|i| self.vision_model.forward(&pixel_values.narrow(0, i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&embeds, 0)?)
    }

    /// Decoder state for one or more images (`image_embeds` `[images, tokens, hidden]`), with
    /// their cross-attention keys/values computed.
    pub fn start_decoding(&self, image_embeds: &Tensor) -> Result<DecoderState> {
        self.text_decoder.start(image_embeds)
    }

    /// Whether the decoder's language-model head is tied to its word embeddings (one table in
    /// memory): when the checkpoint omits `text_decoder.cls.predictions.decoder.weight`, or stores
    /// it with the embeddings' values, as transformers ties them.
    pub fn lm_head_is_tied(&self) -> bool {
        self.text_decoder.lm_head_is_tied()
    }

    /// Logits `[batch, vocab]` of the next token after feeding `ids` `[batch, len]`.
    pub fn decode_step(&self, ids: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        self.text_decoder.forward(ids, state)
    }
}
