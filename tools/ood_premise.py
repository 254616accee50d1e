#!/usr/bin/env python3
"""Premise check for out-of-distribution (OOD) query sets: can training queries, or k-means
clusters of the base, find a query's true neighbours?

    python tools/ood_premise.py --base B.fbin --queries Q.fbin --gt GT.ibin \
        [--train TRAIN.fbin] [--name NAME] [--ms 4,8,16,32] [--nprobes 1,4,16,64] \
        [--cluster-size 256] [--no-spherical] [--holdout 1000] [--threads 1] [--json OUT.json]

Runs with the peers' venv (tools/peers/setup.sh: numpy, faiss-cpu for the k-means). Files are
big-ann: .fbin = u32 n, u32 d, f32 rows; .ibin = u32 n, u32 k, u32 ids (optionally followed by
f32 distances). The metric is inner product throughout (larger is better); every data set this
is meant for (passages-ood, glove-50d, the generated xmodal sets) is searched by inner product.
The ground truth's first --k (10) ids are the query's true top-k.

Reported, over every evaluation query (or the first --max-queries):

1. Training queries (only with --train). The training queries' exact top-100 (--depth) over the
   whole base is computed here by blocked numpy matmul (f32). For each evaluation query, its m
   nearest training queries by inner product (m in --ms) and the union of their top-100 answers:
   the share of the query's true top-k inside that union (mean over queries), the share of
   queries whose true top-1 is inside, and the union's mean size (ids, and % of the base).
   This is the premise of M³'s `hints.m3` (answers of a query's nearest training queries).
2. Clusters: k-means of the base into K = ceil(N / --cluster-size) clusters (faiss.Kmeans,
   seed --seed, 20 iterations, every base row used for training). Spherical by default
   (centroids renormalised each iteration; assignment and a query's probe order by inner
   product with the unit centroids); --no-spherical: plain k-means, assignment and probe order
   by L2. Each base row belongs to its nearest centroid's cluster (one cluster per row). Then:
   the mean number of distinct clusters holding a query's true top-k; the share of queries whose
   true top-1 lies in the cluster of the query's nearest centroid; the coverage of the true
   top-k by the nprobe nearest clusters (nprobe in --nprobes; share of the top-k ids inside).
3. Modality: |mean(query) − mean(base)| (L2 norm of the difference of the mean vectors), mean
   row norms, and the mean inner product of a query with its true top-1 and with its true top-k
   (mean over the k) answers, and the share of queries whose top-1 has inner product ≥ 0.99
   (near duplicates).
4. In-distribution contrast: --holdout (1,000) random base rows (seed --seed) used as queries
   against the rest of the base (the held-out rows are excluded from the candidates; their
   exact top-k is computed here): the same inner products as in 3 and the same cluster numbers
   as in 2. The k-means of 2 was trained on the whole base, held-out rows included (1,000 of N
   rows; a negligible advantage for them).

A self-check compares this script's exact top-k of the first 200 evaluation queries with the
shipped ground truth (share of the ground truth's top-k found; ~1.0 up to ties).

Output: a readable report on stdout; --json also writes every number to a file.
Threads: --threads sets OpenBLAS/OpenMP threads for numpy and faiss (default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="base vectors .fbin")
    p.add_argument("--queries", required=True, help="evaluation queries .fbin")
    p.add_argument("--gt", required=True, help="exact ground truth of the queries .ibin (ids first)")
    p.add_argument("--train", help="training queries .fbin (enables part 1)")
    p.add_argument("--name", default="", help="data set name for the report")
    p.add_argument("--k", type=int, default=10, help="true top-k judged (default 10)")
    p.add_argument("--depth", type=int, default=100, help="exact answers per training query (default 100)")
    p.add_argument("--ms", default="4,8,16,32", help="nearest training queries per query")
    p.add_argument("--nprobes", default="1,4,16,64", help="nearest clusters probed")
    p.add_argument("--cluster-size", type=int, default=256, help="K = ceil(N / this)")
    p.add_argument("--kmeans-iters", type=int, default=20)
    p.add_argument("--no-spherical", action="store_true", help="plain (L2) k-means instead of spherical")
    p.add_argument("--seed", type=int, default=1234, help="k-means seed and held-out row choice")
    p.add_argument("--holdout", type=int, default=1000, help="base rows used as in-distribution queries")
    p.add_argument("--max-queries", type=int, default=0, help="first N evaluation queries (0 = all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    a.ms = [int(x) for x in a.ms.split(",") if x.strip()]
    a.nprobes = [int(x) for x in a.nprobes.split(",") if x.strip()]
    return a


ARGS = parse_args()
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import bigann_io  # noqa: E402

T0 = time.perf_counter()


def log(msg):
    print(f"[ood_premise {time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:.0f}s] {msg}",
          file=sys.stderr, flush=True)


def load(path):
    return np.ascontiguousarray(bigann_io.read_vectors(path, mmap=False), dtype=np.float32)


def topk_ip(x, base, k, exclude=None, block_floats=48_000_000):
    """Exact top-k by inner product of rows of x over base rows (sorted best first), blocked."""
    n = base.shape[0]
    rows = max(1, block_floats // n)
    ids = np.empty((x.shape[0], k), dtype=np.int64)
    sc = np.empty((x.shape[0], k), dtype=np.float32)
    bt = base.T
    for s in range(0, x.shape[0], rows):
        e = min(s + rows, x.shape[0])
        S = x[s:e] @ bt
        if exclude is not None:
            S[:, exclude] = -np.inf
        part = np.argpartition(S, n - k, axis=1)[:, n - k:]
        ps = np.take_along_axis(S, part, axis=1)
        o = np.argsort(-ps, axis=1, kind="stable")
        ids[s:e] = np.take_along_axis(part, o, axis=1)
        sc[s:e] = np.take_along_axis(ps, o, axis=1)
    return ids, sc


def ip_rows(x, base, ids):
    """Inner products of x[i] with base[ids[i, j]] (float64)."""
    return np.einsum("id,ijd->ij", x.astype(np.float64), base[ids].astype(np.float64))


def cluster_stats(assign, probe, top, nprobes):
    """Distinct clusters of each row of `top`, top-1 in nearest cluster, coverage by nprobe."""
    ca = assign[top]                                   # (nq, k) cluster of each true neighbour
    cs = np.sort(ca, axis=1)
    distinct = 1 + (np.diff(cs, axis=1) != 0).sum(axis=1)
    out = {"distinct_clusters_topk": float(distinct.mean()),
           "distinct_clusters_topk_median": float(np.median(distinct)),
           "top1_in_nearest_cluster": float((ca[:, 0] == probe[:, 0]).mean()),
           "coverage": {}}
    for p in nprobes:
        hit = (ca[:, :, None] == probe[:, None, :p]).any(axis=2)
        out["coverage"][str(p)] = float(hit.mean())
    return out


def main(a):
    import faiss
    faiss.omp_set_num_threads(a.threads)
    R = {"name": a.name, "base": a.base, "queries": a.queries, "gt": a.gt, "train": a.train,
         "k": a.k, "threads": a.threads, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
         "host": f"{platform.node()}, {os.cpu_count()} cores", "numpy": np.__version__,
         "faiss": faiss.__version__}
    xb = load(a.base)
    xq = load(a.queries)
    gt, _ = bigann_io.read_gt(a.gt, mmap=False)
    gt = np.asarray(gt[:, : a.k], dtype=np.int64)
    if gt.shape[0] != xq.shape[0]:
        sys.exit(f"ground truth has {gt.shape[0]} rows, queries {xq.shape[0]}")
    if a.max_queries and a.max_queries < xq.shape[0]:
        xq, gt = xq[: a.max_queries], gt[: a.max_queries]
    n, d = xb.shape
    nq = xq.shape[0]
    R.update(n=n, dim=d, nq=nq)
    log(f"{a.name}: base {n} x {d}, {nq} queries, k {a.k}")

    # self-check of the exact search against the shipped ground truth
    m0 = min(200, nq)
    own, _ = topk_ip(xq[:m0], xb, a.k)
    R["selfcheck_gt_overlap"] = float(np.mean([len(set(own[i]) & set(gt[i])) / a.k for i in range(m0)]))
    log(f"self-check: own exact top-{a.k} vs shipped gt on {m0} queries: {R['selfcheck_gt_overlap']:.4f}")

    # ---------------------------------------------------------------- 1. training queries
    if a.train:
        xt = load(a.train)
        nt = xt.shape[0]
        log(f"training queries: {nt}; their exact top-{a.depth} over the base (blocked matmul)")
        t = time.perf_counter()
        t_ids, _ = topk_ip(xt, xb, a.depth)
        R["train_topk_s"] = round(time.perf_counter() - t, 1)
        log(f"  done in {R['train_topk_s']} s")
        mmax = max(a.ms)
        nn, nn_s = topk_ip(xq, xt, mmax)                # nearest training queries, best first
        tr = {"n_train": nt, "depth": a.depth,
              "ip_nearest_train_query": float(nn_s[:, 0].mean()), "by_m": {}}
        for m in a.ms:
            share = np.empty(nq)
            top1 = np.empty(nq, dtype=bool)
            size = np.empty(nq)
            for i in range(nq):
                u = np.unique(t_ids[nn[i, :m]])
                share[i] = np.isin(gt[i], u, assume_unique=True).mean()
                top1[i] = np.isin(gt[i, 0], u)
                size[i] = u.size
            tr["by_m"][str(m)] = {"topk_in_union": float(share.mean()),
                                  "top1_in_union": float(top1.mean()),
                                  "union_size": float(size.mean()),
                                  "union_share_of_base": float(size.mean() / n)}
        R["train_queries"] = tr

    # ---------------------------------------------------------------- 2. k-means clusters
    K = math.ceil(n / a.cluster_size)
    spherical = not a.no_spherical
    log(f"k-means: K = {K}, {'spherical' if spherical else 'L2'}, {a.kmeans_iters} iterations, seed {a.seed}")
    t = time.perf_counter()
    km = faiss.Kmeans(d, K, niter=a.kmeans_iters, seed=a.seed, spherical=spherical,
                      max_points_per_centroid=(n + K - 1) // K + 1, verbose=False)
    km.train(xb)
    _, assign = km.index.search(xb, 1)
    assign = assign[:, 0].astype(np.int64)
    sizes = np.bincount(assign, minlength=K)
    R["kmeans"] = {"K": K, "spherical": spherical, "iters": a.kmeans_iters, "seed": a.seed,
                   "train_s": round(time.perf_counter() - t, 1),
                   "cluster_size_mean": float(n / K), "cluster_size_max": int(sizes.max()),
                   "empty_clusters": int((sizes == 0).sum())}
    log(f"  done in {R['kmeans']['train_s']} s; largest cluster {sizes.max()}, empty {R['kmeans']['empty_clusters']}")
    pmax = max(a.nprobes)
    _, probe = km.index.search(xq, pmax)
    R["clusters_queries"] = cluster_stats(assign, probe.astype(np.int64), gt, a.nprobes)

    # ---------------------------------------------------------------- 3. modality
    mq, mb = xq.astype(np.float64).mean(0), xb.astype(np.float64).mean(0)
    ipq = ip_rows(xq, xb, gt)
    R["modality"] = {"mean_gap": float(np.linalg.norm(mq - mb)),
                     "query_norm": float(np.linalg.norm(xq, axis=1).mean()),
                     "base_norm": float(np.linalg.norm(xb, axis=1).mean()),
                     "query_ip_top1": float(ipq[:, 0].mean()),
                     "query_ip_topk": float(ipq.mean()),
                     "query_top1_ge_0.99": float((ipq[:, 0] >= 0.99).mean())}

    # ---------------------------------------------------------------- 4. held-out base rows
    rng = np.random.default_rng(a.seed)
    h = np.sort(rng.choice(n, min(a.holdout, n - a.k), replace=False))
    xh = xb[h]
    h_ids, h_s = topk_ip(xh, xb, a.k, exclude=h)
    _, hprobe = km.index.search(xh, pmax)
    R["holdout"] = {"rows": int(h.size),
                    "ip_top1": float(h_s[:, 0].astype(np.float64).mean()),
                    "ip_topk": float(h_s.astype(np.float64).mean()),
                    "top1_ge_0.99": float((h_s[:, 0] >= 0.99).mean()),
                    "mean_gap_to_rest": float(np.linalg.norm(xh.astype(np.float64).mean(0) - mb)),
                    "clusters": cluster_stats(assign, hprobe.astype(np.int64), h_ids, a.nprobes)}
    R["total_s"] = round(time.perf_counter() - T0, 1)
    report(R, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(R, f, indent=1)
    return 0


def report(R, a):
    k = R["k"]
    pr = print
    pr(f"## {R['name'] or R['base']}")
    pr()
    pr(f"base {R['n']:,} × {R['dim']}, {R['nq']:,} evaluation queries, true top-{k} from `{R['gt']}`; "
       f"{R['date']}, {R['host']}, {R['threads']} thread(s), numpy {R['numpy']}, faiss {R['faiss']}; "
       f"{R['total_s']} s. Self-check (own exact top-{k} vs the shipped ground truth, 200 queries): "
       f"{R['selfcheck_gt_overlap']:.4f}.")
    pr()
    if "train_queries" in R:
        tr = R["train_queries"]
        pr(f"**Training queries** ({tr['n_train']:,}; exact top-{tr['depth']} each over the whole base, "
           f"{R['train_topk_s']} s): union of the top-{tr['depth']} answers of a query's m nearest training "
           f"queries (mean inner product of a query with its nearest training query: "
           f"{tr['ip_nearest_train_query']:.3f})")
        pr()
        pr(f"| m | true top-{k} inside the union | queries with top-1 inside | union size (ids) | union / base |")
        pr("|---|---|---|---|---|")
        for m, v in tr["by_m"].items():
            pr(f"| {m} | {v['topk_in_union']:.3f} | {v['top1_in_union']:.3f} | {v['union_size']:,.0f} | "
               f"{100 * v['union_share_of_base']:.2f}% |")
        pr()
    km = R["kmeans"]
    pr(f"**Clusters**: k-means K = {km['K']:,} (⌈N/{a.cluster_size}⌉), "
       f"{'spherical (unit centroids, inner-product assignment and probe order)' if km['spherical'] else 'L2 (L2 assignment and probe order)'}, "
       f"faiss.Kmeans seed {km['seed']}, {km['iters']} iterations on all rows ({km['train_s']} s); "
       f"largest cluster {km['cluster_size_max']:,} rows (mean {km['cluster_size_mean']:.0f}), "
       f"{km['empty_clusters']} empty.")
    pr()
    nps = list(R["clusters_queries"]["coverage"])
    pr(f"| queries | distinct clusters of top-{k} (mean / median) | top-1 in nearest centroid's cluster | "
       + " | ".join(f"top-{k} coverage, nprobe {p}" for p in nps) + " |")
    pr("|---" * (3 + len(nps)) + "|")
    for label, c in (("evaluation queries", R["clusters_queries"]),
                     (f"{R['holdout']['rows']:,} base rows vs the rest", R["holdout"]["clusters"])):
        pr(f"| {label} | {c['distinct_clusters_topk']:.2f} / {c['distinct_clusters_topk_median']:.0f} | "
           f"{c['top1_in_nearest_cluster']:.3f} | "
           + " | ".join(f"{c['coverage'][p]:.3f}" for p in nps) + " |")
    pr()
    mo, ho = R["modality"], R["holdout"]
    pr(f"**Modality**: |mean(query) − mean(base)| = {mo['mean_gap']:.3f} "
       f"(held-out base rows: |mean(rows) − mean(base)| = {ho['mean_gap_to_rest']:.3f}); "
       f"mean norms: queries {mo['query_norm']:.3f}, base {mo['base_norm']:.3f}.")
    pr()
    pr(f"| as queries | inner product with true top-1 | mean inner product with true top-{k} | top-1 ≥ 0.99 |")
    pr("|---|---|---|---|")
    pr(f"| evaluation queries | {mo['query_ip_top1']:.3f} | {mo['query_ip_topk']:.3f} | {mo['query_top1_ge_0.99']:.3f} |")
    pr(f"| {ho['rows']:,} base rows vs the rest | {ho['ip_top1']:.3f} | {ho['ip_topk']:.3f} | {ho['top1_ge_0.99']:.3f} |")
    pr()


if __name__ == "__main__":
    sys.exit(main(ARGS))
