//! The narrow model interface the server drives: the HTTP layer never touches a
//! tensor. [`EngineBackend`] adapts `ds4_engine::Session`; [`ScriptedBackend`]
//! forces a token sequence through one-hot logits for tests and demos.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model error: {0}")]
    Engine(#[from] ds4_engine::EngineError),
    #[error("context is full ({0} tokens)")]
    ContextFull(usize),
    #[error("no logits: nothing has been evaluated")]
    NoLogits,
    #[error("prefill cancelled")]
    Cancelled,
    #[error("this backend cannot save or load its state")]
    Unsupported,
    #[error("saved state does not fit this backend: {0}")]
    BadState(String),
}

/// How a [`Backend::sync`] reached its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Prefix tokens kept from the live state.
    pub reused: usize,
    /// Tokens evaluated now.
    pub prefilled: usize,
}

/// One live session over a loaded model.
pub trait Backend: Send {
    /// Context size in tokens.
    fn ctx(&self) -> usize;
    /// Tokens the live state holds.
    fn tokens(&self) -> &[u32];
    /// Make the state hold exactly `tokens`, reusing the longest common prefix.
    /// `progress(done, total)` is called as the suffix is evaluated; returning
    /// `false` cancels (the state then holds a prefix of `tokens`).
    fn sync(
        &mut self,
        tokens: &[u32],
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<SyncStats, BackendError>;
    /// Append one token and compute the logits that predict the next.
    fn decode(&mut self, token: u32) -> Result<(), BackendError>;
    /// Logits after the last token.
    fn logits(&self) -> Result<&[f32], BackendError>;
    /// The whole live state (tokens, KV, logits) as bytes, for a parked session
    /// or the disk cache.
    fn save_state(&self) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported)
    }
    /// Replace the live state by bytes from [`Backend::save_state`]. On error
    /// the live state is unchanged.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::Unsupported)
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `ds4_engine::Session` over a model that lives for the rest of the process.
pub struct EngineBackend {
    session: ds4_engine::Session<'static>,
    ctx: usize,
}

impl EngineBackend {
    /// The model is leaked: the server holds it until exit, and the session
    /// borrows it.
    pub fn new(model: ds4_engine::Model, ctx: usize) -> Self {
        let model: &'static ds4_engine::Model = Box::leak(Box::new(model));
        Self {
            session: ds4_engine::Session::new(model, ctx, ds4_engine::ForwardOptions::default()),
            ctx,
        }
    }
}

impl Backend for EngineBackend {
    fn ctx(&self) -> usize {
        self.ctx
    }

    fn tokens(&self) -> &[u32] {
        self.session.tokens()
    }

    fn sync(
        &mut self,
        tokens: &[u32],
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<SyncStats, BackendError> {
        if tokens.len() > self.ctx {
            return Err(BackendError::ContextFull(self.ctx));
        }
        let live = self.session.tokens();
        let mut common = common_prefix(live, tokens);
        // The last prompt token must be evaluated now to have its logits, unless
        // the live state ends exactly there.
        if common == tokens.len() && live.len() != tokens.len() {
            common = common.saturating_sub(1);
        }
        // Rewinding replays the kept prefix (the engine has no snapshots yet), so a
        // rewind reuses nothing.
        let prefix_evaluated = self.session.sync(&tokens[..common])?;
        let reused = common - prefix_evaluated;
        let total = tokens.len() - reused;
        let mut done = prefix_evaluated;
        for &t in &tokens[common..] {
            if !progress(done, total) {
                return Err(BackendError::Cancelled);
            }
            self.session.decode(t)?;
            done += 1;
        }
        progress(done, total);
        Ok(SyncStats {
            reused,
            prefilled: total,
        })
    }

    fn decode(&mut self, token: u32) -> Result<(), BackendError> {
        self.session.decode(token)?;
        Ok(())
    }

    fn logits(&self) -> Result<&[f32], BackendError> {
        Ok(self.session.logits()?)
    }

    fn save_state(&self) -> Result<Vec<u8>, BackendError> {
        let mut out = Vec::new();
        self.session.save_payload_compact(&mut out)?;
        Ok(out)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.session
            .load_payload(&mut &bytes[..])
            .map_err(|e| BackendError::BadState(e.to_string()))
    }
}

/// Shared controls of a [`ScriptedBackend`], kept by the test that drives it.
#[derive(Default)]
pub struct ScriptControl {
    /// One token sequence per generation, consumed in order; when empty the
    /// backend answers EOS.
    scripts: Mutex<VecDeque<Vec<u32>>>,
    /// While true, `sync` blocks (a request stuck in prefill).
    gate: Mutex<bool>,
    gate_cv: Condvar,
    /// Jobs that entered `sync`.
    pub syncs: AtomicUsize,
    /// Tokens decoded after a prompt (generated tokens that were evaluated).
    pub decodes: AtomicUsize,
    /// Sleep per decoded token, in milliseconds.
    pub decode_delay_ms: AtomicUsize,
    /// Chooses the output from the prompt tokens when no script is queued.
    responder: Mutex<Option<Responder>>,
}

/// Prompt tokens → the tokens to generate.
pub type Responder = Box<dyn Fn(&[u32]) -> Vec<u32> + Send>;

impl ScriptControl {
    pub fn push_script(&self, tokens: Vec<u32>) {
        if let Ok(mut s) = self.scripts.lock() {
            s.push_back(tokens);
        }
    }

    pub fn set_responder(&self, f: Responder) {
        if let Ok(mut r) = self.responder.lock() {
            *r = Some(f);
        }
    }

    fn next_script(&self, prompt: &[u32]) -> Vec<u32> {
        if let Some(s) = self.scripts.lock().ok().and_then(|mut s| s.pop_front()) {
            return s;
        }
        self.responder
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|f| f(prompt)))
            .unwrap_or_default()
    }

    pub fn close_gate(&self) {
        if let Ok(mut g) = self.gate.lock() {
            *g = true;
        }
    }

    pub fn open_gate(&self) {
        if let Ok(mut g) = self.gate.lock() {
            *g = false;
        }
        self.gate_cv.notify_all();
    }

    fn wait_gate(&self) {
        let Ok(mut g) = self.gate.lock() else { return };
        while *g {
            match self.gate_cv.wait(g) {
                Ok(next) => g = next,
                Err(_) => return,
            }
        }
    }
}

/// A backend whose logits are one-hot on the next token of a script.
pub struct ScriptedBackend {
    ctx: usize,
    eos: u32,
    tokens: Vec<u32>,
    current: Vec<u32>,
    pos: usize,
    logits: Vec<f32>,
    control: Arc<ScriptControl>,
}

impl ScriptedBackend {
    pub fn new(vocab: usize, ctx: usize, eos: u32, control: Arc<ScriptControl>) -> Self {
        Self {
            ctx,
            eos,
            tokens: Vec::new(),
            current: Vec::new(),
            pos: 0,
            logits: vec![0.0; vocab],
            control,
        }
    }

    fn set_logits(&mut self) {
        self.logits.fill(0.0);
        let next = self.current.get(self.pos).copied().unwrap_or(self.eos) as usize;
        if let Some(l) = self.logits.get_mut(next) {
            *l = 100.0;
        }
    }
}

impl Backend for ScriptedBackend {
    fn ctx(&self) -> usize {
        self.ctx
    }

    fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn sync(
        &mut self,
        tokens: &[u32],
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<SyncStats, BackendError> {
        self.control.syncs.fetch_add(1, Ordering::SeqCst);
        self.control.wait_gate();
        if tokens.len() > self.ctx {
            return Err(BackendError::ContextFull(self.ctx));
        }
        let mut reused = common_prefix(&self.tokens, tokens);
        if reused == tokens.len() && self.tokens.len() != tokens.len() {
            reused = reused.saturating_sub(1);
        }
        let total = tokens.len() - reused;
        if !progress(0, total) {
            return Err(BackendError::Cancelled);
        }
        self.tokens = tokens.to_vec();
        self.current = self.control.next_script(tokens);
        self.pos = 0;
        self.set_logits();
        progress(total, total);
        Ok(SyncStats {
            reused,
            prefilled: total,
        })
    }

    fn decode(&mut self, token: u32) -> Result<(), BackendError> {
        if self.tokens.len() >= self.ctx {
            return Err(BackendError::ContextFull(self.ctx));
        }
        let delay = self.control.decode_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay as u64));
        }
        self.control.decodes.fetch_add(1, Ordering::SeqCst);
        self.tokens.push(token);
        self.pos += 1;
        self.set_logits();
        Ok(())
    }

    fn logits(&self) -> Result<&[f32], BackendError> {
        Ok(&self.logits)
    }

    /// The tokens (the scripted logits are recomputed from the script).
    fn save_state(&self) -> Result<Vec<u8>, BackendError> {
        Ok(self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if !bytes.len().is_multiple_of(4) || bytes.len() / 4 > self.ctx {
            return Err(BackendError::BadState("not a token list".into()));
        }
        self.tokens = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // The next `sync` picks the script; nothing is consumed here.
        self.current.clear();
        self.pos = 0;
        self.set_logits();
        Ok(())
    }
}
