//! The bundled demo model: a small DeepSeek V4 (6 layers, 256 wide, the real
//! layer pattern and the real 129,280-token tokenizer) trained by
//! `tools/train_demo.py` on Manzoni's *I promessi sposi* and synthetic tool-use
//! dialogues, converted by `ds4-quantize --from-official`. It ships gzipped in
//! `assets/demo/` and is unpacked on first use into a cache directory, so a new
//! user's first command prints Italian prose without the 87 GB download.
//!
//! The random-weight generator stays for tests that need other shapes
//! ([`shape`], [`ensure_random_in`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::layout::{Recipe, Shape};
use crate::synthetic::{SyntheticOptions, write_atomic};
use crate::tokenizer_meta::TokenizerMeta;

/// Bump when the bundled model changes, so old caches are not reused.
const TRAINED_VERSION: u32 = 1;
/// Bump when the random model's shape, recipe, seed or generator changes.
const DEMO_VERSION: u32 = 1;
const DEMO_SEED: u64 = 20_260_425;

/// Where the trained model is kept in the source tree (read at run time, not
/// embedded: every binary and test linking this crate would carry its 20 MB).
pub const BUNDLED_GZ: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/demo/ds4-demo.gguf.gz"
);

/// Shape of the random-weight model (the trained model's shape is in its file).
pub fn shape() -> Shape {
    Shape {
        n_layer: 6,
        n_embd: 256,
        n_head: 4,
        head_dim: 128,
        n_rot: 64,
        q_lora_rank: 128,
        o_lora_rank: 128,
        o_groups: 2,
        n_expert: 8,
        n_expert_used: 2,
        ff_exp: 256,
        n_hash_layer: 2,
        indexer_heads: 4,
        indexer_dim: 64,
        indexer_top_k: 8,
        context_length: 65_536,
        ..Shape::default()
    }
}

/// `DS4_CACHE_DIR`, else `$XDG_CACHE_HOME/ds4`, else `~/.cache/ds4`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DS4_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("ds4"));
    }
    let home = std::env::var_os("HOME")
        .context("cannot place the demo model: neither DS4_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("ds4"))
}

/// Path of the trained demo model, unpacking it first if needed.
pub fn ensure() -> Result<PathBuf> {
    ensure_in(&cache_dir()?)
}

/// [`ensure`] with an explicit directory (tests put the model in a temp dir
/// without touching the process environment).
pub fn ensure_in(dir: &Path) -> Result<PathBuf> {
    unpack_in(dir, Path::new(BUNDLED_GZ))
}

/// Unpacks the gzipped model `gz` into `dir` once (the name carries the version
/// and the compressed size, so a changed asset is not shadowed by an old cache).
pub fn unpack_in(dir: &Path, gz: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(gz).with_context(|| {
        format!(
            "the bundled demo model {} is missing (run from a full checkout, or pass -m FILE)",
            gz.display()
        )
    })?;
    let path = dir.join(format!(
        "ds4-demo-trained-v{TRAINED_VERSION}-{}.gguf",
        meta.len()
    ));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("ds4: unpacking the demo model into {}", path.display());
    let file = std::fs::File::open(gz).with_context(|| format!("cannot open {}", gz.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut bytes)
        .with_context(|| format!("{} is not a valid gzip file", gz.display()))?;
    if !bytes.starts_with(b"GGUF") {
        bail!("{} does not hold a GGUF file", gz.display());
    }
    // Written next to the target and renamed: a concurrent or interrupted run
    // never sees half a file.
    let tmp = dir.join(format!(
        ".{}.{}.partial",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("demo"),
        std::process::id()
    ));
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(path)
}

/// The random-weight model of [`shape`] (q2 recipe), generated deterministically
/// into `dir` on first use: for tests that need the published layout at a small
/// size rather than a model that writes sense.
pub fn ensure_random_in(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!("ds4-demo-v{DEMO_VERSION}-q2.gguf"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tokenizer = TokenizerMeta::bundled()?;
    write_atomic(&SyntheticOptions {
        shape: shape(),
        recipe: Recipe::Q2,
        seed: DEMO_SEED,
        out: &path,
        tokenizer: &tokenizer,
        progress: false,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_asset_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_in(dir.path(), &dir.path().join("none.gz")).unwrap_err();
        assert!(format!("{err:#}").contains("is missing"), "{err:#}");
        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, b"not gzip").unwrap();
        let err = unpack_in(dir.path(), &bad).unwrap_err();
        assert!(format!("{err:#}").contains("not a valid gzip"), "{err:#}");
    }

    #[test]
    fn unpacks_once_and_checks_the_magic() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("m.gguf.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"GGUF\x03\x00\x00\x00rest").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let p = unpack_in(&dir.path().join("cache"), &gz).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"GGUF\x03\x00\x00\x00rest");
        assert_eq!(unpack_in(&dir.path().join("cache"), &gz).unwrap(), p);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"nope").unwrap();
        let other = dir.path().join("o.gguf.gz");
        std::fs::write(&other, enc.finish().unwrap()).unwrap();
        let err = unpack_in(&dir.path().join("c2"), &other).unwrap_err();
        assert!(
            format!("{err:#}").contains("does not hold a GGUF"),
            "{err:#}"
        );
    }
}
