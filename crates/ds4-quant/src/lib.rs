//! Block formats of the tensors ds4 computes with, and the CPU dot products.
//!
//! * [`dequantize`] turns a run of blocks of any supported [`GgmlType`] into f32,
//!   bit-identical to the `gguf` Python package (llama.cpp's reference).
//! * [`quantize`] produces Q8_0, Q2_K, Q4_K and IQ2_XXS rows, optionally guided by
//!   per-column importance weights (an imatrix), following llama.cpp's
//!   `quantize_row_*_impl` algorithms.
//! * [`DotKernel`] / [`matvec`] multiply a weight matrix by an activation vector
//!   the way ds4's CPU decode does: the vector is quantized once (Q8_0 per 32 for
//!   Q8_0 weights, Q8_K per 256 for the K/IQ formats, f32 for F16/F32/BF16) and
//!   each row is an integer block dot product scaled in f32.
//!
//! Every SIMD kernel returns exactly the scalar kernel's result for the
//! quantized formats (integer sums are exact and the per-block f32 combination
//! is done in the same order); see [`kernels`].

pub mod activation;
pub mod dequant;
mod error;
pub mod half;
mod iq2xxs;
pub mod kernels;
mod matvec;
pub mod microfloat;
pub mod quantize;
pub mod tables;

pub use activation::{
    Activations, BlockQ8_0Act, BlockQ8K, quantize_q8_0_activation, quantize_q8_k,
};
pub use dequant::dequantize;
pub use ds4_gguf::types::GgmlType;
pub use error::QuantError;
pub use kernels::{KernelPath, available_paths, selected_path};
pub use matvec::{DotKernel, matvec, matvec_serial};
pub use quantize::{quantize, quantize_row};

/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;
/// Elements per K-quant / IQ2_XXS / Q8_K super-block.
pub const QK_K: usize = 256;

pub type Result<T> = std::result::Result<T, QuantError>;
