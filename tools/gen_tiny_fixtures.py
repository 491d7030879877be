#!/usr/bin/env python3
"""Generate the tiny DeepSeek-V4 fixture used by crates/ds4-engine's golden test.

Builds a seeded, random-weight DeepseekV4ForCausalLM with Hugging Face transformers
(fp32, eager attention), runs a prompt through the stateless forward, and writes into
crates/ds4-engine/tests/data/tiny-v4/:

    config.json          the model config in the *official* DeepSeek key style
                         (compress_ratios, num_hash_layers, rope_scaling, ...)
    model.safetensors    the weights under the official checkpoint names, all f32
                         (experts split per expert: layers.N.ffn.experts.E.w{1,2,3}.weight;
                         tid2eid as int32)
    golden.safetensors   input_ids (int32 [S]); logits (f32 [S, V], every position);
                         hidden.L (f32 [P, hc, D]: streams entering layer L at the probe
                         positions, L = n_layers is the final normed output [P, D]);
                         probe_pos (int32 [P]); indexer_topk.L (int32 [S, k], -1 = none);
                         router_idx.L (int32 [S, k]); router_w.L (f32 [S, k])
    meta.json            versions, generator arguments, decision margins, checks

The config deliberately differs from V4 Flash wherever a size could be hard-coded by
mistake: window 48 (not 128), heavy-compression ratio 32 (not 128; a 640-token prompt
crosses 20 of its rows), indexer top-k 16 (< the 160 ratio-4 rows), 2 hash-routed layers
(not 3), YaRN original context 4096.

Run (needs the transformers venv, not the repo's .venv):
    python3 -m venv .venv-hf && .venv-hf/bin/pip install transformers==5.24.0 torch safetensors
    .venv-hf/bin/python tools/gen_tiny_fixtures.py
CI never runs this; it only reads the committed output.

The model construction, the de-degenerated initialisation and the official-name mapping
follow the research script hf_tiny_v4.py (transformers 5.24.0 semantics).
"""
import argparse
import json
import os
import sys

import torch

from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

OUT_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ds4-engine", "tests", "data", "tiny-v4")


def get_parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rope-dim", type=int, default=16)
    ap.add_argument("--q-lora", type=int, default=32)
    ap.add_argument("--o-groups", type=int, default=2)
    ap.add_argument("--o-lora", type=int, default=16)
    ap.add_argument("--experts", type=int, default=6)
    ap.add_argument("--topk-experts", type=int, default=2)
    ap.add_argument("--moe-inter", type=int, default=32)
    ap.add_argument("--hash-layers", type=int, default=2)
    ap.add_argument("--index-heads", type=int, default=16)
    ap.add_argument("--index-head-dim", type=int, default=32)
    ap.add_argument("--index-topk", type=int, default=16)
    ap.add_argument("--window", type=int, default=48)
    ap.add_argument("--csa-rate", type=int, default=4)
    ap.add_argument("--hca-rate", type=int, default=32)
    ap.add_argument("--swiglu-limit", type=float, default=2.0)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--compress-rope-theta", type=float, default=160000.0)
    ap.add_argument("--yarn-factor", type=float, default=16.0)
    ap.add_argument("--yarn-orig", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=640)
    ap.add_argument("--probe-every", type=int, default=40, help="positions at which hidden streams are dumped")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=OUT_DEFAULT)
    ap.add_argument("--fp8-checkpoint", action="store_true",
                    help="only write tests/data/official-fp8/ (FP8/FP4 official-format tensors + f32 references)")
    ap.add_argument("--qat-vectors", action="store_true",
                    help="only write tests/data/qat-vectors.json (PyTorch float8 references)")
    return ap


def write_fp8_checkpoint(out_dir, seed):
    """A few tensors in the release checkpoint's storage formats: FP8 E4M3 dense
    weights with one E8M0 scale per 128x128 block (edge blocks partial), FP4 E2M1
    experts packed two per byte (low nibble first) with one E8M0 scale per 32
    inputs, a BF16 norm; plus `ref.<name>` = the f32 values they decode to."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    out = {}
    # dense FP8: 300x260 -> 3x3 blocks
    w = torch.randn(300, 260, generator=g) * 0.05
    w[:128, :128] *= 40.0  # blocks with different scales
    rb, cb = -(-300 // 128), -(-260 // 128)
    q = torch.empty(300, 260, dtype=torch.float8_e4m3fn)
    sc = torch.empty(rb, cb)
    ref = torch.empty(300, 260)
    for i in range(rb):
        for j in range(cb):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            s = 2.0 ** torch.ceil(torch.log2(blk.abs().max() / 448.0))
            qb = (blk / s).clamp(-448, 448).to(torch.float8_e4m3fn)
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = qb
            sc[i, j] = s
            ref[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = qb.float() * s
    out["layers.0.attn.wq_a.weight"] = q
    out["layers.0.attn.wq_a.scale"] = sc.to(torch.float8_e8m0fnu)
    out["ref.layers.0.attn.wq_a.weight"] = ref
    # FP4 experts: 64 x 96 -> 48 packed bytes per row, 3 scales per row
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    for e, name in [(0, "w1"), (1, "w3")]:
        w = torch.randn(64, 96, generator=g) * (0.3 + e)
        blocks = w.view(64, 3, 32)
        s = 2.0 ** torch.ceil(torch.log2(blocks.abs().amax(-1, keepdim=True) / 6.0))
        v = blocks / s
        idx = (v.abs()[..., None] - grid).abs().argmin(-1)
        code = idx + 8 * (v < 0).long()
        dec = (grid[idx] * torch.where(v < 0, -1.0, 1.0) * s).view(64, 96)
        code = code.view(64, 96)
        packed = (code[:, 0::2] | (code[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
        base = f"layers.1.ffn.experts.{e}.{name}"
        out[base + ".weight"] = packed
        out[base + ".scale"] = s.view(64, 3).to(torch.float8_e8m0fnu)
        out["ref." + base + ".weight"] = dec
    norm = (torch.randn(64, generator=g) * 0.1 + 1).to(torch.bfloat16)
    out["layers.0.attn_norm.weight"] = norm
    out["ref.layers.0.attn_norm.weight"] = norm.float()
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "model.safetensors"))
    print("wrote", out_dir)


def write_qat_vectors(path, seed):
    """Reference values for the QAT simulations from PyTorch's own float8_e4m3fn cast
    and an explicit Sylvester Hadamard matrix (independent of the engine's butterfly).
    Floats are stored as u32 bit patterns so the comparison can be exact."""
    g = torch.Generator().manual_seed(seed)
    bits = lambda t: t.contiguous().view(torch.int32).tolist()  # noqa: E731
    # E4M3: random magnitudes over the whole range, plus every exact midpoint between
    # neighbouring codes (the ties-to-even cases)
    mags = torch.exp(torch.empty(3000).uniform_(-14.0, 6.1, generator=g))
    signs = torch.where(torch.rand(3000, generator=g) < 0.5, -1.0, 1.0)
    x = torch.clamp(mags * signs, -448.0, 448.0)
    grid = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    mids = (grid[:-1] + grid[1:]) / 2
    x = torch.cat([x, mids, -mids, grid, torch.tensor([0.0, 448.0, -448.0])])
    e4m3 = x.to(torch.float8_e4m3fn).float()
    # fp8_sim on KV rows: blocks of 64, power-of-two scale, amax floor 1e-4
    rows = torch.randn(6, 448, generator=g) * torch.tensor([1e-6, 1e-3, 0.1, 1.0, 30.0, 5000.0])[:, None]
    blocks = rows.view(6, 7, 64)
    amax = blocks.abs().amax(-1, keepdim=True).clamp(min=1e-4)
    sc = torch.pow(2.0, torch.ceil(torch.log2(amax / 448.0)))
    fp8 = ((blocks / sc).clamp(-448, 448).to(torch.float8_e4m3fn).float() * sc).view(6, 448)
    # Hadamard 128 by matrix product
    h = torch.ones(1, 1)
    while h.shape[0] < 128:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    hv = torch.randn(4, 128, generator=g)
    had = (hv.double() @ h.double().T / 128 ** 0.5).float()
    out = {
        "generator": "tools/gen_tiny_fixtures.py --qat-vectors",
        "torch": torch.__version__,
        "e4m3_in": bits(x), "e4m3_out": bits(e4m3),
        "fp8_rows_in": bits(rows.flatten()), "fp8_rows_out": bits(fp8.flatten()), "fp8_row_len": 448,
        "hadamard_in": bits(hv.flatten()), "hadamard_out": bits(had.flatten()), "hadamard_len": 128,
    }
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path)


def build_config(a):
    n_pairs = max(0, a.layers - 2)
    ratios = ([0, 0] + [a.csa_rate if i % 2 == 0 else a.hca_rate for i in range(n_pairs)])[: a.layers]
    names = {0: "sliding_attention", a.csa_rate: "compressed_sparse_attention", a.hca_rate: "heavily_compressed_attention"}
    cfg = DeepseekV4Config(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        moe_intermediate_size=a.moe_inter,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=1,
        head_dim=a.head_dim,
        q_lora_rank=a.q_lora,
        qk_rope_head_dim=a.rope_dim,
        num_experts_per_tok=a.topk_experts,
        n_routed_experts=a.experts,
        n_shared_experts=1,
        scoring_func="sqrtsoftplus",
        norm_topk_prob=True,
        routed_scaling_factor=1.5,
        layer_types=[names[r] for r in ratios],
        compress_rates={"compressed_sparse_attention": a.csa_rate, "heavily_compressed_attention": a.hca_rate},
        mlp_layer_types=["hash_moe"] * a.hash_layers + ["moe"] * (a.layers - a.hash_layers),
        rope_theta=a.rope_theta,
        compress_rope_theta=a.compress_rope_theta,
        rope_parameters={
            "rope_type": "yarn",
            "factor": a.yarn_factor,
            "original_max_position_embeddings": a.yarn_orig,
            "beta_fast": 32,
            "beta_slow": 1,
        },
        hc_mult=4,
        hc_sinkhorn_iters=20,
        hc_eps=1e-6,
        swiglu_limit=a.swiglu_limit,
        sliding_window=a.window,
        o_groups=a.o_groups,
        o_lora_rank=a.o_lora,
        index_n_heads=a.index_heads,
        index_head_dim=a.index_head_dim,
        index_topk=a.index_topk,
        num_nextn_predict_layers=1,
        rms_norm_eps=1e-6,
        max_position_embeddings=1048576,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    )
    cfg._attn_implementation = "eager"
    return cfg, ratios


@torch.no_grad()
def randomize(model, cfg, seed):
    """HF's init zeroes sinks, position biases, HC bases and tid2eid; replace every tensor
    by fan-in scaled random values so each code path carries signal."""
    g = torch.Generator().manual_seed(seed)

    def rn(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32) * std + mean)

    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            rn(p, 1.0)
        elif name.endswith(("layernorm.weight", "norm.weight")):
            rn(p, 0.1, 1.0)
        elif name.endswith(".sinks"):
            rn(p, 1.0)
        elif name.endswith("position_bias"):
            rn(p, 0.5)
        elif name.endswith(("hc.fn", "hc_head.hc_fn")):
            rn(p, p.shape[1] ** -0.5)
        elif name.endswith(("hc.base", "hc_head.hc_base")):
            rn(p, 0.5)
        elif name.endswith(("hc.scale", "hc_head.hc_scale")):
            rn(p, 0.2, 1.0)
        elif name.endswith("experts.gate_up_proj"):
            rn(p, cfg.hidden_size ** -0.5 * 2.0)
        elif name.endswith("experts.down_proj"):
            rn(p, cfg.moe_intermediate_size ** -0.5)
        elif p.dim() == 2:
            shared_in = "shared_experts.gate_proj" in name or "shared_experts.up_proj" in name
            rn(p, p.shape[1] ** -0.5 * (2.0 if shared_in else 1.0))
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            rn(b, 0.1)
        elif name.endswith("tid2eid"):
            perm = torch.argsort(torch.rand(b.shape[0], cfg.n_routed_experts, generator=g), dim=-1)
            b.copy_(perm[:, : b.shape[1]])


SIMPLE = [
    ("self_attn.sinks", "attn.attn_sink"),
    ("self_attn.q_a_proj.weight", "attn.wq_a.weight"),
    ("self_attn.q_a_norm.weight", "attn.q_norm.weight"),
    ("self_attn.q_b_proj.weight", "attn.wq_b.weight"),
    ("self_attn.kv_proj.weight", "attn.wkv.weight"),
    ("self_attn.kv_norm.weight", "attn.kv_norm.weight"),
    ("self_attn.o_a_proj.weight", "attn.wo_a.weight"),
    ("self_attn.o_b_proj.weight", "attn.wo_b.weight"),
    ("self_attn.compressor.position_bias", "attn.compressor.ape"),
    ("self_attn.compressor.kv_proj.weight", "attn.compressor.wkv.weight"),
    ("self_attn.compressor.gate_proj.weight", "attn.compressor.wgate.weight"),
    ("self_attn.compressor.kv_norm.weight", "attn.compressor.norm.weight"),
    ("self_attn.compressor.indexer.position_bias", "attn.indexer.compressor.ape"),
    ("self_attn.compressor.indexer.kv_proj.weight", "attn.indexer.compressor.wkv.weight"),
    ("self_attn.compressor.indexer.gate_proj.weight", "attn.indexer.compressor.wgate.weight"),
    ("self_attn.compressor.indexer.kv_norm.weight", "attn.indexer.compressor.norm.weight"),
    ("self_attn.compressor.indexer.q_b_proj.weight", "attn.indexer.wq_b.weight"),
    ("self_attn.compressor.indexer.scorer.weights_proj.weight", "attn.indexer.weights_proj.weight"),
    ("mlp.gate.weight", "ffn.gate.weight"),
    ("mlp.gate.e_score_correction_bias", "ffn.gate.bias"),
    ("mlp.gate.tid2eid", "ffn.gate.tid2eid"),
    ("mlp.shared_experts.gate_proj.weight", "ffn.shared_experts.w1.weight"),
    ("mlp.shared_experts.down_proj.weight", "ffn.shared_experts.w2.weight"),
    ("mlp.shared_experts.up_proj.weight", "ffn.shared_experts.w3.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("attn_hc.fn", "hc_attn_fn"),
    ("attn_hc.base", "hc_attn_base"),
    ("attn_hc.scale", "hc_attn_scale"),
    ("ffn_hc.fn", "hc_ffn_fn"),
    ("ffn_hc.base", "hc_ffn_base"),
    ("ffn_hc.scale", "hc_ffn_scale"),
]
TOP = {
    "model.embed_tokens.weight": "embed.weight",
    "lm_head.weight": "head.weight",
    "model.norm.weight": "norm.weight",
    "model.hc_head.hc_fn": "hc_head_fn",
    "model.hc_head.hc_base": "hc_head_base",
    "model.hc_head.hc_scale": "hc_head_scale",
}


def official_state_dict(model, cfg):
    """HF module names -> official DeepSeek checkpoint names (inverse of transformers'
    conversion_mapping['deepseek_v4']), fp32, experts split per expert."""
    inter = cfg.moe_intermediate_size
    out = {}
    for k, t in model.state_dict().items():
        if "rotary_emb" in k:
            continue
        if k in TOP:
            out[TOP[k]] = t
            continue
        assert k.startswith("model.layers."), k
        li, sub = k[len("model.layers."):].split(".", 1)
        pre = f"layers.{li}."
        if sub == "mlp.experts.gate_up_proj":
            for e in range(cfg.n_routed_experts):
                out[pre + f"ffn.experts.{e}.w1.weight"] = t[e, :inter]
                out[pre + f"ffn.experts.{e}.w3.weight"] = t[e, inter:]
            continue
        if sub == "mlp.experts.down_proj":
            for e in range(cfg.n_routed_experts):
                out[pre + f"ffn.experts.{e}.w2.weight"] = t[e]
            continue
        for hf, off in SIMPLE:
            if sub == hf:
                out[pre + off] = t.to(torch.int32) if off.endswith("tid2eid") else t
                break
        else:
            raise KeyError(k)
    return {k: v.contiguous().clone() for k, v in out.items()}


def official_config(cfg, ratios, a):
    return {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_hash_layers": a.hash_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": 1,
        "head_dim": cfg.head_dim,
        "qk_rope_head_dim": a.rope_dim,
        "q_lora_rank": cfg.q_lora_rank,
        "o_groups": cfg.o_groups,
        "o_lora_rank": cfg.o_lora_rank,
        "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts,
        "num_experts_per_tok": cfg.num_experts_per_tok,
        "scoring_func": "sqrtsoftplus",
        "norm_topk_prob": True,
        "topk_method": "noaux_tc",
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "swiglu_limit": cfg.swiglu_limit,
        "sliding_window": cfg.sliding_window,
        "compress_ratios": list(ratios) + [0],  # trailing entry = the (absent) MTP layer
        "compress_rope_theta": a.compress_rope_theta,
        "rope_theta": a.rope_theta,
        "rope_scaling": {
            "type": "yarn",
            "factor": a.yarn_factor,
            "original_max_position_embeddings": a.yarn_orig,
            "beta_fast": 32,
            "beta_slow": 1,
        },
        "index_n_heads": cfg.index_n_heads,
        "index_head_dim": cfg.index_head_dim,
        "index_topk": cfg.index_topk,
        "hc_mult": cfg.hc_mult,
        "hc_sinkhorn_iters": cfg.hc_sinkhorn_iters,
        "hc_eps": cfg.hc_eps,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "num_nextn_predict_layers": 0,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "float32",
    }


def topk_margins(model, cfg, ids):
    """Smallest gap between the k-th and (k+1)-th candidate of each top-k decision that
    actually drops candidates; a gap near 0 means the golden logits hinge on rounding."""
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as MD

    res = {"indexer_min_gap": float("inf"), "indexer_gaps_lt_1e-4": 0, "indexer_decisions": 0,
           "router_min_gap": float("inf"), "router_gaps_lt_1e-4": 0, "router_decisions": 0}
    hooks = []
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        if isinstance(comp, MD.DeepseekV4CSACompressor):
            idx = comp.indexer

            def scorer_hook(mod, inp, out, idx=idx):
                s = out.float()
                S, T = s.shape[1], s.shape[2]
                thr = (torch.arange(S) + 1) // idx.compress_rate
                s = s.masked_fill(~(torch.arange(T)[None, :] < thr[:, None])[None], float("-inf"))
                k = idx.index_topk
                rows = thr > k
                if rows.any():
                    top = s[:, rows].topk(k + 1, dim=-1).values
                    gap = top[..., k - 1] - top[..., k]
                    res["indexer_min_gap"] = min(res["indexer_min_gap"], gap.min().item())
                    res["indexer_gaps_lt_1e-4"] += int((gap < 1e-4).sum())
                    res["indexer_decisions"] += gap.numel()
            hooks.append(idx.scorer.register_forward_hook(scorer_hook))
        gate = layer.mlp.gate
        if isinstance(gate, MD.DeepseekV4TopKRouter):
            def gate_hook(mod, inp, out):
                s = mod.score_fn(out[0].float()) + mod.e_score_correction_bias.float()
                top = s.topk(mod.top_k + 1, dim=-1).values
                gap = top[:, -2] - top[:, -1]
                res["router_min_gap"] = min(res["router_min_gap"], gap.min().item())
                res["router_gaps_lt_1e-4"] += int((gap < 1e-4).sum())
                res["router_decisions"] += gap.numel()
            hooks.append(gate.register_forward_hook(gate_hook))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    return res


def main():
    a = get_parser().parse_args()
    torch.manual_seed(a.seed)
    if a.fp8_checkpoint:
        write_fp8_checkpoint(os.path.join(a.out, "..", "official-fp8"), a.seed)
        return
    if a.qat_vectors:
        write_qat_vectors(os.path.join(a.out, "..", "qat-vectors.json"), a.seed)
        return
    import safetensors
    import transformers
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as MD
    from safetensors.torch import save_file

    cfg, ratios = build_config(a)
    model = DeepseekV4ForCausalLM(cfg).eval()
    randomize(model, cfg, a.seed)
    ids = torch.randint(2, a.vocab, (1, a.seq), generator=torch.Generator().manual_seed(a.seed + 1))

    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False, output_hidden_states=True)
        picks, hooks = {}, []
        for li, layer in enumerate(model.model.layers):
            comp = layer.self_attn.compressor
            if isinstance(comp, MD.DeepseekV4CSACompressor):
                def idx_hook(m_, i_, o_, li=li):
                    picks[f"indexer_topk.{li}"] = o_[0].to(torch.int32).clone()
                hooks.append(comp.indexer.register_forward_hook(idx_hook))

            def gate_hook(m_, i_, o_, li=li):
                picks[f"router_idx.{li}"] = o_[2].to(torch.int32).clone()
                picks[f"router_w.{li}"] = o_[1].float().clone()
            hooks.append(layer.mlp.gate.register_forward_hook(gate_hook))
        model(input_ids=ids, use_cache=False)
        for h in hooks:
            h.remove()
        # the cache path, one token at a time, is the semantics the engine implements:
        # record how far HF's own decode drifts from its stateless forward
        from transformers import DynamicCache
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, t:t + 1], use_cache=True, cache=cache).logits.float() for t in range(a.seq)]
    logits = out.logits.float()[0]
    d_decode = (torch.cat(steps, dim=1)[0] - logits).abs().max().item()
    margins = topk_margins(model, cfg, ids)

    os.makedirs(a.out, exist_ok=True)
    save_file(official_state_dict(model, cfg), os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(official_config(cfg, ratios, a), f, indent=2)
    probe = torch.arange(0, a.seq, a.probe_every, dtype=torch.long)
    probe = torch.cat([probe, torch.tensor([a.seq - 1])])
    golden = {"input_ids": ids[0].to(torch.int32), "logits": logits.contiguous(), "probe_pos": probe.to(torch.int32)}
    for i, h in enumerate(out.hidden_states):
        golden[f"hidden.{i}"] = h[0, probe].float().contiguous()
    golden.update({k: v.contiguous() for k, v in picks.items()})
    save_file(golden, os.path.join(a.out, "golden.safetensors"))
    meta = {
        "generator": "tools/gen_tiny_fixtures.py",
        "args": vars(a) | {"out": "crates/ds4-engine/tests/data/tiny-v4"},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "compress_ratios": ratios,
        "hf_decode_vs_stateless_max_abs": d_decode,
        "logits_max_abs": logits.abs().max().item(),
        "topk_margins": margins,
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
