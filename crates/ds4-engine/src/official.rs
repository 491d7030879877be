//! An official-format checkpoint directory (`config.json` + `*.safetensors` under
//! DeepSeek's tensor names) as a [`WeightSource`] speaking ds4 GGUF names.
//!
//! Dtypes: F32/F16/BF16; I32/I64 (`tid2eid`); the release formats, decoded to f32:
//! FP8 E4M3 weights with one E8M0 `.scale` per 128×128 block, and FP4 E2M1 experts
//! (I8 storage, two values per byte, low nibble first) with one E8M0 `.scale` per
//! 32 inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::names::{gguf_expert_to_official, gguf_to_official};
use crate::weights::{Tensor, TensorData, WeightSource};
use ds4_quant::microfloat::{e2m1_to_f32, e4m3fn_to_f32, e8m0_to_f32};

/// Where one tensor's bytes are.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

pub struct OfficialCheckpoint {
    files: Vec<(PathBuf, Mmap)>,
    /// official tensor name → its location.
    index: HashMap<String, Entry>,
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
        let ckpt = Self::open_tensors(dir, cfg.n_expert)?;
        Ok((cfg, ckpt))
    }

    /// Every `dir/*.safetensors` (memory-mapped; headers parsed once), without a
    /// config; `n_expert` sizes the stacked expert tensors.
    pub fn open_tensors(dir: &Path, n_expert: usize) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in paths {
            let f = std::fs::File::open(&p).map_err(|e| io(&p, e))?;
            // SAFETY: the mapping is read-only and private to this process; like
            // every mmap-based loader we require that the file is not truncated or
            // rewritten while the checkpoint is open.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| io(&p, e))?;
            let bad = |msg: String| EngineError::Safetensors {
                path: p.display().to_string(),
                msg,
            };
            let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
            let base = 8 + n;
            for (name, info) in meta.tensors() {
                let (start, end) = (base + info.data_offsets.0, base + info.data_offsets.1);
                if start > end || end > map.len() {
                    return Err(bad(format!("{name}: data outside the file")));
                }
                let entry = Entry {
                    file: files.len(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start,
                    end,
                };
                index.insert(name, entry);
            }
            files.push((p, map));
        }
        Ok(OfficialCheckpoint {
            files,
            index,
            n_expert,
        })
    }

    fn entry(&self, name: &str) -> Option<(&Entry, &[u8], &Path)> {
        let e = self.index.get(name)?;
        let (path, map) = &self.files[e.file];
        Some((e, &map[e.start..e.end], path))
    }

    /// Logical shape of a tensor (packed FP4 rows count two values per byte)
    /// without reading its data.
    pub fn official_shape(&self, official: &str) -> Option<Vec<usize>> {
        let e = self.index.get(official)?;
        let mut shape = e.shape.clone();
        if e.dtype == Dtype::I8
            && let Some(last) = shape.last_mut()
        {
            *last *= 2;
        }
        Some(shape)
    }

    /// Official tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(|s| s.as_str()).collect();
        v.sort();
        v
    }

    /// One tensor by its official name, decoded to f32 (or i32 for integer tables).
    pub fn read_official(&self, official: &str) -> Result<Option<Tensor>> {
        let Some((entry, raw, path)) = self.entry(official) else {
            return Ok(None);
        };
        let err = |msg: String| EngineError::Safetensors {
            path: path.display().to_string(),
            msg: format!("{official}: {msg}"),
        };
        let width = match entry.dtype {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I64 => 8,
            _ => 1,
        };
        if raw.len() != entry.shape.iter().product::<usize>() * width {
            return Err(err(format!(
                "{} bytes for shape {:?}",
                raw.len(),
                entry.shape
            )));
        }
        let data = match entry.dtype {
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
            Dtype::F8_E4M3 => {
                let scale = self.block_scales(official, &entry.shape, 128, 128)?;
                let cols = entry.shape.last().copied().unwrap_or(1);
                TensorData::F32(
                    raw.iter()
                        .enumerate()
                        .map(|(i, &b)| e4m3fn_to_f32(b) * scale(i / cols, i % cols))
                        .collect(),
                )
            }
            Dtype::I8 => {
                // Packed FP4: the logical row is twice the stored one.
                let mut shape = entry.shape.clone();
                let Some(last) = shape.last_mut() else {
                    return Err(err("a scalar cannot hold FP4 data".into()));
                };
                *last *= 2;
                let cols = *last;
                let scale = self.block_scales(official, &shape, 1, 32)?;
                let data = raw
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &b)| {
                        let (r, c) = (2 * i / cols, 2 * i % cols);
                        [
                            e2m1_to_f32(b & 15) * scale(r, c),
                            e2m1_to_f32(b >> 4) * scale(r, c + 1),
                        ]
                    })
                    .collect();
                return Ok(Some(Tensor {
                    shape,
                    data: TensorData::F32(data),
                }));
            }
            other => {
                return Err(err(format!(
                    "dtype {other:?} is not supported by the f32 loader"
                )));
            }
        };
        Ok(Some(Tensor {
            shape: entry.shape.clone(),
            data,
        }))
    }
}

impl OfficialCheckpoint {
    /// The `.scale` companion of `<base>.weight` as a function of (row, col) of the
    /// weight, for blocks of `br × bc` elements. Accepts E8M0, F32 and BF16 scales.
    fn block_scales(
        &self,
        weight: &str,
        shape: &[usize],
        br: usize,
        bc: usize,
    ) -> Result<impl Fn(usize, usize) -> f32 + use<>> {
        let base = weight.strip_suffix(".weight").unwrap_or(weight);
        let name = format!("{base}.scale");
        let bad = |msg: String| EngineError::TensorData {
            name: name.clone(),
            msg,
        };
        let Some((entry, raw, _)) = self.entry(&name) else {
            return Err(EngineError::MissingTensor { name });
        };
        let vals: Vec<f32> = match entry.dtype {
            Dtype::F8_E8M0 => raw.iter().map(|&b| e8m0_to_f32(b)).collect(),
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => return Err(bad(format!("scale dtype {other:?} is not supported"))),
        };
        let (rows, cols) = match shape {
            [r, c] => (*r, *c),
            [c] => (1, *c),
            _ => {
                return Err(bad(format!(
                    "block-scaled weights must be 1-D or 2-D, found {shape:?}"
                )));
            }
        };
        let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
        if vals.len() != sr * sc {
            return Err(bad(format!(
                "{:?} scales for a {rows}x{cols} weight in {br}x{bc} blocks (want {sr}x{sc})",
                entry.shape
            )));
        }
        Ok(move |r: usize, c: usize| vals[(r / br) * sc + c / bc])
    }
}

impl WeightSource for OfficialCheckpoint {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        if let Some(official) = gguf_to_official(name) {
            return self.read_official(&official);
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
            let Some(t) = self.read_official(&official)? else {
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
