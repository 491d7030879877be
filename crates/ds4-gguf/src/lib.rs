//! GGUF v3 container: a validating mmap reader with zero-copy tensor views, an
//! in-memory and a streaming writer, metadata values and the ggml type table.
//!
//! Reading:
//! ```no_run
//! # fn main() -> Result<(), ds4_gguf::GgufError> {
//! let f = ds4_gguf::GgufFile::open("model.gguf")?;
//! let arch = f.get_str("general.architecture")?;
//! let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
//! let t = f.require_tensor("output_norm.weight")?;
//! let w: &[f32] = f.tensor_f32(t)?;
//! let raw: &[u8] = f.tensor_data(f.require_tensor("output.weight")?);
//! # let _ = (arch, tokens, w, raw); Ok(()) }
//! ```
//!
//! Everything read from a file is validated when it is opened (sizes, types,
//! offsets, overlaps, UTF-8), so later accessors cannot fail on bad input
//! except where they say so.
//!
//! Conventions:
//! - [`TensorInfo::dims`] is in ggml order: `dims[0]` is the contiguous row
//!   length, the reverse of a numpy/PyTorch shape.
//! - [`TensorInfo::offset`] is relative to the data section, as stored;
//!   [`GgufFile::tensor_file_offset`] gives the absolute file offset.
//! - `get_X(key)` fails with [`GgufError::MissingKey`] or
//!   [`GgufError::WrongType`] (naming key, expected and found types);
//!   `get_X_opt(key)` returns `Ok(None)` for a missing key.
//! - Typed tensor views (`tensor_f32`, `tensor_f16`, ...) check the tensor's
//!   type and the data's alignment; [`GgufFile::tensor_data`] always works.
//!
//! Writing a small file in memory, or a huge one tensor by tensor:
//! ```no_run
//! # fn main() -> Result<(), ds4_gguf::GgufError> {
//! use ds4_gguf::{GgmlType, GgufBuilder, GgufStreamWriter, HeaderBuilder};
//! let mut b = GgufBuilder::new();
//! b.add_meta("general.architecture", "deepseek4")?;
//! b.add_meta("tokenizer.ggml.tokens", vec!["a", "b"])?;
//! b.add_tensor("output_norm.weight", &[2], GgmlType::F32, vec![0u8; 8])?;
//! b.write_file("small.gguf")?;
//!
//! let mut h = HeaderBuilder::new();
//! h.add_tensor("blk.0.ffn_down_exps.weight", &[2048, 4096, 256], GgmlType::Q2K)?;
//! let mut w = GgufStreamWriter::create("big.gguf", &h)?;
//! w.begin_tensor("blk.0.ffn_down_exps.weight")?;
//! // ... w.write_chunk(&bytes)? as many times as needed ...
//! w.end_tensor()?;
//! w.finish()?; // fails if a declared tensor is missing
//! # Ok(()) }
//! ```

mod error;
mod reader;
pub mod types;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{GgufFile, Metadata, TensorInfo};
pub use types::GgmlType;
pub use value::{MetaArray, MetaValue, StringArray, ValueType};
pub use writer::{GgufBuilder, GgufStreamWriter, HeaderBuilder, Layout};

/// `GGUF` in file byte order.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The only version read and written.
pub const GGUF_VERSION: u32 = 3;
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key overriding the alignment (must be a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may declare.
pub const MAX_DIMS: usize = 8;
/// Deepest nesting of metadata arrays accepted; bounds recursion on hostile
/// input (real files nest at most once).
pub const MAX_ARRAY_DEPTH: usize = 16;
