//! Deterministic random weights for any [`ModelConfig`]: benchmarks and tests of
//! shapes the fixtures do not cover (the math is the same for any values).

use crate::config::{AttnKind, ModelConfig};
use crate::error::Result;
use crate::weights::{Tensor, TensorData, WeightSource};

/// splitmix64: tiny, seedable, and good enough for weights.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Uniform in [-1, 1) scaled by `std·√3` (so the standard deviation is `std`).
fn uniform(n: usize, std: f32, mean: f32, state: &mut u64) -> Vec<f32> {
    let a = std * 3f32.sqrt();
    (0..n)
        .map(|_| mean + a * ((splitmix(state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0))
        .collect()
}

pub struct SyntheticSource {
    cfg: ModelConfig,
    seed: u64,
}

impl SyntheticSource {
    pub fn new(cfg: ModelConfig, seed: u64) -> Self {
        SyntheticSource { cfg, seed }
    }

    /// Row-major shape of every tensor the config binds, by ds4 GGUF name.
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let c = &self.cfg;
        let (e, hw, mix) = (c.n_embd, c.hc_width(), c.hc_mix());
        let global = match name {
            "token_embd.weight" | "output.weight" => Some(vec![c.n_vocab, e]),
            "output_norm.weight" => Some(vec![e]),
            "output_hc_fn.weight" => Some(vec![c.hc, hw]),
            "output_hc_base.weight" => Some(vec![c.hc]),
            "output_hc_scale.weight" => Some(vec![1]),
            _ => None,
        };
        if global.is_some() {
            return global;
        }
        let rest = name.strip_prefix("blk.")?;
        let (l, sub) = rest.split_once('.')?;
        let l: usize = l.parse().ok()?;
        if l >= c.n_layer {
            return None;
        }
        let kind = c.attn_kind(l);
        let (ratio, cw) = (kind.ratio(), kind.coff() * c.head_dim);
        let di = c.indexer_head_dim;
        let sparse = matches!(kind, AttnKind::Sparse { .. });
        let compressed = kind != AttnKind::Window;
        Some(match sub {
            "hc_attn_fn.weight" | "hc_ffn_fn.weight" => vec![mix, hw],
            "hc_attn_base.weight" | "hc_ffn_base.weight" => vec![mix],
            "hc_attn_scale.weight" | "hc_ffn_scale.weight" => vec![3],
            "attn_norm.weight" | "ffn_norm.weight" => vec![e],
            "attn_q_a.weight" => vec![c.q_lora, e],
            "attn_q_a_norm.weight" => vec![c.q_lora],
            "attn_q_b.weight" => vec![c.n_head * c.head_dim, c.q_lora],
            "attn_kv.weight" => vec![c.head_dim, e],
            "attn_kv_a_norm.weight" => vec![c.head_dim],
            "attn_sinks.weight" => vec![c.n_head],
            "attn_output_a.weight" => vec![c.o_groups * c.o_lora, c.o_group_in()],
            "attn_output_b.weight" => vec![e, c.o_groups * c.o_lora],
            "ffn_gate_inp.weight" => vec![c.n_expert, e],
            "exp_probs_b.bias" => vec![c.n_expert],
            "ffn_gate_exps.weight" | "ffn_up_exps.weight" => vec![c.n_expert, c.expert_ff, e],
            "ffn_down_exps.weight" => vec![c.n_expert, e, c.expert_ff],
            "ffn_gate_shexp.weight" | "ffn_up_shexp.weight" => vec![c.expert_ff, e],
            "ffn_down_shexp.weight" => vec![e, c.expert_ff],
            "ffn_gate_tid2eid.weight" if c.is_hash_layer(l) => vec![c.n_vocab, c.n_expert_used],
            "attn_compressor_ape.weight" if compressed => vec![ratio, cw],
            "attn_compressor_kv.weight" | "attn_compressor_gate.weight" if compressed => {
                vec![cw, e]
            }
            "attn_compressor_norm.weight" if compressed => vec![c.head_dim],
            "indexer.attn_q_b.weight" if sparse => vec![c.indexer_heads * di, c.q_lora],
            "indexer.proj.weight" if sparse => vec![c.indexer_heads, e],
            "indexer_compressor_ape.weight" if sparse => vec![ratio, 2 * di],
            "indexer_compressor_kv.weight" | "indexer_compressor_gate.weight" if sparse => {
                vec![2 * di, e]
            }
            "indexer_compressor_norm.weight" if sparse => vec![di],
            _ => return None,
        })
    }
}

impl WeightSource for SyntheticSource {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(shape) = self.shape(name) else {
            return Ok(None);
        };
        let mut st = name_seed(self.seed, name);
        let n: usize = shape.iter().product();
        let data = if name.ends_with("tid2eid.weight") {
            // distinct experts per token, like the real table
            let (k, ne) = (self.cfg.n_expert_used, self.cfg.n_expert);
            let mut ids = Vec::with_capacity(n);
            for _ in 0..self.cfg.n_vocab {
                let mut pick: Vec<i32> = Vec::with_capacity(k);
                while pick.len() < k {
                    let e = (splitmix(&mut st) % ne as u64) as i32;
                    if !pick.contains(&e) {
                        pick.push(e);
                    }
                }
                ids.extend(pick);
            }
            TensorData::I32(ids)
        } else if name.contains("norm.weight") {
            TensorData::F32(uniform(n, 0.1, 1.0, &mut st))
        } else if name.contains("_scale.weight") {
            TensorData::F32(uniform(n, 0.2, 1.0, &mut st))
        } else if shape.len() == 1 || name.contains("_ape.") || name == "token_embd.weight" {
            TensorData::F32(uniform(n, 0.5, 0.0, &mut st))
        } else {
            let fan_in = *shape.last().unwrap_or(&1) as f32;
            TensorData::F32(uniform(n, fan_in.powf(-0.5), 0.0, &mut st))
        };
        Ok(Some(Tensor { shape, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ForwardOptions, Model};

    #[test]
    fn synthetic_flash_shaped_layers_bind_and_run() {
        // Flash's per-layer structure at a small width: windows, ratio 4 with the
        // indexer selecting, ratio 128, hash routing, 64 heads sharing one row.
        let mut cfg = ModelConfig::flash();
        cfg.n_layer = 4;
        cfg.compress_ratios.truncate(4);
        cfg.swiglu_clamp.truncate(4);
        cfg.n_embd = 256;
        cfg.n_vocab = 300;
        cfg.n_head = 8;
        cfg.head_dim = 128;
        cfg.q_lora = 64;
        cfg.o_lora = 32;
        cfg.o_groups = 2;
        cfg.n_expert = 8;
        cfg.n_expert_used = 2;
        cfg.expert_ff = 64;
        cfg.indexer_heads = 4;
        cfg.indexer_top_k = 8;
        let model = Model::new(cfg.clone(), &SyntheticSource::new(cfg, 1)).unwrap();
        let mut cache = model.new_cache();
        let toks: Vec<u32> = (0..140).map(|i| (i * 37 % 300) as u32).collect();
        let logits = model
            .prefill(&mut cache, &toks, 64, ForwardOptions::default())
            .unwrap();
        assert!(logits.iter().all(|x| x.is_finite()));
        assert_eq!(cache.layers[2].comp.len(), 35);
        assert_eq!(cache.layers[3].comp.len(), 1);
        assert_eq!(cache.layers[0].raw.len(), 128);
    }
}
