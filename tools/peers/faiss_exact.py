#!/usr/bin/env python3
"""Time faiss exact (brute-force) k-NN search on big-ann files.

    python faiss_exact.py --base B.fbin --queries Q.fbin --k 100 --metric ip|l2 \
        --threads N [--out GT.ibin] [--gt GT.ibin [--gt-dist GT.dist.fbin]] [--json]

Timings (wall clock, time.perf_counter):
    load_s    reading base and queries from disk into RAM (float32)
    add_s     IndexFlatIP/IndexFlatL2 .add(base)
    search_s  .search(queries, k)
    total_s   add_s + search_s   (load excluded)
peak_rss_mb is the process's peak resident set (getrusage ru_maxrss); cpu_s is the
process's user+sys CPU time over add+search, so cpu_s/total_s shows how many cores the
run really got (useful when the machine is shared).

--out writes the result in big-ann ground-truth layout: u32 n, u32 k, ids int32, then
distances float32 (inner products for ip, squared L2 for l2, as faiss reports them).
--gt compares the ids/distances with a shipped ground truth (ids-only .ibin with a sibling
.dist.fbin, or a gt-layout .ibin with distances) and adds the comparison to the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="base vectors (.fbin/.u8bin/.i8bin)")
    p.add_argument("--queries", required=True, help="query vectors (.fbin/.u8bin/.i8bin)")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--metric", choices=("ip", "l2"), required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", help="write the result as a big-ann gt .ibin (ids then distances)")
    p.add_argument("--gt", help="ground truth .ibin to compare against")
    p.add_argument("--gt-dist", help="ground-truth distances .fbin (default: <gt stem>.dist.fbin)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


def compare_with_gt(ids, dist, gt_ids, gt_dist, k):
    """Agreement of a k-NN result with ground truth, up to ties."""
    import numpy as np

    kk = min(k, gt_ids.shape[1])
    a = np.asarray(ids[:, :kk], dtype=np.int64)
    b = np.asarray(gt_ids[:, :kk], dtype=np.int64)
    nq = a.shape[0]
    exact_rows = np.all(a == b, axis=1)
    sa = np.sort(a, axis=1)
    sb = np.sort(b, axis=1)
    set_rows = np.all(sa == sb, axis=1)
    # recall@kk: |result ∩ gt| / kk per row
    hits = 0
    for i in range(nq):
        hits += np.intersect1d(sa[i], sb[i], assume_unique=False).size
    out = {
        "gt_k": int(kk),
        "rows_ids_equal_frac": float(exact_rows.mean()),
        "rows_idsets_equal_frac": float(set_rows.mean()),
        "recall_at_k": hits / (nq * kk),
    }
    if gt_dist is not None:
        da = np.asarray(dist[:, :kk], dtype=np.float64)
        db = np.asarray(gt_dist[:, :kk], dtype=np.float64)
        diff = np.abs(da - db)
        out["max_abs_dist_diff"] = float(diff.max())
        out["mean_abs_dist_diff"] = float(diff.mean())
        # Rows whose ids differ only because of (near-)ties: position-wise distances agree.
        bad = ~exact_rows
        tol = 1e-5 * max(1.0, float(np.abs(db).max()))
        out["rows_differing"] = int(bad.sum())
        out["rows_differing_not_explained_by_ties"] = int((bad & (diff.max(axis=1) > tol)).sum())
        out["tie_tolerance"] = tol
    return out


def main(argv=None):
    args = parse_args(argv)
    t = str(args.threads)
    # Pin every threading runtime before faiss (and its BLAS) is loaded.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = t

    import resource
    import time

    import numpy as np
    import faiss

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bigann_io

    faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    xb = np.ascontiguousarray(bigann_io.read_vectors(args.base, mmap=False), dtype=np.float32)
    xq = np.ascontiguousarray(bigann_io.read_vectors(args.queries, mmap=False), dtype=np.float32)
    load_s = time.perf_counter() - t0
    n, dim = xb.shape
    nq, dq = xq.shape
    if dq != dim:
        sys.exit(f"dimension mismatch: base {dim}, queries {dq}")

    cls = faiss.IndexFlatIP if args.metric == "ip" else faiss.IndexFlatL2
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    index = cls(dim)
    index.add(xb)
    t1 = time.perf_counter()
    D, I = index.search(xq, args.k)
    t2 = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    add_s, search_s = t1 - t0, t2 - t1
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    peak_rss_mb = ru1.ru_maxrss / 1024.0  # Linux reports KiB

    res = {
        "system": f"faiss-cpu {cls.__name__} {faiss.__version__}",
        "metric": args.metric,
        "n": int(n),
        "nq": int(nq),
        "dim": int(dim),
        "k": int(args.k),
        "threads": int(args.threads),
        "load_s": round(load_s, 4),
        "add_s": round(add_s, 4),
        "search_s": round(search_s, 4),
        "total_s": round(add_s + search_s, 4),
        "qps": round(nq / search_s, 1) if search_s > 0 else None,
        "cpu_s": round(cpu_s, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "loadavg_1m_before": round(load0, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }

    if args.out:
        bigann_io.write_ibin(args.out, I.astype(np.int32), D.astype(np.float32))
        res["out"] = args.out
    if args.gt:
        gt_ids, gt_dist = bigann_io.read_gt(args.gt, args.gt_dist, mmap=False)
        if gt_ids.shape[0] != nq:
            sys.exit(f"ground truth has {gt_ids.shape[0]} rows, queries {nq}")
        res["gt"] = compare_with_gt(I, D, gt_ids, gt_dist, args.k)

    line = json.dumps(res)
    if not args.json:
        print(f"# {res['system']}  n={n} nq={nq} dim={dim} k={args.k} threads={args.threads}",
              file=sys.stderr)
        print(f"# load {load_s:.3f}s  add {add_s:.3f}s  search {search_s:.3f}s  "
              f"total {add_s + search_s:.3f}s  cpu {cpu_s:.2f}s  peak RSS {peak_rss_mb:.0f} MiB",
              file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
