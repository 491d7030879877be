#!/usr/bin/env python3
"""Differential test vectors for the ds4-chat encoder.

Random conversations are rendered by the official DeepSeek V4 encoder
(`encoding_dsv4.py`, MIT, (c) DeepSeek; not vendored in this repo: pass its path)
and written as JSON lines to tests/data/encoding_vectors.jsonl; assistant turns
rendered and then parsed by the official decoder go to tests/data/parse_vectors.jsonl. Each line holds the
request (messages, context, options) exactly as a client would send it (compact or
spaced JSON, ASCII-escaped or not, so the Rust side must re-serialize the way
Python does) and the expected prompt string.

    python3 tools/gen_encoding_vectors.py --oracle /path/to/encoding_dsv4.py

Only the standard library is needed. Cases on which the official code raises are
skipped (they are the documented deviations in ENCODING.md).
"""

import argparse
import copy
import importlib.util
import json
import os
import random

POOL = [
    "hello", "world", " ", "\n", "\n\n", "the answer is 42.", "小柴胡", "今天是星期五。",
    "😀", "é", "\"quoted\"", "back\\slash", "tab\there", "\u0001", "\u007f", "\u2028",
    "<tool_result>", "</think>", "<｜User｜>", "a < b > c & d", "```python\nprint(1)\n```",
    "{\"json\": true}", "0.1", "-5", "—", "·", "Ω",
]


def rtext(r, lo=0, hi=4):
    return "".join(r.choice(POOL) for _ in range(r.randint(lo, hi)))


def rvalue(r, depth=0):
    kinds = ["str", "int", "float", "bool", "null", "big"]
    if depth < 2:
        kinds += ["list", "dict"]
    k = r.choice(kinds)
    if k == "str":
        return rtext(r)
    if k == "int":
        return r.randint(-10**6, 10**6)
    if k == "big":
        return r.choice([2**70, -(2**65), 10**20])
    if k == "float":
        return r.choice([0.0, -0.0, 1.5, 1e-7, 1e16, 123456.789, 1e100, 2.5e-5, 3.0, 1 / 3])
    if k == "bool":
        return r.random() < 0.5
    if k == "null":
        return None
    if k == "list":
        return [rvalue(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {rname(r): rvalue(r, depth + 1) for _ in range(r.randint(0, 3))}


def rname(r):
    return r.choice(["location", "unit", "q", "path", "n", "opts", "x", "名字", "body", "$ref"])


def rdump(r, v):
    return json.dumps(
        v,
        ensure_ascii=r.random() < 0.5,
        separators=r.choice([None, (",", ":")]),
    )


def rtool(r, i):
    props = {rname(r): {"type": r.choice(["string", "integer", "number"]), "description": rtext(r, 0, 2)}
             for _ in range(r.randint(0, 3))}
    params = {"type": "object", "properties": props, "required": list(props)[:1]}
    if r.random() < 0.3:
        params["default"] = rvalue(r)
    return {"type": "function",
            "function": {"name": f"tool_{i}", "description": rtext(r, 0, 3), "parameters": params}}


def rargs(r):
    x = r.random()
    if x < 0.75:
        return rdump(r, {rname(r): rvalue(r) for _ in range(r.randint(0, 4))})
    if x < 0.85:
        return ""
    return "{not json" + rtext(r, 0, 1)


def rconversation(r):
    msgs = []
    call_n = 0
    if r.random() < 0.7:
        m = {"role": "system", "content": rtext(r, 1, 4)}
        if r.random() < 0.35:
            m["tools"] = [rtool(r, i) for i in range(r.randint(1, 3))]
        if r.random() < 0.15:
            m["response_format"] = {"type": "json_schema", "schema": {"type": "object", "x": rvalue(r)}}
        msgs.append(m)
    for turn in range(r.randint(1, 4)):
        if r.random() < 0.2:
            msgs.append({"role": "latest_reminder", "content": rtext(r, 1, 3)})
        if r.random() < 0.12:
            m = {"role": "developer", "content": rtext(r, 1, 3)}
            if r.random() < 0.4:
                m["tools"] = [rtool(r, 9)]
            msgs.append(m)
        else:
            m = {"role": "user", "content": rtext(r, 0, 4)}
            if r.random() < 0.08:
                m["task"] = r.choice(["action", "query", "authority", "domain", "title", "read_url"])
            msgs.append(m)
            if r.random() < 0.1:
                msgs.append({"role": "user", "content": rtext(r, 1, 2)})
        if r.random() < 0.25 and turn > 0:
            break  # end on a user turn: a generation prompt
        a = {"role": "assistant", "content": rtext(r, 0, 4)}
        if r.random() < 0.7:
            a["reasoning_content"] = rtext(r, 0, 4)
        if r.random() < 0.35:
            calls = []
            for _ in range(r.randint(1, 3)):
                call_n += 1
                calls.append({"id": f"call_{call_n}", "type": "function",
                              "function": {"name": r.choice(["get_weather", "search", "run"]),
                                           "arguments": rargs(r)}})
            a["tool_calls"] = calls
            msgs.append(a)
            results = [{"role": "tool", "tool_call_id": c["id"], "content": rtext(r, 0, 3)} for c in calls]
            r.shuffle(results)
            msgs.extend(results)
            if r.random() < 0.3:
                msgs.append({"role": "user", "content": rtext(r, 1, 2)})
            if r.random() < 0.6:
                msgs.append({"role": "assistant", "content": rtext(r, 1, 3),
                             "reasoning_content": rtext(r, 0, 2)})
        else:
            if r.random() < 0.1:
                a["wo_eos"] = True
            msgs.append(a)
            if a.get("wo_eos"):
                break
    return msgs


def rparse_case(r, enc):
    """An assistant turn rendered by the official encoder, then parsed by the official
    decoder: the Rust parser must give the same reasoning, content and arguments."""
    mode = r.choice(["chat", "thinking"])
    a = {"role": "assistant", "content": rtext(r, 0, 3), "reasoning_content": rtext(r, 0, 3)}
    if r.random() < 0.8:
        a["tool_calls"] = [
            {"type": "function", "function": {
                "name": r.choice(["get_weather", "search", "run"]),
                "arguments": rdump(r, {rname(r): rvalue(r) for _ in range(r.randint(0, 4))})}}
            for _ in range(r.randint(1, 3))]
    prompt = enc.encode_messages([{"role": "user", "content": "Q"}, a], mode, drop_thinking=False)
    opener = "<｜Assistant｜>" + ("<think>" if mode == "thinking" else "</think>")
    text = prompt.split(opener, 1)[1]
    parsed = enc.parse_message_from_completion_text(text, mode)
    return {"mode": mode, "text": text, "reasoning": parsed["reasoning_content"],
            "content": parsed["content"],
            "calls": [[c["function"]["name"], c["function"]["arguments"]] for c in parsed["tool_calls"]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oracle", required=True, help="path to the official encoding_dsv4.py")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--count", type=int, default=68)
    ap.add_argument("--parse-count", type=int, default=45)
    data_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    ap.add_argument("--out", default=os.path.join(data_dir, "encoding_vectors.jsonl"))
    ap.add_argument("--parse-out", default=os.path.join(data_dir, "parse_vectors.jsonl"))
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("encoding_dsv4", args.oracle)
    enc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(enc)

    r = random.Random(args.seed)
    lines = []
    skipped = 0
    while len(lines) < args.count:
        msgs = rconversation(r)
        k = r.randint(1, len(msgs) - 1) if len(msgs) > 2 and r.random() < 0.2 else 0
        opts = {
            "thinking_mode": r.choice(["chat", "thinking", "thinking"]),
            "drop_thinking": r.random() < 0.8,
            "add_bos": r.random() < 0.9,
            "reasoning_effort": r.choice([None, None, "high", "max"]),
        }
        try:
            expected = enc.encode_messages(
                copy.deepcopy(msgs[k:]), opts["thinking_mode"], context=copy.deepcopy(msgs[:k]) or None,
                drop_thinking=opts["drop_thinking"], add_default_bos_token=opts["add_bos"],
                reasoning_effort=opts["reasoning_effort"])
        except Exception:
            skipped += 1
            continue
        case = {"context": msgs[:k], "messages": msgs[k:], "options": opts, "expected": expected}
        lines.append(rdump(r, case))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} cases ({skipped} skipped: the oracle raised) to {args.out}")

    lines = []
    skipped = 0
    while len(lines) < args.parse_count:
        try:
            case = rparse_case(r, enc)
        except Exception:
            skipped += 1  # e.g. content holding special-token text, refused by the decoder
            continue
        lines.append(json.dumps(case, ensure_ascii=False))
    with open(args.parse_out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} parse cases ({skipped} skipped) to {args.parse_out}")


if __name__ == "__main__":
    main()
