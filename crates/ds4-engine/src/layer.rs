//! One decoder layer, top to bottom (spec §3.5–§3.10): the attention sublayer
//! (low-rank Q, shared K=V row, raw window, compressors, indexer, sinks, inverse
//! RoPE, grouped output) and the MoE sublayer, each wrapped in mHC.
//!
//! Decode defines the semantics; a prefill chunk runs the same code over a run of
//! tokens, batching only the products that do not read or write the cache.

use rayon::prelude::*;

use crate::cache::{EMPTY_SCORE, Frontier, LayerCache, Rows};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::hc::{HcMix, hc_control_batch, hc_post, hc_pre};
use crate::ops::{Rope, rmsnorm, rmsnorm0_inplace, silu, softplus, topk_desc};
use crate::qat;
use crate::weights::{CompressorWeights, LayerWeights, Mat, dot};

/// Options that change the math.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardOptions {
    /// Turns off the model's quantization simulations (fp8 KV, indexer FP4, f16
    /// row rounding). Diagnostic only: transformers has none of them.
    pub no_qat_sim: bool,
}

/// Discrete decisions of one token, recorded for debugging and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerTrace {
    /// Compressed rows the indexer picked (ratio-4 layers with selection active).
    pub indexer_selected: Option<Vec<usize>>,
    /// Routed experts and their final weights (incl. the routed scaling factor).
    pub experts: Vec<(usize, f32)>,
}

/// Everything a layer needs besides its weights and cache.
pub struct LayerCtx<'a> {
    pub cfg: &'a ModelConfig,
    pub layer: usize,
    pub rope: &'a Rope,
    pub opts: ForwardOptions,
}

/// Runs layer `ctx.layer` on the HC states `xs` of a run of consecutive tokens
/// `toks` starting at position `pos0`. Decode is a run of one; a longer run gives
/// bit-identical results (the products that do not touch the cache are batched,
/// everything that does runs token after token).
pub fn layer_forward(
    ctx: &LayerCtx,
    w: &LayerWeights,
    cache: &mut LayerCache,
    xs: Vec<Vec<f32>>,
    toks: &[u32],
    pos0: usize,
    traces: &mut [LayerTrace],
) -> Result<Vec<Vec<f32>>> {
    let xs = attention_sublayer(ctx, w, cache, xs, pos0, traces)?;
    ffn_sublayer(ctx, w, xs, toks, traces)
}

/// `hc_pre` then the sublayer's RMSNorm, per token.
fn hc_pre_norm(
    cfg: &ModelConfig,
    hw: &crate::weights::HcWeights,
    norm: &[f32],
    xs: &[Vec<f32>],
) -> Result<(Vec<Vec<f32>>, Vec<HcMix>)> {
    let zs = hc_control_batch(xs, hw, cfg.rms_eps)?;
    let mut xns = Vec::with_capacity(xs.len());
    let mut mixes = Vec::with_capacity(xs.len());
    for (x, z) in xs.iter().zip(&zs) {
        let (y, mix) = hc_pre(x, z, hw, cfg.hc, cfg.hc_sinkhorn_iters, cfg.hc_eps);
        let mut xn = vec![0.0; cfg.n_embd];
        rmsnorm(&y, norm, cfg.rms_eps, &mut xn);
        xns.push(xn);
        mixes.push(mix);
    }
    Ok((xns, mixes))
}

// ------------------------------------------------------------------------------------
// Attention sublayer (§3.5)

/// The attention sublayer alone (public for backends that compare sublayer by sublayer).
pub fn attention_sublayer(
    ctx: &LayerCtx,
    w: &LayerWeights,
    cache: &mut LayerCache,
    xs: Vec<Vec<f32>>,
    pos0: usize,
    traces: &mut [LayerTrace],
) -> Result<Vec<Vec<f32>>> {
    let cfg = ctx.cfg;
    let (hd, nh, eps) = (cfg.head_dim, cfg.n_head, cfg.rms_eps);
    let n_nope = hd - cfg.n_rot;
    let sim = !ctx.opts.no_qat_sim;

    let (xns, mixes) = hc_pre_norm(cfg, &w.hc_attn, &w.attn_norm, &xs)?;

    // Low-rank Q with its norm ("qr"), then per-head weightless RMSNorm.
    let qas: Vec<Vec<f32>> = w
        .q_a
        .matmul(&xns)?
        .into_iter()
        .map(|raw| {
            let mut qa = vec![0.0; cfg.q_lora];
            rmsnorm(&raw, &w.q_a_norm, eps, &mut qa);
            qa
        })
        .collect();
    let mut qs = w.q_b.matmul(&qas)?;
    // The single shared K=V row of each token, normed.
    let kvs: Vec<Vec<f32>> =
        w.kv.matmul(&xns)?
            .into_iter()
            .map(|raw| {
                let mut kv = vec![0.0; hd];
                rmsnorm(&raw, &w.kv_norm, eps, &mut kv);
                kv
            })
            .collect();
    // Compressor and indexer projections depend only on the token itself.
    let comp_proj = match &w.compressor {
        Some(cw) => Some((cw.kv.matmul(&xns)?, cw.gate.matmul(&xns)?)),
        None => None,
    };
    let idx_proj = match &w.indexer {
        Some(iw) => Some((
            iw.compressor.kv.matmul(&xns)?,
            iw.compressor.gate.matmul(&xns)?,
            iw.q_b.matmul(&qas)?,
            iw.proj.matmul(&xns)?,
        )),
        None => None,
    };

    // Token after token: everything that reads or writes the cache.
    let mut os = Vec::with_capacity(xs.len());
    for (i, mut kv) in kvs.into_iter().enumerate() {
        let pos = pos0 + i;
        let q = &mut qs[i];
        for qh in q.chunks_exact_mut(hd) {
            rmsnorm0_inplace(qh, eps);
            ctx.rope.apply(qh, pos, false);
        }
        ctx.rope.apply(&mut kv, pos, false);
        if sim {
            qat::fp8_kv_inplace(&mut kv[..n_nope]);
            qat::f16_round_inplace(&mut kv);
        }
        // Stored before attention: a token attends to itself.
        if cache.raw.len() == cfg.sliding_window {
            cache.raw.pop_front();
        }
        cache.raw.push_back(kv);

        // Compressors run before attention too: a row closed by this token is
        // visible to it.
        let mut selected: Option<Vec<usize>> = None;
        if let (Some(cw), Some(front), Some((kvp, scp))) =
            (&w.compressor, cache.comp_front.as_mut(), &comp_proj)
            && let Some(mut row) = compressor_step(cw, front, &kvp[i], &scp[i], pos, ctx.rope, eps)
        {
            if sim {
                qat::fp8_kv_inplace(&mut row[..n_nope]);
                qat::f16_round_inplace(&mut row);
            }
            cache.comp.push(&row);
        }
        if let (Some(iw), Some(ifront), Some((ikvp, iscp, qi, wi))) =
            (&w.indexer, cache.icomp_front.as_mut(), &idx_proj)
        {
            if let Some(mut irow) = compressor_step(
                &iw.compressor,
                ifront,
                &ikvp[i],
                &iscp[i],
                pos,
                ctx.rope,
                eps,
            ) {
                if sim {
                    qat::indexer_qat_inplace(&mut irow);
                    qat::f16_round_inplace(&mut irow);
                }
                cache.icomp.push(&irow);
            }
            if cache.icomp.len() > cfg.indexer_top_k {
                selected = Some(indexer_select(
                    cfg,
                    qi[i].clone(),
                    &wi[i],
                    &cache.icomp,
                    pos,
                    ctx.rope,
                    sim,
                ));
            }
        }

        // Rows this query sees: the raw window, then all compressed rows or the
        // indexer's selection.
        let mut rows: Vec<&[f32]> = cache.raw.iter().map(|r| r.as_slice()).collect();
        match &selected {
            Some(sel) => rows.extend(sel.iter().map(|&c| cache.comp.row(c))),
            None => rows.extend(cache.comp.iter()),
        }
        traces[i].indexer_selected = selected;

        let mut o = vec![0.0f32; nh * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let attend = |(h, oh): (usize, &mut [f32])| {
            attention_head(&q[h * hd..(h + 1) * hd], &rows, w.sinks[h], scale, oh);
            // V = K carries the rotation of each key; undo the query's rotation.
            ctx.rope.apply(oh, pos, true);
        };
        if nh * rows.len() * hd >= 1 << 16 {
            o.par_chunks_mut(hd).enumerate().for_each(attend);
        } else {
            o.chunks_mut(hd).enumerate().for_each(attend);
        }
        os.push(o);
    }

    let fs = grouped_output(cfg, &w.out_a, &w.out_b, &os)?;
    Ok(fs
        .iter()
        .zip(&xs)
        .zip(&mixes)
        .map(|((f, x), mix)| hc_post(f, x, mix, cfg.hc))
        .collect())
}

/// Softmax attention of one head over K=V rows with a sink logit that adds mass to
/// the denominator only.
fn attention_head(q: &[f32], rows: &[&[f32]], sink: f32, scale: f32, out: &mut [f32]) {
    let s: Vec<f32> = rows.iter().map(|r| dot(q, r) * scale).collect();
    let m = s.iter().fold(sink, |a, &b| a.max(b));
    let mut den = (sink - m).exp();
    out.fill(0.0);
    for (r, &sr) in rows.iter().zip(&s) {
        let e = (sr - m).exp();
        den += e;
        for (o, &v) in out.iter_mut().zip(r.iter()) {
            *o += e * v;
        }
    }
    for o in out {
        *o /= den;
    }
}

/// Group `g` multiplies heads `g·H/G .. (g+1)·H/G` (concatenated) by rows
/// `g·o_lora .. (g+1)·o_lora` of `out_a`; `out_b` mixes all groups back to `n_embd`.
fn grouped_output(
    cfg: &ModelConfig,
    out_a: &Mat,
    out_b: &Mat,
    os: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    let (r, gin) = (cfg.o_lora, cfg.o_group_in());
    let mut lows = vec![vec![0.0f32; cfg.o_groups * r]; os.len()];
    for g in 0..cfg.o_groups {
        let inputs: Vec<&[f32]> = os.iter().map(|o| &o[g * gin..(g + 1) * gin]).collect();
        for (low, part) in lows.iter_mut().zip(out_a.matmul_rows(g * r, r, &inputs)?) {
            low[g * r..(g + 1) * r].copy_from_slice(&part);
        }
    }
    out_b.matmul(&lows)
}

// ------------------------------------------------------------------------------------
// KV compressor (§3.6)

/// Feeds one token into a compressor's frontier; returns the compressed row when
/// this token closes a window. The row is normed and RoPE'd at the window's first
/// position; QAT is the caller's (it differs between attention and indexer rows).
/// `kvp = wkv·xn` and `gate = wgate·xn` are this token's projections.
pub fn compressor_step(
    w: &CompressorWeights,
    front: &mut Frontier,
    kvp: &[f32],
    gate: &[f32],
    pos: usize,
    rope: &Rope,
    eps: f32,
) -> Option<Vec<f32>> {
    let (ratio, coff, d) = (front.ratio, front.coff, front.d);
    let width = front.width();
    let r = pos % ratio;
    let scp: Vec<f32> = gate
        .iter()
        .zip(&w.ape[r * width..(r + 1) * width])
        .map(|(g, b)| g + b)
        .collect();
    // Overlapping compressors keep the previous window in slots 0..ratio (lane A)
    // and fill the current one into slots ratio..2·ratio (lane B).
    let slot = if coff == 2 {
        ratio + pos % ratio
    } else {
        pos % ratio
    };
    front.kv[slot * width..(slot + 1) * width].copy_from_slice(kvp);
    front.score[slot * width..(slot + 1) * width].copy_from_slice(&scp);
    if !(pos + 1).is_multiple_of(ratio) {
        return None;
    }

    // Per-dimension softmax pooling over the candidate slots.
    let lane = |slot: usize, j: usize| -> usize {
        if coff == 2 && slot >= ratio {
            slot * width + d + j
        } else {
            slot * width + j
        }
    };
    let mut pooled = vec![0.0f32; d];
    for (j, p) in pooled.iter_mut().enumerate() {
        let n_slots = coff * ratio;
        let m = (0..n_slots).fold(f32::NEG_INFINITY, |a, s| a.max(front.score[lane(s, j)]));
        if m <= EMPTY_SCORE / 2.0 {
            continue;
        }
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for s in 0..n_slots {
            let e = (front.score[lane(s, j)] - m).exp();
            num += e * front.kv[lane(s, j)];
            den += e;
        }
        *p = num / den;
    }
    let mut out = vec![0.0f32; d];
    rmsnorm(&pooled, &w.norm, eps, &mut out);
    rope.apply(&mut out, pos + 1 - ratio, false);
    if coff == 2 {
        // The current window becomes the next row's lane A.
        let half = ratio * width;
        front.kv.copy_within(half..2 * half, 0);
        front.score.copy_within(half..2 * half, 0);
    }
    Some(out)
}

// ------------------------------------------------------------------------------------
// Lightning indexer (§3.7)

/// Scores every visible indexer row and returns the `indexer_top_k` best (ties to
/// the lower row). Only called when there are more rows than `top_k`. `qi` is
/// `indexer.attn_q_b · qa` and `wi` is `indexer.proj · xn` for this token.
fn indexer_select(
    cfg: &ModelConfig,
    mut qi: Vec<f32>,
    wi: &[f32],
    icomp: &Rows,
    pos: usize,
    rope: &Rope,
    sim: bool,
) -> Vec<usize> {
    let (nh, di) = (cfg.indexer_heads, cfg.indexer_head_dim);
    for qh in qi.chunks_exact_mut(di) {
        rope.apply(qh, pos, false);
        if sim {
            qat::indexer_qat_inplace(qh);
        }
    }
    // 1/sqrt(heads) on the head weights and 1/sqrt(head_dim) on the scores, folded.
    let wscale = 1.0 / ((di * nh) as f32).sqrt();
    let wi: Vec<f32> = wi.iter().map(|v| v * wscale).collect();
    let score_row = |row: &[f32]| -> f32 {
        qi.chunks_exact(di)
            .zip(&wi)
            .map(|(qh, &wh)| wh * dot(qh, row).max(0.0))
            .sum()
    };
    let scores: Vec<f32> = if icomp.len() * nh * di >= 1 << 16 {
        icomp
            .as_flat()
            .par_chunks_exact(di)
            .map(score_row)
            .collect()
    } else {
        icomp.iter().map(score_row).collect()
    };
    topk_desc(&scores, cfg.indexer_top_k)
}

// ------------------------------------------------------------------------------------
// MoE sublayer (§3.10)

/// Below this sum of selected router weights the normalization divides by it
/// instead (ds4's floor, 2^−14).
const ROUTER_WEIGHT_FLOOR: f32 = 6.103_515_6e-5;

/// The MoE sublayer alone (public for backends that compare sublayer by sublayer).
pub fn ffn_sublayer(
    ctx: &LayerCtx,
    w: &LayerWeights,
    xs: Vec<Vec<f32>>,
    toks: &[u32],
    traces: &mut [LayerTrace],
) -> Result<Vec<Vec<f32>>> {
    let cfg = ctx.cfg;
    let (xns, mixes) = hc_pre_norm(cfg, &w.hc_ffn, &w.ffn_norm, &xs)?;
    let k = cfg.n_expert_used;
    let clamp = cfg.swiglu_clamp[ctx.layer];

    // Routing, per token. sqrt(softplus) "probabilities" are computed in hash
    // layers too: they supply the weights there.
    let logits = w.router.matmul(&xns)?;
    let mut routes: Vec<Vec<(usize, f32)>> = Vec::with_capacity(xs.len());
    for (&tok, lg) in toks.iter().zip(&logits) {
        let p: Vec<f32> = lg.iter().map(|&l| softplus(l).sqrt()).collect();
        let selected: Vec<usize> = match &w.tid2eid {
            // Hash layers route by the input token id; the bias is ignored there.
            Some(table) => table[tok as usize * k..(tok as usize + 1) * k]
                .iter()
                .map(|&e| e as usize)
                .collect(),
            None => {
                let biased: Vec<f32> = match &w.router_bias {
                    Some(b) => p.iter().zip(b).map(|(a, b)| a + b).collect(),
                    None => p.clone(),
                };
                topk_desc(&biased, k)
            }
        };
        let sum: f32 = selected.iter().map(|&e| p[e]).sum();
        let norm = cfg.expert_weight_scale / sum.max(ROUTER_WEIGHT_FLOOR);
        routes.push(selected.iter().map(|&e| (e, p[e] * norm)).collect());
    }

    // Each expert runs once over all the tokens routed to it (its weights are read
    // once per batch); results are summed per token in routing order, so a batch
    // adds exactly what token-by-token decode adds.
    let mut routed: Vec<Vec<Option<Vec<f32>>>> =
        routes.iter().map(|r| vec![None; r.len()]).collect();
    for e in 0..cfg.n_expert {
        let users: Vec<(usize, usize)> = routes
            .iter()
            .enumerate()
            .flat_map(|(t, r)| {
                r.iter()
                    .enumerate()
                    .filter(|(_, (re, _))| *re == e)
                    .map(move |(j, _)| (t, j))
            })
            .collect();
        if users.is_empty() {
            continue;
        }
        let inputs: Vec<Vec<f32>> = users.iter().map(|&(t, _)| xns[t].clone()).collect();
        let weights: Vec<f32> = users.iter().map(|&(t, j)| routes[t][j].1).collect();
        let outs = swiglu_expert(
            &w.gate_exps[e],
            &w.up_exps[e],
            &w.down_exps[e],
            &inputs,
            clamp,
            &weights,
        )?;
        for ((t, j), out) in users.into_iter().zip(outs) {
            routed[t][j] = Some(out);
        }
    }
    let shared = swiglu_expert(
        &w.gate_sh,
        &w.up_sh,
        &w.down_sh,
        &xns,
        clamp,
        &vec![1.0; xs.len()],
    )?;

    let mut result = Vec::with_capacity(xs.len());
    for (t, mut out) in shared.into_iter().enumerate() {
        for r in routed[t].iter().flatten() {
            for (o, v) in out.iter_mut().zip(r) {
                *o += v;
            }
        }
        traces[t].experts = routes[t].clone();
        result.push(hc_post(&out, &xs[t], &mixes[t], cfg.hc));
    }
    Ok(result)
}

/// `down · (silu(min(g, c)) · clamp(u, −c, c) · weight)` per input: the gate is
/// clamped from above only, the up projection on both sides; the router weight
/// scales the activation before the down projection.
fn swiglu_expert(
    gate: &Mat,
    up: &Mat,
    down: &Mat,
    xns: &[Vec<f32>],
    clamp: f32,
    weights: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let gs = gate.matmul(xns)?;
    let us = up.matmul(xns)?;
    let mids: Vec<Vec<f32>> = gs
        .iter()
        .zip(&us)
        .zip(weights)
        .map(|((g, u), &wt)| {
            g.iter()
                .zip(u)
                .map(|(&g, &u)| silu(g.min(clamp)) * u.clamp(-clamp, clamp) * wt)
                .collect()
        })
        .collect();
    down.matmul(&mids)
}
