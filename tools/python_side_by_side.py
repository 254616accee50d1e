#!/usr/bin/env python3
"""The same job in diskannpy, faiss and m3 (docs/PYTHON.md, "Beside diskannpy and faiss"):
build over the first N GloVe-50d vectors (inner product), search 10 neighbours, recall@10
against m3.gt. Runs each library that imports; prints one line per library.

Usage: python tools/python_side_by_side.py [DATA_DIR] [N] [NQ]   (default ../shared/data/glove-50d 50000 1000)
"""

import os
import sys
import tempfile
import time

import numpy as np

import m3

D = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/glove-50d"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
NQ = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000


def read_fbin(path, rows):
    n, d = np.fromfile(path, dtype="<u4", count=2)
    return np.fromfile(path, dtype="<f4", offset=8, count=min(rows, n) * d).reshape(-1, d)


base = read_fbin(os.path.join(D, "base.390K.fbin"), N)
queries = read_fbin(os.path.join(D, "query.10K.fbin"), NQ)
truth = m3.gt(base, queries, 10, "ip")
work = tempfile.mkdtemp(prefix="side-by-side-")
dim = base.shape[1]


def report(name, t_build, t_search, ids):
    print(f"{name:10} build {t_build:6.1f} s  search {NQ / t_search:8.0f} QPS  "
          f"recall@10 {m3.recall(ids, truth, 10):.3f}", flush=True)


def run_diskannpy():
    import diskannpy
    t0 = time.perf_counter()
    os.makedirs(f"{work}/dk")
    diskannpy.build_disk_index(data=base, distance_metric="mips", index_directory=f"{work}/dk",
                               complexity=64, graph_degree=32, search_memory_maximum=0.05,
                               build_memory_maximum=8, num_threads=2, vector_dtype=np.float32)
    index = diskannpy.StaticDiskIndex(index_directory=f"{work}/dk", num_threads=2,
                                      num_nodes_to_cache=0)
    t1 = time.perf_counter()
    ids, dists = index.batch_search(queries, k_neighbors=10, complexity=64, beam_width=4,
                                    num_threads=2)
    report("diskannpy", t1 - t0, time.perf_counter() - t1, np.asarray(ids).astype(np.int64))


def run_faiss():
    import faiss
    t0 = time.perf_counter()
    quant = faiss.IndexFlatIP(dim)
    index = faiss.IndexRefineFlat(
        faiss.IndexIVFPQ(quant, dim, 1000, 25, 8, faiss.METRIC_INNER_PRODUCT))
    index.train(base)
    index.add(base)
    faiss.extract_index_ivf(index).nprobe = 32
    t1 = time.perf_counter()
    dists, ids = index.search(queries, 10)
    report("faiss", t1 - t0, time.perf_counter() - t1, ids)


def run_m3():
    t0 = time.perf_counter()
    m3.build(base, f"{work}/m3", metric="ip", threads=2)
    index = m3.Index(f"{work}/m3")
    t1 = time.perf_counter()
    ids, dists = index.search(queries, k=10, nprobe=64, rerank=30, threads=2)
    report("m3", t1 - t0, time.perf_counter() - t1, ids)


for run in (run_diskannpy, run_faiss, run_m3):
    try:
        run()
    except ImportError as e:
        print(f"{run.__name__[4:]:10} not installed ({e})")
