//! Typed errors of the engine.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("metadata key `{key}`: {msg}")]
    BadKey { key: String, msg: String },
    #[error("inconsistent model config: {0}")]
    Config(String),
    #[error("tensor `{name}` is missing")]
    MissingTensor { name: String },
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: {msg}")]
    TensorData { name: String, msg: String },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("context full: position {pos} >= context {ctx}")]
    ContextFull { pos: usize, ctx: usize },
    #[error("no logits yet: the session holds no tokens")]
    NoLogits,
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("safetensors file {path}: {msg}")]
    Safetensors { path: String, msg: String },
    #[error("session payload: {0}")]
    Payload(String),
    #[error("config.json: {0}")]
    ConfigJson(String),
    /// A device backend failed (driver, kernel compile, out of device memory).
    #[error("{backend} backend: {msg}")]
    Backend { backend: String, msg: String },
    #[error(transparent)]
    Quant(#[from] ds4_quant::QuantError),
    #[error(transparent)]
    Gguf(#[from] ds4_gguf::GgufError),
}

pub type Result<T> = std::result::Result<T, EngineError>;
