#!/usr/bin/env python3
"""Generate crates/ds4-quant/tests/data/quant_fixtures.json.

The reference is the `gguf` Python package (llama.cpp's own numpy port of the
block formats). Random blocks are NOT stored: their bytes come from splitmix64,
implemented identically here and in crates/ds4-quant/tests/common/mod.rs, so
only hashes of the expected dequantized output (sha256 of little-endian f32,
per chunk of 100 blocks), the first blocks' full outputs (for readable diffs)
and hand-made edge-case blocks are committed.

Scale fields of random blocks are "sanitized" so they are finite (an f16 with
exponent 31 gets its top exponent bit cleared; Q8_K's f32 d likewise): every
other bit pattern, including subnormal, huge, negative and zero scales, occurs.

Run:  .venv/bin/python tools/gen_quant_fixtures.py
"""

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parent.parent / "crates/ds4-quant/tests/data/quant_fixtures.json"
MASK = (1 << 64) - 1
N_RANDOM = 10_000
CHUNK = 100
N_FIRST = 2


class SplitMix64:
    def __init__(self, seed: int):
        self.s = seed & MASK

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def bytes(self, n: int) -> bytearray:
        out = bytearray()
        while len(out) < n:
            out += self.next().to_bytes(8, "little")
        return out[:n]

    def uniform(self) -> float:
        # 53 random bits in [0, 1)
        return (self.next() >> 11) * (1.0 / (1 << 53))

    def gauss(self) -> float:
        u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


# (type name, ggml type, block bytes, offsets of f16 scales, offsets of f32 scales, seed)
TYPES = {
    "F32": (T.F32, 4, [], [], 0xF32),
    "I32": (T.I32, 4, [], [], 0x132),
    "Q8_0": (T.Q8_0, 34, [0], [], 0x80),
    "Q2_K": (T.Q2_K, 84, [80, 82], [], 0x2C),
    "Q4_K": (T.Q4_K, 144, [0, 2], [], 0x4C),
    "IQ2_XXS": (T.IQ2_XXS, 66, [0], [], 0x1A2),
    "Q8_K": (T.Q8_K, 292, [], [0], 0x8C),
}


def sanitize(buf: bytearray, size: int, f16_offs, f32_offs) -> None:
    for b in range(0, len(buf), size):
        for o in f16_offs:
            h = buf[b + o] | (buf[b + o + 1] << 8)
            if h & 0x7C00 == 0x7C00:
                h &= ~0x4000
            buf[b + o] = h & 0xFF
            buf[b + o + 1] = h >> 8
        for o in f32_offs:
            v = int.from_bytes(buf[b + o : b + o + 4], "little")
            if v & 0x7F800000 == 0x7F800000:
                v &= ~0x40000000
            buf[b + o : b + o + 4] = v.to_bytes(4, "little")


def random_blocks(name: str) -> bytes:
    qt, size, f16o, f32o, seed = TYPES[name]
    rng = SplitMix64(seed)
    buf = rng.bytes(N_RANDOM * size)
    sanitize(buf, size, f16o, f32o)
    return bytes(buf)


def reference_dequant(name: str, data: bytes) -> np.ndarray:
    qt = TYPES[name][0]
    arr = np.frombuffer(data, dtype=np.uint8)
    if name == "I32":
        return arr.view(np.int32).astype(np.float32)
    if name == "Q8_K":
        # gguf.quants has no Q8_K; our definition (ggml's dequantize_row_q8_K): d·q.
        blocks = arr.reshape(-1, 292)
        d = blocks[:, 0:4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        with np.errstate(over="ignore"):  # huge d · q may overflow to ±inf, in Rust too
            return (d * q).reshape(-1)
    return np.asarray(quants.dequantize(arr, qt), dtype=np.float32).reshape(-1)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def f16b(v: int) -> bytes:
    return v.to_bytes(2, "little")


def edge_blocks(name: str) -> list[bytes]:
    """Hand-made blocks: zero, extreme/negative/subnormal scales, extreme codes."""
    size = TYPES[name][1]
    out = [bytes(size), bytes([0xFF]) * size]
    if name in ("F32", "I32"):
        vals = [0x00000000, 0x80000000, 0x7F7FFFFF, 0x00000001, 0x807FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FA00001, 0x3F800000]
        return [v.to_bytes(4, "little") for v in vals]
    scales = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00]
    patterns = [bytes(size), bytes([0xFF]) * size, bytes([0x80]) * size, bytes([0x7F]) * size, bytes([0x55]) * size, bytes(range(size % 256)) + bytes(size - size % 256) if size < 256 else bytes(i & 0xFF for i in range(size))]
    for s in scales:
        for p in patterns:
            b = bytearray(p[:size].ljust(size, b"\0"))
            if name == "Q8_0" or name == "IQ2_XXS":
                b[0:2] = f16b(s)
            elif name == "Q2_K":
                b[80:82] = f16b(s)
                b[82:84] = f16b(s ^ 0x8000)
            elif name == "Q4_K":
                b[0:2] = f16b(s)
                b[2:4] = f16b(s ^ 0x8000)
            elif name == "Q8_K":
                f = np.array([np.float16(0)], dtype=np.float16)
                f.view(np.uint16)[0] = s
                b[0:4] = np.float32(f[0]).tobytes()
            out.append(bytes(b))
    # Keep the edge blocks NaN-free too (the all-0xFF block has NaN scales):
    # NaN arithmetic does not fix the sign bit of its result (x·(−1) may be
    # compiled to a negation), so only finite scales can be compared bitwise.
    _, _, f16o, f32o, _ = TYPES[name]
    fixed = []
    for e in out:
        e = bytearray(e)
        sanitize(e, size, f16o, f32o)
        fixed.append(bytes(e))
    return fixed


def dequant_fixture(name: str) -> dict:
    size = TYPES[name][1]
    data = random_blocks(name)
    ref = reference_dequant(name, data)
    per = ref.size // N_RANDOM
    chunks = [sha(ref[i * per * CHUNK : (i + 1) * per * CHUNK]) for i in range(N_RANDOM // CHUNK)]
    first = [[int(v) for v in ref[i * per : (i + 1) * per].view(np.uint32)] for i in range(N_FIRST)]
    edges = edge_blocks(name)
    edge_ref = reference_dequant(name, b"".join(edges))
    edge_per = edge_ref.size // len(edges)
    return {
        "seed": TYPES[name][4],
        "block_bytes": size,
        "n_random_blocks": N_RANDOM,
        "chunk_blocks": CHUNK,
        "chunk_sha256": chunks,
        "first_blocks_f32_bits": first,
        "edge_blocks_hex": [e.hex() for e in edges],
        "edge_sha256": [sha(edge_ref[i * edge_per : (i + 1) * edge_per]) for i in range(len(edges))],
        "reference": "own definition d*q (gguf.quants has no Q8_K)" if name == "Q8_K" else "gguf.quants.dequantize" if name != "I32" else "numpy int32 -> float32",
    }


def exhaustive16(qt) -> dict:
    allbits = np.arange(65536, dtype=np.uint16)
    ref = np.asarray(quants.dequantize(allbits.view(np.uint8), qt), dtype=np.float32).reshape(-1)
    return {
        "exhaustive": True,
        "chunk_values": 4096,
        "chunk_sha256": [sha(ref[i : i + 4096]) for i in range(0, 65536, 4096)],
        # A few readable values: signalling/quiet NaNs, infinities, subnormals.
        "spot_bits": {str(h): int(ref[h : h + 1].view(np.uint32)[0]) for h in (0x0001, 0x03FF, 0x7C00, 0x7C01, 0x7E00, 0xFC01, 0xFFFF, 0x7F81, 0xFF80)},
    }


def gaussian(seed: int, n: int) -> np.ndarray:
    rng = SplitMix64(seed)
    return np.array([rng.gauss() for _ in range(n)], dtype=np.float64).astype(np.float32)


def rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return float(math.sqrt(np.mean((x - y) ** 2) / np.mean(x * x)))


def main() -> int:
    fx = {
        "generator": "tools/gen_quant_fixtures.py",
        "gguf_version": getattr(gguf, "__version__", "unknown"),
        "prng": "splitmix64; gaussian = sqrt(-2 ln(1-u1)) cos(2 pi u2), u = (next>>11)/2^53, f64 then f32",
        "sanitize": "f16 scale with exponent 31: clear bit 14; f32 scale with exponent 255: clear bit 30",
        "dequant": {n: dequant_fixture(n) for n in TYPES},
    }
    fx["dequant"]["F16"] = exhaustive16(T.F16)
    fx["dequant"]["BF16"] = exhaustive16(T.BF16)

    # Quantization reference: the gguf package quantizes Q8_0 and BF16 (not the
    # K/IQ types). Gaussian rows of 4096.
    g_seed, g_rows, g_cols = 0x6A55, 64, 4096
    x = gaussian(g_seed, g_rows * g_cols).reshape(g_rows, g_cols)
    q8 = quants.quantize(x, T.Q8_0)
    bf = quants.quantize(x, T.BF16)
    fx["quantize"] = {
        "gaussian_seed": g_seed,
        "rows": g_rows,
        "cols": g_cols,
        "input_sha256": sha(x.reshape(-1)),
        "Q8_0": {
            "bytes_sha256": hashlib.sha256(q8.tobytes()).hexdigest(),
            "gguf_rel_rmse": rel_rmse(x, quants.dequantize(q8, T.Q8_0)),
        },
        "BF16": {
            "bytes_sha256": hashlib.sha256(bf.tobytes()).hexdigest(),
            "gguf_rel_rmse": rel_rmse(x, quants.dequantize(bf, T.BF16)),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fx, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
