//! An official-format checkpoint directory (`config.json` + `*.safetensors` under
//! DeepSeek's tensor names) as a [`WeightSource`] speaking ds4 GGUF names.
//!
//! Only unquantized dtypes (F32/F16/BF16, I32/I64 for `tid2eid`) are read here; the
//! FP8/FP4 release checkpoint is the converter's business (`ds4-quantize
//! --from-official`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::names::{gguf_expert_to_official, gguf_to_official};
use crate::weights::{Tensor, TensorData, WeightSource};

pub struct OfficialCheckpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// official tensor name → index into `files`.
    index: HashMap<String, usize>,
    n_expert: usize,
}

fn io(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl OfficialCheckpoint {
    /// Opens `dir/config.json` and every `dir/*.safetensors`.
    pub fn open(dir: &Path) -> Result<(ModelConfig, Self)> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
        let cfg = ModelConfig::from_official_json(&text)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in paths {
            let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| EngineError::Safetensors {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((p, bytes));
        }
        let n_expert = cfg.n_expert;
        Ok((
            cfg,
            OfficialCheckpoint {
                files,
                index,
                n_expert,
            },
        ))
    }

    fn read(&self, official: &str) -> Result<Option<Tensor>> {
        let Some(&fi) = self.index.get(official) else {
            return Ok(None);
        };
        let (path, bytes) = &self.files[fi];
        let err = |msg: String| EngineError::Safetensors {
            path: path.display().to_string(),
            msg: format!("{official}: {msg}"),
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
        let view = st.tensor(official).map_err(|e| err(e.to_string()))?;
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F16 => TensorData::F32(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => TensorData::F32(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::I32 => TensorData::I32(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::I64 => TensorData::I32(
                raw.chunks_exact(8)
                    .map(|c| {
                        let v =
                            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                        i32::try_from(v).map_err(|_| err(format!("value {v} does not fit i32")))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            other => {
                return Err(err(format!(
                    "dtype {other:?} is not supported by the f32 loader"
                )));
            }
        };
        Ok(Some(Tensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }
}

impl WeightSource for OfficialCheckpoint {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        if let Some(official) = gguf_to_official(name) {
            return self.read(&official);
        }
        // A 3-D expert tensor is the official per-expert matrices stacked.
        if gguf_expert_to_official(name, 0).is_none() {
            return Ok(None);
        }
        let mut shape = Vec::new();
        let mut data = Vec::new();
        for e in 0..self.n_expert {
            let Some(official) = gguf_expert_to_official(name, e) else {
                return Ok(None);
            };
            let Some(t) = self.read(&official)? else {
                return Ok(None);
            };
            match t.data {
                TensorData::F32(v) if e == 0 || t.shape == shape => {
                    shape = t.shape;
                    data.extend_from_slice(&v);
                }
                _ => {
                    return Err(EngineError::TensorData {
                        name: official,
                        msg: "expert matrices must be floating point and all the same shape".into(),
                    });
                }
            }
        }
        let mut full = vec![self.n_expert];
        full.extend(shape);
        Ok(Some(Tensor {
            shape: full,
            data: TensorData::F32(data),
        }))
    }
}
