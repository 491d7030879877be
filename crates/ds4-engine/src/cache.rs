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

/// Append-only rows of one width in one flat buffer, reserved for the whole
/// context when the session is created, so decoding never reallocates (and a
/// context that cannot fit fails at the start, not hours into a session).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    width: usize,
    data: Vec<f32>,
}

impl Rows {
    pub fn with_capacity(width: usize, rows: usize) -> Self {
        Rows {
            width,
            data: Vec::with_capacity(width * rows),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows that fit without reallocating.
    pub fn capacity(&self) -> usize {
        self.data.capacity().checked_div(self.width).unwrap_or(0)
    }

    /// Appends one row; its length must be the width.
    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.width, "row width");
        self.data.extend_from_slice(row);
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.width..(i + 1) * self.width]
    }

    pub fn iter(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.width.max(1))
    }

    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerCache {
    /// Raw K=V rows of the last `window` positions, oldest first.
    pub raw: VecDeque<Vec<f32>>,
    /// Attention compressed rows, `head_dim` each, append-only.
    pub comp: Rows,
    pub comp_front: Option<Frontier>,
    /// Indexer compressed rows, `indexer_head_dim` each (ratio-4 layers).
    pub icomp: Rows,
    pub icomp_front: Option<Frontier>,
}

impl LayerCache {
    /// State for one layer, with room for the compressed rows of `ctx` tokens.
    pub fn new(cfg: &ModelConfig, layer: usize, ctx: usize) -> Self {
        let kind = cfg.attn_kind(layer);
        // Rows closed by `ctx` tokens, plus the spec's two spare (§4.1).
        let n_rows = match kind.ratio() {
            0 => 0,
            r => ctx / r + 2,
        };
        let n_irows = if matches!(kind, AttnKind::Sparse { .. }) {
            n_rows
        } else {
            0
        };
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
            comp: Rows::with_capacity(cfg.head_dim, n_rows),
            comp_front,
            icomp: Rows::with_capacity(cfg.indexer_head_dim, n_irows),
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
    /// The state of an empty session of `ctx` tokens, allocated up front.
    pub fn new(cfg: &ModelConfig, ctx: usize) -> Self {
        KvCache {
            layers: (0..cfg.n_layer)
                .map(|l| LayerCache::new(cfg, l, ctx))
                .collect(),
            n_tokens: 0,
        }
    }
}
