//! The BLIP network, in the layout of Hugging Face's `BlipForConditionalGeneration`.

pub mod blip;
pub mod linear;
pub mod text;
pub mod vision;

pub use blip::BlipForConditionalGeneration;
pub use text::DecoderState;
