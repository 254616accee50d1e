#!/usr/bin/env python3
"""Build and sweep peer ANN systems on one data set; one JSON line per measured point.

    python run_peers.py --name glove-50d --base B.fbin --queries Q.fbin --gt GT.ibin \
        [--gt-dists GT.dist.fbin] --metric ip|l2|cosine --k 10 --pq-bytes 25 \
        [--work DIR] [--systems diskann-ssd,diskann-mem,hnswlib,faiss-ivf-flat,faiss-ivfpq-refine] \
        [--threads 1,2] [--max-queries N] [--rebuild] --out results.jsonl

Runs with the venv made by setup.sh (numpy 1.25, faiss-cpu 1.11.0.post1, diskannpy 0.7.0,
hnswlib 0.8.0).

Output (stdout, and appended to --out): the schema of `m3 bench --json`.
  search point: system, params (knobs), recall_at_k, k, qps, threads, lat_p50_us, lat_p99_us,
                mean_ios (4 KiB reads/query; null for in-memory systems), mean_read_bytes,
                mean_io_rounds (null: no peer reports it), mean_dist_comps (null when unknown),
                plus dataset, nq, load1 (1-min load average at the point), cpu_util
                (process CPU seconds / wall seconds over the batch call: below `threads` means
                the machine was busy).
  build record: system, record="build", build_s, peak_rss_mb, index_bytes,
                ram_bytes_per_vector, plus params, dataset, n, dim, cached (true when the index
                was found in --work and not rebuilt; the numbers are then the original build's).
Everything else the script prints (including DiskANN's own logging) goes to stderr.

Measurement
  recall@k  |returned top-k ∩ true top-k| / k averaged over queries; a returned id whose exact
            distance (recomputed here with numpy, natural units: squared L2, inner product,
            cosine similarity) ties the k-th true distance within relative 1e-5 also counts,
            as in M³'s src/exact/recall.rs. Duplicate and invalid ids count once / not at all.
  qps       batch calls over the whole query set with `threads` threads (wall clock), repeated
            until they have run 1 s (batch_reps says how often); recall from the last call.
  latency   threads=1 only: each query timed alone in a Python loop (includes the binding's
            per-call overhead, a few µs); null for threads>1.
  I/O       diskann-ssd: the process's /proc/self/io read_bytes delta over the batch call
            (DiskANN reads with O_DIRECT, so this is the device traffic); mean_ios is that / 4096
            / nq. In-memory systems: mean_ios null, mean_read_bytes 0.
  dist comps faiss IVF: coarse distances (nlist) + faiss's indexIVF_stats.ndis per query
            (+ k·k_factor exact re-ranks for the refine index). Others: null.
  Queries   --max-queries N takes the first N queries (and the first N ground-truth rows).

Systems: diskann-ssd (build_disk_index + StaticDiskIndex, R=64, L=100, PQ bytes = --pq-bytes,
beam width 2 and 4, L swept), diskann-mem (build_memory_index + StaticMemoryIndex, R=64, L=100,
full-precision vectors, L swept), hnswlib (M=32, efConstruction=200, ef swept), faiss-ivf-flat
and faiss-ivfpq-refine (nlist = 4·sqrt(n), nprobe swept; the refine index re-ranks
k·10 PQ candidates with exact distances; PQ sub-quantizers = the largest divisor of dim not
above --pq-bytes).

Builds run each in a child process (this script with --build-only) so that peak_rss_mb
(ru_maxrss) belongs to that build alone. Indexes are cached under --work/<system>/ and reused
unless --rebuild.

DiskANN's PQ size: diskannpy passes search_memory_maximum (GB) to DiskANN as a "%f" string;
DiskANN then computes chunks = floor(budget·2^30 / n) (budget minus 0.25 when above 1.25 GB),
capped at the (MIPS-augmented) dimension. pq_search_budget() picks a budget string whose chunk
count is exactly --pq-bytes; the build record reports the chunk count read back from
ann_pq_compressed.bin. Cosine: DiskANN's disk index refuses it, so the harness builds the
diskann index with l2 over unit-normalised base rows and normalises the queries (same ranking).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's own maths here is tiny
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bigann_io  # noqa: E402

ALL_SYSTEMS = ("diskann-ssd", "diskann-mem", "hnswlib", "faiss-ivf-flat", "faiss-ivfpq-refine")
TIE_REL_TOL = 1e-5
SECTOR = 4096

# Sweeps (the brief's knobs).
DISKANN_R, DISKANN_LBUILD = 64, 100
# Overridable for longer sweeps, e.g. M3_DISKANN_LS=480,640,960 M3_DISKANN_BEAMS=4.
DISKANN_BEAMS = tuple(int(x) for x in os.environ.get("M3_DISKANN_BEAMS", "2,4").split(","))
DISKANN_LS = tuple(
    int(x)
    for x in os.environ.get("M3_DISKANN_LS", "10,15,20,30,40,60,80,120,160,240,320").split(",")
)
# DiskANN in-memory (StaticMemoryIndex): same R and build L; search list swept.
DISKANN_MEM_LS = tuple(
    int(x)
    for x in os.environ.get("M3_DISKANN_MEM_LS", "10,15,20,30,40,60,80,120,160,240,320").split(",")
)
HNSW_M, HNSW_EFC = 32, 200
# ef swept; overridable like DiskANN's lists, e.g. M3_HNSW_EFS=768,1024,2048 for cross-modal sets.
HNSW_EFS = tuple(
    int(x)
    for x in os.environ.get("M3_HNSW_EFS", "10,16,24,32,48,64,96,128,192,256,384,512").split(",")
)
# nprobe swept; overridable, e.g. M3_IVF_NPROBES=384,512,1024 where 256 lists are not enough.
IVF_NPROBES = tuple(
    int(x)
    for x in os.environ.get("M3_IVF_NPROBES", "1,2,4,8,12,16,24,32,48,64,96,128,192,256").split(",")
)
REFINE_K_FACTOR = 10
MIN_BATCH_S, MAX_BATCH_REPS = 1.0, 100

# JSON lines go to the real stdout; fd 1 itself is pointed at stderr so that C++ logging
# (DiskANN writes to std::cout) cannot interleave with them.
_JSON_OUT = None


def _claim_stdout():
    global _JSON_OUT
    if _JSON_OUT is None:
        sys.stdout.flush()
        _JSON_OUT = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
    return _JSON_OUT


def log(msg):
    print(f"[run_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(rec, out_path):
    line = json.dumps(rec)
    _claim_stdout().write(line + "\n")
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "a") as f:
            f.write(line + "\n")


# ----------------------------------------------------------------------------- arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="data set name (default work dir, 'dataset' field)")
    p.add_argument("--base", required=True, help="base vectors .fbin")
    p.add_argument("--queries", required=True, help="query vectors .fbin")
    p.add_argument("--gt", required=True, help="ground truth .ibin (ids, optionally with distances)")
    p.add_argument("--gt-dists", help="ground-truth distances .fbin (default: <gt stem>.dist.fbin if present)")
    p.add_argument("--metric", choices=("l2", "ip", "cosine"), required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--pq-bytes", type=int, default=25, help="PQ bytes per vector (diskann-ssd, faiss-ivfpq-refine)")
    p.add_argument("--work", help="index directory (default $M3_WORK/peers/<name>; M3_WORK defaults "
                                  "to the repository's work/)")
    p.add_argument("--systems", default="diskann-ssd,hnswlib", help=f"comma list of {','.join(ALL_SYSTEMS)}")
    p.add_argument("--threads", default="1,2", help="comma list of search thread counts")
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--max-queries", type=int, default=0, help="use the first N queries (0 = all)")
    p.add_argument("--rebuild", action="store_true", help="rebuild indexes even if cached")
    p.add_argument("--out", help="append the JSON lines to this file too")
    p.add_argument("--diskann-build-mem-gb", type=float, default=8.0,
                   help="build_memory_maximum; large enough that DiskANN builds in one shard")
    p.add_argument("--build-only", metavar="SYSTEM", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in a.systems:
        if s not in ALL_SYSTEMS:
            p.error(f"unknown system {s!r} (want {', '.join(ALL_SYSTEMS)})")
    a.threads = [int(t) for t in a.threads.split(",") if t.strip()]
    if a.work is None:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        a.work = os.path.join(os.environ.get("M3_WORK", os.path.join(repo, "work")), "peers", a.name)
    return a


# ----------------------------------------------------------------------------- data

def load_base(path, metric):
    xb = np.ascontiguousarray(bigann_io.read_vectors(path, mmap=False), dtype=np.float32)
    if metric == "cosine":
        xb = normalize(xb)
    return xb


def normalize(x):
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return np.ascontiguousarray(x / nrm, dtype=np.float32)


def load_queries(args):
    xq = np.ascontiguousarray(bigann_io.read_vectors(args.queries, mmap=False), dtype=np.float32)
    gt_ids, gt_d = bigann_io.read_gt(args.gt, args.gt_dists, mmap=False)
    if gt_ids.shape[0] != xq.shape[0]:
        sys.exit(f"ground truth has {gt_ids.shape[0]} rows, queries {xq.shape[0]}")
    if gt_ids.shape[1] < args.k:
        sys.exit(f"ground truth has k={gt_ids.shape[1]} < {args.k}")
    if args.max_queries and args.max_queries < xq.shape[0]:
        m = args.max_queries
        xq, gt_ids = xq[:m], gt_ids[:m]
        gt_d = gt_d[:m] if gt_d is not None else None
    if gt_d is None:
        log("warning: ground truth without distances: ties cannot be credited")
    if args.metric == "cosine":
        xq = normalize(xq)  # every system ranks unit vectors; distances below are similarities
    return np.ascontiguousarray(xq), np.ascontiguousarray(gt_ids, dtype=np.int64), gt_d


def natural_dists(xb, xq, ids, metric):
    """Exact distances of returned ids in natural units (float64); NaN for invalid ids."""
    n = xb.shape[0]
    ids = np.asarray(ids, dtype=np.int64)
    valid = (ids >= 0) & (ids < n)
    safe = np.where(valid, ids, 0)
    v = xb[safe].astype(np.float64)                   # (nq, k, d)
    q = xq.astype(np.float64)[:, None, :]
    if metric == "l2":
        d = ((v - q) ** 2).sum(axis=2)
    else:  # ip, or cosine over normalised rows (= similarity)
        d = (v * q).sum(axis=2)
    d[~valid] = np.nan
    return d


def recall_at_k(ids, xb, xq, gt_ids, gt_d, k, metric):
    ids = np.asarray(ids, dtype=np.int64)[:, :k]
    dist = natural_dists(xb, xq, ids, metric) if gt_d is not None else None
    higher_better = metric != "l2"
    total = 0
    for i in range(ids.shape[0]):
        truth = set(gt_ids[i, :k].tolist())
        seen = set()
        h = 0
        kth = float(gt_d[i, k - 1]) if gt_d is not None else None
        for j, x in enumerate(ids[i].tolist()):
            if x in seen or x < 0 or x >= xb.shape[0]:
                continue
            seen.add(x)
            hit = x in truth
            if not hit and kth is not None:
                v = dist[i, j]
                tol = TIE_REL_TOL * max(abs(kth), abs(v), np.finfo(np.float32).tiny)
                hit = v >= kth - tol if higher_better else v <= kth + tol
            h += hit
        total += min(h, k)
    return total / (ids.shape[0] * k)


# ----------------------------------------------------------------------------- helpers

def read_bytes_now():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def cpu_now():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dir_bytes(d, exclude=("build.json", "building.pid")):
    tot = 0
    for root, _, files in os.walk(d):
        for f in files:
            if f not in exclude:
                tot += os.path.getsize(os.path.join(root, f))
    return tot


def percentiles_us(lat_ns):
    a = np.asarray(lat_ns, dtype=np.float64) / 1e3
    return round(float(np.percentile(a, 50)), 1), round(float(np.percentile(a, 99)), 1)


def pq_search_budget(n, pq_bytes, dim_eff):
    """search_memory_maximum (GB, as the exact 6-decimal string DiskANN receives) for pq_bytes chunks."""
    if pq_bytes > dim_eff:
        raise ValueError(f"--pq-bytes {pq_bytes} > dimension {dim_eff}: DiskANN caps chunks at the dimension")

    def chunks(s):
        b = float(s)                       # atof of std::to_string(double) ("%f")
        if b - 0.25 > 1.0:                 # SPACE_FOR_CACHED_NODES_IN_GB, THRESHOLD_FOR_CACHING_IN_GB
            b -= 0.25
        c = int(b * 1024 ** 3 / n)       # uint64_t(final_index_ram_limit / points_num)
        c = max(c, 1)
        return min(c, dim_eff, 512)

    x = (pq_bytes + 0.5) * n / 1024 ** 3   # effective budget wanted
    if x > 1.0:                            # DiskANN will subtract 0.25 GB for its cache
        x += 0.25
    base = round(x, 6)
    for step in range(0, 200000):
        for cand in (base + step * 1e-6, base - step * 1e-6):
            if cand <= 0:
                continue
            s = f"{cand:.6f}"
            if float(s) > 0 and chunks(s) == pq_bytes:
                return float(s)
    raise ValueError(f"no 6-decimal search budget gives {pq_bytes} chunks for n={n}")


# ----------------------------------------------------------------------------- builds (child)

def build_child(args):
    """Runs in its own process: build one system's index, write build.json with peak RSS."""
    system = args.build_only
    d = os.path.join(args.work, system)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, BUILDING_PID), "w") as f:
        f.write(str(os.getpid()))
    n, dim = bigann_io.read_header(args.base)
    rec = {"system": system, "record": "build", "dataset": args.name, "n": n, "dim": dim,
           "metric": args.metric, "build_threads": args.build_threads}
    t0 = time.perf_counter()
    if system == "diskann-ssd":
        import diskannpy
        data = args.base
        metric = {"l2": "l2", "ip": "mips", "cosine": "l2"}[args.metric]
        if args.metric == "cosine":
            data = os.path.join(d, "normalized_base.fbin.tmp")
            bigann_io.write_vectors(data, load_base(args.base, "cosine"))
        dim_eff = dim + 1 if metric == "mips" else dim
        budget = pq_search_budget(n, args.pq_bytes, dim_eff)
        rec["params"] = {"R": DISKANN_R, "L": DISKANN_LBUILD, "pq_bytes": args.pq_bytes,
                         "search_memory_maximum": budget,
                         "build_memory_maximum": args.diskann_build_mem_gb,
                         "distance_metric": metric, "pq_disk_bytes": 0}
        log(f"diskann build: n={n} dim={dim} metric={metric} search_memory_maximum={budget:.6f}")
        diskannpy.build_disk_index(data=data, distance_metric=metric, index_directory=d,
                                   complexity=DISKANN_LBUILD, graph_degree=DISKANN_R,
                                   search_memory_maximum=budget,
                                   build_memory_maximum=args.diskann_build_mem_gb,
                                   num_threads=args.build_threads, pq_disk_bytes=0,
                                   vector_dtype=np.float32)
        rec["build_s"] = time.perf_counter() - t0
        if data != args.base:
            os.remove(data)
        pn, chunks = bigann_io.read_header(os.path.join(d, "ann_pq_compressed.bin"))
        rec["params"]["pq_bytes_actual"] = chunks
        if chunks != args.pq_bytes:
            log(f"WARNING: DiskANN made {chunks} PQ chunks, wanted {args.pq_bytes}")
        ram = sum(os.path.getsize(os.path.join(d, f)) for f in ("ann_pq_compressed.bin", "ann_pq_pivots.bin"))
        rec["ram_bytes_per_vector"] = ram / n
        rec["ram_note"] = "PQ codes + pivots (no cached nodes)"
    elif system == "diskann-mem":
        import diskannpy
        # Cosine as l2 over unit rows (as for the SSD index); queries are normalised at load.
        metric = {"l2": "l2", "ip": "mips", "cosine": "l2"}[args.metric]
        xb = load_base(args.base, args.metric)
        rec["params"] = {"R": DISKANN_R, "L": DISKANN_LBUILD, "distance_metric": metric,
                         "use_pq_build": False}
        log(f"diskann memory build: n={n} dim={dim} metric={metric}")
        diskannpy.build_memory_index(data=xb, distance_metric=metric, index_directory=d,
                                     complexity=DISKANN_LBUILD, graph_degree=DISKANN_R,
                                     num_threads=args.build_threads, use_pq_build=False,
                                     vector_dtype=np.float32)
        rec["build_s"] = time.perf_counter() - t0
        rec["ram_bytes_per_vector"] = dir_bytes(d) / n
        rec["ram_note"] = "whole index (graph + vectors) in RAM"
    elif system == "hnswlib":
        import hnswlib
        xb = load_base(args.base, args.metric)
        space = {"l2": "l2", "ip": "ip", "cosine": "ip"}[args.metric]
        idx = hnswlib.Index(space=space, dim=dim)
        idx.init_index(max_elements=n, M=HNSW_M, ef_construction=HNSW_EFC, random_seed=100)
        idx.set_num_threads(args.build_threads)
        idx.add_items(xb, np.arange(n), num_threads=args.build_threads)
        rec["build_s"] = time.perf_counter() - t0
        idx.save_index(os.path.join(d, "hnsw.bin"))
        rec["params"] = {"M": HNSW_M, "ef_construction": HNSW_EFC, "space": space}
        rec["ram_bytes_per_vector"] = os.path.getsize(os.path.join(d, "hnsw.bin")) / n
        rec["ram_note"] = "whole index (graph + vectors) in RAM"
    elif system in ("faiss-ivf-flat", "faiss-ivfpq-refine"):
        import faiss
        faiss.omp_set_num_threads(args.build_threads)
        xb = load_base(args.base, args.metric)
        nlist = max(1, int(round(4 * math.sqrt(n))))
        fm = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quant = faiss.IndexFlatL2(dim) if fm == faiss.METRIC_L2 else faiss.IndexFlatIP(dim)
        ntrain = min(n, 64 * nlist)
        rng = np.random.default_rng(123)
        train = xb[np.sort(rng.choice(n, ntrain, replace=False))] if ntrain < n else xb
        if system == "faiss-ivf-flat":
            ivf = faiss.IndexIVFFlat(quant, dim, nlist, fm)
            index = ivf
            rec["params"] = {"nlist": nlist, "ntrain": ntrain}
        else:
            # faiss needs the sub-quantizer count to divide the dimension: the largest divisor of
            # dim not above --pq-bytes (200-d with 64 bytes -> 50).
            m = max(x for x in range(1, min(dim, args.pq_bytes) + 1) if dim % x == 0)
            if m != args.pq_bytes:
                log(f"faiss IVFPQ: {m} sub-quantizers (largest divisor of {dim} <= {args.pq_bytes})")
            ivf = faiss.IndexIVFPQ(quant, dim, nlist, m, 8, fm)
            index = faiss.IndexRefineFlat(ivf)
            rec["params"] = {"nlist": nlist, "ntrain": ntrain, "pq_bytes": m, "nbits": 8,
                             "k_factor": REFINE_K_FACTOR}
        ivf.cp.seed = 123
        index.train(train)
        index.add(xb)
        rec["build_s"] = time.perf_counter() - t0
        faiss.write_index(index, os.path.join(d, "index.faiss"))
        rec["ram_bytes_per_vector"] = os.path.getsize(os.path.join(d, "index.faiss")) / n
        rec["ram_note"] = "whole index in RAM" + (" (incl. full vectors for refine)" if "refine" in system else "")
    else:
        raise SystemExit(f"unknown system {system}")
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    rec["index_bytes"] = dir_bytes(d)
    rec["build_s"] = round(rec["build_s"], 2)
    rec["ram_bytes_per_vector"] = round(rec["ram_bytes_per_vector"], 2)
    rec["load1"] = round(os.getloadavg()[0], 2)
    with open(os.path.join(d, "build.json.partial"), "w") as f:
        json.dump(rec, f)
    os.replace(os.path.join(d, "build.json.partial"), os.path.join(d, "build.json"))
    os.remove(os.path.join(d, BUILDING_PID))
    log(f"built {system} in {rec['build_s']} s, peak RSS {rec['peak_rss_mb']} MiB")
    return 0


BUILDING_PID = "building.pid"  # written by a build child while it runs; excluded from sizes


class BuildBusy(RuntimeError):
    """An index directory is held by a running or unfinished build."""


def ensure_built(args, system):
    d = os.path.join(args.work, system)
    bj = os.path.join(d, "build.json")
    cached = os.path.exists(bj) and not args.rebuild
    if not cached and os.path.isdir(d) and not os.path.exists(bj) and not args.rebuild:
        # A directory without build.json: a build still running (its child's pid is alive) is
        # never touched; one that died is rebuilt; one of unknown origin needs --rebuild.
        pf = os.path.join(d, BUILDING_PID)
        if not os.path.exists(pf):
            raise BuildBusy(f"{d} holds an unfinished build of unknown origin: remove it or pass --rebuild")
        with open(pf) as f:
            pid = int(f.read().strip() or 0)
        if pid and os.path.exists(f"/proc/{pid}"):
            raise BuildBusy(f"{system} is being built by pid {pid} in {d}: not touching it")
        log(f"{d}: the build by pid {pid} died; rebuilding")
    if not cached:
        cmd = [sys.executable, os.path.abspath(__file__), "--build-only", system,
               "--name", args.name, "--base", args.base, "--queries", args.queries, "--gt", args.gt,
               "--metric", args.metric, "--k", str(args.k), "--pq-bytes", str(args.pq_bytes),
               "--work", args.work, "--build-threads", str(args.build_threads),
               "--diskann-build-mem-gb", str(args.diskann_build_mem_gb)]
        log(f"building {system}: {' '.join(cmd)}")
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=sys.stderr.fileno())
        if r.returncode != 0:
            raise RuntimeError(f"build of {system} failed (exit {r.returncode})")
        log(f"build of {system} done, child wall {time.perf_counter() - t0:.1f} s")
    with open(bj) as f:
        rec = json.load(f)
    rec["cached"] = cached
    return rec


# ----------------------------------------------------------------------------- searchers

class Searcher:
    """One loaded index. search_batch(xq, knob, threads) -> ids; search_one(q, knob) -> ids."""
    io_counted = False

    def knobs(self):
        raise NotImplementedError

    def dist_comps(self):
        return None


class DiskannSearcher(Searcher):
    io_counted = True

    def __init__(self, d, max_threads, k):
        import diskannpy
        self.k = k
        # num_threads=1 at load deadlocks (PEERS.md): load with >=2, search with 1 or 2.
        self.idx = diskannpy.StaticDiskIndex(index_directory=d, num_threads=max(2, max_threads),
                                             num_nodes_to_cache=0, cache_mechanism=0)

    def knobs(self):
        return [{"beam_width": w, "L": L} for w in DISKANN_BEAMS for L in DISKANN_LS]

    def search_batch(self, xq, kn, threads):
        r = self.idx.batch_search(xq, k_neighbors=self.k, complexity=max(kn["L"], self.k),
                                  num_threads=threads, beam_width=kn["beam_width"])
        return np.asarray(r.identifiers)

    def search_one(self, q, kn):
        return self.idx.search(q, k_neighbors=self.k, complexity=max(kn["L"], self.k),
                               beam_width=kn["beam_width"]).identifiers


class DiskannMemSearcher(Searcher):
    def __init__(self, d, max_threads, k):
        import diskannpy
        self.k = k
        self.idx = diskannpy.StaticMemoryIndex(index_directory=d, num_threads=max(1, max_threads),
                                               initial_search_complexity=max(DISKANN_MEM_LS))

    def knobs(self):
        return [{"L": L} for L in DISKANN_MEM_LS if L >= self.k]

    def search_batch(self, xq, kn, threads):
        r = self.idx.batch_search(xq, k_neighbors=self.k, complexity=kn["L"], num_threads=threads)
        return np.asarray(r.identifiers)

    def search_one(self, q, kn):
        return self.idx.search(q, k_neighbors=self.k, complexity=kn["L"]).identifiers


class HnswSearcher(Searcher):
    def __init__(self, d, k, dim, n, metric):
        import hnswlib
        self.k = k
        space = {"l2": "l2", "ip": "ip", "cosine": "ip"}[metric]
        self.idx = hnswlib.Index(space=space, dim=dim)
        self.idx.load_index(os.path.join(d, "hnsw.bin"), max_elements=n)

    def knobs(self):
        return [{"ef": ef} for ef in HNSW_EFS if ef >= self.k]

    def search_batch(self, xq, kn, threads):
        self.idx.set_ef(kn["ef"])
        self.idx.set_num_threads(threads)
        ids, _ = self.idx.knn_query(xq, k=self.k, num_threads=threads)
        return ids

    def search_one(self, q, kn):
        return self.idx.knn_query(q[None, :], k=self.k, num_threads=1)[0]

    def prepare_one(self, kn):
        self.idx.set_ef(kn["ef"])
        self.idx.set_num_threads(1)


class FaissSearcher(Searcher):
    def __init__(self, d, k, refine):
        import faiss
        self.faiss = faiss
        self.k = k
        self.refine = refine
        self.idx = faiss.read_index(os.path.join(d, "index.faiss"))
        self.ivf = faiss.extract_index_ivf(self.idx)
        if refine:
            self.idx.k_factor = REFINE_K_FACTOR
        self._nq = 0

    def knobs(self):
        extra = {"k_factor": REFINE_K_FACTOR} if self.refine else {}
        return [dict(nprobe=p, **extra) for p in IVF_NPROBES if p <= self.ivf.nlist]

    def _set(self, kn, threads):
        self.faiss.omp_set_num_threads(threads)
        self.ivf.nprobe = kn["nprobe"]

    def search_batch(self, xq, kn, threads):
        self._set(kn, threads)
        self.faiss.cvar.indexIVF_stats.reset()
        self._nq = xq.shape[0]
        _, ids = self.idx.search(xq, self.k)
        self._ndis = self.faiss.cvar.indexIVF_stats.ndis
        return ids

    def prepare_one(self, kn):
        self._set(kn, 1)

    def search_one(self, q, kn):
        return self.idx.search(q[None, :], self.k)[1]

    def dist_comps(self):
        extra = self.ivf.nlist + (self.k * REFINE_K_FACTOR if self.refine else 0)
        return round(self._ndis / self._nq + extra, 1)


def open_searcher(args, system, n, dim):
    d = os.path.join(args.work, system)
    if system == "diskann-ssd":
        return DiskannSearcher(d, max(args.threads), args.k)
    if system == "diskann-mem":
        return DiskannMemSearcher(d, max(args.threads), args.k)
    if system == "hnswlib":
        return HnswSearcher(d, args.k, dim, n, args.metric)
    return FaissSearcher(d, args.k, refine=(system == "faiss-ivfpq-refine"))


# ----------------------------------------------------------------------------- sweep

def measure(s, system, kn, threads, xq, xb, gt_ids, gt_d, args):
    nq = xq.shape[0]
    load1 = os.getloadavg()[0]
    rb0, c0 = read_bytes_now(), cpu_now()
    t0 = time.perf_counter()
    reps, wall = 0, 0.0
    # Repeat the batch until it has run MIN_BATCH_S (fast in-memory points take ~0.1 s).
    while reps < MAX_BATCH_REPS and (reps == 0 or wall < MIN_BATCH_S):
        ids = s.search_batch(xq, kn, threads)
        reps += 1
        wall = time.perf_counter() - t0
    c1, rb1 = cpu_now(), read_bytes_now()
    dc = s.dist_comps()
    rec = {"system": system, "params": dict(kn), "recall_at_k": None, "k": args.k,
           "qps": round(reps * nq / wall, 1), "threads": threads, "lat_p50_us": None,
           "lat_p99_us": None, "mean_ios": None, "mean_read_bytes": 0.0, "mean_io_rounds": None,
           "mean_dist_comps": dc, "dataset": args.name, "nq": nq, "batch_reps": reps,
           "load1": round(load1, 2), "cpu_util": round((c1 - c0) / wall, 2) if wall > 0 else None}
    if s.io_counted:
        rec["mean_read_bytes"] = round((rb1 - rb0) / (reps * nq), 1)
        rec["mean_ios"] = round((rb1 - rb0) / SECTOR / (reps * nq), 2)
    if threads == 1:
        if hasattr(s, "prepare_one"):
            s.prepare_one(kn)
        lat = np.empty(nq, dtype=np.int64)
        pc = time.perf_counter_ns
        for i in range(nq):
            q = xq[i]
            t = pc()
            s.search_one(q, kn)
            lat[i] = pc() - t
        rec["lat_p50_us"], rec["lat_p99_us"] = percentiles_us(lat)
    rec["recall_at_k"] = round(recall_at_k(ids, xb, xq, gt_ids, gt_d, args.k, args.metric), 5)
    return rec


def run(args):
    _claim_stdout()
    t_all = time.perf_counter()
    n, dim = bigann_io.read_header(args.base)
    os.makedirs(args.work, exist_ok=True)
    xq, gt_ids, gt_d = load_queries(args)
    xb = load_base(args.base, args.metric)
    log(f"{args.name}: n={n} dim={dim} nq={xq.shape[0]} metric={args.metric} k={args.k} "
        f"systems={args.systems} threads={args.threads}")
    for system in args.systems:
        try:
            rec = ensure_built(args, system)
        except BuildBusy as e:
            log(f"SKIP {system}: {e}")
            continue
        emit(rec, args.out)
        t_sys = time.perf_counter()
        s = open_searcher(args, system, n, dim)
        # warm-up (page cache of in-memory indexes, thread pools)
        s.search_batch(xq[: min(200, len(xq))], s.knobs()[0], max(args.threads))
        for threads in args.threads:
            for kn in s.knobs():
                r = measure(s, system, kn, threads, xq, xb, gt_ids, gt_d, args)
                emit(r, args.out)
                log(f"{system} t={threads} {kn}: recall {r['recall_at_k']:.4f} qps {r['qps']} "
                    f"p50 {r['lat_p50_us']} ios {r['mean_ios']} load1 {r['load1']} cpu {r['cpu_util']}")
        del s
        log(f"{system}: sweep took {time.perf_counter() - t_sys:.1f} s")
    log(f"all done in {time.perf_counter() - t_all:.1f} s")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.build_only:
        return build_child(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
