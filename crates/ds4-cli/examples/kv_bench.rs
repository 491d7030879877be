//! Save and restore of full-width DeepSeek V4 Flash sessions through the disk
//! store, against re-prefilling them, on this machine.
//!
//!     cargo run --release -p ds4-cli --example kv_bench -- [DIR] [PREFILL_TOKENS]
//!
//! 1. For 4,096 and 32,768 tokens it builds the KV state of the whole 43-layer
//!    Flash config (ModelConfig::flash(): 2 window, 21 ratio-4 and 20 ratio-128
//!    layers, head 512, indexer 128): every row random and then put through the
//!    model's own simulations (fp8 KV, Hadamard + fp4 indexer, f16), as a
//!    running session would hold it. It times the compact payload encode, the
//!    store's save (tmp file, fsync, rename) into DIR, the lookup (read, CRCs,
//!    key text) and the decode into a session state, checks the restored rows
//!    are bit-identical, and prints bytes per token on disk and in memory.
//! 2. It writes a full-width q2 file with 3 layers (one window, one ratio-4,
//!    one ratio-128; 16 routed experts, 6 active as in Flash), prefills
//!    PREFILL_TOKENS (default 256) and scales the time per token by 43/3 to
//!    the whole model: a lower bound for re-prefilling 4k or 32k tokens, whose
//!    attention costs more at longer contexts.

use std::path::PathBuf;
use std::time::Instant;

use ds4_cli::layout::{Recipe, Shape};
use ds4_cli::synthetic::{SyntheticOptions, write_atomic};
use ds4_cli::tokenizer_meta::TokenizerMeta;
use ds4_engine::cache::KvCache;
use ds4_engine::config::AttnKind;
use ds4_engine::payload::{PayloadState, read_payload, write_payload, write_payload_compact};
use ds4_engine::{ForwardOptions, Model, ModelConfig, Session, qat};
use ds4_kvstore::{Identity, KvStore, NewEntry, Reason};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn row(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// The state a Flash session holds after `t` tokens, rows on the model's grids.
fn flash_state(cfg: &ModelConfig, t: usize, rng: &mut Rng) -> PayloadState {
    let mut cache = KvCache::new(cfg, t + 64);
    cache.n_tokens = t;
    let n_nope = cfg.head_dim - cfg.n_rot;
    let kv_row = |rng: &mut Rng| {
        let mut r = rng.row(cfg.head_dim);
        qat::fp8_kv_inplace(&mut r[..n_nope]);
        qat::f16_round_inplace(&mut r);
        r
    };
    for (l, lc) in cache.layers.iter_mut().enumerate() {
        for _ in 0..cfg.sliding_window.min(t) {
            lc.raw.push_back(kv_row(rng));
        }
        let kind = cfg.attn_kind(l);
        if let Some(f) = lc.comp_front.as_mut() {
            for _ in 0..t / kind.ratio() {
                lc.comp.push(&kv_row(rng));
            }
            f.kv = rng.row(f.kv.len());
            f.score = rng.row(f.score.len());
        }
        if let Some(f) = lc.icomp_front.as_mut() {
            for _ in 0..t / kind.ratio() {
                let mut r = rng.row(cfg.indexer_head_dim);
                qat::indexer_qat_inplace(&mut r);
                qat::f16_round_inplace(&mut r);
                lc.icomp.push(&r);
            }
            f.kv = rng.row(f.kv.len());
            f.score = rng.row(f.score.len());
        }
    }
    PayloadState {
        tokens: (0..t)
            .map(|_| (rng.next() % cfg.n_vocab as u64) as u32)
            .collect(),
        logits: rng.row(cfg.n_vocab),
        cache,
    }
}

fn rows_equal(a: &KvCache, b: &KvCache) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    a.layers.iter().zip(&b.layers).all(|(x, y)| {
        x.raw.len() == y.raw.len()
            && x.raw.iter().zip(&y.raw).all(|(r, s)| bits(r) == bits(s))
            && bits(x.comp.as_flat()) == bits(y.comp.as_flat())
            && bits(x.icomp.as_flat()) == bits(y.icomp.as_flat())
    })
}

/// f32 bytes per token of the rows that grow with the context.
fn f32_bytes_per_token(cfg: &ModelConfig) -> f64 {
    (0..cfg.n_layer)
        .map(|l| match cfg.attn_kind(l) {
            AttnKind::Window => 0.0,
            AttnKind::Heavy { ratio } => (cfg.head_dim * 4) as f64 / ratio as f64,
            AttnKind::Sparse { ratio } => {
                ((cfg.head_dim + cfg.indexer_head_dim) * 4) as f64 / ratio as f64
            }
        })
        .sum()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
    );
    let prefill_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    std::fs::create_dir_all(&dir)?;
    let cfg = ModelConfig::flash();
    println!(
        "Flash config: {} layers; rows that grow with the context: {:.0} B/token as f32 (ds4: 13,760)",
        cfg.n_layer,
        f32_bytes_per_token(&cfg)
    );
    let store_dir = dir.join("kv-bench-store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let id = Identity {
        model: [1; 32],
        quant_bits: 2,
    };
    let mut store = KvStore::open(&store_dir, 8 << 30, id, false)?;
    let mut rng = Rng(42);
    let mut sizes = Vec::new();
    let mut restore_secs = Vec::new();
    for t in [4096usize, 32768] {
        let st = flash_state(&cfg, t, &mut rng);
        let mut v1 = Vec::new();
        write_payload(&cfg, t + 64, 2048, &st, &mut v1)?;
        let t0 = Instant::now();
        let mut v2 = Vec::new();
        write_payload_compact(&cfg, t + 64, 2048, st.as_ref(), &mut v2)?;
        let encode = t0.elapsed().as_secs_f64();
        let text = format!("session of {t} tokens");
        let t0 = Instant::now();
        store.save(&NewEntry {
            reason: Reason::Cold,
            tokens: t as u32,
            ctx: (t + 64) as u32,
            text: &text,
            tool_map: &[],
            payload: &v2,
        })?;
        let save = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let hit = store
            .lookup(&format!("{text} and more"), 1, u32::MAX)
            .ok_or_else(|| anyhow::anyhow!("lookup missed"))?;
        let read = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let back = read_payload(&cfg, t + 64, &mut hit.payload.as_slice())?;
        let decode = t0.elapsed().as_secs_f64();
        let exact = rows_equal(&st.cache, &back.cache)
            && back.tokens == st.tokens
            && back
                .logits
                .iter()
                .zip(&st.logits)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        println!(
            "{t:>6} tokens: f32 payload {:.1} MB, compact {:.1} MB ({:.2}x smaller); \
             save {:.0} ms (encode {:.0} + write/fsync {:.0}), restore {:.0} ms (read+CRC {:.0} + decode {:.0}); bit-exact: {exact}",
            v1.len() as f64 / 1e6,
            v2.len() as f64 / 1e6,
            v1.len() as f64 / v2.len() as f64,
            (encode + save) * 1e3,
            encode * 1e3,
            save * 1e3,
            (read + decode) * 1e3,
            read * 1e3,
            decode * 1e3,
        );
        sizes.push((t, v1.len(), v2.len()));
        restore_secs.push((t, read + decode));
        if !exact {
            anyhow::bail!("restore was not bit-exact");
        }
    }
    let (ta, a1, a2) = sizes[0];
    let (tb, b1, b2) = sizes[1];
    let dt = (tb - ta) as f64;
    println!(
        "per token (slope 4k→32k): compact {:.0} B on disk, f32 {:.0} B (in memory, as the live session holds it)",
        (b2 - a2) as f64 / dt,
        (b1 - a1) as f64 / dt
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&store_dir);

    // Re-prefill on a full-width 3-layer q2 model.
    let shape = Shape {
        n_layer: 3,
        n_hash_layer: 1,
        // 16 routed experts instead of 256: a token still runs 6 of them, so
        // the work per token is Flash's, the file is small enough to write
        // here, and denser expert batches only make the prefill faster.
        n_expert: 16,
        compress_ratios: Some(vec![0, 4, 128]),
        ..Shape::default()
    };
    let path = dir.join("kv-bench-q2-3l.gguf");
    if !path.exists() {
        let r = write_atomic(&SyntheticOptions {
            shape,
            recipe: Recipe::Q2,
            seed: 1,
            out: &path,
            tokenizer: &TokenizerMeta::bundled()?,
            progress: false,
        })?;
        println!("wrote {} ({:.2} GB)", path.display(), r.bytes as f64 / 1e9);
    }
    let model = Model::from_gguf(&path)?;
    let prompt: Vec<u32> = (0..prefill_n as u32)
        .map(|i| 1000 + (i * 7919) % 100_000)
        .collect();
    let mut s = Session::new(&model, prefill_n + 16, ForwardOptions::default());
    s.sync(&prompt[..16])?; // page in the weights
    let mut s = Session::new(&model, prefill_n + 16, ForwardOptions::default());
    let t0 = Instant::now();
    s.sync(&prompt)?;
    let secs = t0.elapsed().as_secs_f64();
    let per_tok_43 = secs / prefill_n as f64 * 43.0 / 3.0;
    println!(
        "prefill: {prefill_n} tokens on 3 full-width layers in {secs:.1} s ({:.1} tok/s); scaled to 43 layers {:.0} ms/token",
        prefill_n as f64 / secs,
        per_tok_43 * 1e3
    );
    for (t, restore) in restore_secs {
        println!(
            "{t:>6} tokens: re-prefill >= {:.0} s (43 layers, scaled) vs restore {:.2} s: {:.0}x",
            per_tok_43 * t as f64,
            restore,
            per_tok_43 * t as f64 / restore
        );
    }
    Ok(())
}
