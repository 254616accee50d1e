#!/usr/bin/env python3
"""QPS of the Python package at batch sizes (issue 15's benchmark; docs/BENCHMARKS.md,
"Python package"). Prints one JSON object per measured batch size.

Usage (inside a venv with the package installed, e.g. target/python-venv):
  python tools/bench_python.py --index IDX --queries query.fbin --gt gt.ibin --k 10 \
      --threads 2 --max-queries 2000 --batch 1000 --batch 1 -- nprobe=64 rerank=30
  python tools/bench_python.py ... --max-queries 300 --overhead 10 -- nprobe=64 rerank=30
      (per-call cost: the queries one call each against one batch on 1 thread with 1 query
      in flight, the loop `m3 bench --threads 1 --inflight 1` runs; alternately, ROUNDS times,
      in one process; min and median of the rounds)
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


def overhead(index, q, k, rounds, knobs):
    single, batch = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for row in q:
            index.search(row, k, **knobs)
        single.append((time.perf_counter() - t0) / len(q) * 1e6)
        t0 = time.perf_counter()
        index.search(q, k, threads=1, inflight=1, **knobs)
        batch.append((time.perf_counter() - t0) / len(q) * 1e6)
    med = lambda v: float(np.median(v))  # noqa: E731
    print(json.dumps({
        "system": "m3-python", "mode": "overhead", "queries": int(len(q)), "rounds": rounds,
        "knobs": knobs, "single_call_us_min": min(single), "single_call_us_median": med(single),
        "batch_us_per_query_min": min(batch), "batch_us_per_query_median": med(batch),
        "overhead_us_min": min(single) - min(batch), "overhead_us_median": med(single) - med(batch),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-queries", type=int, default=2000)
    ap.add_argument("--batch", type=int, action="append", default=[])
    ap.add_argument("--overhead", type=int, default=0, metavar="ROUNDS")
    ap.add_argument("knobs", nargs="*", help="knob=value, e.g. nprobe=64 rerank=30")
    a = ap.parse_args()
    knobs = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in a.knobs}
    q = read_bin(a.queries, "<f4")[: a.max_queries]
    gt = read_bin(a.gt, "<i4")[: a.max_queries]
    index = m3.Index(a.index)
    index.search(q[:10], a.k, threads=a.threads, **knobs)  # warm the pool and the page cache
    if a.overhead:
        overhead(index, q, a.k, a.overhead, knobs)
        return
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
