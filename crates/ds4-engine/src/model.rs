//! The whole model for one token (spec §3.12): embedding → HC init → layers → HC
//! collapse → norm → LM head.

use std::path::Path;

use crate::cache::KvCache;
use crate::config::{AttnKind, ModelConfig};
use crate::error::{EngineError, Result};
use crate::gguf::{GgufSource, validate_flash_types};
use crate::hc::hc_head;
use crate::layer::{ForwardOptions, LayerCtx, LayerTrace, layer_forward};
use crate::official::OfficialCheckpoint;
use crate::ops::{Rope, rmsnorm};
use crate::weights::{WeightSource, Weights};

pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// Window-only layers: plain RoPE at `rope_base`.
    rope_main: Rope,
    /// Compressed layers: YaRN at `compress_rope_base`, for every rotation in them.
    rope_compress: Rope,
}

/// Optional per-token record of what the forward did.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// HC state entering each layer (`n_layer` entries), then the final normed hidden.
    pub hidden: Vec<Vec<f32>>,
    pub layers: Vec<LayerTrace>,
}

impl Model {
    pub fn new(cfg: ModelConfig, src: &dyn WeightSource) -> Result<Self> {
        cfg.validate()?;
        cfg.validate_flash_if_declared()?;
        let weights = Weights::bind(&cfg, src)?;
        let rope_main = Rope::plain(cfg.n_rot, cfg.rope_base);
        let rope_compress = Rope::yarn(
            cfg.n_rot,
            cfg.compress_rope_base,
            cfg.yarn_factor,
            cfg.yarn_orig_ctx,
            cfg.yarn_beta_fast,
            cfg.yarn_beta_slow,
        );
        Ok(Model {
            cfg,
            weights,
            rope_main,
            rope_compress,
        })
    }

    /// Loads an unquantized official-format checkpoint directory.
    pub fn from_official_dir(dir: &Path) -> Result<Self> {
        let (cfg, ckpt) = OfficialCheckpoint::open(dir)?;
        Model::new(cfg, &ckpt)
    }

    /// Opens a ds4 GGUF file (weights stay memory-mapped).
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let (cfg, src) = GgufSource::open(path)?;
        if cfg.is_flash() {
            validate_flash_types(src.file().tensors().iter().map(|t| (t.name.as_str(), t.ty)))?;
        }
        Model::new(cfg, &src)
    }

    /// A GGUF file, or an official checkpoint directory (tools that take either).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_official_dir(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// An empty cache that grows as needed (tests and one-off runs).
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.cfg, 0)
    }

    /// An empty cache with every compressed row of `ctx` tokens allocated.
    pub fn new_cache_for(&self, ctx: usize) -> KvCache {
        KvCache::new(&self.cfg, ctx)
    }

    /// The rotation table layer `layer` uses (plain for window layers, YaRN else).
    pub fn rope_for(&self, layer: usize) -> &Rope {
        match self.cfg.attn_kind(layer) {
            AttnKind::Window => &self.rope_main,
            _ => &self.rope_compress,
        }
    }

    /// Runs token `tok` at position `cache.n_tokens`, updating the cache; returns the
    /// logits over the vocabulary.
    pub fn forward_token(
        &self,
        cache: &mut KvCache,
        tok: u32,
        opts: ForwardOptions,
    ) -> Result<Vec<f32>> {
        self.forward_token_traced(cache, tok, opts, None)
    }

    pub fn forward_token_traced(
        &self,
        cache: &mut KvCache,
        tok: u32,
        opts: ForwardOptions,
        trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>> {
        let mut traces = vec![Trace::default()];
        let mut out = self.forward_batch(cache, &[tok], opts, LogitsFor::All, Some(&mut traces))?;
        if let (Some(t), Some(mine)) = (trace, traces.pop()) {
            *t = mine;
        }
        out.pop().ok_or(EngineError::NoLogits)
    }

    /// Prefills `toks` in chunks of `chunk` tokens (layer-major inside a chunk) and
    /// returns the logits after the last token. Identical to decoding them one by one.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        toks: &[u32],
        chunk: usize,
        opts: ForwardOptions,
    ) -> Result<Vec<f32>> {
        let mut last = None;
        for c in toks.chunks(chunk.max(1)) {
            last = self
                .forward_batch(cache, c, opts, LogitsFor::Last, None)?
                .pop();
        }
        last.ok_or(EngineError::NoLogits)
    }

    /// Teacher-forced logits at every position of `toks` (row t predicts token
    /// t+1), computed in layer-major chunks: what `ds4 --dump-logits` writes.
    pub fn teacher_forced_logits(
        &self,
        toks: &[u32],
        chunk: usize,
        opts: ForwardOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache();
        let mut out = Vec::with_capacity(toks.len());
        for c in toks.chunks(chunk.max(1)) {
            out.extend(self.forward_batch(&mut cache, c, opts, LogitsFor::All, None)?);
        }
        Ok(out)
    }

    /// Runs a run of consecutive tokens through the model layer by layer: layer L of
    /// token t needs only layers < L of tokens <= t and layer L's cache, so all
    /// tokens go through layer 0, then layer 1, ... (ds4's prefill schedule). Returns
    /// the logits of every token or of the last one.
    pub fn forward_batch(
        &self,
        cache: &mut KvCache,
        toks: &[u32],
        opts: ForwardOptions,
        which: LogitsFor,
        mut traces: Option<&mut Vec<Trace>>,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        if let Some(&bad) = toks.iter().find(|&&t| t as usize >= cfg.n_vocab) {
            return Err(EngineError::TokenOutOfRange {
                token: bad,
                vocab: cfg.n_vocab,
            });
        }
        let pos0 = cache.n_tokens;
        let mut xs = toks
            .iter()
            .map(|&t| {
                let e = self.weights.token_embd.row_f32(t as usize)?;
                Ok((0..cfg.hc).flat_map(|_| e.iter().copied()).collect())
            })
            .collect::<Result<Vec<Vec<f32>>>>()?;
        if let Some(ts) = traces.as_deref_mut() {
            ts.clear();
            ts.resize(toks.len(), Trace::default());
        }
        let mut lts = vec![LayerTrace::default(); toks.len()];
        for (l, (w, lc)) in self
            .weights
            .layers
            .iter()
            .zip(cache.layers.iter_mut())
            .enumerate()
        {
            if let Some(ts) = traces.as_deref_mut() {
                for (t, x) in ts.iter_mut().zip(&xs) {
                    t.hidden.push(x.clone());
                }
            }
            let ctx = LayerCtx {
                cfg,
                layer: l,
                rope: self.rope_for(l),
                opts,
            };
            xs = layer_forward(&ctx, w, lc, xs, toks, pos0, &mut lts)?;
            if let Some(ts) = traces.as_deref_mut() {
                for (t, lt) in ts.iter_mut().zip(&lts) {
                    t.layers.push(lt.clone());
                }
            }
        }
        cache.n_tokens += toks.len();
        let first = match which {
            LogitsFor::All => 0,
            LogitsFor::Last => toks.len().saturating_sub(1),
        };
        let mut yns = Vec::with_capacity(toks.len() - first);
        for (i, x) in xs.iter().enumerate().skip(first) {
            let y = hc_head(x, &self.weights.output_hc, cfg.hc, cfg.hc_eps, cfg.rms_eps)?;
            let mut yn = vec![0.0; cfg.n_embd];
            rmsnorm(&y, &self.weights.output_norm, cfg.rms_eps, &mut yn);
            if let Some(ts) = traces.as_deref_mut() {
                ts[i].hidden.push(yn.clone());
            }
            yns.push(yn);
        }
        self.weights.output.matmul(&yns)
    }
}

/// Which positions of a batch get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    All,
    Last,
}
