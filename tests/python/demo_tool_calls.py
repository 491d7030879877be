"""Tool calls of the trained demo model through a running ds4-server, with the
official clients, on the held-out tool prompts of tools/gen_demo_data.py.

For each API (chat completions, streamed and not; responses; Anthropic messages)
it sends the first N held-out prompts with the three demo tools, greedy and
without thinking, and counts the answers that carry a tool call with the right
tool name whose arguments parse and fit the schema ("valid"), and those whose
arguments are exactly the expected ones ("exact").

Environment: DS4_SERVER_URL, DS4_API_KEY (optional), DS4_TOOL_N (prompts per API,
default 5), DS4_TOOL_MIN_RATE (required valid rate per API, default 0.9),
DS4_TOOL_MIN_EXACT (required exact rate per API, default 0.9), DS4_TOOL_REPORT
(optional path: the JSON summary is written there).
Prints the summary as one JSON line; exits 1 when an API is below either rate.
"""
import json
import os
import sys

import anthropic
import openai

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = os.path.join(HERE, "..", "..", "tools", "demo_data", "tool_prompts.eval.json")


def schema_ok(name, args, funcs):
    f = next((f for f in funcs if f["name"] == name), None)
    if f is None or not isinstance(args, dict):
        return False
    props = f["parameters"]["properties"]
    if any(k not in args for k in f["parameters"]["required"]) or any(k not in props for k in args):
        return False
    for k, v in args.items():
        t = props[k]["type"]
        if t == "string" and not isinstance(v, str):
            return False
        if t == "number" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return False
    return True


def judge(p, name, args_text, funcs):
    """(valid, exact, what was called)"""
    try:
        args = json.loads(args_text) if isinstance(args_text, str) else args_text
    except ValueError:
        return False, False, f"{name}({args_text!r}: not JSON)"
    valid = name == p["tool"] and schema_ok(name, args, funcs)
    return valid, valid and args == p["arguments"], f"{name}({json.dumps(args, ensure_ascii=False)})"


def main():
    base = os.environ["DS4_SERVER_URL"]
    key = os.environ.get("DS4_API_KEY", "none")
    n = int(os.environ.get("DS4_TOOL_N", "5"))
    min_rate = float(os.environ.get("DS4_TOOL_MIN_RATE", "0.9"))
    min_exact = float(os.environ.get("DS4_TOOL_MIN_EXACT", "0.9"))
    with open(PROMPTS, encoding="utf-8") as f:
        data = json.load(f)
    funcs, prompts = data["tools"], data["prompts"][:n]
    oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
    an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=120)
    chat_tools = [{"type": "function", "function": f} for f in funcs]
    resp_tools = [{"type": "function", **f} for f in funcs]
    anth_tools = [{"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
                  for f in funcs]
    common = {"model": "deepseek-chat", "temperature": 0}
    # the anthropic SDK has no `temperature` argument: a body field
    a_common = {"model": "deepseek-chat", "extra_body": {"temperature": 0}}

    def chat(p):
        r = oa.chat.completions.create(messages=[{"role": "user", "content": p["user"]}], tools=chat_tools,
                                       max_tokens=96, **common)
        calls = r.choices[0].message.tool_calls or []
        return [(c.function.name, c.function.arguments) for c in calls]

    def chat_stream(p):
        s = oa.chat.completions.create(messages=[{"role": "user", "content": p["user"]}], tools=chat_tools,
                                       max_tokens=96, stream=True, **common)
        calls = {}
        for chunk in s:
            if not chunk.choices:
                continue
            for tc in chunk.choices[0].delta.tool_calls or []:
                c = calls.setdefault(tc.index, ["", ""])
                if tc.function and tc.function.name:
                    c[0] += tc.function.name
                if tc.function and tc.function.arguments:
                    c[1] += tc.function.arguments
        return [tuple(calls[i]) for i in sorted(calls)]

    def responses(p):
        r = oa.responses.create(input=p["user"], tools=resp_tools, max_output_tokens=96, **common)
        return [(o.name, o.arguments) for o in r.output if o.type == "function_call"]

    def messages(p):
        r = an.messages.create(messages=[{"role": "user", "content": p["user"]}], tools=anth_tools,
                               max_tokens=96, **a_common)
        return [(b.name, b.input) for b in r.content if b.type == "tool_use"]

    summary, failed = {"n": len(prompts)}, False
    for api, fn in [("chat", chat), ("chat_stream", chat_stream), ("responses", responses),
                    ("messages", messages)]:
        valid = exact = 0
        misses, marks = [], ""
        for p in prompts:
            calls = fn(p)
            if not calls:
                misses.append(f"{p['user']!r} -> no call")
                marks += "-"
                continue
            v, e, what = judge(p, calls[0][0], calls[0][1], funcs)
            marks += "E" if e else ("V" if v else "x")
            valid += v
            exact += e
            if not e:
                misses.append(f"{p['user']!r} -> {what}")
        # per prompt: E exact, V valid (right tool, schema-valid arguments), x wrong, - no call
        summary[api] = {"valid": valid / len(prompts), "exact": exact / len(prompts), "per_prompt": marks,
                        "misses": misses[:8]}
        print(api, json.dumps(summary[api], ensure_ascii=False), file=sys.stderr, flush=True)
        failed |= valid / len(prompts) < min_rate or exact / len(prompts) < min_exact
    line = json.dumps(summary, ensure_ascii=False)
    print(line)
    if os.environ.get("DS4_TOOL_REPORT"):
        with open(os.environ["DS4_TOOL_REPORT"], "w", encoding="utf-8") as f:
            f.write(line + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
