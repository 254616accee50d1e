#!/usr/bin/env python3
"""Summarises tools/bench_python.sh's output: per round, Python's QPS against the CLI's run
beside it, at batch 1,000 and batch 1; then the ratios' median and range.

Usage: python3 tools/bench_python_summary.py OUTPUT.txt
"""

import json
import statistics
import sys

rows, cur = [], {}
for line in open(sys.argv[1]):
    if line.startswith("# round"):
        if cur:
            rows.append(cur)
        cur = {"load": line.split("load ")[1].split()[0]}
        continue
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j["system"] == "m3-python":
        cur["py1000" if j["batch"] > 1 else "py1"] = j
    else:
        cur["cli1000" if j["threads"] > 1 else "cli1"] = j
if cur:
    rows.append(cur)
r_big, r_one, over = [], [], []
print("round  load  | batch 1000: python  cli   ratio | batch 1: python  cli   ratio  µs/call py−cli")
for i, r in enumerate(rows, 1):
    a, b = r["py1000"]["qps"], r["cli1000"]["qps"]
    c, d = r["py1"]["qps"], r["cli1"]["qps"]
    r_big.append(a / b)
    r_one.append(c / d)
    over.append(1e6 / c - 1e6 / d)
    print(f"{i:>5} {r['load']:>5} | {a:>17.0f} {b:>5.0f} {a / b:>7.2f} | {c:>14.0f} {d:>5.0f} {c / d:>6.2f} {over[-1]:>8.0f}")
for name, v in (("batch 1000 ratio", r_big), ("batch 1 ratio", r_one), ("batch 1 µs/call", over)):
    print(f"{name}: median {statistics.median(v):.2f}, range {min(v):.2f} – {max(v):.2f}")
