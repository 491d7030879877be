//! Importance matrices in llama.cpp's legacy binary `.dat` format, the one ds4's
//! collector writes and `deepseek4-quantize` reads:
//!
//! ```text
//! i32 n_entries
//! n_entries × { i32 name_len, name bytes, i32 n_calls, i32 n_values, f32 values[n_values] }
//! [i32 n_chunks, i32 dataset_len, dataset bytes]      (optional trailer, ignored)
//! ```
//!
//! Values are sums over `n_calls` forward calls, so they are divided by it. A
//! routed-expert entry holds `n_expert` consecutive per-expert vectors; entries
//! named `NAME.expert.E` / `NAME.expert_E` hold one expert's vector.

use std::collections::HashMap;
use std::path::Path;

use super::ConvertError;

pub struct Imatrix {
    entries: HashMap<String, Vec<f32>>,
}

impl Imatrix {
    pub fn load(path: &Path) -> Result<Imatrix, ConvertError> {
        let bytes = std::fs::read(path).map_err(|e| ConvertError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Imatrix::parse(&bytes).map_err(|msg| ConvertError::BadFile {
            path: path.display().to_string(),
            msg,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Imatrix, String> {
        let mut pos = 0usize;
        let n = read_i32(bytes, &mut pos, "the entry count")?;
        if n < 1 {
            return Err(format!("{n} entries (not an imatrix .dat file?)"));
        }
        let mut entries = HashMap::new();
        for _ in 0..n {
            let len = read_i32(bytes, &mut pos, "a name length")?;
            if !(1..=4096).contains(&len) {
                return Err(format!("bad name length {len} at byte {}", pos - 4));
            }
            let name = bytes
                .get(pos..pos + len as usize)
                .ok_or_else(|| "truncated name".to_string())?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| format!("entry name at byte {pos} is not UTF-8"))?;
            pos += len as usize;
            let calls = read_i32(bytes, &mut pos, "a call count")?;
            let nval = read_i32(bytes, &mut pos, "a value count")?;
            if nval < 1 {
                return Err(format!("{name}: {nval} values"));
            }
            let raw = bytes
                .get(pos..pos + 4 * nval as usize)
                .ok_or_else(|| format!("{name}: truncated values"))?;
            pos += 4 * nval as usize;
            let div = if calls > 0 { calls as f32 } else { 1.0 };
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) / div)
                .collect();
            if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!("{name}: a value is negative or not finite"));
            }
            entries.insert(name, values);
        }
        Ok(Imatrix { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Column importances for rows of `cols` inputs of the tensor known by
    /// `names` (GGUF name first, then the official one), for `expert = Some((e,
    /// n_expert))` of a routed-expert tensor. `None` when the file has no entry.
    pub fn lookup(
        &self,
        names: &[&str],
        cols: usize,
        expert: Option<(usize, usize)>,
    ) -> Result<Option<&[f32]>, String> {
        if let Some((e, _)) = expert {
            for sep in [".expert.", ".expert_"] {
                for n in names {
                    let key = format!("{n}{sep}{e}");
                    if let Some(v) = self.entries.get(&key) {
                        return check(&key, v, cols, None).map(Some);
                    }
                }
            }
        }
        for n in names {
            if let Some(v) = self.entries.get(*n) {
                return check(n, v, cols, expert).map(Some);
            }
        }
        Ok(None)
    }
}

fn read_i32(bytes: &[u8], pos: &mut usize, what: &str) -> Result<i32, String> {
    let b = bytes
        .get(*pos..*pos + 4)
        .ok_or_else(|| format!("truncated while reading {what} at byte {pos}"))?;
    *pos += 4;
    Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn check<'a>(
    key: &str,
    v: &'a [f32],
    cols: usize,
    expert: Option<(usize, usize)>,
) -> Result<&'a [f32], String> {
    if v.len() == cols {
        return Ok(v);
    }
    if let Some((e, n)) = expert
        && v.len() == cols * n
    {
        return Ok(&v[e * cols..(e + 1) * cols]);
    }
    Err(format!(
        "imatrix entry {key} has {} values, expected {cols}{}",
        v.len(),
        expert.map_or(String::new(), |(_, n)| format!(" or {}", cols * n))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, name: &str, calls: i32, vals: &[f32]) {
        out.extend((name.len() as i32).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(calls.to_le_bytes());
        out.extend((vals.len() as i32).to_le_bytes());
        for v in vals {
            out.extend(v.to_le_bytes());
        }
    }

    #[test]
    fn parses_divides_and_slices_experts() {
        let mut b = 2i32.to_le_bytes().to_vec();
        entry(&mut b, "blk.0.ffn_up_exps.weight", 2, &[2.0, 4.0, 6.0, 8.0]);
        entry(&mut b, "blk.0.attn_kv.weight.expert_1", 1, &[1.0, 1.0]);
        b.extend(10i32.to_le_bytes());
        let im = Imatrix::parse(&b).unwrap();
        assert_eq!(im.len(), 2);
        let up = ["blk.0.ffn_up_exps.weight"];
        assert_eq!(
            im.lookup(&up, 2, Some((1, 2))).unwrap(),
            Some(&[3.0, 4.0][..])
        );
        assert_eq!(
            im.lookup(&up, 4, None).unwrap(),
            Some(&[1.0, 2.0, 3.0, 4.0][..])
        );
        assert!(im.lookup(&up, 3, None).unwrap_err().contains("expected 3"));
        let kv = ["blk.0.attn_kv.weight"];
        assert!(im.lookup(&kv, 2, Some((1, 4))).unwrap().is_some());
        assert!(im.lookup(&["nope"], 2, None).unwrap().is_none());
        assert!(Imatrix::parse(&b[..b.len() - 12]).is_err());
    }
}
