//! Saved sessions for the worker: parked live sessions in RAM and the disk KV
//! cache (ds4-kvstore), with ds4's save policy (spec product-surface §3.3–3.4).
//!
//! * **Parked sessions**: when a request continues another conversation, the
//!   live session is not thrown away but parked as its compact payload (about a
//!   quarter of its f32 bytes), keyed by its text, within `--kv-ram-mb`. The
//!   least recently used parked session leaves RAM for the disk (an `evict`
//!   save), so two agents alternating each resume without re-prefill.
//! * **Disk**: `cold` saves (a fresh prompt in `[min, cold_max]` tokens, at the
//!   chat task anchor or trimmed and aligned), `continued` saves (absolute
//!   multiples of the interval), `evict` saves (parked sessions leaving RAM, or
//!   the live one when parking is off) and `shutdown` saves (everything, on a
//!   clean exit). Lookup is by rendered-text prefix; the longest wins.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use ds4_kvstore::{Identity, KvStore, NewEntry, Reason, SaveOutcome};

use crate::metrics::Metrics;
use crate::replay::ReplayMap;

/// The disk and RAM cache knobs (ds4's names and defaults).
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// `--kv-disk-dir`: off when `None`.
    pub disk_dir: Option<PathBuf>,
    pub disk_space_mb: u64,
    pub min_tokens: usize,
    pub cold_max_tokens: usize,
    pub continued_interval_tokens: usize,
    pub boundary_trim_tokens: usize,
    pub boundary_align_tokens: usize,
    pub reject_different_quant: bool,
    /// `--kv-ram-mb`: parked sessions' budget; 0 keeps one live session (ds4).
    pub ram_mb: u64,
    pub identity: Identity,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            disk_dir: None,
            disk_space_mb: 4096,
            min_tokens: 512,
            cold_max_tokens: 30_000,
            continued_interval_tokens: 10_000,
            boundary_trim_tokens: 32,
            boundary_align_tokens: 2048,
            reject_different_quant: false,
            // ds4 keeps one live session; the binary's --kv-ram-mb default
            // turns parking on.
            ram_mb: 0,
            identity: Identity {
                model: [0; 32],
                quant_bits: 0,
            },
        }
    }
}

impl KvConfig {
    /// ds4's flag checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_tokens == 0 {
            return Err("--kv-cache-min-tokens must be > 0".into());
        }
        if self.cold_max_tokens != 0 && self.cold_max_tokens < self.min_tokens {
            return Err(format!(
                "--kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens ({})",
                self.min_tokens
            ));
        }
        Ok(())
    }

    /// Spacing of continued saves: the interval rounded up to an align multiple
    /// (10000 → 10240); 0 disables.
    pub fn continued_step(&self) -> usize {
        let (i, a) = (self.continued_interval_tokens, self.boundary_align_tokens);
        if i == 0 {
            0
        } else if a == 0 {
            i
        } else {
            i.div_ceil(a) * a
        }
    }

    /// Where a cold save of a fresh prompt stops: the last `<｜User｜>` before
    /// the first `<｜Assistant｜>` (the chat task anchor, shared by every request
    /// of the same system prompt and tools) if that is at least `min`; else the
    /// length less the trim, aligned down (the full length if that is below
    /// `min`). `None` when the prompt is outside `[min, cold_max]`.
    pub fn cold_store_len(
        &self,
        tokens: &[u32],
        user: Option<u32>,
        assistant: Option<u32>,
    ) -> Option<usize> {
        let n = tokens.len();
        if self.cold_max_tokens == 0 || n < self.min_tokens || n > self.cold_max_tokens {
            return None;
        }
        if let (Some(u), Some(a)) = (user, assistant) {
            let first_asst = tokens.iter().position(|&t| t == a).unwrap_or(n);
            if let Some(anchor) = tokens[..first_asst].iter().rposition(|&t| t == u)
                && anchor >= self.min_tokens
            {
                return Some(anchor);
            }
        }
        let mut len = n.saturating_sub(self.boundary_trim_tokens);
        if self.boundary_align_tokens > 0 {
            len -= len % self.boundary_align_tokens;
        }
        Some(if len < self.min_tokens { n } else { len })
    }
}

/// The identity a disk file must match: the architecture (every config value)
/// and a fingerprint of the f32 norm weights, which do not depend on the routed
/// experts' quantization (so q2 and q4 files of one model share a cache, unless
/// `--kv-cache-reject-different-quant`).
pub fn model_identity(model: &ds4_engine::Model, quant_bits: u8) -> Identity {
    Identity {
        model: ds4_kvstore::sha256(&ds4_engine::payload::model_fingerprint(model)),
        quant_bits,
    }
}

/// 4 if layer 0's routed gate experts are Q4_K, 2 otherwise (ds4's rule); 0
/// when the file has none.
pub fn quant_bits(path: &Path) -> u8 {
    let Ok((_, src)) = ds4_engine::GgufSource::open(path) else {
        return 0;
    };
    src.file()
        .tensors()
        .iter()
        .find(|t| t.name == "blk.0.ffn_gate_exps.weight")
        .map_or(0, |t| {
            if format!("{:?}", t.ty) == "Q4_K" {
                4
            } else {
                2
            }
        })
}

/// A live session parked in RAM as its compact payload.
pub struct Parked {
    /// The rendered text its tokens stand for.
    pub text: String,
    pub n_tokens: usize,
    pub bytes: Vec<u8>,
    last_used: u64,
}

pub struct KvState {
    pub cfg: KvConfig,
    pub ctx: usize,
    pub store: Option<KvStore>,
    parked: Vec<Parked>,
    clock: u64,
    /// Largest saved frontier of the live session: continued saves go above it.
    pub live_saved: usize,
}

fn warn(msg: &str) {
    eprintln!("ds4-server: warning: {msg}");
}

impl KvState {
    /// Opens the disk store if one is configured (a failure is a warning: the
    /// server runs without it) and loads every stored tool map for exact DSML
    /// replay.
    pub fn open(cfg: KvConfig, ctx: usize, replay: &Mutex<ReplayMap>, metrics: &Metrics) -> Self {
        let store = cfg.disk_dir.as_ref().and_then(|dir| {
            match KvStore::open(
                dir,
                cfg.disk_space_mb.saturating_mul(1 << 20),
                cfg.identity,
                cfg.reject_different_quant,
            ) {
                Ok(s) => {
                    eprintln!(
                        "ds4-server: KV disk cache {}: {} files, {} of {} MB",
                        dir.display(),
                        s.len(),
                        s.used_bytes() >> 20,
                        cfg.disk_space_mb
                    );
                    Some(s)
                }
                Err(e) => {
                    warn(&format!("{e}; running without the disk KV cache"));
                    None
                }
            }
        });
        let mut st = Self {
            cfg,
            ctx,
            store,
            parked: Vec::new(),
            clock: 0,
            live_saved: 0,
        };
        if let Some(store) = st.store.as_mut() {
            let maps = store.tool_maps();
            if let Ok(mut r) = replay.lock() {
                // Ids of one block share one entry, as when they were sampled.
                let mut by_block: std::collections::BTreeMap<String, Vec<String>> =
                    Default::default();
                for (id, block) in maps {
                    by_block.entry(block).or_default().push(id);
                }
                for (block, ids) in by_block {
                    r.insert_block(&ids, &block);
                }
            }
        }
        st.update_metrics(metrics);
        st
    }

    pub fn update_metrics(&self, m: &Metrics) {
        let (used, budget) = self
            .store
            .as_ref()
            .map_or((0, 0), |s| (s.used_bytes(), s.budget()));
        m.kv_disk_bytes.store(used, Ordering::Relaxed);
        m.kv_disk_budget_bytes.store(budget, Ordering::Relaxed);
        m.kv_parked_sessions
            .store(self.parked.len() as u64, Ordering::Relaxed);
        m.kv_parked_bytes
            .store(self.parked_bytes(), Ordering::Relaxed);
    }

    pub fn parked_bytes(&self) -> u64 {
        self.parked.iter().map(|p| p.bytes.len() as u64).sum()
    }

    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// The parked session with the longest text that is a prefix of `prompt`
    /// (and is not exactly inside a UTF-8 sequence of it): (index, text bytes,
    /// tokens).
    pub fn best_parked(&self, prompt: &str) -> Option<(usize, usize, usize)> {
        self.parked
            .iter()
            .enumerate()
            .filter(|(_, p)| prompt.starts_with(p.text.as_str()))
            .max_by_key(|(_, p)| p.text.len())
            .map(|(i, p)| (i, p.text.len(), p.n_tokens))
    }

    pub fn take_parked(&mut self, i: usize) -> Parked {
        self.parked.remove(i)
    }

    /// Parks a session; while parked sessions exceed the RAM budget the least
    /// recently used goes to disk (`evict`).
    pub fn park(
        &mut self,
        text: String,
        n_tokens: usize,
        bytes: Vec<u8>,
        replay: &Mutex<ReplayMap>,
        m: &Metrics,
    ) {
        self.clock += 1;
        // A session with the same text replaces its older copy.
        self.parked.retain(|p| p.text != text);
        self.parked.push(Parked {
            text,
            n_tokens,
            bytes,
            last_used: self.clock,
        });
        let budget = self.cfg.ram_mb.saturating_mul(1 << 20);
        while self.parked_bytes() > budget {
            let Some(i) = self
                .parked
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let p = self.parked.remove(i);
            self.save(Reason::Evict, &p.text, p.n_tokens, &p.bytes, replay, m);
        }
        self.update_metrics(m);
    }

    /// Writes one session to disk if it is long enough and the store is on.
    pub fn save(
        &mut self,
        reason: Reason,
        text: &str,
        n_tokens: usize,
        payload: &[u8],
        replay: &Mutex<ReplayMap>,
        m: &Metrics,
    ) {
        if n_tokens < self.cfg.min_tokens || text.is_empty() {
            return;
        }
        let ctx = self.ctx;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let tool_map = replay
            .lock()
            .map(|r| r.entries_in(text))
            .unwrap_or_default();
        let t0 = std::time::Instant::now();
        let r = store.save(&NewEntry {
            reason,
            tokens: n_tokens as u32,
            ctx: ctx as u32,
            text,
            tool_map: &tool_map,
            payload,
        });
        match r {
            Ok(SaveOutcome::Saved { bytes }) => {
                m.kv_disk_saves.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "ds4-server: kv cache: saved {} tokens ({reason}, {:.1} MB, {:.0} ms)",
                    n_tokens,
                    bytes as f64 / 1e6,
                    t0.elapsed().as_secs_f64() * 1e3,
                    reason = reason.name()
                );
            }
            Ok(SaveOutcome::TooLarge) => warn(&format!(
                "kv cache: a {n_tokens}-token session is larger than --kv-disk-space-mb; not saved"
            )),
            // The store said why, once.
            Ok(SaveOutcome::Disabled) | Err(_) => {}
        }
        self.update_metrics(m);
    }

    /// On a clean exit every parked session goes to disk.
    pub fn shutdown(&mut self, replay: &Mutex<ReplayMap>, m: &Metrics) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            self.save(Reason::Shutdown, &p.text, p.n_tokens, &p.bytes, replay, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds4_defaults_and_checks() {
        let c = KvConfig::default();
        assert_eq!(c.continued_step(), 10_240);
        assert!(c.validate().is_ok());
        assert!(
            KvConfig {
                min_tokens: 0,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            KvConfig {
                cold_max_tokens: 100,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            KvConfig {
                cold_max_tokens: 0,
                ..c.clone()
            }
            .validate()
            .is_ok()
        );
        assert_eq!(
            KvConfig {
                boundary_align_tokens: 0,
                ..c
            }
            .continued_step(),
            10_000
        );
    }

    #[test]
    fn cold_store_length() {
        let c = KvConfig {
            min_tokens: 10,
            cold_max_tokens: 100,
            boundary_trim_tokens: 4,
            boundary_align_tokens: 8,
            ..KvConfig::default()
        };
        let (u, a) = (Some(1), Some(2));
        // anchor: last User before the first Assistant, if >= min
        let mut t = vec![0u32; 40];
        t[5] = 1;
        t[12] = 1;
        t[20] = 2;
        t[30] = 1;
        assert_eq!(c.cold_store_len(&t, u, a), Some(12));
        // anchor below min: trim 4 then align down to 8
        t[12] = 0;
        assert_eq!(c.cold_store_len(&t, u, a), Some(32));
        // too short after trimming: the full length
        assert_eq!(c.cold_store_len(&[0; 12], u, a), Some(12));
        assert_eq!(c.cold_store_len(&[0; 9], u, a), None);
        assert_eq!(c.cold_store_len(&[0; 101], u, a), None);
    }
}
