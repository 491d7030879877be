#!/usr/bin/env python3
"""The same-call A/B table of a full-ab.log (bench/full-ab.sh): for every arm of every
repetition, cuda_step's median GPU step and ds4-bench's prefill and decode figures, each
with its change against the defaults (the `DS4_AB=none` arm) of the same repetition.

    bench/ab-summary.py OUT/full-ab.log
"""
import re
import sys


def parse(lines):
    """[(rep, arm, {metric: value})] in the log's order."""
    arms = []
    for line in lines:
        m = re.match(r"== \[(\d+)\] (.*)$", line)
        if m:
            arms.append((int(m.group(1)), m.group(2).strip(), {}))
            continue
        if not arms:
            continue
        vals = arms[-1][2]
        m = re.search(r"decode step at (\d+): median ([\d.]+) us", line)
        if m:
            vals[f"step@{m.group(1)} us"] = float(m.group(2))
            continue
        m = re.search(r"ctx\s+(\d+): prefill\s+([\d.]+) t/s, decode\s+([\d.]+) t/s", line)
        if m:
            k = int(m.group(1)) // 1024
            vals[f"prefill {k}k"] = float(m.group(2))
            vals[f"decode {k}k"] = float(m.group(3))
    return arms


def table(arms):
    metrics = []
    for _, _, vals in arms:
        metrics += [k for k in vals if k not in metrics]
    base = {rep: vals for rep, arm, vals in arms if arm == "DS4_AB=none"}
    out = ["| rep | arm | " + " | ".join(metrics) + " |", "|---:|---|" + "---:|" * len(metrics)]
    for rep, arm, vals in arms:
        cells = []
        for k in metrics:
            v, b = vals.get(k), base.get(rep, {}).get(k)
            if v is None:
                cells.append("")
            elif b is None or arm == "DS4_AB=none":
                cells.append(f"{v:,.1f}")
            else:
                cells.append(f"{v:,.1f} ({100.0 * (v - b) / b:+.1f}%)")
        out.append(f"| {rep} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ab-summary.py FULL_AB_LOG")
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            arms = parse(f.read().splitlines())
    except OSError as e:
        sys.exit(f"ab-summary: {e}")
    if not arms:
        sys.exit(f"ab-summary: no arms (lines '== [rep] SWITCH') in {sys.argv[1]}")
    print(table(arms))


if __name__ == "__main__":
    main()
