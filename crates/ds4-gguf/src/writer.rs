//! GGUF v3 writers.
//!
//! [`HeaderBuilder`] collects metadata and tensor declarations (name, dims,
//! type) and lays out the file: tensors are placed in declaration order, each
//! starting at a multiple of the alignment, as llama.cpp's writer does.
//! [`GgufStreamWriter`] writes that header and then takes each tensor's bytes
//! in order, in chunks of any size, so an 87 GB file never sits in memory.
//! [`GgufBuilder`] is the in-memory convenience for small files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::reader::{GgufFile, Metadata, TensorInfo, align_up, tensor_geometry};
use crate::types::GgmlType;
use crate::value::{MetaArray, MetaValue};
use crate::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_ARRAY_DEPTH};

/// Metadata plus tensor declarations, in file order.
#[derive(Clone, Debug, Default)]
pub struct HeaderBuilder {
    metadata: Metadata,
    /// Offsets are assigned by [`HeaderBuilder::layout`].
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
}

/// A laid-out header: the exact bytes up to the start of tensor data
/// (padding included) and every tensor's final offset.
#[derive(Clone, Debug)]
pub struct Layout {
    pub header: Vec<u8>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section (= `header.len()`).
    pub data_offset: u64,
    /// Total size of the finished file.
    pub file_len: u64,
}

fn array_depth(a: &MetaArray) -> usize {
    match a {
        MetaArray::Array(v) => 1 + v.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

impl HeaderBuilder {
    pub fn new() -> HeaderBuilder {
        HeaderBuilder::default()
    }

    /// Appends a metadata key. Duplicates are rejected; `general.alignment`
    /// must be a u32 power of two because readers derive the layout from it.
    pub fn add_meta(&mut self, key: impl Into<String>, value: impl Into<MetaValue>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if key == ALIGNMENT_KEY {
            check_alignment_value(&value)?;
        }
        if let MetaValue::Array(a) = &value
            && array_depth(a) > MAX_ARRAY_DEPTH
        {
            return Err(GgufError::ArrayTooDeep {
                what: format!("value of metadata key \"{key}\""),
                max: MAX_ARRAY_DEPTH,
            });
        }
        self.metadata.insert(key, value)
    }

    /// Sets `general.alignment` (replacing an earlier value in place).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        let value = MetaValue::U32(alignment);
        check_alignment_value(&value)?;
        self.metadata.set(ALIGNMENT_KEY, value);
        Ok(())
    }

    pub fn alignment(&self) -> u64 {
        match self.metadata.get(ALIGNMENT_KEY) {
            Some(MetaValue::U32(a)) => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Declares a tensor; `dims` in ggml order (`dims[0]` = row length).
    /// Returns its info (offset still 0: offsets come from [`Self::layout`]).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<&TensorInfo> {
        let name = name.into();
        let (n_elements, n_bytes) = tensor_geometry(&name, dims, ty)?;
        if self.names.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        self.names.insert(name.clone(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_elements,
            n_bytes,
        });
        Ok(&self.tensors[self.tensors.len() - 1])
    }

    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// Serializes the header and assigns tensor offsets.
    pub fn layout(&self) -> Result<Layout> {
        let alignment = self.alignment();
        let mut h = Vec::with_capacity(4096);
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.entries() {
            put_str(&mut h, key);
            h.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut h, value);
        }
        let mut tensors = self.tensors.clone();
        let mut offset = 0u64;
        let too_big = |t: &TensorInfo| GgufError::DimOverflow {
            tensor: t.name.clone(),
            dims: t.dims.clone(),
        };
        for t in &mut tensors {
            t.offset = offset;
            offset = offset
                .checked_add(t.n_bytes)
                .and_then(|e| align_up(e, alignment))
                .ok_or_else(|| too_big(t))?;
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        let data_offset = align_up(h.len() as u64, alignment)
            .ok_or(GgufError::BadAlignment { value: alignment })?;
        h.resize(data_offset as usize, 0);
        let file_len = data_offset
            .checked_add(offset)
            .ok_or_else(|| GgufError::DimOverflow {
                tensor: "<total>".to_owned(),
                dims: vec![offset],
            })?;
        Ok(Layout {
            header: h,
            tensors,
            alignment,
            data_offset,
            file_len,
        })
    }
}

fn check_alignment_value(v: &MetaValue) -> Result<()> {
    match v {
        MetaValue::U32(a) if a.is_power_of_two() => Ok(()),
        MetaValue::U32(a) => Err(GgufError::BadAlignment {
            value: u64::from(*a),
        }),
        other => Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "u32".to_owned(),
            found: other.type_description(),
        }),
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => h.push(*x),
        MetaValue::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => h.push(u8::from(*x)),
        MetaValue::String(s) => put_str(h, s),
        MetaValue::Array(a) => put_array(h, a),
        MetaValue::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(h: &mut Vec<u8>, a: &MetaArray) {
    h.extend_from_slice(&a.elem_type().id().to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => h.extend_from_slice(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::Bool(v) => h.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => {
            for s in v.iter() {
                put_str(h, s);
            }
        }
        // Nested arrays carry their own element type and length.
        MetaArray::Array(v) => {
            for inner in v {
                put_array(h, inner);
            }
        }
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F64(v) => each!(v),
    }
}

const ZEROS: [u8; 256] = [0; 256];

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Writes a GGUF file front to back: the header at construction, then each
/// declared tensor's data in declaration order.
///
/// ```no_run
/// # fn main() -> Result<(), ds4_gguf::GgufError> {
/// use ds4_gguf::{GgmlType, GgufStreamWriter, HeaderBuilder};
/// let mut h = HeaderBuilder::new();
/// h.add_meta("general.architecture", "deepseek4")?;
/// h.add_tensor("a", &[64, 2], GgmlType::Q8_0)?;
/// let mut w = GgufStreamWriter::create("out.gguf", &h)?;
/// w.begin_tensor("a")?;
/// w.write_chunk(&[0u8; 68])?; // any number of chunks
/// w.write_chunk(&[0u8; 68])?;
/// w.end_tensor()?;
/// w.finish()?;
/// # Ok(()) }
/// ```
pub struct GgufStreamWriter<W: Write> {
    w: W,
    layout_tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    /// Index of the next tensor to begin.
    next: usize,
    /// Tensor being written and bytes written to it so far.
    current: Option<(usize, u64)>,
}

impl GgufStreamWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: impl AsRef<Path>, header: &HeaderBuilder) -> Result<Self> {
        let path = path.as_ref();
        let f = File::create(path).map_err(|source| GgufError::Open {
            path: path.to_owned(),
            source,
        })?;
        GgufStreamWriter::new(BufWriter::with_capacity(1 << 20, f), header)
    }
}

impl<W: Write> GgufStreamWriter<W> {
    /// Writes the header to `w`. Wrap files in a `BufWriter`: header fields
    /// and padding are written in small pieces.
    pub fn new(mut w: W, header: &HeaderBuilder) -> Result<Self> {
        let layout = header.layout()?;
        w.write_all(&layout.header)?;
        Ok(GgufStreamWriter {
            w,
            layout_tensors: layout.tensors,
            alignment: layout.alignment,
            data_offset: layout.data_offset,
            next: 0,
            current: None,
        })
    }

    /// Tensor infos with their final offsets.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.layout_tensors
    }

    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The tensor [`Self::begin_tensor`] expects next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.layout_tensors.get(self.next)
    }

    /// Starts the data of `name`, which must be the next declared tensor:
    /// offsets were fixed by the header, so the order cannot change.
    pub fn begin_tensor(&mut self, name: &str) -> Result<()> {
        if let Some((i, written)) = self.current {
            let t = &self.layout_tensors[i];
            return Err(GgufError::TensorIncomplete {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                missing: t.n_bytes - written,
            });
        }
        match self.layout_tensors.get(self.next) {
            None => Err(GgufError::UnexpectedTensor {
                got: name.to_owned(),
            }),
            Some(t) if t.name != name => Err(GgufError::TensorOutOfOrder {
                expected: t.name.clone(),
                got: name.to_owned(),
            }),
            Some(_) => {
                self.current = Some((self.next, 0));
                self.next += 1;
                Ok(())
            }
        }
    }

    /// Appends bytes to the current tensor; fails (writing nothing) if they
    /// would exceed its declared size.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let Some((i, written)) = self.current else {
            return Err(GgufError::NoTensorStarted);
        };
        let t = &self.layout_tensors[i];
        let total = written + bytes.len() as u64;
        if total > t.n_bytes {
            return Err(GgufError::TensorSizeMismatch {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                got: total,
            });
        }
        self.w.write_all(bytes)?;
        self.current = Some((i, total));
        Ok(())
    }

    /// Closes the current tensor (which must be complete) and pads to the
    /// alignment.
    pub fn end_tensor(&mut self) -> Result<()> {
        let Some((i, written)) = self.current else {
            return Err(GgufError::NoTensorStarted);
        };
        let t = &self.layout_tensors[i];
        if written != t.n_bytes {
            return Err(GgufError::TensorIncomplete {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                missing: t.n_bytes - written,
            });
        }
        // Declared sizes were checked for overflow when laying out.
        let padded = align_up(t.n_bytes, self.alignment).unwrap_or(t.n_bytes);
        write_zeros(&mut self.w, padded - t.n_bytes)?;
        self.current = None;
        Ok(())
    }

    /// `begin_tensor` + one `write_chunk` + `end_tensor`.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.begin_tensor(name)?;
        let t = &self.layout_tensors[self.next - 1];
        if bytes.len() as u64 != t.n_bytes {
            return Err(GgufError::TensorSizeMismatch {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                got: bytes.len() as u64,
            });
        }
        self.write_chunk(bytes)?;
        self.end_tensor()
    }

    /// Checks every declared tensor was written, flushes, and returns the
    /// writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some((i, written)) = self.current {
            let t = &self.layout_tensors[i];
            return Err(GgufError::TensorIncomplete {
                tensor: t.name.clone(),
                declared: t.n_bytes,
                missing: t.n_bytes - written,
            });
        }
        if let Some(t) = self.layout_tensors.get(self.next) {
            return Err(GgufError::MissingTensors {
                count: self.layout_tensors.len() - self.next,
                first: t.name.clone(),
            });
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Builds a whole GGUF file in memory: metadata in order, tensors with their
/// bytes.
#[derive(Clone, Debug, Default)]
pub struct GgufBuilder {
    header: HeaderBuilder,
    data: Vec<Vec<u8>>,
}

impl GgufBuilder {
    pub fn new() -> GgufBuilder {
        GgufBuilder::default()
    }

    /// A builder holding a copy of `file`'s metadata and tensors (in file
    /// order), to rewrite it with changes. Copies all tensor data into memory:
    /// for big files use [`HeaderBuilder`] and [`GgufStreamWriter`] instead.
    pub fn from_file(file: &GgufFile) -> Result<GgufBuilder> {
        let mut b = GgufBuilder::new();
        for (k, v) in file.metadata().iter() {
            b.add_meta(k, v.clone())?;
        }
        for t in file.tensors() {
            b.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())?;
        }
        Ok(b)
    }

    pub fn add_meta(&mut self, key: impl Into<String>, value: impl Into<MetaValue>) -> Result<()> {
        self.header.add_meta(key, value)
    }

    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        self.header.set_alignment(alignment)
    }

    /// Adds a tensor; `bytes` must be exactly the size its shape and type
    /// imply.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<()> {
        let name = name.into();
        let bytes = bytes.into();
        let (_, n_bytes) = tensor_geometry(&name, dims, ty)?;
        if n_bytes != bytes.len() as u64 {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name,
                declared: n_bytes,
                got: bytes.len() as u64,
            });
        }
        self.header.add_tensor(name, dims, ty)?;
        self.data.push(bytes);
        Ok(())
    }

    pub fn header(&self) -> &HeaderBuilder {
        &self.header
    }

    pub fn write_to<W: Write>(&self, w: W) -> Result<W> {
        let mut sw = GgufStreamWriter::new(w, &self.header)?;
        for (t, bytes) in self.header.tensors.iter().zip(&self.data) {
            sw.write_tensor(&t.name, bytes)?;
        }
        sw.finish()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.write_to(Vec::new())
    }

    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let f = File::create(path).map_err(|source| GgufError::Open {
            path: path.to_owned(),
            source,
        })?;
        self.write_to(BufWriter::new(f))?
            .into_inner()
            .map_err(|e| GgufError::Io(e.into_error()))?;
        Ok(())
    }
}
