//! A token sequence with its KV state: the narrow API the CLI and server use.

use crate::cache::KvCache;
use crate::error::{EngineError, Result};
use crate::layer::ForwardOptions;
use crate::model::Model;
use crate::payload::{
    PayloadRef, PayloadState, read_payload, write_payload, write_payload_compact,
};

pub struct Session<'m> {
    model: &'m Model,
    opts: ForwardOptions,
    tokens: Vec<u32>,
    cache: KvCache,
    logits: Option<Vec<f32>>,
    /// Context limit in tokens.
    ctx: usize,
    /// Tokens per layer-major prefill batch.
    prefill_chunk: usize,
}

/// ds4's default prefill chunk.
pub const DEFAULT_PREFILL_CHUNK: usize = 2048;

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, ctx: usize, opts: ForwardOptions) -> Self {
        Session {
            model,
            opts,
            tokens: Vec::new(),
            cache: model.new_cache_for(ctx),
            logits: None,
            ctx,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }

    /// Tokens per prefill batch (at least 1). Any value gives the same results.
    pub fn set_prefill_chunk(&mut self, chunk: usize) {
        self.prefill_chunk = chunk.max(1);
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Makes the session hold exactly `tokens`, reusing the longest common prefix.
    /// Extending is incremental (a chunked, layer-major prefill of the new suffix). Rewinding replays the kept prefix from scratch: the
    /// compressor frontiers cannot be rolled back without snapshots (not kept yet).
    /// Returns how many tokens were evaluated.
    pub fn sync(&mut self, tokens: &[u32]) -> Result<usize> {
        if tokens.len() > self.ctx {
            return Err(EngineError::ContextFull {
                pos: tokens.len(),
                ctx: self.ctx,
            });
        }
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let start =
            if common < self.tokens.len() || (common == tokens.len() && self.logits.is_none()) {
                self.cache = self.model.new_cache_for(self.ctx);
                self.tokens.clear();
                self.logits = None;
                0
            } else {
                common
            };
        let new = &tokens[start..];
        if !new.is_empty() {
            let logits = self
                .model
                .prefill(&mut self.cache, new, self.prefill_chunk, self.opts)?;
            self.tokens.extend_from_slice(new);
            self.logits = Some(logits);
        }
        Ok(new.len())
    }

    /// Appends one token and computes the logits that predict the next.
    pub fn decode(&mut self, token: u32) -> Result<&[f32]> {
        if self.tokens.len() >= self.ctx {
            return Err(EngineError::ContextFull {
                pos: self.tokens.len(),
                ctx: self.ctx,
            });
        }
        let logits = self
            .model
            .forward_token(&mut self.cache, token, self.opts)?;
        self.tokens.push(token);
        Ok(self.logits.insert(logits))
    }

    /// Logits after the last token.
    pub fn logits(&self) -> Result<&[f32]> {
        self.logits.as_deref().ok_or(EngineError::NoLogits)
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Serializes the session (spec §4.3 payload) for the disk KV cache.
    pub fn save_payload(&self, w: &mut impl std::io::Write) -> Result<()> {
        let logits = self.logits.clone().ok_or(EngineError::NoLogits)?;
        let st = PayloadState {
            tokens: self.tokens.clone(),
            logits,
            cache: self.cache.clone(),
        };
        write_payload(&self.model.cfg, self.ctx, self.prefill_chunk, &st, w)
    }

    /// Serializes the session in the compact payload (version 2: rows packed
    /// losslessly on their fp8/fp4 grids, about a quarter of the f32 bytes).
    pub fn save_payload_compact(&self, w: &mut impl std::io::Write) -> Result<()> {
        let logits = self.logits.as_deref().ok_or(EngineError::NoLogits)?;
        let st = PayloadRef {
            tokens: &self.tokens,
            logits,
            cache: &self.cache,
        };
        write_payload_compact(&self.model.cfg, self.ctx, self.prefill_chunk, st, w)
    }

    /// Context limit in tokens.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Replaces the session's state by a saved payload (either version). On error the session is
    /// left unchanged.
    pub fn load_payload(&mut self, r: &mut impl std::io::Read) -> Result<()> {
        let st = read_payload(&self.model.cfg, self.ctx, r)?;
        self.tokens = st.tokens;
        self.cache = st.cache;
        self.logits = Some(st.logits);
        Ok(())
    }

    /// A copy of the whole state (tokens, KV cache, frontiers, last logits).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            tokens: self.tokens.clone(),
            cache: self.cache.clone(),
            logits: self.logits.clone(),
        }
    }

    /// Returns to a snapshot taken from a session of the same model.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if snap.cache.layers.len() != self.model.cfg.n_layer {
            return Err(EngineError::Config(format!(
                "snapshot has {} layers, the model {}",
                snap.cache.layers.len(),
                self.model.cfg.n_layer
            )));
        }
        self.tokens = snap.tokens.clone();
        self.cache = snap.cache.clone();
        self.logits = snap.logits.clone();
        Ok(())
    }
}

/// Saved session state (see [`Session::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub tokens: Vec<u32>,
    pub cache: KvCache,
    pub logits: Option<Vec<f32>>,
}
