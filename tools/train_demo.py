#!/usr/bin/env python3
"""Train the bundled demo model: a small DeepSeek V4 with the real 129,280-token
vocabulary and the real layer pattern, written as a vectorized PyTorch module whose
parameters carry the *official* checkpoint names (so a checkpoint converts with
`ds4-quantize --from-official` unchanged).

The forward is the stateless V4 forward (what transformers' DeepseekV4 computes, and
what tools/v4_reference.py spells out with loops), with the engine's quantization
simulations applied where the engine applies them (spec architecture.md §3.9):
fp8 (E4M3, blocks of 64) on the non-RoPE dims of every KV row and attention
compressed row, then the f16 of each stored row; Hadamard + FP4 (E2M1, blocks of 32)
on the indexer keys and queries. The roundings are straight-through (identity
gradient), so training sees the values the engine's default path computes.

What is *not* like the real model's training: the indexer gets no gradient (top-k
selection is not differentiable and there is no distillation loss), so it keeps its
initial weights; expert balance uses the bias update of auxiliary-loss-free balancing.

    # check the module against the transformers-made fixture (sims off) and the
    # float64 reference (sims on); CPU, seconds
    python3 tools/train_demo.py check
    # a random-init checkpoint at the demo shape (for the engine comparison)
    python3 tools/train_demo.py init --out /tmp/demo-init
    # train (GPU), data from tools/gen_demo_data.py; the shipped run (README):
    python3 tools/train_demo.py train --data DIR --out DIR --minutes 8.3 --seq 768 \
        --mix 2,2,28 --mix2 12,6,14 --phase2 0.7 --lr 2e-3 --dropout 0.1 --eval-every 100 \
        --f16 --prose-margin 0.4
    # (each evaluation also scores the held-out tool prompts teacher-forced: a call
    # counts when every token of the call turn is the argmax; the state kept is the
    # one with the most such calls among those near the best held-out prose loss)
    # --save-every N (a multiple of --eval-every) also saves the state that would be
    # kept if the run ended there, so a run stopped at the device's time limit
    # still returns a checkpoint
    # logits of a checkpoint on some ids (to compare with `ds4 --dump-logits`)
    python3 tools/train_demo.py logits --ckpt DIR --ids ids.json --out logits.f32
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------- config

DEMO = dict(
    vocab_size=129280, hidden_size=256, moe_intermediate_size=256, num_hidden_layers=6,
    num_hash_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=128,
    qk_rope_head_dim=64, q_lora_rank=128, o_groups=2, o_lora_rank=128,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
    scoring_func="sqrtsoftplus", norm_topk_prob=True, topk_method="noaux_tc",
    routed_scaling_factor=1.5, swiglu_limit=10.0, sliding_window=128,
    compress_ratios=[0, 0, 4, 128, 4, 128, 0], compress_rope_theta=160000.0,
    rope_theta=10000.0,
    rope_scaling={"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 65536,
                  "beta_fast": 32, "beta_slow": 1},
    index_n_heads=4, index_head_dim=64, index_topk=64, hc_mult=4, hc_sinkhorn_iters=20,
    hc_eps=1e-6, rms_norm_eps=1e-6, max_position_embeddings=1048576, num_nextn_predict_layers=0,
    tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, torch_dtype="float32",
    architectures=["DeepseekV4ForCausalLM"], model_type="deepseek_v4",
)


class Cfg:
    def __init__(self, d):
        self.raw = d
        self.V, self.D = d["vocab_size"], d["hidden_size"]
        self.F = d["moe_intermediate_size"]
        self.L = d["num_hidden_layers"]
        self.n_hash = d.get("num_hash_layers", 0)
        self.H, self.hd, self.rd = d["num_attention_heads"], d["head_dim"], d["qk_rope_head_dim"]
        self.q_lora, self.G, self.o_lora = d["q_lora_rank"], d["o_groups"], d["o_lora_rank"]
        self.E, self.k = d["n_routed_experts"], d["num_experts_per_tok"]
        self.scale = d["routed_scaling_factor"]
        self.limit = d["swiglu_limit"]
        self.W = d["sliding_window"]
        self.ratios = d["compress_ratios"][: self.L]
        self.nI, self.dI, self.topk = d["index_n_heads"], d["index_head_dim"], d["index_topk"]
        self.n = d["hc_mult"]
        self.iters, self.hc_eps, self.eps = d["hc_sinkhorn_iters"], d["hc_eps"], d["rms_norm_eps"]
        self.theta, self.ctheta = d["rope_theta"], d["compress_rope_theta"]
        self.yarn = d.get("rope_scaling")


# ----------------------------------------------------------------------------- sims (§3.9)

def ste(x, y):
    """value y, gradient of x"""
    return x + (y - x).detach()


def block_round(x, block, qmax, floor, rnd):
    n = x.shape[-1]
    pad = -n % block  # a partial last block (zeros do not change its amax)
    xp = F.pad(x, (0, pad)) if pad else x
    v = xp.unflatten(-1, (xp.shape[-1] // block, block))
    amax = v.abs().amax(-1, keepdim=True).clamp(min=floor)
    s = torch.exp2(torch.ceil(torch.log2(amax / qmax)))
    return (rnd((v / s).clamp(-qmax, qmax)) * s).flatten(-2)[..., :n]


def e4m3(y):
    return y.to(torch.float8_e4m3fn).to(y.dtype)


def e2m1(y):
    """nearest of {0, .5, 1, 1.5, 2, 3, 4, 6} (with sign), ties to the even code"""
    a = y.abs()
    r = torch.where(a <= 0.25, 0.0, torch.where(a < 0.75, 0.5, torch.where(a <= 1.25, 1.0, torch.where(
        a < 1.75, 1.5, torch.where(a <= 2.5, 2.0, torch.where(a < 3.5, 3.0, torch.where(a <= 5.0, 4.0, 6.0)))))))
    return torch.copysign(r.to(y.dtype), y)


def fp8_sim(x):
    return block_round(x, 64, 448.0, 1e-4, e4m3)


def fp4_sim(x):
    return block_round(x, 32, 6.0, 7.052966104933725e-38, e2m1)


def f16_round(x):
    return x.to(torch.float16).to(x.dtype)


_HAD = {}


def hadamard(x):
    n = x.shape[-1]
    key = (n, x.device, x.dtype)
    if key not in _HAD:
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        _HAD[key] = (h / math.sqrt(n)).to(device=x.device, dtype=x.dtype)
    return x @ _HAD[key].T


def kv_row_sim(x, rd):
    y = torch.cat([fp8_sim(x[..., :-rd]), x[..., -rd:]], dim=-1)
    return f16_round(y)


# ----------------------------------------------------------------------------- pieces

def rms(x, w=None, eps=1e-6):
    x = x.float()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else y * w


def inv_freq(rd, theta, yarn=None):
    f = 1.0 / theta ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    if yarn:  # DeepSeek/YaRN frequency blend, no magnitude factor
        fac, orig = yarn["factor"], yarn["original_max_position_embeddings"]
        bf, bs = yarn["beta_fast"], yarn["beta_slow"]
        cdim = lambda r: rd * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(theta))  # noqa: E731
        lo, hi = max(math.floor(cdim(bf)), 0), min(math.ceil(cdim(bs)), rd - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(rd // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
        f = f / fac * ramp + f * (1 - ramp)
    return f


def cos_sin(pos, f):
    ang = pos.double()[:, None] * f.to(pos.device)[None, :]
    return ang.cos().float(), ang.sin().float()


def rope(x, cs, inverse=False, seq_dim=1):
    """interleaved pairs of the LAST rd channels; cs = (cos, sin) [S, rd/2]; x has its
    sequence axis at seq_dim and any axes after it before the channel axis"""
    c, s = cs
    rd = 2 * c.shape[-1]
    if inverse:
        s = -s
    shape = [1] * x.dim()
    shape[seq_dim] = c.shape[0]
    shape[-1] = rd // 2
    c, s = c.view(shape), s.view(shape)
    nope, r = x[..., :-rd], x[..., -rd:]
    a, b = r[..., 0::2], r[..., 1::2]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return torch.cat([nope, out], dim=-1)


def hc_coeffs(X, fn, base, scale, n, iters, eps_hc, eps):
    v = X.flatten(-2).float()
    m = (v @ fn.T) * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    pre = torch.sigmoid(m[..., :n] * scale[0] + base[:n]) + eps_hc
    post = 2 * torch.sigmoid(m[..., n:2 * n] * scale[1] + base[n:2 * n])
    C = torch.softmax(m[..., 2 * n:].unflatten(-1, (n, n)) * scale[2] + base[2 * n:].view(n, n), dim=-1) + eps_hc
    C = C / (C.sum(-2, keepdim=True) + eps_hc)
    for _ in range(iters - 1):
        C = C / (C.sum(-1, keepdim=True) + eps_hc)
        C = C / (C.sum(-2, keepdim=True) + eps_hc)
    return pre, post, C


def compress(x, wkv, wg, ape, norm_w, m, overlap, eps):
    """x [B, S, D] -> one row per COMPLETE window of m tokens [B, nw, d]"""
    B, S, _ = x.shape
    nw = S // m
    d = norm_w.numel()
    if nw == 0:
        return x.new_zeros(B, 0, d).float()
    a = (x[:, : nw * m] @ wkv.T).float().view(B, nw, m, -1)
    g = (x[:, : nw * m] @ wg.T).float().view(B, nw, m, -1) + ape
    if overlap:
        # window w mixes Ca of window w-1 (first d) with Cb of window w (last d)
        prev_a = torch.cat([a.new_zeros(B, 1, m, d), a[:, :-1, :, :d]], dim=1)
        prev_g = torch.cat([g.new_full((B, 1, m, d), float("-inf")), g[:, :-1, :, :d]], dim=1)
        a = torch.cat([prev_a, a[..., d:]], dim=2)
        g = torch.cat([prev_g, g[..., d:]], dim=2)
    rows = (torch.softmax(g, dim=2) * a).sum(2)
    return rms(rows, norm_w, eps)


# ----------------------------------------------------------------------------- model

def _p(*shape):
    return nn.Parameter(torch.empty(*shape))


class PD(nn.ParameterDict):
    """a ParameterDict keyed by official (dotted) names"""

    def __setitem__(self, k, v):
        super().__setitem__(k.replace(".", "__"), v)

    def __getitem__(self, k):
        return super().__getitem__(k.replace(".", "__"))

    def __contains__(self, k):
        return super().__contains__(k.replace(".", "__"))

    def items(self):
        return [(k.replace("__", "."), v) for k, v in super().items()]


class Layer(nn.Module):
    def __init__(self, c, li):
        super().__init__()
        D, n = c.D, c.n
        self.li, self.ratio, self.hash = li, c.ratios[li], li < c.n_hash
        P = PD()
        hcw = (2 + n) * n
        for s in ("attn", "ffn"):
            P[f"hc_{s}_fn"] = _p(hcw, n * D)
            P[f"hc_{s}_base"] = _p(hcw)
            P[f"hc_{s}_scale"] = _p(3)
        P["attn_norm.weight"] = _p(D)
        P["ffn_norm.weight"] = _p(D)
        P["attn.attn_sink"] = _p(c.H)
        P["attn.wq_a.weight"] = _p(c.q_lora, D)
        P["attn.q_norm.weight"] = _p(c.q_lora)
        P["attn.wq_b.weight"] = _p(c.H * c.hd, c.q_lora)
        P["attn.wkv.weight"] = _p(c.hd, D)
        P["attn.kv_norm.weight"] = _p(c.hd)
        P["attn.wo_a.weight"] = _p(c.G * c.o_lora, c.H * c.hd // c.G)
        P["attn.wo_b.weight"] = _p(D, c.G * c.o_lora)
        if self.ratio:
            coff = 2 if self.ratio == 4 else 1
            P["attn.compressor.ape"] = _p(self.ratio, coff * c.hd)
            P["attn.compressor.wkv.weight"] = _p(coff * c.hd, D)
            P["attn.compressor.wgate.weight"] = _p(coff * c.hd, D)
            P["attn.compressor.norm.weight"] = _p(c.hd)
            if self.ratio == 4:
                P["attn.indexer.compressor.ape"] = _p(4, 2 * c.dI)
                P["attn.indexer.compressor.wkv.weight"] = _p(2 * c.dI, D)
                P["attn.indexer.compressor.wgate.weight"] = _p(2 * c.dI, D)
                P["attn.indexer.compressor.norm.weight"] = _p(c.dI)
                P["attn.indexer.wq_b.weight"] = _p(c.nI * c.dI, c.q_lora)
                P["attn.indexer.weights_proj.weight"] = _p(c.nI, D)
        P["ffn.gate.weight"] = _p(c.E, D)
        for w in ("w1", "w3"):
            P[f"ffn.experts.{w}"] = _p(c.E, c.F, D)
            P[f"ffn.shared_experts.{w}.weight"] = _p(c.F, D)
        P["ffn.experts.w2"] = _p(c.E, D, c.F)
        P["ffn.shared_experts.w2.weight"] = _p(D, c.F)
        self.P = P
        if self.hash:
            self.register_buffer("tid2eid", torch.zeros(c.V, c.k, dtype=torch.long))
        else:
            self.register_buffer("gate_bias", torch.zeros(c.E))


class V4(nn.Module):
    """seen=None: full embedding and head. seen=ids: the compact vocabulary used in
    training: rows for the tokens that occur in the training data, plus one row for
    all others (a zero embedding, one shared head row). Tokens that never occur get
    no signal but to be unlikely, so tying them loses nothing, and the shipped
    matrices are mostly repeated rows (they compress well)."""

    def __init__(self, cfg_dict, seen=None):
        super().__init__()
        self.c = c = Cfg(cfg_dict)
        rows = c.V if seen is None else len(seen) + 1
        self.embed = nn.Parameter(torch.empty(rows, c.D))
        self.head = nn.Parameter(torch.empty(rows, c.D))
        if seen is None:
            self.vmap = None
        else:
            seen = torch.as_tensor(seen, dtype=torch.long)
            vmap = torch.full((c.V,), len(seen), dtype=torch.long)
            vmap[seen] = torch.arange(len(seen))
            self.register_buffer("vmap", vmap)
            self.register_buffer("seen", seen)
            self.n_unseen = c.V - len(seen)
        self.norm = nn.Parameter(torch.empty(c.D))
        self.hc_head_fn = nn.Parameter(torch.empty(c.n, c.n * c.D))
        self.hc_head_base = nn.Parameter(torch.empty(c.n))
        self.hc_head_scale = nn.Parameter(torch.empty(1))
        self.layers = nn.ModuleList([Layer(c, i) for i in range(c.L)])
        self.f_main = inv_freq(c.rd, c.theta)
        self.f_comp = inv_freq(c.rd, c.ctheta, self.c.yarn if (c.yarn or {}).get("type", c.yarn and c.yarn.get("rope_type")) == "yarn" else None)
        self.sims = True
        self.dropout = 0.0  # training only: on the embedding and on each sub-block's output
        self.last_load = {}

    # -------------------------------------------------------------- init / io
    @torch.no_grad()
    def init_weights(self, seed=0):
        c = self.c
        g = torch.Generator().manual_seed(seed)

        def rn(t, std, mean=0.0):
            t.copy_(torch.randn(t.shape, generator=g) * std + mean)

        rn(self.embed, 1.0)
        rn(self.head, c.D ** -0.5)
        if self.vmap is not None:
            self.embed[-1].zero_()
        self.norm.fill_(1.0)
        rn(self.hc_head_fn, (c.n * c.D) ** -0.5 * 0.1)
        self.hc_head_base.zero_()
        self.hc_head_scale.fill_(1.0)
        out_scale = (2 * c.L) ** -0.5
        for layer in self.layers:
            for name, p in layer.P.items():
                if name.endswith(("norm.weight",)) or name.endswith("_scale"):
                    p.fill_(1.0)
                elif name.endswith(("_base", "attn_sink", ".ape")):
                    p.zero_()
                elif name.endswith(("_fn",)):
                    rn(p, p.shape[1] ** -0.5 * 0.1)
                elif name in ("ffn.experts.w1", "ffn.experts.w3"):
                    rn(p, c.D ** -0.5)
                elif name == "ffn.experts.w2":
                    rn(p, c.F ** -0.5 * out_scale)
                elif name in ("attn.wo_b.weight", "ffn.shared_experts.w2.weight"):
                    rn(p, p.shape[1] ** -0.5 * out_scale)
                else:
                    rn(p, p.shape[1] ** -0.5)
            if layer.hash:
                perm = torch.argsort(torch.rand(c.V, c.E, generator=g), dim=-1)
                layer.tid2eid.copy_(perm[:, : c.k])

    def full_embed_head(self):
        if self.vmap is None:
            return self.embed, self.head
        return self.embed[self.vmap], self.head[self.vmap]

    def official_state_dict(self, dtype=torch.float32, compact=False):
        if compact:
            emb = {"embed.compact": self.embed, "head.compact": self.head, "vocab.seen": self.seen.to(torch.int32)}
        else:
            e, h = self.full_embed_head()
            emb = {"embed.weight": e, "head.weight": h}
        out = {**emb, "norm.weight": self.norm,
               "hc_head_fn": self.hc_head_fn, "hc_head_base": self.hc_head_base,
               "hc_head_scale": self.hc_head_scale}
        for li, layer in enumerate(self.layers):
            pre = f"layers.{li}."
            for name, p in layer.P.items():
                if name.startswith("ffn.experts."):
                    w = name.split(".")[-1]
                    for e in range(self.c.E):
                        out[pre + f"ffn.experts.{e}.{w}.weight"] = p[e]
                else:
                    out[pre + name] = p
            if layer.hash:
                out[pre + "ffn.gate.tid2eid"] = layer.tid2eid.to(torch.int32)
            else:
                out[pre + "ffn.gate.bias"] = layer.gate_bias
        return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
                for k, v in out.items()}

    @torch.no_grad()
    def load_official(self, sd):
        self.embed.copy_(sd["embed.weight"])
        self.head.copy_(sd["head.weight"])
        self.norm.copy_(sd["norm.weight"])
        self.hc_head_fn.copy_(sd["hc_head_fn"])
        self.hc_head_base.copy_(sd["hc_head_base"])
        self.hc_head_scale.copy_(sd["hc_head_scale"].reshape(-1))
        for li, layer in enumerate(self.layers):
            pre = f"layers.{li}."
            for name, p in layer.P.items():
                if name.startswith("ffn.experts."):
                    w = name.split(".")[-1]
                    p.copy_(torch.stack([sd[pre + f"ffn.experts.{e}.{w}.weight"] for e in range(self.c.E)]))
                else:
                    p.copy_(sd[pre + name].reshape(p.shape))
            if layer.hash:
                layer.tid2eid.copy_(sd[pre + "ffn.gate.tid2eid"].long())
            elif pre + "ffn.gate.bias" in sd:
                layer.gate_bias.copy_(sd[pre + "ffn.gate.bias"])

    # -------------------------------------------------------------- forward
    def attention(self, layer, x, pos, cs_main, cs_comp, trace=None):
        c, P = self.c, layer.P
        B, S, _ = x.shape
        sims = self.sims
        cs = cs_main if layer.ratio == 0 else cs_comp
        qr = rms(x @ P["attn.wq_a.weight"].T, P["attn.q_norm.weight"], c.eps)
        q = rms((qr @ P["attn.wq_b.weight"].T).view(B, S, c.H, c.hd), None, c.eps)
        q = rope(q, cs)
        kv = rope(rms(x @ P["attn.wkv.weight"].T, P["attn.kv_norm.weight"], c.eps), cs)  # [B, S, hd]
        if sims:
            kv = ste(kv, kv_row_sim(kv.detach(), c.rd))
        t = pos[:, None]
        s = pos[None, :]
        allow = (s <= t) & (t - s < c.W)  # [S, S]
        keys = kv
        if layer.ratio:
            m = layer.ratio
            comp = compress(x, P["attn.compressor.wkv.weight"], P["attn.compressor.wgate.weight"],
                            P["attn.compressor.ape"], P["attn.compressor.norm.weight"], m, m == 4, c.eps)
            T = comp.shape[1]
            comp = rope(comp, cos_sin(torch.arange(T, device=x.device) * m, self.f_comp))
            if sims:
                comp = ste(comp, kv_row_sim(comp.detach(), c.rd))
            vis = torch.arange(T, device=x.device)[None, :] < ((pos + 1) // m)[:, None]  # [S, T]
            if m == 4 and T > 0:
                with torch.no_grad():
                    kI = compress(x, P["attn.indexer.compressor.wkv.weight"], P["attn.indexer.compressor.wgate.weight"],
                                  P["attn.indexer.compressor.ape"], P["attn.indexer.compressor.norm.weight"], m, True, c.eps)
                    kI = rope(kI, cos_sin(torch.arange(T, device=x.device) * m, self.f_comp))
                    qI = rope((qr @ P["attn.indexer.wq_b.weight"].T).float().view(B, S, c.nI, c.dI), cs_comp)
                    if sims:
                        kI = f16_round(fp4_sim(hadamard(kI)))
                        qI = fp4_sim(hadamard(qI))
                    wI = (x @ P["attn.indexer.weights_proj.weight"].T).float() * c.nI ** -0.5
                    score = (torch.relu(torch.einsum("bshd,btd->bsht", qI, kI)) * c.dI ** -0.5 * wI[..., None]).sum(2)
                    score = score.masked_fill(~vis[None], float("-inf"))
                    k = min(c.topk, T)
                    # ties (ReLU zeros, FP4 steps) go to the lower row, as in the engine
                    idx = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :k]
                    sel = torch.zeros(B, S, T, dtype=torch.bool, device=x.device)
                    sel.scatter_(-1, idx, True)
                    cvis = sel & vis[None]
                    if trace is not None:
                        trace[f"indexer.{layer.li}"] = cvis
            else:
                cvis = vis[None].expand(B, S, T)
            keys = torch.cat([kv, comp.to(kv.dtype)], dim=1)
            allow = torch.cat([allow[None].expand(B, S, S), cvis], dim=-1)  # [B, S, S+T]
        else:
            allow = allow[None].expand(B, S, S)
        logit = torch.einsum("bshd,btd->bhst", q.float(), keys.float()) * c.hd ** -0.5
        logit = logit.masked_fill(~allow[:, None], float("-inf"))
        sink = P["attn.attn_sink"].float().view(1, c.H, 1, 1).expand(B, c.H, S, 1)
        prob = torch.softmax(torch.cat([logit, sink], dim=-1), dim=-1)[..., :-1]
        out = torch.einsum("bhst,btd->bshd", prob, keys.float())
        out = rope(out, cs, inverse=True)
        woa = P["attn.wo_a.weight"].view(c.G, c.o_lora, -1)
        z = torch.einsum("bsgd,grd->bsgr", out.reshape(B, S, c.G, -1).to(woa.dtype), woa).reshape(B, S, -1)
        return z @ P["attn.wo_b.weight"].T

    def moe(self, layer, x, ids):
        c, P = self.c, layer.P
        B, S, D = x.shape
        xf = x.reshape(-1, D)
        sc = torch.sqrt(F.softplus((xf @ P["ffn.gate.weight"].T).float()))
        if layer.hash:
            idx = layer.tid2eid[ids.reshape(-1)]
        else:
            idx = (sc + layer.gate_bias).topk(c.k, dim=-1).indices
            with torch.no_grad():
                self.last_load[layer.li] = torch.bincount(idx.reshape(-1), minlength=c.E).float()
        w = sc.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * c.scale
        dense = torch.zeros_like(sc).scatter(1, idx, w)  # [N, E]
        L = c.limit

        def swiglu(g, u):
            return F.silu(g.clamp(max=L)) * u.clamp(-L, L)

        h = swiglu(torch.einsum("nd,efd->nef", xf, P["ffn.experts.w1"]).float(),
                   torch.einsum("nd,efd->nef", xf, P["ffn.experts.w3"]).float())
        h = h * dense[..., None]
        y = torch.einsum("nef,edf->nd", h.to(xf.dtype), P["ffn.experts.w2"]).float()
        sh = swiglu((xf @ P["ffn.shared_experts.w1.weight"].T).float(), (xf @ P["ffn.shared_experts.w3.weight"].T).float())
        y = y + (sh.to(xf.dtype) @ P["ffn.shared_experts.w2.weight"].T).float()
        return y.view(B, S, D)

    def hidden(self, ids, trace=None):
        c = self.c
        B, S = ids.shape
        dev = ids.device
        pos = torch.arange(S, device=dev)
        cs_main = cos_sin(pos, self.f_main)
        cs_comp = cos_sin(pos, self.f_comp)
        rows = ids if self.vmap is None else self.vmap[ids]
        e = F.dropout(self.embed[rows].float(), self.dropout, self.training)
        X = e.unsqueeze(2).expand(B, S, c.n, c.D)
        for layer in self.layers:
            P = layer.P
            pre, post, C = hc_coeffs(X, P["hc_attn_fn"].float(), P["hc_attn_base"], P["hc_attn_scale"],
                                     c.n, c.iters, c.hc_eps, c.eps)
            x = rms((pre.unsqueeze(-1) * X).sum(2), P["attn_norm.weight"], c.eps)
            dt = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled() else torch.float32
            y = self.attention(layer, x.to(dt), pos, cs_main, cs_comp, trace).float()
            y = F.dropout(y, self.dropout, self.training)
            X = post.unsqueeze(-1) * y.unsqueeze(2) + torch.einsum("bsjk,bsjd->bskd", C, X)
            pre, post, C = hc_coeffs(X, P["hc_ffn_fn"].float(), P["hc_ffn_base"], P["hc_ffn_scale"],
                                     c.n, c.iters, c.hc_eps, c.eps)
            x = rms((pre.unsqueeze(-1) * X).sum(2), P["ffn_norm.weight"], c.eps)
            y = self.moe(layer, x.to(dt), ids).float()
            y = F.dropout(y, self.dropout, self.training)
            X = post.unsqueeze(-1) * y.unsqueeze(2) + torch.einsum("bsjk,bsjd->bskd", C, X)
        v = X.flatten(-2)
        mm = (v @ self.hc_head_fn.float().T) * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + c.eps)
        pre = torch.sigmoid(mm * self.hc_head_scale + self.hc_head_base) + c.hc_eps
        return rms((pre.unsqueeze(-1) * X).sum(2), self.norm, c.eps)

    def forward(self, ids, trace=None):
        h = self.hidden(ids, trace)
        return h @ self.full_embed_head()[1].T.to(h.dtype)


# ----------------------------------------------------------------------------- io

def load_ckpt(d):
    from safetensors.torch import load_file
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    sd = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            sd.update(load_file(os.path.join(d, fn)))
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    m = V4(cfg)
    m.load_official(sd)
    return m


def save_ckpt(model, d, dtype=torch.float32, max_bytes=15 * 2**20):
    """official names (a compact-vocabulary model keeps its compact rows; join_parts
    expands them), split into files of at most max_bytes (the device returns files
    of at most 16 MB)"""
    try:
        from safetensors.torch import save_file
        ext = ".safetensors"
    except ImportError:  # a bare torch install: torch.save, read back by join_parts
        save_file, ext = (lambda t, path: torch.save(t, path)), ".pt"
    os.makedirs(d, exist_ok=True)
    sd = model.official_state_dict(dtype, compact=model.vmap is not None)
    parts, cur, size = [], {}, 0
    for k, v in sd.items():
        nb = v.numel() * v.element_size()
        if nb > max_bytes:  # row-split a big matrix (embedding/head), rejoined by join_parts
            rows = max(1, max_bytes // (v.shape[1] * v.element_size()))
            for i in range(0, v.shape[0], rows):
                parts.append({f"{k}@{i}": v[i:i + rows].contiguous()})
            continue
        if size + nb > max_bytes and cur:
            parts.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += nb
    if cur:
        parts.append(cur)
    for i, p in enumerate(parts):
        save_file(p, os.path.join(d, f"part-{i:02d}{ext}"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(model.c.raw, f, indent=2)


def join_parts(src, dst):
    """parts (possibly row-split, any float dtype) -> one f32 model.safetensors + config"""
    from safetensors.torch import load_file, save_file
    sd, split = {}, {}
    for fn in sorted(os.listdir(src)):
        if fn.endswith((".safetensors", ".pt")):
            part = load_file(os.path.join(src, fn)) if fn.endswith(".safetensors") else torch.load(
                os.path.join(src, fn), weights_only=True)
            for k, v in part.items():
                if "@" in k:
                    base, off = k.split("@")
                    split.setdefault(base, []).append((int(off), v))
                else:
                    sd[k] = v
    for k, chunks in split.items():
        sd[k] = torch.cat([v for _, v in sorted(chunks, key=lambda t: t[0])])
    sd = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    if "vocab.seen" in sd:
        with open(os.path.join(src, "config.json")) as f:
            V = json.load(f)["vocab_size"]
        seen = sd.pop("vocab.seen").long()
        vmap = torch.full((V,), len(seen), dtype=torch.long)
        vmap[seen] = torch.arange(len(seen))
        sd["embed.weight"] = sd.pop("embed.compact")[vmap].contiguous()
        sd["head.weight"] = sd.pop("head.compact")[vmap].contiguous()
    os.makedirs(dst, exist_ok=True)
    save_file(sd, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = f.read()
    with open(os.path.join(dst, "config.json"), "w") as f:
        f.write(cfg)


# ----------------------------------------------------------------------------- check

def cmd_check(a):
    """the module against the transformers fixture (sims off) and the float64 loop
    reference (sims on)"""
    from safetensors.torch import load_file
    fx = os.path.join(HERE, "..", "crates", "ds4-engine", "tests", "data", "tiny-v4")
    m = load_ckpt(fx)
    m.f_main, m.f_comp = m.f_main, m.f_comp
    gold = load_file(os.path.join(fx, "golden.safetensors"))
    ids = gold["input_ids"].long()[None]
    m.sims = False
    trace = {}
    with torch.no_grad():
        lg = m(ids, trace)[0]
    ref = gold["logits"].float()
    rel = ((lg - ref).abs().max() / ref.abs().max()).item()
    print(f"sims off vs transformers: max|d| {(lg - ref).abs().max().item():.3e}  rel {rel:.3e}  "
          f"argmax {(lg.argmax(-1) == ref.argmax(-1)).float().mean().item():.4f}")
    for li in range(m.c.L):
        if f"indexer.{li}" in trace:
            want = torch.zeros_like(trace[f"indexer.{li}"][0])
            tk = gold[f"indexer_topk.{li}"].long()
            for t in range(tk.shape[0]):
                v = tk[t][tk[t] >= 0]
                want[t, v] = True
            print(f"  layer {li} indexer sets equal: {bool((want == trace[f'indexer.{li}'][0]).all())}")
    ok = rel < 1e-4
    sys.path.insert(0, HERE)
    import v4_reference as R
    sd, cfg = R.load_official(fx)
    n = a.ref_positions
    ref_on = R.forward(sd, cfg, ids[0, :n], sims=True)
    m.sims = True
    with torch.no_grad():
        on = m(ids[:, :n])[0]
    ref_on = ref_on.float()
    rel2 = ((on - ref_on).abs().max() / ref_on.abs().max()).item()
    am = (on.argmax(-1) == ref_on.argmax(-1)).float().mean().item()
    print(f"sims on vs v4_reference (float64, {n} positions): rel {rel2:.3e}  argmax {am:.4f}")
    ok &= rel2 < 1e-3
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


def cmd_init(a):
    m = V4(DEMO)
    m.init_weights(a.seed)
    save_ckpt(m, a.out + ".parts")
    join_parts(a.out + ".parts", a.out)
    print("wrote", a.out)


def cmd_logits(a):
    import numpy as np
    m = load_ckpt(a.ckpt)
    m.sims = not a.no_sims
    with open(a.ids) as f:
        ids = torch.tensor(json.load(f))[None]
    with torch.no_grad():
        lg = m(ids)[0].float()
    lg.numpy().astype(np.float32).tofile(a.out)
    print(f"wrote {a.out}: {tuple(lg.shape)}")


# ----------------------------------------------------------------------------- train

def load_split(path):
    """rendered samples (render_chat output, gzipped jsonl) -> list of (ids, mask)"""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            out.append((r["ids"], r["mask"]))
    return out


class Batches:
    """rows of SEQ tokens: prose windows (random offsets in the concatenated text,
    no BOS, every token scored) and chat samples (one per row from position 0,
    padded, only generated tokens scored), mixed by weight"""

    def __init__(self, data_dir, split, seq, device, gen):
        self.seq, self.dev, self.g = seq, device, gen
        prose = load_split(os.path.join(data_dir, f"prose.{split}.jsonl.gz"))
        self.prose = torch.tensor([t for ids, _ in prose for t in ids], dtype=torch.long)
        self.chats = {}
        for kind in ("chat", "tools"):
            rows = load_split(os.path.join(data_dir, f"{kind}.{split}.jsonl.gz"))
            rows = [r for r in rows if len(r[0]) <= seq + 1]
            ids = torch.zeros(len(rows), seq + 1, dtype=torch.long)
            msk = torch.zeros(len(rows), seq + 1, dtype=torch.bool)
            for i, (a, b) in enumerate(rows):
                ids[i, : len(a)] = torch.tensor(a)
                msk[i, : len(b)] = torch.tensor(b, dtype=torch.bool)
            self.chats[kind] = (ids, msk)

    def seen(self):
        ids = set(self.prose.tolist())
        for a, _ in self.chats.values():
            ids.update(a.unique().tolist())
        return sorted(ids | {0, 1})

    def sizes(self):
        return {"prose_tokens": self.prose.numel(), **{k: v[0].shape[0] for k, v in self.chats.items()}}

    def prose_rows(self, n):
        off = torch.randint(0, self.prose.numel() - self.seq - 1, (n,), generator=self.g)
        ids = torch.stack([self.prose[o:o + self.seq + 1] for o in off.tolist()])
        return ids, torch.ones_like(ids, dtype=torch.bool)

    def chat_rows(self, kind, n):
        ids, msk = self.chats[kind]
        i = torch.randint(0, ids.shape[0], (n,), generator=self.g)
        return ids[i], msk[i]

    def batch(self, mix):
        parts = [self.prose_rows(mix["prose"])] if mix.get("prose") else []
        for kind in ("chat", "tools"):
            if mix.get(kind):
                parts.append(self.chat_rows(kind, mix[kind]))
        ids = torch.cat([p[0] for p in parts])
        msk = torch.cat([p[1] for p in parts])
        return ids.to(self.dev, non_blocking=True), msk.to(self.dev, non_blocking=True)


def loss_fn(model, ids, msk):
    """mean NLL over the full vocabulary of the scored next tokens; with the compact
    vocabulary the shared row stands for n_unseen tokens (+log n_unseen in the
    normaliser)"""
    h = model.hidden(ids[:, :-1])
    tgt = ids[:, 1:][msk[:, 1:]]
    hs = h[msk[:, 1:]]
    if ids.is_cuda:
        lc = (hs.to(torch.bfloat16) @ model.head.T.to(torch.bfloat16)).float()
    else:
        lc = hs @ model.head.T
    if model.vmap is None:
        return F.cross_entropy(lc, tgt)
    n = lc.shape[1] - 1
    lse = torch.logsumexp(torch.cat([lc[:, :n], lc[:, n:] + math.log(model.n_unseen)], dim=1), dim=1)
    return (lse - lc.gather(1, model.vmap[tgt][:, None])[:, 0]).mean()


@torch.no_grad()
def evaluate(model, ev, n_rows, mix_kind):
    model.eval()
    g = torch.Generator().manual_seed(123)
    old = ev.g
    ev.g = g
    tot = 0.0
    reps = 4
    for _ in range(reps):
        ids, msk = ev.batch({mix_kind: n_rows})
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
            tot += loss_fn(model, ids, msk).item()
    ev.g = old
    model.train()
    return tot / reps


def load_calls(path, seq, device):
    """held-out call prompts (tools_calls.eval): ids padded to seq+1 and the mask of
    the first generated turn only (the tool call)"""
    rows = [r for r in load_split(path) if len(r[0]) <= seq + 1]
    ids = torch.zeros(len(rows), seq + 1, dtype=torch.long)
    msk = torch.zeros(len(rows), seq + 1, dtype=torch.bool)
    for i, (a, b) in enumerate(rows):
        ids[i, : len(a)] = torch.tensor(a)
        start = b.index(1)
        end = start
        while end < len(b) and b[end]:
            end += 1
        msk[i, start:end] = True
    return ids.to(device), msk.to(device)


@torch.no_grad()
def call_exact(model, calls, bs=32):
    """teacher-forced: the share of held-out call turns whose every token is the
    argmax (what greedy decoding would emit: right tool, requested arguments, the
    DSML around them), and the per-token accuracy on those turns"""
    model.eval()
    ids, msk = calls
    ok = tok_ok = tok_n = 0
    for i in range(0, ids.shape[0], bs):
        x, m = ids[i:i + bs], msk[i:i + bs, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            h = model.hidden(x[:, :-1])
        pred = (h.float() @ model.head.float().T).argmax(-1)
        want = x[:, 1:] if model.vmap is None else model.vmap[x[:, 1:]]
        right = (pred == want) | ~m
        ok += right.all(-1).sum().item()
        tok_ok += ((pred == want) & m).sum().item()
        tok_n += m.sum().item()
    model.train()
    return ok / ids.shape[0], tok_ok / max(tok_n, 1)


def pick_snapshot(snaps, margin):
    """(step, eval, state) with the most held-out calls right among the states whose
    prose loss is within margin of the best so far (ties: lower prose loss)"""
    best_prose = min(e["prose"] for _, e, _ in snaps)
    ok = [sn for sn in snaps if sn[1]["prose"] <= best_prose + margin]
    return max(ok, key=lambda sn: (sn[1]["call_exact"], -sn[1]["prose"]))


def parse_mix(text):
    p, c, t = (int(v) for v in text.split(","))
    return {"prose": p, "chat": c, "tools": t}


def cmd_train(a):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    gen = torch.Generator().manual_seed(a.seed)
    tr = Batches(a.data, "train", a.seq, dev, gen)
    ev = Batches(a.data, "eval", a.seq, dev, torch.Generator().manual_seed(1))
    calls = load_calls(os.path.join(a.data, "tools_calls.eval.jsonl.gz"), a.seq, dev)
    calls = (calls[0][: a.calls_n], calls[1][: a.calls_n])
    print("data:", tr.sizes(), "eval:", ev.sizes(), "held-out calls:", calls[0].shape[0], flush=True)
    cfg = dict(DEMO)
    seen = tr.seen()
    print(f"{len(seen)} token ids occur in the training data", flush=True)
    model = V4(cfg, seen=seen)
    model.init_weights(a.seed)
    model.to(dev)
    model.sims = not a.no_sims
    model.dropout = a.dropout
    n_par = sum(p.numel() for n, p in model.named_parameters() if n not in ("embed", "head"))
    print(f"params {n_par / 1e6:.2f} M besides embedding and head ({model.embed.numel() / 1e6:.2f} M each, compact)",
          flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in ("embed",)]
    nodecay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in ("embed",))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=(dev == "cuda"))
    # two phases: the mixed one, then (from --phase2 of the time budget) a tool-heavy
    # one that still sees some prose and chats
    mix1 = parse_mix(a.mix)
    mix2 = parse_mix(a.mix2) if a.mix2 else mix1
    t0 = time.time()
    budget = a.minutes * 60
    step, log, skipped, snaps, shadow = 0, [], 0, [], None
    est_steps = a.max_steps
    while True:
        el = time.time() - t0
        if el > budget or step >= a.max_steps:
            break
        # linear warmup, cosine decay over the time budget (steps are estimated from the rate)
        if step == 50:
            rate = step / max(el, 1e-3)
            est_steps = min(a.max_steps, int(rate * budget))
            print(f"~{rate:.2f} steps/s -> {est_steps} steps", flush=True)
        frac = min(1.0, step / max(est_steps, 1))
        lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for gp in opt.param_groups:
            gp["lr"] = lr
        ids, msk = tr.batch(mix1 if el < a.phase2 * budget else mix2)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(dev == "cuda")):
            loss = loss_fn(model, ids, msk)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not torch.isfinite(gn):  # a bad step is dropped, not applied
            skipped += 1
            opt.zero_grad(set_to_none=True)
            step += 1
            continue
        opt.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: nudge under-used experts up
            for layer in model.layers:
                if not layer.hash and layer.li in model.last_load:
                    ld = model.last_load[layer.li]
                    layer.gate_bias += a.bias_rate * torch.sign(ld.mean() - ld)
        step += 1
        if step % a.log_every == 0 or step == 1:
            rec = {"step": step, "t": round(time.time() - t0, 1), "lr": lr, "loss": round(loss.item(), 4),
                   "gnorm": round(gn.item(), 3), "skipped": skipped}
            if step % a.eval_every == 0:
                rec["eval"] = {k: round(evaluate(model, ev, a.eval_rows, k), 4) for k in ("prose", "chat", "tools")}
                ex, acc = call_exact(model, calls)
                rec["eval"]["call_exact"], rec["eval"]["call_tok_acc"] = round(ex, 4), round(acc, 4)
                # every evaluated state is kept (in host memory): the one saved is
                # picked at the end, when the best prose loss of the run is known
                snaps.append((step, rec["eval"], {k: v.detach().to("cpu", copy=True)
                                                  for k, v in model.state_dict().items()}))
            log.append(rec)
            print(json.dumps(rec), flush=True)
            if a.save_every and step % a.save_every == 0 and snaps:
                # the state that would be kept if the run ended now, saved as it
                # goes: a run stopped at a device's time limit still returns one
                # (a CPU copy of the model, so training's parameters stay untouched)
                pk = pick_snapshot(snaps, a.prose_margin)
                if shadow is None:
                    shadow = V4(cfg, seen=seen)
                shadow.load_state_dict(pk[2])
                save_ckpt(shadow, a.out, dtype=torch.float16 if a.f16 else torch.float32)
                with open(os.path.join(a.out, "train_log.json"), "w") as f:
                    json.dump({"args": vars(a), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                               "torch": torch.__version__, "partial": True, "saved_step": pk[0], "log": log}, f)
                print(json.dumps({"saved_so_far": a.out, "step": pk[0], "eval": pk[1]}), flush=True)
    rec = {"step": step, "t": round(time.time() - t0, 1),
           "eval": {k: round(evaluate(model, ev, a.eval_rows, k), 4) for k in ("prose", "chat", "tools")}}
    ex, acc = call_exact(model, calls)
    rec["eval"]["call_exact"], rec["eval"]["call_tok_acc"] = round(ex, 4), round(acc, 4)
    snaps.append((step, rec["eval"], {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}))
    # The kept state: the most held-out calls exactly right among the states whose
    # held-out prose loss is within --prose-margin of the run's best (ties: lower
    # prose loss). Prose overfits long before the calls are learnt; the margin bounds
    # what the tool phase may cost the prose.
    pick = pick_snapshot(snaps, a.prose_margin)
    rec["picked_step"] = pick[0]
    # the state with the most held-out calls right whatever its prose, for comparison
    pick_calls = max(snaps, key=lambda sn: (sn[1]["call_exact"], -sn[1]["prose"]))
    rec["best_calls_step"] = pick_calls[0]
    log.append(rec)
    print(json.dumps(rec), flush=True)
    model.load_state_dict({k: v.to(dev) for k, v in pick[2].items()})
    alt = pick_calls[2] if a.out_best_calls and pick_calls[0] != pick[0] else None
    snaps = None
    if a.f16:
        # the checkpoint comes back in f16 (the device returns at most 64 MB): how much
        # that rounding costs, on the same eval batches
        before = {k: round(evaluate(model, ev, a.eval_rows, k), 4) for k in ("prose", "chat", "tools")}
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
        after = {k: round(evaluate(model, ev, a.eval_rows, k), 4) for k in ("prose", "chat", "tools")}
        after["call_exact"] = round(call_exact(model, calls)[0], 4)
        log.append({"saved_eval_f32": before, "saved_eval_f16_rounded": after})
        print(json.dumps(log[-1]), flush=True)
    model.cpu()
    save_ckpt(model, a.out, dtype=torch.float16 if a.f16 else torch.float32)
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(a), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                   "torch": torch.__version__, "log": log}, f)
    print("saved", a.out, flush=True)
    if alt is not None:
        model.load_state_dict(alt)
        save_ckpt(model, a.out_best_calls, dtype=torch.float16 if a.f16 else torch.float32)
        print("saved", a.out_best_calls, flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--ref-positions", type=int, default=160)
    i = sub.add_parser("init")
    i.add_argument("--out", required=True)
    i.add_argument("--seed", type=int, default=0)
    lg = sub.add_parser("logits")
    lg.add_argument("--ckpt", required=True)
    lg.add_argument("--ids", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--no-sims", action="store_true")
    j = sub.add_parser("join")
    j.add_argument("src")
    j.add_argument("dst")
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, default=7.0)
    t.add_argument("--max-steps", type=int, default=100000)
    t.add_argument("--seq", type=int, default=512)
    t.add_argument("--mix", default="16,8,8", help="rows per step: prose,chat,tools")
    t.add_argument("--mix2", default=None, help="rows per step in the second phase (default: --mix)")
    t.add_argument("--phase2", type=float, default=1.0, help="second phase from this fraction of the time")
    t.add_argument("--out-best-calls", default=None,
                   help="also save the state with the most held-out calls right (if not the kept one)")
    t.add_argument("--calls-n", type=int, default=300, help="held-out calls scored at each evaluation")
    t.add_argument("--prose-margin", type=float, default=0.3,
                   help="the kept state's held-out prose loss is at most the run's best + this")
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--wd", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--bias-rate", type=float, default=1e-3)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--eval-rows", type=int, default=16)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-sims", action="store_true")
    t.add_argument("--f16", action="store_true", help="save f16 (halves the returned size)")
    t.add_argument("--save-every", type=int, default=0,
                   help="every this many steps (a multiple of --eval-every), save the state that would be kept "
                        "if the run ended there (overwritten by later saves and the final one)")
    a = ap.parse_args()
    {"check": cmd_check, "init": cmd_init, "logits": cmd_logits, "train": cmd_train,
     "join": lambda a: join_parts(a.src, a.dst)}[a.cmd](a)


if __name__ == "__main__":
    main()
