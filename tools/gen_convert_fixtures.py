#!/usr/bin/env python3
"""Fixtures for `ds4-quantize --from-official` (crates/ds4-cli/tests/convert.rs).

Run with a Python that has torch (>= 2.6 for float8_e8m0fnu) and safetensors:

    .venv-hf/bin/python tools/gen_convert_fixtures.py

Writes under crates/ds4-cli/tests/data/convert/:

  codes.json        every FP8 E4M3FN code (256) and E8M0 scale code (256) decoded by
                    PyTorch (torch.float8_e4m3fn / torch.float8_e8m0fnu), as f32 bit
                    patterns; the 16 FP4 E2M1 codes from the official lookup table
                    (DeepSeek's inference kernel and ds4's deepseek4-quantize.c use the
                    same table; torch 2.15 cannot convert float4_e2m1fn_x2 on CPU), with
                    the E2M1 bit-field definition cross-checked here.
  official/         a tiny checkpoint in the official format: config.json in the
                    official key style, two safetensors shards and
                    model.safetensors.index.json; FP8 E4M3 dense weights with E8M0
                    128x128 block scales (`.scale`, partial edge blocks included), FP4
                    E2M1 experts packed two per byte (low nibble first, stored as I8)
                    with one E8M0 scale per 32 inputs, BF16 norms/embedding/router,
                    F32 HC and sink tensors, I64 tid2eid, and one MTP tensor the
                    converter must report and skip.
  expected.safetensors
                    every FP8/FP4 official weight dequantized to f32 by PyTorch
                    (weight.float() times its broadcast scale, stored as bf16, which holds every such
                    value exactly): what a --recipe f32
                    conversion must reproduce bit for bit (BF16/F32/I64 tensors are
                    widened by the test itself).

The CI never runs this script; it only reads its output.
"""
import json
import math
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "ds4-cli", "tests", "data", "convert")

# The official FP4 E2M1 lookup table (index = 4-bit code; code 8 is "-0").
FP4_TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def e2m1_from_bits(c):
    """E2M1 by its definition: 1 sign, 2 exponent (bias 1), 1 mantissa bit."""
    s = -1.0 if c & 8 else 1.0
    e = (c >> 1) & 3
    m = c & 1
    return s * (m * 0.5 if e == 0 else (1 + m / 2) * 2.0 ** (e - 1))


def f32_bits(t):
    return [int(v) for v in t.to(torch.float32).contiguous().view(torch.int32).tolist()]


def codes():
    x = torch.arange(256, dtype=torch.uint8)
    e4m3 = x.view(torch.float8_e4m3fn).to(torch.float32)
    e8m0 = x.view(torch.float8_e8m0fnu).to(torch.float32)
    for c in range(16):
        a, b = FP4_TABLE[c], e2m1_from_bits(c)
        assert a == b and math.copysign(1, a) == math.copysign(1, b), (c, a, b)
    return {
        "generator": "tools/gen_convert_fixtures.py",
        "torch": torch.__version__,
        "e4m3fn_f32_bits": f32_bits(e4m3),
        "e8m0_f32_bits": f32_bits(e8m0),
        "e2m1_f32_bits": f32_bits(torch.tensor(FP4_TABLE, dtype=torch.float32)),
    }


CONFIG = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "vocab_size": 160,
    "hidden_size": 32,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_hash_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "qk_rope_head_dim": 16,
    "q_lora_rank": 32,
    "o_groups": 1,
    "o_lora_rank": 32,
    "n_routed_experts": 3,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "scoring_func": "sqrtsoftplus",
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.5,
    "swiglu_limit": 10.0,
    "sliding_window": 16,
    # The release config lists one more ratio for the MTP block; it is dropped.
    "compress_ratios": [0, 4, 8, 0],
    "compress_rope_theta": 160000.0,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 16.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
    },
    "index_n_heads": 4,
    "index_head_dim": 32,
    "index_topk": 8,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-06,
    "rms_norm_eps": 1e-06,
    "max_position_embeddings": 65536,
    "num_nextn_predict_layers": 1,
    "torch_dtype": "bfloat16",
}


def e8m0_scale(amax, qmax):
    """Power-of-two scale 2^ceil(log2(amax/qmax)) as an E8M0 tensor."""
    amax = torch.clamp(amax, min=1e-30)
    e = torch.ceil(torch.log2(amax / qmax))
    return torch.pow(2.0, e).to(torch.float8_e8m0fnu)


def fp8(w):
    """FP8 E4M3 weight with one E8M0 scale per 128x128 block (edge blocks partial)."""
    out, inp = w.shape
    so, si = -(-out // 128), -(-inp // 128)
    amax = torch.zeros(so, si)
    for i in range(so):
        for j in range(si):
            amax[i, j] = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].abs().max()
    scale = e8m0_scale(amax, 448.0)
    full = scale.to(torch.float32).repeat_interleave(128, 0)[:out].repeat_interleave(128, 1)[:, :inp]
    q = (w / full).to(torch.float8_e4m3fn)
    deq = q.to(torch.float32) * full
    return q, scale, deq


def fp4(w):
    """FP4 E2M1 weight packed two per byte (low nibble = even column), one E8M0
    scale per 32 inputs, stored as I8 with half the columns."""
    out, inp = w.shape
    blocks = w.reshape(out, inp // 32, 32)
    scale = e8m0_scale(blocks.abs().amax(-1), 6.0)
    full = scale.to(torch.float32).repeat_interleave(32, 1)
    table = torch.tensor(FP4_TABLE)
    # Nearest table entry (ties to the lower index, which has the even mantissa).
    codes = (w / full).unsqueeze(-1).sub(table).abs().argmin(-1).to(torch.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)
    deq = table[codes.long()] * full
    return packed, scale, deq


def build_official(gen):
    c = CONFIG
    d, v, hc = c["hidden_size"], c["vocab_size"], c["hc_mult"]
    nh, hd, ql = c["num_attention_heads"], c["head_dim"], c["q_lora_rank"]
    og, ol = c["o_groups"], c["o_lora_rank"]
    ne, ff, k = c["n_routed_experts"], c["moe_intermediate_size"], c["num_experts_per_tok"]
    ih, idim = c["index_n_heads"], c["index_head_dim"]
    mix = (2 + hc) * hc
    tensors, expected = {}, {}

    def rnd(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    def plain(name, t, dtype):
        # Not in `expected`: the test widens these itself (exact for bf16/f32).
        tensors[name] = t.to(dtype)

    def dense(name, out, inp):
        q, s, deq = fp8(rnd(out, inp, std=inp ** -0.5))
        tensors[name + ".weight"] = q
        tensors[name + ".scale"] = s
        expected[name + ".weight"] = deq

    def expert(name, out, inp):
        p, s, deq = fp4(rnd(out, inp, std=inp ** -0.5))
        tensors[name + ".weight"] = p
        tensors[name + ".scale"] = s
        expected[name + ".weight"] = deq

    plain("embed.weight", rnd(v, d), torch.bfloat16)
    dense("head", v, d)
    plain("norm.weight", 1 + 0.1 * rnd(d), torch.bfloat16)
    plain("hc_head_fn", rnd(hc, hc * d, std=0.05), torch.float32)
    plain("hc_head_base", rnd(hc, std=0.1), torch.float32)
    plain("hc_head_scale", rnd(1, std=0.1), torch.float32)
    ratios = c["compress_ratios"][: c["num_hidden_layers"]]
    for l, r in enumerate(ratios):
        p = f"layers.{l}."
        for s in ("attn", "ffn"):
            plain(p + f"hc_{s}_fn", rnd(mix, hc * d, std=0.05), torch.float32)
            plain(p + f"hc_{s}_base", rnd(mix, std=0.1), torch.float32)
            plain(p + f"hc_{s}_scale", rnd(3, std=0.1), torch.float32)
        plain(p + "attn_norm.weight", 1 + 0.1 * rnd(d), torch.bfloat16)
        plain(p + "ffn_norm.weight", 1 + 0.1 * rnd(d), torch.bfloat16)
        plain(p + "attn.attn_sink", rnd(nh), torch.float32)
        dense(p + "attn.wq_a", ql, d)
        plain(p + "attn.q_norm.weight", 1 + 0.1 * rnd(ql), torch.bfloat16)
        dense(p + "attn.wq_b", nh * hd, ql)
        dense(p + "attn.wkv", hd, d)
        plain(p + "attn.kv_norm.weight", 1 + 0.1 * rnd(hd), torch.bfloat16)
        dense(p + "attn.wo_a", og * ol, nh * hd // og)
        dense(p + "attn.wo_b", d, og * ol)
        if r:
            cw = 2 * hd if r == 4 else hd
            plain(p + "attn.compressor.ape", rnd(r, cw, std=0.1), torch.float32)
            plain(p + "attn.compressor.wkv.weight", rnd(cw, d, std=d ** -0.5), torch.bfloat16)
            plain(p + "attn.compressor.wgate.weight", rnd(cw, d, std=d ** -0.5), torch.bfloat16)
            plain(p + "attn.compressor.norm.weight", 1 + 0.1 * rnd(hd), torch.bfloat16)
        if r == 4:
            dense(p + "attn.indexer.wq_b", ih * idim, ql)
            plain(p + "attn.indexer.weights_proj.weight", rnd(ih, d, std=d ** -0.5), torch.bfloat16)
            plain(p + "attn.indexer.compressor.ape", rnd(4, 2 * idim, std=0.1), torch.float32)
            plain(p + "attn.indexer.compressor.wkv.weight", rnd(2 * idim, d, std=d ** -0.5), torch.bfloat16)
            plain(p + "attn.indexer.compressor.wgate.weight", rnd(2 * idim, d, std=d ** -0.5), torch.bfloat16)
            plain(p + "attn.indexer.compressor.norm.weight", 1 + 0.1 * rnd(idim), torch.bfloat16)
        plain(p + "ffn.gate.weight", rnd(ne, d, std=d ** -0.5), torch.bfloat16)
        if l < c["num_hash_layers"]:
            tid = torch.stack([torch.randperm(ne, generator=gen)[:k] for _ in range(v)]).to(torch.int64)
            tensors[p + "ffn.gate.tid2eid"] = tid
        else:
            plain(p + "ffn.gate.bias", rnd(ne, std=0.1), torch.float32)
        dense(p + "ffn.shared_experts.w1", ff, d)
        dense(p + "ffn.shared_experts.w3", ff, d)
        dense(p + "ffn.shared_experts.w2", d, ff)
        for e in range(ne):
            expert(p + f"ffn.experts.{e}.w1", ff, d)
            expert(p + f"ffn.experts.{e}.w3", ff, d)
            expert(p + f"ffn.experts.{e}.w2", d, ff)
    # MTP is not part of the main GGUF: the converter must report and skip it.
    q, s, _ = fp8(rnd(d, 2 * d, std=0.1))
    tensors["mtp.0.e_proj.weight"] = q
    tensors["mtp.0.e_proj.scale"] = s
    return tensors, expected


def main():
    os.makedirs(os.path.join(OUT, "official"), exist_ok=True)
    with open(os.path.join(OUT, "codes.json"), "w") as f:
        json.dump(codes(), f)
    gen = torch.Generator().manual_seed(20261126)
    tensors, expected = build_official(gen)
    # Two shards plus an index, as the release is laid out.
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for fname, part in shards.items():
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(OUT, "official", fname),
                  metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    with open(os.path.join(OUT, "official", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=1)
    with open(os.path.join(OUT, "official", "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    # A power-of-two scale times an E4M3 (3 mantissa bits) or E2M1 value fits
    # bf16's 8 bits exactly, so bf16 halves the file without losing anything.
    exp16 = {}
    for n, t in expected.items():
        b = t.to(torch.bfloat16)
        assert torch.equal(b.to(torch.float32), t), n
        exp16[n] = b.contiguous()
    save_file(exp16, os.path.join(OUT, "expected.safetensors"))
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fs in os.walk(OUT) for fn in fs)
    print(f"wrote {len(tensors)} official tensors, {total / 1024:.0f} KiB under {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
