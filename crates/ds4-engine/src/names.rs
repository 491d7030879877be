//! Official DeepSeek checkpoint names ↔ ds4 GGUF tensor names (spec §2.5).
//!
//! HF rows map 1:1 to GGUF rows (no permutation), so a name mapping is all a
//! converter needs besides dequantization. Routed experts are per-expert tensors in
//! the official checkpoint and one 3-D tensor per projection in the GGUF.

/// Global tensors: (official, GGUF).
pub const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("embed.weight", "token_embd.weight"),
    ("head.weight", "output.weight"),
    ("norm.weight", "output_norm.weight"),
    ("hc_head_fn", "output_hc_fn.weight"),
    ("hc_head_base", "output_hc_base.weight"),
    ("hc_head_scale", "output_hc_scale.weight"),
];

/// Per-layer tensors, after the `layers.N.` / `blk.N.` prefix: (official, GGUF).
pub const LAYER_NAMES: &[(&str, &str)] = &[
    ("hc_attn_fn", "hc_attn_fn.weight"),
    ("hc_attn_base", "hc_attn_base.weight"),
    ("hc_attn_scale", "hc_attn_scale.weight"),
    ("hc_ffn_fn", "hc_ffn_fn.weight"),
    ("hc_ffn_base", "hc_ffn_base.weight"),
    ("hc_ffn_scale", "hc_ffn_scale.weight"),
    ("attn_norm.weight", "attn_norm.weight"),
    ("ffn_norm.weight", "ffn_norm.weight"),
    ("attn.attn_sink", "attn_sinks.weight"),
    ("attn.wq_a.weight", "attn_q_a.weight"),
    ("attn.q_norm.weight", "attn_q_a_norm.weight"),
    ("attn.wq_b.weight", "attn_q_b.weight"),
    ("attn.wkv.weight", "attn_kv.weight"),
    ("attn.kv_norm.weight", "attn_kv_a_norm.weight"),
    ("attn.wo_a.weight", "attn_output_a.weight"),
    ("attn.wo_b.weight", "attn_output_b.weight"),
    ("attn.compressor.ape", "attn_compressor_ape.weight"),
    ("attn.compressor.wkv.weight", "attn_compressor_kv.weight"),
    (
        "attn.compressor.wgate.weight",
        "attn_compressor_gate.weight",
    ),
    ("attn.compressor.norm.weight", "attn_compressor_norm.weight"),
    ("attn.indexer.wq_b.weight", "indexer.attn_q_b.weight"),
    ("attn.indexer.weights_proj.weight", "indexer.proj.weight"),
    (
        "attn.indexer.compressor.ape",
        "indexer_compressor_ape.weight",
    ),
    (
        "attn.indexer.compressor.wkv.weight",
        "indexer_compressor_kv.weight",
    ),
    (
        "attn.indexer.compressor.wgate.weight",
        "indexer_compressor_gate.weight",
    ),
    (
        "attn.indexer.compressor.norm.weight",
        "indexer_compressor_norm.weight",
    ),
    ("ffn.gate.weight", "ffn_gate_inp.weight"),
    ("ffn.gate.bias", "exp_probs_b.bias"),
    ("ffn.gate.tid2eid", "ffn_gate_tid2eid.weight"),
    ("ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight"),
    ("ffn.shared_experts.w3.weight", "ffn_up_shexp.weight"),
    ("ffn.shared_experts.w2.weight", "ffn_down_shexp.weight"),
];

/// Per-expert projections: (official `wN` suffix, GGUF 3-D tensor).
pub const EXPERT_NAMES: &[(&str, &str)] = &[
    ("w1.weight", "ffn_gate_exps.weight"),
    ("w3.weight", "ffn_up_exps.weight"),
    ("w2.weight", "ffn_down_exps.weight"),
];

/// Where an official tensor goes in a ds4 GGUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufTarget {
    /// The whole tensor, under this name.
    Whole(String),
    /// One expert's slice (`expert` along the outermost GGUF axis) of a 3-D tensor.
    Expert { name: String, expert: usize },
}

/// Maps an official checkpoint name to its ds4 GGUF destination. `None` for names
/// the GGUF does not carry (FP8 `.scale` companions, MTP tensors, unknown names).
pub fn official_to_gguf(official: &str) -> Option<GgufTarget> {
    if let Some(&(_, g)) = GLOBAL_NAMES.iter().find(|(o, _)| *o == official) {
        return Some(GgufTarget::Whole(g.to_string()));
    }
    let rest = official.strip_prefix("layers.")?;
    let (layer, sub) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some(&(_, g)) = LAYER_NAMES.iter().find(|(o, _)| *o == sub) {
        return Some(GgufTarget::Whole(format!("blk.{layer}.{g}")));
    }
    let ex = sub.strip_prefix("ffn.experts.")?;
    let (e, w) = ex.split_once('.')?;
    let expert: usize = e.parse().ok()?;
    let &(_, g) = EXPERT_NAMES.iter().find(|(o, _)| *o == w)?;
    Some(GgufTarget::Expert {
        name: format!("blk.{layer}.{g}"),
        expert,
    })
}

/// The inverse for non-expert tensors: the official name of a GGUF tensor.
pub fn gguf_to_official(gguf: &str) -> Option<String> {
    if let Some(&(o, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == gguf) {
        return Some(o.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, sub) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(o, _) = LAYER_NAMES.iter().find(|(_, g)| *g == sub)?;
    Some(format!("layers.{layer}.{o}"))
}

/// The official name of expert `e`'s slice of a GGUF 3-D expert tensor.
pub fn gguf_expert_to_official(gguf: &str, expert: usize) -> Option<String> {
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, sub) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(o, _) = EXPERT_NAMES.iter().find(|(_, g)| *g == sub)?;
    Some(format!("layers.{layer}.ffn.experts.{expert}.{o}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (o, g) in GLOBAL_NAMES {
            assert_eq!(official_to_gguf(o), Some(GgufTarget::Whole(g.to_string())));
            assert_eq!(gguf_to_official(g).as_deref(), Some(*o));
        }
        for (o, g) in LAYER_NAMES {
            let official = format!("layers.17.{o}");
            let gguf = format!("blk.17.{g}");
            assert_eq!(
                official_to_gguf(&official),
                Some(GgufTarget::Whole(gguf.clone()))
            );
            assert_eq!(gguf_to_official(&gguf), Some(official));
        }
        assert_eq!(
            official_to_gguf("layers.3.ffn.experts.255.w3.weight"),
            Some(GgufTarget::Expert {
                name: "blk.3.ffn_up_exps.weight".into(),
                expert: 255
            })
        );
        assert_eq!(
            gguf_expert_to_official("blk.3.ffn_down_exps.weight", 9).as_deref(),
            Some("layers.3.ffn.experts.9.w2.weight")
        );
        assert_eq!(official_to_gguf("layers.0.attn.wq_a.scale"), None);
        assert_eq!(official_to_gguf("mtp.0.e_proj.weight"), None);
        assert_eq!(official_to_gguf("layers.x.attn_norm.weight"), None);
    }
}
