//! Per-layer KV state (spec §4.1): the raw sliding window, the compressed rows and
//! the compressors' frontier state.

use std::collections::VecDeque;

use crate::config::{AttnKind, ModelConfig};

/// Initial pooling score of an empty frontier slot: `exp(score − max)` is exactly 0
/// for it, and an all-empty column is detected by `score <= EMPTY_SCORE / 2`.
pub const EMPTY_SCORE: f32 = -1e30;

/// A compressor's pending window (spec §3.6): `rows = coff·ratio` slots of
/// `width = coff·d` projected values and gate scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    pub ratio: usize,
    pub coff: usize,
    pub d: usize,
    pub kv: Vec<f32>,
    pub score: Vec<f32>,
}

impl Frontier {
    pub fn new(ratio: usize, coff: usize, d: usize) -> Self {
        let n = coff * ratio * coff * d;
        Frontier {
            ratio,
            coff,
            d,
            kv: vec![0.0; n],
            score: vec![EMPTY_SCORE; n],
        }
    }
    pub fn width(&self) -> usize {
        self.coff * self.d
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerCache {
    /// Raw K=V rows of the last `window` positions, oldest first.
    pub raw: VecDeque<Vec<f32>>,
    /// Attention compressed rows, `head_dim` each, append-only.
    pub comp: Vec<Vec<f32>>,
    pub comp_front: Option<Frontier>,
    /// Indexer compressed rows, `indexer_head_dim` each (ratio-4 layers).
    pub icomp: Vec<Vec<f32>>,
    pub icomp_front: Option<Frontier>,
}

impl LayerCache {
    pub fn new(cfg: &ModelConfig, layer: usize) -> Self {
        let kind = cfg.attn_kind(layer);
        let (comp_front, icomp_front) = match kind {
            AttnKind::Window => (None, None),
            AttnKind::Heavy { ratio } => (Some(Frontier::new(ratio, 1, cfg.head_dim)), None),
            AttnKind::Sparse { ratio } => (
                Some(Frontier::new(ratio, 2, cfg.head_dim)),
                Some(Frontier::new(ratio, 2, cfg.indexer_head_dim)),
            ),
        };
        LayerCache {
            raw: VecDeque::with_capacity(cfg.sliding_window),
            comp: Vec::new(),
            comp_front,
            icomp: Vec::new(),
            icomp_front,
        }
    }
}

/// The whole model's state after `n_tokens` positions.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub n_tokens: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        KvCache {
            layers: (0..cfg.n_layer).map(|l| LayerCache::new(cfg, l)).collect(),
            n_tokens: 0,
        }
    }
}
