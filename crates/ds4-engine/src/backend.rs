//! Where the forward pass runs. The CPU path of this crate is the reference; other
//! backends (ds4-cuda) implement the same two traits and are tested against it.
//!
//! A [`Backend`] owns the weights; a [`ForwardState`] is one context's KV state on
//! that backend. Callers (CLI, bench, server) drive a state with token runs and never
//! see a tensor.

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::layer::ForwardOptions;
use crate::model::{LogitsFor, Model};

/// One context's state on a backend.
pub trait ForwardState: Send {
    /// Positions already evaluated.
    fn n_tokens(&self) -> usize;
    /// Context size the state was created for.
    fn ctx(&self) -> usize;
    /// Runs `toks` at positions `n_tokens()..`, layer-major over the run, and returns
    /// the logits of every token or of the last. `toks.len()` is at most
    /// [`ForwardState::max_batch`].
    fn forward(&mut self, toks: &[u32], which: LogitsFor) -> Result<Vec<Vec<f32>>>;
    /// Runs one token, as `forward(&[tok], LogitsFor::Last)`, and returns the greedy
    /// choice of the next one: [`crate::sampling::argmax`] over those logits with
    /// `banned` (an id a caller excludes, such as EOS) set to −∞. `None` where every
    /// logit is NaN. A backend whose logits live elsewhere (a GPU) picks there and keeps
    /// the logits' copy and scan off the host.
    fn forward_greedy(&mut self, tok: u32, banned: Option<u32>) -> Result<Option<u32>> {
        host_greedy(self, tok, banned)
    }
    /// Back to an empty context (allocations are kept).
    fn reset(&mut self) -> Result<()>;
    /// Longest run [`ForwardState::forward`] takes at once.
    fn max_batch(&self) -> usize;
    /// A copy of the whole state (kept where the state lives: host or device memory).
    fn snapshot(&self) -> Result<StateSnapshot>;
    /// Returns to a snapshot taken from this state.
    fn restore(&mut self, snap: &StateSnapshot) -> Result<()>;
    /// Bytes of KV state in use at the current position (raw window, compressed
    /// rows, compressor frontiers), as this backend stores them.
    fn kv_bytes(&self) -> usize;
}

/// [`ForwardState::forward_greedy`] on the host: the step's logits back, then
/// [`crate::sampling::argmax_banned`] over them (the default, and a backend's fallback).
pub fn host_greedy<S: ForwardState + ?Sized>(
    st: &mut S,
    tok: u32,
    banned: Option<u32>,
) -> Result<Option<u32>> {
    let mut logits = st
        .forward(&[tok], LogitsFor::Last)?
        .pop()
        .ok_or(EngineError::NoLogits)?;
    Ok(crate::sampling::argmax_banned(&mut logits, banned))
}

/// An opaque copy of a [`ForwardState`] (see [`ForwardState::snapshot`]).
pub struct StateSnapshot {
    pub n_tokens: usize,
    pub data: Box<dyn std::any::Any + Send>,
}

/// Bytes of f32 KV state after `n` tokens: per layer the raw window, the compressed
/// (and indexer) rows closed so far and the compressors' frontier slots.
pub fn kv_state_bytes(cfg: &ModelConfig, n: usize) -> usize {
    let mut total = 0;
    for l in 0..cfg.n_layer {
        let kind = cfg.attn_kind(l);
        total += n.min(cfg.sliding_window) * cfg.head_dim;
        let r = kind.ratio();
        if let Some(rows) = n.checked_div(r) {
            let coff = kind.coff();
            total += rows * cfg.head_dim + 2 * coff * r * coff * cfg.head_dim;
            if matches!(kind, crate::config::AttnKind::Sparse { .. }) {
                let di = cfg.indexer_head_dim;
                total += rows * di + 2 * 2 * r * 2 * di;
            }
        }
    }
    total * 4
}

/// A model loaded on some device.
pub trait Backend: Sync {
    /// Short name for logs and bench output ("cpu", "cuda:0 NVIDIA H200").
    fn name(&self) -> String;
    fn config(&self) -> &ModelConfig;
    /// An empty state for `ctx` tokens; everything it needs is allocated here.
    fn new_state(&self, ctx: usize, opts: ForwardOptions) -> Result<Box<dyn ForwardState + '_>>;
}

/// Prefills `toks` in runs of at most `chunk` tokens; returns the last logits.
pub fn prefill(st: &mut dyn ForwardState, toks: &[u32], chunk: usize) -> Result<Vec<f32>> {
    check_room(st, toks.len())?;
    let chunk = chunk.clamp(1, st.max_batch());
    let mut last = None;
    for c in toks.chunks(chunk) {
        last = st.forward(c, LogitsFor::Last)?.pop();
    }
    last.ok_or(EngineError::NoLogits)
}

/// Teacher-forced logits at every position of `toks`, in runs of `chunk`.
pub fn teacher_forced(
    st: &mut dyn ForwardState,
    toks: &[u32],
    chunk: usize,
) -> Result<Vec<Vec<f32>>> {
    check_room(st, toks.len())?;
    let chunk = chunk.clamp(1, st.max_batch());
    let mut out = Vec::with_capacity(toks.len());
    for c in toks.chunks(chunk) {
        out.extend(st.forward(c, LogitsFor::All)?);
    }
    Ok(out)
}

fn check_room(st: &dyn ForwardState, n: usize) -> Result<()> {
    if st.n_tokens() + n > st.ctx() {
        return Err(EngineError::ContextFull {
            pos: st.n_tokens() + n,
            ctx: st.ctx(),
        });
    }
    Ok(())
}

/// The reference backend: this crate's forward pass on the CPU.
pub struct CpuBackend<'m> {
    pub model: &'m Model,
}

struct CpuState<'m> {
    model: &'m Model,
    cache: KvCache,
    opts: ForwardOptions,
    ctx: usize,
}

impl Backend for CpuBackend<'_> {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn config(&self) -> &ModelConfig {
        &self.model.cfg
    }
    fn new_state(&self, ctx: usize, opts: ForwardOptions) -> Result<Box<dyn ForwardState + '_>> {
        Ok(Box::new(CpuState {
            model: self.model,
            cache: self.model.new_cache_for(ctx),
            opts,
            ctx,
        }))
    }
}

impl ForwardState for CpuState<'_> {
    fn n_tokens(&self) -> usize {
        self.cache.n_tokens
    }
    fn ctx(&self) -> usize {
        self.ctx
    }
    fn forward(&mut self, toks: &[u32], which: LogitsFor) -> Result<Vec<Vec<f32>>> {
        self.model
            .forward_batch(&mut self.cache, toks, self.opts, which, None)
    }
    fn reset(&mut self) -> Result<()> {
        self.cache = self.model.new_cache_for(self.ctx);
        Ok(())
    }
    fn max_batch(&self) -> usize {
        usize::MAX
    }
    fn snapshot(&self) -> Result<StateSnapshot> {
        Ok(StateSnapshot {
            n_tokens: self.cache.n_tokens,
            data: Box::new(self.cache.clone()),
        })
    }
    fn restore(&mut self, snap: &StateSnapshot) -> Result<()> {
        let cache = snap
            .data
            .downcast_ref::<KvCache>()
            .ok_or_else(|| EngineError::Config("snapshot of another backend".into()))?;
        self.cache = cache.clone();
        Ok(())
    }
    fn kv_bytes(&self) -> usize {
        kv_state_bytes(&self.model.cfg, self.cache.n_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_backend_equals_model_and_refuses_overflow() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4");
        let model = Model::from_official_dir(&dir).unwrap();
        let toks: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 200).collect();
        let want = model
            .teacher_forced_logits(&toks, 16, ForwardOptions::default())
            .unwrap();
        let be = CpuBackend { model: &model };
        let mut st = be.new_state(64, ForwardOptions::default()).unwrap();
        let got = teacher_forced(st.as_mut(), &toks, 7).unwrap();
        assert_eq!(got, want);
        assert_eq!(st.n_tokens(), 40);
        let err = prefill(st.as_mut(), &toks, 8).unwrap_err();
        assert!(matches!(err, EngineError::ContextFull { .. }), "{err}");
        st.reset().unwrap();
        let last = prefill(st.as_mut(), &toks[..20], 5).unwrap();
        assert_eq!(&last, &want[19]);
        let snap = st.snapshot().unwrap();
        assert_eq!(snap.n_tokens, 20);
        let a = st.forward(&toks[20..30], LogitsFor::All).unwrap();
        st.restore(&snap).unwrap();
        assert_eq!(st.n_tokens(), 20);
        let b = st.forward(&toks[20..30], LogitsFor::All).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[..], want[20..30]);
    }

    #[test]
    fn forward_greedy_picks_the_argmax_with_the_banned_id_left_out() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4");
        let model = Model::from_official_dir(&dir).unwrap();
        let toks: Vec<u32> = (0..12).map(|i| (i * 37 + 11) % 200).collect();
        let want = model
            .teacher_forced_logits(&toks, 4, ForwardOptions::default())
            .unwrap();
        let be = CpuBackend { model: &model };
        let mut st = be.new_state(64, ForwardOptions::default()).unwrap();
        prefill(st.as_mut(), &toks[..4], 4).unwrap();
        for (i, &t) in toks[4..].iter().enumerate() {
            let logits = &want[4 + i];
            let best = crate::sampling::argmax(logits).unwrap();
            // Banning the best id gives the runner-up; the state advances either way.
            let banned = (i % 2 == 1).then_some(best);
            let got = st.forward_greedy(t, banned).unwrap().unwrap();
            let mut l = logits.clone();
            if let Some(b) = banned {
                l[b as usize] = f32::NEG_INFINITY;
                assert_ne!(got, best);
            }
            assert_eq!(got, crate::sampling::argmax(&l).unwrap(), "step {i}");
        }
        assert_eq!(st.n_tokens(), toks.len());
    }
}
