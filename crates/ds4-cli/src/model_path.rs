//! Which model file a command uses: `-m FILE`, else `ds4flash.gguf` in the
//! working directory (ds4's default).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub const DEFAULT_MODEL: &str = "ds4flash.gguf";

/// The model named by `-m`, else the default file if present.
pub fn find(model: Option<&Path>) -> Result<Option<PathBuf>> {
    match model {
        Some(p) if p.is_file() => Ok(Some(p.to_path_buf())),
        Some(p) if p.exists() => bail!("{} is not a regular file", p.display()),
        Some(p) => bail!("model file {} does not exist", p.display()),
        None => {
            let d = Path::new(DEFAULT_MODEL);
            Ok(d.is_file().then(|| d.to_path_buf()))
        }
    }
}

/// Like [`find`] but a model is required.
pub fn resolve(model: Option<&Path>) -> Result<PathBuf> {
    match find(model)? {
        Some(p) => Ok(p),
        None => bail!(
            "no model: pass -m FILE (the default {DEFAULT_MODEL} is not in the working directory)"
        ),
    }
}
