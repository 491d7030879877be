//! ds4 GGUF files: the config from `deepseek4.*` metadata, tensors served straight
//! from the mmap, and the writer side a converter needs (metadata + the name table).

use std::path::Path;
use std::sync::Arc;

use ds4_gguf::{GgmlType, GgufBuilder, GgufFile, MetaArray};

use crate::config::{MetaValue, ModelConfig};
use crate::error::{EngineError, Result};
use crate::names::{gguf_expert_to_official, gguf_to_official};
use crate::weights::{ByteOwner, Bytes, Tensor, TensorData, WeightSource};

fn convert_value(v: &ds4_gguf::MetaValue) -> MetaValue {
    use ds4_gguf::MetaValue as G;
    match v {
        G::U8(x) => MetaValue::U32(*x as u32),
        G::U16(x) => MetaValue::U32(*x as u32),
        G::U32(x) => MetaValue::U32(*x),
        G::I8(x) => MetaValue::I32(*x as i32),
        G::I16(x) => MetaValue::I32(*x as i32),
        G::I32(x) => MetaValue::I32(*x),
        G::U64(x) => MetaValue::U64(*x),
        // Only negative-capable integer keys reach here; keep the sign for errors.
        G::I64(x) => MetaValue::F64(*x as f64),
        G::F32(x) => MetaValue::F32(*x),
        G::F64(x) => MetaValue::F64(*x),
        G::Bool(x) => MetaValue::Bool(*x),
        G::String(s) => MetaValue::Str(s.clone()),
        G::Array(a) => MetaValue::Array(convert_array(a)),
    }
}

fn convert_array(a: &MetaArray) -> Vec<MetaValue> {
    match a {
        MetaArray::U8(v) => v.iter().map(|&x| MetaValue::U32(x as u32)).collect(),
        MetaArray::U16(v) => v.iter().map(|&x| MetaValue::U32(x as u32)).collect(),
        MetaArray::U32(v) => v.iter().map(|&x| MetaValue::U32(x)).collect(),
        MetaArray::I8(v) => v.iter().map(|&x| MetaValue::I32(x as i32)).collect(),
        MetaArray::I16(v) => v.iter().map(|&x| MetaValue::I32(x as i32)).collect(),
        MetaArray::I32(v) => v.iter().map(|&x| MetaValue::I32(x)).collect(),
        MetaArray::U64(v) => v.iter().map(|&x| MetaValue::U64(x)).collect(),
        MetaArray::I64(v) => v.iter().map(|&x| MetaValue::F64(x as f64)).collect(),
        MetaArray::F32(v) => v.iter().map(|&x| MetaValue::F32(x)).collect(),
        MetaArray::F64(v) => v.iter().map(|&x| MetaValue::F64(x)).collect(),
        MetaArray::Bool(v) => v.iter().map(|&x| MetaValue::Bool(x)).collect(),
        // String arrays (the tokenizer's) are not config.
        MetaArray::String(_) => Vec::new(),
        MetaArray::Array(v) => v
            .iter()
            .map(|a| MetaValue::Array(convert_array(a)))
            .collect(),
    }
}

fn to_gguf_value(v: &MetaValue) -> ds4_gguf::MetaValue {
    use ds4_gguf::MetaValue as G;
    match v {
        MetaValue::U32(x) => G::U32(*x),
        MetaValue::I32(x) => G::I32(*x),
        MetaValue::U64(x) => G::U64(*x),
        MetaValue::F32(x) => G::F32(*x),
        MetaValue::F64(x) => G::F64(*x),
        MetaValue::Bool(x) => G::Bool(*x),
        MetaValue::Str(s) => G::String(s.clone()),
        MetaValue::Array(a) => {
            // Config arrays are homogeneous: per-layer u32 ratios or f32 clamps.
            if a.iter().all(|x| matches!(x, MetaValue::U32(_))) {
                G::Array(MetaArray::U32(
                    a.iter()
                        .filter_map(|x| {
                            if let MetaValue::U32(v) = x {
                                Some(*v)
                            } else {
                                None
                            }
                        })
                        .collect(),
                ))
            } else {
                G::Array(MetaArray::F32(
                    a.iter()
                        .filter_map(|x| match x {
                            MetaValue::F32(v) => Some(*v),
                            MetaValue::F64(v) => Some(*v as f32),
                            _ => None,
                        })
                        .collect(),
                ))
            }
        }
    }
}

/// A ds4 GGUF file as a [`WeightSource`]: quantized tensors stay in the mmap.
pub struct GgufSource {
    file: Arc<GgufFile>,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<(ModelConfig, Self)> {
        let file = GgufFile::open(path)?;
        Self::from_file(file)
    }

    pub fn from_file(file: GgufFile) -> Result<(ModelConfig, Self)> {
        let cfg = ModelConfig::from_metadata(|k| file.get(k).map(convert_value))?;
        Ok((
            cfg,
            GgufSource {
                file: Arc::new(file),
            },
        ))
    }
}

impl WeightSource for GgufSource {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let data = match info.ty {
            GgmlType::I32 => TensorData::I32(self.file.tensor_i32(info)?.to_vec()),
            GgmlType::F32 => TensorData::F32(self.file.tensor_f32(info)?.to_vec()),
            ty => {
                let start = self.file.tensor_file_offset(info) as usize;
                let owner: Arc<dyn ByteOwner> = self.file.clone();
                let bytes = Bytes::new(owner, start, info.n_bytes as usize).ok_or_else(|| {
                    EngineError::TensorData {
                        name: name.into(),
                        msg: "data range outside the file".into(),
                    }
                })?;
                TensorData::Blocks { ty, bytes }
            }
        };
        Ok(Some(Tensor { shape, data }))
    }
}

/// Writes a model as a ds4 GGUF: `deepseek4.*` metadata from `cfg` and every tensor
/// `src` provides under the ds4 names (the binding list of [`crate::Weights::bind`]).
/// `recipe` picks each 2-D/3-D weight's type from its GGUF name; vectors stay F32.
pub fn build_gguf(
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    recipe: &dyn Fn(&str) -> GgmlType,
) -> Result<GgufBuilder> {
    let mut b = GgufBuilder::new();
    b.add_meta("general.architecture", "deepseek4")?;
    for (k, v) in cfg.to_metadata() {
        b.add_meta(k, to_gguf_value(&v))?;
    }
    let mut names: Vec<String> = crate::names::GLOBAL_NAMES
        .iter()
        .map(|(_, g)| g.to_string())
        .collect();
    for l in 0..cfg.n_layer {
        for (_, g) in crate::names::LAYER_NAMES {
            names.push(format!("blk.{l}.{g}"));
        }
        for (_, g) in crate::names::EXPERT_NAMES {
            names.push(format!("blk.{l}.{g}"));
        }
    }
    for name in names {
        debug_assert!(
            gguf_to_official(&name).is_some() || gguf_expert_to_official(&name, 0).is_some()
        );
        let Some(t) = src.tensor(&name)? else {
            continue;
        };
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let row = t.shape.last().copied().unwrap_or(1);
        match t.data {
            TensorData::I32(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                b.add_tensor(name, &dims, GgmlType::I32, bytes)?;
            }
            TensorData::F32(v) => {
                let ty = if t.shape.len() >= 2 {
                    recipe(&name)
                } else {
                    GgmlType::F32
                };
                let bytes = if ty == GgmlType::F32 {
                    v.iter().flat_map(|x| x.to_le_bytes()).collect()
                } else {
                    ds4_quant::quantize(ty, &v, row, None)?
                };
                b.add_tensor(name, &dims, ty, bytes)?;
            }
            TensorData::Blocks { ty, bytes } => {
                b.add_tensor(name, &dims, ty, bytes.as_slice().to_vec())?;
            }
        }
    }
    Ok(b)
}
