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
