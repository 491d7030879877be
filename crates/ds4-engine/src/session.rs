//! A token sequence with its KV state: the narrow API the CLI and server use.

use crate::cache::KvCache;
use crate::error::{EngineError, Result};
use crate::layer::ForwardOptions;
use crate::model::Model;

pub struct Session<'m> {
    model: &'m Model,
    opts: ForwardOptions,
    tokens: Vec<u32>,
    cache: KvCache,
    logits: Option<Vec<f32>>,
    /// Context limit in tokens.
    ctx: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, ctx: usize, opts: ForwardOptions) -> Self {
        Session {
            model,
            opts,
            tokens: Vec::new(),
            cache: model.new_cache(),
            logits: None,
            ctx,
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Makes the session hold exactly `tokens`, reusing the longest common prefix.
    /// Extending is incremental. Rewinding replays the kept prefix from scratch: the
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
                self.cache = self.model.new_cache();
                self.tokens.clear();
                self.logits = None;
                0
            } else {
                common
            };
        for &t in &tokens[start..] {
            self.decode(t)?;
        }
        Ok(tokens.len() - start)
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
}
