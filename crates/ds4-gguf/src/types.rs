//! The ggml tensor type table: ids as they appear in GGUF tensor infos, and the
//! block geometry every consumer (reader bounds checks, quant kernels, writer)
//! needs to turn an element count into a byte count.

use std::fmt;

/// A ggml tensor element type. Only the types this project computes with are
/// listed; any other id read from a file is reported as unknown rather than
/// guessed at, because a wrong block size would make every later offset wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
    Q2K = 10,
    Q4K = 12,
    /// Activation blocks for the K-quant and IQ dot products; never stored in
    /// published files but a valid ggml type id.
    Q8K = 15,
    Iq2Xxs = 16,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    Bf16 = 30,
}

impl GgmlType {
    pub const ALL: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Q8K,
        GgmlType::Iq2Xxs,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::Bf16,
    ];

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q8_0 => 32,
            GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q8K | GgmlType::Iq2Xxs => 256,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::Bf16 | GgmlType::I16 => 2,
            GgmlType::I8 => 1,
            GgmlType::I64 | GgmlType::F64 => 8,
            // f16 d + 32 x i8
            GgmlType::Q8_0 => 34,
            // 16 x u8 scales/mins + 64 x u8 2-bit quants + f16 d + f16 dmin
            GgmlType::Q2K => 84,
            // f16 d + f16 dmin + 12 x u8 packed 6-bit scales/mins + 128 x u8 4-bit quants
            GgmlType::Q4K => 144,
            // f32 d + 256 x i8 + 16 x i16 block sums
            GgmlType::Q8K => 292,
            // f16 d + 32 x u16 (grid index + signs + scale bits)
            GgmlType::Iq2Xxs => 66,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes needed for `n_elements` elements, or `None` when `n_elements` is not
    /// a whole number of blocks or the product overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }

    /// The name ggml and the `gguf` Python package use.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::Iq2Xxs => "IQ2_XXS",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::Bf16 => "BF16",
        }
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        // Sizes from ggml.c's type_traits table.
        assert_eq!(GgmlType::Q8_0.bytes_for(32), Some(34));
        assert_eq!(GgmlType::Q2K.bytes_for(256), Some(84));
        assert_eq!(GgmlType::Q4K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Iq2Xxs.bytes_for(256), Some(66));
        assert_eq!(GgmlType::Q8K.bytes_for(256), Some(292));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::from_id(2), None);
    }
}
