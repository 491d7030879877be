//! Memory a context needs, so `--inspect` can print it and generation can refuse
//! a context that cannot fit before allocating anything.

use ds4_engine::{AttnKind, ModelConfig};

/// Bytes of per-session state for `ctx` tokens, with the CPU engine's f32
/// storage (spec/architecture.md §4.1–4.2): the raw window of every layer,
/// compressed rows (`ctx/ratio + 2` per compressed layer), indexer rows on
/// ratio-4 layers, the compressor frontiers, and the last logits.
pub fn kv_bytes(cfg: &ModelConfig, ctx: usize) -> u64 {
    let f = 4u64;
    let d = cfg.head_dim as u64;
    let mut total = 0u64;
    for l in 0..cfg.n_layer {
        total += ctx.min(cfg.sliding_window) as u64 * d * f;
        let kind = cfg.attn_kind(l);
        let ratio = kind.ratio() as u64;
        if ratio == 0 {
            continue;
        }
        let rows = ctx as u64 / ratio + 2;
        let coff = kind.coff() as u64;
        // Frontier: kv and score lanes, coff·ratio rows of coff·d.
        total += rows * d * f + 2 * coff * ratio * coff * d * f;
        if matches!(kind, AttnKind::Sparse { .. }) {
            let id = cfg.indexer_head_dim as u64;
            total += rows * id * f + 2 * coff * ratio * coff * id * f;
        }
    }
    total + cfg.n_vocab as u64 * f
}

/// `MemAvailable` from /proc/meminfo, where there is one.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a context whose state cannot fit in the memory left.
pub fn check_fits(cfg: &ModelConfig, ctx: usize) -> anyhow::Result<()> {
    let need = kv_bytes(cfg, ctx);
    if let Some(avail) = available_bytes()
        && need > avail
    {
        anyhow::bail!(
            "a context of {ctx} tokens needs {:.2} GB of session state but only {:.2} GB of memory is available; lower -c",
            need as f64 / 1e9,
            avail as f64 / 1e9
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_kv_matches_the_spec_per_token_figure() {
        // spec §4.2: 13,760 B/token of compressed rows with f32 storage.
        let cfg = ModelConfig::flash();
        let per_token = (kv_bytes(&cfg, 2_000_000) - kv_bytes(&cfg, 1_000_000)) as f64 / 1e6;
        assert!((per_token - 13_760.0).abs() < 1.0, "{per_token}");
    }
}
