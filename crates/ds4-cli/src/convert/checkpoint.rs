//! The tensors of an official checkpoint directory: every `*.safetensors` shard
//! (or those `model.safetensors.index.json` names), memory-mapped, with a name →
//! (shard, dtype, shape, bytes) table. Nothing is read until a tensor is asked
//! for, and then only the rows asked for are touched.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::ConvertError;

pub struct Shard {
    pub path: PathBuf,
    map: Mmap,
    /// Offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the shard's data section.
    pub begin: usize,
    pub end: usize,
}

pub struct Checkpoint {
    pub shards: Vec<Shard>,
    /// Sorted, so reports list names in a stable order.
    pub tensors: BTreeMap<String, Entry>,
}

fn io(path: &Path, source: std::io::Error) -> ConvertError {
    ConvertError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index_path = dir.join("model.safetensors.index.json");
        let index: Option<Index> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| io(&index_path, e))?;
            Some(
                serde_json::from_str(&text).map_err(|e| ConvertError::BadFile {
                    path: index_path.display().to_string(),
                    msg: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let mut files: Vec<PathBuf> = match &index {
            Some(ix) => {
                let mut names: Vec<&String> = ix.weight_map.values().collect();
                names.sort();
                names.dedup();
                names.into_iter().map(|f| dir.join(f)).collect()
            }
            None => std::fs::read_dir(dir)
                .map_err(|e| io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect(),
        };
        files.sort();
        if files.is_empty() {
            return Err(ConvertError::BadFile {
                path: dir.display().to_string(),
                msg: "no *.safetensors files".into(),
            });
        }
        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for path in files {
            let file = File::open(&path).map_err(|e| io(&path, e))?;
            // SAFETY: the checkpoint is opened read-only and not expected to change
            // while we convert it; a concurrent writer could at worst make us read
            // garbage values, never touch memory outside the mapping.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io(&path, e))?;
            let bad = |msg: String| ConvertError::BadFile {
                path: path.display().to_string(),
                msg,
            };
            // read_metadata checks every tensor's byte range against the file
            // length, so a truncated shard fails here, before any conversion.
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
            let si = shards.len();
            for (name, info) in meta.tensors() {
                if tensors.contains_key(&name) {
                    return Err(bad(format!("tensor {name} also appears in another shard")));
                }
                let (begin, end) = info.data_offsets;
                tensors.insert(
                    name,
                    Entry {
                        shard: si,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        begin,
                        end,
                    },
                );
            }
            shards.push(Shard {
                path,
                map,
                data_start: 8 + header_len,
            });
        }
        if let Some(ix) = index {
            let mut missing: Vec<&String> = ix
                .weight_map
                .keys()
                .filter(|n| !tensors.contains_key(*n))
                .collect();
            missing.sort();
            if let Some(first) = missing.first() {
                return Err(ConvertError::BadFile {
                    path: index_path.display().to_string(),
                    msg: format!(
                        "names {} tensor(s) that no shard holds, first {first} (in {})",
                        missing.len(),
                        ix.weight_map[*first]
                    ),
                });
            }
        }
        Ok(Checkpoint { shards, tensors })
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.tensors.get(name)
    }

    /// The raw little-endian bytes of a tensor (a view into the mapping).
    pub fn bytes(&self, e: &Entry) -> &[u8] {
        let s = &self.shards[e.shard];
        &s.map[s.data_start + e.begin..s.data_start + e.end]
    }

    pub fn shard_path(&self, e: &Entry) -> &Path {
        &self.shards[e.shard].path
    }
}
