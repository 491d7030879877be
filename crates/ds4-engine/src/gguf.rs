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

/// `cfg` as GGUF metadata values (`deepseek4.*` keys).
pub fn config_metadata(cfg: &ModelConfig) -> Vec<(String, ds4_gguf::MetaValue)> {
    cfg.to_metadata()
        .into_iter()
        .map(|(k, v)| (k, to_gguf_value(&v)))
        .collect()
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

    pub fn file(&self) -> &GgufFile {
        &self.file
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
    for (k, v) in config_metadata(cfg) {
        b.add_meta(k, v)?;
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

/// Allowed types of a tensor in the published V4 Flash GGUFs (spec §2.2), by the
/// name after `blk.N.` (or the global name). `None` for names ds4 does not bind.
fn flash_allowed(sub: &str) -> Option<&'static [GgmlType]> {
    use GgmlType::*;
    Some(match sub {
        "token_embd.weight" | "output_hc_fn.weight" => &[F16],
        "output.weight" => &[Q8_0],
        "output_hc_scale.weight" | "output_hc_base.weight" | "output_norm.weight" => &[F32],
        "hc_attn_fn.weight" | "hc_ffn_fn.weight" => &[F16],
        "hc_attn_scale.weight"
        | "hc_attn_base.weight"
        | "hc_ffn_scale.weight"
        | "hc_ffn_base.weight" => &[F32],
        "attn_norm.weight"
        | "attn_q_a_norm.weight"
        | "attn_kv_a_norm.weight"
        | "attn_sinks.weight" => &[F32],
        "ffn_norm.weight" | "exp_probs_b.bias" => &[F32],
        "attn_compressor_norm.weight" | "indexer_compressor_norm.weight" => &[F32],
        "attn_q_a.weight"
        | "attn_q_b.weight"
        | "attn_kv.weight"
        | "attn_output_a.weight"
        | "attn_output_b.weight" => &[Q8_0],
        "ffn_gate_shexp.weight" | "ffn_up_shexp.weight" | "ffn_down_shexp.weight" => &[Q8_0],
        "ffn_gate_inp.weight" => &[F16],
        "ffn_gate_exps.weight" | "ffn_up_exps.weight" => &[Iq2Xxs, Q4K],
        "ffn_down_exps.weight" => &[Q2K, Q4K],
        "ffn_gate_tid2eid.weight" => &[I32],
        "attn_compressor_ape.weight"
        | "attn_compressor_kv.weight"
        | "attn_compressor_gate.weight" => &[F16],
        "indexer.attn_q_b.weight" | "indexer.proj.weight" => &[F16],
        "indexer_compressor_ape.weight"
        | "indexer_compressor_kv.weight"
        | "indexer_compressor_gate.weight" => &[F16],
        _ => return None,
    })
}

/// ds4's per-tensor type check for files that declare the Flash shape: every bound
/// tensor has its published type, and each layer's routed experts form one of the
/// two recipes (q2: IQ2_XXS gate/up + Q2_K down; q4: Q4_K throughout).
pub fn validate_flash_types<'a>(
    tensors: impl IntoIterator<Item = (&'a str, GgmlType)>,
) -> Result<()> {
    use std::collections::HashMap;
    let mut experts: HashMap<String, [Option<GgmlType>; 3]> = HashMap::new();
    for (name, ty) in tensors {
        let (layer, sub) = match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((l, s)) => (Some(l), s),
            None => (None, name),
        };
        let Some(allowed) = flash_allowed(sub) else {
            continue;
        };
        if !allowed.contains(&ty) {
            return Err(EngineError::TensorData {
                name: name.into(),
                msg: format!("type {ty} where the V4 Flash layout has {allowed:?}"),
            });
        }
        if let Some(l) = layer {
            let slot = match sub {
                "ffn_gate_exps.weight" => 0,
                "ffn_up_exps.weight" => 1,
                "ffn_down_exps.weight" => 2,
                _ => continue,
            };
            experts.entry(l.to_string()).or_default()[slot] = Some(ty);
        }
    }
    for (l, [g, u, d]) in experts {
        let ok = matches!(
            (g, u, d),
            (
                Some(GgmlType::Iq2Xxs),
                Some(GgmlType::Iq2Xxs),
                Some(GgmlType::Q2K)
            ) | (
                Some(GgmlType::Q4K),
                Some(GgmlType::Q4K),
                Some(GgmlType::Q4K)
            )
        );
        if !ok {
            return Err(EngineError::TensorData {
                name: format!("blk.{l}.ffn_*_exps.weight"),
                msg: format!(
                    "routed experts gate {g:?} / up {u:?} / down {d:?} match neither the q2 nor the q4 recipe"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    fn flash_layer(l: usize, gate: GgmlType, down: GgmlType) -> Vec<(String, GgmlType)> {
        let mut v = vec![
            (format!("blk.{l}.attn_q_a.weight"), Q8_0),
            (format!("blk.{l}.hc_attn_fn.weight"), F16),
            (format!("blk.{l}.attn_sinks.weight"), F32),
            (format!("blk.{l}.ffn_gate_exps.weight"), gate),
            (format!("blk.{l}.ffn_up_exps.weight"), gate),
            (format!("blk.{l}.ffn_down_exps.weight"), down),
        ];
        v.push(("output.weight".into(), Q8_0));
        v
    }

    fn check(v: &[(String, GgmlType)]) -> Result<()> {
        validate_flash_types(v.iter().map(|(n, t)| (n.as_str(), *t)))
    }

    #[test]
    fn flash_recipes_pass_and_deviations_are_named() {
        assert!(check(&flash_layer(3, Iq2Xxs, Q2K)).is_ok());
        assert!(check(&flash_layer(3, Q4K, Q4K)).is_ok());
        let e = check(&flash_layer(3, Iq2Xxs, Q4K)).unwrap_err();
        assert!(e.to_string().contains("blk.3.ffn_*_exps"), "{e}");
        let mut v = flash_layer(0, Q4K, Q4K);
        v[0].1 = F16;
        let e = check(&v).unwrap_err();
        assert!(e.to_string().contains("blk.0.attn_q_a.weight"), "{e}");
        // tensors ds4 does not bind are ignored
        v[0] = ("blk.0.something_else.weight".into(), Bf16);
        assert!(check(&v).is_ok());
    }
}
