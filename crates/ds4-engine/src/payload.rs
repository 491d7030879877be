//! The session payload (spec §4.3): ds4's little-endian serialization of a session's
//! tokens, logits and KV state, used by the disk KV cache. Layout follows the spec;
//! it has not been checked against a file written by ds4 itself.
//!
//! Version 2 is ours: the same header and order, but every stored row is packed
//! losslessly by [`crate::kvpack`] (fp8 / fp4 codes with block exponents, one tag
//! byte per row) and a compressor frontier keeps only the slots a later token
//! reads (the rest are overwritten before use and restore as empty slots).
//! `read_payload` accepts both versions.

use std::collections::VecDeque;
use std::io::{Read, Write};

use crate::cache::{Frontier, KvCache};
use crate::config::{AttnKind, ModelConfig};
use crate::error::{EngineError, Result};
use crate::kvpack::{RowKind, body_len, decode_row, encode_row};

/// "DSV4" little-endian.
pub const PAYLOAD_MAGIC: u32 = 0x3456_5344;
pub const PAYLOAD_VERSION: u32 = 1;
/// The compact version (packed rows, live frontier slots).
pub const PAYLOAD_VERSION_COMPACT: u32 = 2;

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

/// Bytes that identify a model for saved sessions: every config value and the
/// f32 norm weights (which do not depend on the routed experts' quantization,
/// so q2 and q4 files of one model share saved sessions). Callers hash them.
pub fn model_fingerprint(model: &crate::model::Model) -> Vec<u8> {
    let mut h: Vec<u8> = b"ds4-rs model identity v1\0".to_vec();
    h.extend_from_slice(format!("{:?}", model.cfg.to_metadata()).as_bytes());
    let w = &model.weights;
    let mut put = |v: &[f32]| h.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    put(&w.output_norm);
    for l in &w.layers {
        put(&l.attn_norm);
        put(&l.kv_norm);
        put(&l.ffn_norm);
    }
    h
}

/// A borrowed [`PayloadState`]: saving does not copy the cache.
#[derive(Debug, Clone, Copy)]
pub struct PayloadRef<'a> {
    pub tokens: &'a [u32],
    pub logits: &'a [f32],
    pub cache: &'a KvCache,
}

impl PayloadState {
    pub fn as_ref(&self) -> PayloadRef<'_> {
        PayloadRef {
            tokens: &self.tokens,
            logits: &self.logits,
            cache: &self.cache,
        }
    }
}

/// Everything a payload carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadState {
    pub tokens: Vec<u32>,
    pub logits: Vec<f32>,
    pub cache: KvCache,
}

/// The 13-word header, tokens, logits and per-layer row counts (both versions).
fn write_head(
    cfg: &ModelConfig,
    ctx: usize,
    prefill_chunk: usize,
    st: PayloadRef<'_>,
    version: u32,
    w: &mut impl Write,
) -> Result<()> {
    let t = st.tokens.len();
    let live = cfg.sliding_window.min(t);
    let comp_cap = ctx / crate::config::SPARSE_RATIO + 2;
    for v in [
        PAYLOAD_MAGIC as usize,
        version as usize,
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
    for &tok in st.tokens {
        put_u32(w, tok as usize)?;
    }
    if st.logits.len() != cfg.n_vocab {
        return Err(bad("logits do not cover the vocabulary"));
    }
    put_f32s(w, st.logits)?;
    for l in &st.cache.layers {
        put_u32(w, l.comp.len())?;
    }
    for l in &st.cache.layers {
        put_u32(w, l.icomp.len())?;
    }
    Ok(())
}

/// Writes `state` for a session of context `ctx` that prefills in `prefill_chunk`s.
pub fn write_payload(
    cfg: &ModelConfig,
    ctx: usize,
    prefill_chunk: usize,
    st: &PayloadState,
    w: &mut impl Write,
) -> Result<()> {
    write_head(cfg, ctx, prefill_chunk, st.as_ref(), PAYLOAD_VERSION, w)?;
    let live = cfg.sliding_window.min(st.tokens.len());
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
    let compact = version == PAYLOAD_VERSION_COMPACT as usize;
    if magic != PAYLOAD_MAGIC as usize || !(version == PAYLOAD_VERSION as usize || compact) {
        return Err(bad(format!(
            "not a DSV4 v1/v2 payload (magic {magic:#x}, version {version})"
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
        if compact {
            read_layer_compact(r, cfg, lc, live, n_comp[l], n_icomp[l], t)?;
            continue;
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

/// Slot ranges of a frontier that a later token reads before overwriting them,
/// after `t` tokens: the filled part of the current window, and for overlapping
/// compressors the whole previous window (lane A).
fn live_slots(f: &Frontier, t: usize) -> [std::ops::Range<usize>; 2] {
    let filled = t % f.ratio;
    if f.coff == 2 {
        [0..f.ratio, f.ratio..f.ratio + filled]
    } else {
        [0..filled, 0..0]
    }
}

fn put_front_live(w: &mut impl Write, f: &Frontier, t: usize) -> Result<()> {
    let width = f.width();
    for range in live_slots(f, t) {
        let span = range.start * width..range.end * width;
        put_f32s(w, &f.kv[span.clone()])?;
        put_f32s(w, &f.score[span])?;
    }
    Ok(())
}

fn read_front_live(r: &mut impl Read, f: &mut Frontier, t: usize) -> Result<()> {
    let width = f.width();
    for range in live_slots(f, t) {
        let span = range.start * width..range.end * width;
        let n = span.len();
        f.kv[span.clone()].copy_from_slice(&get_f32s(r, n)?);
        f.score[span].copy_from_slice(&get_f32s(r, n)?);
    }
    Ok(())
}

fn put_rows(
    w: &mut impl Write,
    rows: &mut dyn Iterator<Item = &[f32]>,
    kind: RowKind,
) -> Result<()> {
    let mut buf = Vec::new();
    for row in rows {
        encode_row(row, kind, &mut buf);
        if buf.len() >= 1 << 16 {
            w.write_all(&buf).map_err(io_err)?;
            buf.clear();
        }
    }
    w.write_all(&buf).map_err(io_err)
}

fn get_row(r: &mut impl Read, kind: RowKind, width: usize, out: &mut Vec<f32>) -> Result<()> {
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag).map_err(io_err)?;
    let n =
        body_len(kind, width, tag[0]).ok_or_else(|| bad(format!("unknown row tag {}", tag[0])))?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).map_err(io_err)?;
    decode_row(&body, tag[0], kind, width, out).ok_or_else(|| bad("malformed packed row"))
}

/// Writes `state` in the compact version 2 layout (see the module docs).
pub fn write_payload_compact(
    cfg: &ModelConfig,
    ctx: usize,
    prefill_chunk: usize,
    st: PayloadRef<'_>,
    w: &mut impl Write,
) -> Result<()> {
    write_head(cfg, ctx, prefill_chunk, st, PAYLOAD_VERSION_COMPACT, w)?;
    let t = st.tokens.len();
    let live = cfg.sliding_window.min(t);
    let kv = RowKind::Kv {
        n_nope: cfg.head_dim - cfg.n_rot,
    };
    for l in &st.cache.layers {
        if l.raw.len() != live {
            return Err(bad("raw window length disagrees with the token count"));
        }
        put_rows(w, &mut l.raw.iter().map(|r| r.as_slice()), kv)?;
        if let Some(f) = &l.comp_front {
            put_rows(w, &mut l.comp.iter(), kv)?;
            put_front_live(w, f, t)?;
        }
        if let Some(f) = &l.icomp_front {
            put_rows(w, &mut l.icomp.iter(), RowKind::Indexer)?;
            put_front_live(w, f, t)?;
        }
    }
    Ok(())
}

fn read_layer_compact(
    r: &mut impl Read,
    cfg: &ModelConfig,
    lc: &mut crate::cache::LayerCache,
    live: usize,
    n_comp: usize,
    n_icomp: usize,
    t: usize,
) -> Result<()> {
    let kv = RowKind::Kv {
        n_nope: cfg.head_dim - cfg.n_rot,
    };
    let mut row = Vec::with_capacity(cfg.head_dim);
    lc.raw = VecDeque::with_capacity(cfg.sliding_window);
    for _ in 0..live {
        row.clear();
        get_row(r, kv, cfg.head_dim, &mut row)?;
        lc.raw.push_back(row.clone());
    }
    if let Some(f) = lc.comp_front.as_mut() {
        for _ in 0..n_comp {
            row.clear();
            get_row(r, kv, cfg.head_dim, &mut row)?;
            lc.comp.push(&row);
        }
        read_front_live(r, f, t)?;
    }
    if let Some(f) = lc.icomp_front.as_mut() {
        for _ in 0..n_icomp {
            row.clear();
            get_row(r, RowKind::Indexer, cfg.indexer_head_dim, &mut row)?;
            lc.icomp.push(&row);
        }
        read_front_live(r, f, t)?;
    }
    Ok(())
}
