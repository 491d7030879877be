//! GGUF v3 reader: parses the header (metadata and tensor infos) into owned
//! values, validates the tensor layout against the file size, and serves
//! tensor data as slices of the memory map without copying.
//!
//! File layout (little endian):
//! `"GGUF" u32 version, u64 n_tensors, u64 n_kv, n_kv × (string key, u32 type, value),
//!  n_tensors × (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset),
//!  padding to general.alignment, tensor data`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{MetaArray, MetaValue, StringArray, ValueType};
use crate::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_ARRAY_DEPTH, MAX_DIMS,
};

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length (`ne[0]`), the last
    /// entry varies slowest. The reverse of the numpy/PyTorch shape.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section, exactly
    /// as stored in the file. The absolute file offset is
    /// [`GgufFile::data_offset`] + `offset` (see [`GgufFile::tensor_file_offset`]).
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of rows (`n_elements / dims[0]`), each `row_bytes()` long.
    pub fn n_rows(&self) -> u64 {
        match self.dims.first() {
            Some(&d0) if d0 > 0 => self.n_elements / d0,
            _ => 0,
        }
    }

    /// Bytes of one row of `dims[0]` elements.
    pub fn row_bytes(&self) -> u64 {
        let d0 = self.dims.first().copied().unwrap_or(0);
        self.ty.bytes_for(d0).unwrap_or(0)
    }
}

/// Element and byte counts for a tensor shape, with every check the format
/// needs: 1..=8 dims, no overflow, rows made of whole blocks.
pub(crate) fn tensor_geometry(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64)> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
        });
    }
    let overflow = || GgufError::DimOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let mut n: u64 = 1;
    for &d in dims {
        n = n.checked_mul(d).ok_or_else(overflow)?;
    }
    // ggml stores element counts as int64_t.
    if n > i64::MAX as u64 {
        return Err(overflow());
    }
    // Quantized rows are made of whole blocks: a block never straddles two
    // rows, so checking only the total element count is not enough.
    let block = ty.block_size();
    if !dims[0].is_multiple_of(block as u64) {
        return Err(GgufError::NotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            dims: dims.to_vec(),
            row: dims[0],
            block,
        });
    }
    let bytes = ty.bytes_for(n).ok_or_else(overflow)?;
    Ok((n, bytes))
}

pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Ordered metadata with a key index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

fn missing(key: &str) -> GgufError {
    GgufError::MissingKey {
        key: key.to_owned(),
    }
}

fn wrong_type(key: &str, expected: &str, found: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: found.type_description(),
    }
}

/// Typed getters, shared by [`Metadata`] and [`GgufFile`] (both have `get`).
/// `get_X` fails when the key is missing or has another type; `get_X_opt`
/// returns `Ok(None)` for a missing key and still fails on a wrong type.
macro_rules! typed_getters {
    () => {
        typed_getters!(@scalar
            get_u8, get_u8_opt, U8, u8;
            get_i8, get_i8_opt, I8, i8;
            get_u16, get_u16_opt, U16, u16;
            get_i16, get_i16_opt, I16, i16;
            get_u32, get_u32_opt, U32, u32;
            get_i32, get_i32_opt, I32, i32;
            get_f32, get_f32_opt, F32, f32;
            get_bool, get_bool_opt, Bool, bool;
            get_u64, get_u64_opt, U64, u64;
            get_i64, get_i64_opt, I64, i64;
            get_f64, get_f64_opt, F64, f64
        );
        typed_getters!(@array
            get_u8_array, U8, u8;
            get_i8_array, I8, i8;
            get_u16_array, U16, u16;
            get_i16_array, I16, i16;
            get_u32_array, U32, u32;
            get_i32_array, I32, i32;
            get_f32_array, F32, f32;
            get_bool_array, Bool, bool;
            get_u64_array, U64, u64;
            get_i64_array, I64, i64;
            get_f64_array, F64, f64
        );

        pub fn get_str(&self, key: &str) -> Result<&str> {
            self.get_str_opt(key)?.ok_or_else(|| missing(key))
        }

        pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
            match self.get(key) {
                None => Ok(None),
                Some(MetaValue::String(s)) => Ok(Some(s)),
                Some(v) => Err(wrong_type(key, "string", v)),
            }
        }

        pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
            match self.get(key) {
                None => Err(missing(key)),
                Some(MetaValue::Array(a)) => Ok(a),
                Some(v) => Err(wrong_type(key, "array", v)),
            }
        }

        pub fn get_str_array(&self, key: &str) -> Result<&StringArray> {
            match self.get(key) {
                None => Err(missing(key)),
                Some(MetaValue::Array(MetaArray::String(a))) => Ok(a),
                Some(v) => Err(wrong_type(key, "array<string>", v)),
            }
        }

        /// Any integer type holding a non-negative value, as u64.
        pub fn get_uint(&self, key: &str) -> Result<u64> {
            let v = self.get(key).ok_or_else(|| missing(key))?;
            match v.as_u64_lenient() {
                Some(x) => Ok(x),
                None if matches!(
                    v,
                    MetaValue::I8(_) | MetaValue::I16(_) | MetaValue::I32(_) | MetaValue::I64(_)
                ) => Err(GgufError::ValueOutOfRange {
                    key: key.to_owned(),
                    value: v.to_string(),
                    target: "an unsigned integer",
                }),
                None => Err(wrong_type(key, "integer", v)),
            }
        }

        /// `f32` or `f64`, as f64.
        pub fn get_float(&self, key: &str) -> Result<f64> {
            let v = self.get(key).ok_or_else(|| missing(key))?;
            v.as_f64_lenient()
                .ok_or_else(|| wrong_type(key, "f32 or f64", v))
        }
    };
    (@scalar $($get:ident, $opt:ident, $variant:ident, $t:ty);*) => {$(
        pub fn $get(&self, key: &str) -> Result<$t> {
            self.$opt(key)?.ok_or_else(|| missing(key))
        }

        pub fn $opt(&self, key: &str) -> Result<Option<$t>> {
            match self.get(key) {
                None => Ok(None),
                Some(MetaValue::$variant(v)) => Ok(Some(*v)),
                Some(v) => Err(wrong_type(key, ValueType::$variant.name(), v)),
            }
        }
    )*};
    (@array $($get:ident, $variant:ident, $t:ty);*) => {$(
        pub fn $get(&self, key: &str) -> Result<&[$t]> {
            match self.get(key) {
                None => Err(missing(key)),
                Some(MetaValue::Array(MetaArray::$variant(v))) => Ok(v),
                Some(v) => Err(wrong_type(
                    key,
                    concat!("array<", stringify!($t), ">"),
                    v,
                )),
            }
        }
    )*};
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Appends a key; fails on a duplicate, which the format forbids.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<MetaValue>) -> Result<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Replaces the value of an existing key in place (keeping its position)
    /// or appends it.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<MetaValue>) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value.into(),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value.into()));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in file order.
    pub fn entries(&self) -> &[(String, MetaValue)] {
        &self.entries
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &MetaValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    typed_getters!();
}

enum Storage {
    Mmap(Mmap),
    /// Backed by u64 words so typed views of up to 8-byte elements can be
    /// aligned, as they are in a page-aligned mmap.
    Owned {
        words: Vec<u64>,
        len: usize,
    },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
    }
}

/// A parsed GGUF file whose tensor data stays in the file mapping (or in an
/// owned buffer for [`GgufFile::from_bytes`]).
pub struct GgufFile {
    storage: Storage,
    path: Option<PathBuf>,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("file_len", &self.file_len())
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

struct Header {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Memory-maps and parses `path`. The header is parsed into owned values;
    /// tensor data is not touched until a view of it is read.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let open_err = |source| GgufError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        // SAFETY: the mapping is read-only and private to this process. If
        // another process truncates or rewrites the file while it is mapped,
        // reads may fault or see changed bytes; that is the standing contract
        // of every mmap-based model loader (ds4, llama.cpp) and is documented
        // on this type.
        let map = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        let header = parse_header(&map)?;
        Ok(GgufFile::assemble(
            Storage::Mmap(map),
            Some(path.to_owned()),
            header,
        ))
    }

    /// Parses a file held in memory. The bytes are copied into an 8-byte
    /// aligned buffer so that typed views behave as with [`GgufFile::open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile> {
        let header = parse_header(bytes)?;
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let storage = Storage::Owned {
            words,
            len: bytes.len(),
        };
        Ok(GgufFile::assemble(storage, None, header))
    }

    fn assemble(storage: Storage, path: Option<PathBuf>, h: Header) -> GgufFile {
        GgufFile {
            storage,
            path,
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            tensor_index: h.tensor_index,
            alignment: h.alignment,
            data_offset: h.data_offset,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The memory map, for `madvise` or registering the mapping with a GPU
    /// driver; `None` for a file parsed with [`GgufFile::from_bytes`].
    pub fn mmap(&self) -> Option<&Mmap> {
        match &self.storage {
            Storage::Mmap(m) => Some(m),
            Storage::Owned { .. } => None,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    typed_getters!();

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Like [`GgufFile::tensor`] but with an error naming the tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| GgufError::TensorNotFound {
            name: name.to_owned(),
        })
    }

    /// Absolute file offset of a tensor's first byte.
    pub fn tensor_file_offset(&self, t: &TensorInfo) -> u64 {
        self.data_offset.saturating_add(t.offset)
    }

    /// The tensor's bytes, straight from the mapping. `t` must come from this
    /// file (its range was validated at open); for a foreign `TensorInfo` whose
    /// range does not fit, the slice is empty rather than a panic.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        match (usize::try_from(start), usize::try_from(end)) {
            (Ok(s), Ok(e)) => self.storage.bytes().get(s..e).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Bytes of the named tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        Ok(self.tensor_data(self.require_tensor(name)?))
    }

    fn typed_view<T: Pod>(&self, t: &TensorInfo, want: GgmlType) -> Result<&[T]> {
        if t.ty != want {
            return Err(GgufError::ViewTypeMismatch {
                tensor: t.name.clone(),
                found: t.ty,
                requested: want,
            });
        }
        bytemuck::try_cast_slice(self.tensor_data(t)).map_err(|_| GgufError::ViewMisaligned {
            tensor: t.name.clone(),
            offset: self.tensor_file_offset(t),
            requested: want,
        })
    }

    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<&[f32]> {
        self.typed_view(t, GgmlType::F32)
    }

    pub fn tensor_f16(&self, t: &TensorInfo) -> Result<&[half::f16]> {
        self.typed_view(t, GgmlType::F16)
    }

    pub fn tensor_bf16(&self, t: &TensorInfo) -> Result<&[half::bf16]> {
        self.typed_view(t, GgmlType::Bf16)
    }

    pub fn tensor_f64(&self, t: &TensorInfo) -> Result<&[f64]> {
        self.typed_view(t, GgmlType::F64)
    }

    pub fn tensor_i8(&self, t: &TensorInfo) -> Result<&[i8]> {
        self.typed_view(t, GgmlType::I8)
    }

    pub fn tensor_i16(&self, t: &TensorInfo) -> Result<&[i16]> {
        self.typed_view(t, GgmlType::I16)
    }

    pub fn tensor_i32(&self, t: &TensorInfo) -> Result<&[i32]> {
        self.typed_view(t, GgmlType::I32)
    }

    pub fn tensor_i64(&self, t: &TensorInfo) -> Result<&[i64]> {
        self.typed_view(t, GgmlType::I64)
    }
}

/// Bounds-checked little-endian reads. `what` closures build the error
/// context only on failure, so the 250k-string vocabulary path allocates
/// nothing for messages.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    #[inline]
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    #[inline]
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count and rejects it unless `count` entries of at least
    /// `min_entry` bytes fit in what is left, so a forged count can never
    /// drive a huge allocation.
    fn count(&mut self, min_entry: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        let fits = count
            .checked_mul(min_entry as u64)
            .is_some_and(|b| b <= self.remaining() as u64);
        if !fits {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                min_entry_bytes: min_entry as u64,
                offset,
                remaining: self.remaining() as u64,
            });
        }
        // Fits in the remaining bytes, hence in usize.
        Ok(count as usize)
    }

    #[inline]
    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str> {
        let len = self.u64(what)?;
        let data_offset = self.pos;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: data_offset as u64,
        })
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType> {
        let offset = self.pos as u64;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            what: what(),
            type_id: id,
            offset,
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Result<bool> {
        let offset = self.pos as u64;
        match self.take(1, what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool {
                what: what(),
                offset,
                value,
            }),
        }
    }

    fn value(
        &mut self,
        ty: ValueType,
        what: &dyn Fn() -> String,
        depth: usize,
    ) -> Result<MetaValue> {
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.take(1, what)?[0]),
            ValueType::I8 => MetaValue::I8(self.take(1, what)?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetaValue::U32(self.u32(what)?),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => MetaValue::Bool(self.bool(what)?),
            ValueType::String => MetaValue::String(self.str(what)?.to_owned()),
            ValueType::Array => MetaValue::Array(self.meta_array(what, depth)?),
            ValueType::U64 => MetaValue::U64(self.u64(what)?),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }

    /// `n` fixed-size elements decoded with `f`; the count was already
    /// checked against the remaining bytes.
    fn fixed<const N: usize, T>(
        &mut self,
        n: usize,
        what: &dyn Fn() -> String,
        f: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bytes = self.take(n * N, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }

    fn meta_array(&mut self, what: &dyn Fn() -> String, depth: usize) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep {
                what: format!("{} at offset {}", what(), self.pos),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let elem = self.value_type(&|| format!("element type of {}", what()))?;
        let n = self.count(elem.min_size(), &|| format!("length of {}", what()))?;
        Ok(match elem {
            ValueType::U8 => MetaArray::U8(self.take(n, what)?.to_vec()),
            ValueType::I8 => MetaArray::I8(self.fixed(n, what, |a: [u8; 1]| a[0] as i8)?),
            ValueType::U16 => MetaArray::U16(self.fixed(n, what, u16::from_le_bytes)?),
            ValueType::I16 => MetaArray::I16(self.fixed(n, what, i16::from_le_bytes)?),
            ValueType::U32 => MetaArray::U32(self.fixed(n, what, u32::from_le_bytes)?),
            ValueType::I32 => MetaArray::I32(self.fixed(n, what, i32::from_le_bytes)?),
            ValueType::F32 => MetaArray::F32(self.fixed(n, what, f32::from_le_bytes)?),
            ValueType::U64 => MetaArray::U64(self.fixed(n, what, u64::from_le_bytes)?),
            ValueType::I64 => MetaArray::I64(self.fixed(n, what, i64::from_le_bytes)?),
            ValueType::F64 => MetaArray::F64(self.fixed(n, what, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.bool(&|| format!("element {i} of {}", what()))?);
                }
                MetaArray::Bool(v)
            }
            ValueType::String => {
                // Each string is at least its 8-byte length, so the text is
                // at most what remains after the lengths. Checking UTF-8 per
                // string is what this loop spends most of its time on; one
                // whole-buffer check measured no faster.
                let text_bound = self.remaining() - n * 8;
                let mut a = StringArray::with_capacity(n, text_bound.min(n.saturating_mul(16)));
                for i in 0..n {
                    a.push(self.str(&|| format!("element {i} of {}", what()))?);
                }
                MetaArray::String(a)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.meta_array(&|| format!("element {i} of {}", what()), depth + 1)?);
                }
                MetaArray::Array(v)
            }
        })
    }
}

/// Smallest tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;
/// Smallest key/value record: key length, value type, a one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;

fn parse_header(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".to_owned())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".to_owned())?;
    if version != GGUF_VERSION {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors = c.count(MIN_TENSOR_INFO_BYTES, &|| "tensor count".to_owned())?;
    let n_kv = c.count(MIN_KV_BYTES, &|| "metadata key/value count".to_owned())?;

    let mut metadata = Metadata::new();
    metadata.entries.reserve(n_kv);
    for i in 0..n_kv {
        let key = c.str(&|| format!("name of metadata key #{i}"))?;
        let ty = c.value_type(&|| format!("type of metadata key \"{key}\""))?;
        let value = c.value(ty, &|| format!("value of metadata key \"{key}\""), 0)?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) => {
            let a = u64::from(*a);
            if !a.is_power_of_two() {
                return Err(GgufError::BadAlignment { value: a });
            }
            a
        }
        Some(v) => return Err(wrong_type(ALIGNMENT_KEY, "u32", v)),
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.str(&|| format!("name of tensor info #{i}"))?;
        let n_dims = c.u32(&|| format!("dimension count of tensor \"{name}\""))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name.to_owned(),
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor \"{name}\""))?);
        }
        let type_id = c.u32(&|| format!("type of tensor \"{name}\""))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.to_owned(),
            type_id,
        })?;
        let offset = c.u64(&|| format!("data offset of tensor \"{name}\""))?;
        let (n_elements, n_bytes) = tensor_geometry(name, &dims, ty)?;
        if tensor_index.insert(name.to_owned(), i).is_some() {
            return Err(GgufError::DuplicateTensor {
                tensor: name.to_owned(),
            });
        }
        tensors.push(TensorInfo {
            name: name.to_owned(),
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    let file_len = buf.len() as u64;
    // The data section starts at the next alignment boundary even when the
    // file ends sooner (a file with no tensor data may omit the padding).
    let data_offset = align_up(c.pos as u64, alignment).unwrap_or(u64::MAX);
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
    }

    // All ends are now within the file, so these sums cannot overflow.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.n_bytes));
    for w in by_offset.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                first_offset: a.offset,
                first_bytes: a.n_bytes,
                second: b.name.clone(),
                second_offset: b.offset,
            });
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}
