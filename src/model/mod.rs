//! The BLIP network, in the layout of Hugging Face's `BlipForConditionalGeneration`: one struct
//! per layer, `new(cfg, weights)`, Hugging Face tensor names. The arithmetic is in
//! [`crate::kernels`]; the weights come from [`crate::checkpoint`].
//!
//! May use: `kernels`, `checkpoint` (the weights' lookup), `config`, `error`; never `captioner`,
//! `generate` or anything above.

pub mod blip;
pub mod linear;
pub mod text;
pub mod vision;

pub use blip::BlipForConditionalGeneration;
pub use text::DecoderState;
