//! The BLIP network, in the layout of Hugging Face's `BlipForConditionalGeneration`.

pub mod blip;
pub mod ceiling;
pub mod isa;
pub mod linear;
pub mod matmul;
pub mod ops;
pub mod q8;
pub mod sgemm;
pub mod text;
pub mod vision;

pub use blip::BlipForConditionalGeneration;
pub use text::DecoderState;
