#!/usr/bin/env python3
"""Independent, loop-style reference of the DeepSeek-V4 forward pass, optionally with
the model's quantization-aware simulations (spec architecture.md §3.9).

Written from the math (official-code semantics: stateless forward, explicit per-query
index sets = sliding window + compressed rows, sink in the softmax denominator), in
float64, with Python loops over queries. It shares no code with the Rust engine.

With ``sims=False`` it is plain V4 (what transformers computes, which has no
simulations). With ``sims=True`` it applies, at the points the spec names:

* fp8_sim on the non-RoPE dims of every raw KV row and every attention compressed
  row (blocks of 64, ``s = 2^ceil(log2(max(amax, 1e-4)/448))``), using PyTorch's own
  ``float8_e4m3fn`` cast for the rounding;
* hadamard (explicit Sylvester matrix / sqrt(n), not a butterfly) then fp4_sim
  (blocks of 32, ``s = 2^ceil(log2(max(amax, 7.052966104933725e-38)/6))``) on every
  indexer compressed row and on the indexer queries (after RoPE), using PyTorch's
  reference E2M1 conversion ``torch.testing._internal.common_quantized.
  _f32_to_floatx_unpacked(x, 2, 1)`` (round to nearest, ties to even code) because
  ``tensor.to(torch.float4_e2m1fn_x2)`` is not implemented in torch 2.15;
* f16 rounding of every stored row (raw KV, attention and indexer compressed rows),
  by numpy's direct float64 -> float16 conversion.

PyTorch's float8 cast and the E2M1 helper take float32 input (torch converts a
float64 tensor to float32 first), so those roundings are applied to the float32
nearest of the float64 value. ``HAZARDS`` counts the values for which that
intermediate float32 rounding could change the result (0 means the float64 math is
rounded exactly).

    from v4_reference import load_official, forward
    sd, cfg = load_official("crates/ds4-engine/tests/data/tiny-v4")
    logits = forward(sd, cfg, ids, sims=True)        # float64 [S, vocab]

Intentionally slow and simple -- a cross-check of the written spec, not a second
implementation to maintain. Derived from the project's research script
v4_spec_check.py (which matched transformers to 1e-5 with the simulations off).
"""
import json
import math
import os
import types

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- sims (§3.9)

HAZARDS = {"e4m3": 0, "e2m1": 0}
# how fragile the simulated roundings are: per relative perturbation delta, the number
# of values whose rounded result changes when the value (or its block's amax, for
# the power-of-two scale) moves by +-delta; an f32 engine differs from this float64
# reference by ~1e-7..1e-5 relative, so such values may round the other way there
FRAGILE_DELTAS = (1e-6, 1e-5, 1e-4)
FRAGILE = {}
SIM_COUNTS = {}


def _count_fragile(kind, y, rnd, amax, qmax):
    SIM_COUNTS[kind] = SIM_COUNTS.get(kind, 0) + y.numel()
    for dl in FRAGILE_DELTAS:
        flips = rnd(y * (1 + dl)) != rnd(y * (1 - dl))
        e = torch.log2(amax / qmax)
        scale_flip = (torch.ceil(e + math.log2(1 + dl)) != torch.ceil(e + math.log2(1 - dl))).expand_as(y)
        d = FRAGILE.setdefault(kind, {})
        d[f"values_{dl:g}"] = d.get(f"values_{dl:g}", 0) + int(flips.sum())
        d[f"block_scales_{dl:g}"] = d.get(f"block_scales_{dl:g}", 0) + int(scale_flip[..., 0].sum())


def _via_f32(x, rnd, kind):
    """rnd(float32(x)) for a float64 x; counts the values where the float32 step
    could matter: x not a float32, and the float32 neighbour on x's side rounds
    differently."""
    y = x.float()
    out = rnd(y)
    inexact = y.double() != x
    if inexact.any():
        toward = torch.nextafter(y, torch.where(x > y.double(), torch.full_like(y, math.inf), torch.full_like(y, -math.inf)))
        HAZARDS[kind] += int((inexact & (rnd(toward) != out)).sum())
    return out.double()


def _torch_e2m1(y):
    from torch.testing._internal.common_quantized import _f32_to_floatx_unpacked, _floatx_unpacked_to_f32
    return _floatx_unpacked_to_f32(_f32_to_floatx_unpacked(y.contiguous(), 2, 1), 2, 1)


_RAW = {"e4m3": lambda y: y.to(torch.float8_e4m3fn).float(), "e2m1": lambda y: _torch_e2m1(y)}


def f16_round(x):
    """nearest IEEE half, rounded once from the float64 value (numpy converts
    float64 -> float16 directly; torch goes through float32)"""
    import numpy as np

    return torch.from_numpy(x.detach().numpy().astype(np.float16).astype(np.float64))


def block_sim(x, block, qmax, floor, kind):
    """per block of the last dim: s = 2^ceil(log2(max(amax, floor)/qmax)),
    v <- rnd(clamp(v/s, +-qmax))*s"""
    out = torch.empty_like(x)
    for b0 in range(0, x.shape[-1], block):
        v = x[..., b0:b0 + block]
        amax = v.abs().amax(-1, keepdim=True).clamp(min=floor)
        s = torch.exp2(torch.ceil(torch.log2(amax / qmax)))
        y = (v / s).clamp(-qmax, qmax)
        out[..., b0:b0 + block] = _via_f32(y, _RAW[kind], kind) * s
        _count_fragile(kind, y, lambda t: _RAW[kind](t.float()), amax, qmax)
    return out


def fp8_sim(x):
    return block_sim(x, 64, 448.0, 1e-4, "e4m3")


def fp4_sim(x):
    return block_sim(x, 32, 6.0, 7.052966104933725e-38, "e2m1")


def hadamard(x):
    """x @ H_n^T / sqrt(n) with the Sylvester matrix H_{2n} = [[H, H], [H, -H]]"""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < x.shape[-1]:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    assert h.shape[0] == x.shape[-1]
    return x @ h.T / math.sqrt(x.shape[-1])


def kv_row_sim(x, rd):
    """fp8 on the non-RoPE dims, then the f16 of the stored row"""
    return f16_round(torch.cat([fp8_sim(x[..., :-rd]), x[..., -rd:]], dim=-1))


def rms(x, w=None, eps=1e-6):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else y * w


def inv_freq(rd, theta, yarn=None):
    f = 1.0 / theta ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    if yarn:  # DeepSeek/YaRN frequency blend, no magnitude (mscale) factor
        fac, orig, bf, bs = yarn["factor"], yarn["original_max_position_embeddings"], yarn["beta_fast"], yarn["beta_slow"]
        cdim = lambda r: rd * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(theta))  # noqa: E731
        lo, hi = max(math.floor(cdim(bf)), 0), min(math.ceil(cdim(bs)), rd - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(rd // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
        f = f / fac * ramp + f * (1 - ramp)
    return f


def rope(x, pos, f, inverse=False):
    """interleaved pairs (x[2i], x[2i+1]) of the LAST 2*len(f) channels, angle pos*f_i"""
    rd = 2 * f.numel()
    ang = pos.double()[:, None] * f[None, :]  # [S, rd/2]
    c, s = ang.cos(), ang.sin()
    if inverse:
        s = -s
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [rd // 2]
    c, s = c.view(shape), s.view(shape)
    nope, r = x[..., :-rd], x[..., -rd:]
    a, b = r[..., 0::2], r[..., 1::2]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return torch.cat([nope, out], dim=-1)


def hc_coeffs(X, fn, base, scale, n, iters, eps_hc, eps_rms):
    v = X.flatten(-2)
    m = (v @ fn.T) * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps_rms)
    pre = torch.sigmoid(m[:, :n] * scale[0] + base[:n]) + eps_hc
    post = 2 * torch.sigmoid(m[:, n:2 * n] * scale[1] + base[n:2 * n])
    C = torch.softmax(m[:, 2 * n:].view(-1, n, n) * scale[2] + base[2 * n:].view(n, n), dim=-1) + eps_hc
    C = C / (C.sum(-2, keepdim=True) + eps_hc)
    for _ in range(iters - 1):
        C = C / (C.sum(-1, keepdim=True) + eps_hc)
        C = C / (C.sum(-2, keepdim=True) + eps_hc)
    return pre, post, C


def compress(x, Wkv, Wg, ape, norm_w, m, overlap, eps):
    """one compressed row per COMPLETE window of m tokens; returns [n_win, d]"""
    S = x.shape[0]
    nw = S // m
    if nw == 0:
        return x.new_zeros(0, norm_w.numel())
    a = (x[: nw * m] @ Wkv.T).view(nw, m, -1)
    g = (x[: nw * m] @ Wg.T).view(nw, m, -1) + ape
    if not overlap:
        rows = (torch.softmax(g, dim=1) * a).sum(1)
    else:
        d = a.shape[-1] // 2
        rows = []
        for w in range(nw):
            A, G = [a[w, :, d:]], [g[w, :, d:]]  # Cb of window w
            if w > 0:
                A.insert(0, a[w - 1, :, :d])  # Ca of window w-1
                G.insert(0, g[w - 1, :, :d])
            A, G = torch.cat(A), torch.cat(G)
            rows.append((torch.softmax(G, dim=0) * A).sum(0))
        rows = torch.stack(rows) if rows else a.new_zeros(0, d)
    return rms(rows, norm_w, eps)


def forward(sd, cfg, ids, sims=False, trace=None):
    """float64 logits [S, vocab]; trace (a dict) receives indexer_topk.L [S, k] (-1 pad)
    and the stored rows rows.{kv,comp,icomp}.L (float64, after the simulations)"""
    D, n, eps = cfg.hidden_size, cfg.hc_mult, cfg.rms_norm_eps
    Hh, hd, rd = cfg.num_attention_heads, cfg.head_dim, cfg.qk_rope_head_dim
    W = cfg.sliding_window
    S = ids.numel()
    pos = torch.arange(S)
    g = lambda k: sd[k].double()  # noqa: E731
    f_main = inv_freq(rd, cfg.rope_parameters["main"]["rope_theta"])
    rp = cfg.rope_parameters["compress"]
    f_comp = inv_freq(rd, rp["rope_theta"], rp if rp.get("rope_type") == "yarn" else None)

    X = g("model.embed_tokens.weight")[ids].unsqueeze(1).repeat(1, n, 1)  # [S, n, D]
    for li, lt in enumerate(cfg.layer_types):
        p = f"model.layers.{li}."
        # ---------------- attention sub-block
        pre, post, C = hc_coeffs(X, g(p + "attn_hc.fn"), g(p + "attn_hc.base"), g(p + "attn_hc.scale"),
                                 n, cfg.hc_sinkhorn_iters, cfg.hc_eps, eps)
        x = rms((pre.unsqueeze(-1) * X).sum(1), g(p + "input_layernorm.weight"), eps)
        f = f_main if lt == "sliding_attention" else f_comp
        a = p + "self_attn."
        qr = rms(x @ g(a + "q_a_proj.weight").T, g(a + "q_a_norm.weight"), eps)
        q = rope(rms((qr @ g(a + "q_b_proj.weight").T).view(S, Hh, hd), None, eps), pos, f)
        kv = rope(rms(x @ g(a + "kv_proj.weight").T, g(a + "kv_norm.weight"), eps), pos, f)
        if sims:
            kv = kv_row_sim(kv, rd)
        if trace is not None:
            trace[f"rows.kv.{li}"] = kv
        comp, sel = None, None
        if lt != "sliding_attention":
            c = a + "compressor."
            csa = lt == "compressed_sparse_attention"
            m = cfg.compress_rates[lt]
            comp = compress(x, g(c + "kv_proj.weight"), g(c + "gate_proj.weight"), g(c + "position_bias"),
                            g(c + "kv_norm.weight"), m, csa, eps)
            comp = rope(comp, torch.arange(comp.shape[0]) * m, f_comp)
            if sims:
                comp = kv_row_sim(comp, rd)
            if trace is not None:
                trace[f"rows.comp.{li}"] = comp
            if csa:  # Lightning indexer
                ix = c + "indexer."
                nI, dI = cfg.index_n_heads, cfg.index_head_dim
                kI = compress(x, g(ix + "kv_proj.weight"), g(ix + "gate_proj.weight"), g(ix + "position_bias"),
                              g(ix + "kv_norm.weight"), m, True, eps)
                kI = rope(kI, torch.arange(kI.shape[0]) * m, f_comp)
                qI = rope((qr @ g(ix + "q_b_proj.weight").T).view(S, nI, dI), pos, f_comp)
                if sims:
                    kI = f16_round(fp4_sim(hadamard(kI)))
                    qI = fp4_sim(hadamard(qI))
                if trace is not None:
                    trace[f"rows.icomp.{li}"] = kI
                wI = (x @ g(ix + "scorer.weights_proj.weight").T) * nI ** -0.5
                score = (torch.relu(torch.einsum("shd,td->sht", qI, kI)) * dI ** -0.5 * wI[..., None]).sum(1)
                sel = []
                for t in range(S):
                    nvis = (t + 1) // m
                    k = min(cfg.index_topk, nvis)
                    # the k best, ties to the lower row (a stable sort): with FP4 inputs
                    # equal scores are not impossible
                    order = torch.sort(-score[t, :nvis], stable=True).indices
                    sel.append(order[:k])
                if trace is not None:
                    # relative gap between the k-th and (k+1)-th score, where rows are dropped
                    gap = torch.full((S,), math.nan, dtype=torch.float64)
                    for t in range(S):
                        nvis = (t + 1) // m
                        if nvis > cfg.index_topk:
                            top = torch.sort(score[t, :nvis], descending=True).values
                            k = cfg.index_topk
                            gap[t] = (top[k - 1] - top[k]) / top[0].abs()
                    trace[f"indexer_gap.{li}"] = gap
                    tk = torch.full((S, cfg.index_topk), -1, dtype=torch.int32)
                    for t, st in enumerate(sel):
                        tk[t, :st.numel()] = torch.sort(st).values.to(torch.int32)
                    trace[f"indexer_topk.{li}"] = tk
        sinks = g(a + "sinks")
        out = torch.zeros(S, Hh, hd, dtype=torch.float64)
        for t in range(S):
            keys = [kv[max(0, t - W + 1): t + 1]]
            if comp is not None:
                nvis = (t + 1) // cfg.compress_rates[lt]
                keys.append(comp[sel[t]] if sel is not None else comp[:nvis])
            K = torch.cat(keys)  # [T, hd], also used as V
            logit = q[t] @ K.T * hd ** -0.5  # [H, T]
            mx = torch.maximum(logit.max(-1).values, sinks)
            e = (logit - mx[:, None]).exp()
            out[t] = (e @ K) / (e.sum(-1) + (sinks - mx).exp())[:, None]
        out = rope(out, pos, f, inverse=True)
        G = cfg.o_groups
        woa = g(a + "o_a_proj.weight").view(G, cfg.o_lora_rank, -1)
        z = torch.einsum("sgd,grd->sgr", out.reshape(S, G, -1), woa).reshape(S, -1)
        y = z @ g(a + "o_b_proj.weight").T
        X = post.unsqueeze(-1) * y.unsqueeze(1) + torch.einsum("sjk,sjd->skd", C, X)
        # ---------------- MoE sub-block
        pre, post, C = hc_coeffs(X, g(p + "ffn_hc.fn"), g(p + "ffn_hc.base"), g(p + "ffn_hc.scale"),
                                 n, cfg.hc_sinkhorn_iters, cfg.hc_eps, eps)
        x = rms((pre.unsqueeze(-1) * X).sum(1), g(p + "post_attention_layernorm.weight"), eps)
        mp = p + "mlp."
        s = torch.sqrt(F.softplus(x @ g(mp + "gate.weight").T))
        if cfg.mlp_layer_types[li] == "hash_moe":
            idx = sd[mp + "gate.tid2eid"][ids]
        else:
            idx = (s + g(mp + "gate.e_score_correction_bias")).topk(cfg.num_experts_per_tok, dim=-1).indices
        wts = s.gather(1, idx)
        wts = wts / wts.sum(-1, keepdim=True) * cfg.routed_scaling_factor
        L, I = cfg.swiglu_limit, cfg.moe_intermediate_size

        def swiglu(xx, w_gate, w_up, w_down):
            return (F.silu((xx @ w_gate.T).clamp(max=L)) * (xx @ w_up.T).clamp(-L, L)) @ w_down.T

        gu, dn = g(mp + "experts.gate_up_proj"), g(mp + "experts.down_proj")
        y = swiglu(x, g(mp + "shared_experts.gate_proj.weight"), g(mp + "shared_experts.up_proj.weight"),
                   g(mp + "shared_experts.down_proj.weight"))
        for t in range(S):
            for j in range(idx.shape[1]):
                e = int(idx[t, j])
                y[t] += wts[t, j] * swiglu(x[t:t + 1], gu[e, :I], gu[e, I:], dn[e])[0]
        X = post.unsqueeze(-1) * y.unsqueeze(1) + torch.einsum("sjk,sjd->skd", C, X)
    # final HC collapse + norm + head
    v = X.flatten(-2)
    mm = (v @ g("model.hc_head.hc_fn").T) * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    pre = torch.sigmoid(mm * g("model.hc_head.hc_scale") + g("model.hc_head.hc_base")) + cfg.hc_eps
    h = rms((pre.unsqueeze(-1) * X).sum(1), g("model.norm.weight"), eps)
    return h @ g("lm_head.weight").T


# ----------------------------------------------------------------------------- loading

# official checkpoint names (per layer) -> the HF module names this code reads
_LAYER_NAMES = {
    "attn.attn_sink": "self_attn.sinks",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_norm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv.weight": "self_attn.kv_proj.weight",
    "attn.kv_norm.weight": "self_attn.kv_norm.weight",
    "attn.wo_a.weight": "self_attn.o_a_proj.weight",
    "attn.wo_b.weight": "self_attn.o_b_proj.weight",
    "attn.compressor.ape": "self_attn.compressor.position_bias",
    "attn.compressor.wkv.weight": "self_attn.compressor.kv_proj.weight",
    "attn.compressor.wgate.weight": "self_attn.compressor.gate_proj.weight",
    "attn.compressor.norm.weight": "self_attn.compressor.kv_norm.weight",
    "attn.indexer.compressor.ape": "self_attn.compressor.indexer.position_bias",
    "attn.indexer.compressor.wkv.weight": "self_attn.compressor.indexer.kv_proj.weight",
    "attn.indexer.compressor.wgate.weight": "self_attn.compressor.indexer.gate_proj.weight",
    "attn.indexer.compressor.norm.weight": "self_attn.compressor.indexer.kv_norm.weight",
    "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
    "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.gate.tid2eid": "mlp.gate.tid2eid",
    "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "hc_attn_fn": "attn_hc.fn",
    "hc_attn_base": "attn_hc.base",
    "hc_attn_scale": "attn_hc.scale",
    "hc_ffn_fn": "ffn_hc.fn",
    "hc_ffn_base": "ffn_hc.base",
    "hc_ffn_scale": "ffn_hc.scale",
}
_TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "head.weight": "lm_head.weight",
    "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn",
    "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}


def load_official(model_dir):
    """(state dict under HF names, config namespace) from an official-style f32
    checkpoint directory (config.json + model.safetensors, experts split)."""
    from safetensors.torch import load_file

    c = json.load(open(os.path.join(model_dir, "config.json")))
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    n_layer = c["num_hidden_layers"]
    ratios = c["compress_ratios"][:n_layer]
    kind = {0: "sliding_attention"}
    rates = {}
    for r in sorted(set(ratios) - {0}):
        # ratio 4 = overlapping compressor + indexer (CSA); larger = HCA
        name = "compressed_sparse_attention" if r == 4 else "heavily_compressed_attention"
        kind[r] = name
        rates[name] = r
    ys = c["rope_scaling"]
    cfg = types.SimpleNamespace(
        hidden_size=c["hidden_size"], hc_mult=c["hc_mult"], rms_norm_eps=c["rms_norm_eps"],
        num_attention_heads=c["num_attention_heads"], head_dim=c["head_dim"],
        qk_rope_head_dim=c["qk_rope_head_dim"], sliding_window=c["sliding_window"],
        rope_parameters={
            "main": {"rope_type": "default", "rope_theta": c["rope_theta"]},
            "compress": {"rope_type": ys["type"], "rope_theta": c["compress_rope_theta"],
                         "factor": ys["factor"],
                         "original_max_position_embeddings": ys["original_max_position_embeddings"],
                         "beta_fast": ys["beta_fast"], "beta_slow": ys["beta_slow"]},
        },
        layer_types=[kind[r] for r in ratios], compress_rates=rates,
        index_n_heads=c["index_n_heads"], index_head_dim=c["index_head_dim"], index_topk=c["index_topk"],
        o_groups=c["o_groups"], o_lora_rank=c["o_lora_rank"], hc_sinkhorn_iters=c["hc_sinkhorn_iters"],
        hc_eps=c["hc_eps"], mlp_layer_types=["hash_moe"] * c["num_hash_layers"] + ["moe"] * (n_layer - c["num_hash_layers"]),
        num_experts_per_tok=c["num_experts_per_tok"], routed_scaling_factor=c["routed_scaling_factor"],
        swiglu_limit=c["swiglu_limit"], moe_intermediate_size=c["moe_intermediate_size"],
        vocab_size=c["vocab_size"],
    )
    sd = {hf: raw[k] for k, hf in _TOP_NAMES.items()}
    for li in range(n_layer):
        p = f"layers.{li}."
        for k, hf in _LAYER_NAMES.items():
            if p + k in raw:
                sd[f"model.layers.{li}.{hf}"] = raw[p + k].long() if k.endswith("tid2eid") else raw[p + k]
        ne = c["n_routed_experts"]
        w = lambda e, n: raw[f"{p}ffn.experts.{e}.{n}.weight"]  # noqa: E731
        sd[f"model.layers.{li}.mlp.experts.gate_up_proj"] = torch.stack([torch.cat([w(e, "w1"), w(e, "w3")]) for e in range(ne)])
        sd[f"model.layers.{li}.mlp.experts.down_proj"] = torch.stack([w(e, "w2") for e in range(ne)])
    return sd, cfg


def main():
    import argparse
    from safetensors.torch import load_file

    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="reference logits for the tiny fixture; with --sims prints the "
                                 "deviation from the sims-off run, without it the deviation from transformers")
    ap.add_argument("--model", default=os.path.join(here, "..", "crates", "ds4-engine", "tests", "data", "tiny-v4"))
    ap.add_argument("--seq", type=int, default=640)
    ap.add_argument("--sims", action="store_true")
    a = ap.parse_args()
    sd, cfg = load_official(a.model)
    gold = load_file(os.path.join(a.model, "golden.safetensors"))
    ids = gold["input_ids"][: a.seq].long()
    with torch.no_grad():
        off = forward(sd, cfg, ids, sims=False)
        d = (off - gold["logits"][: a.seq].double()).abs()
        print(f"reference (sims off) vs transformers: max|dlogit| {d.max():.3e}; rel "
              f"{(d.amax(-1) / gold['logits'][: a.seq].double().abs().amax(-1)).max():.3e}")
        if a.sims:
            on = forward(sd, cfg, ids, sims=True)
            d = (on - off).abs().amax(-1) / off.abs().amax(-1)
            print(f"sims on vs off: max rel {d.max():.3e}, mean {d.mean():.3e}; argmax agrees at "
                  f"{int((on.argmax(-1) == off.argmax(-1)).sum())}/{ids.numel()}; hazards {HAZARDS}")


if __name__ == "__main__":
    main()
