use ds4_gguf::types::GgmlType;

/// Errors from the quantization library. Every one describes bad input (a
/// length, a type); none is an internal failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty}: {elements} elements is not a whole number of {block}-element blocks")]
    NotBlockMultiple {
        ty: GgmlType,
        elements: usize,
        block: usize,
    },
    #[error("{ty}: {what} holds {got} bytes, expected {expected}")]
    ByteLength {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what}: length {got}, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op} is not supported for tensor type {ty}")]
    Unsupported { ty: GgmlType, op: &'static str },
    #[error("CPU kernel path {0} is not available on this machine")]
    PathUnavailable(&'static str),
    #[error("row range {start}..{end} is outside a matrix of {rows} rows")]
    RowRange {
        start: usize,
        end: usize,
        rows: usize,
    },
}
