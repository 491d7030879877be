//! Official checkpoint → ds4 GGUF, streamed: the core of `ds4-quantize
//! --from-official`. One tensor (one expert) is decoded and quantized at a time, so
//! memory stays at the size of the largest single matrix, not of the model.

use std::path::Path;

use ds4_gguf::{GgmlType, GgufStreamWriter, HeaderBuilder};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::names::{
    EXPERT_NAMES, GLOBAL_NAMES, LAYER_NAMES, gguf_expert_to_official, gguf_to_official,
};
use crate::official::OfficialCheckpoint;
use crate::weights::{Tensor, TensorData};

/// How one GGUF tensor is produced.
struct Plan {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    /// Official names whose data is concatenated (one per expert for 3-D tensors).
    parts: Vec<String>,
}

fn plan(
    cfg: &ModelConfig,
    ck: &OfficialCheckpoint,
    recipe: &dyn Fn(&str) -> GgmlType,
) -> Result<Vec<Plan>> {
    let mut names: Vec<String> = GLOBAL_NAMES.iter().map(|(_, g)| g.to_string()).collect();
    for l in 0..cfg.n_layer {
        names.extend(LAYER_NAMES.iter().map(|(_, g)| format!("blk.{l}.{g}")));
        names.extend(EXPERT_NAMES.iter().map(|(_, g)| format!("blk.{l}.{g}")));
    }
    let mut plans = Vec::new();
    for name in names {
        let (parts, shape) = if let Some(o) = gguf_to_official(&name) {
            let Some(shape) = ck.official_shape(&o) else {
                continue;
            };
            (vec![o], shape)
        } else {
            let parts: Vec<String> = (0..cfg.n_expert)
                .filter_map(|e| gguf_expert_to_official(&name, e))
                .collect();
            let Some(first) = parts.first().and_then(|p| ck.official_shape(p)) else {
                continue;
            };
            for p in &parts {
                match ck.official_shape(p) {
                    Some(s) if s == first => {}
                    Some(s) => {
                        return Err(EngineError::TensorShape {
                            name: p.clone(),
                            expected: first,
                            found: s,
                        });
                    }
                    None => return Err(EngineError::MissingTensor { name: p.clone() }),
                }
            }
            let mut shape = vec![parts.len()];
            shape.extend(first);
            (parts, shape)
        };
        let ty = if name.ends_with("tid2eid.weight") {
            GgmlType::I32
        } else if shape.len() >= 2 {
            recipe(&name)
        } else {
            GgmlType::F32
        };
        plans.push(Plan {
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            name,
            ty,
            parts,
        });
    }
    Ok(plans)
}

fn encode(t: Tensor, ty: GgmlType, name: &str) -> Result<Vec<u8>> {
    let row = t.shape.last().copied().unwrap_or(1);
    match (t.data, ty) {
        (TensorData::I32(v), GgmlType::I32) => Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (TensorData::F32(v), GgmlType::F32) => Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (TensorData::F32(v), ty) => Ok(ds4_quant::quantize(ty, &v, row, None)?),
        _ => Err(EngineError::TensorData {
            name: name.into(),
            msg: format!("cannot store this data as {ty}"),
        }),
    }
}

/// Writes `ck` as a ds4 GGUF at `path`: `deepseek4.*` metadata from `cfg`, then
/// `extra_meta` (the tokenizer's keys, `general.name`, ...), then every tensor the
/// engine binds, typed by `recipe` (2-D/3-D weights; vectors stay F32, `tid2eid`
/// I32). Returns the number of tensors written.
pub fn convert_official(
    cfg: &ModelConfig,
    ck: &OfficialCheckpoint,
    recipe: &dyn Fn(&str) -> GgmlType,
    extra_meta: &[(String, ds4_gguf::MetaValue)],
    path: &Path,
) -> Result<usize> {
    let plans = plan(cfg, ck, recipe)?;
    let mut h = HeaderBuilder::new();
    h.add_meta("general.architecture", "deepseek4")?;
    for (k, v) in crate::gguf::config_metadata(cfg) {
        h.add_meta(k, v)?;
    }
    for (k, v) in extra_meta {
        h.add_meta(k.clone(), v.clone())?;
    }
    for p in &plans {
        h.add_tensor(p.name.clone(), &p.dims, p.ty)?;
    }
    let mut w = GgufStreamWriter::create(path, &h)?;
    for p in &plans {
        w.begin_tensor(&p.name)?;
        for part in &p.parts {
            let t = ck
                .read_official(part)?
                .ok_or_else(|| EngineError::MissingTensor { name: part.clone() })?;
            w.write_chunk(&encode(t, p.ty, part)?)?;
        }
        w.end_tensor()?;
    }
    w.finish()?;
    Ok(plans.len())
}
