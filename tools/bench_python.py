#!/usr/bin/env python3
"""QPS of the Python package at batch sizes (issue 15's benchmark; docs/BENCHMARKS.md,
"Python package"). Prints one JSON object per measured batch size.

Usage (inside a venv with the package installed, e.g. target/python-venv):
  python tools/bench_python.py --index IDX --queries query.fbin --gt gt.ibin --k 10 \
      --threads 2 --max-queries 2000 --batch 1000 --batch 1 -- nprobe=64 rerank=30
"""

import argparse
import json
import time

import numpy as np

import m3


def read_bin(path, dtype):
    raw = np.fromfile(path, dtype="<u4", count=2)
    n, d = int(raw[0]), int(raw[1])
    return np.fromfile(path, dtype=dtype, offset=8, count=n * d).reshape(n, d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-queries", type=int, default=2000)
    ap.add_argument("--batch", type=int, action="append", default=[])
    ap.add_argument("knobs", nargs="*", help="knob=value, e.g. nprobe=64 rerank=30")
    a = ap.parse_args()
    knobs = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in a.knobs}
    q = read_bin(a.queries, "<f4")[: a.max_queries]
    gt = read_bin(a.gt, "<i4")[: a.max_queries]
    index = m3.Index(a.index)
    index.search(q[:10], a.k, threads=a.threads, **knobs)  # warm the pool and the page cache
    for batch in a.batch or [1000]:
        ids = np.empty((q.shape[0], a.k), np.int64)
        t0 = time.perf_counter()
        for s in range(0, q.shape[0], batch):
            ids[s : s + batch] = index.search(q[s : s + batch], a.k, threads=a.threads, **knobs)[0]
        sec = time.perf_counter() - t0
        print(json.dumps({
            "system": "m3-python", "batch": batch, "threads": a.threads, "knobs": knobs,
            "queries": int(q.shape[0]), "qps": q.shape[0] / sec,
            "us_per_call": 1e6 * sec / -(-q.shape[0] // batch),
            "recall_at_k": m3.recall(ids, gt, a.k), "io": index.io,
        }), flush=True)


if __name__ == "__main__":
    main()
