//! Every way reading or writing a GGUF file can fail. Messages name the key,
//! tensor, offset or size involved so a user can tell which file is broken and
//! where, without a debugger.

use std::path::PathBuf;

use thiserror::Error;

use crate::types::GgmlType;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot open GGUF file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("I/O error while writing GGUF: {0}")]
    Io(#[from] std::io::Error),

    #[error(
        "not a GGUF file: magic is {found:02x?} (\"{}\"), expected \"GGUF\"",
        String::from_utf8_lossy(found)
    )]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version}: only version 3 is supported")]
    UnsupportedVersion { version: u32 },

    #[error(
        "file truncated while reading {what} at offset {offset}: need {needed} bytes, only {available} left"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    #[error(
        "{what} at offset {offset} declares {count} entries of at least {min_entry_bytes} bytes each, \
         which cannot fit in the {remaining} bytes left in the file"
    )]
    CountTooLarge {
        what: String,
        count: u64,
        min_entry_bytes: u64,
        offset: u64,
        remaining: u64,
    },

    #[error("{what} at offset {offset} has unknown metadata value type id {type_id}")]
    UnknownValueType {
        what: String,
        type_id: u32,
        offset: u64,
    },

    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("{what} at offset {offset} is a bool stored as byte {value}, expected 0 or 1")]
    InvalidBool {
        what: String,
        offset: u64,
        value: u8,
    },

    #[error("{what} nests arrays more than {max} levels deep")]
    ArrayTooDeep { what: String, max: usize },

    #[error("duplicate metadata key \"{key}\"")]
    DuplicateKey { key: String },

    #[error("invalid general.alignment {value}: must be a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("tensor \"{tensor}\" has {n_dims} dimensions, expected 1 to {max}", max = crate::MAX_DIMS)]
    BadDimCount { tensor: String, n_dims: u32 },

    #[error(
        "tensor \"{tensor}\" dimensions {dims:?} overflow: the element count does not fit in 63 bits"
    )]
    DimOverflow { tensor: String, dims: Vec<u64> },

    #[error(
        "tensor \"{tensor}\" of type {ty} has row length {row} (dims {dims:?}), \
         which is not a multiple of the {ty} block size {block}"
    )]
    NotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        dims: Vec<u64>,
        row: u64,
        block: usize,
    },

    #[error("tensor \"{tensor}\" has unknown ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },

    #[error("duplicate tensor name \"{tensor}\"")]
    DuplicateTensor { tensor: String },

    #[error(
        "tensor \"{tensor}\" data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor \"{tensor}\" data [{start}, {end}) extends past the end of the file ({file_len} bytes)"
    )]
    TensorPastEnd {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error(
        "tensors \"{first}\" (data offset {first_offset}, {first_bytes} bytes) and \"{second}\" \
         (data offset {second_offset}) overlap"
    )]
    TensorOverlap {
        first: String,
        first_offset: u64,
        first_bytes: u64,
        second: String,
        second_offset: u64,
    },

    #[error("metadata key \"{key}\" not found")]
    MissingKey { key: String },

    #[error("metadata key \"{key}\" has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },

    #[error("metadata key \"{key}\" holds {value}, which does not fit in {target}")]
    ValueOutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },

    #[error("tensor \"{name}\" not found")]
    TensorNotFound { name: String },

    #[error("tensor \"{tensor}\" has type {found}, cannot view it as {requested}")]
    ViewTypeMismatch {
        tensor: String,
        found: GgmlType,
        requested: GgmlType,
    },

    #[error(
        "tensor \"{tensor}\" data at file offset {offset} is not aligned for a {requested} view; \
         use the byte view instead"
    )]
    ViewMisaligned {
        tensor: String,
        offset: u64,
        requested: GgmlType,
    },

    #[error(
        "tensor \"{tensor}\": {declared} bytes declared for its shape and type, but {got} given"
    )]
    TensorSizeMismatch {
        tensor: String,
        declared: u64,
        got: u64,
    },

    #[error("tensor data written out of order: expected \"{expected}\" next, got \"{got}\"")]
    TensorOutOfOrder { expected: String, got: String },

    #[error("no more tensors were declared, but data for \"{got}\" was started")]
    UnexpectedTensor { got: String },

    #[error("tensor data written with no tensor started (call begin_tensor first)")]
    NoTensorStarted,

    #[error("tensor \"{tensor}\" still needs {missing} of its {declared} bytes")]
    TensorIncomplete {
        tensor: String,
        declared: u64,
        missing: u64,
    },

    #[error("{count} declared tensor(s) were never written, the first is \"{first}\"")]
    MissingTensors { count: usize, first: String },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
