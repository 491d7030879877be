//! GGUF metadata values. Arrays keep their element type even when empty so a
//! file round-trips byte for byte, and string arrays are stored in one buffer
//! (not one `String` per entry) because the vocabulary and merges hold ~256k
//! strings and loading them must stay cheap.

use std::fmt;

/// Metadata value type ids as written in the file (`gguf_type` in ggml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    pub fn from_id(id: u32) -> Option<ValueType> {
        ValueType::ALL.get(id as usize).copied()
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// Encoded size of one value, or `None` for strings and arrays whose size
    /// depends on their contents.
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// Smallest possible encoding of one value: a string is at least its u64
    /// length, an array at least its u32 element type and u64 length. Used to
    /// reject absurd counts before allocating.
    pub fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }

    /// Lower-case name, as used in error messages and the interop manifests.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    pub fn from_name(name: &str) -> Option<ValueType> {
        ValueType::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A list of strings stored back to back in one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StringArray {
    data: String,
    /// `ends[i]` is the end of string `i` in `data`; string `i` starts at
    /// `ends[i - 1]` (or 0).
    ends: Vec<usize>,
}

impl StringArray {
    pub fn new() -> StringArray {
        StringArray::default()
    }

    pub fn with_capacity(strings: usize, bytes: usize) -> StringArray {
        StringArray {
            data: String::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        // Every boundary was recorded after pushing a whole `&str`, so it is a
        // char boundary and this slice cannot fail.
        self.data.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or_default())
    }

    /// Sum of the byte lengths of all strings.
    pub fn total_bytes(&self) -> usize {
        self.data.len()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for StringArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> StringArray {
        let mut a = StringArray::new();
        for s in iter {
            a.push(s.as_ref());
        }
        a
    }
}

/// A metadata array. Every element has the same type; nested arrays may each
/// have their own element type, as in the file format.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(StringArray),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaArray {
    pub fn elem_type(&self) -> ValueType {
        match self {
            MetaArray::U8(_) => ValueType::U8,
            MetaArray::I8(_) => ValueType::I8,
            MetaArray::U16(_) => ValueType::U16,
            MetaArray::I16(_) => ValueType::I16,
            MetaArray::U32(_) => ValueType::U32,
            MetaArray::I32(_) => ValueType::I32,
            MetaArray::F32(_) => ValueType::F32,
            MetaArray::Bool(_) => ValueType::Bool,
            MetaArray::String(_) => ValueType::String,
            MetaArray::Array(_) => ValueType::Array,
            MetaArray::U64(_) => ValueType::U64,
            MetaArray::I64(_) => ValueType::I64,
            MetaArray::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Type description such as `array<u32>` or `array<array<string>>` (the
    /// inner type is taken from the first element of a nested array).
    pub fn type_description(&self) -> String {
        match self {
            MetaArray::Array(v) => match v.first() {
                Some(inner) => format!("array<{}>", inner.type_description()),
                None => "array<array>".to_owned(),
            },
            other => format!("array<{}>", other.elem_type()),
        }
    }

    /// An empty array of the given element type.
    pub fn empty(elem: ValueType) -> MetaArray {
        match elem {
            ValueType::U8 => MetaArray::U8(Vec::new()),
            ValueType::I8 => MetaArray::I8(Vec::new()),
            ValueType::U16 => MetaArray::U16(Vec::new()),
            ValueType::I16 => MetaArray::I16(Vec::new()),
            ValueType::U32 => MetaArray::U32(Vec::new()),
            ValueType::I32 => MetaArray::I32(Vec::new()),
            ValueType::F32 => MetaArray::F32(Vec::new()),
            ValueType::Bool => MetaArray::Bool(Vec::new()),
            ValueType::String => MetaArray::String(StringArray::new()),
            ValueType::Array => MetaArray::Array(Vec::new()),
            ValueType::U64 => MetaArray::U64(Vec::new()),
            ValueType::I64 => MetaArray::I64(Vec::new()),
            ValueType::F64 => MetaArray::F64(Vec::new()),
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array(_) => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    /// `u32`, `string`, `array<string>`, ...: what error messages print.
    pub fn type_description(&self) -> String {
        match self {
            MetaValue::Array(a) => a.type_description(),
            v => v.value_type().name().to_owned(),
        }
    }

    /// Any integer value that is non-negative, widened to u64. Model
    /// dimensions are written as u32 by some converters and i32 or u64 by
    /// others; this lets a reader accept all of them.
    pub fn as_u64_lenient(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Either float type widened to f64.
    pub fn as_f64_lenient(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for MetaValue {
            fn from(x: $t) -> MetaValue { MetaValue::$v(x) }
        }
        impl From<Vec<$t>> for MetaValue {
            fn from(x: Vec<$t>) -> MetaValue { MetaValue::Array(MetaArray::$v(x)) }
        }
        impl From<Vec<$t>> for MetaArray {
            fn from(x: Vec<$t>) -> MetaArray { MetaArray::$v(x) }
        }
    )*};
}

from_scalar!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, u64 => U64, i64 => I64, f64 => F64,
);

impl From<String> for MetaValue {
    fn from(s: String) -> MetaValue {
        MetaValue::String(s)
    }
}

impl From<&str> for MetaValue {
    fn from(s: &str) -> MetaValue {
        MetaValue::String(s.to_owned())
    }
}

impl From<StringArray> for MetaValue {
    fn from(a: StringArray) -> MetaValue {
        MetaValue::Array(MetaArray::String(a))
    }
}

impl From<MetaArray> for MetaValue {
    fn from(a: MetaArray) -> MetaValue {
        MetaValue::Array(a)
    }
}

impl From<Vec<String>> for MetaValue {
    fn from(v: Vec<String>) -> MetaValue {
        MetaValue::Array(MetaArray::String(v.into_iter().collect()))
    }
}

impl From<Vec<&str>> for MetaValue {
    fn from(v: Vec<&str>) -> MetaValue {
        MetaValue::Array(MetaArray::String(v.into_iter().collect()))
    }
}

/// Arrays longer than this are shown with their head only.
const DISPLAY_ARRAY_HEAD: usize = 8;

fn fmt_list<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    write!(f, "[")?;
    for (i, x) in items.iter().take(DISPLAY_ARRAY_HEAD).enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{x:?}")?;
    }
    if items.len() > DISPLAY_ARRAY_HEAD {
        write!(f, ", ... ({} total)", items.len())?;
    }
    write!(f, "]")
}

impl fmt::Display for MetaArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaArray::U8(v) => fmt_list(f, v),
            MetaArray::I8(v) => fmt_list(f, v),
            MetaArray::U16(v) => fmt_list(f, v),
            MetaArray::I16(v) => fmt_list(f, v),
            MetaArray::U32(v) => fmt_list(f, v),
            MetaArray::I32(v) => fmt_list(f, v),
            MetaArray::F32(v) => fmt_list(f, v),
            MetaArray::Bool(v) => fmt_list(f, v),
            MetaArray::U64(v) => fmt_list(f, v),
            MetaArray::I64(v) => fmt_list(f, v),
            MetaArray::F64(v) => fmt_list(f, v),
            MetaArray::String(v) => {
                let head: Vec<&str> = v.iter().take(DISPLAY_ARRAY_HEAD + 1).collect();
                write!(f, "[")?;
                for (i, s) in head.iter().take(DISPLAY_ARRAY_HEAD).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{s:?}")?;
                }
                if v.len() > DISPLAY_ARRAY_HEAD {
                    write!(f, ", ... ({} total)", v.len())?;
                }
                write!(f, "]")
            }
            MetaArray::Array(v) => {
                write!(f, "[")?;
                for (i, a) in v.iter().take(DISPLAY_ARRAY_HEAD).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}")?;
                }
                if v.len() > DISPLAY_ARRAY_HEAD {
                    write!(f, ", ... ({} total)", v.len())?;
                }
                write!(f, "]")
            }
        }
    }
}

impl fmt::Display for MetaValue {
    /// Human-readable rendering for `--inspect`: strings quoted and escaped,
    /// long arrays shortened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(v) => write!(f, "{v:?}"),
            MetaValue::Array(a) => write!(f, "{a}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_array_keeps_boundaries() {
        let a: StringArray = ["", "ab", "é", "", "x y"].into_iter().collect();
        assert_eq!(a.len(), 5);
        assert_eq!(a.get(0), Some(""));
        assert_eq!(a.get(1), Some("ab"));
        assert_eq!(a.get(2), Some("é"));
        assert_eq!(a.get(3), Some(""));
        assert_eq!(a.get(4), Some("x y"));
        assert_eq!(a.get(5), None);
        assert_eq!(a.to_vec(), vec!["", "ab", "é", "", "x y"]);
        assert_eq!(a.total_bytes(), 2 + 2 + 3);
    }

    #[test]
    fn value_type_ids_match_gguf() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_id(t.id()), Some(t));
            assert_eq!(ValueType::from_name(t.name()), Some(t));
        }
        assert_eq!(ValueType::String.id(), 8);
        assert_eq!(ValueType::Array.id(), 9);
        assert_eq!(ValueType::F64.id(), 12);
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn display_shortens_long_arrays() {
        let v = MetaValue::from((0u32..20).collect::<Vec<_>>());
        assert_eq!(v.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, ... (20 total)]");
        assert_eq!(v.type_description(), "array<u32>");
        let nested = MetaValue::Array(MetaArray::Array(vec![MetaArray::String(
            ["a"].into_iter().collect(),
        )]));
        assert_eq!(nested.type_description(), "array<array<string>>");
        assert_eq!(nested.to_string(), "[[\"a\"]]");
    }

    #[test]
    fn lenient_integer_widening() {
        assert_eq!(MetaValue::I32(7).as_u64_lenient(), Some(7));
        assert_eq!(MetaValue::I32(-1).as_u64_lenient(), None);
        assert_eq!(MetaValue::F32(1.0).as_u64_lenient(), None);
        assert_eq!(MetaValue::F32(0.5).as_f64_lenient(), Some(0.5));
    }
}
