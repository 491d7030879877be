#!/usr/bin/env python3
"""Golden data for the engine's quantization simulations (spec §3.9), from the
independent float64 reference tools/v4_reference.py and PyTorch's own roundings.

Writes into crates/ds4-engine/tests/data/:

    qat_tiny_golden.safetensors   for the first --seq tokens of the tiny-v4 prompt,
                                  with the simulations ON: logits (f32 [S, V]) and the
                                  indexer selections indexer_topk.L (int16 [S, k],
                                  sorted, -1 = no row)
    qat_tiny_meta.json            versions, how the reference compares with
                                  transformers (sims off) and how fragile the
                                  simulated roundings are on this prompt
    qat_e2m1_torch.json           E2M1 rounding from PyTorch's reference conversion
                                  over a dense sweep of [-6.5, 6.5]: every multiple of
                                  2^-6, the 16 code values, every midpoint between
                                  neighbouring codes and its two float32 neighbours
                                  (u32 bit patterns in and out); and whole fp4_sim
                                  blocks (v4_reference.fp4_sim) at many magnitudes

Run with the transformers venv (torch, safetensors, numpy and expecttest -- the last
because torch.testing._internal imports it; transformers is not needed):
    .venv-hf/bin/pip install expecttest
    .venv-hf/bin/python tools/gen_qat_golden.py
CI never runs this; it only reads the committed output.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import v4_reference as R  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ds4-engine", "tests", "data")


def bits(t):
    return t.float().contiguous().view(torch.int32).tolist()


def write_e2m1(path):
    x = torch.arange(-6.5 * 64, 6.5 * 64 + 1) / 64.0
    codes = torch.arange(16, dtype=torch.uint8)
    from torch.testing._internal.common_quantized import _floatx_unpacked_to_f32

    grid = _floatx_unpacked_to_f32(codes, 2, 1)  # code c: sign bit 3, exponent bits 2..1, mantissa bit 0
    mags = grid[:8]
    mids = (mags[:-1] + mags[1:]) / 2
    near = torch.cat([mids, torch.nextafter(mids, torch.full_like(mids, 0.0)),
                      torch.nextafter(mids, torch.full_like(mids, 10.0))])
    x = torch.cat([x, grid, near, -near, torch.tensor([-0.0, 6.0, -6.0, 1e-30, -1e-30, 7.052966104933725e-38])])
    y = R._torch_e2m1(x)
    # the official 8-magnitude table with ties to the even code, as a cross-check of
    # the PyTorch helper itself
    d = (x.abs()[:, None] - mags[None, :]).abs()
    best = torch.tensor([min(range(8), key=lambda i: (float(r[i]), i % 2)) for r in d])
    table = mags[best] * torch.where(torch.signbit(x), -1.0, 1.0)
    assert torch.equal(table, y), "PyTorch E2M1 disagrees with the ties-to-even table"
    # whole fp4_sim blocks (32 values, power-of-two scale) over many magnitudes, on
    # float32 inputs: v/s is exact, so the float64 reference is exact too
    g = torch.Generator().manual_seed(11)
    mag = torch.tensor([0.0, 1e-39, 1e-30, 1e-6, 1e-3, 0.1, 1.0, 6.0, 30.0, 5000.0, 3e37])
    rows = (torch.randn(len(mag), 2, 32, generator=g) * mag[:, None, None]).view(-1, 32)
    ties = (mids[torch.randint(0, 7, (4, 32), generator=g)] * torch.where(torch.rand(4, 32, generator=g) < 0.5, -1.0, 1.0))
    ties[:, 0] = 6.0  # amax 6 -> scale 1, so the ties stay ties
    ties = ties * (2.0 ** torch.tensor([-3.0, -1.0, 0.0, 2.0]))[:, None]
    rows = torch.cat([rows, ties]).float()
    with torch.no_grad():
        fp4 = R.fp4_sim(rows.double()).float()
    out = {
        "generator": "tools/gen_qat_golden.py",
        "torch": torch.__version__,
        "fp4_rows_in": bits(rows.flatten()), "fp4_rows_out": bits(fp4.flatten()), "fp4_row_len": 32,
        "rounding": "torch.testing._internal.common_quantized._f32_to_floatx_unpacked(x, 2, 1) "
                    "decoded by _floatx_unpacked_to_f32 (tensor.to(torch.float4_e2m1fn_x2) is not "
                    "implemented in this torch)",
        "codes": bits(grid),
        "in": bits(x),
        "out": bits(y),
    }
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path, len(out["in"]), "values")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=300)
    a = ap.parse_args()
    from safetensors.torch import load_file, save_file

    write_e2m1(os.path.join(DATA, "qat_e2m1_torch.json"))

    model_dir = os.path.join(DATA, "tiny-v4")
    sd, cfg = R.load_official(model_dir)
    gold = load_file(os.path.join(model_dir, "golden.safetensors"))
    ids = gold["input_ids"][: a.seq].long()
    hf = gold["logits"][: a.seq].double()
    relerr = lambda x, ref: (x - ref).abs().amax(-1) / ref.abs().amax(-1)  # noqa: E731
    with torch.no_grad():
        off = R.forward(sd, cfg, ids, sims=False)
        trace = {}
        R.FRAGILE.clear()
        R.SIM_COUNTS.clear()
        on = R.forward(sd, cfg, ids, sims=True, trace=trace)
    out = {"logits": on.float().contiguous()}
    out.update({k: v.to(torch.int16).contiguous() for k, v in trace.items() if k.startswith("indexer_topk.")})
    save_file(out, os.path.join(DATA, "qat_tiny_golden.safetensors"))
    meta = {
        "generator": "tools/gen_qat_golden.py",
        "reference": "tools/v4_reference.py (float64)",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__},
        "seq": a.seq,
        "prompt": "the first seq tokens of tiny-v4/golden.safetensors input_ids",
        "reference_sims_off_vs_transformers_max_rel": float(relerr(off, hf).max()),
        "sims_on_vs_off_max_rel": float(relerr(on, off).max()),
        "sims_on_vs_off_mean_rel": float(relerr(on, off).mean()),
        "sims_on_vs_off_argmax_agree": int((on.argmax(-1) == off.argmax(-1)).sum()),
        "logits_max_abs": float(on.abs().max()),
        "indexer_smallest_rel_gaps": {
            k.split(".")[1]: sorted(float(x) for x in v[~v.isnan()])[:4] for k, v in trace.items() if k.startswith("indexer_gap.")
        },
        "f32_rounding_hazards": dict(R.HAZARDS),
        "simulated_values": dict(R.SIM_COUNTS),
        "fragile_roundings": R.FRAGILE,
    }
    with open(os.path.join(DATA, "qat_tiny_meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
