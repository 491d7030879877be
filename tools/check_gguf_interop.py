#!/usr/bin/env python3
"""Check a GGUF written by ds4-gguf against the manifest it emitted, using
llama.cpp's reference reader (gguf.GGUFReader).

    cargo run -p ds4-gguf --example write_interop -- /tmp/x.gguf /tmp/x.json
    .venv/bin/python tools/check_gguf_interop.py /tmp/x.gguf /tmp/x.json

Every metadata entry must appear in the same order with the same GGUF value
type and the same value (floats compared exactly at their stored width,
nested arrays element by element); every tensor must have the same name,
ggml-order dims, type, size, offset and sha256 of its bytes. Exits 1 and lists
every mismatch otherwise.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf import GGUFValueType as V

TYPE_NAMES = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16",
    V.UINT32: "u32", V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64", V.INT64: "i64",
    V.FLOAT64: "f64",
}


def scalar(vtype: V, part: np.ndarray):
    x = part[0]
    if vtype in (V.FLOAT32, V.FLOAT64):
        return float(x)  # exact widening of the stored value
    if vtype == V.BOOL:
        return bool(x)
    return int(x)


def walk(parts: list[np.ndarray], i: int, vtype: V):
    """Decode one value starting at parts[i]; returns (json_value, next_i).

    GGUFReader flattens nested arrays in ReaderField.contents(), so this walks
    the raw parts instead: a string is [len, bytes], a scalar one part, an
    array [elem_type, len, elements...].
    """
    if vtype == V.STRING:
        return bytes(parts[i + 1]).decode("utf-8"), i + 2
    if vtype == V.ARRAY:
        elem = V(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            item, i = walk(parts, i, elem)
            items.append(item)
        return {"elem_type": TYPE_NAMES[elem], "items": items}, i
    return scalar(vtype, parts[i]), i + 1


def same(a, b) -> bool:
    """Structural equality where bool and int never compare equal."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gguf_path, manifest_path = sys.argv[1], sys.argv[2]
    with open(manifest_path, encoding="utf-8") as fh:
        m = json.load(fh)
    r = GGUFReader(gguf_path)
    errors: list[str] = []

    def check(what: str, got, want) -> None:
        if not same(got, want):
            errors.append(f"{what}: reader has {got!r}, manifest says {want!r}")

    check("version", int(r.fields["GGUF.version"].parts[-1][0]), m["version"])
    check("alignment", int(r.alignment), m["alignment"])
    check("data_offset", int(r.data_offset), m["data_offset"])
    check("file length", int(r.data.nbytes), m["file_len"])

    fields = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    check("metadata key order", [f.name for f in fields], [e["key"] for e in m["metadata"]])
    by_key = {e["key"]: e for e in m["metadata"]}
    for f in fields:
        want = by_key.get(f.name)
        if want is None:
            errors.append(f"metadata key {f.name!r} is not in the manifest")
            continue
        vtype = V(int(f.parts[2][0]))
        check(f"type of {f.name!r}", TYPE_NAMES[vtype], want["type"])
        value, end = walk(f.parts, 3, vtype)
        if end != len(f.parts):
            errors.append(f"{f.name!r}: {len(f.parts) - end} undecoded parts")
        check(f"value of {f.name!r}", value, want["value"])

    check("tensor count", len(r.tensors), len(m["tensors"]))
    for t, want in zip(r.tensors, m["tensors"]):
        name = want["name"]
        check("tensor name", t.name, name)
        check(f"dims of {name!r}", [int(d) for d in t.shape], want["dims"])
        check(f"type of {name!r}", t.tensor_type.name, want["type"])
        check(f"n_bytes of {name!r}", int(t.n_bytes), want["n_bytes"])
        check(f"offset of {name!r}", int(t.data_offset - r.data_offset), want["offset"])
        data = t.data.tobytes()
        check(f"byte count of {name!r}", len(data), want["n_bytes"])
        check(f"sha256 of {name!r}", hashlib.sha256(data).hexdigest(), want["sha256"])

    if errors:
        print(f"FAIL: {len(errors)} mismatch(es) in {gguf_path}:", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print(f"OK: {gguf_path}: {len(fields)} metadata keys and {len(r.tensors)} tensors "
          "match the manifest (read with gguf.GGUFReader)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
