//! The bundled demo model: a tiny DeepSeek V4-architecture model with the real
//! 129,280-token tokenizer and random weights in the published q2 layout. It is
//! generated deterministically on first use into a cache directory (about
//! 100 MB, a few seconds), so a new user's first command runs without the
//! 87 GB download.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::layout::{Recipe, Shape};
use crate::synthetic::{SyntheticOptions, write_atomic};
use crate::tokenizer_meta::TokenizerMeta;

/// Bump when the shape, recipe, seed or generator changes, so old caches are
/// not reused.
const DEMO_VERSION: u32 = 1;
const DEMO_SEED: u64 = 20_260_425;

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

/// Path of the demo model, generating it first if needed.
pub fn ensure() -> Result<PathBuf> {
    ensure_random_in(&cache_dir()?)
}

/// The random-weight model of [`shape`] (q2 recipe), generated deterministically
/// into `dir` on first use (tests put it in a temp dir without touching the
/// process environment).
pub fn ensure_random_in(dir: &std::path::Path) -> Result<PathBuf> {
    let dir = dir.to_path_buf();
    let path = dir.join(format!("ds4-demo-v{DEMO_VERSION}-q2.gguf"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "ds4: generating the demo model (random weights, real tokenizer) into {}",
        path.display()
    );
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
