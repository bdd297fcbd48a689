//! The arithmetic under the model, apart from it: INT8 GEMM ([`q8`], one file per ISA), packed f32
//! GEMM ([`sgemm`]), the `gemm` crate's products ([`matmul`]), attention ([`attention`]: the
//! vision encoder's and the decoder's), element-wise ops ([`ops`]), the run-time choice of instruction set ([`isa`]) and
//! this machine's measured limits ([`ceiling`]). Kernels know nothing of the model: they take
//! slices, shapes and candle tensors. Every SIMD kernel is tested against a portable reference.
//!
//! May use: nothing above it: no model, checkpoint or configuration; only `error` and candle's
//! tensors.

pub mod attention;
pub mod ceiling;
pub mod isa;
pub mod matmul;
pub mod ops;
pub mod q8;
pub mod sgemm;
