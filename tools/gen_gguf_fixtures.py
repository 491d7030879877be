#!/usr/bin/env python3
"""Write the GGUF interop fixture with llama.cpp's own `gguf` Python writer.

Produces crates/ds4-gguf/tests/data/py_fixture.gguf and py_fixture.json. The
JSON manifest lists every metadata entry (in file order, with its GGUF value
type) and every tensor (name, ggml-order dims, type, byte size, data offset
relative to the data section, sha256 of its bytes). The Rust test
crates/ds4-gguf/tests/python_fixture.rs reads the GGUF with ds4-gguf and checks
it against the manifest. CI only reads these files; rerun this script (with the
repo's .venv, which has `gguf` and `numpy`) only to change them:

    .venv/bin/python tools/gen_gguf_fixtures.py

With `--pack-fuzz-corpus DIR` it instead packs a (minimized) cargo-fuzz
corpus into tests/data/fuzz_corpus.bin as repeated `u32 LE length, bytes`
records, which tests/fuzz_corpus.rs replays through the fuzz target's checks:

    (cd crates/ds4-gguf/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz cmin -s none -a parse corpus/parse)
    .venv/bin/python tools/gen_gguf_fixtures.py --pack-fuzz-corpus crates/ds4-gguf/fuzz/corpus/parse
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "crates" / "ds4-gguf" / "tests" / "data"
ARCH = "deepseek4"
ALIGNMENT = 64

TYPE_NAMES = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16",
    V.UINT32: "u32", V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64", V.INT64: "i64",
    V.FLOAT64: "f64",
}


def scalar_json(vtype: V, value):
    """JSON form of a scalar; floats are widened exactly from their stored width."""
    if vtype == V.FLOAT32:
        return float(np.float32(value))
    if vtype == V.FLOAT64:
        return float(value)
    if vtype == V.BOOL:
        return bool(value)
    if vtype == V.STRING:
        return value
    return int(value)


def array_json(elem: V, items) -> dict:
    if elem == V.ARRAY:
        # Nested arrays as GGUFWriter encodes lists of lists: the inner element
        # type is inferred from the first item (int → INT32, str → STRING, ...).
        return {
            "elem_type": "array",
            "items": [array_json(V.get_type(inner[0]), inner) for inner in items],
        }
    return {"elem_type": TYPE_NAMES[elem], "items": [scalar_json(elem, x) for x in items]}


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "py_fixture.gguf"
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_custom_alignment(ALIGNMENT)

    meta: list[dict] = [
        {"key": "general.architecture", "type": "string", "value": ARCH},
        {"key": "general.alignment", "type": "u32", "value": ALIGNMENT},
    ]

    scalars = [
        ("test.u8", V.UINT8, 250),
        ("test.i8", V.INT8, -120),
        ("test.u16", V.UINT16, 65000),
        ("test.i16", V.INT16, -32000),
        ("test.u32", V.UINT32, 4_000_000_000),
        ("test.i32", V.INT32, -2_000_000_000),
        ("test.f32", V.FLOAT32, 0.1),
        ("test.bool_true", V.BOOL, True),
        ("test.bool_false", V.BOOL, False),
        ("test.string", V.STRING, "héllo ｜DSML｜ ▁ 🙂"),
        ("test.u64", V.UINT64, 2**64 - 1),
        ("test.i64", V.INT64, -(2**63)),
        ("test.f64", V.FLOAT64, -1.25e300),
    ]
    for key, vtype, value in scalars:
        w.add_key_value(key, value, vtype)
        meta.append({"key": key, "type": TYPE_NAMES[vtype], "value": scalar_json(vtype, value)})

    tokens = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "Ġthe", "Ġ", "a", "ĊĊ", "é", ""]
    arrays = [
        ("tokenizer.ggml.tokens", V.STRING, tokens),
        ("tokenizer.ggml.merges", V.STRING, ["Ġ t", "Ġ a", "h e"]),
        ("test.arr_u8", V.UINT8, [0, 1, 255]),
        ("test.arr_i8", V.INT8, [-128, 0, 127]),
        ("test.arr_u16", V.UINT16, [0, 65535]),
        ("test.arr_i16", V.INT16, [-32768, 32767]),
        ("test.arr_u32", V.UINT32, [0, 1, 2**32 - 1]),
        ("test.arr_i32", V.INT32, [-(2**31), 7]),
        ("test.arr_f32", V.FLOAT32, [0.5, -3.25, 1e-7]),
        ("test.arr_bool", V.BOOL, [True, False, True]),
        ("test.arr_u64", V.UINT64, [2**64 - 1, 3]),
        ("test.arr_i64", V.INT64, [-(2**63), 2**63 - 1]),
        ("test.arr_f64", V.FLOAT64, [1e-300, -2.5]),
    ]
    for key, elem, items in arrays:
        w.add_key_value(key, items, V.ARRAY, sub_type=elem)
        meta.append({"key": key, "type": "array", "value": array_json(elem, items)})

    nested = [[1, 2, 3], [4], [-5, 6]]
    w.add_array("test.nested_i32", nested)
    meta.append({"key": "test.nested_i32", "type": "array", "value": array_json(V.ARRAY, nested)})
    nested_s = [["a", "b"], ["ｃ"]]
    w.add_array("test.nested_str", nested_s)
    meta.append({"key": "test.nested_str", "type": "array", "value": array_json(V.ARRAY, nested_s)})

    rng = np.random.default_rng(20261126)
    tensors: list[tuple[str, np.ndarray, Q | None]] = [
        # numpy shapes are the reverse of ggml dims.
        ("t.f32", rng.standard_normal((3, 5)).astype(np.float32), None),
        ("t.f16", rng.standard_normal((2, 8)).astype(np.float16), None),
        ("t.q8_0", gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0), Q.Q8_0),
        # Block formats the Python package may not quantize: raw bytes of the
        # right size are enough to check the container.
        ("t.q2_k", rng.integers(0, 256, (1, 84), dtype=np.uint8), Q.Q2_K),
        ("t.q4_k", rng.integers(0, 256, (2, 144), dtype=np.uint8), Q.Q4_K),
        ("t.iq2_xxs", rng.integers(0, 256, (1, 66), dtype=np.uint8), Q.IQ2_XXS),
        ("t.bf16", rng.integers(0, 256, (1, 6), dtype=np.uint8), Q.BF16),
        ("t.i8", rng.integers(-128, 128, (7,), dtype=np.int8), None),
        ("t.i16", rng.integers(-3000, 3000, (2, 3), dtype=np.int16), None),
        ("t.i32", rng.integers(0, 256, (6, 2), dtype=np.int32), None),
        ("t.i64", rng.integers(-(2**40), 2**40, (3,), dtype=np.int64), None),
        ("t.f64", rng.standard_normal((1, 1, 2)).astype(np.float64), None),
    ]
    for name, arr, raw in tensors:
        w.add_tensor(name, arr, raw_dtype=raw)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Offsets and ggml dims as the reference reader sees them.
    r = gguf.GGUFReader(str(path))
    keys = [f.name for f in r.fields.values() if not f.name.startswith("GGUF.")]
    expected_keys = [m["key"] for m in meta]
    if keys != expected_keys:
        print(f"metadata order mismatch:\n{keys}\n{expected_keys}", file=sys.stderr)
        return 1
    manifest_tensors = []
    for (name, arr, _raw), t in zip(tensors, r.tensors):
        assert t.name == name
        data = arr.tobytes()
        assert t.data.tobytes() == data
        manifest_tensors.append({
            "name": name,
            "dims": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "n_bytes": len(data),
            "offset": int(t.data_offset - r.data_offset),
            "sha256": hashlib.sha256(data).hexdigest(),
        })

    manifest = {
        "generator": f"tools/gen_gguf_fixtures.py (gguf {importlib.metadata.version('gguf')})",
        "file": path.name,
        "version": 3,
        "alignment": ALIGNMENT,
        "data_offset": int(r.data_offset),
        "file_len": path.stat().st_size,
        "metadata": meta,
        "tensors": manifest_tensors,
    }
    (OUT_DIR / "py_fixture.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and py_fixture.json")
    return 0


def pack_fuzz_corpus(src: Path) -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    files = sorted(p for p in src.iterdir() if p.is_file())
    for p in files:
        data = p.read_bytes()
        out += len(data).to_bytes(4, "little") + data
    (OUT_DIR / "fuzz_corpus.bin").write_bytes(bytes(out))
    print(f"packed {len(files)} inputs ({len(out)} bytes) into {OUT_DIR / 'fuzz_corpus.bin'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--pack-fuzz-corpus":
        sys.exit(pack_fuzz_corpus(Path(sys.argv[2])))
    sys.exit(main())
