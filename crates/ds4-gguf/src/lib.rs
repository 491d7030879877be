//! GGUF v3 container: reader (mmap, zero-copy tensor views), writer, metadata
//! values and the ggml type table.

pub mod types;

pub use types::GgmlType;
