//! `ModelConfig`: every size of the model, read from GGUF metadata (ds4's
//! `deepseek4.*` keys, spec §1.1) or from an official `config.json`, then checked
//! for internal consistency. Nothing downstream hard-codes a Flash dimension.

use crate::error::{EngineError, Result};

/// A GGUF metadata value, as far as the config needs one. The GGUF reader converts
/// its own value type into this so the engine does not depend on its internals.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

/// How a layer attends, derived from its compression ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKind {
    /// Ratio 0: raw sliding window only, plain RoPE.
    Window,
    /// Ratio 4: overlapping compressor (two lanes) plus the lightning indexer.
    /// The official code ties both the overlap and the indexer to ratio 4 exactly.
    Sparse { ratio: usize },
    /// Any other ratio: non-overlapping compressor, every compressed row visible.
    Heavy { ratio: usize },
}

impl AttnKind {
    pub fn ratio(self) -> usize {
        match self {
            AttnKind::Window => 0,
            AttnKind::Sparse { ratio } | AttnKind::Heavy { ratio } => ratio,
        }
    }
    /// `coff` of spec §3.6: 2 lanes for the overlapping compressor, 1 otherwise.
    pub fn coff(self) -> usize {
        match self {
            AttnKind::Sparse { .. } => 2,
            _ => 1,
        }
    }
}

/// The ratio whose compressor overlaps windows and feeds the indexer.
pub const SPARSE_RATIO: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_vocab: usize,
    pub n_head: usize,
    /// K = V row width per head (512 in Flash).
    pub head_dim: usize,
    /// RoPE'd tail of each head (64 in Flash).
    pub n_rot: usize,
    pub q_lora: usize,
    pub o_lora: usize,
    pub o_groups: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_expert_shared: usize,
    pub expert_ff: usize,
    pub n_hash_layer: usize,
    pub expert_weight_scale: f32,
    /// Per-layer SwiGLU clamp.
    pub swiglu_clamp: Vec<f32>,
    pub sliding_window: usize,
    /// Per layer (exactly `n_layer` entries; trailing MTP entries are dropped).
    pub compress_ratios: Vec<usize>,
    pub indexer_heads: usize,
    pub indexer_head_dim: usize,
    pub indexer_top_k: usize,
    pub hc: usize,
    pub hc_sinkhorn_iters: usize,
    pub hc_eps: f32,
    pub rms_eps: f32,
    pub rope_base: f64,
    pub compress_rope_base: f64,
    pub yarn_factor: f64,
    pub yarn_orig_ctx: f64,
    pub yarn_beta_fast: f64,
    pub yarn_beta_slow: f64,
}

const ARCH: &str = "deepseek4";

fn key(k: &str) -> String {
    format!("{ARCH}.{k}")
}

struct Meta<'a, F: Fn(&str) -> Option<MetaValue>>(&'a F);

impl<F: Fn(&str) -> Option<MetaValue>> Meta<'_, F> {
    fn get(&self, k: &str) -> Result<MetaValue> {
        let full = key(k);
        (self.0)(&full).ok_or(EngineError::MissingKey { key: full })
    }
    fn usize(&self, k: &str) -> Result<usize> {
        match self.get(k)? {
            MetaValue::U32(v) => Ok(v as usize),
            MetaValue::U64(v) => usize::try_from(v).map_err(|_| bad(k, "does not fit usize")),
            other => Err(bad(k, &format!("expected u32, found {other:?}"))),
        }
    }
    fn f64(&self, k: &str) -> Result<f64> {
        as_f64(&self.get(k)?).ok_or_else(|| bad(k, "expected a number"))
    }
    fn array(&self, k: &str) -> Result<Vec<MetaValue>> {
        match self.get(k)? {
            MetaValue::Array(v) => Ok(v),
            other => Err(bad(k, &format!("expected an array, found {other:?}"))),
        }
    }
}

fn bad(k: &str, msg: &str) -> EngineError {
    EngineError::BadKey {
        key: key(k),
        msg: msg.to_string(),
    }
}

fn as_f64(v: &MetaValue) -> Option<f64> {
    match *v {
        MetaValue::F32(x) => Some(x as f64),
        MetaValue::F64(x) => Some(x),
        MetaValue::U32(x) => Some(x as f64),
        MetaValue::I32(x) => Some(x as f64),
        MetaValue::U64(x) => Some(x as f64),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads ds4's `deepseek4.*` metadata keys (spec §1.1). `get` returns the value of a
    /// full key such as `deepseek4.block_count`.
    pub fn from_metadata(get: impl Fn(&str) -> Option<MetaValue>) -> Result<Self> {
        let m = Meta(&get);
        let n_layer = m.usize("block_count")?;
        let ratios = m
            .array("attention.compress_ratios")?
            .iter()
            .map(|v| match *v {
                MetaValue::U32(x) => Ok(x as usize),
                MetaValue::I32(x) if x >= 0 => Ok(x as usize),
                _ => Err(bad(
                    "attention.compress_ratios",
                    "entries must be u32/i32 >= 0",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let clamp = m
            .array("swiglu_clamp_exp")?
            .iter()
            .map(|v| as_f64(v).map(|x| x as f32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("swiglu_clamp_exp", "entries must be numbers"))?;
        for k in ["expert_group_count", "expert_group_used_count"] {
            if let Some(v) = get(&key(k))
                && as_f64(&v) != Some(0.0)
            {
                return Err(bad(
                    k,
                    "group routing is not part of this model (must be 0)",
                ));
            }
        }
        if let Some(v) = get(&key("expert_weights_norm"))
            && v != MetaValue::Bool(true)
        {
            return Err(bad(
                "expert_weights_norm",
                "only normalized top-k weights are supported",
            ));
        }
        let kv_heads = m.usize("attention.head_count_kv")?;
        if kv_heads != 1 {
            return Err(bad(
                "attention.head_count_kv",
                "the model has one shared K=V head",
            ));
        }
        let head_dim = m.usize("attention.key_length")?;
        if m.usize("attention.value_length")? != head_dim {
            return Err(bad(
                "attention.value_length",
                "K and V are the same row: must equal key_length",
            ));
        }
        let cfg = ModelConfig {
            n_layer,
            n_embd: m.usize("embedding_length")?,
            n_vocab: m.usize("vocab_size")?,
            n_head: m.usize("attention.head_count")?,
            head_dim,
            n_rot: m.usize("rope.dimension_count")?,
            q_lora: m.usize("attention.q_lora_rank")?,
            o_lora: m.usize("attention.output_lora_rank")?,
            o_groups: m.usize("attention.output_group_count")?,
            n_expert: m.usize("expert_count")?,
            n_expert_used: m.usize("expert_used_count")?,
            n_expert_shared: m.usize("expert_shared_count")?,
            expert_ff: m.usize("expert_feed_forward_length")?,
            n_hash_layer: m.usize("hash_layer_count")?,
            expert_weight_scale: m.f64("expert_weights_scale")? as f32,
            swiglu_clamp: clamp.into_iter().take(n_layer).collect(),
            sliding_window: m.usize("attention.sliding_window")?,
            compress_ratios: ratios.into_iter().take(n_layer).collect(),
            indexer_heads: m.usize("attention.indexer.head_count")?,
            indexer_head_dim: m.usize("attention.indexer.key_length")?,
            indexer_top_k: m.usize("attention.indexer.top_k")?,
            hc: m.usize("hyper_connection.count")?,
            hc_sinkhorn_iters: m.usize("hyper_connection.sinkhorn_iterations")?,
            hc_eps: m.f64("hyper_connection.epsilon")? as f32,
            rms_eps: m.f64("attention.layer_norm_rms_epsilon")? as f32,
            rope_base: m.f64("rope.freq_base")?,
            compress_rope_base: m.f64("attention.compress_rope_freq_base")?,
            yarn_factor: m.f64("rope.scaling.factor")?,
            yarn_orig_ctx: m.f64("rope.scaling.original_context_length")?,
            yarn_beta_fast: m.f64("rope.scaling.yarn_beta_fast")?,
            yarn_beta_slow: m.f64("rope.scaling.yarn_beta_slow")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The metadata this config writes into a ds4 GGUF (the inverse of
    /// [`ModelConfig::from_metadata`]); for the converter.
    pub fn to_metadata(&self) -> Vec<(String, MetaValue)> {
        let u = |v: usize| MetaValue::U32(v as u32);
        let f = |v: f64| MetaValue::F32(v as f32);
        let mut out = vec![
            ("block_count", u(self.n_layer)),
            ("embedding_length", u(self.n_embd)),
            ("vocab_size", u(self.n_vocab)),
            ("attention.head_count", u(self.n_head)),
            ("attention.head_count_kv", u(1)),
            ("attention.key_length", u(self.head_dim)),
            ("attention.value_length", u(self.head_dim)),
            ("rope.dimension_count", u(self.n_rot)),
            ("attention.q_lora_rank", u(self.q_lora)),
            ("attention.output_lora_rank", u(self.o_lora)),
            ("attention.output_group_count", u(self.o_groups)),
            ("expert_count", u(self.n_expert)),
            ("expert_used_count", u(self.n_expert_used)),
            ("expert_shared_count", u(self.n_expert_shared)),
            ("expert_feed_forward_length", u(self.expert_ff)),
            ("expert_group_count", u(0)),
            ("expert_group_used_count", u(0)),
            ("hash_layer_count", u(self.n_hash_layer)),
            ("expert_weights_scale", f(self.expert_weight_scale as f64)),
            ("expert_weights_norm", MetaValue::Bool(true)),
            (
                "swiglu_clamp_exp",
                MetaValue::Array(
                    self.swiglu_clamp
                        .iter()
                        .map(|&c| MetaValue::F32(c))
                        .collect(),
                ),
            ),
            ("attention.sliding_window", u(self.sliding_window)),
            (
                "attention.compress_ratios",
                MetaValue::Array(self.compress_ratios.iter().map(|&r| u(r)).collect()),
            ),
            ("attention.indexer.head_count", u(self.indexer_heads)),
            ("attention.indexer.key_length", u(self.indexer_head_dim)),
            ("attention.indexer.top_k", u(self.indexer_top_k)),
            ("hyper_connection.count", u(self.hc)),
            (
                "hyper_connection.sinkhorn_iterations",
                u(self.hc_sinkhorn_iters),
            ),
            ("hyper_connection.epsilon", f(self.hc_eps as f64)),
            ("attention.layer_norm_rms_epsilon", f(self.rms_eps as f64)),
            ("rope.freq_base", f(self.rope_base)),
            (
                "attention.compress_rope_freq_base",
                f(self.compress_rope_base),
            ),
            ("rope.scaling.factor", f(self.yarn_factor)),
            (
                "rope.scaling.original_context_length",
                u(self.yarn_orig_ctx as usize),
            ),
            ("rope.scaling.yarn_beta_fast", f(self.yarn_beta_fast)),
            ("rope.scaling.yarn_beta_slow", f(self.yarn_beta_slow)),
        ];
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter().map(|(k, v)| (key(k), v)).collect()
    }

    /// Reads an official DeepSeek-V4 `config.json` (the key style of the released
    /// checkpoint: `compress_ratios`, `num_hash_layers`, `rope_scaling`, ...).
    pub fn from_official_json(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::ConfigJson(e.to_string()))?;
        let num = |k: &str| -> Result<f64> {
            v.get(k)
                .and_then(|x| x.as_f64())
                .ok_or_else(|| EngineError::ConfigJson(format!("missing or non-numeric `{k}`")))
        };
        let int = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| EngineError::ConfigJson(format!("missing or non-integer `{k}`")))
        };
        let rs = v
            .get("rope_scaling")
            .ok_or_else(|| EngineError::ConfigJson("missing `rope_scaling`".into()))?;
        let rnum = |k: &str| -> Result<f64> {
            rs.get(k)
                .and_then(|x| x.as_f64())
                .ok_or_else(|| EngineError::ConfigJson(format!("missing `rope_scaling.{k}`")))
        };
        if let Some(kv) = v.get("num_key_value_heads").and_then(|x| x.as_u64())
            && kv != 1
        {
            return Err(EngineError::ConfigJson(
                "num_key_value_heads must be 1".into(),
            ));
        }
        if let Some(s) = v.get("scoring_func").and_then(|x| x.as_str())
            && s != "sqrtsoftplus"
        {
            return Err(EngineError::ConfigJson(format!(
                "scoring_func `{s}` is not sqrtsoftplus"
            )));
        }
        let n_layer = int("num_hidden_layers")?;
        let ratios = v
            .get("compress_ratios")
            .and_then(|x| x.as_array())
            .ok_or_else(|| EngineError::ConfigJson("missing `compress_ratios`".into()))?
            .iter()
            .map(|x| x.as_u64().map(|r| r as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                EngineError::ConfigJson("`compress_ratios` must hold integers".into())
            })?;
        let clamp = num("swiglu_limit")? as f32;
        let cfg = ModelConfig {
            n_layer,
            n_embd: int("hidden_size")?,
            n_vocab: int("vocab_size")?,
            n_head: int("num_attention_heads")?,
            head_dim: int("head_dim")?,
            n_rot: int("qk_rope_head_dim")?,
            q_lora: int("q_lora_rank")?,
            o_lora: int("o_lora_rank")?,
            o_groups: int("o_groups")?,
            n_expert: int("n_routed_experts")?,
            n_expert_used: int("num_experts_per_tok")?,
            n_expert_shared: int("n_shared_experts")?,
            expert_ff: int("moe_intermediate_size")?,
            n_hash_layer: int("num_hash_layers")?,
            expert_weight_scale: num("routed_scaling_factor")? as f32,
            swiglu_clamp: vec![clamp; n_layer],
            sliding_window: int("sliding_window")?,
            compress_ratios: ratios.into_iter().take(n_layer).collect(),
            indexer_heads: int("index_n_heads")?,
            indexer_head_dim: int("index_head_dim")?,
            indexer_top_k: int("index_topk")?,
            hc: int("hc_mult")?,
            hc_sinkhorn_iters: int("hc_sinkhorn_iters")?,
            hc_eps: num("hc_eps")? as f32,
            rms_eps: num("rms_norm_eps")? as f32,
            rope_base: num("rope_theta")?,
            compress_rope_base: num("compress_rope_theta")?,
            yarn_factor: rnum("factor")?,
            yarn_orig_ctx: rnum("original_max_position_embeddings")?,
            yarn_beta_fast: rnum("beta_fast")?,
            yarn_beta_slow: rnum("beta_slow")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Consistency checks: every relation the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(EngineError::Config(m));
        let nonzero = [
            ("block_count", self.n_layer),
            ("embedding_length", self.n_embd),
            ("vocab_size", self.n_vocab),
            ("head_count", self.n_head),
            ("key_length", self.head_dim),
            ("q_lora_rank", self.q_lora),
            ("output_lora_rank", self.o_lora),
            ("output_group_count", self.o_groups),
            ("expert_count", self.n_expert),
            ("expert_used_count", self.n_expert_used),
            ("expert_feed_forward_length", self.expert_ff),
            ("sliding_window", self.sliding_window),
            ("hyper_connection.count", self.hc),
            ("sinkhorn_iterations", self.hc_sinkhorn_iters),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return err(format!("{name} must be > 0"));
            }
        }
        if self.n_rot == 0 || !self.n_rot.is_multiple_of(2) || self.n_rot > self.head_dim {
            return err(format!(
                "rope dims {} must be even, > 0 and <= head dim {}",
                self.n_rot, self.head_dim
            ));
        }
        if !self.n_head.is_multiple_of(self.o_groups) {
            return err(format!(
                "{} heads do not split into {} output groups",
                self.n_head, self.o_groups
            ));
        }
        if self.n_expert_used > self.n_expert {
            return err(format!(
                "{} experts used of only {}",
                self.n_expert_used, self.n_expert
            ));
        }
        if self.n_expert_shared != 1 {
            return err(format!(
                "exactly one shared expert is supported, found {}",
                self.n_expert_shared
            ));
        }
        if self.n_hash_layer > self.n_layer {
            return err(format!(
                "{} hash layers in a {}-layer model",
                self.n_hash_layer, self.n_layer
            ));
        }
        if self.compress_ratios.len() != self.n_layer {
            return err(format!(
                "{} compress ratios for {} layers",
                self.compress_ratios.len(),
                self.n_layer
            ));
        }
        if self.swiglu_clamp.len() != self.n_layer {
            return err(format!(
                "{} SwiGLU clamps for {} layers",
                self.swiglu_clamp.len(),
                self.n_layer
            ));
        }
        if self.compress_ratios.contains(&1) {
            return err("compress ratio 1 is not a compression".into());
        }
        if self.compress_ratios.contains(&SPARSE_RATIO) {
            let d = self.indexer_head_dim;
            if self.indexer_heads == 0 || self.indexer_top_k == 0 {
                return err("ratio-4 layers need indexer heads and top-k".into());
            }
            // The indexer QAT rotates each head with a Hadamard transform and
            // quantizes it in FP4 blocks of 32, and its rows carry the RoPE tail.
            if !d.is_power_of_two() || d < self.n_rot || !d.is_multiple_of(32) {
                return err(format!(
                    "indexer head dim {d} must be a power of two, a multiple of 32 and >= rope dims"
                ));
            }
        }
        if self.hc_eps.is_nan() || self.rms_eps.is_nan() || self.rms_eps < 0.0 {
            return err("epsilons must be finite".into());
        }
        if !(self.rope_base > 1.0 && self.compress_rope_base > 1.0) {
            return err("RoPE bases must be > 1".into());
        }
        if !(self.yarn_factor >= 1.0 && self.yarn_orig_ctx > 0.0) {
            return err("YaRN factor must be >= 1 and original context > 0".into());
        }
        Ok(())
    }

    pub fn attn_kind(&self, layer: usize) -> AttnKind {
        match self.compress_ratios[layer] {
            0 => AttnKind::Window,
            SPARSE_RATIO => AttnKind::Sparse {
                ratio: SPARSE_RATIO,
            },
            r => AttnKind::Heavy { ratio: r },
        }
    }

    pub fn is_hash_layer(&self, layer: usize) -> bool {
        layer < self.n_hash_layer
    }

    /// Width of the HC state of one token.
    pub fn hc_width(&self) -> usize {
        self.hc * self.n_embd
    }

    /// Size of the mHC control vector: pre (hc) + post (hc) + comb (hc²).
    pub fn hc_mix(&self) -> usize {
        (2 + self.hc) * self.hc
    }

    /// Input width of one output group.
    pub fn o_group_in(&self) -> usize {
        self.n_head * self.head_dim / self.o_groups
    }

    /// Whether this file declares the published V4 Flash layout, which deserves the
    /// strict validation ds4 applies (spec §8).
    pub fn is_flash(&self) -> bool {
        self.n_layer == 43 && self.n_embd == 4096 && self.n_vocab == 129280
    }

    /// The published V4 Flash config (spec §1.1).
    pub fn flash() -> Self {
        let n_layer = 43;
        ModelConfig {
            n_layer,
            n_embd: 4096,
            n_vocab: 129280,
            n_head: 64,
            head_dim: 512,
            n_rot: 64,
            q_lora: 1024,
            o_lora: 1024,
            o_groups: 8,
            n_expert: 256,
            n_expert_used: 6,
            n_expert_shared: 1,
            expert_ff: 2048,
            n_hash_layer: 3,
            expert_weight_scale: 1.5,
            swiglu_clamp: vec![10.0; n_layer],
            sliding_window: 128,
            compress_ratios: (0..n_layer)
                .map(|l| match l {
                    0 | 1 => 0,
                    l if l % 2 == 0 => 4,
                    _ => 128,
                })
                .collect(),
            indexer_heads: 64,
            indexer_head_dim: 128,
            indexer_top_k: 512,
            hc: 4,
            hc_sinkhorn_iters: 20,
            hc_eps: 1e-6,
            rms_eps: 1e-6,
            rope_base: 10000.0,
            compress_rope_base: 160000.0,
            yarn_factor: 16.0,
            yarn_orig_ctx: 65536.0,
            yarn_beta_fast: 32.0,
            yarn_beta_slow: 1.0,
        }
    }

    /// When a file claims the Flash shape, every other value must be Flash's too (ds4
    /// refuses anything else; a near-Flash file is almost certainly a broken one).
    pub fn validate_flash_if_declared(&self) -> Result<()> {
        if self.is_flash() && *self != Self::flash() {
            return Err(EngineError::Config(
                "file declares the V4 Flash shape (43 x 4096, vocab 129280) but other \
                 hyperparameters differ from the published layout"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn flash_meta() -> HashMap<String, MetaValue> {
        ModelConfig::flash().to_metadata().into_iter().collect()
    }

    #[test]
    fn flash_metadata_round_trips() {
        let m = flash_meta();
        let cfg = ModelConfig::from_metadata(|k| m.get(k).cloned()).unwrap();
        assert_eq!(cfg, ModelConfig::flash());
        assert!(cfg.validate_flash_if_declared().is_ok());
        assert_eq!(cfg.attn_kind(2), AttnKind::Sparse { ratio: 4 });
        assert_eq!(cfg.attn_kind(3), AttnKind::Heavy { ratio: 128 });
        assert_eq!(cfg.attn_kind(1), AttnKind::Window);
        let sparse = (0..43).filter(|&l| cfg.compress_ratios[l] == 4).count();
        assert_eq!(sparse, 21);
    }

    #[test]
    fn missing_and_mistyped_keys_are_named() {
        let mut m = flash_meta();
        m.remove("deepseek4.attention.indexer.top_k");
        let e = ModelConfig::from_metadata(|k| m.get(k).cloned()).unwrap_err();
        assert!(
            e.to_string().contains("deepseek4.attention.indexer.top_k"),
            "{e}"
        );

        let mut m = flash_meta();
        m.insert("deepseek4.block_count".into(), MetaValue::F32(43.0));
        let e = ModelConfig::from_metadata(|k| m.get(k).cloned()).unwrap_err();
        assert!(e.to_string().contains("block_count"), "{e}");
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let mut m = flash_meta();
        m.insert(
            "deepseek4.attention.output_group_count".into(),
            MetaValue::U32(7),
        );
        assert!(ModelConfig::from_metadata(|k| m.get(k).cloned()).is_err());

        let mut m = flash_meta();
        m.insert(
            "deepseek4.attention.compress_ratios".into(),
            MetaValue::Array(vec![MetaValue::U32(0); 10]),
        );
        assert!(ModelConfig::from_metadata(|k| m.get(k).cloned()).is_err());

        // A file with the Flash shape but a different window is refused, like ds4 does.
        let mut cfg = ModelConfig::flash();
        cfg.sliding_window = 64;
        assert!(cfg.validate().is_ok());
        assert!(cfg.validate_flash_if_declared().is_err());
    }
}
