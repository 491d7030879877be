//! The session payload (spec §4.3): ds4's little-endian serialization of a session's
//! tokens, logits and KV state, used by the disk KV cache. Layout follows the spec;
//! it has not been checked against a file written by ds4 itself.

use std::collections::VecDeque;
use std::io::{Read, Write};

use crate::cache::{Frontier, KvCache};
use crate::config::{AttnKind, ModelConfig};
use crate::error::{EngineError, Result};

/// "DSV4" little-endian.
pub const PAYLOAD_MAGIC: u32 = 0x3456_5344;
pub const PAYLOAD_VERSION: u32 = 1;

fn io_err(e: std::io::Error) -> EngineError {
    EngineError::Io {
        path: "<session payload>".into(),
        source: e,
    }
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::Payload(msg.into())
}

fn put_u32(w: &mut impl Write, v: usize) -> Result<()> {
    let v = u32::try_from(v).map_err(|_| bad(format!("{v} does not fit u32")))?;
    w.write_all(&v.to_le_bytes()).map_err(io_err)
}

fn put_f32s(w: &mut impl Write, v: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.write_all(&bytes).map_err(io_err)
}

fn get_u32(r: &mut impl Read) -> Result<usize> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(io_err)?;
    Ok(u32::from_le_bytes(b) as usize)
}

fn get_f32s(r: &mut impl Read, n: usize) -> Result<Vec<f32>> {
    let mut b = vec![0u8; n * 4];
    r.read_exact(&mut b).map_err(io_err)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_front(r: &mut impl Read, f: &mut Frontier) -> Result<()> {
    let n = f.kv.len();
    f.kv = get_f32s(r, n)?;
    f.score = get_f32s(r, n)?;
    Ok(())
}

/// Everything a payload carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadState {
    pub tokens: Vec<u32>,
    pub logits: Vec<f32>,
    pub cache: KvCache,
}

/// Writes `state` for a session of context `ctx` that prefills in `prefill_chunk`s.
pub fn write_payload(
    cfg: &ModelConfig,
    ctx: usize,
    prefill_chunk: usize,
    st: &PayloadState,
    w: &mut impl Write,
) -> Result<()> {
    let t = st.tokens.len();
    let live = cfg.sliding_window.min(t);
    let comp_cap = ctx / crate::config::SPARSE_RATIO + 2;
    for v in [
        PAYLOAD_MAGIC as usize,
        PAYLOAD_VERSION as usize,
        ctx,
        prefill_chunk,
        cfg.sliding_window,
        cfg.sliding_window,
        comp_cap,
        t,
        cfg.n_layer,
        cfg.head_dim,
        cfg.indexer_head_dim,
        cfg.n_vocab,
        live,
    ] {
        put_u32(w, v)?;
    }
    for &tok in &st.tokens {
        put_u32(w, tok as usize)?;
    }
    if st.logits.len() != cfg.n_vocab {
        return Err(bad("logits do not cover the vocabulary"));
    }
    put_f32s(w, &st.logits)?;
    for l in &st.cache.layers {
        put_u32(w, l.comp.len())?;
    }
    for l in &st.cache.layers {
        put_u32(w, l.icomp.len())?;
    }
    for l in &st.cache.layers {
        if l.raw.len() != live {
            return Err(bad("raw window length disagrees with the token count"));
        }
        for row in &l.raw {
            put_f32s(w, row)?;
        }
        if let Some(f) = &l.comp_front {
            for row in l.comp.iter() {
                put_f32s(w, row)?;
            }
            put_f32s(w, &f.kv)?;
            put_f32s(w, &f.score)?;
        }
        if let Some(f) = &l.icomp_front {
            for row in l.icomp.iter() {
                put_f32s(w, row)?;
            }
            put_f32s(w, &f.kv)?;
            put_f32s(w, &f.score)?;
        }
    }
    Ok(())
}

/// Reads a payload written for this model; every count is checked against the
/// config and against each other before anything is allocated from it.
pub fn read_payload(cfg: &ModelConfig, ctx: usize, r: &mut impl Read) -> Result<PayloadState> {
    let mut h = [0usize; 13];
    for v in h.iter_mut() {
        *v = get_u32(r)?;
    }
    let [
        magic,
        version,
        _ctx,
        _chunk,
        _raw_cap,
        window,
        _comp_cap,
        t,
        n_layer,
        head_dim,
        idx_dim,
        vocab,
        live,
    ] = h;
    if magic != PAYLOAD_MAGIC as usize || version != PAYLOAD_VERSION as usize {
        return Err(bad(format!(
            "not a DSV4 v1 payload (magic {magic:#x}, version {version})"
        )));
    }
    let want = [
        ("layers", n_layer, cfg.n_layer),
        ("head dim", head_dim, cfg.head_dim),
        ("indexer head dim", idx_dim, cfg.indexer_head_dim),
        ("vocab", vocab, cfg.n_vocab),
        ("raw window", window, cfg.sliding_window),
        ("live raw rows", live, cfg.sliding_window.min(t)),
    ];
    for (what, got, expect) in want {
        if got != expect {
            return Err(bad(format!(
                "{what}: payload has {got}, the model {expect}"
            )));
        }
    }
    if t > ctx {
        return Err(bad(format!("{t} tokens exceed the context of {ctx}")));
    }
    let tokens = (0..t)
        .map(|_| {
            let tok = get_u32(r)?;
            if tok >= cfg.n_vocab {
                return Err(bad(format!("token {tok} outside the vocabulary")));
            }
            Ok(tok as u32)
        })
        .collect::<Result<Vec<u32>>>()?;
    let logits = get_f32s(r, cfg.n_vocab)?;
    let n_comp = (0..n_layer)
        .map(|_| get_u32(r))
        .collect::<Result<Vec<_>>>()?;
    let n_icomp = (0..n_layer)
        .map(|_| get_u32(r))
        .collect::<Result<Vec<_>>>()?;
    let mut cache = KvCache::new(cfg, ctx);
    cache.n_tokens = t;
    for (l, lc) in cache.layers.iter_mut().enumerate() {
        let kind = cfg.attn_kind(l);
        let ratio = kind.ratio();
        let expect_comp = t.checked_div(ratio).unwrap_or(0);
        let expect_icomp = if matches!(kind, AttnKind::Sparse { .. }) {
            expect_comp
        } else {
            0
        };
        if n_comp[l] != expect_comp || n_icomp[l] != expect_icomp {
            return Err(bad(format!(
                "layer {l}: {} / {} compressed rows for {t} tokens at ratio {ratio}",
                n_comp[l], n_icomp[l]
            )));
        }
        lc.raw = (0..live)
            .map(|_| get_f32s(r, head_dim))
            .collect::<Result<VecDeque<_>>>()?;
        if let Some(f) = lc.comp_front.as_mut() {
            for _ in 0..n_comp[l] {
                lc.comp.push(&get_f32s(r, head_dim)?);
            }
            read_front(r, f)?;
        }
        if let Some(f) = lc.icomp_front.as_mut() {
            for _ in 0..n_icomp[l] {
                lc.icomp.push(&get_f32s(r, idx_dim)?);
            }
            read_front(r, f)?;
        }
    }
    Ok(PayloadState {
        tokens,
        logits,
        cache,
    })
}
