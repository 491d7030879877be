//! The published ds4 GGUF layout of DeepSeek V4 Flash: which tensors a file
//! holds, their ggml shapes and, per recipe, their types. `ds4-quantize
//! --synthetic` writes exactly this; the shapes follow spec/architecture.md §2.2
//! (ggml order: `dims[0]` is the contiguous input dimension).

use anyhow::{Result, bail};
use ds4_gguf::GgmlType;
use serde::Deserialize;

/// Every size of the model. Defaults are the Flash release; a JSON config may
/// override any field to make a smaller model of the same architecture.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_vocab: u32,
    pub n_head: u32,
    pub head_dim: u32,
    pub n_rot: u32,
    pub q_lora_rank: u32,
    pub o_lora_rank: u32,
    pub o_groups: u32,
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_expert_shared: u32,
    pub ff_exp: u32,
    pub n_hash_layer: u32,
    pub sliding_window: u32,
    /// Per-layer compression ratio; `None` means Flash's schedule
    /// (0 for the first two layers, then 4 on even and 128 on odd layers).
    pub compress_ratios: Option<Vec<u32>>,
    pub indexer_heads: u32,
    pub indexer_dim: u32,
    pub indexer_top_k: u32,
    pub hc: u32,
    pub hc_sinkhorn_iter: u32,
    pub hc_eps: f32,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub compress_rope_base: f32,
    pub rope_scaling_factor: f32,
    pub rope_orig_ctx: u32,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub expert_weights_scale: f32,
    pub swiglu_clamp: f32,
    pub context_length: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            n_layer: 43,
            n_embd: 4096,
            n_vocab: 129_280,
            n_head: 64,
            head_dim: 512,
            n_rot: 64,
            q_lora_rank: 1024,
            o_lora_rank: 1024,
            o_groups: 8,
            n_expert: 256,
            n_expert_used: 6,
            n_expert_shared: 1,
            ff_exp: 2048,
            n_hash_layer: 3,
            sliding_window: 128,
            compress_ratios: None,
            indexer_heads: 64,
            indexer_dim: 128,
            indexer_top_k: 512,
            hc: 4,
            hc_sinkhorn_iter: 20,
            hc_eps: 1e-6,
            rms_eps: 1e-6,
            rope_base: 10_000.0,
            compress_rope_base: 160_000.0,
            rope_scaling_factor: 16.0,
            rope_orig_ctx: 65_536,
            yarn_beta_fast: 32.0,
            yarn_beta_slow: 1.0,
            expert_weights_scale: 1.5,
            swiglu_clamp: 10.0,
            context_length: 1_048_576,
        }
    }
}

impl Shape {
    pub fn compress_ratio(&self, layer: u32) -> u32 {
        match &self.compress_ratios {
            Some(r) => r[layer as usize],
            None if layer < 2 => 0,
            None if layer.is_multiple_of(2) => 4,
            None => 128,
        }
    }

    pub fn ratios(&self) -> Vec<u32> {
        (0..self.n_layer).map(|l| self.compress_ratio(l)).collect()
    }

    /// Width of the HC mixing vector: `pre` (hc) + `post` (hc) + `comb` (hc×hc).
    pub fn hc_mix(&self) -> u32 {
        (2 + self.hc) * self.hc
    }

    pub fn validate(&self) -> Result<()> {
        let nz = [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_vocab", self.n_vocab),
            ("n_head", self.n_head),
            ("head_dim", self.head_dim),
            ("q_lora_rank", self.q_lora_rank),
            ("o_lora_rank", self.o_lora_rank),
            ("o_groups", self.o_groups),
            ("n_expert", self.n_expert),
            ("n_expert_used", self.n_expert_used),
            ("ff_exp", self.ff_exp),
            ("sliding_window", self.sliding_window),
            ("indexer_heads", self.indexer_heads),
            ("indexer_dim", self.indexer_dim),
            ("indexer_top_k", self.indexer_top_k),
            ("hc", self.hc),
        ];
        for (name, v) in nz {
            if v == 0 {
                bail!("config: {name} must be > 0");
            }
        }
        if self.n_rot > self.head_dim || !self.n_rot.is_multiple_of(2) {
            bail!(
                "config: n_rot ({}) must be even and at most head_dim ({})",
                self.n_rot,
                self.head_dim
            );
        }
        if !self.n_head.is_multiple_of(self.o_groups) {
            bail!(
                "config: n_head ({}) must be a multiple of o_groups ({})",
                self.n_head,
                self.o_groups
            );
        }
        if self.n_expert_used > self.n_expert {
            bail!(
                "config: n_expert_used ({}) exceeds n_expert ({})",
                self.n_expert_used,
                self.n_expert
            );
        }
        if self.n_hash_layer > self.n_layer {
            bail!(
                "config: n_hash_layer ({}) exceeds n_layer ({})",
                self.n_hash_layer,
                self.n_layer
            );
        }
        if let Some(r) = &self.compress_ratios {
            if r.len() != self.n_layer as usize {
                bail!(
                    "config: compress_ratios has {} entries for {} layers",
                    r.len(),
                    self.n_layer
                );
            }
            if let Some(bad) = r.iter().find(|&&x| x != 0 && x != 4 && x < 2) {
                bail!("config: compress ratio {bad} is not supported (0, 4 or a larger ratio)");
            }
        }
        Ok(())
    }
}

/// Tensor type choices of a quantization recipe (spec §2.2 and gguf-tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// IQ2_XXS routed gate/up, Q2_K routed down; Q8_0 attention/shared/output.
    Q2,
    /// Q4_K routed experts; otherwise as Q2.
    Q4,
    /// Q8_0 routed experts; otherwise as Q2.
    Q8,
    /// Every matrix F16 (norms and biases stay F32).
    F16,
    /// Everything F32.
    F32,
}

impl Recipe {
    pub fn parse(s: &str) -> Result<Recipe> {
        Ok(match s {
            "q2" => Recipe::Q2,
            "q4" => Recipe::Q4,
            "q8" => Recipe::Q8,
            "f16" => Recipe::F16,
            "f32" => Recipe::F32,
            _ => bail!("unknown recipe `{s}` (expected q2, q4, q8, f16 or f32)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Recipe::Q2 => "q2",
            Recipe::Q4 => "q4",
            Recipe::Q8 => "q8",
            Recipe::F16 => "f16",
            Recipe::F32 => "f32",
        }
    }

    /// Type for a tensor of the given role.
    fn ty(self, role: Role) -> GgmlType {
        use GgmlType as T;
        match (self, role) {
            (_, Role::Norm) => T::F32,
            (_, Role::Index) => T::I32,
            (Recipe::F32, _) => T::F32,
            (Recipe::F16, _) => T::F16,
            (_, Role::Small) => T::F16,
            (_, Role::Dense) => T::Q8_0,
            (Recipe::Q2, Role::ExpertGateUp) => T::Iq2Xxs,
            (Recipe::Q2, Role::ExpertDown) => T::Q2K,
            (Recipe::Q4, Role::ExpertGateUp | Role::ExpertDown) => T::Q4K,
            (Recipe::Q8, Role::ExpertGateUp | Role::ExpertDown) => T::Q8_0,
        }
    }
}

/// What a tensor is, which decides its type under a recipe and how synthetic
/// values for it are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// RMSNorm weights, scales, biases, sinks: always F32.
    Norm,
    /// Token → expert table of hash-routed layers: I32.
    Index,
    /// Embedding, HC projections, router, compressors, indexers: F16.
    Small,
    /// Attention projections, shared experts, LM head: Q8_0.
    Dense,
    ExpertGateUp,
    ExpertDown,
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub role: Role,
}

impl TensorSpec {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Fan-in used to scale synthetic values (RMS ≈ 1/√fan_in keeps activations
    /// finite through 43 layers of random weights).
    pub fn fan_in(&self) -> u64 {
        self.dims[0]
    }
}

/// The tensor list of a ds4 GGUF in file order (globals, then layer by layer).
pub fn tensors(shape: &Shape, recipe: Recipe) -> Result<Vec<TensorSpec>> {
    shape.validate()?;
    let s = shape;
    let mut out = Vec::new();
    let mut push = |name: String, dims: Vec<u32>, role: Role| {
        out.push(TensorSpec {
            name,
            dims: dims.into_iter().map(u64::from).collect(),
            ty: recipe.ty(role),
            role,
        });
    };
    let e = s.n_embd;
    let hce = s.hc * e;
    push("token_embd.weight".into(), vec![e, s.n_vocab], Role::Small);
    push("output_hc_fn.weight".into(), vec![hce, s.hc], Role::Small);
    push("output_hc_scale.weight".into(), vec![1], Role::Norm);
    push("output_hc_base.weight".into(), vec![s.hc], Role::Norm);
    push("output_norm.weight".into(), vec![e], Role::Norm);
    push("output.weight".into(), vec![e, s.n_vocab], Role::Dense);
    let hd = s.head_dim;
    let q_out = s.n_head * hd;
    for l in 0..s.n_layer {
        let b = |suffix: &str| format!("blk.{l}.{suffix}");
        let ratio = s.compress_ratio(l);
        push(b("hc_attn_fn.weight"), vec![hce, s.hc_mix()], Role::Small);
        push(b("hc_attn_scale.weight"), vec![3], Role::Norm);
        push(b("hc_attn_base.weight"), vec![s.hc_mix()], Role::Norm);
        push(b("attn_norm.weight"), vec![e], Role::Norm);
        push(b("attn_q_a.weight"), vec![e, s.q_lora_rank], Role::Dense);
        push(b("attn_q_a_norm.weight"), vec![s.q_lora_rank], Role::Norm);
        push(
            b("attn_q_b.weight"),
            vec![s.q_lora_rank, q_out],
            Role::Dense,
        );
        push(b("attn_kv.weight"), vec![e, hd], Role::Dense);
        push(b("attn_kv_a_norm.weight"), vec![hd], Role::Norm);
        push(b("attn_sinks.weight"), vec![s.n_head], Role::Norm);
        push(
            b("attn_output_a.weight"),
            vec![q_out / s.o_groups, s.o_groups * s.o_lora_rank],
            Role::Dense,
        );
        push(
            b("attn_output_b.weight"),
            vec![s.o_groups * s.o_lora_rank, e],
            Role::Dense,
        );
        if ratio != 0 {
            let cw = if ratio == 4 { 2 * hd } else { hd };
            push(
                b("attn_compressor_ape.weight"),
                vec![cw, ratio],
                Role::Small,
            );
            push(b("attn_compressor_kv.weight"), vec![e, cw], Role::Small);
            push(b("attn_compressor_gate.weight"), vec![e, cw], Role::Small);
            push(b("attn_compressor_norm.weight"), vec![hd], Role::Norm);
        }
        if ratio == 4 {
            let iw = 2 * s.indexer_dim;
            push(
                b("indexer.attn_q_b.weight"),
                vec![s.q_lora_rank, s.indexer_heads * s.indexer_dim],
                Role::Small,
            );
            push(
                b("indexer.proj.weight"),
                vec![e, s.indexer_heads],
                Role::Small,
            );
            push(b("indexer_compressor_ape.weight"), vec![iw, 4], Role::Small);
            push(b("indexer_compressor_kv.weight"), vec![e, iw], Role::Small);
            push(
                b("indexer_compressor_gate.weight"),
                vec![e, iw],
                Role::Small,
            );
            push(
                b("indexer_compressor_norm.weight"),
                vec![s.indexer_dim],
                Role::Norm,
            );
        }
        push(b("hc_ffn_fn.weight"), vec![hce, s.hc_mix()], Role::Small);
        push(b("hc_ffn_scale.weight"), vec![3], Role::Norm);
        push(b("hc_ffn_base.weight"), vec![s.hc_mix()], Role::Norm);
        push(b("ffn_norm.weight"), vec![e], Role::Norm);
        push(b("ffn_gate_inp.weight"), vec![e, s.n_expert], Role::Small);
        if l >= s.n_hash_layer {
            push(b("exp_probs_b.bias"), vec![s.n_expert], Role::Norm);
        }
        push(
            b("ffn_gate_exps.weight"),
            vec![e, s.ff_exp, s.n_expert],
            Role::ExpertGateUp,
        );
        push(
            b("ffn_up_exps.weight"),
            vec![e, s.ff_exp, s.n_expert],
            Role::ExpertGateUp,
        );
        push(
            b("ffn_down_exps.weight"),
            vec![s.ff_exp, e, s.n_expert],
            Role::ExpertDown,
        );
        let ffs = s.ff_exp * s.n_expert_shared;
        push(b("ffn_gate_shexp.weight"), vec![e, ffs], Role::Dense);
        push(b("ffn_up_shexp.weight"), vec![e, ffs], Role::Dense);
        push(b("ffn_down_shexp.weight"), vec![ffs, e], Role::Dense);
        if l < s.n_hash_layer {
            push(
                b("ffn_gate_tid2eid.weight"),
                vec![s.n_expert_used, s.n_vocab],
                Role::Index,
            );
        }
    }
    for t in &out {
        if t.dims[0] % t.ty.block_size() as u64 != 0 {
            bail!(
                "config: {} has row length {} which is not a multiple of {}'s block size {}",
                t.name,
                t.dims[0],
                t.ty,
                t.ty.block_size()
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_q2_layout_matches_the_published_file() {
        let t = tensors(&Shape::default(), Recipe::Q2).unwrap();
        // The published q2 file: 1328 tensors, 86.72 GB (spec/perf-anchor.md).
        assert_eq!(t.len(), 1328);
        let bytes: u64 = t
            .iter()
            .map(|t| t.ty.bytes_for(t.n_elements()).unwrap())
            .sum();
        assert!((bytes as f64 / 1e9 - 86.72).abs() < 0.01, "{bytes}");
        let q4: u64 = tensors(&Shape::default(), Recipe::Q4)
            .unwrap()
            .iter()
            .map(|t| t.ty.bytes_for(t.n_elements()).unwrap())
            .sum();
        // ≈164.6 GB for q4 (spec §2.2).
        assert!((q4 as f64 / 1e9 - 164.6).abs() < 0.1, "{q4}");
    }

    #[test]
    fn schedule_and_optional_tensors() {
        let s = Shape::default();
        assert_eq!(&s.ratios()[..6], &[0, 0, 4, 128, 4, 128]);
        let t = tensors(&s, Recipe::Q2).unwrap();
        let has = |n: &str| t.iter().any(|t| t.name == n);
        assert!(has("blk.2.ffn_gate_tid2eid.weight") && !has("blk.3.ffn_gate_tid2eid.weight"));
        assert!(!has("blk.2.exp_probs_b.bias") && has("blk.3.exp_probs_b.bias"));
        assert!(has("blk.2.indexer.proj.weight") && !has("blk.3.indexer.proj.weight"));
        assert!(!has("blk.1.attn_compressor_kv.weight"));
    }

    #[test]
    fn block_size_violations_are_reported() {
        let s = Shape {
            n_embd: 48,
            ..Shape::default()
        };
        let err = tensors(&s, Recipe::Q2).unwrap_err().to_string();
        assert!(err.contains("not a multiple"), "{err}");
    }
}
